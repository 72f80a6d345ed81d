"""Windows of a pyramid write: every level of a window is computed and stored before the next window.

Computing all levels of a whole tract in one graph makes dask keep most of the tract's decoded
tiles in memory (each tile feeds every level, and the coarse levels' blocks span many tiles).
:func:`bands` cuts the Dataset into bands of rows, and each band into windows of columns, whose
edges are multiples of the largest factor in absolute pixels (so no block of any level straddles
two windows) and, where possible, edges of cells or of the Dataset's chunks (so no tile is read
twice); memory is then bounded by a window, however wide the tract.  :func:`store_band` writes
one window's levels into their Zarr arrays: each level's rows go to ``floor(edge / factor) -
floor(start / factor)`` (columns likewise), and the window's dask chunks are cut on the arrays'
chunk grid so that no two tasks write one Zarr chunk.  Windows run one after another; a chunk
shared by two windows is completed by the second (a read-modify-write).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["BAND_COLUMNS", "BAND_ROWS", "bands", "store_band"]

BAND_ROWS = 1536
"""Target height of a window, in full-resolution pixels."""

BAND_COLUMNS = 6144
"""Target width of a window, in full-resolution pixels (a window decodes ~0.1-0.2 GB of planes)."""


def bands(ds: xr.Dataset, factor: int, target: int | None = None, axis: str = "y") -> list[tuple[int, int]]:
    """Absolute ``[start, stop)`` ranges covering ``ds`` along ``axis``, cut at multiples of ``factor``.

    After a cut, the next is the first row (column) at least ``target`` on (default
    :data:`BAND_ROWS` along ``y``, :data:`BAND_COLUMNS` along ``x``) that is a multiple of
    ``factor`` and an edge of a cell (``cell_i``/``cell_j`` changes) or of a chunk of
    ``ds["image"]``, if one comes within ``3 * target`` (the window then ends on a tile edge
    and no tile is read by two windows); otherwise the first multiple of ``factor`` at least
    ``target`` on.
    """
    from .xarray_dataset import box_of

    along = 0 if axis == "y" else 1
    interval = box_of(ds).y if along == 0 else box_of(ds).x
    start, stop = interval.start, interval.stop
    edges: set[int] = set()
    chunks = ds["image"].chunks
    if chunks is not None:
        edges.update(int(e) for e in start + np.cumsum(chunks[along]))
    cell = "cell_i" if along == 0 else "cell_j"
    if cell in ds.coords and ds.sizes[axis] > 1:
        cells = np.asarray(ds[cell].values)
        edges.update(int(e) for e in np.asarray(ds[axis].values)[1:][np.diff(cells) != 0])
    candidates = sorted(e for e in edges if e % factor == 0)
    default = BAND_ROWS if along == 0 else BAND_COLUMNS
    step = max(default if target is None else target, factor)
    cuts = [start]
    while True:
        low, high = cuts[-1] + step, cuts[-1] + 3 * step
        if low >= stop:
            break
        chosen = next((e for e in candidates if low <= e < min(high, stop)), None)
        if chosen is None:
            if stop <= high:
                break
            chosen = -(-low // factor) * factor
        cuts.append(chosen)
    cuts.append(stop)
    return list(itertools.pairwise(cuts))


def store_band(
    levels: Sequence[xr.Dataset],
    factors: Sequence[int],
    targets: dict[tuple[str, int], Any],
    start: tuple[int, int],
    band_start: tuple[int, int],
    chunk: int,
) -> None:
    """Write the levels of one window (``levels[k]`` coarsened by ``factors[k]``) into ``targets``.

    ``targets`` maps ``(variable, level)`` to a Zarr array; ``start`` is the first row and
    column of the whole Dataset and ``band_start`` the window's, all absolute.
    """
    import dask.array as da

    def on_grid(offset: int, size: int) -> tuple[int, ...]:
        first = min(size, chunk - offset % chunk)
        full, rest = divmod(size - first, chunk)
        return (first, *[chunk] * full, *([rest] if rest else []))

    sources, arrays, regions = [], [], []
    for (variable, k), target in targets.items():
        factor = factors[k]
        data = levels[k][variable].data
        row = band_start[0] // factor - start[0] // factor
        column = band_start[1] // factor - start[1] // factor
        rows, columns = data.shape
        if row < 0 or column < 0 or row + rows > target.shape[0] or column + columns > target.shape[1]:
            raise AssertionError(f"window of {variable} level {k} does not fit its array")
        sources.append(data.rechunk((on_grid(row, rows), on_grid(column, columns))))
        arrays.append(target)
        regions.append((slice(row, row + rows), slice(column, column + columns)))
    da.store(sources, arrays, regions=regions, lock=False)
