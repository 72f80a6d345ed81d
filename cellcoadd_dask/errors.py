"""The package's one error hierarchy.

Every error raised on purpose derives from :class:`CellCoaddError`.  Built-in
exception types are used as second bases so that code written against
``lsst.images`` (which raises ``IndexError``, ``ValueError`` ...) keeps working.
"""

from __future__ import annotations

__all__ = [
    "ArchiveFormatError",
    "BoundsError",
    "CellCoaddError",
    "DatasetNotFoundError",
    "DestinationNotFoundError",
    "FetchError",
    "MissingDependencyError",
    "ValidationError",
    "WriteError",
]


def shown_url(url: object) -> str:
    """``url`` as it may appear in messages: no password, no query string (presigned URLs sign there)."""
    import re

    text = str(url)
    text = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", text)
    if "?" in text:
        text = text.split("?", 1)[0] + "?***"
    return text


class CellCoaddError(Exception):
    """Base class of every error raised on purpose by ``cellcoadd_dask``."""


class ArchiveFormatError(CellCoaddError, ValueError):
    """A file is corrupt, truncated, or uses a feature this reader does not support.

    Parameters
    ----------
    message
        What is wrong.
    url
        The file at fault.
    hdu
        The HDU (``EXTNAME[,EXTVER]``) or JSON path at fault, if known.
    byte_range
        The ``(start, stop)`` byte range at fault, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        hdu: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> None:
        self.url = url
        self.hdu = hdu
        self.byte_range = byte_range
        where = []
        if url is not None:
            where.append(shown_url(url))
        if hdu is not None:
            where.append(f"HDU {hdu}")
        if byte_range is not None:
            where.append(f"bytes [{byte_range[0]}, {byte_range[1]})")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class FetchError(CellCoaddError, OSError):
    """Bytes could not be fetched from storage (missing file, short read, server fault)."""


class BoundsError(CellCoaddError, IndexError):
    """A box, pixel or cell lies outside the coadd (or its cell bounds)."""


class ValidationError(CellCoaddError, ValueError):
    """Constructor arguments are inconsistent with each other."""


class WriteError(CellCoaddError, OSError):
    """An archive could not be written (read-only or full storage, file-size limit, storage unreachable).

    The message names the destination; ``errno`` is that of the operating-system error, when
    there was one (``ENOSPC``, ``EFBIG``, ``EROFS``, ``EACCES`` ...).  Nothing is left at the
    destination: it holds the previous archive, or nothing if there was none.
    """


class DestinationNotFoundError(WriteError, FileNotFoundError):
    """The directory an archive is to be written into does not exist."""


class DatasetNotFoundError(CellCoaddError, LookupError):
    """A butler has no dataset of that type and data ID in the collections searched."""


class MissingDependencyError(CellCoaddError, ImportError):
    """An optional package this operation needs is not installed (the message names it)."""
