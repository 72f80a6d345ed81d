"""``open_tract``: the patches of one tract as one lazy :class:`xarray.Dataset` on the tract pixel grid.

Each patch contributes the pixels of its inner (non-overlapping) box that its file covers;
the inner boxes of a skymap tile the tract, so the Dataset spans the bounding box of the
inner boxes given, and whatever no patch covers holds fill values with ``NO_DATA`` set.

Every plane of the Dataset is one dask array, chunked on cell edges, over a small source
that hands each region asked for to the patches it overlaps.  A slice of the Dataset thus
reaches each patch's own lazy array as exactly the part it needs, and reads only the tiles
it touches, however large the chunks are.  (Concatenating the patches' arrays with
``dask.array.block`` would hide each source behind a task per chunk: a small slice would
then read whole chunks, i.e. whole patches with ``chunks="auto"``.)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from .cells import CellGrid
from .coadd import CellCoadd
from .errors import ValidationError, shown_url
from .fetch import normalize_url
from .geom import Box, Interval
from .lazy import Chunks, cell_chunks, plane_array
from .mask import MaskSchema, packed_dtype
from .tract_patches import OPEN_THREADS, check_patches, open_all
from .tract_source import PatchHandle, TractSource

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "MAX_CHUNKS_PER_PLANE",
    "OPEN_THREADS",
    "as_url_list",
    "open_tract",
    "tract_dataset",
]


NO_DATA = "NO_DATA"
"""The mask plane set wherever no patch provides pixels."""


def as_url_list(urls: str | PathLike[str] | Iterable[str | PathLike[str]]) -> list[str]:
    """Normalized URLs of the patches, each given once (:class:`ValidationError` otherwise)."""
    if isinstance(urls, (str, PathLike)):
        urls = [urls]
    out = [normalize_url(u) for u in urls]
    if not out:
        raise ValidationError("open_tract needs at least one URL.")
    seen: dict[str, int] = {}
    for n, url in enumerate(out):
        if url in seen:
            raise ValidationError(
                f"urls[{seen[url]}] and urls[{n}] are the same file ({shown_url(url)}): each patch is given once."
            )
        seen[url] = n
    return out


def _axis_intervals(spans: Iterable[tuple[Interval, str]], axis: str) -> list[Interval]:
    """Distinct inner intervals along one axis, sorted, with the gaps between them as intervals of their own."""
    distinct: dict[tuple[int, int], str] = {}
    for iv, url in spans:
        distinct.setdefault((iv.start, iv.stop), url)
    ordered = sorted(distinct)
    out: list[Interval] = []
    for (a0, a1), (b0, b1) in itertools.pairwise(ordered):
        if b0 < a1:
            raise ValidationError(
                f"{shown_url(distinct[(b0, b1)])}: field 'patch.inner_bbox': its {axis} range [{b0}, {b1}) overlaps "
                f"[{a0}, {a1}) of {shown_url(distinct[(a0, a1)])}; inner boxes of a tract do not overlap."
            )
    for n, (a0, a1) in enumerate(ordered):
        out.append(Interval(a0, a1))
        if n + 1 < len(ordered) and ordered[n + 1][0] > a1:
            out.append(Interval(a1, ordered[n + 1][0]))
    return out


def _axis_chunks(intervals: Sequence[Interval], chunk: Callable[[Interval], tuple[int, ...]]) -> tuple[int, ...]:
    return tuple(c for iv in intervals for c in chunk(iv))


def _first_overlap(boxes: Sequence[Box]) -> tuple[int, int] | None:
    """The first pair ``(i, j)``, ``i < j``, of overlapping boxes, or ``None`` (a sweep along y, not every pair)."""
    order = sorted(range(len(boxes)), key=lambda k: boxes[k].y.start)
    pairs = []
    for n, i in enumerate(order):
        for j in order[n + 1:]:
            if boxes[j].y.start >= boxes[i].y.stop:
                break
            if boxes[i].intersection(boxes[j]) is not None:
                pairs.append((min(i, j), max(i, j)))
    return min(pairs) if pairs else None


class _Layout:
    """The tract box and its chunks on cell edges (patch edges are always chunk edges)."""

    def __init__(self, patches: Sequence[PatchHandle], chunks: Chunks, first: CellCoadd) -> None:
        overlap = _first_overlap([p.inner for p in patches])
        if overlap is not None:
            a, b = patches[overlap[0]], patches[overlap[1]]
            raise ValidationError(
                f"{shown_url(b.url)}: field 'patch.inner_bbox' {b.inner} overlaps {a.inner} of {shown_url(a.url)}."
            )
        self.ys = _axis_intervals(((p.inner.y, p.url) for p in patches), "y")
        self.xs = _axis_intervals(((p.inner.x, p.url) for p in patches), "x")
        self.bbox = Box(Interval(self.ys[0].start, self.ys[-1].stop), Interval(self.xs[0].start, self.xs[-1].stop))
        # One grid for the whole tract: the first patch's cells, extended over the tract box.
        self.grid = CellGrid(first.patch.cells.snap(self.bbox), first.grid.cell_shape)
        self.chunks = chunks

    def yx_chunks(self, itemsize: int, extra: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Chunks along (y, x): per inner interval, cell multiples from the interval's start."""

        def along(axis: int) -> Callable[[Interval], tuple[int, ...]]:
            def chunk(iv: Interval) -> tuple[int, ...]:
                other = self.bbox.x if axis == 0 else self.bbox.y
                box = Box(iv, other) if axis == 0 else Box(other, iv)
                grid = CellGrid(box, self.grid.cell_shape)
                return cell_chunks(box, grid, self.chunks, itemsize, extra)[axis]

            return chunk

        return _axis_chunks(self.ys, along(0)), _axis_chunks(self.xs, along(1))


