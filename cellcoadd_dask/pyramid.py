"""Persisted overview pyramids: :func:`write_pyramid` and :func:`open_pyramid`.

A pyramid is an OME-Zarr 0.5 multiscale image (Zarr v3): level ``k`` is
:func:`~cellcoadd_dask.coarsen.coarsen_dataset` of the full-resolution Dataset by ``factors[k]``
(1, 2, 4, ... by default, down to the first level that fits in :data:`TARGET_PIXELS`), so
that an overview reads a few megabytes instead of the whole tract.  Layout of the group:

- arrays ``0``, ``1``, ... : the image levels, with the root's ``ome.multiscales`` (axes ``y``,
  ``x``; per level a ``scale`` of the factor and a ``translation`` to the first block's centre, in
  full-resolution tract pixels, so the levels overlay exactly);
- groups ``variance``, ``mask`` and ``count``, laid out the same way, each with its own
  ``ome.multiscales`` (the mask only when it is one packed integer per pixel);
- root attribute ``cellcoadd``: the factors, the Dataset's attributes (skymap, tract, band, cell
  grid, the sky projection - OME 0.5 has no celestial transforms), and each variable's.

The levels are computed window after window (:mod:`cellcoadd_dask.pyramid_bands`: memory stays
bounded by a window, and each tile is read once), each from the one before when the factors are
powers of two (in the order of additions ``coarsen`` uses, so the bits are the same);
chunks are :data:`CHUNK` pixels square, compressed with zstd.  Local pyramids are written beside
their destination and renamed into place; on object stores under a version prefix whose root
document is written last (:mod:`cellcoadd_dask.archives.zarr.commit`): a reader sees the previous
pyramid or the complete new one.  Metadata is consolidated: opening reads one object.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ArchiveFormatError, ValidationError
from .fetch import normalize_url

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

    from .geom import Box

__all__ = ["CHUNK", "TARGET_PIXELS", "default_factors", "open_pyramid", "write_pyramid"]

TARGET_PIXELS = 1024
"""The default coarsest level is the first whose longer side is at most this many pixels."""
CHUNK = 512
"""Chunk side of every level's arrays."""
CLEVEL = 1
"""zstd level: noisy float planes compress little at any level, and level 1 encodes ~5x faster than 5."""
PYRAMID_VERSION = 1
VARIABLES = ("image", "variance", "mask", "count")


def default_factors(shape: tuple[int, int], target: int = TARGET_PIXELS) -> list[int]:
    """1, 2, 4, ... down to the first factor whose level's longer side is at most ``target`` pixels."""
    factors = [1]
    while math.ceil(max(shape) / factors[-1]) > target:
        factors.append(factors[-1] * 2)
    return factors


def _factors(levels: int | Sequence[int] | None, shape: tuple[int, int]) -> list[int]:
    if levels is None:
        return default_factors(shape)
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        if levels < 1:
            raise ValidationError(f"write_pyramid: levels must be at least 1, not {levels}")
        return [2**k for k in range(int(levels))]
    factors = [int(f) for f in levels]  # type: ignore[union-attr]
    if not factors or factors[0] != 1 or any(b <= a for a, b in itertools.pairwise(factors)):
        raise ValidationError(f"write_pyramid: factors must start at 1 and increase, not {factors}")
    return factors


def _count(ds: xr.Dataset) -> da.Array:
    """Level 0's ``count``: 1 where a pixel is valid (finite image, no ``NO_DATA``), else 0."""
    from .cellstats import valid_mask

    image = ds["image"] if ds["image"].chunks is not None else ds["image"].chunk()
    valid = valid_mask(ds, ("NO_DATA",)) & np.isfinite(image)
    return valid.astype(np.int32).data


def _levels(ds: xr.Dataset, factors: list[int]) -> list[xr.Dataset]:
    from .coarsen import coarsen_dataset

    out = []
    for factor in factors:
        if factor == 1:
            level = ds[["image", "variance", "mask"]].copy()
            level["count"] = (("y", "x"), _count(ds), {"long_name": "valid pixels averaged (finite image, no NO_DATA)"})
        else:
            level = coarsen_dataset(ds, factor)
        out.append(level)
    return out


