"""The serialization model: the ``cell_coadd`` 1.0.0 JSON tree as typed objects.

Every archive (FITS, JSON, Zarr) stores the same tree; arrays are either references
to archive items (``source`` strings) or inline nested lists.  Parsing validates the
structure and the schema versions, and keeps unknown fields (``extra``) so a later
write can pass them through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .archives.names import SCHEMA_VERSION
from .butler_info import parse_butler_info
from .cells import CellGridBounds, PatchDefinition
from .geom import Box
from .tree_fields import (
    TreeContext,
    bounds_from_json,
    box_from_json,
    check_stamp,
    get_field,
    int_field,
    patch_from_json,
    str_field,
    yx_from_json,
)

__all__ = [
    "SCHEMA_VERSION",
    "ArrayModel",
    "inline_values",
    "CellCoaddModel",
    "ImageModel",
    "MaskModel",
    "MaskPlaneModel",
    "PsfModel",
    "bounds_from_json",
    "box_from_json",
    "parse_cell_coadd",
    "yx_from_json",
]

SCHEMA_URL_BASE = "https://images.lsst.io/schemas/"
_DATATYPES = {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"}
_TOP_KEYS = (
    "schema_version",
    "min_read_version",
    "metadata",
    "image",
    "mask",
    "variance",
    "sky_projection",
    "mask_fractions",
    "noise_realizations",
    "band",
    "psf",
    "aperture_corrections",
    "patch",
    "provenance",
    "backgrounds",
    "schema_url",
    "butler_info",
    "indirect",
)


@dataclass(frozen=True)
class ArrayModel:
    """An array in the tree: a reference to an archive item (``source``) or inline data.

    Attributes
    ----------
    shape
        numpy-order shape.
    datatype
        Logical dtype name (``float32`` ...).
    source
        Archive item the array lives in (``fits:IMAGE``, ``fits:MASK,2`` ...), or ``None`` when inline.
    inline
        The nested-list data when the array is stored inline (JSON archives).
    """

    shape: tuple[int, ...]
    datatype: str
    source: str | None = None
    inline: Any = None

    @property
    def dtype(self) -> np.dtype:
        """The logical numpy dtype (native byte order)."""
        return np.dtype(self.datatype)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (reference form when ``source`` is set)."""
        if self.source is not None:
            return {"source": self.source, "shape": list(self.shape), "datatype": self.datatype, "byteorder": "big"}
        return {"data": self.inline, "datatype": self.datatype}


