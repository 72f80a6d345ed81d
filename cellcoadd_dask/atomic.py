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
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

from .errors import CellCoaddError, FetchError, shown_url
from .fetch import filesystem, normalize_url, redact

__all__ = ["ArchiveExistsError", "atomic_output", "is_local"]


class ArchiveExistsError(CellCoaddError, FileExistsError):
    """The destination exists and overwriting was not allowed."""


def is_local(url: str) -> bool:
    """Whether ``url`` (normalized) names a local file."""
    return "://" not in url or url.startswith("file://")


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
    FetchError
        If the upload to a remote destination fails (the destination is then unchanged).
    """
    url = normalize_url(url)
    if is_local(url):
        path = os.path.abspath(_local_path(url))
        directory, name = os.path.split(path)
        if not overwrite and os.path.exists(path):
            raise ArchiveExistsError(f"File {path!r} already exists.")
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"Directory {directory!r} of {path!r} does not exist.")
        fd, spool = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
        try:
            with os.fdopen(fd, "w+b") as stream:
                yield stream
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(spool, 0o666 & ~_umask())
            os.replace(spool, path)
            _fsync_directory(directory)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool)
            raise
        return
    fs, path = filesystem(url, storage_options)
    if not overwrite and fs.exists(path):
        raise ArchiveExistsError(f"Object {url!r} already exists.")
    fd, spool = tempfile.mkstemp(prefix="cellcoadd-", suffix=".partial")
    try:
        with os.fdopen(fd, "w+b") as stream:
            yield stream
            stream.flush()
        try:
            fs.put_file(spool, path)
        except OSError as exc:
            raise FetchError(redact(
                f"{shown_url(url)}: upload failed ({type(exc).__name__}: {exc}); the destination is unchanged.",
                storage_options,
            )) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
