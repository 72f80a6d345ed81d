"""Turn per-plane array sources into dask arrays whose chunks fall on cell edges.

Every archive reader describes a plane by a small, picklable, lazily indexed *source*
(``shape``, ``dtype``, ``__getitem__`` over a tuple of slices that reads only what the
slices touch).  This module is the one place those sources become dask arrays: one
``da.from_array`` per plane, so a slice of the dask array reaches the source as the
slice itself and reads only the touched tiles, however big the chunks are.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

import dask.array as da
import numpy as np
from dask.base import tokenize

from .cells import CellGrid
from .errors import BoundsError
from .geom import Box

__all__ = [
    "ArraySource",
    "Chunks",
    "PlaneOrigin",
    "WindowSource",
    "apply_rest",
    "array_source",
    "cell_chunks",
    "normalize_key",
    "plane_array",
]

Chunks = str | int | tuple[int, int]
"""``"auto"`` (whole cells, up to about 48 MiB per chunk), ``"cell"`` or a number of cells per chunk side."""

AUTO_CHUNK_BYTES = 48 * 1024 * 1024
"""Target chunk size of ``chunks="auto"``: a full 22x22-cell patch plane of float32 is one chunk."""


class ArraySource(Protocol):
    """What an archive reader hands to :func:`plane_array`."""

    shape: tuple[int, ...]
    dtype: np.dtype
    ndim: int

    def __getitem__(self, key: Any) -> np.ndarray: ...


def normalize_key(key: Any, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[Any, ...]]:
    """Split an index into bounding unit-step slices plus what to apply after reading them.

    Returns
    -------
    region
        One ``slice(start, stop)`` per axis, non-empty, within ``shape``.
    rest
        An index to apply to the array read for ``region`` (identity when ``key`` was plain slices).
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        n = key.index(Ellipsis)
        key = key[:n] + (slice(None),) * (len(shape) - len(key) + 1) + key[n + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape):
        raise IndexError(f"too many indices for an array of shape {shape}")
    region: list[slice] = []
    rest: list[Any] = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step == 1:
                stop = max(stop, start)
                region.append(slice(start, stop))
                rest.append(slice(None))
                continue
            idx = np.arange(start, stop, step)
        elif isinstance(k, (int, np.integer)):
            i = int(k) + (n if k < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for an axis of size {n}")
            region.append(slice(i, i + 1))
            rest.append(0)
            continue
        else:
            idx = np.asarray(k)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            idx = np.where(idx < 0, idx + n, idx)
        if idx.size == 0:
            region.append(slice(0, 0))
            rest.append(idx)
            continue
        lo, hi = int(idx.min()), int(idx.max()) + 1
        if lo < 0 or hi > n:
            raise IndexError(f"index out of bounds for an axis of size {n}")
        region.append(slice(lo, hi))
        rest.append(idx - lo)
    return tuple(region), tuple(rest)


def apply_rest(out: np.ndarray, rest: tuple[Any, ...]) -> np.ndarray:
    """Apply the ``rest`` of :func:`normalize_key` to the array read for its region (outer indexing)."""
    # Axis by axis from the last, so that integer indices dropping an axis keep the others' numbers.
    for axis in range(len(rest) - 1, -1, -1):
        r = rest[axis]
        if not (isinstance(r, slice) and r == slice(None)):
            out = out[(slice(None),) * axis + (r,)] if isinstance(r, slice) else np.take(out, r, axis=axis)
    return out


def _cells_per_chunk(chunks: Chunks, grid: CellGrid, itemsize: int, extra: int) -> tuple[int, int]:
    if chunks == "cell":
        return 1, 1
    if chunks == "auto" or chunks is None:
        cell_bytes = grid.cell_shape.y * grid.cell_shape.x * itemsize * max(extra, 1)
        n = max(1, math.isqrt(max(1, AUTO_CHUNK_BYTES // cell_bytes)))
        return n, n
    if isinstance(chunks, int) and not isinstance(chunks, bool):
        chunks = (chunks, chunks)
    if (
        isinstance(chunks, tuple)
        and len(chunks) == 2
        and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in chunks)
    ):
        return chunks[0], chunks[1]
    raise ValueError(f"chunks must be 'auto', 'cell' or a number of cells per chunk side (ny, nx), not {chunks!r}")


def _axis_chunks(start: int, stop: int, grid_start: int, cell: int, per_chunk: int) -> tuple[int, ...]:
    step = cell * per_chunk
    edges = [start]
    # First chunk edge after ``start`` on a (multiple-of-per_chunk) cell boundary of the grid.
    k = (start - grid_start) // step + 1
    edge = grid_start + k * step
    while edge < stop:
        edges.append(edge)
        edge += step
    edges.append(stop)
    return tuple(b - a for a, b in itertools.pairwise(edges))


def cell_chunks(
    bbox: Box, grid: CellGrid, chunks: Chunks, itemsize: int, extra: int = 1
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk sizes along (y, x) for a plane over ``bbox`` whose edges fall on cell edges of ``grid``.

    Parameters
    ----------
    bbox
        The plane's absolute bbox.
    grid
        The cell grid (chunk edges are cell edges of this grid, or the bbox edges).
    chunks
        ``"auto"``, ``"cell"``, an int or ``(ny, nx)`` cells per chunk.
    itemsize
        Bytes per pixel (for ``"auto"``).
    extra
        Size of any trailing axes per pixel (for ``"auto"``).
    """
    ny, nx = _cells_per_chunk(chunks, grid, itemsize, extra)
    return (
        _axis_chunks(bbox.y.start, bbox.y.stop, grid.bbox.y.start, grid.cell_shape.y, ny),
        _axis_chunks(bbox.x.start, bbox.x.stop, grid.bbox.x.start, grid.cell_shape.x, nx),
    )


def plane_array(
    source: ArraySource,
    *,
    name: str,
    chunks: Sequence[Sequence[int]],
    token: Any = None,
) -> da.Array:
    """Wrap ``source`` in a dask array with the given chunks and a deterministic name.

    The graph holds ``source`` once (URL, byte ranges, decode parameters); each chunk is
    a slice of it, and dask fuses later slices into those, so reading a small region of
    a big chunk reads only that region's tiles.
    """
    chunks = tuple(tuple(int(c) for c in axis) for axis in chunks)
    if tuple(sum(c) for c in chunks) != tuple(source.shape):
        raise BoundsError(f"chunks {chunks} do not tile the shape {source.shape}")
    key = f"{name}-{tokenize(token if token is not None else source, chunks)}"
    with contextlib.suppress(TypeError):  # a source that cannot be weakly referenced is not remembered
        _SOURCES[key] = source
    return da.from_array(
        source,
        chunks=chunks,
        name=key,
        asarray=False,
        fancy=True,
        lock=False,
        inline_array=False,
        meta=np.empty((0,) * len(source.shape), dtype=source.dtype),
    )


_SOURCES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
"""Dask array name -> the source :func:`plane_array` wrapped (alive as long as a graph holds it)."""


def array_source(array: da.Array) -> ArraySource | None:
    """The source a dask array of :func:`plane_array` reads, or ``None`` for any other array.

    Only the array itself (not a slice or a computation on it) is known: a caller may then
    ask the source for more than pixels (per-tile moments, say) and read exactly its chunks.
    """
    source = _SOURCES.get(array.name)
    if source is None or tuple(source.shape) != tuple(array.shape):
        return None
    return source


def _sub_chunks(chunks: tuple[int, ...], start: int, stop: int) -> tuple[int, ...]:
    """The chunk sizes of ``[start, stop)`` cut out of an axis chunked as ``chunks``."""
    edges = [0, *itertools.accumulate(chunks)]
    inner = [e for e in edges if start < e < stop]
    bounds = [start, *inner, stop]
    return tuple(b - a for a, b in itertools.pairwise(bounds))


class WindowSource:
    """A source over a window of another source's array (leading axes offset by ``start``).

    Cut-outs read through their own window, so a cut-out is a fresh ``from_array`` and
    any single slice of it reaches the underlying source as exactly that region.
    """

    def __init__(self, source: ArraySource, start: tuple[int, ...], shape: tuple[int, ...]) -> None:
        self.source = source
        self.start = tuple(start)
        self.shape = tuple(shape)
        self.dtype = source.dtype
        self.ndim = len(self.shape)

    def __dask_tokenize__(self) -> Any:
        return ("window", tokenize(self.source), self.start, self.shape)

    def __repr__(self) -> str:
        return f"WindowSource({self.source!r}, start={self.start}, shape={self.shape})"

    def __getitem__(self, key: Any) -> np.ndarray:
        region, rest = normalize_key(key, self.shape)
        shifted = tuple(
            slice(
                s.start + (self.start[k] if k < len(self.start) else 0),
                s.stop + (self.start[k] if k < len(self.start) else 0),
            )
            for k, s in enumerate(region)
        )
        return apply_rest(self.source[shifted], rest)

    def tile_moments(
        self, region: tuple[slice, ...], valid: np.ndarray | None = None, full: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The underlying source's per-tile moments of ``region`` (window coordinates), or ``None``."""
        moments = getattr(self.source, "tile_moments", None)
        if moments is None or len(region) != 2:
            return None
        return moments(tuple(slice(s.start + o, s.stop + o) for s, o in zip(region, self.start, strict=False)), valid,
                       full)


class PlaneOrigin:
    """Where a lazily read plane comes from, so that cut-outs can read through their own window.

    Parameters
    ----------
    source
        The source of the whole stored array.
    bbox
        Absolute bbox of that array (its first two axes are y, x).
    array
        The dask array over the whole ``source`` (its chunks give the cut-outs' chunks).
    name
        Name stem of the dask arrays.
    """

    def __init__(self, source: ArraySource, bbox: Box, array: da.Array, name: str) -> None:
        self.source = source
        self.bbox = bbox
        self.array = array
        self.name = name

    def derive(self, combine: Any, dtype: np.dtype | type, label: str) -> PlaneOrigin:
        """The origin of a 2-d plane computed from the same stored arrays by ``combine``.

        The source must offer ``derive(combine, shape, dtype)`` (see
        :meth:`~cellcoadd_dask.archives.fits.source.FitsArraySource.derive`).
        """
        shape = tuple(self.bbox.shape)
        source = self.source.derive(combine, shape, np.dtype(dtype))  # type: ignore[attr-defined]
        name = f"{self.name}-{label}"
        return PlaneOrigin(source, self.bbox, plane_array(source, name=name, chunks=self.array.chunks[:2]), name)

    def window(self, box: Box) -> ArraySource:
        """A source over ``box`` (inside :attr:`bbox`): indexing it reads the stored array directly.

        No dask graph is involved, so a task that already holds a region (a tract chunk, say)
        reads its pixels without building and scheduling a graph of its own.
        """
        sy, sx = box.slice_within(self.bbox)
        if (sy.start, sx.start) == (0, 0) and tuple(box.shape) == tuple(self.bbox.shape):
            return self.source
        return WindowSource(self.source, (sy.start, sx.start), (*box.shape, *self.source.shape[2:]))

    def cut(self, box: Box) -> da.Array:
        """A dask array over ``box`` (inside :attr:`bbox`) reading through a window of the source."""
        window = self.window(box)
        if window is self.source:
            return self.array
        sy, sx = box.slice_within(self.bbox)
        chunks = (
            _sub_chunks(self.array.chunks[0], sy.start, sy.stop),
            _sub_chunks(self.array.chunks[1], sx.start, sx.stop),
            *self.array.chunks[2:],
        )
        return plane_array(window, name=self.name, chunks=chunks)
