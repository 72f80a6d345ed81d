"""The Dataset view of a coadd: :func:`coadd_to_dataset` and back (:func:`dataset_to_coadd`).

The Dataset is built from the coadd's own dask arrays (chunked on cell edges); all state needed
to rebuild a coadd lives in its ``attrs`` and variables.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import astropy.units as u
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from .cells import CellGrid
from .coadd import CellCoadd
from .errors import BoundsError, ValidationError, shown_url
from .geom import Box, Interval
from .image import Image
from .lazy import PlaneOrigin, apply_rest, normalize_key, plane_array
from .mask import (
    Mask,
    MaskPlane,
    MaskSchema,
    combine_disk_arrays,
    memory_to_disk,
    packed_dtype,
    packed_to_memory,
)
from .model import bounds_from_json, patch_from_json
from .psf import CellPointSpreadFunction

__all__ = [
    "PSF_CELL_DIMS",
    "box_of",
    "cell_coords",
    "coadd_to_dataset",
    "dataset_to_coadd",
    "schema_from_attrs",
    "stack_planes",
]

PSF_CELL_DIMS = ("psf_cell_i", "psf_cell_j")
"""Dimensions of the ``psf`` variable's cell axes (``cell_i``/``cell_j`` are per-pixel coordinates)."""


def attr_url(url: str) -> str:
    """``url`` as a Dataset may keep it in ``attrs`` and ``encoding``: no password, no query string.

    A presigned URL signs its object in the query (``X-Amz-Signature=...``,
    ``Signature=...``): attrs reach saved notebooks and ``to_netcdf`` files, so the query
    is replaced by ``?***`` (and a password by ``***``), as in every message of the package.
    """
    return shown_url(url)


def _is_redacted(url: str) -> bool:
    """Whether ``attr_url`` removed something from ``url`` (it can no longer be opened as is)."""
    return "?***" in url or "://***@" in url


def _unit_string(unit: u.UnitBase | None) -> str | None:
    return None if unit is None else unit.to_string()


class _PlaneStack:
    """Lazily indexed stack of same-shape 2-d dask planes along a new first axis.

    ``da.stack`` hides its inputs behind a task per chunk, so a later slice no longer
    reaches the planes' sources and whole chunks are read.  Wrapped by
    :func:`~cellcoadd_dask.lazy.plane_array`, this source hands each plane only the
    region asked for, which reads only the tiles it touches.
    """

    def __init__(self, planes: Sequence[da.Array]) -> None:
        self.planes = tuple(planes)
        self.shape = (len(self.planes), *self.planes[0].shape)
        self.dtype = self.planes[0].dtype
        self.ndim = 3

    def __dask_tokenize__(self) -> Any:
        return ("cellcoadd-plane-stack", tuple(p.name for p in self.planes))

    def __getitem__(self, key: Any) -> np.ndarray:
        region, rest = normalize_key(key, self.shape)
        k, sy, sx = region
        parts = [p[sy, sx] for p in self.planes[k]]
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=self.dtype)
        for n, part in enumerate(da.compute(*parts, scheduler="sync")):
            out[n] = part
        return apply_rest(out, rest)


class _PackedMaskSource:
    """Lazily indexed view of a 2-d packed mask (schema bit ``n`` at bit ``n``) as on-disk arrays.

    ``combine(disk_arrays, region)`` builds the values (in-memory mask, one plane, packed
    bits) from the int32 disk arrays of a region, as the archive sources do, so the
    rebuilt :class:`Mask` reads only the tiles a slice touches whatever is derived from it.
    """

    def __init__(
        self, packed: da.Array, schema: MaskSchema, shape: tuple[int, ...], dtype: np.dtype, combine: Any
    ) -> None:
        self.packed = packed
        self.schema = schema
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)
        self.combine = combine

    def __dask_tokenize__(self) -> Any:
        return ("cellcoadd-packed-mask", self.packed.name, self.shape, self.dtype.str, tokenize(self.combine))

    def derive(self, combine: Any, shape: tuple[int, ...], dtype: np.dtype) -> _PackedMaskSource:
        """The same packed mask combined another way."""
        return _PackedMaskSource(self.packed, self.schema, shape, dtype, combine)

    def __getitem__(self, key: Any) -> np.ndarray:
        region, rest = normalize_key(key, self.shape)
        packed = np.asarray(self.packed[region[0], region[1]].compute(scheduler="sync"))
        disk = memory_to_disk(packed_to_memory(packed, self.schema), self.schema)
        return apply_rest(np.asarray(self.combine(disk, region)), rest)


