"""Stored arrays of FITS HDUs: which bytes hold a region, and how they become pixels.

Each image HDU is described by a small, picklable, frozen object (a
:class:`StoredArray`) with two pure methods around the fetch, so a caller can
gather the byte ranges of many reads into one batched request:

1. :meth:`StoredArray.byte_ranges` lists the absolute file ranges holding a
   region (numpy order, local pixel coordinates, zero-based, half-open);
2. the caller fetches them (e.g. ``fsspec`` ``cat_ranges``);
3. :meth:`StoredArray.assemble` turns the fetched bytes into the region's
   pixels, native byte order.

:class:`TiledArray` describes a FITS tile-compressed image (``ZIMAGE = T``,
FITS standard section 10): tiles anchored at the array origin, row-major with
the last numpy axis (``ZNAXIS1``) fastest, edge tiles partial.
:class:`PlainArray` describes an uncompressed ``IMAGE`` extension.  Both are
built from a parsed header by :mod:`.tile_tables`, which validates every header
card and tile descriptor against the HDU's data size first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Protocol, runtime_checkable

import numpy as np

from ...errors import ArchiveFormatError, BoundsError
from ..decode_pool import run_indexed
from .cards import Header
from .codecs import TileCodec, TileDecodeError, decode_tile, decode_tile_into, quantized_integers
from .dither import quantized_sum

__all__ = ["Region", "StoredArray", "TiledArray", "check_region"]

Region = tuple[slice, ...]



@runtime_checkable
class StoredArray(Protocol):
    """One array stored in one HDU.

    Attributes
    ----------
    shape
        Array shape, numpy order (``(NAXIS2, NAXIS1)`` for an image).
    dtype
        Native-byte-order logical dtype.
    """

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape, numpy order."""
        ...

    @property
    def dtype(self) -> np.dtype:
        """Native-byte-order logical dtype."""
        ...

    def byte_ranges(self, region: Region) -> list[tuple[int, int]]:
        """Absolute ``[start, stop)`` file offsets of the bytes needed for ``region``."""
        ...

    def assemble(self, region: Region, blobs: Sequence[bytes | memoryview]) -> np.ndarray:
        """Pixels of ``region`` from the bytes of :meth:`byte_ranges`, in that order."""
        ...


