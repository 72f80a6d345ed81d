"""The arrays of a Zarr archive: its read-only store, opening an array with its chunking checked, lazy sources.

:class:`ZarrArraySource` is the lazily indexed, picklable array every plane of a Zarr archive
is read through (directly from its shards in layout 2, :mod:`.shards`; else by zarr-python).
Every array is checked before a chunk of it is read: its shape and dtype against the tree (a
mask array edited to a float, signed or boolean type is refused, never truncated), its
chunking against the cell grid and the caps of :mod:`cellcoadd_dask.limits`
(:func:`~.shards.check_chunking`); a chunk that does not decode is an
:class:`~cellcoadd_dask.ArchiveFormatError` naming the array.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...errors import ArchiveFormatError, CellCoaddError, shown_url
from ...lazy import apply_rest, normalize_key
from ...limits import check
from ..input import Combine
from ..names import parse_source
from .shards import ShardedArray, check_chunking, plan

__all__ = [
    "ZarrArraySource",
    "checked_open",
    "checked_read",
    "is_local",
    "parse_zarr_source",
    "read_stored_array",
    "zarr_store",
]

def is_local(url: str) -> bool:
    """Whether ``url`` is a local path (or a ``file://`` URL)."""
    return "://" not in url or url.startswith("file://")


def zarr_store(url: str, storage_options: Mapping[str, Any] | None = None, *, read_only: bool = True) -> Any:
    """The Zarr store of ``url``.

    Read-only, a :class:`~cellcoadd_dask.archives.zarr.store.FetchStore`: every read goes
    through the package's fetch layer (retried, pinned, counted by ``fetch_stats``, typed
    errors).  For writing, a ``LocalStore`` for local paths, else an ``FsspecStore``.

    Parameters
    ----------
    url
        Normalized local path or fsspec URL.
    storage_options
        Passed to fsspec.
    read_only
        Open the store read-only.
    """
    if read_only:
        from .store import FetchStore

        return FetchStore(url, storage_options)
    import zarr

    if is_local(url):
        path = url[len("file://") :] if url.startswith("file://") else url
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=read_only)


def parse_zarr_source(source: str, *, url: str | None = None) -> str:
    """The array path of a ``zarr:<path>`` source string (grammar: :mod:`cellcoadd_dask.archives.names`).

    Raises
    ------
    ArchiveFormatError
        If ``source`` is not a ``zarr:`` source with a plain relative path.
    """
    return parse_source(source, scheme="zarr", url=url).name


def _metadata(store: Any, url: str, path: str) -> Mapping[str, Any]:
    """The ``zarr.json`` of the array at ``path``, read (size-capped) through the store and parsed."""
    raw = store.read_whole(f"{path.strip('/')}/zarr.json")
    if raw is None:
        raise ArchiveFormatError(f"array {path!r} is missing (no zarr.json)", url=url)
    try:
        metadata = json.loads(raw)
    except RecursionError:
        raise ArchiveFormatError(f"array {path!r}: its zarr.json is nested too deeply to parse", url=url) from None
    except ValueError as exc:
        raise ArchiveFormatError(f"array {path!r}: its zarr.json does not parse ({exc})", url=url) from None
    if not isinstance(metadata, dict):
        raise ArchiveFormatError(f"array {path!r}: its zarr.json is not an object", url=url)
    return metadata


def _open_array(url: str, storage_options: Mapping[str, Any] | None, path: str,
                metadata: Mapping[str, Any] | None, chunk: tuple[int, ...] | None) -> Any:
    store = zarr_store(url, storage_options)
    if metadata is None:  # else known from the consolidated metadata: no request
        metadata = _metadata(store, url, path)
    # The chunking is checked on the document itself, before zarr-python builds (or warns about)
    # anything: a zero or oversized chunk never reaches it.
    check_chunking(metadata, chunk, url=url, path=path)
    try:
        from zarr.core.array import Array, AsyncArray
        from zarr.core.metadata import ArrayV3Metadata
        from zarr.storage import StorePath

        if metadata.get("node_type") != "array" or metadata.get("zarr_format") != 3:
            raise ValueError("not a Zarr v3 array (node_type, zarr_format)")
        meta = ArrayV3Metadata.from_dict(dict(metadata))
        return Array(AsyncArray(metadata=meta, store_path=StorePath(store, path.strip("/"))))
    except CellCoaddError:
        raise
    except RecursionError:
        raise ArchiveFormatError(f"array {path!r}: its zarr.json is nested too deeply to read", url=url) from None
    except MemoryError:
        raise
    except Exception as exc:  # zarr-python raises what its parsers raise on edited metadata
        raise ArchiveFormatError(f"array {path!r}: unreadable metadata ({type(exc).__name__}: {exc})",
                                 url=url) from None


