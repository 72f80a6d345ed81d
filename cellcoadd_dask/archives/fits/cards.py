"""FITS header cards: parse 2880-byte header blocks into typed values.

Fixed-format keyword cards with string, logical, integer and floating values, ``CONTINUE``
long strings and ``END``; ``HIERARCH`` keywords on request (afw's legacy files use them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from ...errors import ArchiveFormatError

__all__ = ["BLOCK", "CARD", "Header", "header_size", "parse_header"]

BLOCK = 2880
CARD = 80
MAX_HEADER_BYTES = 2880 * 1000

CardValue = str | int | float | bool | None

_STRING = re.compile(r"'((?:[^']|'')*)'")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$")


class Header(Mapping[str, CardValue]):
    """Keyword -> value of one FITS header, first occurrence wins, order kept."""

    def __init__(self, cards: dict[str, CardValue], size: int) -> None:
        self._cards = cards
        self.size = size
        """Number of bytes the header occupies, padding included."""

    def __getitem__(self, key: str) -> CardValue:
        return self._cards[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cards)

    def __len__(self) -> int:
        return len(self._cards)

    def __repr__(self) -> str:
        return f"Header({self._cards!r})"


def _parse_value(text: str) -> tuple[CardValue, bool]:
    """Parse the value field of a card; return (value, is_string)."""
    text = text.strip()
    if text.startswith("'"):
        m = _STRING.match(text)
        if m is None:
            raise ValueError("unterminated string")
        return m.group(1).replace("''", "'").rstrip(), True
    value = text.split("/", 1)[0].strip()
    if value == "":
        return None, False
    if value == "T":
        return True, False
    if value == "F":
        return False, False
    if _INT.match(value):
        return int(value), False
    if _FLOAT.match(value):
        return float(value.replace("D", "E").replace("d", "e")), False
    raise ValueError(f"unparsable value {value!r}")


def header_size(buffer: bytes | memoryview, offset: int = 0) -> int | None:
    """Bytes occupied by the header starting at ``offset`` (padded), or ``None`` if no ``END`` card yet."""
    n = len(buffer)
    pos = offset
    while pos + CARD <= n:
        if bytes(buffer[pos : pos + 8]) == b"END     ":
            end = pos + CARD - offset
            return -(-end // BLOCK) * BLOCK
        pos += CARD
    return None


def parse_header(
    buffer: bytes | memoryview, offset: int = 0, *, url: str | None = None, hdu: str | None = None,
    hierarch: bool = False, base: int = 0,
) -> Header:
    """Parse the header that starts at ``offset`` in ``buffer``.

    With ``hierarch``, ``HIERARCH A B C = value`` cards are kept under the key ``"A B C"``
    (otherwise they are skipped).  ``base`` is the file offset of ``buffer[0]``: byte ranges
    in errors are positions in the file.

    Raises
    ------
    ArchiveFormatError
        If the header has no ``END`` card within ``buffer`` or a card cannot be parsed.
    """
    size = header_size(buffer, offset)
    if size is None:
        raise ArchiveFormatError(
            "header has no END card (truncated or not FITS)",
            url=url,
            hdu=hdu,
            byte_range=(base + offset, base + offset + len(buffer)),
        )
    cards: dict[str, CardValue] = {}
    pos = offset
    last_string_key: str | None = None
    while True:
        raw = bytes(buffer[pos : pos + CARD])
        try:
            card = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ArchiveFormatError(
                "header card is not ASCII", url=url, hdu=hdu, byte_range=(base + pos, base + pos + CARD)
            ) from None
        key = card[:8].rstrip()
        pos += CARD
        if key == "END":
            break
        if hierarch and key == "HIERARCH" and "=" in card:
            name, _, text = card[9:].partition("=")
            key, card = " ".join(name.split()), f"{'':8}= {text}"
        if key == "CONTINUE" and last_string_key is not None:
            try:
                more, _ = _parse_value(card[8:])
            except ValueError:
                more = ""
            prev = cards[last_string_key]
            if isinstance(prev, str) and prev.endswith("&") and isinstance(more, str):
                cards[last_string_key] = prev[:-1] + more
            continue
        if card[8:10] != "= " or key in ("COMMENT", "HISTORY", ""):
            last_string_key = None
            continue
        try:
            value, is_string = _parse_value(card[10:])
        except ValueError as exc:
            raise ArchiveFormatError(
                f"bad header card {raw.decode('ascii').rstrip()!r}: {exc}", url=url, hdu=hdu,
                byte_range=(base + pos - CARD, base + pos)
            ) from None
        if key not in cards:
            cards[key] = value
            last_string_key = key if is_string else None
        else:
            last_string_key = None
    return Header(cards, size)
