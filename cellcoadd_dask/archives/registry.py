"""The archive formats: one registry that ``open_coadd``, the xarray engine and the CLI consult.

Each :class:`ArchiveFormat` names its reader and writer (imported when first used, so that
opening a FITS file never imports Zarr), the URL suffixes it claims and how to recognise it
from its first bytes.  :func:`format_of` picks the format of a URL to read,
:func:`format_for_destination` the format of a URL to write.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ArchiveFormatError, ValidationError, shown_url

if TYPE_CHECKING:
    from ..coadd import CellCoadd

__all__ = ["FORMATS", "ArchiveFormat", "format_for_destination", "format_named", "format_of", "suffix_format"]

SNIFF_BYTES = 80
"""How many leading bytes :func:`format_of` reads to recognise an archive without a known suffix."""


def _import(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


@dataclass(frozen=True)
class ArchiveFormat:
    """One archive format.

    Attributes
    ----------
    name
        Short name: ``"fits"``, ``"json"`` or ``"zarr"``.
    description
        What it is, for messages and help texts.
    suffixes
        Lower-case URL suffixes that select it (the query string is ignored).
    reader
        ``"module:function"`` of ``read(url, *, bbox, chunks, storage_options, **options)``.
    writer
        ``"module:function"`` of ``write(coadd, url, *, storage_options, overwrite, **options)``,
        or ``None`` for a read-only format.
    store
        Whether an archive is a tree of objects (a directory or a key prefix) rather than one object.
    magic
        Recognises the format from an object's first ``SNIFF_BYTES`` bytes, if it can.
    array_reader
        ``"module:function"`` of ``read(stored, source, shape, dtype) -> numpy array``: an array
        of an archive a coadd was read from, by its source string (``None``: the format
        references no arrays outside its tree).
    """

    name: str
    description: str
    suffixes: tuple[str, ...]
    reader: str
    writer: str | None = None
    store: bool = False
    magic: Callable[[bytes], bool] | None = None
    array_reader: str | None = None

    @property
    def stored_array(self) -> Callable[..., Any] | None:
        """The function ``array_reader`` names (imported now), or ``None``."""
        return None if self.array_reader is None else _import(self.array_reader)

    def claims(self, url: str) -> bool:
        """Whether ``url`` ends with one of ``suffixes``."""
        return _bare(url).endswith(self.suffixes)

    def read(self, url: str, **kwargs: Any) -> CellCoadd:
        """Open ``url`` lazily with this format's reader."""
        from ..starlink_sandbox import prestart

        prestart()  # the projection check's child process starts while the metadata is fetched
        return _import(self.reader)(url, **kwargs)

    def write(self, coadd: CellCoadd, url: str, **kwargs: Any) -> str:
        """Write ``coadd`` to ``url`` with this format's writer; returns the URL written."""
        if self.writer is None:
            raise ValidationError(f"{self.description} archives cannot be written ({shown_url(url)}).")
        return _import(self.writer)(coadd, url, **kwargs)


def _fits_magic(head: bytes) -> bool:
    return head.startswith(b"SIMPLE  =")


def _json_magic(head: bytes) -> bool:
    return head.lstrip()[:1] == b"{" or head[:2] == b"\x1f\x8b"


FORMATS: tuple[ArchiveFormat, ...] = (
    ArchiveFormat(
        "fits",
        "FITS",
        (".fits", ".fit", ".fits.fz"),
        reader="cellcoadd_dask.archives.fits.reader:read_fits",
        writer="cellcoadd_dask.archives.fits.writer:write_fits",
        magic=_fits_magic,
        array_reader="cellcoadd_dask.archives.fits.reader:stored_array",
    ),
    ArchiveFormat(
        "json",
        "JSON",
        (".json", ".json.gz"),
        reader="cellcoadd_dask.archives.json.reader:read_json",
        writer="cellcoadd_dask.archives.json.writer:write_json",
        magic=_json_magic,
    ),
    ArchiveFormat(
        "zarr",
        "Zarr",
        (".zarr",),
        reader="cellcoadd_dask.archives.zarr.reader:read_zarr",
        writer="cellcoadd_dask.archives.zarr.writer:write_zarr",
        store=True,
        array_reader="cellcoadd_dask.archives.zarr.reader:stored_array",
    ),
)
"""Every supported format, in the order they are tried."""


def _bare(url: str) -> str:
    """``url`` in lower case without query, fragment or trailing slash."""
    return url.split("?", 1)[0].split("#", 1)[0].lower().rstrip("/")


def format_named(name: str) -> ArchiveFormat:
    """The format called ``name``.

    Raises
    ------
    ValidationError
        If there is no such format.
    """
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ValidationError(f"unknown archive format {name!r}; choose one of {[f.name for f in FORMATS]}")


def suffix_format(url: str) -> ArchiveFormat | None:
    """The format whose suffix ``url`` ends with, or ``None``."""
    for fmt in FORMATS:
        if fmt.claims(url):
            return fmt
    return None


def format_for_destination(url: str) -> ArchiveFormat:
    """The writable format selected by the suffix of a destination URL.

    Raises
    ------
    ValidationError
        If the suffix selects no format that can be written.
    """
    fmt = suffix_format(url)
    if fmt is None or fmt.writer is None:
        names = [f"{f.description} ({f.suffixes[0]})" for f in FORMATS if f.writer is not None]
        writable = " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
        raise ValidationError(f"{shown_url(url)}: destinations are {writable}.")
    return fmt


def _is_local_store(url: str) -> bool:
    path = url[len("file://") :] if url.startswith("file://") else url
    return "://" not in path and os.path.isdir(path)


def format_of(url: str, storage_options: Mapping[str, Any] | None = None) -> ArchiveFormat:
    """The format of the archive at ``url``: from its suffix, else from its first bytes.

    Raises
    ------
    ArchiveFormatError
        If ``url`` is a local directory that is not a Zarr store, or its first bytes match no format.
    """
    fmt = suffix_format(url)
    if fmt is not None:
        return fmt
    if _is_local_store(url):
        path = url[len("file://") :] if url.startswith("file://") else url
        if os.path.isfile(os.path.join(path, "zarr.json")):
            return format_named("zarr")
        raise ArchiveFormatError("a directory that is not a Zarr store (no zarr.json)", url=url)
    from ..fetch import fetch_ranges

    try:
        (head,) = fetch_ranges(url, [(0, SNIFF_BYTES)], storage_options=storage_options)
    except ArchiveFormatError:
        raise ArchiveFormatError(f"not a coadd archive (shorter than {SNIFF_BYTES} bytes)", url=url) from None
    for fmt in FORMATS:
        if fmt.magic is not None and fmt.magic(head):
            return fmt
    raise ArchiveFormatError(
        "not a FITS or JSON coadd archive (unrecognised first bytes)", url=url, byte_range=(0, SNIFF_BYTES)
    )
