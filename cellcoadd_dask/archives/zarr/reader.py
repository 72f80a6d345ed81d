"""Open a Zarr v3 archive (layouts: :mod:`cellcoadd_dask.archives.zarr.layout`) as a lazy coadd.

Opening reads the tree and nothing else: in layout 2 the root ``zarr.json`` (consolidated
metadata of every array) and the ``lsst_json`` array, two requests; in layout 1 the group's
``cellcoadd`` attribute.  Every plane becomes a dask array over a :class:`ZarrArraySource`
chunked on cell edges; a read fetches only the chunks (and shard indexes) the requested region
touches.  Tables and arrays that only background models reference are read when asked for.
All reads go through the package's fetch layer (:class:`~.store.FetchStore`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

import numpy as np

from ...coadd import CellCoadd
from ...errors import ArchiveFormatError, CellCoaddError
from ...fetch import normalize_url
from ...geom import Box
from ...lazy import Chunks, apply_rest, normalize_key
from ...limits import DEFAULTS, check
from ...stored import StoredArchive
from ..input import ArrayRequest, ColumnReader, Combine, InputArchive, coadd_from_archive
from ..names import parse_source
from .layout import ARCHIVE_CLASS, LATEST_LAYOUT, LAYOUT_ATTRIBUTE, LSST_ATTRIBUTE, TREE_ARRAY, TREE_ATTRIBUTE
from .shards import ShardedArray, check_chunking, plan

__all__ = [
    "CONTAINER_VERSION",
    "MAX_TREE_BYTES",
    "TREE_ATTRIBUTE",
    "ZarrArraySource",
    "ZarrInputArchive",
    "ZarrTableReader",
    "parse_zarr_source",
    "read_stored_array",
    "read_zarr",
    "stored_array",
    "zarr_store",
]

CONTAINER_VERSION = 1
"""Version of layout 1 (``container_version`` in its ``cellcoadd`` attribute); see :mod:`.layout`."""
MAX_TREE_BYTES = DEFAULTS["tree_bytes"]
"""Default of the largest JSON tree (``/lsst_json``) this reader accepts: ``cellcoadd.limits.tree_bytes``."""


def _is_local(url: str) -> bool:
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

    if _is_local(url):
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


def _open_array(
    url: str, storage_options: Mapping[str, Any] | None, path: str, metadata: Mapping[str, Any] | None = None
) -> Any:
    import zarr

    try:
        store = zarr_store(url, storage_options)
        if metadata is not None:  # known from the consolidated metadata: no request
            from zarr.core.array import Array, AsyncArray
            from zarr.core.metadata import ArrayV3Metadata
            from zarr.storage import StorePath

            meta = ArrayV3Metadata.from_dict(dict(metadata))
            return Array(AsyncArray(metadata=meta, store_path=StorePath(store, path.lstrip("/"))))
        return zarr.open_array(store, path=path.lstrip("/"), mode="r", zarr_format=3)
    except CellCoaddError:
        raise
    except RecursionError:
        raise ArchiveFormatError(f"array {path!r}: its zarr.json is nested too deeply to parse", url=url) from None
    except (FileNotFoundError, KeyError, ValueError, TypeError, zarr.errors.ArrayNotFoundError) as exc:
        raise ArchiveFormatError(f"array {path!r} is missing or unreadable ({exc})", url=url) from None


def _checked_open(url: str, storage_options: Mapping[str, Any] | None, path: str,
                  metadata: Mapping[str, Any] | None = None, chunk: tuple[int, ...] | None = None,
                  *, whole: bool = False) -> Any:
    """:func:`_open_array`, its chunking checked (:func:`~.shards.check_chunking`) before any chunk is read.

    With ``whole`` (the array is about to be read whole: a table column, a background array),
    its size is checked against ``cellcoadd.limits.chunk_bytes`` too: such arrays are one chunk.
    """
    array = _open_array(url, storage_options, path, metadata)
    check_chunking(metadata if metadata is not None else array.metadata.to_dict(), chunk, url=url, path=path)
    if whole:
        nbytes = int(np.prod(array.shape, dtype=object)) * np.dtype(array.dtype).itemsize
        check(nbytes, "chunk_bytes", field=f"array {path!r} shape {list(array.shape)}", url=url)
    return array


def read_stored_array(url: str, source: str, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """The whole array a ``zarr:`` source of the archive at ``url`` names."""
    path = parse_zarr_source(source, url=url)
    array = _checked_open(url, storage_options, path, whole=True)
    return np.asarray(_checked_read(lambda: array[...], url, path))


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
        return f"ZarrArraySource({self.url!r}, {self.paths}, shape={self.shape}, dtype={self.dtype})"

    def derive(self, combine: Combine, shape: tuple[int, ...], dtype: np.dtype | str) -> ZarrArraySource:
        """A source over the same arrays with another combiner (sharing the opened arrays)."""
        out = ZarrArraySource(self.url, self.paths, shape=shape, dtype=dtype, combine=combine,
                              storage_options=self.storage_options, metadata=self.metadata,
                              stored_dtypes=self.stored_dtypes, chunk=self.chunk)
        out._opened = self._opened
        return out

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
                        _checked_open(self.url, self.storage_options, p, m, self.chunk)
                        for p, m in zip(self.paths, self.metadata, strict=True)
                    ]
                    stored = self.shape if self.combine is None else self.shape[:2]
                    dtypes = self.stored_dtypes or [self.dtype] * len(arrays)
                    for path, array, dtype in zip(self.paths, arrays, dtypes, strict=True):
                        if tuple(array.shape) != stored:
                            raise ArchiveFormatError(
                                f"array {path!r} has shape {tuple(array.shape)}, the tree says {stored}", url=self.url
                            )
                        if (self.combine is None or self.stored_dtypes is not None) and not _dtype_fits(
                            np.dtype(array.dtype), dtype, packed=self.combine is not None):
                            raise ArchiveFormatError(
                                f"array {path!r} holds {array.dtype}, the tree says {dtype}", url=self.url
                            )
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
        return np.asarray(_checked_read(lambda: array[region], self.url, self.paths[k]))

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


class ZarrTableReader(ColumnReader):
    """Hands out table columns of an archive by ``source`` (picklable)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})

    def column(self, source: str) -> np.ndarray:
        """The column array named by ``zarr:<table group>/<column>``."""
        return read_stored_array(self.url, source, self.storage_options)


