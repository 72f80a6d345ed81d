"""Local files: ``os.pread`` on one descriptor, ``fstat`` checked before and after every read."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from ..errors import ArchiveFormatError, FetchError, shown_url
from .core import ByteRange, ObjectPin, PartialResult, Tail, TailResult, check_pin, not_found, short_error

__all__ = ["NotAFileError", "OutsideStoreError", "check_contained", "fetch_local", "read_local_tail"]


class NotAFileError(FetchError, IsADirectoryError):
    """A local path names a directory (or a device, a FIFO...) where a file was expected."""


class OutsideStoreError(ArchiveFormatError, PermissionError):
    """A key of a local store resolves, through a symbolic link, to a file outside the store."""

_BUFFER_BYTES = 1024 * 1024
"""Ranges at least this long are read into numpy buffers when the caller takes buffers."""


def _read(fd: int, start: int, stop: int, url: str, buffer: bool) -> bytes | memoryview:
    """Bytes ``[start, stop)`` of an open file (all of them, or a truncation error).

    With ``buffer``, a long range is read into a numpy buffer (allocated in huge pages where
    the system offers them: several times fewer page faults than a ``bytes`` object) and
    returned as a read-only memoryview.
    """
    n = stop - start
    if buffer and n >= _BUFFER_BYTES and hasattr(os, "preadv"):
        import numpy as np

        array = np.empty(n, dtype=np.uint8)
        view = memoryview(array)
        got = 0
        while got < n:
            count = os.preadv(fd, [view[got:]], start + got)
            if not count:
                break
            got += count
        if got < n:
            raise short_error(start, stop, got, url)
        return view.toreadonly()
    data = os.pread(fd, n, start) if n > 0 else b""
    while len(data) < n:
        more = os.pread(fd, n - len(data), start + len(data))
        if not more:
            break
        data += more
    if len(data) < n:
        raise short_error(start, stop, len(data), url)
    return data


def _open(path: str, url: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise not_found(url) from exc
    except IsADirectoryError as exc:
        raise NotAFileError(f"{shown_url(url)}: is a directory, not a file.") from exc
    except PermissionError as exc:
        raise FetchError(f"{shown_url(url)}: permission denied.") from exc
    except OSError as exc:
        raise FetchError(f"{shown_url(url)}: cannot open ({exc.strerror or exc}).") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotAFileError(f"{shown_url(url)}: is a directory or a special file, not a regular file.")
    return fd


def _pin(fd: int) -> ObjectPin:
    """Everything ``fstat`` says of the file's identity (see :class:`ObjectPin` for what it detects)."""
    st = os.fstat(fd)
    return ObjectPin(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
                     inode=(st.st_dev, st.st_ino))


def check_contained(root: str, path: str, url: str, read: ObjectPin | None = None) -> None:
    """Refuse ``path`` unless, symbolic links resolved, it lies inside the directory ``root``.

    Stores (Zarr directories) are read key by key; a key whose file, or one of whose
    directories, is a link pointing out of the store would otherwise be read as if it were
    the store's.  Links that stay inside the store are followed.

    Called before a read (nothing outside is opened) and again after it with the pin of what
    was read (``read``): the file the path resolves to *now* must be the one that was read
    (same device and inode), so a link swapped between the first check and the read is caught.

    Parameters
    ----------
    root
        The store's directory.
    path
        The local path of the key.
    url
        Named in the error.
    read
        The pin of the file a read returned (its ``inode`` is compared), if the read happened.

    Raises
    ------
    OutsideStoreError
        Naming ``url``.
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise OutsideStoreError(
            f"{shown_url(url)}: resolves (through a symbolic link) to a file outside the store; refused."
        )
    if read is not None and read.inode is not None:
        try:
            st = os.stat(real)
        except OSError:
            found = None
        else:
            found = (st.st_dev, st.st_ino)
        if found != read.inode:
            raise OutsideStoreError(
                f"{shown_url(url)}: the file read is not the one the path resolves to inside the store "
                "(a symbolic link changed during the read); refused."
            )


def fetch_local(
    path: str, url: str, ranges: Sequence[ByteRange], pin: ObjectPin | None, buffers: bool = False
) -> PartialResult:
    """Byte ranges of a local file (see :func:`cellcoadd_dask.fetch_backends.fetch_with_backend`)."""
    fd = _open(path, url)
    try:
        seen = _pin(fd)
        check_pin(url, pin, seen)
        blobs: list[bytes | memoryview | None] = [_read(fd, start, stop, url, buffers) for start, stop in ranges]
        check_pin(url, seen, _pin(fd))
    finally:
        os.close(fd)
    return PartialResult(blobs, [None] * len(blobs), seen)


def read_local_tail(path: str, url: str, tail: Tail, pin: ObjectPin | None) -> TailResult:
    """An open-ended read of a local file: ``fstat`` for the size, then ``pread``."""
    fd = _open(path, url)
    try:
        seen = _pin(fd)
        check_pin(url, pin, seen)
        size = seen.size or 0
        tail.check_size(url, size)
        start = tail.start(size)
        if start > size:
            raise short_error(start, start + 1, 0, url)
        data = _read(fd, start, size, url, False)
        check_pin(url, seen, _pin(fd))
    finally:
        os.close(fd)
    return TailResult(bytes(data), start, seen)
