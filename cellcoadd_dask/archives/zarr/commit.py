"""Committing a Zarr archive: a reader sees the previous archive or the complete new one, never a part.

Local destinations
    The archive is written into a hidden temporary sibling directory
    (``.<name>.<random>.partial``), then renamed into place; an existing archive is renamed
    away first (``.<name>.<random>.old``) and deleted after.  Arrays are at the top level of
    the group.

Object stores (any fsspec URL: ``s3://``, ``gs://``, ``memory://`` ...)
    There is no rename, so the archive is versioned inside its own prefix.  Every object of a
    write goes under a fresh *version prefix* ``<url>/<version>/`` (:func:`new_version`): the
    arrays, the ``lsst_json`` tree array and a version group.  The tree's ``zarr:`` sources, the
    ``lsst.json`` root attribute and OME ``datasets.path`` name the arrays there
    (``zarr:/<version>/image`` ...).  Only when every object of the version is stored is the
    root ``zarr.json`` written: one PUT, holding the root attributes and (layout 2) the
    consolidated metadata of every array of the version.  That PUT is the commit: until it
    completes, readers see the previous root document, which names only the previous
    version's arrays (still there); after it, the new one.  Then every other key under the
    archive's prefix is deleted: the previous version, and versions left by writers that
    failed or were killed.

    A write that fails before the commit removes its version prefix (best effort; a killed
    writer's is removed by the next successful write) and leaves the previous archive as it
    was.  If the commit PUT itself fails, whether it landed cannot be known, so the new
    version is kept: the root document names either the previous version or the new one, both
    complete.  Deleting after the commit fails only with a warning: the new archive is
    complete, and the next write removes what is left.  One writer at a time per archive;
    a reader that opened the previous archive before the commit loses its arrays when they
    are deleted.

Storage failures are :class:`~cellcoadd_dask.errors.WriteError` naming the destination
(:func:`~cellcoadd_dask.atomic.write_error`); a missing local directory is a
:class:`~cellcoadd_dask.errors.DestinationNotFoundError`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Mapping
from typing import Any, Protocol

from ...atomic import ArchiveExistsError, is_storage_error, missing_directory, write_error
from ...errors import shown_url
from ...fetch import filesystem, redact

__all__ = ["ROOT_DOCUMENT", "Fillable", "new_version", "root_document", "write_local", "write_remote"]

ROOT_DOCUMENT = "zarr.json"
"""The root group's metadata document: the commit point of an object-store write."""


class Fillable(Protocol):
    """What a commit needs of an archive being written."""

    prefix: str

    @property
    def layout_number(self) -> int:
        """The layout written (consolidated metadata from layout 2)."""

    def fill(self, store: Any, *, root: bool = True) -> None:
        """Write every array and the tree into ``store`` (and the root attributes if ``root``)."""

    def root_attributes(self) -> dict[str, Any]:
        """The root group's attributes."""


def new_version() -> str:
    """A fresh version prefix: ``v<UTC time>-<random>`` (sorts by time, never reused)."""
    return f"v{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


def write_local(archive: Fillable, path: str, overwrite: bool) -> None:
    """Write ``archive`` into a temporary sibling of ``path``, then rename it into place."""
    import zarr

    directory, name = os.path.split(path.rstrip(os.sep))
    if os.path.exists(path) and not overwrite:
        raise ArchiveExistsError(f"Archive {path!r} already exists.")
    if not os.path.isdir(directory):
        raise missing_directory(directory, path)
    spool = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.partial")
    old = None
    try:
        archive.fill(zarr.storage.LocalStore(spool))
        if os.path.lexists(path):
            old = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.old")
            os.rename(path, old)
        os.rename(spool, path)
    except BaseException as exc:
        shutil.rmtree(spool, ignore_errors=True)
        if old is not None and not os.path.lexists(path):
            os.rename(old, path)
            old = None
        if is_storage_error(exc):
            raise write_error(path, exc, what="the destination is unchanged") from exc
        raise
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)


def root_document(store: Any, version: str, attributes: Mapping[str, Any], *, consolidated: bool) -> bytes:
    """The root ``zarr.json`` of an archive whose arrays are in the group ``version`` of ``store``'s parent.

    With ``consolidated``, the metadata of the version group (consolidated into ``store``
    already) is nested under ``version``, so that the root lists every array as
    ``<version>/<path>``.
    """
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import ConsolidatedMetadata, GroupMetadata

    inner = None
    if consolidated:
        group = zarr.open_consolidated(store, zarr_format=3)
        inner = ConsolidatedMetadata(metadata={version: group.metadata})
    metadata = GroupMetadata(attributes=dict(attributes), consolidated_metadata=inner)
    document: bytes = metadata.to_buffer_dict(default_buffer_prototype())[ROOT_DOCUMENT].to_bytes()
    return document


def write_remote(archive: Fillable, url: str, storage_options: Mapping[str, Any] | None, overwrite: bool) -> None:
    """Write ``archive`` under a new version prefix of ``url``, commit its root document, delete the rest."""
    options = dict(storage_options or {})
    version = archive.prefix
    committing = False
    fs: Any = None
    root = ""
    try:
        fs, root = filesystem(url, options)
        root = root.rstrip("/")
        fs.invalidate_cache(root)  # a listing cached before another process wrote here must not hide an archive
        if not overwrite and fs.exists(f"{root}/{ROOT_DOCUMENT}"):
            raise ArchiveExistsError(f"Archive {shown_url(url)!r} already exists.")
        store = _version_store(f"{url}/{version}", options)
        archive.fill(store, root=False)
        document = root_document(store, version, archive.root_attributes(), consolidated=archive.layout_number >= 2)
        committing = True
        fs.pipe_file(f"{root}/{ROOT_DOCUMENT}", document)
    except BaseException as exc:
        if not committing and fs is not None:
            _remove(fs, [f"{root}/{version}"])
        if is_storage_error(exc):
            what = ("the root document names the previous archive or the new one" if committing
                    else "the previous archive, if any, is unchanged")
            raise write_error(url, exc, options, what=what) from None
        raise
    try:
        fs.invalidate_cache()
        keep = (ROOT_DOCUMENT, version)
        stale = [p for p in fs.ls(root, detail=False) if p.rstrip("/").rsplit("/", 1)[-1] not in keep]
        if stale:
            fs.rm(stale, recursive=True)
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        warnings.warn(redact(f"{shown_url(url)}: the new archive is complete, but objects of a previous version "
                             f"could not be deleted ({type(exc).__name__}: {exc}); the next write removes them.",
                             options), stacklevel=4)


def _version_store(url: str, options: Mapping[str, Any]) -> Any:
    """A zarr store over the package's own (synchronous, cached) filesystem of ``url``.

    zarr drives it through fsspec's ``AsyncFileSystemWrapper``, so no second network session is
    opened on zarr's event loop (one left open there is collected later with a
    ``ResourceWarning``); the filesystem's own session is closed by fsspec with it.
    """
    import zarr
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    fs, path = filesystem(url, options)
    return zarr.storage.FsspecStore(fs=AsyncFileSystemWrapper(fs, asynchronous=True), path=path, read_only=False)


def _remove(fs: Any, paths: list[str]) -> None:
    """Delete ``paths`` (recursively), ignoring failures (best effort)."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache()
        fs.rm(paths, recursive=True)