def _open_group(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    import zarr

    if _is_local(url) and not os.path.isdir(url[len("file://") :] if url.startswith("file://") else url):
        raise ArchiveFormatError("no Zarr archive (directory) at this path", url=url)
    try:
        return zarr.open_group(zarr_store(url, storage_options), mode="r", zarr_format=3)
    except CellCoaddError:
        raise
    except RecursionError:
        raise ArchiveFormatError("the group's zarr.json is nested too deeply to parse", url=url) from None
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.GroupNotFoundError) as exc:
        raise ArchiveFormatError(f"not a Zarr group ({exc})", url=url) from None


def _layout_1_tree(attribute: Any, url: str) -> Any:
    if not isinstance(attribute, Mapping) or "tree" not in attribute:
        raise ArchiveFormatError(f"group attribute {TREE_ATTRIBUTE!r} must be an object with a 'tree'", url=url)
    version = attribute.get("container_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ArchiveFormatError(f"bad container_version {version!r} in {TREE_ATTRIBUTE!r}", url=url)
    if version > CONTAINER_VERSION:
        raise ArchiveFormatError(
            f"container_version {version} needs a newer reader (this one reads {CONTAINER_VERSION})", url=url
        )
    return attribute["tree"]


def _layout_2_tree(group: Any, url: str) -> Any:
    import json

    lsst = group.attrs.get(LSST_ATTRIBUTE)
    name = lsst.get("json", TREE_ARRAY) if isinstance(lsst, Mapping) else TREE_ARRAY
    if not isinstance(name, str) or parse_source(f"zarr:{name}", scheme="zarr", url=url) is None:
        raise ArchiveFormatError(f"bad tree array name {name!r} in the {LSST_ATTRIBUTE!r} attribute", url=url)
    array = _member(group, name, url)
    if array.ndim != 1 or np.dtype(array.dtype) != np.uint8:
        raise ArchiveFormatError(f"tree array {name!r} must be 1-d uint8, not {array.dtype} {array.shape}", url=url)
    check(int(array.shape[0]), "tree_bytes", field=f"tree array {name!r} shape", url=url)
    check_chunking(array.metadata.to_dict(), None, url=url, path=name)
    raw = _checked_read(lambda: np.asarray(array[...]), url, name)
    try:
        return json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArchiveFormatError(f"tree array {name!r} is not UTF-8 JSON ({exc})", url=url) from None


def _read_tree(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, Any, int]:
    """The tree of the group at ``url``, the opened group and its layout number."""
    group = _open_group(url, storage_options)
    attribute = group.attrs.get(TREE_ATTRIBUTE)
    if isinstance(attribute, Mapping) and LAYOUT_ATTRIBUTE in attribute:
        layout = attribute[LAYOUT_ATTRIBUTE]
        if isinstance(layout, bool) or not isinstance(layout, int) or layout < 2:
            raise ArchiveFormatError(f"bad layout {layout!r} in {TREE_ATTRIBUTE!r}", url=url)
        if layout > LATEST_LAYOUT:
            raise ArchiveFormatError(f"layout {layout} needs a newer reader (this one reads {LATEST_LAYOUT})", url=url)
        return _layout_2_tree(group, url), group, layout
    if attribute is not None:
        return _layout_1_tree(attribute, url), group, 1
    lsst = group.attrs.get(LSST_ATTRIBUTE)
    if isinstance(lsst, Mapping) and lsst.get("archive_class") == ARCHIVE_CLASS:
        return _layout_2_tree(group, url), group, LATEST_LAYOUT
    raise ArchiveFormatError(
        f"the group has no {TREE_ATTRIBUTE!r} or {LSST_ATTRIBUTE!r} attribute: not a cell coadd archive", url=url
    )


def _member(group: Any, path: str, url: str) -> Any:
    try:
        return group[path.lstrip("/")]
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise ArchiveFormatError(f"array {path!r} is missing or unreadable ({exc})", url=url) from None


def _checked_read(read: Callable[[], np.ndarray], url: str, path: str) -> np.ndarray:
    """``read()``, with any decoding failure of a chunk turned into an :class:`ArchiveFormatError`."""
    try:
        return read()
    except CellCoaddError:
        raise
    except Exception as exc:  # codec errors are whatever the codec raises
        raise ArchiveFormatError(f"array {path!r}: a chunk cannot be decoded ({type(exc).__name__}: {exc})",
                                 url=url) from None


def _model_chunk(request: ArrayRequest) -> tuple[int, ...] | None:
    """The chunk shape the tree implies for ``request``'s stored arrays: a cell (planes, mask), a kernel (PSF)."""
    shape = tuple(request.arrays[0].shape)
    if request.tile_shape is not None and len(shape) == len(request.tile_shape) == 2:
        return tuple(max(1, min(c, n)) for c, n in zip(request.tile_shape, shape, strict=True))
    if len(shape) == 4 and request.tile_shape is None:
        return (1, 1, *shape[2:])
    return None


class ZarrInputArchive(InputArchive):
    """An opened Zarr archive: the tree of its group attribute and its arrays, opened on first use.

    Parameters
    ----------
    url
        The group.
    storage_options
        fsspec options.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self._tree, self._group, self.layout = _read_tree(url, storage_options)

    @property
    def tree(self) -> Mapping[str, Any]:
        """The tree of the group's ``cellcoadd`` attribute."""
        tree: Mapping[str, Any] = self._tree
        return tree

    def array_source(self, request: ArrayRequest) -> ZarrArraySource:
        """A :class:`ZarrArraySource` over the arrays the ``zarr:`` sources name."""
        paths = []
        for where, array in zip(request.labels(), request.arrays, strict=True):
            if array.source is None:
                raise ArchiveFormatError(f"array {where} is inline; a Zarr archive stores it as an array", url=self.url)
            parsed = parse_source(array.source, scheme="zarr", url=self.url)
            paths.append(f"/{parsed.name}" if parsed.rooted else parsed.name)
        metadata = [self._metadata(p) for p in paths]
        return ZarrArraySource(
            self.url, paths, shape=request.shape, dtype=request.dtype, combine=request.combine,
            storage_options=self.storage_options, metadata=metadata,
            stored_dtypes=[a.dtype for a in request.arrays], chunk=_model_chunk(request),
        )

    def _metadata(self, path: str) -> Mapping[str, Any] | None:
        """The array's metadata when the group's consolidated metadata has it (else read on first use)."""
        consolidated = getattr(self._group.metadata, "consolidated_metadata", None)
        if consolidated is None:
            return None
        entry = consolidated.flattened_metadata.get(path.lstrip("/"))
        if entry is None or getattr(entry, "node_type", "") != "array":
            raise ArchiveFormatError(f"array {path!r} is not in the archive's metadata", url=self.url)
        result: Mapping[str, Any] = entry.to_dict()
        return result

    def table_reader(self) -> ZarrTableReader:
        """Reads table columns (one array each) on demand."""
        return ZarrTableReader(self.url, self.storage_options)

    def stored(self, tree: Mapping[str, Any]) -> StoredArchive:
        """The tree (backgrounds inline) and the storage options."""
        return StoredArchive(self.url, tree, storage_options=self.storage_options, format="zarr")


def read_zarr(
    url: str | PathLike[str],
    *,
    bbox: Box | None = None,
    chunks: Chunks = "auto",
    storage_options: Mapping[str, Any] | None = None,
) -> CellCoadd:
    """Open a Zarr cell coadd archive lazily.

    Parameters
    ----------
    url
        Local path or fsspec URL of the group.
    bbox
        Absolute box to restrict the coadd to; only the chunks it touches are ever read.
    chunks
        ``"auto"``, ``"cell"`` or cells per chunk side; chunk edges fall on cell edges.
    storage_options
        Passed to fsspec.

    Raises
    ------
    ArchiveFormatError
        If the group has no valid ``cellcoadd`` attribute, needs a newer reader, or its
        tree is invalid.
    BoundsError
        If ``bbox`` is not inside the coadd.
    """
    url = normalize_url(url).rstrip("/")
    return coadd_from_archive(ZarrInputArchive(url, storage_options), bbox=bbox, chunks=chunks)


def stored_array(stored: StoredArchive, source: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The whole array ``source`` names in the Zarr archive a coadd was read from."""
    path = parse_zarr_source(source, url=stored.url)
    array = _checked_open(stored.url, stored.storage_options, path, whole=True)
    if tuple(array.shape) != tuple(shape) or (dtype and np.dtype(array.dtype) != np.dtype(dtype)):
        raise ArchiveFormatError(f"array {source!r} is {array.dtype} {array.shape}, the tree says {dtype} {shape}",
                                 url=stored.url)
    return np.asarray(_checked_read(lambda: array[...], stored.url, path))

