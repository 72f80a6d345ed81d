"""Windows of a pyramid write: every level of a window is computed and stored before the next window.

Computing all levels of a whole tract in one graph makes dask keep most of the tract's decoded
tiles in memory (each tile feeds every level, and the coarse levels' blocks span many tiles).
:func:`bands` cuts the Dataset into bands of rows, and each band into windows of columns, whose
edges are multiples of the largest factor in absolute pixels (so no block of any level straddles
two windows) and, where possible, edges of cells or of the Dataset's chunks (so no tile is read
twice); memory is then bounded by a window, however wide the tract.  :func:`store_band` writes
one window's levels into their Zarr arrays: each level's rows go to ``floor(edge / factor) -
floor(start / factor)`` (columns likewise), one thread per array, so no two writers touch one
Zarr chunk.  Windows run one after another; a chunk shared by two windows is completed by the
second (a read-modify-write).  :func:`window_levels` computes a window's levels in memory, each
from the one before, in strips of columns on every core.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["BAND_COLUMNS", "BAND_ROWS", "bands", "cascades", "store_band", "window_levels"]

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
    levels: Sequence[Mapping[str, Any]],
    factors: Sequence[int],
    targets: dict[tuple[str, int], Any],
    start: tuple[int, int],
    band_start: tuple[int, int],
) -> None:
    """Write the levels of one window (``levels[k]`` coarsened by ``factors[k]``) into ``targets``.

    ``levels[k]`` maps each variable to a dask or numpy array; ``targets`` maps ``(variable, level)``
    to a Zarr array; ``start`` is the first row and column of the whole Dataset and ``band_start``
    the window's, all absolute.  Each array is written by one thread (one Zarr call: Zarr cuts it
    on its chunks, encoding them concurrently); different arrays are written at once.
    """
    import dask

    jobs = []
    for (variable, k), target in targets.items():
        factor = factors[k]
        row = band_start[0] // factor - start[0] // factor
        column = band_start[1] // factor - start[1] // factor
        jobs.append((levels[k][variable], target, row, column, f"{variable} level {k}"))
    lazy = [n for n, job in enumerate(jobs) if not isinstance(job[0], np.ndarray)]
    for n, values in zip(lazy, dask.compute(*[jobs[n][0] for n in lazy]), strict=True):
        jobs[n] = (values, *jobs[n][1:])

    def write(n: int) -> None:
        values, target, row, column, what = jobs[n]
        rows, columns = values.shape
        if row < 0 or column < 0 or row + rows > target.shape[0] or column + columns > target.shape[1]:
            raise AssertionError(f"window of {what} does not fit its array")
        target[row:row + rows, column:column + columns] = values

    _on_threads(len(jobs), write)


def cascades(factors: Sequence[int]) -> bool:
    """Whether every factor is a power of two, so that :func:`window_levels` computes each level from the one before."""
    return all(f >= 1 and f & (f - 1) == 0 for f in factors)


def window_levels(window: xr.Dataset, factors: Sequence[int],
                  variables: Sequence[str]) -> list[dict[str, np.ndarray]] | None:
    """Every level of one window, each computed from the one before it, in memory.

    ``None`` unless every factor is a power of two (then each level is its own coarsening).
    Level 1 is the window itself (with ``count``); level ``2f`` sums the float64 totals,
    valid-pixel counts and mask ORs of level ``f`` over 2 x 2 blocks
    (:func:`~cellcoadd_dask.coarsen.halve`), whose order of additions is the one
    :func:`~cellcoadd_dask.coarsen.coarsen_dataset` uses: every level equals
    ``coarsen(factor)`` of the window bit for bit, for a pass over the full resolution and
    a quarter of the work per level after it (instead of a full-resolution pass per level).
    """
    from .coarsen import no_data_bit, valid_pixels
    from .geom import Box, Interval
    from .xarray_dataset import box_of

    if not cascades(factors):
        return None
    box = box_of(window)
    planes = (np.asarray(window["image"].values), np.asarray(window["variance"].values),
              np.asarray(window["mask"].values))
    good = valid_pixels(planes[0], planes[2], no_data_bit(window["mask"]))
    # Strips of columns cut at multiples of the largest factor (no block straddles two) reduce
    # on every core; their levels are then joined along x.
    inner = range((box.x.start // factors[-1] + 1) * factors[-1], box.x.stop, STRIP_COLUMNS)
    cuts = [box.x.start, *(inner if STRIP_COLUMNS % factors[-1] == 0 else ()), box.x.stop]
    strips = [Box(box.y, Interval(a, b)) for a, b in itertools.pairwise(cuts)]
    coarse = [f for f in factors if f > 1]
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in strips]

    def reduce(n: int) -> None:
        x0, x1 = strips[n].x.start - box.x.start, strips[n].x.stop - box.x.start
        parts[n] = _strip_levels((planes[0][:, x0:x1], planes[1][:, x0:x1], planes[2][:, x0:x1]), good[:, x0:x1],
                                 strips[n], coarse, variables)

    if coarse:
        _on_threads(len(strips), reduce)
    full = {"image": planes[0], "variance": planes[1], "mask": planes[2], "count": good.astype(np.int32)}
    joined = [{name: np.concatenate([part[k][name] for part in parts], axis=1) if len(parts) > 1 else parts[0][k][name]
               for name in variables} for k in range(len(coarse))]
    return [{name: full[name] for name in variables} if f == 1 else joined.pop(0) for f in factors]


def _on_threads(count: int, job: Any) -> None:
    """``job(0)``, ..., ``job(count - 1)`` on the local threads (numpy and the codecs release the GIL)."""
    if count == 1:
        job(0)
        return
    from concurrent.futures import ThreadPoolExecutor

    from .streaming import default_workers

    with ThreadPoolExecutor(max_workers=min(count, default_workers())) as pool:
        for future in [pool.submit(job, n) for n in range(count)]:
            future.result()


STRIP_COLUMNS = 1024
"""Width of the strips a window's levels are reduced in, in parallel (a multiple of every default factor)."""


