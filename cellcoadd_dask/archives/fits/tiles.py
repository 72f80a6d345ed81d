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
from .codecs import TileCodec, TileDecodeError, decode_tile, decode_tile_into

__all__ = ["PlainArray", "StoredArray", "TiledArray"]

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


def _check_region(region: Region, shape: tuple[int, ...]) -> list[tuple[int, int]]:
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
        bounds = _check_region(region, self.shape)
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
        bounds = _check_region(region, self.shape)
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
        bounds = _check_region(region, self.shape)
        out = np.empty(tuple(b - a for a, b in bounds), dtype=self.dtype)
        tiles = self._tiles(bounds)
        parts = list(blobs)
        # Tile t's blobs are parts[first[t]:first[t + 1]].  Plain lists of ints and tuples of ints:
        # nothing per tile for the garbage collector to track while the tiles decode.
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

        def decode(t: int) -> None:
            number, index = tiles[t]
            self._decode_into(out, bounds, number, index, parts[first[t] : first[t + 1]])

        run_indexed(len(tiles), decode)
        return out

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
        has_data = bool(self.data[number, 1])
        data = parts[0] if has_data else b""
        gzip_data = None if has_data or not parts else parts[0]
        zscale = 0.0 if self.zscale is None else float(self.zscale[number])
        zzero = 0.0 if self.zzero is None else float(self.zzero[number])
        zblank = self.codec.zblank if self.zblank is None else int(self.zblank[number])
        dst = tuple(slice(max(a, ta) - a, min(b, tb) - a) for (a, b), (ta, tb) in zip(bounds, tile_box, strict=True))
        inside = all(a <= ta and tb <= b for (a, b), (ta, tb) in zip(bounds, tile_box, strict=True))
        try:
            if inside:
                decode_tile_into(self.codec, out[dst], data=data, gzip_data=gzip_data, zscale=zscale, zzero=zzero,
                                 zblank=zblank, tile_index=number)
                return
            pixels = decode_tile(self.codec, data=data, gzip_data=gzip_data, zscale=zscale, zzero=zzero,
                                 zblank=zblank, tile_index=number, npix=math.prod(tile_shape))
        except TileDecodeError as exc:
            ranges = self._ranges_of(number)
            raise ArchiveFormatError(f"tile {number}: {exc}", url=self.url, hdu=self.hdu,
                                     byte_range=ranges[0] if ranges else None) from None
        src = tuple(slice(max(a, ta) - ta, min(b, tb) - ta) for (a, b), (ta, tb) in zip(bounds, tile_box, strict=True))
        out[dst] = pixels.reshape(tile_shape)[src]


@dataclass(frozen=True, eq=False)
class PlainArray:
    """An uncompressed ``IMAGE`` HDU: big-endian pixels in C order at ``data_start``.

    Attributes
    ----------
    shape
        Image shape, numpy order (``NAXISn`` reversed).
    dtype
        Native-byte-order logical dtype (from ``BITPIX``).
    data_start
        Absolute file offset of the first pixel.
    url, hdu
        Where the HDU lives, for error messages.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    data_start: int
    url: str | None = None
    hdu: str | None = None

    def byte_ranges(self, region: Region) -> list[tuple[int, int]]:
        """One range per contiguous run of ``region`` (runs over full trailing axes merged).

        Raises
        ------
        BoundsError
            If ``region`` is not a tuple of non-empty step-1 slices inside ``shape``.
        """
        bounds = _check_region(region, self.shape)
        # Axis k is the outermost axis of each contiguous run: every axis after it is whole.
        k = len(bounds) - 1
        while k > 0 and bounds[k] == (0, self.shape[k]):
            k -= 1
        itemsize = self.dtype.itemsize
        strides = [itemsize * math.prod(self.shape[i + 1 :]) for i in range(len(self.shape))]
        run = (bounds[k][1] - bounds[k][0]) * strides[k]
        ranges: list[tuple[int, int]] = []
        for index in product(*(range(a, b) for a, b in bounds[:k])):
            start = self.data_start + sum(i * s for i, s in zip(index, strides, strict=False))
            start += bounds[k][0] * strides[k]
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], start + run)
            else:
                ranges.append((start, start + run))
        return ranges

    def assemble(self, region: Region, blobs: Sequence[bytes | memoryview]) -> np.ndarray:
        """Pixels of ``region`` from the bytes of :meth:`byte_ranges`, native byte order.

        Raises
        ------
        ArchiveFormatError
            If the blobs do not have the lengths of the ranges.
        """
        ranges = self.byte_ranges(region)
        bounds = _check_region(region, self.shape)
        if len(blobs) != len(ranges):
            raise ArchiveFormatError(f"got {len(blobs)} byte blobs for {len(ranges)} byte ranges",
                                     url=self.url, hdu=self.hdu)
        for blob, r in zip(blobs, ranges, strict=True):
            if len(blob) != r[1] - r[0]:
                raise ArchiveFormatError(f"got {len(blob)} bytes, expected {r[1] - r[0]}",
                                         url=self.url, hdu=self.hdu, byte_range=r)
        raw = blobs[0] if len(blobs) == 1 else b"".join(blobs)
        pixels = np.frombuffer(raw, dtype=self.dtype.newbyteorder(">"))
        return pixels.astype(self.dtype).reshape(tuple(b - a for a, b in bounds))
