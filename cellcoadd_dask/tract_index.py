"""Tract indexes: one object holding what opening every patch of a tract reads.

:func:`write_tract_index` opens each patch file (metadata only: the primary header, the JSON
tree and INDEX, every plane's header and tile table) while :func:`~cellcoadd_dask.fetch_cache.recording`
captures the bytes read, and stores them with each file's pin (size, ETag or modification
time) and where its inner box lies.  :func:`open_tract_index` reads the index in one request
(two when it is larger than the first read) and builds the tract Dataset at once; each patch
is opened the first time a read touches it, by the ordinary reader answered from the stored
bytes (no request), so a read fetches nothing but tiles.  A patch file changed since it was
indexed fails that read with :class:`~cellcoadd_dask.ObjectChangedError`.

Layout of the object (little-endian)::

    8 bytes   magic b"CCDTIDX1"
    8 bytes   n: length of the manifest
    n bytes   the manifest: zlib-compressed JSON (format, version, patches: url, pin, patch
              index and id, inner and covered boxes, spans [offset, length], blob [offset, length])
    ...       per patch, a zlib-compressed blob: its spans' bytes, concatenated

The patch files are FITS archives.  Their URLs are stored relative to the index when they lie
beside or below it (so a directory or a bucket prefix can move with its index), else as given;
URLs with a query string (presigned) are refused: a signature is never stored.
"""

from __future__ import annotations

import functools
import json
import posixpath
import struct
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from typing import TYPE_CHECKING, Any

from .errors import ArchiveFormatError, ValidationError, shown_url
from .fetch import ObjectPin, fetch_head, fetch_ranges, normalize_url
from .fetch_cache import CachedObject, recording, served_from
from .geom import Box, Interval
from .limits import check

if TYPE_CHECKING:
    import xarray as xr

    from .coadd import CellCoadd
    from .lazy import Chunks
    from .tract_source import PatchHandle

__all__ = ["INDEX_MAGIC", "open_tract_index", "write_tract_index"]

INDEX_MAGIC = b"CCDTIDX1"
FORMAT = "cellcoadd-tract-index"
VERSION = 1
_FIRST_READ = 4 * 1024 * 1024
"""Bytes asked for by the first read of an index (the whole index when it is no larger)."""
_HEAD = struct.Struct("<8sQ")


# --------------------------------------------------------------------------- writing


def _relative(url: str, base: str) -> str:
    """``url`` relative to the directory of ``base`` when it lies there or below, else ``url``."""
    directory = posixpath.dirname(base)
    if directory and url.startswith(directory + "/"):
        return url[len(directory) + 1 :]
    return url


def _resolve(stored: str, index_url: str) -> str:
    if "://" in stored or stored.startswith("/"):
        return stored
    return posixpath.join(posixpath.dirname(index_url), stored)


def _pin_json(pin: ObjectPin) -> dict[str, Any]:
    return {"size": pin.size, "etag": pin.etag, "mtime_ns": pin.mtime_ns}


def _pin_of(value: Any, where: str, url: str) -> ObjectPin:
    if not isinstance(value, dict):
        raise ArchiveFormatError(f"{where}: pin must be an object", url=url)
    size, etag, mtime = value.get("size"), value.get("etag"), value.get("mtime_ns")
    if not (size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 0)):
        raise ArchiveFormatError(f"{where}: bad size {size!r}", url=url)
    if not (etag is None or isinstance(etag, str)):
        raise ArchiveFormatError(f"{where}: bad etag", url=url)
    if not (mtime is None or (isinstance(mtime, int) and not isinstance(mtime, bool))):
        raise ArchiveFormatError(f"{where}: bad mtime_ns", url=url)
    return ObjectPin(size=size, etag=etag, mtime_ns=mtime)


def _box_json(box: Box | None) -> Any:
    return None if box is None else box.to_json()


def _capture(url: str, storage_options: Mapping[str, Any] | None) -> tuple[CellCoadd, CachedObject]:
    from .archives.registry import format_of
    from .open import open_coadd

    fmt = format_of(url, storage_options)
    if fmt.name != "fits":
        raise ValidationError(f"{shown_url(url)}: tract indexes hold FITS patches; this is a {fmt.name} archive.")
    with recording() as recorder:
        coadd = open_coadd(url, storage_options=storage_options, preload=True)
    return coadd, recorder.cached(url)