def checked_open(url: str, storage_options: Mapping[str, Any] | None, path: str,
                  metadata: Mapping[str, Any] | None = None, chunk: tuple[int, ...] | None = None,
                  *, whole: bool = False) -> Any:
    """Open the array at ``path``, its chunking checked (:func:`~.shards.check_chunking`) before anything is read.

    With ``whole`` (the array is about to be read whole: a table column, a background array),
    its size is checked against ``cellcoadd.limits.chunk_bytes`` too: such arrays are one chunk.
    """
    array = _open_array(url, storage_options, path, metadata, chunk)
    if whole:
        nbytes = int(np.prod(array.shape, dtype=object)) * np.dtype(array.dtype).itemsize
        check(nbytes, "chunk_bytes", field=f"array {path!r} shape {list(array.shape)}", url=url)
    return array


def read_stored_array(url: str, source: str, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """The whole array a ``zarr:`` source of the archive at ``url`` names."""
    path = parse_zarr_source(source, url=url)
    array = checked_open(url, storage_options, path, whole=True)
    return np.asarray(checked_read(lambda: array[...], url, path))


def _dtype_fits(stored: np.dtype, expected: np.dtype, *, packed: bool) -> bool:
    """Whether an array stored as ``stored`` may be read as the tree's ``expected``.

    Exactly, except the stored arrays of a packed mask: any unsigned integer type (the writer
    picks the smallest holding every plane).  Never a float, a signed or a boolean type where the
    tree says unsigned: such an array would be truncated or misread.
    """
    if stored == expected:
        return True
    return packed and stored.kind == expected.kind == "u"


class _Opened:
    """Arrays opened by a source (and the sources derived from it); not pickled."""

    def __init__(self) -> None:
        self.arrays: list[Any] | None = None
        self.fast: list[ShardedArray | None] = []
        self.lock = threading.Lock()


class ZarrArraySource:
    """A lazily indexed array over one or more Zarr arrays of an archive.

    With one path and no ``combine`` it is that array; otherwise ``combine(arrays, region)``
    turns the 2-d regions read from each array into the region of the logical array (the
    mask's on-disk int32 arrays into its in-memory layout).  Picklable: workers reopen the
    arrays on first use.

    Parameters
    ----------
    url
        The archive.
    paths
        Array paths inside the group.
    shape, dtype
        Logical shape and dtype (the stored arrays' shapes are checked against it on open).
    combine
        Combiner of the stored regions, or ``None``.
    storage_options
        Passed to fsspec.
    metadata
        Each array's metadata when known (consolidated metadata), else read on first use.
    stored_dtypes
        The dtype the tree gives each stored array (checked on open; default ``dtype``).
    chunk
        The chunk shape of every stored array the tree implies (checked on open), or ``None``.
    """

    def __init__(
        self,
        url: str,
        paths: list[str],
        *,
        shape: tuple[int, ...],
        dtype: np.dtype | str,
        combine: Combine | None = None,
        storage_options: Mapping[str, Any] | None = None,
        metadata: list[Mapping[str, Any] | None] | None = None,
        stored_dtypes: list[np.dtype] | None = None,
        chunk: tuple[int, ...] | None = None,
    ) -> None:
        self.url = url
        self.paths = list(paths)
        self.metadata: list[Mapping[str, Any] | None] = (
            list(metadata) if metadata is not None else [None] * len(self.paths)
        )
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.combine = combine
        self.storage_options = dict(storage_options or {})
        self.stored_dtypes = [np.dtype(d) for d in stored_dtypes] if stored_dtypes is not None else None
        self.chunk = chunk
        self._opened = _Opened()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_opened"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._opened = _Opened()

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return ("zarr", self.url, tuple(self.paths), self.shape, str(self.dtype), tokenize(self.combine))

    def __repr__(self) -> str:
        return f"ZarrArraySource({shown_url(self.url)!r}, {self.paths}, shape={self.shape}, dtype={self.dtype})"

    def derive(self, combine: Combine, shape: tuple[int, ...], dtype: np.dtype | str) -> ZarrArraySource:
        """A source over the same arrays with another combiner (sharing the opened arrays)."""
        out = ZarrArraySource(self.url, self.paths, shape=shape, dtype=dtype, combine=combine,
                              storage_options=self.storage_options, metadata=self.metadata,
                              stored_dtypes=self.stored_dtypes, chunk=self.chunk)
        out._opened = self._opened
        return out

    def check_stored(self, path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Refuse a stored array whose shape or dtype (from its metadata) is not what the tree says."""
        k = self.paths.index(path)
        stored = self.shape if self.combine is None else self.shape[:2]
        expected = self.stored_dtypes[k] if self.stored_dtypes is not None else self.dtype
        if tuple(shape) != stored:
            raise ArchiveFormatError(f"array {path!r} has shape {tuple(shape)}, the tree says {stored}", url=self.url)
        if (self.combine is None or self.stored_dtypes is not None) and not _dtype_fits(
                dtype, expected, packed=self.combine is not None):
            raise ArchiveFormatError(f"array {path!r} holds {dtype}, the tree says {expected}", url=self.url)

    def check_metadata(self) -> None:
        """Check what the consolidated metadata already tells (no request): shapes, dtypes, chunking."""
        for path, meta in zip(self.paths, self.metadata, strict=True):
            if meta is None:
                continue
            check_chunking(meta, self.chunk, url=self.url, path=path)
            try:
                shape = tuple(int(n) for n in meta["shape"])
                dtype = np.dtype(str(meta["data_type"]))
            except (KeyError, TypeError, ValueError):
                raise ArchiveFormatError(f"array {path!r}: metadata has no valid shape and data_type",
                                         url=self.url) from None
            self.check_stored(path, shape, dtype)

    @property
    def opened_arrays(self) -> list[Any] | None:
        """The Zarr arrays if a read has opened them already, else ``None`` (never opens them)."""
        return self._opened.arrays

    def arrays(self) -> list[Any]:
        """The opened Zarr arrays (opened and checked on first use)."""
        opened = self._opened
        if opened.arrays is None:
            with opened.lock:
                if opened.arrays is None:
                    arrays = [
                        checked_open(self.url, self.storage_options, p, m, self.chunk)
                        for p, m in zip(self.paths, self.metadata, strict=True)
                    ]
                    for path, array in zip(self.paths, arrays, strict=True):
                        self.check_stored(path, tuple(array.shape), np.dtype(array.dtype))
                    opened.fast = [
                        None if (shape_plan := plan(m)) is None
                        else ShardedArray(self.url, p, shape_plan, self.storage_options)
                        for p, m in zip(self.paths, self.metadata, strict=True)
                    ]
                    opened.arrays = arrays
        return opened.arrays

    def _region(self, k: int, region: tuple[slice, ...]) -> np.ndarray:
        """Stored array ``k`` over ``region``: directly from its shards when it is of layout 2's shape."""
        fast = self._opened.fast[k]
        if fast is not None:
            return fast.read(region)
        array = self.arrays()[k]
        return np.asarray(checked_read(lambda: array[region], self.url, self.paths[k]))

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """The logical array over ``region`` (unit-step slices, one per axis)."""
        self.arrays()
        if self.combine is None:
            return np.asarray(self._region(0, region), dtype=self.dtype)
        parts = [self._region(k, region[:2]) for k in range(len(self.paths))]
        return np.asarray(self.combine(parts, region), dtype=self.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        region, rest = normalize_key(key, self.shape)
        if any(s.stop <= s.start for s in region):
            return apply_rest(np.empty(tuple(s.stop - s.start for s in region), dtype=self.dtype), rest)
        return apply_rest(self.read(region), rest)


def checked_read(read: Callable[[], np.ndarray], url: str, path: str) -> np.ndarray:
    """``read()``, with any decoding failure of a chunk turned into an :class:`ArchiveFormatError`."""
    try:
        return read()
    except CellCoaddError:
        raise
    except Exception as exc:  # codec errors are whatever the codec raises
        raise ArchiveFormatError(f"array {path!r}: a chunk cannot be decoded ({type(exc).__name__}: {exc})",
                                 url=url) from None
