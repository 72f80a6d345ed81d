"""Per-cell statistics of a patch or tract Dataset, honouring the mask: :func:`cell_statistics`.

Every dask block is reduced to per-cell moments (pixel count, valid count, sum, sum of
squared deviations, min, max; :mod:`cellcoadd_dask.moments`) with ``reduceat`` over the
runs of the block's cell indices.  When the variable is a plane read straight from
tile-compressed storage whose tiles are the cells, each tile is instead reduced as it is
decoded, while it is in the processor's cache, and no array of the block is made.  The
blocks' moments are merged exactly (Chan, Golub and LeVeque), in float64, so blocks need
not start on cell edges: a cell split over blocks is merged exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ValidationError
from .moments import MOMENTS, empty_moments, merge_moments

if TYPE_CHECKING:
    import xarray as xr

    from .coadd import CellCoadd

__all__ = ["CELL_STATISTICS", "cell_statistics", "valid_mask"]

CELL_STATISTICS = ("pixels", "count", "sum", "mean", "std", "min", "max")
"""The variables of :func:`cell_statistics`' result."""

def _plane_bits(mask_attrs: dict[str, Any], names: Iterable[str]) -> dict[str, int]:
    meanings = str(mask_attrs.get("flag_meanings", "")).split()
    masks = [int(m) for m in mask_attrs.get("flag_masks", [])]
    out = {}
    for name in names:
        if name not in meanings:
            raise ValidationError(f"unknown mask plane {name!r}; planes are {meanings}")
        out[name] = masks[meanings.index(name)]
    return out


def _excluded(mask: xr.DataArray, exclude: Sequence[str]) -> list[str]:
    """The planes of ``exclude`` to test: all of them, but ``NO_DATA`` only when the schema has it."""
    return [n for n in exclude if n != "NO_DATA" or n in str(mask.attrs.get("flag_meanings", "")).split()]


def valid_mask(ds: xr.Dataset, exclude: Sequence[str] = ("NO_DATA",)) -> xr.DataArray:
    """Lazy boolean ``(y, x)`` DataArray: no plane of ``exclude`` is set (unknown planes are an error).

    Planes named in ``exclude`` that the mask schema lacks raise, except ``NO_DATA``, which a
    schema may not have (then nothing is excluded for it).
    """
    from .xarray_dataset import schema_from_attrs

    mask = ds["mask"]
    if mask.chunks is None:
        mask = mask.chunk()
    wanted = _excluded(mask, exclude)
    if "mask_element" in mask.dims:
        schema = schema_from_attrs(mask.attrs)
        bad = None
        for name in wanted:
            if name not in schema.names:
                raise ValidationError(f"unknown mask plane {name!r}; planes are {list(schema.names)}")
            element, bit = schema.bit(name)
            hit = (mask.isel(mask_element=element) & bit) != 0
            bad = hit if bad is None else bad | hit
        return ~bad if bad is not None else (mask.isel(mask_element=0) == mask.isel(mask_element=0))
    bits = 0
    for bit in _plane_bits(dict(mask.attrs), wanted).values():
        bits |= bit
    return (mask & bits) == 0


