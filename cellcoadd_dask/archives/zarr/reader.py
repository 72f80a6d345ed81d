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
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from ...coadd import CellCoadd
from ...errors import ArchiveFormatError, CellCoaddError
from ...fetch import normalize_url
from ...geom import Box
from ...lazy import Chunks
from ...limits import DEFAULTS, check
from ...stored import StoredArchive
from ..input import ArrayRequest, ColumnReader, InputArchive, coadd_from_archive
from ..names import parse_source
from .arrays import (
    ZarrArraySource,
    checked_open,
    checked_read,
    is_local,
    parse_zarr_source,
    read_stored_array,
    zarr_store,
)
from .layout import ARCHIVE_CLASS, LATEST_LAYOUT, LAYOUT_ATTRIBUTE, LSST_ATTRIBUTE, TREE_ARRAY, TREE_ATTRIBUTE
from .shards import check_chunking, plan

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


class ZarrTableReader(ColumnReader):
    """Hands out table columns of an archive by ``source`` (picklable)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None, *, every_chunk: bool = False) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.every_chunk = every_chunk

    def column(self, source: str) -> np.ndarray:
        """The column array named by ``zarr:<table group>/<column>``.

        In layouts that store every chunk (2), a column that reads as nothing but its fill value
        is checked to have its chunks: a deleted chunk is damage, not zeros.
        """
        values = read_stored_array(self.url, source, self.storage_options)
        if self.every_chunk and values.size and not np.any(values):
            _require_chunks(self.url, source, self.storage_options, values.ndim)
        return values


def _require_chunks(url: str, source: str, storage_options: Mapping[str, Any] | None, ndim: int) -> None:
    """Refuse a one-chunk array of the archive whose chunk object is missing."""
    from zarr.core.sync import sync  # zarr's own event loop thread: safe inside a running loop (notebooks)

    path = parse_source(source, scheme="zarr", url=url).name
    key = "/".join([path, "c", *("0" * max(1, ndim))])
    if not sync(zarr_store(url, storage_options).exists(key)):
        raise ArchiveFormatError(f"array {path!r}: its chunk is missing (this layout stores every chunk)", url=url)


def _open_group(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    import zarr

    if is_local(url) and not os.path.isdir(url[len("file://") :] if url.startswith("file://") else url):
        raise ArchiveFormatError("no Zarr archive (directory) at this path", url=url)
    try:
        return zarr.open_group(zarr_store(url, storage_options), mode="r", zarr_format=3)
    except CellCoaddError:
        raise
    except RecursionError:
        raise ArchiveFormatError("the group's zarr.json is nested too deeply to parse", url=url) from None
    except MemoryError:
        raise
    except Exception as exc:  # whatever zarr-python's metadata parsing raises on a malformed document
        member = _malformed_member(url, storage_options)
        if member is not None:
            raise ArchiveFormatError(f"array {member!r}: its metadata in the group's consolidated metadata "
                                     f"is malformed ({type(exc).__name__}: {exc})", url=url) from None
        if isinstance(exc, (FileNotFoundError, ValueError, KeyError, zarr.errors.GroupNotFoundError)):
            raise ArchiveFormatError(f"not a Zarr group ({exc})", url=url) from None
        raise ArchiveFormatError(f"the group's metadata is malformed ({type(exc).__name__}: {exc})", url=url) from None


def _malformed_member(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The first member of the root's consolidated metadata that zarr-python cannot parse, if any.

    Only called once opening the group has failed, to name the array at fault.
    """
    import json

    from zarr.core.group import GroupMetadata
    from zarr.core.metadata import ArrayV3Metadata

    try:
        raw = zarr_store(url, storage_options).read_whole("zarr.json")
        members = json.loads(raw)["consolidated_metadata"]["metadata"]
        items = list(members.items())
    except Exception:  # no consolidated metadata to blame: the root document itself is at fault
        return None
    for name, document in items:
        try:
            kind = document["node_type"]
            if kind == "array":
                ArrayV3Metadata.from_dict(dict(document))
            elif kind == "group":
                GroupMetadata.from_dict(dict(document))
            else:
                return str(name)
        except Exception:
            return str(name)
    return None


def _check_flags(tree: Any, metadata: Mapping[str, Any] | None, path: str, url: str) -> None:
    """A packed mask's CF flag attributes must name the planes the tree names, at the same bits.

    Layout 2 stores the plane names twice (tree and array attributes): an edit of one that the
    other does not follow would change what the stored bits mean, so it is refused.
    """
    if metadata is None:
        return
    attributes = metadata.get("attributes") or {}
    meanings, masks = attributes.get("flag_meanings"), attributes.get("flag_masks")
    planes = tree.get("mask", {}).get("planes") if isinstance(tree.get("mask"), Mapping) else None
    if not isinstance(planes, list):
        return  # the model reports a malformed mask tree itself
    expected = {1 << n: p.get("name") for n, p in enumerate(planes) if isinstance(p, Mapping)}
    if not isinstance(meanings, str) or not isinstance(masks, list) or not all(
            isinstance(m, int) and not isinstance(m, bool) for m in masks):
        raise ArchiveFormatError(f"array {path!r}: the packed mask has no CF flag_meanings/flag_masks "
                                 "(a string and a list of integers)", url=url)
    found = dict(zip(masks, meanings.split(), strict=False))
    if len(masks) != len(meanings.split()) or found != expected:
        raise ArchiveFormatError(
            f"array {path!r}: its flag_meanings/flag_masks {sorted(found.items(), key=str)} disagree with the "
            f"tree's mask.planes {sorted(expected.items(), key=str)}", url=url,
        )


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
    raw = checked_read(lambda: np.asarray(array[...]), url, name)
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
        if self.layout >= 2:
            for path, meta in zip(paths, metadata, strict=True):
                if plan(meta) is None:
                    raise ArchiveFormatError(
                        f"array {path!r} is not encoded as layout {self.layout} encodes planes (one sharded array, "
                        "chunks of bytes(little) + blosc + crc32c, index bytes(little) + crc32c at the end)",
                        url=self.url,
                    )
        if self.layout >= 2 and request.what == "mask" and len(paths) == 1:
            _check_flags(self._tree, metadata[0], paths[0], self.url)
        source = ZarrArraySource(
            self.url, paths, shape=request.shape, dtype=request.dtype, combine=request.combine,
            storage_options=self.storage_options, metadata=metadata,
            stored_dtypes=[a.dtype for a in request.arrays], chunk=_model_chunk(request),
        )
        source.check_metadata()  # layout 2: a tree or metadata at odds fails on open, not in a task
        return source

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
        return ZarrTableReader(self.url, self.storage_options, every_chunk=self.layout >= 2)

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
    array = checked_open(stored.url, stored.storage_options, path, whole=True)
    if tuple(array.shape) != tuple(shape) or (dtype and np.dtype(array.dtype) != np.dtype(dtype)):
        raise ArchiveFormatError(f"array {source!r} is {array.dtype} {array.shape}, the tree says {dtype} {shape}",
                                 url=stored.url)
    return np.asarray(checked_read(lambda: array[...], stored.url, path))

