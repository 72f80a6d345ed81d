"""Cut the planes of a coadd into lazy pieces of whole tile rows, for streaming writes.

Each piece is computed on its own (in parallel, in order) and encoded into the tiles it
holds.  Planes read from an archive are cut through fresh windows of their stored source,
so a piece reads exactly its own tiles, whatever the chunks of the coadd's arrays; other
planes are sliced from their dask arrays.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np

from ...lazy import PlaneOrigin, WindowSource, plane_array
from ...mask import memory_to_disk
from .encode import EncodedTile, TileEncoder

__all__ = [
    "PIECE_BYTES",
    "encode_piece",
    "pick_disk_array",
    "piece_edges",
    "pieces_from_array",
    "pieces_from_source",
    "plain_piece",
]

PIECE_BYTES = 2 * 1024 * 1024
"""Target raw size of one piece: at least one tile row (a tile row of a patch plane is ~2 MB)."""


def piece_edges(n: int, tile_rows: int, row_bytes: int) -> list[int]:
    """Edges along axis 0 of pieces made of whole tile rows, about :data:`PIECE_BYTES` each."""
    per_piece = tile_rows * max(1, PIECE_BYTES // max(1, tile_rows * row_bytes))
    edges = list(range(0, n, per_piece))
    return [*edges, n]


def pieces_from_array(array: da.Array, edges: Sequence[int]) -> list[da.Array]:
    """Slices of ``array`` between consecutive ``edges`` (axis 0)."""
    return [array[a:b] for a, b in itertools.pairwise(edges)]


def pieces_from_source(source: Any, start: Sequence[int], shape: Sequence[int], edges: Sequence[int], *,
                       name: str) -> list[da.Array]:
    """One fresh single-chunk array per piece, over a window of a stored ``source``.

    Parameters
    ----------
    source
        A lazily indexed array source (reads only the tiles a slice touches).
    start
        Offset of the window in the source's leading axes.
    shape
        Shape of the window (full, every axis).
    edges
        Piece edges along axis 0 of the window.
    name
        Name stem of the dask arrays.
    """
    window = WindowSource(source, tuple(start), tuple(shape))
    chunks = (tuple(b - a for a, b in itertools.pairwise(edges)), *((n,) for n in shape[1:]))
    array = plane_array(window, name=f"write-{name}", chunks=chunks)
    return [array.blocks[k] for k in range(len(edges) - 1)]


def origin_window(origin: PlaneOrigin, bbox: Any) -> tuple[tuple[int, int], tuple[int, ...]]:
    """Offset and shape of ``bbox`` within a plane origin's stored array."""
    sy, sx = bbox.slice_within(origin.bbox)
    return (sy.start, sx.start), (*bbox.shape, *origin.source.shape[2:])


def pick_disk_array(k: int, arrays: list[np.ndarray], region: tuple[slice, ...]) -> np.ndarray:
    """Source combiner: the ``k``-th stored mask array of a region, as int32."""
    return np.asarray(arrays[k]).astype(np.int32, copy=False)


def mask_to_disk(schema: Any, k: int, block: np.ndarray) -> np.ndarray:
    """The ``k``-th on-disk int32 array of an in-memory ``(y, x, mask_size)`` mask block."""
    return memory_to_disk(block, schema)[k]


def encode_piece(
    encoder: TileEncoder,
    tile_shape: tuple[int, ...],
    first_tile: int,
    prepare: Callable[[np.ndarray], np.ndarray] | None,
    block: np.ndarray,
) -> list[EncodedTile]:
    """Encode every tile of ``block`` (whole tile rows of an image), numbering tiles from ``first_tile``."""
    if prepare is not None:
        block = prepare(block)
    block = np.ascontiguousarray(block)
    counts = [-(-n // t) for n, t in zip(block.shape, tile_shape, strict=True)]
    out = []
    for k, index in enumerate(np.ndindex(*counts)):
        region = tuple(
            slice(i * t, min((i + 1) * t, n)) for i, t, n in zip(index, tile_shape, block.shape, strict=True)
        )
        out.append(encoder.encode(block[region], first_tile + k))
    return out


def plain_piece(dtype: np.dtype, prepare: Callable[[np.ndarray], np.ndarray] | None, block: np.ndarray) -> bytes:
    """Big-endian bytes of a block of an uncompressed image."""
    if prepare is not None:
        block = prepare(block)
    return np.ascontiguousarray(block, dtype=np.dtype(dtype).newbyteorder(">")).tobytes()


def encode_jobs(
    pieces: Sequence[da.Array],
    edges: Sequence[int],
    shape: Sequence[int],
    tile_shape: tuple[int, ...],
    encoder: TileEncoder,
    prepare: Callable[[np.ndarray], np.ndarray] | None,
) -> list[tuple[Callable[[np.ndarray], list[EncodedTile]], da.Array]]:
    """``(function, piece)`` pairs that encode each piece's tiles with their global tile numbers."""
    per_row = math.prod(-(-n // t) for n, t in zip(shape[1:], tile_shape[1:], strict=True))
    jobs: list[tuple[Callable[[np.ndarray], list[EncodedTile]], da.Array]] = []
    for piece, start in zip(pieces, edges[:-1], strict=True):
        first = (start // tile_shape[0]) * per_row
        jobs.append((functools.partial(encode_piece, encoder, tile_shape, first, prepare), piece))
    return jobs