def _multiscales(name: str, levels: list[xr.Dataset], factors: list[int], prefix: str) -> dict[str, Any]:
    datasets = []
    for k, (level, factor) in enumerate(zip(levels, factors, strict=True)):
        datasets.append({
            "path": f"{prefix}{k}",
            "coordinateTransformations": [
                {"type": "scale", "scale": [float(factor), float(factor)]},
                {"type": "translation", "translation": [float(level["y"][0]), float(level["x"][0])]},
            ],
        })
    return {"version": "0.5", "multiscales": [{
        "name": name,
        "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": datasets,
    }]}


class _Pyramid:
    """A pyramid being written: what the Zarr commit needs (``commit.Fillable``)."""

    layout_number = 2  # consolidated metadata

    def __init__(self, ds: xr.Dataset, factors: list[int], prefix: str) -> None:
        self.factors = factors
        self.prefix = prefix
        self.ds = ds
        self.levels = _levels(ds, factors)
        self.variables = [v for v in VARIABLES if v != "mask" or ds["mask"].ndim == 2]
        self.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, (str, int, float, list))}

    def _path(self, variable: str, k: int) -> str:
        return str(k) if variable == "image" else f"{variable}/{k}"

    def root_attributes(self) -> dict[str, Any]:
        version = f"{self.prefix}/" if self.prefix else ""
        return {
            "ome": _multiscales("image", self.levels, self.factors, version),
            "cellcoadd": {
                "pyramid": PYRAMID_VERSION,
                "factors": self.factors,
                "translations": [[float(level["y"][0]), float(level["x"][0])] for level in self.levels],
                "variables": {v: {"path": f"{version}{self._path(v, 0)[:-1]}".rstrip("/"),
                                  "attrs": dict(self.levels[0][v].attrs)} for v in self.variables},
                "attrs": self.attrs,
            },
        }

    def fill(self, store: Any, *, root: bool = True) -> None:
        import zarr
        from zarr.codecs import BloscCodec

        from .pyramid_bands import bands, cascades, store_band, window_levels
        from .xarray_dataset import box_of

        group = zarr.open_group(store, mode="w", zarr_format=3)
        targets: dict[tuple[str, int], Any] = {}
        for variable in self.variables:
            if variable != "image":
                sub = group.create_group(variable)
                sub.attrs["ome"] = _multiscales(variable, self.levels, self.factors, "")
            for k, level in enumerate(self.levels):
                array = level[variable].data
                targets[variable, k] = group.create_array(
                    self._path(variable, k), shape=array.shape, dtype=array.dtype,
                    chunks=(min(CHUNK, array.shape[0]), min(CHUNK, array.shape[1])),
                    compressors=BloscCodec(cname="zstd", clevel=CLEVEL, shuffle="shuffle"),
                    dimension_names=("y", "x"), attributes=_jsonable(level[variable].attrs),
                    fill_value=np.nan if array.dtype.kind == "f" else 0,
                )
        box = box_of(self.ds)
        start = (box.y.start, box.x.start)
        columns = bands(self.ds, self.factors[-1], axis="x")
        cascade = cascades(self.factors)  # each level from the one before
        for y0, y1 in bands(self.ds, self.factors[-1]):
            for x0, x1 in columns:
                window = self.ds[["image", "variance", "mask"]].isel(
                    y=slice(y0 - start[0], y1 - start[0]), x=slice(x0 - start[1], x1 - start[1]))
                levels: Sequence[Mapping[str, Any]] | None = None
                if cascade:
                    # Read into memory (a plain compute: dask pushes the slice into the tile reads).
                    levels = window_levels(window.compute(), self.factors, self.variables)
                if levels is None:
                    # Persisted first: dask pushes the slice into the tile reads only for a plain
                    # compute, not through the rechunks of coarsen (they would read every chunk whole).
                    window = window.persist()
                    levels = [{v: level[v].data for v in self.variables} for level in _levels(window, self.factors)]
                store_band(levels, self.factors, targets, start, (y0, x0))
        if root:
            group.attrs.update(self.root_attributes())
        with warnings.catch_warnings():  # consolidated metadata is a zarr-python convention, known here
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(store)