MAX_CHUNKS_PER_PLANE = 10_000
"""Above this many chunks per plane, :func:`open_tract` warns (``chunks="cell"`` on a large tract)."""


def _warn_if_many_chunks(layout: _Layout) -> None:
    ys, xs = layout.yx_chunks(4)
    n = len(ys) * len(xs)
    if n > MAX_CHUNKS_PER_PLANE:
        import warnings

        from dask.array.core import PerformanceWarning

        warnings.warn(
            f"open_tract(chunks={layout.chunks!r}) gives {n:,} chunks per plane: a computation over the whole "
            f"tract schedules that many tasks per variable, which costs more than reading. Use chunks='auto' "
            f"(reads still touch only the tiles a selection needs) and select before computing.",
            PerformanceWarning,
            stacklevel=3,
        )


def _plane(layout: _Layout, patches: Sequence[PatchHandle], spec: str, fill: np.ndarray,
           trailing: tuple[int, ...], name: str) -> da.Array:
    source = TractSource(layout.bbox, patches, spec, fill, trailing)
    extra = int(np.prod(trailing)) if trailing else 1
    yx = layout.yx_chunks(source.dtype.itemsize, extra)
    chunks = (*yx, *((n,) for n in trailing))
    return plane_array(source, name=f"tract-{name}", chunks=chunks, token=source.__dask_tokenize__())


def _mask_fill(schema: MaskSchema, packed: bool) -> np.ndarray:
    """The mask value of pixels no patch provides: ``NO_DATA`` only (0 without such a plane)."""
    if packed:
        dtype = packed_dtype(schema)
        if NO_DATA not in schema.names:
            return np.zeros((), dtype=dtype)
        return np.array(1 << schema.index(NO_DATA), dtype=dtype)
    value = np.zeros(schema.mask_size, dtype=schema.dtype)
    if NO_DATA in schema.names:
        element, bit = schema.bit(NO_DATA)
        value[element] = bit
    return value