def _runs(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each run of equal cell indices starts along an axis, and its cell index."""
    starts = np.flatnonzero(np.diff(cells, prepend=cells[0] - 1))
    return starts, cells[starts]


def _block_moments(values: np.ndarray, valid: np.ndarray | None, ci: np.ndarray, cj: np.ndarray,
                   i0: int, j0: int, ni: int, nj: int) -> np.ndarray:
    """``(MOMENTS, ni, nj)`` moments of one block's cells (cell ``(i0, j0)`` first).

    Cells are runs of equal ``ci`` (rows) and ``cj`` (columns), so every moment is a
    ``reduceat`` over the runs along each axis: one vectorized pass per moment.
    ``valid`` ``None`` counts every finite pixel.
    """
    v = np.asarray(values, dtype=np.float64)
    good = np.isfinite(v)
    if valid is not None:
        good &= np.asarray(valid, dtype=bool)
    ys, yi = _runs(np.asarray(ci))
    xs, xj = _runs(np.asarray(cj))
    heights = np.diff(np.append(ys, v.shape[0]))
    widths = np.diff(np.append(xs, v.shape[1]))

    def per_cell(a: np.ndarray, ufunc: np.ufunc = np.add) -> np.ndarray:
        return ufunc.reduceat(ufunc.reduceat(a, ys, axis=0), xs, axis=1)

    kept = np.where(good, v, 0.0)
    count = per_cell(good.astype(np.float64))
    total = per_cell(kept)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    deviation = np.where(good, v - np.repeat(np.repeat(mean, heights, axis=0), widths, axis=1), 0.0)
    deviation *= deviation
    cells = empty_moments((ni, nj))
    at = np.ix_(yi - i0, xj - j0)
    cells[0][at] = np.outer(heights, widths)
    cells[1][at] = count
    cells[2][at] = total
    cells[3][at] = per_cell(deviation)
    cells[4][at] = per_cell(np.where(good, v, np.inf), np.minimum)
    cells[5][at] = per_cell(np.where(good, v, -np.inf), np.maximum)
    return cells


def _valid_block(mask: Any, region: tuple[slice, slice], bits: int) -> np.ndarray | None:
    """Where none of ``bits`` is set in a region of a packed mask source; ``None`` when that is everywhere."""
    packed = np.asarray(mask[region])
    valid = np.bitwise_and(packed, np.array(bits, dtype=packed.dtype)) == 0
    return None if valid.all() else valid


def _fused_block(source: Any, region: tuple[slice, slice], valid: np.ndarray | None, full: bool, ci: np.ndarray,
                 cj: np.ndarray, i0: int, j0: int, ni: int, nj: int) -> np.ndarray:
    """A block's cell moments from the stored tiles, each reduced as it is decoded, when tiles are cells.

    Falls back to reading the block and :func:`_block_moments` when the source cannot reduce
    per tile or its tiles are not the block's cells.
    """
    found = source.tile_moments(region, valid, full)
    if found is not None:
        moments, y_edges, x_edges = found
        ys, yi = _runs(np.asarray(ci))
        xs, xj = _runs(np.asarray(cj))
        if np.array_equal(y_edges[:-1], ys) and np.array_equal(x_edges[:-1], xs):
            cells = empty_moments((ni, nj))
            cells[(slice(None), *np.ix_(yi - i0, xj - j0))] = moments
            return cells
    return _block_moments(np.asarray(source[region]), valid, ci, cj, i0, j0, ni, nj)


def _gather(parts: list[np.ndarray], offsets: list[tuple[int, int]], ni: int, nj: int) -> np.ndarray:
    """The blocks' cell moments merged into the moments of every cell, ``(MOMENTS, ni, nj)``."""
    out = empty_moments((ni, nj))
    for part, (i, j) in zip(parts, offsets, strict=True):
        at = (slice(None), slice(i, i + part.shape[1]), slice(j, j + part.shape[2]))
        out[at] = merge_moments(out[at], part)
    return out


def cell_statistics(
    data: xr.Dataset | CellCoadd,
    variable: str = "image",
    *,
    exclude: Sequence[str] = ("NO_DATA",),
    statistics: Sequence[str] = CELL_STATISTICS,
    compute: bool = True,
) -> xr.Dataset:
    """Statistics of every cell of a patch or tract Dataset, over the pixels the mask allows.

    A pixel counts when it is finite and none of the mask planes in ``exclude`` is set on it
    (by default ``NO_DATA``: both fill conventions, image 0 in a missing cell and NaN in a
    missing patch, are left out).  Cells are those of the Dataset's ``cell_i``/``cell_j``
    coordinates, so any box (or a tract) is summarised exactly, a cell cut by the box over
    the part inside it.

    Parameters
    ----------
    data
        A Dataset from :meth:`~cellcoadd_dask.CellCoadd.to_xarray`, :func:`~cellcoadd_dask.open_coadd`'s
        xarray engine or :func:`~cellcoadd_dask.open_tract` (or a selection of one), or a
        :class:`~cellcoadd_dask.CellCoadd`.
    variable
        A ``(y, x)`` variable (``image``, ``variance``), or ``(k, y, x)`` one selected first
        (``ds.isel(realization=0)``).
    exclude
        Mask planes whose pixels are left out (``()`` keeps every finite pixel).
    statistics
        The variables wanted, among ``pixels``, ``count``, ``sum``, ``mean``, ``std``, ``min``
        and ``max`` (default: all).  Without ``std``,
        ``min`` and ``max``, a plane stored as quantized FITS tiles (lossy) is summed from its
        stored integers, tile by tile, without restoring each pixel to a float: the sums are
        those of the restored values before their rounding to the plane's float type (they
        agree with sums of the read pixels to that type's precision, about 1e-7 relative
        for float32), and a third cheaper to make (decoding the stored bytes is then most
        of the cost).  A single name is one statistic.
    compute
        Compute now (default, on the current dask scheduler or ``distributed`` client), or
        return the Dataset of lazy dask arrays.

    Returns
    -------
    xarray.Dataset
        On ``(cell_i, cell_j)``, those of ``statistics``: ``pixels`` (pixels of the cell in
        the selection), ``count`` (those counted), ``sum``, ``mean``, ``std`` (population,
        ``ddof=0``), ``min``, ``max`` (float64; NaN where ``count`` is 0).  Attribute ``excluded``.

    Raises
    ------
    ValidationError
        When the Dataset has no ``cell_i``/``cell_j`` coordinates or no ``mask``, the variable
        is not ``(y, x)``, a plane of ``exclude`` is not in the mask schema, or ``statistics``
        names something else.
    """
    import dask
    import dask.array as da
    import xarray as xr

    from .lazy import array_source

    ds = data if isinstance(data, xr.Dataset) else data.to_xarray()
    if "cell_i" not in ds.coords or "cell_j" not in ds.coords:
        raise ValidationError("the Dataset has no cell_i/cell_j coordinates (open it with this package)")
    if variable not in ds or ds[variable].dims != ("y", "x"):
        found = ds[variable].dims if variable in ds else None
        raise ValidationError(f"variable {variable!r} must be on (y, x); found {found}")
    if "mask" not in ds:
        raise ValidationError("the Dataset has no mask variable")
    wanted_stats = list(dict.fromkeys([statistics] if isinstance(statistics, str) else statistics))
    unknown = [name for name in wanted_stats if name not in CELL_STATISTICS]
    if unknown or not wanted_stats:
        raise ValidationError(f"statistics {unknown or wanted_stats} are not among {list(CELL_STATISTICS)}")
    full = any(name in ("std", "min", "max") for name in wanted_stats)
    values = ds[variable]
    values = values if values.chunks is not None else values.chunk()
    chunks = values.data.chunks
    wanted = _excluded(ds["mask"], exclude)
    marr = valid_mask(ds, exclude).chunk({"y": chunks[0], "x": chunks[1]}).data if wanted else None
    ci = np.asarray(ds["cell_i"].values, dtype=np.int64)
    cj = np.asarray(ds["cell_j"].values, dtype=np.int64)
    if ci.size == 0 or cj.size == 0:
        raise ValidationError("the selection is empty")
    i_first, j_first = int(ci.min()), int(cj.min())
    ni, nj = int(ci.max()) - i_first + 1, int(cj.max()) - j_first + 1
    varr = values.data
    source = array_source(varr)
    fused = None if source is None or getattr(source, "tile_moments", None) is None else dask.delayed(
        source, name=f"tile-moments-source-{varr.name}")
    # With the plane's tiles reduced in place, a block's mask is read from its source by a task
    # that passes on nothing when no pixel is excluded (statistics of several variables
    # computed together share it).
    mask_source, bits = None, 0
    if fused is not None and wanted and ds["mask"].dims == ("y", "x"):
        stored_mask = array_source(ds["mask"].data)
        if stored_mask is not None:
            mask_source = dask.delayed(stored_mask, name=f"tile-moments-mask-{ds['mask'].data.name}")
            bits = sum(_plane_bits(dict(ds["mask"].attrs), wanted).values())
    parts: list[Any] = []
    offsets: list[tuple[int, int]] = []
    ys = np.cumsum((0, *varr.chunks[0]))
    xs = np.cumsum((0, *varr.chunks[1]))
    for by in range(len(varr.chunks[0])):
        for bx in range(len(varr.chunks[1])):
            bci, bcj = ci[ys[by]:ys[by + 1]], cj[xs[bx]:xs[bx + 1]]
            i0, j0 = int(bci.min()), int(bcj.min())
            bni, bnj = int(bci.max()) - i0 + 1, int(bcj.max()) - j0 + 1
            valid = None if marr is None else marr.blocks[by, bx]
            if fused is not None:
                region = (slice(int(ys[by]), int(ys[by + 1])), slice(int(xs[bx]), int(xs[bx + 1])))
                if mask_source is not None:
                    valid = dask.delayed(_valid_block, pure=True)(mask_source, region, bits)
                part = dask.delayed(_fused_block, pure=True)(fused, region, valid, full, bci, bcj, i0, j0,
                                                                 bni, bnj)
            else:
                part = da.map_blocks(_block_moments, varr.blocks[by, bx], valid, bci, bcj,
                                     i0, j0, bni, bnj, dtype=np.float64, chunks=((MOMENTS,), (bni,), (bnj,)),
                                     new_axis=0, meta=np.empty((0, 0, 0)))
            parts.append(part)
            offsets.append((i0 - i_first, j0 - j_first))
    moments = dask.delayed(_gather, pure=True)(parts, offsets, ni, nj)
    ds_out = _to_dataset(moments, i_first, j_first, ni, nj, tuple(exclude), values.attrs.get("units"))[wanted_stats]
    return ds_out.compute() if compute else ds_out


def _to_dataset(moments: Any, i0: int, j0: int, ni: int, nj: int, exclude: tuple[str, ...],
                units: Any) -> xr.Dataset:
    import dask.array as da
    import xarray as xr

    stacked = da.from_delayed(moments, shape=(MOMENTS, ni, nj), dtype=np.float64)
    pixels, count, total, m2, low, high = (stacked[k] for k in range(MOMENTS))
    some = count > 0
    mean = da.where(some, total / da.where(some, count, 1), np.nan)
    std = da.where(some, da.sqrt(m2 / da.where(some, count, 1)), np.nan)
    unit = {"units": units} if units else {}
    dims = ("cell_i", "cell_j")
    return xr.Dataset(
        {
            "pixels": (dims, pixels.astype(np.int64), {"long_name": "pixels of the cell in the selection"}),
            "count": (dims, count.astype(np.int64), {"long_name": "finite pixels not excluded by the mask"}),
            "sum": (dims, total, unit),
            "mean": (dims, mean, unit),
            "std": (dims, std, {**unit, "long_name": "population standard deviation"}),
            "min": (dims, da.where(some, low, np.nan), unit),
            "max": (dims, da.where(some, high, np.nan), unit),
        },
        coords={"cell_i": np.arange(i0, i0 + ni), "cell_j": np.arange(j0, j0 + nj)},
        attrs={"excluded": list(exclude)},
    )
