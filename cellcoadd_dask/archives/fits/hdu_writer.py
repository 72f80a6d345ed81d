"""Write FITS HDUs to a seekable binary stream, one after another, tracking their addresses.

Tile-compressed images are streamed: the header and the descriptor table are written as
placeholders of their final size, tiles are appended to the heap as they arrive, then the
header and table are rewritten in place with the final counts and offsets.  Only the
descriptor table of one HDU (a few KB) is kept in memory.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import IO, Any

import numpy as np

from .encode import EncodedTile, TileEncoder

__all__ = [
    "BLOCK",
    "Card",
    "FitsStreamWriter",
    "HduPosition",
    "render_header",
    "utc_now",
]

BLOCK = 2880
"""FITS block size in bytes."""

Card = tuple[str, Any, str]
"""``(keyword, value, comment)``."""

_ZBLANK = -2147483648
_INT32_LIMIT = 2**31 - 1


def utc_now() -> str:
    """UTC time as written in ``DATE`` cards: ``YYYY-MM-DDThh:mm:ss.sss``."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def render_header(cards: Iterable[Card | Any]) -> bytes:
    """Serialize cards (tuples or astropy cards) to header bytes ending in ``END``, padded to 2880."""
    import astropy.io.fits as fits
    from astropy.io.fits.verify import VerifyWarning

    header = fits.Header()
    with warnings.catch_warnings():
        # Over-long comments are truncated, which is what a FITS writer should do with them.
        warnings.simplefilter("ignore", VerifyWarning)
        for card in cards:
            if isinstance(card, tuple):
                header.append(fits.Card(*card), end=True)
            else:
                header.append(card, end=True)
        text = header.tostring(sep="", endcard=True, padding=True)
    return text.encode("ascii")


def _pad(n: int) -> int:
    return -n % BLOCK


@dataclasses.dataclass(frozen=True)
class HduPosition:
    """Where an HDU was written (one row of the INDEX HDU)."""

    extname: str
    extver: int
    xtension: str
    compressed: bool
    hdraddr: int
    dataddr: int
    datsize: int


def _descriptor_kind(max_heap: int) -> str:
    return "P" if max_heap <= _INT32_LIMIT else "Q"


