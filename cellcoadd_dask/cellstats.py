"""Per-cell statistics of a patch or tract Dataset, honouring the mask: :func:`cell_statistics`.

Every dask block is reduced to per-cell moments (pixel count, valid count, sum, sum of
squared deviations, min, max) with one pass of ``numpy.bincount`` over the block's cell
indices; the blocks' moments are merged pairwise (Chan, Golub and LeVeque), in float64.
Blocks need not start on cell edges: a cell split over blocks is merged exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ValidationError

if TYPE_CHECKING:
    import xarray as xr

    from .coadd import CellCoadd

__all__ = ["CELL_STATISTICS", "cell_statistics", "valid_mask"]

CELL_STATISTICS = ("pixels", "count", "sum", "mean", "std", "min", "max")
"""The variables of :func:`cell_statistics`' result."""

_MOMENTS = 6  # pixels, count, sum, m2, min, max


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
    """``(_MOMENTS, ni, nj)`` moments of one block's cells (cell ``(i0, j0)`` first).

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
    cells = np.zeros((_MOMENTS, ni, nj))
    cells[4] = np.inf
    cells[5] = -np.inf
    at = np.ix_(yi - i0, xj - j0)
    cells[0][at] = np.outer(heights, widths)
    cells[1][at] = count
    cells[2][at] = total
    cells[3][at] = per_cell(deviation)
    cells[4][at] = per_cell(np.where(good, v, np.inf), np.minimum)
    cells[5][at] = per_cell(np.where(good, v, -np.inf), np.maximum)
    return cells


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two moment arrays of the same cells (pairwise update of the sums of squares)."""
    na, nb = a[1], b[1]
    n = na + nb
    mean_a = np.divide(a[2], na, out=np.zeros_like(na), where=na > 0)
    mean_b = np.divide(b[2], nb, out=np.zeros_like(nb), where=nb > 0)
    delta = mean_b - mean_a
    cross = np.divide(na * nb, n, out=np.zeros_like(n), where=n > 0)
    out = np.empty_like(a)
    out[0] = a[0] + b[0]
    out[1] = n
    out[2] = a[2] + b[2]
    out[3] = a[3] + b[3] + delta * delta * cross
    out[4] = np.minimum(a[4], b[4])
    out[5] = np.maximum(a[5], b[5])
    return out


def cell_statistics(
    data: xr.Dataset | CellCoadd,
    variable: str = "image",
    *,
    exclude: Sequence[str] = ("NO_DATA",),
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
    compute
        Compute now (default, on the current dask scheduler or ``distributed`` client), or
        return the Dataset of lazy dask arrays.

    Returns
    -------
    xarray.Dataset
        On ``(cell_i, cell_j)``: ``pixels`` (pixels of the cell in the selection),
        ``count`` (those counted), ``sum``, ``mean``, ``std`` (population, ``ddof=0``),
        ``min``, ``max`` (float64; NaN where ``count`` is 0).  Attribute ``excluded``.

    Raises
    ------
    ValidationError
        When the Dataset has no ``cell_i``/``cell_j`` coordinates or no ``mask``, the variable
        is not ``(y, x)``, or a plane of ``exclude`` is not in the mask schema.
    """
    import dask.array as da
    import xarray as xr

    ds = data if isinstance(data, xr.Dataset) else data.to_xarray()
    if "cell_i" not in ds.coords or "cell_j" not in ds.coords:
        raise ValidationError("the Dataset has no cell_i/cell_j coordinates (open it with this package)")
    if variable not in ds or ds[variable].dims != ("y", "x"):
        found = ds[variable].dims if variable in ds else None
        raise ValidationError(f"variable {variable!r} must be on (y, x); found {found}")
    if "mask" not in ds:
        raise ValidationError("the Dataset has no mask variable")
    values = ds[variable]
    values = values if values.chunks is not None else values.chunk()
    chunks = values.data.chunks
    if _excluded(ds["mask"], exclude):
        marr = valid_mask(ds, exclude).chunk({"y": chunks[0], "x": chunks[1]}).data
    else:
        marr = None  # nothing to exclude: the mask is not read
    ci = np.asarray(ds["cell_i"].values, dtype=np.int64)
    cj = np.asarray(ds["cell_j"].values, dtype=np.int64)
    if ci.size == 0 or cj.size == 0:
        raise ValidationError("the selection is empty")
    i_first, j_first = int(ci.min()), int(cj.min())
    ni, nj = int(ci.max()) - i_first + 1, int(cj.max()) - j_first + 1
    varr = values.data
    blocks: list[Any] = []
    ys = np.cumsum((0, *varr.chunks[0]))
    xs = np.cumsum((0, *varr.chunks[1]))
    for by in range(len(varr.chunks[0])):
        for bx in range(len(varr.chunks[1])):
            bci, bcj = ci[ys[by]:ys[by + 1]], cj[xs[bx]:xs[bx + 1]]
            i0, j0 = int(bci.min()), int(bcj.min())
            bni, bnj = int(bci.max()) - i0 + 1, int(bcj.max()) - j0 + 1
            valid = None if marr is None else marr.blocks[by, bx]
            part = da.map_blocks(_block_moments, varr.blocks[by, bx], valid, bci, bcj,
                                 i0, j0, bni, bnj, dtype=np.float64, chunks=((_MOMENTS,), (bni,), (bnj,)),
                                 new_axis=0, meta=np.empty((0, 0, 0)))
            pad = ((0, 0), (i0 - i_first, i_first + ni - i0 - bni), (j0 - j_first, j_first + nj - j0 - bnj))
            blocks.append(_place(part, pad))
    moments = _tree(blocks)
    ds_out = _to_dataset(moments, i_first, j_first, ni, nj, tuple(exclude), values.attrs.get("units"))
    return ds_out.compute() if compute else ds_out


def _place(part: Any, pad: tuple[tuple[int, int], ...]) -> Any:
    """A block's moments placed in the full cell range (empty cells: neutral moments)."""
    import dask

    return dask.delayed(_pad, pure=True)(part, pad)


def _pad(part: np.ndarray, pad: tuple[tuple[int, int], ...]) -> np.ndarray:
    out = np.pad(part, pad)
    _, (a, b), (c, d) = pad
    inner = np.zeros(out.shape[1:], dtype=bool)
    inner[a:out.shape[1] - b, c:out.shape[2] - d] = True
    out[4][~inner] = np.inf
    out[5][~inner] = -np.inf
    return out


def _tree(parts: list[Any]) -> Any:
    """Merge delayed moment arrays pairwise (a balanced tree: bounded depth, parallel)."""
    import dask

    merge = dask.delayed(_merge, pure=True)
    while len(parts) > 1:
        parts = [merge(parts[n], parts[n + 1]) if n + 1 < len(parts) else parts[n]
                 for n in range(0, len(parts), 2)]
    return parts[0]


def _to_dataset(moments: Any, i0: int, j0: int, ni: int, nj: int, exclude: tuple[str, ...],
                units: Any) -> xr.Dataset:
    import dask.array as da
    import xarray as xr

    stacked = da.from_delayed(moments, shape=(_MOMENTS, ni, nj), dtype=np.float64)
    pixels, count, total, m2, low, high = (stacked[k] for k in range(_MOMENTS))
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