def _mask_from_packed(packed: da.Array, schema: MaskSchema, bbox: Box) -> Mask:
    """A lazy :class:`Mask` over ``bbox`` from a 2-d packed mask, reading only what slices touch."""
    yx_chunks = packed.chunks
    shape = (*packed.shape, schema.mask_size)
    source = _PackedMaskSource(packed, schema, shape, schema.dtype, functools.partial(combine_disk_arrays, schema))
    array = plane_array(source, name="mask", chunks=(*yx_chunks, (schema.mask_size,)))
    return Mask(array, schema=schema, bbox=bbox, origin=PlaneOrigin(source, bbox, array, "mask"))


def stack_planes(planes: Sequence[da.Array], name: str) -> da.Array:
    """One lazy ``(n, y, x)`` array of ``planes`` whose slices read only the touched tiles."""
    source = _PlaneStack(planes)
    chunks = ((1,) * len(source.planes), *source.planes[0].chunks)
    return plane_array(source, name=name, chunks=chunks, token=source.__dask_tokenize__())


def coadd_to_dataset(coadd: CellCoadd, *, source_url: str | None = None) -> xr.Dataset:
    """A lazy Dataset of every plane of ``coadd`` (nothing is read).

    Variables: ``image``, ``mask`` (2-d, schema bit ``n`` at bit ``n``, CF ``flag_masks``),
    ``variance`` on ``(y, x)``; ``mask_fractions`` on ``(fraction, y, x)``;
    ``noise_realizations`` on ``(realization, y, x)``; ``psf`` on ``(psf_cell_i, psf_cell_j, psf_y, psf_x)``.
    Coordinates ``y``, ``x`` are absolute (tract) pixel indices; ``cell_i`` (along ``y``) and
    ``cell_j`` (along ``x``) give each pixel's cell, in the numbering of ``psf_cell_i``/``psf_cell_j``.
    """
    from . import xarray_accessor  # noqa: F401  (registers ds.cellcoadd)

    bbox = coadd.bbox
    coords: dict[str, Any] = {
        "y": ("y", np.arange(bbox.y.start, bbox.y.stop, dtype=np.int64)),
        "x": ("x", np.arange(bbox.x.start, bbox.x.stop, dtype=np.int64)),
    }
    schema = coadd.mask.schema
    mask_attrs = {
        "long_name": "bit mask",
        "flag_masks": [1 << schema.index(n) for n in schema.names],
        "flag_meanings": " ".join(schema.names),
        "flag_descriptions": json.dumps(schema.descriptions()),
        "mask_schema": json.dumps([None if p is None else [p.name, p.description] for p in schema]),
        "mask_dtype": str(schema.dtype),
    }
    try:
        packed_dtype(schema)
        mask_var = xr.Variable(("y", "x"), coadd.mask.packed(), mask_attrs)
    except ValueError:
        mask_var = xr.Variable(("y", "x", "mask_element"), coadd.mask.array, mask_attrs)
    data_vars: dict[str, Any] = {
        "image": xr.Variable(("y", "x"), coadd.image.array, {"units": _unit_string(coadd.unit)}),
        "mask": mask_var,
        "variance": xr.Variable(("y", "x"), coadd.variance.array, {"units": _unit_string(coadd.variance.unit)}),
    }
    if coadd.mask_fractions:
        names = list(coadd.mask_fractions)
        data_vars["mask_fractions"] = xr.Variable(
            ("fraction", "y", "x"), stack_planes([coadd.mask_fractions[n].array for n in names], "mask_fractions")
        )
        coords["fraction"] = ("fraction", np.array(names, dtype=object))
    if coadd.noise_realizations:
        data_vars["noise_realizations"] = xr.Variable(
            ("realization", "y", "x"),
            stack_planes([v.array for v in coadd.noise_realizations], "noise_realizations"),
        )
        coords["realization"] = ("realization", np.arange(len(coadd.noise_realizations)))
    bounds = coadd.bounds
    start, stop = bounds.subgrid_start, bounds.subgrid_stop
    kb = coadd.psf.kernel_bbox
    data_vars["psf"] = xr.Variable((*PSF_CELL_DIMS, "psf_y", "psf_x"), coadd.psf.array)
    coords.update(cell_coords(coadd.grid, bbox))
    coords.update({
        PSF_CELL_DIMS[0]: (PSF_CELL_DIMS[0], np.arange(start.i, stop.i)),
        PSF_CELL_DIMS[1]: (PSF_CELL_DIMS[1], np.arange(start.j, stop.j)),
        "psf_y": ("psf_y", np.arange(kb.y.start, kb.y.stop)),
        "psf_x": ("psf_x", np.arange(kb.x.start, kb.x.stop)),
    })
    attrs: dict[str, Any] = {
        "title": "cell-based coadd",
        "band": coadd.band if coadd.band is not None else "",
        "skymap": coadd.skymap,
        "tract": coadd.tract,
        "bbox": str(bbox),
        "cell_shape": [coadd.grid.cell_shape.y, coadd.grid.cell_shape.x],
        "cell_bounds": json.dumps(bounds.to_json()),
        "sky_projection": json.dumps(coadd.projection.to_json()),
        "metadata": json.dumps(coadd.metadata),
    }
    if coadd.patch_definition is not None:
        attrs["patch"] = coadd.patch.id
        attrs["patch_index"] = [coadd.patch.index.y, coadd.patch.index.x]
        attrs["patch_definition"] = json.dumps(coadd.patch.to_json())
    source_url = source_url if source_url is not None else coadd.source_url
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    if source_url is not None:
        ds.attrs["source_url"] = attr_url(source_url)
        # Set here, xarray's ``open_dataset`` keeps it instead of recording the URL as given.
        ds.encoding["source"] = attr_url(source_url)
    return ds