def inline_values(data: Any, dtype: np.dtype) -> np.ndarray:
    """Inline (nested-list) array data as ``dtype``, exactly or not at all.

    Raises
    ------
    ValueError
        When a value is not of the dtype's kind (a float in an integer array, a number in a boolean
        one), does not fit it (a finite float beyond the range of ``float32``, an integer beyond the
        type), or the lists are ragged or not numbers.
    """
    try:
        with np.errstate(over="raise", invalid="raise"):
            out = np.array(data, dtype=dtype)
        if dtype.kind in "biu":
            # Never truncate silently: integer arrays must hold integers (booleans: true/false).
            found = np.array(data)
            if found.dtype.kind not in ("b" if dtype.kind == "b" else "iub"):
                raise ValueError(f"found {found.dtype} values")
    except (TypeError, ArithmeticError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if out.dtype == object:
        raise ValueError("ragged or non-numeric data")
    return out


def _inline_shape(data: Any) -> tuple[int, ...]:
    shape = []
    node = data
    while isinstance(node, list):
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    return tuple(shape)


def _array(ctx: TreeContext, value: Any, path: str) -> ArrayModel:
    datatype = str_field(ctx, get_field(ctx, value, "datatype", path), f"{path}.datatype")
    if datatype not in _DATATYPES:
        raise ctx.error(f"{path}.datatype", f"unsupported datatype {datatype!r}")
    if "source" in value:
        source = str_field(ctx, value["source"], f"{path}.source")
        shape_json = get_field(ctx, value, "shape", path)
        if not isinstance(shape_json, list):
            raise ctx.error(f"{path}.shape", "expected a list")
        shape = tuple(int_field(ctx, s, f"{path}.shape") for s in shape_json)
        if any(s < 0 for s in shape):
            raise ctx.error(f"{path}.shape", f"negative size in {shape}")
        byteorder = value.get("byteorder", "big")
        if byteorder not in ("big", "little"):
            raise ctx.error(f"{path}.byteorder", f"unknown byte order {byteorder!r}")
        return ArrayModel(shape, datatype, source=source)
    if "data" in value:
        return ArrayModel(_inline_shape(value["data"]), datatype, inline=value["data"])
    raise ctx.error(path, "array has neither 'source' nor 'data'")


@dataclass(frozen=True)
class ImageModel:
    """One image plane: array, unit string (VOUnit) or ``None``, and ``yx0``."""

    array: ArrayModel
    unit: str | None
    bbox: Box
    tree: Mapping[str, Any] = field(repr=False, compare=False)


def _check_unit(ctx: TreeContext, text: str, path: str) -> None:
    """Refuse a unit string that astropy parses neither as VOUnit nor in its generic syntax."""
    import astropy.units as u

    for fmt in ("vounit", None):
        try:
            u.Unit(text, format=fmt, parse_strict="raise")
            return
        except ValueError:
            continue
    raise ctx.error(path, f"unit {text!r} does not parse")


def _image(ctx: TreeContext, value: Any, path: str) -> ImageModel:
    check_stamp(ctx, value, path)
    data = get_field(ctx, value, "data", path)
    unit = None
    if isinstance(data, Mapping) and "value" in data:
        unit = get_field(ctx, data, "unit", f"{path}.data", required=False)
        if unit is not None:
            unit = str_field(ctx, unit, f"{path}.data.unit")
            _check_unit(ctx, unit, f"{path}.data.unit")
        data = data["value"]
    array = _array(ctx, data, f"{path}.data")
    if len(array.shape) != 2:
        raise ctx.error(f"{path}.data.shape", f"an image must be 2-d, got shape {array.shape}")
    yx0 = get_field(ctx, value, "yx0", path)
    if not isinstance(yx0, list) or len(yx0) != 2:
        raise ctx.error(f"{path}.yx0", f"expected a [y, x] list, got {yx0!r}")
    y0, x0 = (int_field(ctx, v, f"{path}.yx0") for v in yx0)
    if 0 in array.shape:
        raise ctx.error(f"{path}.data.shape", f"empty image shape {array.shape}")
    return ImageModel(array, unit, Box.from_shape(array.shape, (y0, x0)), value)


@dataclass(frozen=True)
class MaskPlaneModel:
    """A named mask plane."""

    name: str
    description: str


@dataclass(frozen=True)
class MaskModel:
    """The mask: its stored arrays and the schema planes (``None`` = reserved bit).

    The arrays are either int32 arrays of 31 planes each (FITS), or one unsigned array with
    schema plane ``n`` at bit ``n`` (:attr:`packed`; Zarr).
    """

    arrays: tuple[ArrayModel, ...]
    bbox: Box
    planes: tuple[MaskPlaneModel | None, ...]
    dtype: str
    tree: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def packed(self) -> bool:
        """Whether the mask is one packed unsigned array rather than int32 arrays of 31 planes."""
        return len(self.arrays) == 1 and self.arrays[0].dtype.kind == "u"


def _mask(ctx: TreeContext, value: Any, path: str) -> MaskModel:
    check_stamp(ctx, value, path)
    data = get_field(ctx, value, "data", path)
    if not isinstance(data, list) or not data:
        raise ctx.error(f"{path}.data", "expected a non-empty list of arrays")
    arrays = tuple(_array(ctx, a, f"{path}.data[{n}]") for n, a in enumerate(data))
    planes_json = get_field(ctx, value, "planes", path)
    if not isinstance(planes_json, list):
        raise ctx.error(f"{path}.planes", "expected a list")
    planes: list[MaskPlaneModel | None] = []
    names: set[str] = set()
    for n, p in enumerate(planes_json):
        if p is None:
            planes.append(None)
            continue
        pp = f"{path}.planes[{n}]"
        name = str_field(ctx, get_field(ctx, p, "name", pp), f"{pp}.name")
        if name in names:
            raise ctx.error(pp, f"duplicate mask plane name {name!r}")
        names.add(name)
        planes.append(MaskPlaneModel(name, str_field(ctx, p.get("description", ""), f"{pp}.description")))
    dtype = str_field(ctx, get_field(ctx, value, "dtype", path, required=False, default="uint8"), f"{path}.dtype")
    if dtype not in _DATATYPES or not np.issubdtype(np.dtype(dtype), np.integer):
        raise ctx.error(f"{path}.dtype", f"mask dtype must be an integer type, got {dtype!r}")
    n_nonnull = len(names)
    expected = max(1, -(-n_nonnull // 31))
    if len(arrays) == 1 and arrays[0].dtype.kind == "u":
        # One unsigned array: the packed form (schema bit n at bit n), as Zarr archives store it.
        if len(planes) > 64:
            raise ctx.error(f"{path}.data", f"a packed mask holds at most 64 planes, the schema has {len(planes)}")
    elif len(arrays) != expected:
        raise ctx.error(
            f"{path}.data", f"number of mask arrays ({len(arrays)}) does not match expectation ({expected})"
        )
    shape = arrays[0].shape
    for n, a in enumerate(arrays):
        if a.shape != shape or len(shape) != 2:
            raise ctx.error(f"{path}.data[{n}]", f"mask arrays must be 2-d and agree in shape, got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ctx.error(f"{path}.data[{n}].datatype", f"mask array must be integer, got {a.datatype}")
    yx0 = get_field(ctx, value, "yx0", path)
    if not isinstance(yx0, list) or len(yx0) != 2:
        raise ctx.error(f"{path}.yx0", f"expected a [y, x] list, got {yx0!r}")
    y0, x0 = (int_field(ctx, v, f"{path}.yx0") for v in yx0)
    if 0 in shape:
        raise ctx.error(f"{path}.data.shape", f"empty mask shape {shape}")
    return MaskModel(arrays, Box.from_shape(shape, (y0, x0)), tuple(planes), dtype, value)


@dataclass(frozen=True)
class PsfModel:
    """The cell PSF: a 4-d ``(n_i, n_j, ky, kx)`` array and its cell bounds."""

    array: ArrayModel
    bounds: CellGridBounds
    tree: Mapping[str, Any] = field(repr=False, compare=False)


def _psf(ctx: TreeContext, value: Any, path: str) -> PsfModel:
    check_stamp(ctx, value, path)
    array = _array(ctx, get_field(ctx, value, "array", path), f"{path}.array")
    bounds = bounds_from_json(get_field(ctx, value, "bounds", path), f"{path}.bounds", ctx.url)
    size = bounds.subgrid_size
    if len(array.shape) != 4 or tuple(array.shape[:2]) != (size.i, size.j):
        raise ctx.error(f"{path}.array.shape", f"expected ({size.i}, {size.j}, ky, kx), got {array.shape}")
    ky, kx = array.shape[2:]
    if ky % 2 == 0 or kx % 2 == 0 or ky <= 0 or kx <= 0:
        raise ctx.error(f"{path}.array.shape", f"PSF kernel sizes must be odd and positive, got {(ky, kx)}")
    return PsfModel(array, bounds, value)


@dataclass(frozen=True)
class CellCoaddModel:
    """The parsed top level of a ``cell_coadd`` tree.

    Sub-trees that other modules interpret (sky projection, aperture corrections,
    provenance, backgrounds) are kept as plain JSON here.
    """

    image: ImageModel
    mask: MaskModel
    variance: ImageModel
    mask_fractions: dict[str, ImageModel]
    noise_realizations: tuple[ImageModel, ...]
    sky_projection: Mapping[str, Any]
    band: str | None
    psf: PsfModel
    aperture_corrections: Mapping[str, Any] | None
    patch: PatchDefinition | None
    provenance: Mapping[str, Any] | None
    backgrounds: Mapping[str, Any] | None
    metadata: dict[str, Any]
    schema_version: str
    extra: dict[str, Any] = field(default_factory=dict)
    tree: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    butler_info: Mapping[str, Any] | None = None

    def planes(self) -> dict[str, ImageModel]:
        """Every image-like plane by name: image, variance, mask_fractions/<name>, noise_realizations/<n>."""
        out = {"image": self.image, "variance": self.variance}
        out.update({f"mask_fractions/{k}": v for k, v in self.mask_fractions.items()})
        out.update({f"noise_realizations/{n}": v for n, v in enumerate(self.noise_realizations)})
        return out


def parse_cell_coadd(tree: Any, *, url: str | None = None) -> CellCoaddModel:
    """Parse and validate a ``cell_coadd`` tree.

    Raises
    ------
    ArchiveFormatError
        Naming the field at fault when the tree is malformed or needs a newer reader.
    """
    ctx = TreeContext(url)
    if not isinstance(tree, Mapping):
        raise ctx.error("", "the top level must be an object")
    check_stamp(ctx, tree, "")
    image = _image(ctx, get_field(ctx, tree, "image", ""), "image")
    mask = _mask(ctx, get_field(ctx, tree, "mask", ""), "mask")
    variance = _image(ctx, get_field(ctx, tree, "variance", ""), "variance")
    fractions_json = get_field(ctx, tree, "mask_fractions", "")
    if not isinstance(fractions_json, Mapping):
        raise ctx.error("mask_fractions", "expected an object")
    fractions = {
        str_field(ctx, k, "mask_fractions"): _image(ctx, v, f"mask_fractions.{k}") for k, v in fractions_json.items()
    }
    noise_json = get_field(ctx, tree, "noise_realizations", "")
    if not isinstance(noise_json, list):
        raise ctx.error("noise_realizations", "expected a list")
    noise = tuple(_image(ctx, v, f"noise_realizations[{n}]") for n, v in enumerate(noise_json))
    planes: list[tuple[str, ImageModel | MaskModel]] = [("mask", mask), ("variance", variance)]
    for name, plane in (
        planes
        + [(f"mask_fractions.{k}", v) for k, v in fractions.items()]
        + [(f"noise_realizations[{n}]", v) for n, v in enumerate(noise)]
    ):
        if plane.bbox != image.bbox:
            raise ctx.error(name, f"bbox {plane.bbox} does not agree with the image bbox {image.bbox}")
    sky = get_field(ctx, tree, "sky_projection", "")
    if not isinstance(sky, Mapping):
        raise ctx.error("sky_projection", "expected an object")
    check_stamp(ctx, sky, "sky_projection")
    for key in ("pixel_to_sky", "fits_approximation"):
        if isinstance(sky.get(key), Mapping):
            check_stamp(ctx, sky[key], f"sky_projection.{key}")
    band = get_field(ctx, tree, "band", "")
    if band is not None:
        band = str_field(ctx, band, "band")
    psf = _psf(ctx, get_field(ctx, tree, "psf", ""), "psf")
    if psf.bounds.bbox.intersection(image.bbox) is None:
        raise ctx.error("psf.bounds", f"PSF bounds {psf.bounds.bbox} do not overlap the image {image.bbox}")
    aperture = get_field(ctx, tree, "aperture_corrections", "", required=False)
    if aperture is not None:
        check_stamp(ctx, aperture, "aperture_corrections")
    patch_json = get_field(ctx, tree, "patch", "")
    patch = None if patch_json is None else patch_from_json(patch_json, "patch", url)
    provenance = get_field(ctx, tree, "provenance", "")
    if provenance is not None:
        check_stamp(ctx, provenance, "provenance")
        if patch is None:
            raise ctx.error("provenance", "provenance needs a patch definition")
    backgrounds = get_field(ctx, tree, "backgrounds", "", required=False)
    if backgrounds is not None:
        check_stamp(ctx, backgrounds, "backgrounds")
        fields = backgrounds.get("fields") or {}
        if not isinstance(fields, Mapping):
            raise ctx.error("backgrounds.fields", "expected an object of fields by name")
        for name, fld in fields.items():
            check_stamp(ctx, fld, f"backgrounds.fields.{name}")
    metadata = get_field(ctx, tree, "metadata", "", required=False, default={})
    if not isinstance(metadata, Mapping):
        raise ctx.error("metadata", "expected an object")
    extra = {k: v for k, v in tree.items() if k not in _TOP_KEYS}
    butler_info = tree.get("butler_info")
    parse_butler_info(butler_info, url=url)
    return CellCoaddModel(
        image=image,
        mask=mask,
        variance=variance,
        mask_fractions=fractions,
        noise_realizations=noise,
        sky_projection=sky,
        band=band,
        psf=psf,
        aperture_corrections=aperture,
        patch=patch,
        provenance=provenance,
        backgrounds=backgrounds,
        metadata=dict(metadata),
        schema_version=tree["schema_version"],
        extra=extra,
        tree=tree,
        butler_info=butler_info,
    )


def parse_fits_source(source: str, *, url: str | None = None) -> tuple[str, int, int | None]:
    """Split ``fits:EXTNAME[,EXTVER][[column]]`` into (EXTNAME, EXTVER, 1-based column or None).

    The grammar is :func:`cellcoadd_dask.archives.names.parse_source`'s.
    """
    from .archives.names import parse_source

    parsed = parse_source(source, scheme="fits", url=url)
    return parsed.name, parsed.extver, parsed.column