def open_tract(
    urls: str | PathLike[str] | Iterable[str | PathLike[str]] | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Chunks = "auto",
    butler: Any = None,
    dataset_type: Any = "deep_coadd",
    skymap: str | None = None,
    tract: int | None = None,
    band: str | None = None,
    collections: Any = None,
) -> xr.Dataset:
    """Open the patch files of one tract as one lazy Dataset on the tract pixel grid.

    Files are opened in parallel (metadata only); nothing else is read until the Dataset
    is computed, and a selection reads only the tiles of the patches it touches.

    Parameters
    ----------
    urls
        Local paths or fsspec URLs of the patch files (one per patch; a single path is
        accepted too).
    storage_options
        Passed to fsspec for every file (never stored in the Dataset).
    chunks
        ``"auto"``, ``"cell"`` or ``(ny, nx)`` cells per chunk (see :func:`open_coadd`).
        Chunk edges are cell edges, and every edge of a patch's inner box is a chunk edge.
    butler, dataset_type, skymap, tract, band, collections
        Instead of ``urls``: every patch of ``dataset_type`` (``"deep_coadd"``) the butler
        finds for ``tract`` and ``band`` (and ``skymap``) in ``collections`` (default: the
        butler's), read from the datastore's files (:func:`~cellcoadd_dask.open_butler`).
        Chunking never changes what a selection reads (only the tiles it needs), only the
        size of the graphs; over ``MAX_CHUNKS_PER_PLANE`` (10,000) chunks per plane (``"cell"``
        on a tract of more than about 20 patches) a ``dask.array.PerformanceWarning`` says so.

    Returns
    -------
    xarray.Dataset
        Variables ``image``, ``mask``, ``variance`` on ``(y, x)`` (the mask packed as by
        :meth:`CellCoadd.to_xarray`, with the same ``flag_masks``/``flag_meanings``);
        ``mask_fractions`` on ``(fraction, y, x)`` and ``noise_realizations`` on
        ``(realization, y, x)`` when the patches have them.  Coordinates ``y``, ``x`` are
        absolute (tract) pixel indices (int64) over the bounding box of the patches' inner
        boxes; ``cell_i`` (along ``y``) and ``cell_j`` (along ``x``) give each pixel's cell in
        the tract's cell grid (attribute ``cell_grid``), so that grouping by cell is exact.
        Each patch provides its inner box as far as its file covers it (cells a file lists
        as missing keep the values stored for them); everywhere else the image
        and noise are NaN, the variance +inf, the mask fractions 0 and the mask has only
        ``NO_DATA`` set (nothing when the schema has no such plane).  Attributes: ``skymap``,
        ``tract``, ``band``, ``bbox``, ``cell_shape``, ``cell_grid``, ``sky_projection``,
        and per patch (in order of patch index) ``patches`` (ids), ``patch_indices``,
        ``patch_inner_bboxes`` (JSON boxes) and
        ``urls`` (without query strings or passwords: a presigned URL's signature is
        never kept).

    Raises
    ------
    ValidationError
        When no URL is given, a file is given twice, two files are the same patch index
        or their inner boxes overlap, a file has no patch definition, or the patches
        disagree on skymap, tract, band, units, dtypes, cell shape or grid, mask schema,
        mask-fraction names or number of noise realizations (the message names the file
        and the field).

    Notes
    -----
    The accessor's ``bbox``, ``wcs``, ``pixel_to_sky``, ``sky_to_pixel``, ``sel_sky`` and
    ``mask_plane`` work on the tract Dataset (every patch of a tract shares one sky
    projection, that of the tract frame).  Per-cell data (PSF, aperture corrections,
    provenance) belongs to each patch's own cell grid and is not part of the tract
    Dataset, so ``ds.cellcoadd.to_coadd()`` raises a :class:`ValidationError` saying so:
    open the patch for those.
    """
    if butler is not None:
        from .butler import open_butler_tract

        if urls is not None:
            raise ValidationError("open_tract: give urls or butler=, not both")
        return open_butler_tract(butler, dataset_type=dataset_type, skymap=skymap, tract=tract, band=band,
                                 collections=collections, storage_options=storage_options, chunks=chunks)
    if urls is None:
        raise ValidationError("open_tract: give the patch URLs, a tract index URL, or butler=")
    if isinstance(urls, (str, PathLike)):
        from .archives.registry import suffix_format

        if suffix_format(normalize_url(urls)) is None:  # not a coadd file: a tract index
            from .tract_index import open_tract_index

            return open_tract_index(normalize_url(urls), storage_options=storage_options, chunks=chunks)
    url_list = as_url_list(urls)
    handles = check_patches(url_list, open_all(url_list, storage_options, chunks))
    return tract_dataset(handles, handles[0].coadd, chunks)


