"""A read-only Zarr store whose every read goes through the package's fetch layer.

:class:`FetchStore` maps the key ``k`` of a Zarr archive at ``url`` to the object
``<url>/k`` and reads it with :func:`~cellcoadd_dask.fetch.fetch_object` (whole objects),
:func:`~cellcoadd_dask.fetch.fetch_head` (byte ranges) or
:func:`~cellcoadd_dask.fetch.fetch_suffix` (the last bytes: a shard index).  So Zarr reads are
retried on transient failures, counted by :func:`~cellcoadd_dask.fetch_stats`, and fail with
typed errors naming the object (never a secret of the storage options), exactly like the
reads of FITS archives.

Every object is pinned on its first read (size, and ETag or modification time): a later read
of the same key from a replaced object raises :class:`~cellcoadd_dask.ObjectChangedError`
(``If-Match`` on HTTP and S3), and an object deleted after it was read is an error too, never
a chunk silently read as the fill value.

Supported URLs: local paths and ``file://``, ``memory://``, ``http(s)://`` and ``s3://`` (any
other fsspec protocol through ``cat_file``).  The query string of an HTTP URL is kept on
every object URL, which suits a query valid for every object under a prefix (a container SAS
token, say).  A presigned S3 URL signs one object only, so a Zarr archive cannot be read
through presigned URLs: read it through its ``s3://`` URL with credentials in the storage
options (the fetch layer then presigns each object itself).

Hostile stores: every ``zarr.json`` is refused unread when it is larger than
``cellcoadd.limits.metadata_bytes`` (:mod:`cellcoadd_dask.limits`), any other object read whole
(an unsharded chunk) when larger than ``cellcoadd.limits.chunk_bytes`` plus
:data:`~cellcoadd_dask.limits.CHUNK_OVERHEAD`, and in a local store a key
whose file or directory is a symbolic link resolving outside the store is refused
(:class:`~cellcoadd_dask.fetch_backends.local.OutsideStoreError`); links inside it are followed.

Listing (``list``, ``list_prefix``, ``list_dir``) goes through fsspec (``find`` / ``ls``; on
HTTP, the server's index pages) and is not counted by ``fetch_stats``; opening an archive
with a known Zarr format needs no listing.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from zarr.abc.store import OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest

from ...errors import CellCoaddError, FetchError, ValidationError, shown_url
from ...fetch import (
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectPin,
    fetch_head,
    fetch_object,
    fetch_suffix,
    filesystem,
    normalize_url,
    redact,
)
from ...fetch_backends.core import local_path
from ...fetch_backends.local import check_contained
from ...limits import CHUNK_OVERHEAD, limit

if TYPE_CHECKING:
    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import Buffer, BufferPrototype

__all__ = ["METADATA_KEY", "FetchStore"]

METADATA_KEY = "zarr.json"
"""Name of the metadata document of every Zarr v3 node (its size is capped: ``cellcoadd.limits.metadata_bytes``)."""


class FetchStore(Store):
    """A read-only ``zarr.abc.store.Store`` over the fetch layer.

    Parameters
    ----------
    url
        The archive (group) root: local path or fsspec URL.
    storage_options
        Passed to fsspec (never shown in messages or ``repr``).
    read_only
        Must be true: the store cannot write.

    Raises
    ------
    ValidationError
        If ``read_only`` is false.
    """

    def __init__(self, url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None, *,
                 read_only: bool = True) -> None:
        if not read_only:
            raise ValidationError("FetchStore is read-only: write through zarr's LocalStore or FsspecStore.")
        super().__init__(read_only=True)
        root = normalize_url(url)
        base, sep, query = root.partition("?") if root.startswith(("http://", "https://")) else (root, "", "")
        self.url = base.rstrip("/") + sep + query
        self.storage_options = dict(storage_options or {})
        self._base = base.rstrip("/")
        self._query = sep + query
        self._pins: dict[str, ObjectPin] = {}
        self._lock = threading.Lock()
        self._local = local_path(self._base) is not None and not self._query

    # ------------------------------------------------------------------ identity

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FetchStore) and other.url == self.url
                and other.storage_options == self.storage_options)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.url))

    def __repr__(self) -> str:
        return f"FetchStore({shown_url(self.url)!r})"

    def __str__(self) -> str:
        return shown_url(self.url)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        state["_is_open"] = False
        with self._lock:
            state["_pins"] = dict(self._pins)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def with_read_only(self, read_only: bool = False) -> FetchStore:
        """A store of the same archive (sharing what it pinned so far); only ``read_only=True`` is possible."""
        store = FetchStore(self.url, self.storage_options, read_only=read_only)
        with self._lock:
            store._pins = dict(self._pins)
        return store

    @property
    def supports_writes(self) -> bool:
        """``False``."""
        return False

    @property
    def supports_deletes(self) -> bool:
        """``False``."""
        return False

    @property
    def supports_listing(self) -> bool:
        """``True`` (through fsspec) unless the URL carries a query string."""
        return not self._query

    def object_url(self, key: str) -> str:
        """The URL of the object holding ``key`` (the query string of an HTTP root kept)."""
        if self._query or "://" in self._base or self._base.startswith("memory:"):
            return f"{self._base}/{key}{self._query}"
        return os.path.join(self._base, key)

    # ------------------------------------------------------------------ reads

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        """The bytes of ``key`` (``None`` if there is no such object), one request through the fetch layer."""
        await self._ensure_open()
        data = await asyncio.to_thread(self._read, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        """Several reads at once (each one request)."""
        return list(await asyncio.gather(*(self.get(key, prototype, r) for key, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        """Whether the object of ``key`` exists (one 1-byte suffix request on remote stores)."""
        await self._ensure_open()
        return await asyncio.to_thread(self._exists, key)

    async def getsize(self, key: str) -> int:
        """The size of the object of ``key`` (known once pinned; else one 1-byte suffix request)."""
        pin = self._pins.get(key)
        if pin is not None and pin.size is not None:
            return pin.size
        data = await asyncio.to_thread(self._read, key, SuffixByteRequest(1))
        pin = self._pins.get(key)
        if data is None or pin is None or pin.size is None:
            raise ObjectNotFoundError(f"{shown_url(self.object_url(key))}: no such file.")
        return pin.size

    def read_whole(self, key: str) -> bytes | None:
        """The whole object of ``key`` (size-capped as :meth:`get` caps it), or ``None`` if there is none."""
        return self._read(key, None)

    def _exists(self, key: str) -> bool:
        url = self.object_url(key)
        if "://" not in url and not url.startswith("memory:"):
            return os.path.isfile(url)
        return self._read(key, SuffixByteRequest(1)) is not None

    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        url = self.object_url(key)
        with self._lock:
            pin = self._pins.get(key)
        try:
            data, seen = self._fetch(url, byte_range, pin)
        except ObjectNotFoundError:
            if pin is not None:
                raise ObjectChangedError(
                    f"{shown_url(url)}: the object was deleted since it was first read."
                ) from None
            return None
        except CellCoaddError:
            raise
        except Exception as exc:  # a failure the fetch layer did not type: name the object, hide secrets
            message = redact(f"{shown_url(url)}: reading key {key!r} failed ({type(exc).__name__}: {exc})",
                             self.storage_options)
            raise FetchError(message) from None
        with self._lock:
            self._pins[key] = seen if pin is None else pin.merge(seen)
        return data

    def _fetch(self, url: str, byte_range: ByteRequest | None, pin: ObjectPin | None) -> tuple[bytes, ObjectPin]:
        if self._local:
            root, path = local_path(self._base) or self._base, local_path(url) or url
            check_contained(root, path, url)
            data, seen = self._fetch_checked(url, byte_range, pin)
            check_contained(root, path, url, seen)  # the file read is the one inside the store
            return data, seen
        return self._fetch_checked(url, byte_range, pin)

    def _fetch_checked(self, url: str, byte_range: ByteRequest | None,
                       pin: ObjectPin | None) -> tuple[bytes, ObjectPin]:
        options = self.storage_options
        if byte_range is None:
            # Whole objects are metadata documents (parsed whole) or unsharded chunks (decoded
            # whole): their size is capped before they are read.
            if url.split("?", 1)[0].endswith(METADATA_KEY):
                return fetch_object(url, storage_options=options, pin=pin, limit=limit("metadata_bytes"),
                                    cap="metadata_bytes")
            return fetch_object(url, storage_options=options, pin=pin, limit=limit("chunk_bytes") + CHUNK_OVERHEAD,
                                cap="chunk_bytes")
        if isinstance(byte_range, RangeByteRequest):
            start, stop = int(byte_range.start), int(byte_range.end)
            if stop <= start:
                if stop < start or start < 0:
                    raise FetchError(f"{shown_url(url)}: invalid byte range [{start}, {stop}).")
                return b"", pin or ObjectPin()
            blobs, seen = fetch_head(url, [(start, stop)], storage_options=options, pin=pin)
            return blobs[0], seen
        if isinstance(byte_range, OffsetByteRequest):
            return fetch_object(url, offset=int(byte_range.offset), storage_options=options, pin=pin,
                                limit=limit("chunk_bytes") + CHUNK_OVERHEAD, cap="chunk_bytes")
        if isinstance(byte_range, SuffixByteRequest):
            if byte_range.suffix <= 0:
                _, seen = fetch_suffix(url, 1, storage_options=options, pin=pin)
                return b"", seen
            return fetch_suffix(url, int(byte_range.suffix), storage_options=options, pin=pin)
        raise TypeError(f"unexpected byte range {byte_range!r}")

    # ------------------------------------------------------------------ writes (refused)

    async def set(self, key: str, value: Buffer) -> None:
        """Refused: the store is read-only."""
        self._check_writable()

    async def delete(self, key: str) -> None:
        """Refused: the store is read-only."""
        self._check_writable()

    # ------------------------------------------------------------------ listing (fsspec)

    def _keys(self, prefix: str) -> list[str]:
        """Every key under the directory of ``prefix`` (a superset of the keys starting with it)."""
        if self._query:
            raise NotImplementedError(f"{shown_url(self.url)}: cannot list an archive whose URL has a query string.")
        fs, root = filesystem(self._base, self.storage_options)
        root = root.rstrip("/")
        where = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            found = fs.find(f"{root}/{where}" if where else root)
        except FileNotFoundError:
            return []
        except Exception as exc:
            message = redact(f"{shown_url(self.url)}: listing failed ({type(exc).__name__}: {exc})",
                             self.storage_options)
            raise FetchError(message) from None
        # fsspec may hand back paths with or without the protocol; keep what lies under the root
        marker = root.split("://", 1)[-1].rstrip("/") + "/"
        keys = []
        for path in found:
            path = str(path).split("://", 1)[-1]
            at = path.find(marker)
            if at >= 0:
                keys.append(path[at + len(marker) :])
        return sorted(keys)

    async def list(self) -> AsyncIterator[str]:
        """Every key of the archive."""
        for key in await asyncio.to_thread(self._keys, ""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Every key starting with ``prefix``."""
        for key in await asyncio.to_thread(self._keys, prefix):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """The keys and key prefixes directly under ``prefix``."""
        base = prefix.rstrip("/") + "/" if prefix.rstrip("/") else ""
        seen: set[str] = set()
        for key in await asyncio.to_thread(self._keys, base):
            if key.startswith(base):
                name = key[len(base) :].split("/", 1)[0]
                if name and name not in seen:
                    seen.add(name)
                    yield name