class FitsStreamWriter:
    """Appends HDUs to ``stream`` (opened ``w+b``, initially empty).

    Parameters
    ----------
    stream
        Seekable binary stream.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.positions: list[HduPosition] = []
        self._offset = 0

    @property
    def offset(self) -> int:
        """Bytes written so far (the next HDU's address)."""
        return self._offset

    def _write(self, data: bytes | memoryview) -> None:
        self.stream.write(data)
        self._offset += len(data)

    def _pad_block(self) -> int:
        pad = _pad(self._offset)
        if pad:
            self._write(b"\0" * pad)
        return pad

    def write_hdu(
        self,
        header: bytes,
        data: bytes | Iterable[bytes],
        *,
        extname: str,
        extver: int = 1,
        xtension: str = "IMAGE",
        compressed: bool = False,
    ) -> HduPosition:
        """Write a header and its data (bytes or an iterable of chunks), padding the data to 2880."""
        hdraddr = self._offset
        self._write(header)
        dataddr = self._offset
        chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else data
        for chunk in chunks:
            self._write(chunk)
        if self._offset > dataddr:
            self._pad_block()
        position = HduPosition(extname, extver, xtension, compressed, hdraddr, dataddr, self._offset - dataddr)
        self.positions.append(position)
        return position

    def rewrite_header(self, position: HduPosition, header: bytes) -> None:
        """Replace the header of an HDU already written by one of exactly the same size."""
        if len(header) != position.dataddr - position.hdraddr:
            raise AssertionError(
                f"header of {position.extname} changed size ({len(header)} != {position.dataddr - position.hdraddr})"
            )
        self.stream.seek(position.hdraddr)
        self.stream.write(header)
        self.stream.seek(self._offset)

    def write_compressed_image(
        self,
        *,
        extname: str,
        extver: int,
        shape: Sequence[int],
        dtype: np.dtype,
        tile_shape: Sequence[int],
        encoder: TileEncoder,
        tiles: Iterable[Sequence[EncodedTile]],
        extra_cards: Sequence[Card | Any] = (),
    ) -> HduPosition:
        """Write a tile-compressed image HDU whose encoded tiles arrive in tile order.

        Parameters
        ----------
        extname, extver
            HDU name and version (``EXTVER`` is written only when > 1).
        shape, dtype
            The image (numpy order).
        tile_shape
            Tile shape (numpy order).
        encoder
            The encoder the tiles were produced with (columns and compression cards).
        tiles
            Groups of encoded tiles, in tile order, that together hold every tile.
        extra_cards
            Cards appended after ``EXTNAME``/``EXTVER`` (units, WCS, mask planes); ``DATE`` is added last.
        """
        n_tiles = math.prod(-(-n // t) for n, t in zip(shape, tile_shape, strict=True))
        raw_bytes = math.prod(shape) * dtype.itemsize
        # Upper bound of the heap: every tile stored raw, plus generous codec overhead.
        kind = _descriptor_kind(int(raw_bytes * 1.1) + 1024 * n_tiles)
        columns = encoder.columns()
        desc_size = 16 if kind == "Q" else 8
        row_fields: list[tuple[str, str]] = []
        for name, form in columns:
            row_fields.append((name, form))
        row_bytes = sum(desc_size if form == "PB" else 8 for _, form in row_fields)

        def header(heap: int, maxlen: dict[str, int]) -> bytes:
            cards: list[Card | Any] = [
                ("XTENSION", "BINTABLE", "binary table extension"),
                ("BITPIX", 8, "array data type"),
                ("NAXIS", 2, "number of array dimensions"),
                ("NAXIS1", row_bytes, "width of table in bytes"),
                ("NAXIS2", n_tiles, "number of rows in table"),
                ("PCOUNT", heap, "number of group parameters"),
                ("GCOUNT", 1, "number of groups"),
                ("TFIELDS", len(row_fields), "number of fields in each row"),
            ]
            for k, (name, form) in enumerate(row_fields, start=1):
                cards.append((f"TTYPE{k}", name, ""))
                cards.append((f"TFORM{k}", f"1{kind}B({maxlen[name]})" if form == "PB" else "1D", ""))
            cards += [
                ("ZIMAGE", True, "extension contains compressed image"),
                ("ZTENSION", "IMAGE", "Image extension"),
                ("ZBITPIX", _bitpix(dtype), "array data type"),
                ("ZNAXIS", len(shape), "number of array dimensions"),
            ]
            cards += [(f"ZNAXIS{k}", int(n), "") for k, n in enumerate(reversed(shape), start=1)]
            cards += [("ZPCOUNT", 0, "number of parameters"), ("ZGCOUNT", 1, "number of groups")]
            cards += [
                (f"ZTILE{k}", int(t), "size of tiles to be compressed")
                for k, t in enumerate(reversed(tile_shape), start=1)
            ]
            cards += list(encoder.compression_cards())
            if encoder.quantized:
                cards.append(("ZBLANK", _ZBLANK, "null value in the quantized data"))
            cards.append(("EXTNAME", extname, "name of this binary table extension"))
            if extver > 1:
                cards.append(("EXTVER", extver, "extension version"))
            cards += list(extra_cards)
            cards.append(("DATE", utc_now(), "UTC date this HDU was written."))
            return render_header(cards)

        placeholder = header(0, {name: 0 for name, _ in row_fields})
        hdraddr = self._offset
        self._write(placeholder)
        dataddr = self._offset
        table_size = row_bytes * n_tiles
        self._write(b"\0" * table_size)
        ptr_dtype = ">i8" if kind == "Q" else ">i4"
        fields: list[tuple[str, Any, Any]] = []
        for name, form in row_fields:
            fields.append((name, ptr_dtype, (2,)) if form == "PB" else (name, ">f8", ()))
        table = np.zeros(n_tiles, dtype=np.dtype([(n, d, s) if s else (n, d) for n, d, s in fields]))
        heap = 0
        maxlen = {name: 0 for name, _ in row_fields}
        row = 0
        for group in tiles:
            for tile in group:
                if row >= n_tiles:
                    raise AssertionError(f"{extname}: more tiles than the {n_tiles} expected")
                for name, payload in (("COMPRESSED_DATA", tile.data), ("GZIP_COMPRESSED_DATA", tile.fallback)):
                    if name not in maxlen or not payload:
                        continue
                    table[name][row] = (len(payload), heap)
                    maxlen[name] = max(maxlen[name], len(payload))
                    self._write(payload)
                    heap += len(payload)
                if encoder.quantized:
                    table["ZSCALE"][row] = tile.zscale
                    table["ZZERO"][row] = tile.zzero
                row += 1
        if row != n_tiles:
            raise AssertionError(f"{extname}: {row} tiles written, {n_tiles} expected")
        if kind == "P" and heap > _INT32_LIMIT:
            raise AssertionError(f"{extname}: heap of {heap} bytes overflows 32-bit descriptors")
        self._pad_block()
        position = HduPosition(extname, extver, "BINTABLE", True, hdraddr, dataddr, self._offset - dataddr)
        self.positions.append(position)
        self.rewrite_header(position, header(heap, maxlen))
        self.stream.seek(dataddr)
        self.stream.write(table.tobytes())
        self.stream.seek(self._offset)
        return position

    def write_plain_image(
        self,
        *,
        extname: str,
        extver: int,
        shape: Sequence[int],
        dtype: np.dtype,
        chunks: Iterable[bytes],
        extra_cards: Sequence[Card | Any] = (),
    ) -> HduPosition:
        """Write an uncompressed image HDU from big-endian data chunks in C order."""
        cards: list[Card | Any] = [
            ("XTENSION", "IMAGE", "Image extension"),
            ("BITPIX", _bitpix(dtype), "array data type"),
            ("NAXIS", len(shape), "number of array dimensions"),
        ]
        cards += [(f"NAXIS{k}", int(n), "") for k, n in enumerate(reversed(shape), start=1)]
        cards += [("PCOUNT", 0, "number of parameters"), ("GCOUNT", 1, "number of groups")]
        cards.append(("EXTNAME", extname, "extension name"))
        if extver > 1:
            cards.append(("EXTVER", extver, "extension version"))
        cards += list(extra_cards)
        cards.append(("DATE", utc_now(), "UTC date this HDU was written."))
        return self.write_hdu(render_header(cards), chunks, extname=extname, extver=extver, xtension="IMAGE")


def _bitpix(dtype: np.dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return -8 * dtype.itemsize
    if dtype.kind == "i" or (dtype.kind == "u" and dtype.itemsize == 1):
        return 8 * dtype.itemsize
    raise ValueError(f"cannot store {dtype} pixels in a FITS image without scaling")