def write_tract_index(
    urls: Iterable[str | PathLike[str]],
    index_url: str | PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write the index of a tract's patch files (see the module docstring); returns its URL.

    Each file is opened (metadata only) and checked as :func:`~cellcoadd_dask.open_tract`
    checks them; the index is written atomically (a local temporary renamed, or one PUT).

    Parameters
    ----------
    urls
        The patch files (FITS), one per patch.
    index_url
        Where to write the index (local path or fsspec URL).
    storage_options
        Passed to fsspec, for the patches and the index (never stored in it).

    Raises
    ------
    ValidationError
        When the patches do not form a tract (as :func:`~cellcoadd_dask.open_tract`), a URL
        has a query string (a presigned URL: its signature would be stored), or a file is
        not FITS.
    """
    from .atomic import atomic_output
    from .tract import as_url_list
    from .tract_patches import OPEN_THREADS, check_patches, opened_coadd

    index = normalize_url(index_url)
    url_list = as_url_list(urls)
    for url in url_list:
        if "?" in url:
            raise ValidationError(
                f"{shown_url(url)}: a URL with a query string (presigned) cannot be indexed: its signature would be "
                "stored. Index the s3:// (or gs://) URLs and give the credentials in storage_options."
            )
    with ThreadPoolExecutor(max_workers=min(OPEN_THREADS, len(url_list))) as pool:
        opened = list(pool.map(lambda u: _capture(u, storage_options), url_list))
    handles = check_patches(url_list, [opened_coadd(u, c) for u, (c, _) in zip(url_list, opened, strict=True)])
    from .tract import tract_dataset

    tract_dataset(handles, opened[0][0], "auto")  # the same checks as opening the tract
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    offset = 0
    for url, handle, (_, cached) in zip(url_list, handles, opened, strict=True):
        raw = b"".join(data for _, data in cached.spans)
        blob = zlib.compress(raw, 6)
        entries.append({
            "url": _relative(url, index),
            "pin": _pin_json(cached.pin),
            "patch_index": list(handle.index),
            "patch_id": handle.patch_id,
            "inner_bbox": _box_json(handle.inner),
            "covered": _box_json(handle.covered),
            "spans": [[start, len(data)] for start, data in cached.spans],
            "blob": [offset, len(blob)],
        })
        blobs.append(blob)
        offset += len(blob)
    manifest = zlib.compress(json.dumps({"format": FORMAT, "version": VERSION, "patches": entries}).encode(), 6)
    with atomic_output(index, storage_options=storage_options) as stream:
        stream.write(_HEAD.pack(INDEX_MAGIC, len(manifest)))
        stream.write(manifest)
        for blob in blobs:
            stream.write(blob)
    return index


# --------------------------------------------------------------------------- reading


def _read_index(url: str, storage_options: Mapping[str, Any] | None) -> bytes:
    """The whole index: one read of the first bytes, a second for the rest when it is larger."""
    try:
        (head,), pin = fetch_head(url, [(0, _HEAD.size)], storage_options=storage_options)
    except ArchiveFormatError:
        raise ArchiveFormatError("not a tract index (shorter than its header)", url=url) from None
    size = pin.size
    if size is None:
        raise ArchiveFormatError("the size of the tract index is unknown", url=url)
    check(size, "json_bytes", field="tract index size", url=url)
    magic, _ = _HEAD.unpack(head)
    if magic != INDEX_MAGIC:
        raise ArchiveFormatError("not a tract index (bad magic) nor a coadd file", url=url, byte_range=(0, 8))
    (rest,) = fetch_ranges(url, [(_HEAD.size, size)], storage_options=storage_options, pin=pin)
    return head + rest


def _box(value: Any, where: str, url: str) -> Box | None:
    if value is None:
        return None
    try:
        return Box(Interval(int(value["y"]["start"]), int(value["y"]["stop"])),
                   Interval(int(value["x"]["start"]), int(value["x"]["stop"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveFormatError(f"{where}: bad box {value!r} ({exc})", url=url) from None


def _spans(entry: dict[str, Any], raw: bytes, where: str, url: str) -> tuple[tuple[int, bytes], ...]:
    spans = entry.get("spans")
    if not isinstance(spans, list):
        raise ArchiveFormatError(f"{where}: spans must be a list", url=url)
    out = []
    at = 0
    for span in spans:
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) and v >= 0 for v in span)):
            raise ArchiveFormatError(f"{where}: bad span {span!r}", url=url)
        start, length = span
        if at + length > len(raw):
            raise ArchiveFormatError(f"{where}: spans exceed the stored bytes", url=url)
        out.append((start, raw[at : at + length]))
        at += length
    if at != len(raw):
        raise ArchiveFormatError(f"{where}: {len(raw) - at} stored bytes belong to no span", url=url)
    return tuple(sorted(out))


def open_indexed_patch(url: str, pin: ObjectPin, compressed: bytes, spans_json: list[Any],
                       storage_options: Mapping[str, Any] | None, chunks: Chunks) -> CellCoadd:
    """Open one patch of an index from its stored bytes (no request; only tiles are read later)."""
    from .limits import limit
    from .open import open_coadd

    decompressor = zlib.decompressobj()
    try:
        raw = decompressor.decompress(compressed, limit("tree_bytes") + limit("index_bytes"))
    except zlib.error as exc:
        raise ArchiveFormatError(f"the tract index's bytes of {shown_url(url)} are corrupt ({exc})") from None
    spans = _spans({"spans": spans_json}, raw, f"patch {shown_url(url)}", url)
    # The planes' sources keep these bytes: each loads its header and tile table from them on
    # first use (a worker reading one plane of the patch parses that plane's table only).
    with served_from({url: CachedObject(pin, spans)}):
        return open_coadd(url, storage_options=storage_options, chunks=chunks, preload=False)


def open_tract_index(index_url: str, *, storage_options: Mapping[str, Any] | None = None,
                     chunks: Chunks = "auto") -> xr.Dataset:
    """Open the tract an index describes (see :func:`~cellcoadd_dask.open_tract`, which calls this).

    Raises
    ------
    ArchiveFormatError
        If the object is not a tract index or is damaged (the message names the field).
    ObjectChangedError
        On the first read of a patch file that changed since it was indexed.
    """
    from dask.base import tokenize

    from .starlink_sandbox import prestart
    from .tract import tract_dataset
    from .tract_source import PatchHandle

    prestart()  # the projection check's child process starts while the index is fetched
    data = _read_index(index_url, storage_options)
    _, n = _HEAD.unpack(data[: _HEAD.size])
    if _HEAD.size + n > len(data):
        raise ArchiveFormatError("the manifest runs past the end of the tract index", url=index_url)
    try:
        manifest = json.loads(zlib.decompress(data[_HEAD.size : _HEAD.size + n]))
    except (zlib.error, ValueError, RecursionError) as exc:
        raise ArchiveFormatError(f"the manifest of the tract index does not read ({exc})", url=index_url) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveFormatError("not a tract index (manifest format)", url=index_url)
    if manifest.get("version") != VERSION:
        raise ArchiveFormatError(f"tract index version {manifest.get('version')!r} (this reader reads {VERSION})",
                                 url=index_url)
    payload = data[_HEAD.size + n :]
    entries = manifest.get("patches")
    if not isinstance(entries, list) or not entries:
        raise ArchiveFormatError("the tract index lists no patch", url=index_url)
    handles: list[PatchHandle] = []
    # A patch opened from these index bytes with these options is opened once per process.
    opened_key = f"{tokenize(storage_options, chunks)}|{len(data)}|{zlib.crc32(data)}"
    for k, entry in enumerate(entries):
        where = f"patches[{k}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ArchiveFormatError(f"{where}: malformed entry", url=index_url)
        url = normalize_url(_resolve(entry["url"], index_url))
        blob = entry.get("blob")
        if not (isinstance(blob, list) and len(blob) == 2 and all(isinstance(v, int) and v >= 0 for v in blob)
                and blob[0] + blob[1] <= len(payload)):
            raise ArchiveFormatError(f"{where}: bad blob {blob!r}", url=index_url)
        index = entry.get("patch_index")
        patch_id = entry.get("patch_id")
        if not (isinstance(index, list) and len(index) == 2 and all(isinstance(v, int) for v in index)
                and isinstance(patch_id, int)):
            raise ArchiveFormatError(f"{where}: bad patch_index or patch_id", url=index_url)
        inner = _box(entry.get("inner_bbox"), where, index_url)
        if inner is None:
            raise ArchiveFormatError(f"{where}: no inner_bbox", url=index_url)
        pin = _pin_of(entry.get("pin"), where, index_url)
        spans = entry.get("spans")
        if not isinstance(spans, list):
            raise ArchiveFormatError(f"{where}: spans must be a list", url=index_url)
        compressed = payload[blob[0] : blob[0] + blob[1]]
        opener = functools.partial(open_indexed_patch, url, pin, compressed, spans, storage_options, chunks)
        token = f"{url}|{pin.size}|{pin.etag}|{pin.mtime_ns}"
        handles.append(PatchHandle(url, (index[0], index[1]), patch_id, inner,
                                   _box(entry.get("covered"), where, index_url), opener, token,
                                   opened_key=f"{opened_key}|{k}"))
    first = handles[0].coadd
    return tract_dataset(handles, first, chunks)
