"""Walk the HDUs of a legacy (afw ``MaskedImage.writeFits``) FITS file and interpret their cards.

Such a file has no index: a primary HDU of metadata cards, then the image, mask and variance
HDUs, each a plain ``IMAGE`` HDU or a tile-compressed one (``BINTABLE`` with ``ZIMAGE = T``).
:func:`walk_legacy` finds them from the start of the file with the fetch layer: it parses
each header, computes the size of its data (``BITPIX``, ``NAXISn``, ``PCOUNT``, ``GCOUNT``,
padded to 2880 bytes) and jumps to the next one.  The first request asks for
:data:`HEAD_BYTES`, so a small file is read in one request (two when it is shorter than that:
the first then fails short and the whole file is asked for); each further header that the
bytes already read do not hold costs one more request (of one 2880-byte block, extended by as
many bytes as are held until the ``END`` card is found, so at most twice the header, then,
for a tile-compressed HDU, to the end of its tile table).  No pixel tile is decoded here (the
first request may hold some, which are not kept): each HDU becomes a
:class:`~cellcoadd_dask.archives.fits.tiles.StoredArray` layout with its whole tile table loaded.

Every size the file states is checked against the file's size before anything that size is
fetched; a tile table is also capped by ``cellcoadd.limits.index_bytes``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import astropy.units as u

from ...errors import ArchiveFormatError
from ...fetch import ObjectPin, fetch_head, fetch_object, fetch_ranges
from ...limits import check
from .cards import BLOCK, CARD, MAX_HEADER_BYTES, CardValue, Header, header_size, parse_header
from .layout import HduEntry
from .tile_tables import compressed_layout_from_header, load_rows, plain_layout, table_nbytes
from .tiles import StoredArray, TiledArray

__all__ = [
    "HEAD_BYTES",
    "LEGACY_HDUS",
    "LegacyFile",
    "LegacyHdu",
    "all_cards",
    "legacy_bunit",
    "legacy_mask_planes",
    "legacy_yx0",
    "split_primary",
    "walk_legacy",
]

HEAD_BYTES = 64 * 1024
"""Bytes asked for by the first request (and most bytes of one later header read)."""


LEGACY_HDUS = ("IMAGE", "MASK", "VARIANCE")
"""The planes of HDUs 1, 2 and 3, in that order."""

STRUCTURAL = re.compile(r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|XTENSION|END)$")
_BITPIX_BYTES = {8: 1, 16: 2, 32: 4, 64: 8, -32: 4, -64: 8}


@dataclass(frozen=True)
class LegacyHdu:
    """One image HDU of a legacy file.

    Attributes
    ----------
    plane
        ``"IMAGE"``, ``"MASK"`` or ``"VARIANCE"`` (by position in the file).
    entry
        Where its header and data are (``extname`` is the plane, whatever ``EXTNAME`` says).
    header
        The structural cards (for the codec and layout code).
    cards
        Every valued card, ``HIERARCH`` ones included (keyword -> value, first wins).
    layout
        The stored array: a tile table (rows loaded as far as the header read reached) or a plain image.
    """

    plane: str
    entry: HduEntry
    header: Header
    cards: Mapping[str, CardValue]
    layout: StoredArray

    @property
    def label(self) -> str:
        """How messages name the HDU: ``"HDU 2 (MASK)"``."""
        return f"{LEGACY_HDUS.index(self.plane) + 1} ({self.plane})"

    @property
    def quantized(self) -> bool:
        """Whether the pixels are stored quantized (lossy tile compression of floats)."""
        return isinstance(self.layout, TiledArray) and self.layout.codec.quantize is not None


@dataclass(frozen=True)
class LegacyFile:
    """What walking a legacy file yields: its primary cards and the image HDUs asked for."""

    url: str
    primary: Mapping[str, CardValue]
    hdus: tuple[LegacyHdu, ...]
    pin: ObjectPin
    size: int | None


def all_cards(buffer: bytes | memoryview, size: int, *, url: str, hdu: str, base: int = 0) -> dict[str, CardValue]:
    """Every valued card of the header in ``buffer[:size]``, ``HIERARCH`` keywords and ``CONTINUE`` included.

    ``base`` is the file offset of ``buffer[0]``.

    Raises
    ------
    ArchiveFormatError
        If a card is not ASCII or its value does not parse (names the card's byte range).
    """
    return dict(parse_header(bytes(buffer[:size]), url=url, hdu=hdu, hierarch=True, base=base))


class _Walker:
    """Reads headers from the start of a file, keeping the last bytes fetched."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url
        self.storage_options = storage_options
        try:
            (blob,), pin = fetch_head(url, [(0, HEAD_BYTES)], storage_options=storage_options)
        except ArchiveFormatError:  # shorter than HEAD_BYTES: read all of it
            blob, pin = fetch_object(url, storage_options=storage_options, limit=HEAD_BYTES)
        self.pin: ObjectPin = pin
        self.size: int | None = pin.size
        self.start, self.buffer = 0, bytes(blob)

    def extend(self, pos: int, blob: bytes, stop: int, hdu: str) -> bytes:
        """``blob`` (the bytes from ``pos`` on) extended to end at ``stop``."""
        if pos + len(blob) >= stop:
            return blob
        try:
            (more,) = fetch_ranges(self.url, [(pos + len(blob), stop)], storage_options=self.storage_options,
                                   pin=self.pin)
        except ArchiveFormatError as exc:
            raise ArchiveFormatError("the file ends inside this HDU's header or tile table (truncated)",
                                     url=self.url, hdu=hdu, byte_range=exc.byte_range) from None
        self.start, self.buffer = pos, blob + more
        return self.buffer

    def header(self, pos: int, hdu: str) -> bytes:
        """The bytes from ``pos`` on that hold the whole header starting there (and what followed it)."""
        if self.size is not None and pos >= self.size:
            raise ArchiveFormatError(f"the file ends at byte {self.size}, before this HDU", url=self.url, hdu=hdu,
                                     byte_range=(pos, pos + BLOCK))
        inside = self.start <= pos < self.start + len(self.buffer)
        blob = self.buffer[pos - self.start :] if inside else b""
        while header_size(blob) is None:
            if len(blob) >= MAX_HEADER_BYTES:
                raise ArchiveFormatError("header has no END card", url=self.url, hdu=hdu,
                                         byte_range=(pos, pos + len(blob)))
            if self.size is not None and pos + len(blob) >= self.size:
                raise ArchiveFormatError("header has no END card before the end of the file (truncated)",
                                         url=self.url, hdu=hdu, byte_range=(pos, self.size))
            stop = pos + len(blob) + min(max(len(blob), BLOCK), HEAD_BYTES)  # 1, 1, 2, 4... blocks
            blob = self.extend(pos, blob, stop if self.size is None else min(stop, self.size), hdu)
        return blob


def _integer(header: Header, key: str, url: str, hdu: str, *, default: int | None = None, minimum: int = 0) -> int:
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArchiveFormatError(f"header card {key} = {value!r} is missing, not an integer or below {minimum}",
                                 url=url, hdu=hdu)
    return value


def _data_size(header: Header, url: str, hdu: str) -> int:
    """Bytes of the HDU's data, padding included (``|BITPIX|/8 * GCOUNT * (PCOUNT + prod NAXISn)``)."""
    bitpix = header.get("BITPIX")
    if isinstance(bitpix, bool) or bitpix not in _BITPIX_BYTES:
        raise ArchiveFormatError(f"invalid BITPIX = {bitpix!r}", url=url, hdu=hdu)
    naxis = _integer(header, "NAXIS", url, hdu)
    if naxis > 999:
        raise ArchiveFormatError(f"NAXIS = {naxis} is out of range", url=url, hdu=hdu)
    if naxis == 0:
        return 0
    count = math.prod(_integer(header, f"NAXIS{n}", url, hdu) for n in range(1, naxis + 1))
    pcount = _integer(header, "PCOUNT", url, hdu, default=0)
    gcount = _integer(header, "GCOUNT", url, hdu, default=1, minimum=1)
    size = _BITPIX_BYTES[int(bitpix)] * gcount * (pcount + count)
    return -(-size // BLOCK) * BLOCK


def _layout(header: Header, entry: HduEntry, blob: bytes, url: str, hdu: str) -> StoredArray:
    layout: StoredArray
    if entry.compressed:
        nbytes = table_nbytes(header, url=url, hdu=hdu)
        tiled = compressed_layout_from_header(header, data_start=entry.dataddr, data_size=entry.datsize,
                                              url=url, hdu=hdu)
        load_rows(tiled, 0, blob[header.size : header.size + nbytes])
        layout = tiled
    elif entry.xtension == "IMAGE":
        layout = plain_layout(header, data_start=entry.dataddr, data_size=entry.datsize, url=url, hdu=hdu)
    else:
        raise ArchiveFormatError(f"a {entry.xtension} HDU where an image was expected", url=url, hdu=hdu)
    if len(layout.shape) != 2:
        raise ArchiveFormatError(f"the image has {len(layout.shape)} axes, not 2", url=url, hdu=hdu)
    return layout


def walk_legacy(url: str, count: int = 3, storage_options: Mapping[str, Any] | None = None) -> LegacyFile:
    """Read the primary header and the headers (and tile tables, as far as read) of the first ``count`` image HDUs.

    Raises
    ------
    ArchiveFormatError
        If the file is not FITS, is truncated, lacks an HDU, or a header is malformed (the
        error names the URL, the HDU and the byte range).
    LimitExceededError
        If a tile table is larger than ``cellcoadd.limits.index_bytes``.
    """
    walker = _Walker(url, storage_options)
    if not walker.buffer.startswith(b"SIMPLE  =                    T"):
        raise ArchiveFormatError("not a FITS file (no SIMPLE = T card)", url=url, hdu="PRIMARY", byte_range=(0, CARD))
    pos, primary_cards = 0, {}
    hdus: list[LegacyHdu] = []
    for k in range(count + 1):
        hdu = "PRIMARY" if k == 0 else f"{k} ({LEGACY_HDUS[k - 1]})"
        blob = walker.header(pos, hdu)
        if k and not blob.startswith(b"XTENSION= "):
            raise ArchiveFormatError("no extension header where the previous HDU ends", url=url, hdu=hdu,
                                     byte_range=(pos, pos + CARD))
        header = parse_header(blob, 0, url=url, hdu=hdu)
        cards = all_cards(blob, header.size, url=url, hdu=hdu, base=pos)
        size = _data_size(header, url, hdu)
        dataddr = pos + header.size
        if walker.size is not None and dataddr + size > walker.size:
            raise ArchiveFormatError(f"the header declares {size} bytes of data; the file holds "
                                     f"{walker.size - dataddr} after the header (truncated or corrupt)",
                                     url=url, hdu=hdu, byte_range=(dataddr, dataddr + size))
        if k == 0:
            primary_cards = cards
        else:
            xtension = header.get("XTENSION")
            if header.get("ZIMAGE") is True:  # the whole tile table, now
                nbytes = check(table_nbytes(header, url=url, hdu=hdu), "index_bytes",
                               field="tile table (NAXIS1 * NAXIS2)", url=url, hdu=hdu, available=size)
                blob = walker.extend(pos, blob, dataddr + nbytes, hdu)
            entry = HduEntry(extname=LEGACY_HDUS[k - 1], extver=1, xtension=str(xtension).strip(),
                             compressed=header.get("ZIMAGE") is True, hdraddr=pos, dataddr=dataddr, datsize=size)
            hdus.append(LegacyHdu(LEGACY_HDUS[k - 1], entry, header, cards, _layout(header, entry, blob, url, hdu)))
        pos = dataddr + size
    return LegacyFile(url=url, primary=primary_cards, hdus=tuple(hdus), pin=walker.pin, size=walker.size)


def _number(cards: Mapping[str, CardValue], key: str, url: str, hdu: str) -> float:
    value = cards.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArchiveFormatError(f"header card {key} = {value!r} is missing or not a finite number", url=url, hdu=hdu)
    return float(value)


def legacy_yx0(cards: Mapping[str, CardValue], *, url: str, hdu: str) -> tuple[int, int]:
    """The ``(y, x)`` of the first pixel: ``-LTV2, -LTV1`` (as afw writes), else the ``A`` offset WCS.

    Raises
    ------
    ArchiveFormatError
        If neither is there, or a card is not a number.
    """
    if "LTV1" in cards or "LTV2" in cards:
        return -round(_number(cards, "LTV2", url, hdu)), -round(_number(cards, "LTV1", url, hdu))
    if cards.get("CTYPE1A") == "LINEAR":
        x = _number(cards, "CRVAL1A", url, hdu) - (_number({"C": cards.get("CRPIX1A", 1.0)}, "C", url, hdu) - 1.0)
        y = _number(cards, "CRVAL2A", url, hdu) - (_number({"C": cards.get("CRPIX2A", 1.0)}, "C", url, hdu) - 1.0)
        return round(y), round(x)
    raise ArchiveFormatError("the header records no LTV1/LTV2 cards or linear offset WCS (A)", url=url, hdu=hdu)


def legacy_mask_planes(cards: Mapping[str, CardValue], bits: int, *, url: str, hdu: str) -> dict[str, int]:
    """Legacy plane name -> bit, from the ``MP_<NAME>`` cards (in card order).

    Raises
    ------
    ArchiveFormatError
        If a bit is not an integer, lies outside ``[0, bits)``, or two planes share it.
    """
    planes: dict[str, int] = {}
    for key, value in cards.items():
        if not key.upper().startswith("MP_"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < bits:
            raise ArchiveFormatError(f"mask plane card {key} = {value!r} is not a bit number in [0, {bits})",
                                     url=url, hdu=hdu)
        if value in planes.values():
            raise ArchiveFormatError(f"mask plane card {key} = {value} reuses the bit of another plane",
                                     url=url, hdu=hdu)
        planes[key[3:]] = value
    return planes


def legacy_bunit(text: CardValue, instrumental: CardValue, *, url: str, hdu: str) -> u.UnitBase:
    """The unit of a ``BUNIT`` card as afw and LSST instruments write it.

    ``ADU`` means ``adu``; a string that is not a FITS unit is tried as a generic astropy unit;
    ``adu`` (or ``adu**2``) becomes ``electron`` (``electron**2``) when the primary card
    ``LSST ISR UNITS`` says the instrumental unit is electrons.

    Raises
    ------
    ArchiveFormatError
        If the card is not a string or names no unit.
    """
    if not isinstance(text, str):
        raise ArchiveFormatError(f"BUNIT = {text!r} is not a string", url=url, hdu=hdu)
    text = text.replace("ADU", "adu")
    try:
        try:
            unit = u.Unit(text, format="fits")
        except ValueError:
            unit = u.Unit(text)
        isr = None if instrumental is None else u.Unit(str(instrumental))
    except (ValueError, TypeError) as exc:
        raise ArchiveFormatError(f"BUNIT = {text!r} or LSST ISR UNITS = {instrumental!r} is not a unit: {exc}",
                                 url=url, hdu=hdu) from None
    if isr == u.electron and unit == u.adu:
        return u.electron
    if isr == u.electron and unit == u.adu**2:
        return u.electron**2
    return unit


def split_primary(cards: Mapping[str, CardValue], *, url: str) -> tuple[dict[str, Any], dict[str, CardValue]]:
    """The ``LSST IMAGES KEY n``/``VALUE n`` pairs (n = 1, 2, ... until a key is missing) and the other cards.

    Structural cards (``SIMPLE``, ``BITPIX``, ``NAXIS``...) are left out of the second mapping.

    Raises
    ------
    ArchiveFormatError
        If a key card has no value card, or is not a string.
    """
    metadata: dict[str, Any] = {}
    used: set[str] = set()
    n = 1
    while (key := cards.get(f"LSST IMAGES KEY {n}", ...)) is not ...:
        value_key = f"LSST IMAGES VALUE {n}"
        if value_key not in cards or not isinstance(key, str):
            raise ArchiveFormatError(f"LSST IMAGES KEY {n} = {key!r} has no {value_key} card or is not a string",
                                     url=url, hdu="PRIMARY")
        metadata[key] = cards[value_key]
        used.update((f"LSST IMAGES KEY {n}", value_key))
        n += 1
    rest = {k: v for k, v in cards.items() if k not in used and not STRUCTURAL.match(k)}
    return metadata, rest
