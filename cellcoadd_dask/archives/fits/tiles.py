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
built from a parsed header by :func:`compressed_layout` / :func:`plain_layout`,
which validate every header card and tile descriptor against the HDU's data
size before anything else happens.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Protocol, runtime_checkable

import numpy as np

from ...errors import ArchiveFormatError, BoundsError
from .cards import Header
from .codecs import ALGORITHMS, BITPIX_DTYPES, QUANTIZE_METHODS, TileCodec, TileDecodeError, decode_tile

__all__ = [
    "PlainArray",
    "StoredArray",
    "TiledArray",
    "codec_from_header",
    "compressed_layout",
    "plain_layout",
    "table_nbytes",
]

Region = tuple[slice, ...]

MAX_EXPANSION = 1100
"""Upper bound on decoded/stored bytes of a tile (deflate tops out near 1032:1, Rice near 205:1)."""

_MAX_AXES = 999
_TFORM = re.compile(r"^(\d*)([LXBIJKAEDCM])$|^([01]?)([PQ])([LXBIJKAEDCM])(?:\((\d+)\))?$")
_ELEMENT_SIZE = {"L": 1, "X": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16}
_FALLBACK_COLUMNS = {"GZIP_1": "GZIP_COMPRESSED_DATA", "NOCOMPRESS": "UNCOMPRESSED_DATA"}
_FIXED_DTYPE = {"E": ">f4", "D": ">f8", "I": ">i2", "J": ">i4", "K": ">i8"}


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

    shape: tuple[int, ...]
    dtype: np.dtype

    def byte_ranges(self, region: Region) -> list[tuple[int, int]]:
        """Absolute ``[start, stop)`` file offsets of the bytes needed for ``region``."""
        ...

    def assemble(self, region: Region, blobs: Sequence[bytes]) -> np.ndarray:
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


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


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

    def assemble(self, region: Region, blobs: Sequence[bytes]) -> np.ndarray:
        """Decode the tiles of ``region`` from the bytes of :meth:`byte_ranges`.

        Raises
        ------
        ArchiveFormatError
            If a blob has the wrong length or a tile cannot be decoded.
        BoundsError
            If ``region`` is invalid.
        """
        bounds = _check_region(region, self.shape)
        out = np.empty(tuple(b - a for a, b in bounds), dtype=self.dtype)
        blob_iter = iter(blobs)
        for number, index in self._tiles(bounds):
            ranges = self._ranges_of(number)
            parts: list[bytes] = []
            for r in ranges:
                blob = next(blob_iter, None)
                if blob is None:
                    raise ArchiveFormatError("fewer byte blobs than byte ranges", url=self.url, hdu=self.hdu,
                                             byte_range=r)
                if len(blob) != r[1] - r[0]:
                    raise ArchiveFormatError(
                        f"got {len(blob)} bytes for tile {number}, expected {r[1] - r[0]}",
                        url=self.url, hdu=self.hdu, byte_range=r)
                parts.append(blob)
            tile_box = [(i * t, min((i + 1) * t, n))
                        for i, t, n in zip(index, self.tile_shape, self.shape, strict=True)]
            tile_shape = tuple(b - a for a, b in tile_box)
            has_data = bool(self.data[number, 1])
            try:
                pixels = decode_tile(
                    self.codec,
                    data=parts[0] if has_data else b"",
                    gzip_data=None if has_data or not parts else parts[0],
                    zscale=0.0 if self.zscale is None else float(self.zscale[number]),
                    zzero=0.0 if self.zzero is None else float(self.zzero[number]),
                    zblank=self.codec.zblank if self.zblank is None else int(self.zblank[number]),
                    tile_index=number,
                    npix=math.prod(tile_shape),
                )
            except TileDecodeError as exc:
                raise ArchiveFormatError(f"tile {number}: {exc}", url=self.url, hdu=self.hdu,
                                         byte_range=ranges[0] if ranges else None) from None
            src = tuple(slice(max(a, ta) - ta, min(b, tb) - ta)
                        for (a, b), (ta, tb) in zip(bounds, tile_box, strict=True))
            dst = tuple(slice(max(a, ta) - a, min(b, tb) - a)
                        for (a, b), (ta, tb) in zip(bounds, tile_box, strict=True))
            out[dst] = pixels.reshape(tile_shape)[src]
        if next(blob_iter, None) is not None:
            raise ArchiveFormatError("more byte blobs than byte ranges", url=self.url, hdu=self.hdu)
        return out


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

    def assemble(self, region: Region, blobs: Sequence[bytes]) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------
# Header cards -> layouts
# ----------------------------------------------------------------------------------------------