def check_region(region: Region, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Validate a region (explicit, step-1, non-empty slices inside ``shape``)."""
    if not isinstance(region, tuple) or len(region) != len(shape):
        raise BoundsError(f"region {region!r} must be a tuple of {len(shape)} slices")
    bounds = []
    for s, n in zip(region, shape, strict=True):
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise BoundsError(f"region {region!r} must be made of step-1 slices")
        start, stop = s.start, s.stop
        if not isinstance(start, int | np.integer) or not isinstance(stop, int | np.integer):
            raise BoundsError(f"region {region!r} needs explicit slice starts and stops")
        if not 0 <= start < stop <= n:
            raise BoundsError(f"region {region!r} is empty or outside the array shape {shape}")
        bounds.append((int(start), int(stop)))
    return bounds


@dataclass(frozen=True, eq=False)
class TiledArray:
    """A tile-compressed image HDU: tile geometry, codec and per-tile descriptors.

    Attributes
    ----------
    shape
        Image shape, numpy order (``ZNAXISn`` reversed).
    tile_shape
        Nominal tile shape, numpy order (``ZTILEn`` reversed).
    codec
        Decode settings of the HDU.
    data
        ``(ntiles, 2)`` int64: absolute file offset and byte count of each
        tile's ``COMPRESSED_DATA`` (count 0 = empty).
    fallback
        ``(ntiles, 2)`` int64 for ``GZIP_COMPRESSED_DATA`` / ``UNCOMPRESSED_DATA``,
        or ``None`` when the table has neither column.
    zscale, zzero
        Per-tile float64 ``ZSCALE``/``ZZERO`` (column or header keyword), or
        ``None`` for lossless images.
    zblank
        Per-tile int64 ``ZBLANK`` column, or ``None`` (then ``codec.zblank``).
    url, hdu
        Where the HDU lives, for error messages.
    loaded
        Per-tile bool: whether the tile's descriptor row has been read.  Rows are
        read on demand (:meth:`missing_rows`), so a read of one cell of a big HDU
        reads one row of its table; ``None`` means every row is loaded.
    table_start, row_bytes
        File offset of the descriptor table and bytes per row (``NAXIS1``).
    header, data_size
        The HDU's header and data size, to decode and check rows read later.
    """

    shape: tuple[int, ...]
    tile_shape: tuple[int, ...]
    codec: TileCodec
    data: np.ndarray
    fallback: np.ndarray | None = None
    zscale: np.ndarray | None = None
    zzero: np.ndarray | None = None
    zblank: np.ndarray | None = None
    url: str | None = None
    hdu: str | None = None
    loaded: np.ndarray | None = None
    table_start: int = 0
    row_bytes: int = 0
    header: Header | None = None
    data_size: int = 0

    def missing_rows(self, region: Region) -> list[tuple[int, int]]:
        """Runs ``[first, stop)`` of descriptor rows that a read of ``region`` needs and lacks."""
        if self.loaded is None:
            return []
        bounds = check_region(region, self.shape)
        if all(a == 0 and b == n for (a, b), n in zip(bounds, self.shape, strict=True)):
            # The whole array: every row not loaded yet, as runs (vectorized; PSF tables have ~20,000 rows).
            missing = np.flatnonzero(~self.loaded)
            if missing.size == 0:
                return []
            breaks = np.flatnonzero(np.diff(missing) != 1)
            starts = np.concatenate([missing[:1], missing[breaks + 1]])
            stops = np.concatenate([missing[breaks], missing[-1:]]) + 1
            return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
        numbers = sorted(n for n, _ in self._tiles(bounds) if not self.loaded[n])
        runs: list[list[int]] = []
        for n in numbers:
            if runs and n == runs[-1][1]:
                runs[-1][1] = n + 1
            else:
                runs.append([n, n + 1])
        return [(a, b) for a, b in runs]

    def row_range(self, first: int, stop: int) -> tuple[int, int]:
        """File byte range of descriptor rows ``[first, stop)``."""
        return self.table_start + first * self.row_bytes, self.table_start + stop * self.row_bytes

    @property
    def dtype(self) -> np.dtype:
        """Native-byte-order logical dtype (from ``ZBITPIX``)."""
        return self.codec.dtype

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of tiles along each axis, numpy order."""
        return tuple(-(-n // t) for n, t in zip(self.shape, self.tile_shape, strict=True))

    def _tiles(self, bounds: list[tuple[int, int]]) -> list[tuple[int, tuple[int, ...]]]:
        """(tile number, per-axis tile index) of the tiles meeting ``bounds``, in table order."""
        grid = self.grid
        ranges = [range(a // t, (b - 1) // t + 1) for (a, b), t in zip(bounds, self.tile_shape, strict=True)]
        out = []
        for index in product(*ranges):
            number = 0
            for i, n in zip(index, grid, strict=True):
                number = number * n + i
            out.append((number, index))
        return out

    def _ranges_of(self, number: int) -> list[tuple[int, int]]:
        if self.loaded is not None and not self.loaded[number]:
            raise ArchiveFormatError(f"descriptor row of tile {number} has not been read", url=self.url,
                                     hdu=self.hdu)
        start, count = (int(v) for v in self.data[number])
        if count:
            return [(start, start + count)]
        if self.fallback is not None:
            start, count = (int(v) for v in self.fallback[number])
            if count:
                return [(start, start + count)]
        return []

    def byte_ranges(self, region: Region) -> list[tuple[int, int]]:
        """Byte ranges of the tiles that intersect ``region``, in tile-table order.

        A tile contributes its ``COMPRESSED_DATA`` range, or, when that is empty,
        its ``GZIP_COMPRESSED_DATA`` (or ``UNCOMPRESSED_DATA``) range; empty
        descriptors contribute nothing.

        Raises
        ------
        BoundsError
            If ``region`` is not a tuple of non-empty step-1 slices inside ``shape``.
        """
        bounds = check_region(region, self.shape)
        return [r for number, _ in self._tiles(bounds) for r in self._ranges_of(number)]

    def assemble(self, region: Region, blobs: Sequence[bytes | memoryview]) -> np.ndarray:
        """Decode the tiles of ``region`` from the bytes of :meth:`byte_ranges`.

        Regions of many tiles are decoded on the shared decode pool
        (:func:`~cellcoadd_dask.archives.fits.decode_pool.run_indexed`): the codecs
        release the GIL, so a single read uses every core.

        Raises
        ------
        ArchiveFormatError
            If a blob has the wrong length or a tile cannot be decoded.
        BoundsError
            If ``region`` is invalid.
        """
        bounds = check_region(region, self.shape)
        out = np.empty(tuple(b - a for a, b in bounds), dtype=self.dtype)
        tiles = self._tiles(bounds)
        parts, first = self._split(tiles, blobs)

        def decode(t: int) -> None:
            number, index = tiles[t]
            self._decode_into(out, bounds, number, index, parts[first[t] : first[t + 1]])

        run_indexed(len(tiles), decode)
        return out

    def tile_moments(
        self, region: Region, blobs: Sequence[bytes | memoryview], valid: np.ndarray | None = None,
        full: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Moments (:func:`~cellcoadd_dask.moments.moments_of`) of each tile's part of a 2-d ``region``.

        Each tile is decoded on the decode pool and reduced while it is in the processor's
        cache; no array of the region is made.  ``blobs`` are those of :meth:`byte_ranges`;
        ``valid`` (the region's shape) marks the pixels to count.  With ``full=False`` only
        pixel and valid counts and sums are made (the rest NaN), and a whole quantized tile
        with every pixel counted is summed from its integers
        (:func:`~cellcoadd_dask.archives.fits.dither.quantized_sum`), without restoring its pixels.

        Returns
        -------
        moments, y_edges, x_edges
            ``(MOMENTS, tiles along y, tiles along x)`` float64, and where each tile's part
            starts and stops along y and x, relative to the region (``n + 1`` edges).

        Raises
        ------
        ArchiveFormatError, BoundsError
            As :meth:`assemble`.
        """
        from ...moments import MOMENTS, moments_of

        bounds = check_region(region, self.shape)
        if len(bounds) != 2:
            raise BoundsError(f"tile moments need a 2-d region, got {len(bounds)} axes")
        tiles = self._tiles(bounds)
        parts, first = self._split(tiles, blobs)
        edges = [np.array([a, *range((a // t + 1) * t, b, t), b]) - a
                 for (a, b), t in zip(bounds, self.tile_shape, strict=True)]
        columns = len(edges[1]) - 1
        out = np.empty((MOMENTS, len(edges[0]) - 1, columns))

        def reduce(t: int) -> None:
            number, index = tiles[t]
            row, column = divmod(t, columns)
            box = [(i * s, min((i + 1) * s, n)) for i, s, n in zip(index, self.tile_shape, self.shape, strict=True)]
            if not full and all(a <= ta and tb <= b for (a, b), (ta, tb) in zip(bounds, box, strict=True)):
                ys, xs = edges[0][row : row + 2], edges[1][column : column + 2]
                if valid is None or valid[ys[0] : ys[1], xs[0] : xs[1]].all():
                    npix = math.prod(b - a for a, b in box)
                    summed = self._quantized_sum(number, parts[first[t] : first[t + 1]], npix)
                    if summed is not None:
                        out[:, row, column] = (npix, *summed, np.nan, np.nan, np.nan)
                        return
            pixels = self.decode_tile(number, parts[first[t] : first[t + 1]]).reshape(tuple(b - a for a, b in box))
            src = tuple(slice(max(a, ta) - ta, min(b, tb) - ta) for (a, b), (ta, tb) in zip(bounds, box, strict=True))
            inside = None
            if valid is not None:
                ys, xs = edges[0][row : row + 2], edges[1][column : column + 2]
                inside = valid[ys[0] : ys[1], xs[0] : xs[1]]
            out[:, row, column] = moments_of(pixels[src], inside, full=full)

        run_indexed(len(tiles), reduce)
        return out, edges[0], edges[1]

    def _split(
        self, tiles: list[tuple[int, tuple[int, ...]]], blobs: Sequence[bytes | memoryview]
    ) -> tuple[list[bytes | memoryview], list[int]]:
        """The blobs as a list and where each tile's start: tile ``t``'s are ``parts[first[t]:first[t + 1]]``.

        Raises
        ------
        ArchiveFormatError
            When the blobs do not match the tiles' byte ranges in number or length.
        """
        parts = list(blobs)
        # Plain lists of ints and tuples of ints: nothing per tile for the garbage collector to
        # track while the tiles decode.
        first = [0] * (len(tiles) + 1)
        k = 0
        for t, (number, _) in enumerate(tiles):
            for r in self._ranges_of(number):
                if k == len(parts):
                    raise ArchiveFormatError("fewer byte blobs than byte ranges", url=self.url, hdu=self.hdu,
                                             byte_range=r)
                if len(parts[k]) != r[1] - r[0]:
                    raise ArchiveFormatError(
                        f"got {len(parts[k])} bytes for tile {number}, expected {r[1] - r[0]}",
                        url=self.url, hdu=self.hdu, byte_range=r)
                k += 1
            first[t + 1] = k
        if k != len(parts):
            raise ArchiveFormatError("more byte blobs than byte ranges", url=self.url, hdu=self.hdu)
        return parts, first

    def _decode_into(
        self,
        out: np.ndarray,
        bounds: list[tuple[int, int]],
        number: int,
        index: tuple[int, ...],
        parts: list[bytes | memoryview],
    ) -> None:
        """Decode tile ``number`` and write its part of the region into ``out``.

        A tile inside the region is decoded straight into its place in ``out``; a tile the
        region cuts is decoded whole, then its part copied.
        """
        tile_box = [(i * t, min((i + 1) * t, n)) for i, t, n in zip(index, self.tile_shape, self.shape, strict=True)]
        tile_shape = tuple(b - a for a, b in tile_box)
        dst = tuple(slice(max(a, ta) - a, min(b, tb) - a) for (a, b), (ta, tb) in zip(bounds, tile_box, strict=True))
        if all(a <= ta and tb <= b for (a, b), (ta, tb) in zip(bounds, tile_box, strict=True)):
            self._decode(number, parts, out[dst])
            return
        pixels = self.decode_tile(number, parts)
        src = tuple(slice(max(a, ta) - ta, min(b, tb) - ta) for (a, b), (ta, tb) in zip(bounds, tile_box, strict=True))
        out[dst] = pixels.reshape(tile_shape)[src]

    def _quantized_sum(self, number: int, parts: Sequence[bytes | memoryview], npix: int) -> tuple[int, float] | None:
        """Defined pixels and sum of a whole quantized tile from its integers; ``None`` when not quantized."""
        if self.codec.quantize is None or not self.data[number, 1]:
            return None
        try:
            q = quantized_integers(self.codec, parts[0], npix)
        except TileDecodeError as exc:
            raise self._decode_error(number, exc) from None
        method = self.codec.quantize
        zscale, zzero, zblank = self._scaling(number)
        return quantized_sum(
            q, dithered=method != "NO_DITHER", keeps_zeros=method == "SUBTRACTIVE_DITHER_2",
            dither_seed=self.codec.zdither0 + number, zscale=zscale, zzero=zzero, zblank=zblank,
        )

    def _scaling(self, number: int) -> tuple[float, float, int | None]:
        """Tile ``number``'s ``ZSCALE``, ``ZZERO`` (0 for lossless tiles) and undefined-pixel integer."""
        zscale = 0.0 if self.zscale is None else float(self.zscale[number])
        zzero = 0.0 if self.zzero is None else float(self.zzero[number])
        zblank = self.codec.zblank if self.zblank is None else int(self.zblank[number])
        return zscale, zzero, zblank

    def _decode_error(self, number: int, exc: TileDecodeError) -> ArchiveFormatError:
        """The typed error for tile ``number``, naming its byte range."""
        ranges = self._ranges_of(number)
        return ArchiveFormatError(f"tile {number}: {exc}", url=self.url, hdu=self.hdu,
                                  byte_range=ranges[0] if ranges else None)

    def decode_tile(self, number: int, parts: Sequence[bytes | memoryview]) -> np.ndarray:
        """The pixels of tile ``number`` (1-d, row-major) from its blobs (those of :meth:`byte_ranges`).

        Raises
        ------
        ArchiveFormatError
            If the tile cannot be decoded.
        """
        grid = self.grid
        npix, rest = 1, number
        for axis in reversed(range(len(grid))):
            rest, i = divmod(rest, grid[axis])
            npix *= min((i + 1) * self.tile_shape[axis], self.shape[axis]) - i * self.tile_shape[axis]
        return self._decode(number, parts, npix)

    def _decode(self, number: int, parts: Sequence[bytes | memoryview], into: np.ndarray | int) -> np.ndarray:
        """Decode tile ``number`` into the array ``into`` (its place in an output), or as ``into`` new pixels."""
        has_data = bool(self.data[number, 1])
        data = parts[0] if has_data else b""
        gzip_data = None if has_data or not parts else parts[0]
        zscale, zzero, zblank = self._scaling(number)
        try:
            if isinstance(into, np.ndarray):
                decode_tile_into(self.codec, into, data=data, gzip_data=gzip_data, zscale=zscale, zzero=zzero,
                                 zblank=zblank, tile_index=number)
                return into
            return decode_tile(self.codec, data=data, gzip_data=gzip_data, zscale=zscale, zzero=zzero,
                               zblank=zblank, tile_index=number, npix=into)
        except TileDecodeError as exc:
            raise self._decode_error(number, exc) from None