def _jsonable(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}


def write_pyramid(
    ds: xr.Dataset,
    url: str | PathLike[str],
    *,
    levels: int | Sequence[int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> str:
    """Write the overview pyramid of a full-resolution patch or tract Dataset (see the module docstring).

    Parameters
    ----------
    ds
        A Dataset of :meth:`~cellcoadd_dask.CellCoadd.to_xarray`, the xarray engine or
        :func:`~cellcoadd_dask.open_tract` (or a contiguous selection of one).
    url
        Destination (a directory or an object-store prefix; ``.zarr`` is customary).
    levels
        ``None`` (1, 2, 4, ... down to about 1024 pixels), a number of levels
        (factors 1, 2, 4, ...), or the factors themselves (increasing, starting at 1).
    storage_options
        Passed to fsspec.
    overwrite
        Replace an existing pyramid (atomically).

    Returns
    -------
    str
        The URL written.

    Raises
    ------
    ValidationError
        If the levels are malformed or the Dataset is already coarsened.
    WriteError
        If the storage fails (the previous pyramid, if any, is unchanged).
    """
    from .archives.zarr.arrays import is_local
    from .archives.zarr.commit import new_version, write_local, write_remote
    from .coarsen import COARSEN_ATTR

    if COARSEN_ATTR in ds.attrs:
        raise ValidationError("write_pyramid: give the full-resolution Dataset (this one is coarsened)")
    destination = normalize_url(url)
    factors = _factors(levels, (ds.sizes["y"], ds.sizes["x"]))
    if is_local(destination):
        path = destination[len("file://") :] if destination.startswith("file://") else destination
        write_local(_Pyramid(ds, factors, ""), path, overwrite)
    else:
        write_remote(_Pyramid(ds, factors, new_version()), destination, storage_options, overwrite)
    return destination


# --------------------------------------------------------------------------- reading


def _root(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any], Mapping[str, Any]]:
    """The store, the ``cellcoadd`` attribute and the consolidated metadata of a pyramid (one request)."""
    from .archives.zarr.arrays import zarr_store

    store = zarr_store(url, storage_options)
    raw = store.read_whole("zarr.json")
    if raw is None:
        raise ArchiveFormatError("no pyramid here (no zarr.json)", url=url)
    try:
        document = json.loads(raw)
        attributes = document["attributes"]
        meta = attributes["cellcoadd"]
        members = document["consolidated_metadata"]["metadata"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ArchiveFormatError(f"not a cellcoadd pyramid ({type(exc).__name__}: {exc})", url=url) from None
    if not isinstance(meta, dict) or meta.get("pyramid") != PYRAMID_VERSION:
        raise ArchiveFormatError("not a cellcoadd pyramid (attribute cellcoadd.pyramid)", url=url)
    return store, meta, _flatten(members)


def _flatten(members: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(members, dict):
        return out
    for name, document in members.items():
        path = f"{prefix}{name}"
        out[path] = document
        nested = document.get("consolidated_metadata") if isinstance(document, dict) else None
        if isinstance(nested, dict):
            out.update(_flatten(nested.get("metadata"), f"{path}/"))
    return out


def open_pyramid(
    url: str | PathLike[str],
    level: int | None = None,
    *,
    pixels: int | None = None,
    bbox: Box | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """One level of a pyramid as a lazy Dataset, like ``ds.cellcoadd.coarsen(factor)`` gives it.

    Parameters
    ----------
    url
        The pyramid.
    level
        Level index (0: full resolution).  Default: the coarsest level whose longer side has
        at least ``pixels`` pixels (the coarsest level when ``pixels`` is ``None``).
    pixels
        The size the result is for (a figure's width in pixels, for example).
    bbox
        The absolute box the figure shows (default: the whole pyramid): ``pixels`` counts over it.
    storage_options
        Passed to fsspec.

    Returns
    -------
    xarray.Dataset
        ``image``, ``variance``, ``mask`` (when stored) and ``count`` on ``(y, x)``, with
        block-centre coordinates and the attributes of the Dataset the pyramid was written
        from (plus ``coarsen_factor``); the accessor's ``wcs``, ``sel_sky``, ``mask_plane``
        and ``plot`` work on it.  Opening reads one object (the consolidated metadata).
    """
    import dask.array as dask_array
    import xarray as xr

    from .archives.zarr.arrays import checked_open
    from .coarsen import COARSEN_ATTR, SOURCE_BOX_ATTR

    source = normalize_url(url)
    _, meta, members = _root(source, storage_options)
    factors = meta.get("factors")
    if not isinstance(factors, list) or not factors or not all(isinstance(f, int) and f > 0 for f in factors):
        raise ArchiveFormatError(f"bad pyramid factors {factors!r}", url=source)
    variables = meta.get("variables") or {}
    image = variables.get("image") or {}
    shapes = []
    for k in range(len(factors)):
        doc = members.get(_level_path(image.get("path", ""), k))
        shapes.append(tuple(doc.get("shape", (0, 0))) if isinstance(doc, dict) else (0, 0))
    if level is None:
        extent = max(bbox.shape) if bbox is not None else None
        wanted = [k for k, shape in enumerate(shapes)
                  if pixels is None or (max(shape) if extent is None else extent / factors[k]) >= pixels]
        level = wanted[-1] if wanted else 0
    if not 0 <= level < len(factors):
        raise ValidationError(f"open_pyramid: level {level} is not one of 0..{len(factors) - 1}")
    factor = factors[level]
    data_vars: dict[str, Any] = {}
    for name, info in variables.items():
        path = _level_path(info.get("path", ""), level)
        document = members.get(path)
        if not isinstance(document, dict):
            raise ArchiveFormatError(f"pyramid level {level} has no array {path!r}", url=source)
        array = checked_open(source, storage_options, path, document)
        chunks = tuple(document["chunk_grid"]["configuration"]["chunk_shape"])
        data = dask_array.from_array(array, chunks=chunks, name=f"pyramid-{name}-{level}-{abs(hash(source))}")
        data_vars[name] = (("y", "x"), data, info.get("attrs", {}))
    attrs = dict(meta.get("attrs", {}))
    box = json.loads(attrs[SOURCE_BOX_ATTR]) if SOURCE_BOX_ATTR in attrs else None
    ny, nx = shapes[level]
    translation = _translation(source, level, meta)
    coords = {
        "y": ("y", translation[0] + factor * np.arange(ny, dtype=np.float64)),
        "x": ("x", translation[1] + factor * np.arange(nx, dtype=np.float64)),
    }
    if factor > 1:
        attrs[COARSEN_ATTR] = factor
        if box is None and "bbox" in attrs:
            attrs[SOURCE_BOX_ATTR] = json.dumps(_parse_bbox(str(attrs["bbox"])))
    else:
        coords = {k: (d, v.astype(np.int64)) for k, (d, v) in coords.items()}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _level_path(base: str, level: int) -> str:
    return f"{base}/{level}" if base else str(level)


def _translation(url: str, level: int, meta: Mapping[str, Any]) -> tuple[float, float]:
    """The level's first block centre (``cellcoadd.translations``, as the OME translation of the level)."""
    translations = meta.get("translations")
    if isinstance(translations, list) and len(translations) > level:
        y, x = translations[level]
        return float(y), float(x)
    raise ArchiveFormatError("the pyramid lacks its level translations", url=url)


def _parse_bbox(text: str) -> dict[str, dict[str, int]]:
    import re

    m = re.fullmatch(r"\[y=(-?\d+):(-?\d+), x=(-?\d+):(-?\d+)\]", text.strip())
    if m is None:
        raise ValidationError(f"cannot parse bbox {text!r}")
    y0, y1, x0, x1 = (int(v) for v in m.groups())
    return {"y": {"start": y0, "stop": y1}, "x": {"start": x0, "stop": x1}}
