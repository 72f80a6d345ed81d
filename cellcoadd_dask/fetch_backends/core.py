"""What every storage backend and the fetch layer share: object pins, typed errors, requests, results.

This module imports nothing of the package but :mod:`cellcoadd_dask.errors`, so the fetch
layer (:mod:`cellcoadd_dask.fetch`) and the backends below it both import it without a cycle.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ArchiveFormatError, FetchError, shown_url

if TYPE_CHECKING:
    import fsspec

__all__ = [
    "ByteRange",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "ObjectPin",
    "PartialResult",
    "Tail",
    "TailResult",
    "Transient",
    "changed_error",
    "check_pin",
    "describe",
    "filesystem",
    "local_path",
    "not_found",
    "parse_content_range",
    "protocol_of",
    "short_error",
]

ByteRange = tuple[int, int]
"""A half-open byte range ``(start, stop)`` from the start of a file."""

CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$")
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class ObjectChangedError(FetchError):
    """The object changed (ETag, size or modification time) since it was opened."""


class ObjectNotFoundError(FetchError, FileNotFoundError):
    """The object does not exist (no such file, HTTP 404, ``NoSuchKey``)."""


@dataclasses.dataclass(frozen=True)
class ObjectPin:
    """What identifies the version of an object that was opened.

    On object stores and HTTP the ETag identifies a version (with ``If-Match`` the server
    itself refuses another).  Local files have no ETag; their pin is what ``fstat`` gives for
    free: size, modification time and status-change time in nanoseconds, device and inode.

    What a local pin detects: a file replaced by another (a rename over it, as atomic writers
    do: new inode), a file rewritten in place whatever its new size and modification time
    (the kernel sets ``ctime`` on every write and on ``utime``, so restoring the old ``mtime``
    does not hide a rewrite), a truncation or extension (size).  What it does not detect: an
    in-place rewrite of the same size within one tick of the clock the kernel stamps files
    with (a few milliseconds on Linux, although the fields hold nanoseconds) after the file's
    previous change, or within the timestamp resolution of coarse file systems (2 s on FAT,
    1 s on ext3); a change made by someone who sets the system clock back or writes the raw
    block device; changes on network file systems whose clients cache attributes (NFS
    ``actimeo``) until the cache expires.  Contents are never hashed.

    Attributes
    ----------
    size
        Object size in bytes, if known.
    etag
        ETag (HTTP, object stores), if the server gave one.
    mtime_ns
        Modification time of a local file (nanoseconds).
    ctime_ns
        Status-change time of a local file (nanoseconds): set by the kernel on every write.
    inode
        ``(st_dev, st_ino)`` of a local file: another file renamed over it has another.
    """

    size: int | None = None
    etag: str | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    inode: tuple[int, int] | None = None

    def merge(self, other: ObjectPin) -> ObjectPin:
        """Return this pin completed with what ``other`` knows and this one does not."""
        return ObjectPin(
            self.size if self.size is not None else other.size,
            self.etag if self.etag is not None else other.etag,
            self.mtime_ns if self.mtime_ns is not None else other.mtime_ns,
            self.ctime_ns if self.ctime_ns is not None else other.ctime_ns,
            self.inode if self.inode is not None else other.inode,
        )


class Transient(Exception):
    """A failure worth retrying (timeout, dropped connection, 5xx, 429, SlowDown)."""


@dataclasses.dataclass
class PartialResult:
    """What one attempt at byte ranges fetched: bytes per range (``None`` where it failed) and the failures."""

    blobs: Sequence[bytes | memoryview | None]
    errors: Sequence[BaseException | None]
    pin: ObjectPin


@dataclasses.dataclass(frozen=True)
class Tail:
    """An open-ended read: bytes from ``offset`` to the end, or the last ``suffix`` bytes (``offset`` unused).

    ``Tail()`` is the whole object.  With ``limit`` (for reads from an offset), an object
    holding more than ``limit`` bytes from there is refused (:meth:`check_size`) before its
    bytes are read where the backend can tell (local ``fstat``, HTTP/S3 ``Content-Range``);
    ``cap`` names the cap in the error.
    """

    offset: int = 0
    suffix: int | None = None
    limit: int | None = None
    cap: str | None = None

    def header(self) -> str | None:
        """The HTTP ``Range`` header asking for these bytes (``None``: the whole object).

        With a :attr:`limit`, one byte more than the limit is asked for, so that an object
        too large is seen without reading it all.
        """
        if self.suffix is not None:
            return f"bytes=-{self.suffix}"
        if self.limit is not None:
            return f"bytes={self.offset}-{self.offset + self.limit}"
        return f"bytes={self.offset}-" if self.offset else None

    def check_size(self, url: str, size: int | None) -> None:
        """Refuse an object whose bytes from :meth:`start` on exceed :attr:`limit`.

        Raises
        ------
        LimitExceededError
            Naming :attr:`cap`.
        """
        if self.limit is None or size is None or size - self.start(size) <= self.limit:
            return
        from ..limits import LimitExceededError

        where = f"cellcoadd.limits.{self.cap} = {self.limit}" if self.cap else str(self.limit)
        raise LimitExceededError(
            f"the object holds {size - self.start(size)} bytes, more than the cap {where}",
            field="object size", cap=self.cap, url=url,
        )

    def start(self, size: int) -> int:
        """Where these bytes start in an object of ``size`` bytes."""
        return max(0, size - self.suffix) if self.suffix is not None else self.offset

    def __str__(self) -> str:
        if self.suffix is not None:
            return f"the last {self.suffix} bytes"
        return f"bytes [{self.offset}, end)" if self.offset else "the whole object"


@dataclasses.dataclass(frozen=True)
class TailResult:
    """What an open-ended read returned: the bytes, where they start, and the object's identity."""

    data: bytes
    start: int
    pin: ObjectPin


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, for messages."""
    text = str(exc) or ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def short_error(start: int, stop: int, got: int, url: str) -> ArchiveFormatError:
    """The error of a read that ends beyond the end of the object."""
    return ArchiveFormatError(
        f"file ends inside the byte range asked for ({got} of {stop - start} bytes): truncated",
        url=url,
        byte_range=(start, stop),
    )


def not_found(url: str, detail: str = "") -> ObjectNotFoundError:
    """The error of a missing object."""
    return ObjectNotFoundError(f"{shown_url(url)}: no such file{detail}.")


def check_pin(url: str, pin: ObjectPin | None, seen: ObjectPin) -> None:
    """Raise :class:`ObjectChangedError` if ``seen`` contradicts ``pin``."""
    if pin is None:
        return
    changed = []
    if pin.size is not None and seen.size is not None and pin.size != seen.size:
        changed.append(f"size {pin.size} -> {seen.size}")
    if pin.etag is not None and seen.etag is not None and pin.etag != seen.etag:
        changed.append("ETag")
    if pin.mtime_ns is not None and seen.mtime_ns is not None and pin.mtime_ns != seen.mtime_ns:
        changed.append("modification time")
    if pin.ctime_ns is not None and seen.ctime_ns is not None and pin.ctime_ns != seen.ctime_ns:
        changed.append("status-change time")
    if pin.inode is not None and seen.inode is not None and pin.inode != seen.inode:
        changed.append("inode")
    if changed:
        raise ObjectChangedError(f"{shown_url(url)}: the object changed since it was opened ({', '.join(changed)}).")


def changed_error(url: str) -> ObjectChangedError:
    """The error of a refused ``If-Match``."""
    return ObjectChangedError(f"{shown_url(url)}: the object changed since it was opened (ETag no longer matches).")


def parse_content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """``(first, last, total)`` of a ``Content-Range`` header (``None`` where absent or ``*``)."""
    if not header:
        return None, None, None
    m = CONTENT_RANGE.match(header)
    if m is None:
        return None, None, None
    first = int(m.group(1)) if m.group(1) is not None else None
    last = int(m.group(2)) if m.group(2) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return first, last, total


def local_path(url: str) -> str | None:
    """The local path of ``url``, or ``None`` for another protocol."""
    if url.startswith("file://"):
        return url[len("file://") :]
    if "://" not in url and not url.startswith("memory:"):
        return url
    return None


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem (cached per options by fsspec) and the path within it."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url, **dict(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise FetchError(f"{shown_url(url)}: cannot open a filesystem for this URL ({exc}).") from exc


def protocol_of(fs: Any) -> str:
    """The first protocol name of an fsspec filesystem."""
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
