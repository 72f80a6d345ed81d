"""FITS binary tables (``XTENSION = 'BINTABLE'``): header + data bytes -> numpy columns.

Pure functions for the plain tables of the lsst-images container (aperture
corrections, provenance, the INDEX): fixed-width columns ``L``, ``B``, ``I``,
``J``, ``K``, ``E``, ``D``, ``A`` with repeat counts and ``TDIM``, the ``TZERO``
offsets that encode unsigned integers, and ``TSCAL``.  Variable-length columns
(``P``/``Q``) come back as their ``(count, offset)`` descriptors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ...errors import ArchiveFormatError
from ..names import parse_source

__all__ = ["BinTableColumn", "parse_columns", "read_bintable", "select_column", "split_column_source"]

# TFORM letter -> (big-endian numpy dtype, bytes per element).
_TYPES: dict[str, tuple[str, int]] = {
    "L": ("S1", 1),
    "B": ("u1", 1),
    "I": (">i2", 2),
    "J": (">i4", 4),
    "K": (">i8", 8),
    "E": (">f4", 4),
    "D": (">f8", 8),
    "A": ("S1", 1),
    "P": (">i4", 8),
    "Q": (">i8", 16),
}

# TZERO values that turn a signed FITS integer into the unsigned (or signed) numpy type.
_OFFSET_TYPES: dict[tuple[str, int | float], np.dtype] = {
    ("B", -128): np.dtype("i1"),
    ("I", 1 << 15): np.dtype("u2"),
    ("J", 1 << 31): np.dtype("u4"),
    ("K", 1 << 63): np.dtype("u8"),
}

_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCM]|[PQ][LXBIJKAEDCM](?:\(\d+\))?)\s*$")
_TDIM = re.compile(r"^\s*\(\s*(\d+(?:\s*,\s*\d+)*)\s*\)\s*$")

# Rows * columns beyond which a header describes more values than any lsst-images table holds.
_MAX_FIELDS = 999


@dataclass(frozen=True, slots=True)
class BinTableColumn:
    """Layout of one binary-table column, from its ``TTYPEn``/``TFORMn``/``TDIMn`` cards.

    Attributes
    ----------
    name
        ``TTYPEn`` (``"col<n>"`` when absent).
    code
        TFORM type letter.
    repeat
        TFORM repeat count (string length for ``A``).
    offset
        Byte offset of the column within a row.
    width
        Bytes per row.
    shape
        Per-row shape of the decoded value (``()`` for scalars), numpy order.
    zero, scale
        ``TZEROn`` and ``TSCALn`` (0 and 1 when absent).
    unit
        ``TUNITn`` or ``None``.
    element
        For ``P``/``Q`` descriptor columns, the type letter of the heap elements.
    """

    name: str
    code: str
    repeat: int
    offset: int
    width: int
    shape: tuple[int, ...]
    zero: int | float = 0
    scale: int | float = 1
    unit: str | None = None
    element: str = ""

    @property
    def element_size(self) -> int:
        """Bytes per heap element of a ``P``/``Q`` column (per value otherwise)."""
        return _TYPES[self.element or self.code][1] if (self.element or self.code) in _TYPES else 1


def _int_card(header: Mapping[str, object], key: str, url: str | None, hdu: str | None) -> int:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchiveFormatError(f"binary table card {key} = {value!r} is missing or not an integer",
                                 url=url, hdu=hdu)
    return value


def _shape(code: str, repeat: int, tdim: object, number: int, url: str | None, hdu: str | None
           ) -> tuple[int, ...]:
    """Per-row numpy shape of a column from its repeat count and optional TDIM."""
    if code in ("P", "Q"):
        return (2,)
    if tdim is not None:
        match = _TDIM.match(str(tdim))
        if match is None:
            raise ArchiveFormatError(f"bad TDIM{number} = {tdim!r}", url=url, hdu=hdu)
        dims = [int(d) for d in match.group(1).split(",")]
        if int(np.prod(dims)) != repeat:
            raise ArchiveFormatError(f"TDIM{number} = {tdim!r} does not match the repeat count {repeat}",
                                     url=url, hdu=hdu)
        if code == "A":
            dims = dims[1:]  # the first TDIM axis is the string length
        shape = tuple(reversed(dims))
        return () if shape == (1,) and code != "A" else shape
    if code == "A" or repeat == 1:
        return ()
    return (repeat,)


def parse_columns(header: Mapping[str, object], *, url: str | None = None, hdu: str | None = None
                  ) -> list[BinTableColumn]:
    """Column layouts of a binary table header, validated against ``NAXIS1``.

    Parameters
    ----------
    header
        The table's header (a :class:`~cellcoadd_dask.archives.fits.cards.Header` or any mapping).
    url, hdu
        Location, for error messages.

    Raises
    ------
    ArchiveFormatError
        If the header is not a binary table, a ``TFORMn`` is missing, malformed or of an
        unsupported type (``X``, ``C``, ``M``), or the column widths do not add up to ``NAXIS1``.
    """
    xtension = header.get("XTENSION")
    if not isinstance(xtension, str) or xtension.strip() != "BINTABLE":
        raise ArchiveFormatError(f"not a binary table (XTENSION = {xtension!r})", url=url, hdu=hdu)
    if header.get("NAXIS") != 2 or header.get("BITPIX") != 8:
        raise ArchiveFormatError("a binary table must have NAXIS = 2 and BITPIX = 8", url=url, hdu=hdu)
    naxis1 = _int_card(header, "NAXIS1", url, hdu)
    nfields = _int_card(header, "TFIELDS", url, hdu)
    if naxis1 < 0 or not 0 <= nfields <= _MAX_FIELDS:
        raise ArchiveFormatError(f"bad table geometry NAXIS1 = {naxis1}, TFIELDS = {nfields}",
                                 url=url, hdu=hdu)
    columns: list[BinTableColumn] = []
    offset = 0
    for n in range(1, nfields + 1):
        tform = header.get(f"TFORM{n}")
        match = _TFORM.match(tform) if isinstance(tform, str) else None
        if match is None:
            raise ArchiveFormatError(f"missing or malformed TFORM{n} = {tform!r}", url=url, hdu=hdu)
        repeat = int(match.group(1)) if match.group(1) else 1
        code = match.group(2)[0]
        if code not in _TYPES:
            raise ArchiveFormatError(f"unsupported column type TFORM{n} = {tform!r}", url=url, hdu=hdu)
        if code in ("P", "Q") and repeat > 1:
            raise ArchiveFormatError(f"TFORM{n} = {tform!r}: a descriptor column must have repeat 1",
                                     url=url, hdu=hdu)
        width = repeat * _TYPES[code][1]
        zero = header.get(f"TZERO{n}", 0)
        scale = header.get(f"TSCAL{n}", 1)
        for key, value in ((f"TZERO{n}", zero), (f"TSCAL{n}", scale)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ArchiveFormatError(f"{key} = {value!r} is not a number", url=url, hdu=hdu)
        name = header.get(f"TTYPE{n}")
        unit = header.get(f"TUNIT{n}")
        columns.append(BinTableColumn(
            name=str(name).strip() if name is not None else f"col{n}",
            code=code,
            repeat=repeat,
            offset=offset,
            width=width,
            shape=_shape(code, repeat, header.get(f"TDIM{n}"), n, url, hdu),
            zero=zero,  # type: ignore[arg-type]
            scale=scale,  # type: ignore[arg-type]
            unit=str(unit).strip() or None if unit is not None else None,
            element=match.group(2)[1] if code in ("P", "Q") else "",
        ))
        offset += width
    if offset != naxis1:
        raise ArchiveFormatError(f"column widths add up to {offset} bytes but NAXIS1 = {naxis1}",
                                 url=url, hdu=hdu)
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ArchiveFormatError(f"duplicate column names in {names}", url=url, hdu=hdu)
    return columns


def _decode(column: BinTableColumn, raw: np.ndarray, nrows: int) -> np.ndarray:
    """Decode one column from the ``(nrows, width)`` uint8 block of its bytes."""
    block = np.ascontiguousarray(raw)
    if column.code == "A":
        strings = block.view(f"S{column.repeat}") if column.repeat else np.zeros((nrows, 1), "S1")
        values = np.char.rstrip(strings.reshape((nrows, *column.shape)), b" ")
        return np.char.decode(values, "ascii", errors="replace").astype(str)
    if column.code == "L":
        return (block == ord("T")).reshape((nrows, *column.shape))
    dtype = np.dtype(_TYPES[column.code][0])
    values = block.view(dtype).reshape((nrows, *column.shape))
    if column.code in ("P", "Q"):
        return values.astype(np.int64)
    target = _OFFSET_TYPES.get((column.code, column.zero)) if column.scale == 1 else None
    if target is not None:
        native = values.astype(dtype.newbyteorder("="))
        if column.code == "B":
            return (native ^ np.uint8(0x80)).view(np.int8)
        # Adding TZERO = 2**(bits-1) to a two's-complement integer flips its sign bit.
        unsigned = native.view(native.dtype.str.replace("i", "u"))
        return unsigned ^ unsigned.dtype.type(1 << (8 * dtype.itemsize - 1))
    if column.zero != 0 or column.scale != 1:
        return values.astype(np.float64) * column.scale + column.zero
    return values.astype(dtype.newbyteorder("="))


def read_bintable(
    header: Mapping[str, object],
    data: bytes | memoryview,
    *,
    url: str | None = None,
    hdu: str | None = None,
    data_offset: int | None = None,
    nrows: int | None = None,
) -> dict[str, np.ndarray]:
    """Decode every column of a binary table (or of a run of its rows).

    Parameters
    ----------
    header
        The table's header.
    data
        The bytes of the data section, starting at its first byte; anything after
        the ``NAXIS1 * NAXIS2`` main table (heap, padding) is ignored.
    url, hdu
        Location, for error messages.
    data_offset
        File offset of ``data``, so that error byte ranges are absolute; when
        ``None`` they are relative to the start of ``data``.
    nrows
        Number of rows ``data`` holds, when it is a run of rows rather than the
        whole table (``NAXIS2``).

    Returns
    -------
    dict[str, numpy.ndarray]
        Column name -> array in column order, native byte order, first axis = rows.
        ``L`` -> ``bool``; ``B``/``I``/``J``/``K`` -> ``uint8``/``int16``/``int32``/``int64``,
        or ``int8``/``uint16``/``uint32``/``uint64`` with the standard ``TZERO``; other
        ``TZERO``/``TSCAL`` -> ``float64``; ``E``/``D`` -> ``float32``/``float64``; ``A`` ->
        ``str`` (trailing blanks removed); ``P``/``Q`` -> ``int64`` ``(count, offset)`` pairs.
        Vector columns have shape ``(nrows, *TDIM)``.  ``TNULL`` is ignored.

    Raises
    ------
    ArchiveFormatError
        If the header is inconsistent (see :func:`parse_columns`) or ``data`` is shorter
        than the main table.
    """
    columns = parse_columns(header, url=url, hdu=hdu)
    naxis1 = _int_card(header, "NAXIS1", url, hdu)
    if nrows is None:
        nrows = _int_card(header, "NAXIS2", url, hdu)
    size = naxis1 * nrows
    base = data_offset or 0
    if nrows < 0 or len(data) < size:
        raise ArchiveFormatError(
            f"table data is truncated: {len(data)} bytes for {nrows} rows of {naxis1} bytes",
            url=url, hdu=hdu, byte_range=(base, base + max(size, 0)),
        )
    rows = np.frombuffer(data, dtype=np.uint8, count=size).reshape(nrows, naxis1)
    return {c.name: _decode(c, rows[:, c.offset : c.offset + c.width], nrows) for c in columns}


def split_column_source(source: str, *, url: str | None = None) -> tuple[str, int]:
    """Split a column ``source`` into the source of its table and its 1-based column number.

    ``"fits:PROVENANCE/INPUTS[3]"`` gives ``("fits:PROVENANCE/INPUTS", 3)`` (grammar:
    :mod:`cellcoadd_dask.archives.names`).

    Raises
    ------
    ArchiveFormatError
        If ``source`` is not a FITS column source with ``n >= 1``.
    """
    parsed = parse_source(source, scheme="fits", column=True, url=url)
    assert parsed.column is not None
    return str(parsed.table), parsed.column


def select_column(table: Mapping[str, np.ndarray], number: int, *, url: str | None = None,
                  hdu: str | None = None) -> np.ndarray:
    """Column ``number`` (1-based, FITS order) of a table from :func:`read_bintable`.

    Raises
    ------
    ArchiveFormatError
        If the table has fewer columns.
    """
    if not 1 <= number <= len(table):
        raise ArchiveFormatError(f"column {number} requested from a table of {len(table)} columns",
                                 url=url, hdu=hdu)
    return list(table.values())[number - 1]