def cell_coords(grid: CellGrid, bbox: Box) -> dict[str, Any]:
    """Per-pixel ``cell_i`` (along ``y``) and ``cell_j`` (along ``x``): each pixel's cell in ``grid``.

    With them ``ds.groupby(["cell_i", "cell_j"])`` and selections by cell are exact on any box.
    """
    cy, cx = grid.cell_shape
    y = np.arange(bbox.y.start, bbox.y.stop, dtype=np.int64)
    x = np.arange(bbox.x.start, bbox.x.stop, dtype=np.int64)
    return {
        "cell_i": ("y", (y - grid.bbox.y.start) // cy, {"long_name": "cell row index of the pixel"}),
        "cell_j": ("x", (x - grid.bbox.x.start) // cx, {"long_name": "cell column index of the pixel"}),
    }


def schema_from_attrs(attrs: Mapping[str, Any]) -> MaskSchema:
    """The mask schema a Dataset's ``mask`` variable carries in its ``attrs``."""
    planes = [None if p is None else MaskPlane(p[0], p[1]) for p in json.loads(attrs["mask_schema"])]
    return MaskSchema(planes, dtype=attrs.get("mask_dtype", "uint8"))


def box_of(ds: xr.Dataset) -> Box:
    """The absolute bbox of a Dataset's ``y``/``x`` coordinates.

    Raises
    ------
    BoundsError
        If the selection is empty or its coordinates are not contiguous pixel ranges.
    """
    y, x = ds["y"].values, ds["x"].values
    if y.size == 0 or x.size == 0:
        raise BoundsError("The Dataset selection is empty.")
    if np.any(np.diff(y) != 1) or np.any(np.diff(x) != 1):
        raise BoundsError("The Dataset's y/x coordinates are not contiguous pixel ranges.")
    return Box(Interval(int(y[0]), int(y[-1]) + 1), Interval(int(x[0]), int(x[-1]) + 1))


def _data(var: xr.DataArray) -> da.Array:
    # ``.data`` of a lazily indexed (not dask) variable would read it all: chunk it first.
    return (var if var.chunks is not None else var.chunk()).data


def dataset_to_coadd(ds: xr.Dataset) -> CellCoadd:
    """Rebuild a lazy :class:`~cellcoadd_dask.CellCoadd` from a Dataset made by :func:`coadd_to_dataset`.

    Provenance, aperture corrections and backgrounds are not Dataset variables: when
    the Dataset has a ``source_url`` attribute they are re-read from that archive on
    first access (without storage options, so a private object store needs them in
    the environment).  A ``source_url`` whose query or password was removed
    (``attr_url``: a presigned URL) cannot be opened again: such a coadd has none.
    """
    from .projection import SkyProjection

    if "cell_bounds" not in ds.attrs or "psf" not in ds:
        if "patches" in ds.attrs:
            raise ValidationError(
                "This Dataset is a tract mosaic (open_tract): per-cell data (PSF, provenance, aperture "
                "corrections) belongs to each patch's own cell grid, so it is not one coadd. Open a patch "
                "with open_coadd(url) (the patches' URLs are in ds.attrs['urls']), or select a patch's "
                "inner box and compute on the Dataset itself."
            )
        missing = [k for k in ("cell_bounds",) if k not in ds.attrs] + [k for k in ("psf",) if k not in ds]
        raise ValidationError(
            f"This Dataset is not the view of one coadd: it has no {' and no '.join(map(repr, missing))} "
            "(a reduction or selection dropped them); to_coadd() needs the Dataset of coadd.to_xarray()."
        )
    bbox = box_of(ds)
    image = Image(_data(ds["image"]), bbox=bbox, unit=ds["image"].attrs.get("units"))
    variance = Image(_data(ds["variance"]), bbox=bbox, unit=ds["variance"].attrs.get("units"))
    schema = schema_from_attrs(ds["mask"].attrs)
    mask_data = _data(ds["mask"])
    if mask_data.ndim == 2:
        mask = _mask_from_packed(mask_data, schema, bbox)
    else:
        mask = Mask(mask_data, schema=schema, bbox=bbox)
    fractions = {}
    if "mask_fractions" in ds:
        for name in ds["fraction"].values:
            fractions[str(name)] = Image(_data(ds["mask_fractions"].sel(fraction=name)), bbox=bbox)
    noise = []
    if "noise_realizations" in ds:
        noise = [
            Image(_data(ds["noise_realizations"].isel(realization=n)), bbox=bbox)
            for n in range(ds.sizes["realization"])
        ]
    full_bounds = bounds_from_json(json.loads(ds.attrs["cell_bounds"]))
    inner = full_bounds.bbox.intersection(bbox)
    if inner is None:
        raise BoundsError(f"The Dataset's extent {bbox} lies outside its cell bounds {full_bounds.bbox}.")
    sub = full_bounds[inner]
    a, b = sub.subgrid_start, sub.subgrid_stop
    # Datasets saved before the per-pixel cell coordinates have the psf on (cell_i, cell_j, ...).
    di, dj = PSF_CELL_DIMS if PSF_CELL_DIMS[0] in ds["psf"].dims else ("cell_i", "cell_j")
    psf_array = _data(ds["psf"].sel({di: slice(a.i, b.i - 1), dj: slice(a.j, b.j - 1)}))
    psf = CellPointSpreadFunction(psf_array, sub)
    patch = patch_from_json(json.loads(ds.attrs["patch_definition"])) if "patch_definition" in ds.attrs else None
    url = ds.attrs.get("source_url")
    provenance = aperture = backgrounds = None
    if url is not None and not _is_redacted(url):
        if patch is not None:
            provenance = _deferred_from_source(url, bbox, "provenance")
        aperture = _deferred_from_source(url, bbox, "aperture_corrections")
        backgrounds = _deferred_from_source(url, bbox, "backgrounds")
    return CellCoadd(
        image,
        mask=mask,
        variance=variance,
        mask_fractions=fractions,
        noise_realizations=noise,
        projection=SkyProjection.from_json(json.loads(ds.attrs["sky_projection"])),
        band=ds.attrs.get("band") or None,
        psf=psf,
        patch=patch,
        provenance=provenance,
        aperture_corrections=aperture,
        backgrounds=backgrounds,
        metadata=json.loads(ds.attrs.get("metadata", "{}")),
        source_url=url,
    )


def _from_source(url: str, box: Box, name: str) -> Any:
    from .open import open_coadd

    coadd = open_coadd(url)
    # As for the coadd itself: the whole keeps its tables as stored, a part gets the subset.
    part = coadd if box == coadd.bbox else coadd[box]
    try:
        return getattr(part, name)
    except AttributeError:
        return None


def _deferred_from_source(url: str, box: Box, name: str) -> Any:
    """``coadd.<name>`` of the archive at ``url`` restricted to ``box``, read on first use."""
    from .deferred import Deferred

    return Deferred(functools.partial(_from_source, url, box, name))
