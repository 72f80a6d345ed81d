"""Row bands of a pyramid write: every level of a band is computed and stored before the next band.

Computing all levels of a whole tract in one graph makes dask keep most of the tract's decoded
tiles in memory (each tile feeds every level, and the coarse levels' blocks span many tiles).
:func:`bands` cuts the Dataset into horizontal bands whose edges are multiples of the largest
factor in absolute pixels (so no block of any level straddles two bands) and, where possible,
edges of the Dataset's chunks (so no tile is read twice).  :func:`store_band` writes one band's
levels into their Zarr arrays: each level's rows go to ``floor(edge / factor) - floor(start /
factor)``, and the band's dask chunks are cut on the arrays' chunk grid so that no two tasks write
one Zarr chunk.  Bands run one after another; a chunk shared by two bands is completed by the
second (a read-modify-write).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["BAND_ROWS", "bands", "store_band"]

BAND_ROWS = 1536
"""Target height of a band, in full-resolution pixels (a band of a 100-patch tract decodes ~0.5 GB)."""


def bands(ds: xr.Dataset, factor: int, target: int | None = None) -> list[tuple[int, int]]:
    """Absolute ``[start, stop)`` row ranges covering ``ds``, cut at multiples of ``factor``.

    After a cut, the next is the first row at least ``target`` rows on (default
    :data:`BAND_ROWS`) that is a multiple of ``factor`` and an edge of a cell (``cell_i``
    changes) or of a chunk of ``ds["image"]``, if one comes within ``3 * target`` rows (the
    band then ends on a tile edge and no tile is read by two bands); otherwise the first
    multiple of ``factor`` at least ``target`` rows on.
    """
    from .xarray_dataset import box_of

    interval = box_of(ds).y
    start, stop = interval.start, interval.stop
    edges: set[int] = set()
    chunks = ds["image"].chunks
    if chunks is not None:
        edges.update(int(e) for e in start + np.cumsum(chunks[0]))
    if "cell_i" in ds.coords and ds.sizes["y"] > 1:
        cells = np.asarray(ds["cell_i"].values)
        edges.update(int(e) for e in np.asarray(ds["y"].values)[1:][np.diff(cells) != 0])
    candidates = sorted(e for e in edges if e % factor == 0)
    step = max(BAND_ROWS if target is None else target, factor)
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
    start: int,
    band_start: int,
    chunk: int,
) -> None:
    """Write the levels of one band (``levels[k]`` coarsened by ``factors[k]``) into ``targets``.

    ``targets`` maps ``(variable, level)`` to a Zarr array; ``start`` is the first row of the
    whole Dataset and ``band_start`` the band's, both absolute.
    """
    import dask.array as da

    sources, arrays, regions = [], [], []
    for (variable, k), target in targets.items():
        factor = factors[k]
        data = levels[k][variable].data
        row = band_start // factor - start // factor
        rows = data.shape[0]
        if row < 0 or row + rows > target.shape[0] or data.shape[1] != target.shape[1]:
            raise AssertionError(f"band of {variable} level {k} does not fit its array")
        first = min(rows, chunk - row % chunk)
        full, rest = divmod(rows - first, chunk)
        y_chunks = (first, *[chunk] * full, *([rest] if rest else []))
        sources.append(data.rechunk((y_chunks, chunk)))
        arrays.append(target)
        regions.append((slice(row, row + rows), slice(0, target.shape[1])))
    da.store(sources, arrays, regions=regions, lock=False)
