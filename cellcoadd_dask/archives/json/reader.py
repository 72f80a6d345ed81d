"""Read an lsst-images JSON archive (``.json``, optionally gzip-compressed) into a :class:`CellCoadd`.

JSON archives hold every array inline, so the whole file is read and parsed; the planes
are then wrapped as dask arrays chunked on cell edges like any other archive's.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from ...coadd import CellCoadd
from ...errors import ArchiveFormatError, FetchError, shown_url
from ...fetch import fetch_head, fetch_object, fetch_ranges, filesystem, normalize_url, redact
from ...geom import Box
from ...lazy import Chunks
from ...limits import DEFAULTS, LimitExceededError, check, limit
from ...model import ArrayModel, inline_values
from ...stored import StoredArchive
from ..input import ArrayRequest, ColumnReader, InMemorySource, InputArchive, coadd_from_archive

__all__ = ["MAX_JSON_BYTES", "JsonInputArchive", "read_json"]

MAX_JSON_BYTES = DEFAULTS["json_bytes"]
"""Default of the largest JSON archive (decompressed) this reader accepts: ``cellcoadd.limits.json_bytes``."""


def _inline(array: ArrayModel, url: str, path: str) -> np.ndarray:
    if array.inline is None:
        raise ArchiveFormatError(
            f"array {path} references {array.source!r}; a JSON archive must hold it inline", url=url, hdu=path
        )
    try:
        out = inline_values(array.inline, array.dtype)
    except ValueError as exc:
        raise ArchiveFormatError(
            f"array {path} does not hold {array.datatype} values: {exc}", url=url, hdu=path
        ) from None
    if out.dtype == object or out.shape != tuple(array.shape):
        raise ArchiveFormatError(f"array {path} is ragged or mis-shaped ({out.shape})", url=url, hdu=path)
    return out


def _read_text(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    # The first byte tells the size (Content-Range, or the file's size) without a HEAD request;
    # both reads go through the fetch layer (retries, pinning, checked lengths).
    cap = limit("json_bytes")
    try:
        (_,), pin = fetch_head(url, [(0, 1)], storage_options=storage_options)
    except ArchiveFormatError:
        raise ArchiveFormatError("empty file: not a JSON archive", url=url) from None
    size = pin.size
    if size is not None:
        check(size, "json_bytes", field="JSON archive size", url=url)
        (raw,) = fetch_ranges(url, [(0, size)], storage_options=storage_options, pin=pin)
    else:
        # The backend does not tell sizes (fsspec filesystems without ranged metadata): ask the
        # filesystem for the size to check the cap, then read the object through the fetch layer.
        fs, path = filesystem(url, storage_options)
        try:
            size = fs.size(path)
        except FileNotFoundError:
            raise FetchError(f"{shown_url(url)}: no such file.") from None
        except OSError as exc:
            raise FetchError(redact(f"{shown_url(url)}: reading failed: {exc!r}", storage_options)) from None
        if size is not None:
            check(size, "json_bytes", field="JSON archive size", url=url)
        raw, _ = fetch_object(url, storage_options=storage_options, pin=pin)
    if raw[:2] == b"\x1f\x8b":
        try:
            d = zlib.decompressobj(wbits=31)
            raw = d.decompress(raw, cap)
            if d.unconsumed_tail:
                raise LimitExceededError(
                    f"decompressed JSON archive exceeds the cap cellcoadd.limits.json_bytes = {cap}",
                    field="decompressed JSON archive size", cap="json_bytes", url=url,
                )
            if not d.eof:
                raise ArchiveFormatError("gzip stream ends early: truncated", url=url)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise ArchiveFormatError(f"corrupt gzip stream: {exc}", url=url) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, over-long integers
        raise ArchiveFormatError(f"JSON archive does not parse: {exc}", url=url) from None


def _check_schema_url(tree: Any, url: str) -> None:
    # The top-level schema_url of a JSON archive says which type it holds.
    schema_url = tree.get("schema_url") if isinstance(tree, dict) else None
    if schema_url is not None and not (isinstance(schema_url, str) and "/cell_coadd-" in schema_url):
        raise ArchiveFormatError(
            f"archive holds {schema_url!r}, not a cell_coadd (top-level schema_url)", url=url, hdu="JSON"
        )


class _InlineColumns(ColumnReader):
    """A JSON archive holds its table columns inline: a column ``source`` is an error."""

    def __init__(self, url: str) -> None:
        self.url = url

    def column(self, source: str) -> np.ndarray:
        """Refuse: nothing is stored outside the tree."""
        raise ArchiveFormatError(
            f"table column references {source!r}; a JSON archive holds columns inline", url=self.url
        )


class JsonInputArchive(InputArchive):
    """A parsed JSON archive: the tree holds every array inline.

    Parameters
    ----------
    url
        The archive.
    storage_options
        fsspec options.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self._tree = _read_text(url, storage_options)
        _check_schema_url(self._tree, url)

    @property
    def tree(self) -> Mapping[str, Any]:
        """The whole archive."""
        tree: Mapping[str, Any] = self._tree
        return tree

    def array_source(self, request: ArrayRequest) -> InMemorySource:
        """The inline values, checked against their models."""
        stored = [_inline(a, self.url, where) for where, a in zip(request.labels(), request.arrays, strict=True)]
        return InMemorySource(stored, shape=request.shape, dtype=request.dtype, combine=request.combine)

    def table_reader(self) -> ColumnReader:
        """Columns are inline: any column reference is refused."""
        return _InlineColumns(self.url)

    def stored(self, tree: Mapping[str, Any]) -> StoredArchive:
        """The tree."""
        return StoredArchive(self.url, tree, format="json")


def read_json(
    url: str | PathLike[str],
    *,
    bbox: Box | None = None,
    chunks: Chunks = "auto",
    storage_options: Mapping[str, Any] | None = None,
) -> CellCoadd:
    """Read an lsst-images ``cell_coadd`` JSON archive.

    Raises
    ------
    ArchiveFormatError
        If the file is not a valid ``cell_coadd`` JSON archive.
    BoundsError
        If ``bbox`` is not inside the coadd.
    """
    url = normalize_url(url)
    return coadd_from_archive(JsonInputArchive(url, storage_options), bbox=bbox, chunks=chunks)