def tract_dataset(patches: list[PatchHandle], first: CellCoadd, chunks: Chunks) -> xr.Dataset:
    """The tract Dataset over ``patches`` (checked to agree); ``first`` is an opened patch (the template)."""
    import xarray as xr

    from .xarray_dataset import attr_url, cell_coords, coadd_to_dataset, stack_planes

    patches = sorted(patches, key=lambda p: p.index)
    layout = _Layout(patches, chunks, first)
    _warn_if_many_chunks(layout)
    cut = first.patch.inner_bbox.intersection(first.bbox)
    template = coadd_to_dataset(first[cut] if cut is not None else first)
    schema = first.mask.schema
    try:
        packed_dtype(schema)
        packed = True
    except ValueError:
        packed = False

    def nan(dtype: Any) -> np.ndarray:
        return np.array(np.nan, dtype=dtype)

    def variable(dims: tuple[str, ...], spec: str, fill: np.ndarray, like: str,
                 trailing: tuple[int, ...] = ()) -> xr.Variable:
        return xr.Variable(dims, _plane(layout, patches, spec, fill, trailing, like), template[like].attrs)

    bbox = layout.bbox
    coords: dict[str, Any] = {
        "y": ("y", np.arange(bbox.y.start, bbox.y.stop, dtype=np.int64)),
        "x": ("x", np.arange(bbox.x.start, bbox.x.stop, dtype=np.int64)),
    }
    coords.update(cell_coords(layout.grid, bbox))
    data_vars: dict[str, Any] = {
        "image": variable(("y", "x"), "image", nan(first.image.dtype), "image"),
        "mask": variable(tuple(str(d) for d in template["mask"].dims), "mask" if packed else "mask-elements",
                         _mask_fill(schema, packed), "mask", () if packed else (schema.mask_size,)),
        "variance": variable(("y", "x"), "variance", np.array(np.inf, first.variance.dtype), "variance"),
    }
    if first.mask_fractions:
        names = list(first.mask_fractions)
        planes = [_plane(layout, patches, f"fraction:{n}", np.zeros((), first.mask_fractions[n].dtype), (),
                         f"mask_fraction-{n}") for n in names]
        data_vars["mask_fractions"] = xr.Variable(("fraction", "y", "x"), stack_planes(planes, "tract-mask_fractions"))
        coords["fraction"] = ("fraction", np.array(names, dtype=object))
    if first.noise_realizations:
        planes = [_plane(layout, patches, f"noise:{k}", nan(first.noise_realizations[k].dtype), (),
                         f"noise_realization-{k}") for k in range(len(first.noise_realizations))]
        data_vars["noise_realizations"] = xr.Variable(
            ("realization", "y", "x"), stack_planes(planes, "tract-noise_realizations")
        )
        coords["realization"] = ("realization", np.arange(len(first.noise_realizations)))
    attrs: dict[str, Any] = {
        "title": "cell-based coadd tract",
        "band": first.band if first.band is not None else "",
        "skymap": first.skymap,
        "tract": first.tract,
        "bbox": str(bbox),
        "cell_shape": [first.grid.cell_shape.y, first.grid.cell_shape.x],
        "cell_grid": json.dumps(layout.grid.to_json()),
        "sky_projection": template.attrs["sky_projection"],
        "patches": [p.patch_id for p in patches],
        "patch_indices": json.dumps([list(p.index) for p in patches]),
        "patch_inner_bboxes": json.dumps([p.inner.to_json() for p in patches]),
        "urls": [attr_url(p.url) for p in patches],
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