def _strip_levels(planes: tuple[np.ndarray, np.ndarray, np.ndarray], good: np.ndarray, box: Any,
                  factors: Sequence[int], variables: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The levels ``factors`` (powers of two above 1) of one strip (absolute ``box``) of a window.

    The strip is padded to multiples of the largest factor in sums that are allocated once: float64
    totals of the valid pixels' image and variance, int32 counts and the mask (see :func:`window_levels`).
    """
    from .coarsen import aligned, block_mean, halve

    image, variance, mask = planes
    largest = factors[-1]
    (ya, yb, _), (xa, xb, _) = aligned(box.y.start, box.y.stop, largest), aligned(box.x.start, box.x.stop, largest)
    inner = (slice(ya, ya + image.shape[0]), slice(xa, xa + image.shape[1]))
    shape = (image.shape[0] + ya + yb, image.shape[1] + xa + xb)
    sums: dict[str, np.ndarray] = {}
    for name, values in (("image", image), ("variance", variance)):
        sums[name] = np.zeros(shape, np.float64)
        np.copyto(sums[name][inner], values, where=good)  # what coarsen's where(good, v, 0) adds
    sums["count"] = np.zeros(shape, np.int32)
    sums["count"][inner] = good
    if "mask" in variables:
        sums["mask"] = np.zeros((*shape, *mask.shape[2:]), mask.dtype)
        sums["mask"][inner] = mask
    levels: list[dict[str, np.ndarray]] = []
    factor = 1
    for wanted in factors:
        while factor < wanted:
            sums = {name: halve(values, "or" if name == "mask" else "sum") for name, values in sums.items()}
            factor *= 2
        # The padded strip starts at a multiple of the largest factor: drop the blocks before the
        # strip's first block of this level and after its last.
        first_y = box.y.start // factor - (box.y.start - ya) // factor
        first_x = box.x.start // factor - (box.x.start - xa) // factor
        ny, nx = aligned(box.y.start, box.y.stop, factor)[2], aligned(box.x.start, box.x.stop, factor)[2]
        cut = {name: values[first_y:first_y + ny, first_x:first_x + nx] for name, values in sums.items()}
        level = {
            "image": block_mean(cut["image"], cut["count"], squared=False, dtype=image.dtype),
            "variance": block_mean(cut["variance"], cut["count"], squared=True, dtype=variance.dtype),
            "count": np.ascontiguousarray(cut["count"]),
        }
        if "mask" in cut:
            level["mask"] = np.ascontiguousarray(cut["mask"])
        levels.append({name: level[name] for name in variables})
    return levels
