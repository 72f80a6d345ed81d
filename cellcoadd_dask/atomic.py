"""Atomic outputs: a file appears at its destination only once it is complete.

Archives are written to a local, seekable spool file first:

- local destinations: a hidden temporary sibling in the destination directory, flushed,
  ``fsync``-ed and renamed over the destination (``os.replace`` is atomic on POSIX);
- fsspec destinations (``s3://``, ``gs://``, ``memory://`` ...): a temporary file in the
  system temporary directory, uploaded with one ``put_file`` call once complete.  Object
  stores publish an object only when its single PUT or its multipart upload completes,
  so readers see the previous version or the new one, never a part.

A failure (or a kill) before the rename or the completed upload leaves the destination as it
was; the spool file is removed on failure (a killed process may leave a hidden
``.<name>.<random>.partial`` sibling behind, which no reader mistakes for the archive).

Storage failures are typed: a missing destination directory is a
:class:`~cellcoadd_dask.errors.DestinationNotFoundError` (also a ``FileNotFoundError``); a
read-only directory, a full disk, the file-size limit, or an object store that refuses or resets
the upload is a :class:`~cellcoadd_dask.errors.WriteError` naming the destination, with the
operating system's ``errno`` when there is one (:func:`write_error`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

from .errors import CellCoaddError, DestinationNotFoundError, WriteError, shown_url
from .fetch import filesystem, normalize_url, redact

__all__ = ["ArchiveExistsError", "atomic_output", "is_local", "is_storage_error", "missing_directory", "write_error"]

_STORAGE_MODULES = frozenset({"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "urllib3", "requests"})


class ArchiveExistsError(CellCoaddError, FileExistsError):
    """The destination exists and overwriting was not allowed."""


def is_local(url: str) -> bool:
    """Whether ``url`` (normalized) names a local file."""
    return "://" not in url or url.startswith("file://")


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the storage being written to, not of the package or its input.

    Operating-system errors (``OSError``, timeouts) and the exceptions of the object-store
    clients (botocore's ``EndpointConnectionError``, aiohttp's connection errors ...), but never
    a :class:`~cellcoadd_dask.errors.CellCoaddError` (those are typed already).
    """
    if isinstance(exc, CellCoaddError) or not isinstance(exc, Exception):
        return False
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    return any(kind.__module__.split(".", 1)[0] in _STORAGE_MODULES for kind in type(exc).__mro__)


def write_error(
    url: str,
    exc: BaseException,
    storage_options: Mapping[str, Any] | None = None,
    *,
    what: str = "the destination is unchanged",
) -> WriteError:
    """A :class:`~cellcoadd_dask.errors.WriteError` naming ``url`` (shown without secrets) for ``exc``.

    Parameters
    ----------
    url
        The destination.
    exc
        The storage failure (its ``errno``, if any, is kept).
    storage_options
        Options whose secrets are removed from the message.
    what
        What became of the destination (ends the message).
    """
    reason = getattr(exc, "strerror", None) if isinstance(exc, OSError) and exc.strerror else str(exc)
    error = WriteError(redact(f"{shown_url(url)}: cannot write ({type(exc).__name__}: {reason}); {what}.",
                              storage_options))
    if isinstance(exc, OSError) and exc.errno is not None:
        error.errno = exc.errno
    return error


def missing_directory(directory: str, path: str) -> DestinationNotFoundError:
    """The error of a destination ``path`` whose ``directory`` does not exist."""
    return DestinationNotFoundError(f"{path}: cannot write: directory {directory!r} does not exist.")


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def _fsync_directory(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(
    url: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Iterator[IO[bytes]]:
    """Yield a seekable binary file that replaces ``url`` atomically when the block succeeds.

    Parameters
    ----------
    url
        Local path or fsspec URL of the destination.
    storage_options
        Passed to fsspec for remote destinations.
    overwrite
        Whether an existing destination may be replaced.

    Raises
    ------
    ArchiveExistsError
        If the destination exists and ``overwrite`` is false.
    DestinationNotFoundError
        If the directory of a local destination does not exist.
    WriteError
        If the storage fails: read-only, full, file-size limit, or an upload refused or reset
        (the destination is then unchanged, and no temporary file is left).
    """
    url = normalize_url(url)
    if is_local(url):
        path = os.path.abspath(_local_path(url))
        directory, name = os.path.split(path)
        if not overwrite and os.path.exists(path):
            raise ArchiveExistsError(f"File {path!r} already exists.")
        if not os.path.isdir(directory):
            raise missing_directory(directory, path)
        try:
            fd, spool = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
        except OSError as exc:
            raise write_error(path, exc) from exc
        try:
            with os.fdopen(fd, "w+b") as stream:
                yield stream
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(spool, 0o666 & ~_umask())
            os.replace(spool, path)
            _fsync_directory(directory)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(spool)
            if is_storage_error(exc):
                raise write_error(path, exc) from exc
            raise
        return
    fs, path = filesystem(url, storage_options)
    try:
        exists = not overwrite and fs.exists(path)
    except Exception as exc:
        if is_storage_error(exc):
            raise write_error(url, exc, storage_options) from None
        raise
    if exists:
        raise ArchiveExistsError(f"Object {shown_url(url)!r} already exists.")
    fd, spool = tempfile.mkstemp(prefix="cellcoadd-", suffix=".partial")
    try:
        with os.fdopen(fd, "w+b") as stream:
            yield stream
            stream.flush()
        fs.put_file(spool, path)
    except Exception as exc:
        if is_storage_error(exc):
            raise write_error(url, exc, storage_options) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