class _Cards:
    """Typed access to header cards with located errors."""

    def __init__(self, header: Header, url: str | None, hdu: str | None) -> None:
        self.header, self.url, self.hdu = header, url, hdu

    def error(self, message: str, byte_range: tuple[int, int] | None = None) -> ArchiveFormatError:
        return ArchiveFormatError(message, url=self.url, hdu=self.hdu, byte_range=byte_range)

    def int(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int:
        value = self.header.get(key, default)
        if value is None:
            raise self.error(f"missing header card {key}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"header card {key} = {value!r} is not an integer")
        if minimum is not None and value < minimum:
            raise self.error(f"header card {key} = {value} is below {minimum}")
        return value

    def str(self, key: str, default: str | None = None) -> str:
        value = self.header.get(key, default)
        if not isinstance(value, str):
            raise self.error(f"header card {key} = {value!r} is missing or not a string")
        return value.strip()

    def float(self, key: str) -> float | None:
        value = self.header.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"header card {key} = {value!r} is not a number")
        return float(value)

    def check_no_scaling(self) -> None:
        for key, neutral in (("BSCALE", 1.0), ("BZERO", 0.0)):
            value = self.float(key)
            if value is not None and value != neutral:
                raise self.error(f"{key} = {value} scaling is not supported")


def table_nbytes(header: Header, *, url: str | None = None, hdu: str | None = None) -> int:
    """Size in bytes of the tile-descriptor table of a compressed HDU (``NAXIS1 * NAXIS2``).

    Raises
    ------
    ArchiveFormatError
        If the header is not a binary table with valid ``NAXIS1``/``NAXIS2``.
    """
    cards = _Cards(header, url, hdu)
    if cards.int("NAXIS") != 2:
        raise cards.error("a tile-compressed HDU needs NAXIS = 2")
    return cards.int("NAXIS1", minimum=0) * cards.int("NAXIS2", minimum=0)


@dataclass(frozen=True)
class _Column:
    name: str
    offset: int  # byte offset in a table row
    letter: str  # P, Q, or the fixed type letter
    element: str  # element type letter


def _columns(cards: _Cards) -> dict[str, _Column]:
    """Parse TTYPEn/TFORMn; check that the widths add up to NAXIS1."""
    nfields = cards.int("TFIELDS", minimum=0)
    if nfields > _MAX_AXES:
        raise cards.error(f"TFIELDS = {nfields} is out of range")
    columns: dict[str, _Column] = {}
    offset = 0
    for n in range(1, nfields + 1):
        name = cards.str(f"TTYPE{n}", "").upper()
        tform = cards.str(f"TFORM{n}").upper()
        m = _TFORM.match(tform)
        if m is None:
            raise cards.error(f"unsupported TFORM{n} = {tform!r}")
        if m.group(2):
            repeat = int(m.group(1) or 1)
            letter = element = m.group(2)
            width = -(-repeat // 8) if letter == "X" else repeat * _ELEMENT_SIZE[letter]
            if name in ("ZSCALE", "ZZERO", "ZBLANK") and (repeat != 1 or letter not in _FIXED_DTYPE):
                raise cards.error(f"column {name} has unsupported TFORM{n} = {tform!r}")
        else:
            letter, element = m.group(4), m.group(5)
            width = (8 if letter == "P" else 16) * int(m.group(3) or 1)
        if name in columns:
            raise cards.error(f"column {name} appears twice")
        if width:
            columns[name] = _Column(name, offset, letter, element)
        offset += width
    if offset != cards.int("NAXIS1"):
        raise cards.error(f"column widths add up to {offset} bytes but NAXIS1 = {cards.int('NAXIS1')}")
    return columns


def _zval(cards: _Cards, name: str, default: int) -> int:
    """Look up a ``ZNAMEn``/``ZVALn`` compression parameter."""
    for n in range(1, _MAX_AXES + 1):
        key = cards.header.get(f"ZNAME{n}")
        if key is None:
            break
        if isinstance(key, str) and key.strip().upper() == name:
            return cards.int(f"ZVAL{n}")
    return default


def codec_from_header(header: Header, *, url: str | None = None, hdu: str | None = None) -> TileCodec:
    """Turn the compression cards of a tile-compressed HDU into a :class:`TileCodec`.

    The one place where header cards become codec settings: ``ZCMPTYPE``,
    ``ZBITPIX``, ``BLOCKSIZE``/``BYTEPIX`` (``ZNAMEn``/``ZVALn``), ``ZQUANTIZ``,
    ``ZDITHER0``, ``ZBLANK`` (or ``BLANK``), and which fallback column exists.
    The image is quantized when it has a ``ZSCALE`` column or keyword.

    Raises
    ------
    ArchiveFormatError
        For an unsupported algorithm (``HCOMPRESS_1``, ``PLIO_1``, ...) or
        quantization method, or invalid cards.
    """
    cards = _Cards(header, url, hdu)
    algorithm = cards.str("ZCMPTYPE").upper()
    if algorithm == "RICE_ONE":
        algorithm = "RICE_1"
    if algorithm not in ALGORITHMS:
        raise cards.error(f"unsupported tile compression ZCMPTYPE = {algorithm!r} "
                          f"(supported: {', '.join(ALGORITHMS)})")
    zbitpix = cards.int("ZBITPIX")
    if zbitpix not in BITPIX_DTYPES:
        raise cards.error(f"invalid ZBITPIX = {zbitpix}")
    names = {cards.str(f"TTYPE{n}", "").upper() for n in range(1, cards.int("TFIELDS", minimum=0) + 1)}
    quantize = None
    if "ZSCALE" in names or "ZSCALE" in header:
        quantize = cards.str("ZQUANTIZ", "NO_DITHER").upper()
        if quantize not in QUANTIZE_METHODS:
            raise cards.error(f"unsupported quantization ZQUANTIZ = {quantize!r}")
    zblank = header.get("ZBLANK", header.get("BLANK"))
    if zblank is not None and (isinstance(zblank, bool) or not isinstance(zblank, int)):
        raise cards.error(f"ZBLANK = {zblank!r} is not an integer")
    fallback = "GZIP_1" if "GZIP_COMPRESSED_DATA" in names else (
        "NOCOMPRESS" if "UNCOMPRESSED_DATA" in names else None)
    try:
        return TileCodec(
            algorithm=algorithm,
            zbitpix=zbitpix,
            blocksize=_zval(cards, "BLOCKSIZE", 32),
            bytepix=_zval(cards, "BYTEPIX", 4),
            quantize=quantize,
            zdither0=cards.int("ZDITHER0", 0),
            zblank=zblank,
            fallback=fallback,
        )
    except TileDecodeError as exc:
        raise cards.error(str(exc)) from None


def _descriptors(rows: np.ndarray, column: _Column, cards: _Cards) -> np.ndarray:
    """(count, offset) of a P/Q column as an (nrows, 2) int64 array."""
    if column.letter not in ("P", "Q"):
        raise cards.error(f"column {column.name} is not a variable-length array column")
    width = 8 if column.letter == "P" else 16
    raw = np.ascontiguousarray(rows[:, column.offset : column.offset + width])
    values = raw.view(">u4" if column.letter == "P" else ">i8").astype(np.int64)
    if (values < 0).any():
        raise cards.error(f"negative descriptor in column {column.name}")
    return values.reshape(-1, 2)


def _fixed(rows: np.ndarray, column: _Column) -> np.ndarray:
    dtype = np.dtype(_FIXED_DTYPE[column.letter])
    raw = np.ascontiguousarray(rows[:, column.offset : column.offset + dtype.itemsize])
    return raw.view(dtype).reshape(-1)


def compressed_layout(
    header: Header,
    table: bytes | memoryview,
    *,
    data_start: int,
    data_size: int,
    url: str | None = None,
    hdu: str | None = None,
) -> TiledArray:
    """Describe a tile-compressed image HDU from its header and descriptor table.

    Parameters
    ----------
    header
        The HDU's parsed header (a ``BINTABLE`` with ``ZIMAGE = T``).
    table
        The first ``table_nbytes(header)`` bytes of the HDU's data.
    data_start
        Absolute file offset of the HDU's data (the table's first byte).
    data_size
        Size of the HDU's data in the file (table + heap + padding).
    url, hdu
        Where the HDU lives, for error messages and the returned layout.

    Raises
    ------
    ArchiveFormatError
        If any card or descriptor is inconsistent: unsupported compression,
        tile count different from the tile grid, column widths different from
        ``NAXIS1``, a tile's bytes outside the HDU's heap, or more pixels than
        the stored bytes can plausibly hold.
    """
    cards = _Cards(header, url, hdu)
    codec = codec_from_header(header, url=url, hdu=hdu)
    if header.get("ZIMAGE") is not True:
        raise cards.error("not a tile-compressed image (ZIMAGE is not T)")
    cards.check_no_scaling()
    nbytes = table_nbytes(header, url=url, hdu=hdu)
    ntiles = cards.int("NAXIS2")
    if nbytes > data_size or len(table) < nbytes:
        raise cards.error(f"tile table needs {nbytes} bytes; data holds {data_size}, got {len(table)}",
                          byte_range=(data_start, data_start + nbytes))
    ndim = cards.int("ZNAXIS", minimum=1)
    if ndim > _MAX_AXES:
        raise cards.error(f"ZNAXIS = {ndim} is out of range")
    fits_shape = [cards.int(f"ZNAXIS{n}", minimum=1) for n in range(1, ndim + 1)]
    fits_tile = [cards.int(f"ZTILE{n}", fits_shape[0] if n == 1 else 1, minimum=1)
                 for n in range(1, ndim + 1)]
    shape, tile_shape = tuple(reversed(fits_shape)), tuple(reversed(fits_tile))
    grid = [-(-n // t) for n, t in zip(shape, tile_shape, strict=True)]
    if math.prod(grid) != ntiles:
        raise cards.error(
            f"the tile grid {tuple(grid)} has {math.prod(grid)} tiles but the table has {ntiles} rows")

    columns = _columns(cards)
    if "COMPRESSED_DATA" not in columns:
        raise cards.error("no COMPRESSED_DATA column")
    rows = np.frombuffer(table, dtype=np.uint8, count=nbytes).reshape(ntiles, -1) if nbytes else \
        np.zeros((ntiles, 0), dtype=np.uint8)
    theap = cards.int("THEAP", nbytes, minimum=nbytes)
    pcount = cards.int("PCOUNT", 0, minimum=0)
    heap_start = data_start + theap
    heap_stop = data_start + min(data_size, nbytes + pcount)

    def located(name: str) -> np.ndarray:
        column = columns[name]
        desc = _descriptors(rows, column, cards)
        # Clip first so that absurd 64-bit descriptors cannot overflow the sums below.
        huge = (desc[:, 0] > 0) & ((desc[:, 0] > data_size) | (desc[:, 1] > data_size))
        desc = np.where(huge[:, None], data_size, desc)
        counts = desc[:, 0] * _ELEMENT_SIZE[column.element]
        starts = heap_start + desc[:, 1]
        bad = (counts > 0) & (starts + counts > heap_stop)
        if bad.any():
            t = int(np.argmax(bad))
            raise cards.error(f"tile {t} of {name} lies outside the heap (ends at {heap_stop})",
                              byte_range=(int(starts[t]), int(starts[t] + counts[t])))
        return _readonly(np.stack([np.where(counts > 0, starts, 0), counts], axis=1))

    data = located("COMPRESSED_DATA")
    fallback_name = _FALLBACK_COLUMNS.get(codec.fallback or "")
    fallback = located(fallback_name) if fallback_name else None
    if codec.fallback == "NOCOMPRESS":
        element = columns["UNCOMPRESSED_DATA"].element
        if _ELEMENT_SIZE[element] != codec.dtype.itemsize or (element in "ED") != (codec.zbitpix < 0):
            raise cards.error(f"UNCOMPRESSED_DATA elements ({element}) do not match ZBITPIX {codec.zbitpix}")

    stored = int(data[:, 1].sum()) + (0 if fallback is None else int(fallback[:, 1].sum()))
    limit = MAX_EXPANSION * stored + 1024 * ntiles
    if math.prod(shape) * codec.dtype.itemsize > limit:
        raise cards.error(f"image of shape {shape} is larger than its {stored} stored bytes can hold")

    def per_tile(name: str, dtype: type) -> np.ndarray | None:
        if name in columns:
            return _readonly(_fixed(rows, columns[name]).astype(dtype))
        value = cards.float(name) if dtype is np.float64 else None
        return None if value is None else _readonly(np.full(ntiles, value, dtype=dtype))

    zscale = zzero = None
    if codec.quantize is not None:
        zscale, zzero = per_tile("ZSCALE", np.float64), per_tile("ZZERO", np.float64)
        if zzero is None:
            zzero = _readonly(np.zeros(ntiles, dtype=np.float64))
    return TiledArray(
        shape=shape, tile_shape=tile_shape, codec=codec, data=data, fallback=fallback,
        zscale=zscale, zzero=zzero, zblank=per_tile("ZBLANK", np.int64), url=url, hdu=hdu,
    )


def plain_layout(
    header: Header, *, data_start: int, data_size: int, url: str | None = None, hdu: str | None = None
) -> PlainArray:
    """Describe an uncompressed ``IMAGE`` HDU from its header.

    Raises
    ------
    ArchiveFormatError
        If ``BITPIX``/``NAXISn`` are invalid, the pixels do not fit in
        ``data_size``, or ``BSCALE``/``BZERO`` scaling is present.
    """
    cards = _Cards(header, url, hdu)
    bitpix = cards.int("BITPIX")
    if bitpix not in BITPIX_DTYPES:
        raise cards.error(f"invalid BITPIX = {bitpix}")
    ndim = cards.int("NAXIS", minimum=1)
    if ndim > _MAX_AXES:
        raise cards.error(f"NAXIS = {ndim} is out of range")
    shape = tuple(reversed([cards.int(f"NAXIS{n}", minimum=1) for n in range(1, ndim + 1)]))
    cards.check_no_scaling()
    dtype = BITPIX_DTYPES[bitpix]
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > data_size:
        raise cards.error(f"image of shape {shape} needs {nbytes} bytes but the data holds {data_size}",
                          byte_range=(data_start, data_start + data_size))
    return PlainArray(shape=shape, dtype=dtype, data_start=data_start, url=url, hdu=hdu)
