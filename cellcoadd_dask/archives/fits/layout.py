"""The lsst-images FITS container: primary header, JSON tree HDU and INDEX HDU.

Opening takes two range reads (three when the primary header is longer than one
block): the primary header, then ``[JSONADDR, INDXADDR + INDXSIZE)`` which holds
both the JSON tree and the byte index of every HDU.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ArchiveFormatError, FetchError
from ...fetch import ObjectPin
from ...fetch_readers import Read, Reader, run_reader
from ...limits import LimitExceededError, check
from ..names import SCHEMA_NAME
from .cards import BLOCK, Header, header_size, parse_header
from .tables import read_bintable

__all__ = ["FORMAT_VERSION", "FitsContainer", "HduEntry", "container_reader", "read_container"]

FORMAT_VERSION = 1
MAX_PRIMARY_BYTES = BLOCK * 64
MAX_TAIL_BYTES = 1 << 31
_SCHEMA_URL = re.compile(r"https?://[^/]+(?:/[^/]+)*/schemas/(?P<name>[^/]+)-(?P<version>[^-/]+)")


@dataclass(frozen=True, slots=True)
class HduEntry:
    """One row of the INDEX HDU: where an HDU's header and data live.

    Attributes
    ----------
    extname, extver
        The HDU's name and version (``""`` for the primary).
    compressed
        Whether the HDU is a tile-compressed image (``ZIMAGE``).
    hdraddr, dataddr, datsize
        Byte offset of the header, of the data, and the padded data size.
    """

    extname: str
    extver: int
    xtension: str
    compressed: bool
    hdraddr: int
    dataddr: int
    datsize: int

    @property
    def label(self) -> str:
        """``EXTNAME`` or ``EXTNAME,EXTVER`` as used in ``source`` strings and messages."""
        return self.extname if self.extver == 1 else f"{self.extname},{self.extver}"


@dataclass(frozen=True)
class FitsContainer:
    """What opening a FITS archive yields: primary cards, the JSON tree and the HDU index."""

    url: str
    primary: Header
    tree: Mapping[str, Any]
    hdus: Mapping[tuple[str, int], HduEntry]
    file_size: int
    schema_version: str
    pin: ObjectPin | None = None

    def hdu(self, extname: str, extver: int = 1) -> HduEntry:
        """The INDEX entry of an HDU, or :class:`ArchiveFormatError` naming it."""
        try:
            return self.hdus[(extname, extver)]
        except KeyError:
            label = extname if extver == 1 else f"{extname},{extver}"
            raise ArchiveFormatError("the INDEX has no such HDU", url=self.url, hdu=label) from None


def _card_int(header: Header, key: str, url: str, *, minimum: int = 0) -> int:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchiveFormatError(f"primary card {key} is missing or not an integer ({value!r})", url=url, hdu="PRIMARY")
    if value < minimum:
        raise ArchiveFormatError(f"primary card {key} = {value} is out of range", url=url, hdu="PRIMARY")
    return value


def _primary_reader(url: str) -> Reader[tuple[Header, ObjectPin]]:
    buffer = b""
    pin: ObjectPin | None = None
    while True:
        start = len(buffer)
        try:
            (block,), pin = yield Read(url, [(start, start + BLOCK)], pin)
        except ArchiveFormatError:
            raise ArchiveFormatError(
                "file too short for a FITS primary header (truncated or not FITS)", url=url, hdu="PRIMARY"
            ) from None
        buffer += block
        if not buffer.startswith(b"SIMPLE  =                    T"):
            raise ArchiveFormatError("not a FITS file (no SIMPLE = T card)", url=url, hdu="PRIMARY", byte_range=(0, 80))
        if header_size(buffer) is not None:
            return parse_header(buffer, url=url, hdu="PRIMARY"), pin
        if len(buffer) >= MAX_PRIMARY_BYTES:
            raise ArchiveFormatError(
                "primary header has no END card", url=url, hdu="PRIMARY", byte_range=(0, len(buffer))
            )


def _check_primary(primary: Header, url: str) -> str:
    if "FMTVER" not in primary:
        raise ArchiveFormatError("not an lsst.images cell_coadd 1.0.0 file (no FMTVER card)", url=url, hdu="PRIMARY")
    fmtver = _card_int(primary, "FMTVER", url)
    if fmtver > FORMAT_VERSION:
        raise ArchiveFormatError(
            f"container format version {fmtver} is newer than this reader ({FORMAT_VERSION})", url=url, hdu="PRIMARY"
        )
    datamodl = primary.get("DATAMODL")
    if not isinstance(datamodl, str):
        raise ArchiveFormatError("not an lsst.images archive (no DATAMODL card)", url=url, hdu="PRIMARY")
    m = _SCHEMA_URL.fullmatch(datamodl)
    if m is None:
        raise ArchiveFormatError(f"malformed DATAMODL schema URL {datamodl!r}", url=url, hdu="PRIMARY")
    if m.group("name") != SCHEMA_NAME:
        raise ArchiveFormatError(f"file holds a {m.group('name')!r}, not a {SCHEMA_NAME!r}", url=url, hdu="PRIMARY")
    return m.group("version")


def _json_tree(buffer: bytes, url: str, base: int, size: int) -> Any:
    header = parse_header(buffer, 0, url=url, hdu="JSON")
    if header.get("XTENSION") != "BINTABLE" or header.get("EXTNAME") != "JSON":
        raise ArchiveFormatError(
            "JSONADDR does not point at the JSON binary table",
            url=url,
            hdu="JSON",
            byte_range=(base, base + header.size),
        )
    tform = header.get("TFORM1")
    naxis1, naxis2 = header.get("NAXIS1"), header.get("NAXIS2")
    m = re.fullmatch(r"1?([PQ])B(?:\(\d+\))?", str(tform).strip())
    if m is None or not isinstance(naxis1, int) or not isinstance(naxis2, int) or naxis2 < 1:
        raise ArchiveFormatError(f"JSON table has an unexpected layout (TFORM1={tform!r})", url=url, hdu="JSON")
    wide = m.group(1) == "Q"
    if naxis1 != (16 if wide else 8):
        raise ArchiveFormatError(f"JSON table NAXIS1 = {naxis1} does not fit TFORM1 {tform!r}", url=url, hdu="JSON")
    theap = header.get("THEAP", naxis1 * naxis2)
    if not isinstance(theap, int) or theap < naxis1 * naxis2:
        raise ArchiveFormatError(f"JSON table THEAP = {theap!r} is invalid", url=url, hdu="JSON")
    data = header.size
    if data + naxis1 > size:
        raise ArchiveFormatError(
            "JSON table descriptor lies outside the HDU",
            url=url,
            hdu="JSON",
            byte_range=(base + data, base + data + naxis1),
        )
    count, offset = (int(v) for v in np.frombuffer(buffer, ">i8" if wide else ">i4", 2, data))
    start = data + theap + offset
    if count < 0 or offset < 0 or start + count > size:
        raise ArchiveFormatError(
            f"JSON row (count={count}, offset={offset}) lies outside the HDU",
            url=url,
            hdu="JSON",
            byte_range=(base + start, base + start + max(count, 0)),
        )
    try:
        text = buffer[start : start + count].decode("utf-8")
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, over-long integers
        raise ArchiveFormatError(
            f"JSON tree does not parse: {exc}", url=url, hdu="JSON", byte_range=(base + start, base + start + count)
        ) from None


def _index(buffer: bytes, url: str, base: int, file_size: int, first_data: int) -> dict[tuple[str, int], HduEntry]:
    header = parse_header(buffer, 0, url=url, hdu="INDEX")
    if header.get("XTENSION") != "BINTABLE" or header.get("EXTNAME") != "INDEX":
        raise ArchiveFormatError(
            "INDXADDR does not point at the INDEX binary table",
            url=url,
            hdu="INDEX",
            byte_range=(base, base + header.size),
        )
    columns = read_bintable(header, buffer[header.size :], url=url, hdu="INDEX")
    needed = ("EXTNAME", "EXTVER", "XTENSION", "ZIMAGE", "HDRADDR", "DATADDR", "DATSIZE")
    for name in needed:
        if name not in columns:
            raise ArchiveFormatError(f"INDEX table has no {name} column", url=url, hdu="INDEX")
    entries: dict[tuple[str, int], HduEntry] = {}
    for row in range(len(columns["EXTNAME"])):
        name = str(columns["EXTNAME"][row]).strip()
        entry = HduEntry(
            extname=name,
            extver=int(columns["EXTVER"][row]),
            xtension=str(columns["XTENSION"][row]).strip(),
            compressed=bool(columns["ZIMAGE"][row]),
            hdraddr=int(columns["HDRADDR"][row]),
            dataddr=int(columns["DATADDR"][row]),
            datsize=int(columns["DATSIZE"][row]),
        )
        if not name:
            continue
        if not (
            first_data <= entry.hdraddr < entry.dataddr
            and entry.dataddr + entry.datsize <= file_size
            and entry.datsize >= 0
            and entry.dataddr - entry.hdraddr <= BLOCK * 1000
        ):
            raise ArchiveFormatError(
                f"INDEX row {row} addresses (header {entry.hdraddr}, data {entry.dataddr}, size {entry.datsize}) "
                f"lie outside the file ({file_size} bytes)",
                url=url,
                hdu="INDEX",
            )
        entries[(name, entry.extver)] = entry
    return entries


def _check_sizes(url: str, pin: ObjectPin, *, jaddr: int, jsize: int, iaddr: int, isize: int) -> None:
    """Refuse JSON/INDEX HDU sizes beyond the object (its size is known from the first read) or the caps."""
    size = pin.size
    if size is not None and jaddr >= size:
        raise LimitExceededError(
            f"primary card JSONADDR = {jaddr} lies beyond the end of the file ({size} bytes)",
            field="primary card JSONADDR", url=url, hdu="PRIMARY",
        )
    check(jsize, "tree_bytes", field="primary card JSONSIZE", url=url, hdu="PRIMARY",
          available=None if size is None else size - jaddr)
    check(isize, "index_bytes", field="primary card INDXSIZE", url=url, hdu="PRIMARY",
          available=None if size is None else size - iaddr)


def read_container(url: str, storage_options: Mapping[str, Any] | None = None) -> FitsContainer:
    """Read the primary header, the JSON tree and the INDEX of an lsst-images FITS archive.

    Runs :func:`container_reader` on this thread (:func:`~cellcoadd_dask.fetch_readers.run_readers`
    opens many files at once with it).

    The sizes the primary header states (``JSONSIZE``, ``INDXSIZE``) are checked against the
    file's size (known from the first read) and the caps ``cellcoadd.limits.tree_bytes`` and
    ``cellcoadd.limits.index_bytes`` (:mod:`cellcoadd_dask.limits`) before anything is fetched.

    Raises
    ------
    LimitExceededError
        When a size the primary header states exceeds the file or a cap (names the card).
    ArchiveFormatError
        When the file is not an lsst-images ``cell_coadd`` FITS archive, is truncated,
        or any address is inconsistent.
    """
    return run_reader(container_reader(url), storage_options)


def container_reader(url: str) -> Reader[FitsContainer]:
    """How :func:`read_container` reads a container, as a reader (:mod:`cellcoadd_dask.fetch_readers`)."""
    primary, pin = yield from _primary_reader(url)
    version = _check_primary(primary, url)
    jaddr = _card_int(primary, "JSONADDR", url, minimum=primary.size)
    jsize = _card_int(primary, "JSONSIZE", url, minimum=BLOCK)
    iaddr = _card_int(primary, "INDXADDR", url, minimum=BLOCK)
    isize = _card_int(primary, "INDXSIZE", url, minimum=BLOCK)
    if iaddr != jaddr + jsize:
        raise ArchiveFormatError(
            f"INDXADDR ({iaddr}) does not follow the JSON HDU ({jaddr} + {jsize})", url=url, hdu="PRIMARY"
        )
    _check_sizes(url, pin, jaddr=jaddr, jsize=jsize, iaddr=iaddr, isize=isize)
    if jsize + isize > MAX_TAIL_BYTES or jaddr % BLOCK or jsize % BLOCK or isize % BLOCK:
        raise ArchiveFormatError(
            f"JSON/INDEX addresses are not block-aligned or implausibly large "
            f"(JSONADDR={jaddr}, JSONSIZE={jsize}, INDXSIZE={isize})",
            url=url,
            hdu="PRIMARY",
        )
    file_size = iaddr + isize
    try:
        (tail,), _ = yield Read(url, [(jaddr, file_size)], pin)
    except ArchiveFormatError as exc:
        raise ArchiveFormatError(
            "the JSON and INDEX HDUs are not where the primary header says (truncated file or wrong addresses)",
            url=url,
            hdu="JSON",
            byte_range=exc.byte_range,
        ) from None
    except FetchError:
        raise
    tree = _json_tree(tail[:jsize], url, jaddr, jsize)
    hdus = _index(tail[jsize:], url, iaddr, file_size, primary.size)
    return FitsContainer(
        url=url, primary=primary, tree=tree, hdus=hdus, file_size=file_size, schema_version=version, pin=pin
    )
