"""Read regions of sharded Zarr arrays of layout 2 directly: shard indexes, chunk ranges, parallel decoding.

zarr-python reads a sharded array one chunk at a time through its asyncio codec pipeline,
which for thousands of cell-sized chunks costs several times the decoding itself.  The arrays
this package writes have one fixed shape of codecs (:mod:`.layout`): a ``sharding_indexed``
codec whose chunks are ``[bitround?] bytes(little) blosc crc32c`` and whose index, at the end,
is ``bytes(little) crc32c``.  For those, :class:`ShardedArray` fetches each shard's index once
(a suffix read), then the byte ranges of exactly the chunks a region touches (one merged
request per shard), and decodes them on every core (:mod:`..decode_pool`), writing each chunk
straight into the output.  :func:`plan` says whether an array's metadata has that shape;
anything else is read by zarr-python.

Every read goes through the fetch layer (retried, pinned, counted); a bad checksum, a chunk
that does not decode to its size, or an index that points outside its shard is an
:class:`~cellcoadd_dask.ArchiveFormatError` naming the array and the shard.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ArchiveFormatError, shown_url
from ...fetch import ObjectChangedError, ObjectNotFoundError, ObjectPin, fetch_ranges, fetch_suffix
from ...fetch_backends.core import local_path
from ...fetch_backends.local import check_contained
from ...limits import CHUNK_OVERHEAD, LimitExceededError, limit
from ..decode_pool import run_indexed

__all__ = ["ShardPlan", "ShardedArray", "check_chunking", "plan"]

_EMPTY = np.uint64(2**64 - 1)
_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                     "float32", "float64"})
_FILTERS = frozenset({"numcodecs.bitround"})
"""Array-to-array codecs whose decoding is the identity (they only act when writing)."""


@dataclass(frozen=True)
class ShardPlan:
    """What reading an array needs from its metadata."""

    shape: tuple[int, ...]
    dtype: np.dtype
    shard: tuple[int, ...]
    chunk: tuple[int, ...]
    fill: Any
    separator: str
    blosc: bool
    checksum: bool

    @property
    def per_shard(self) -> tuple[int, ...]:
        """Chunks per shard along each axis."""
        return tuple(s // c for s, c in zip(self.shard, self.chunk, strict=True))

    @property
    def index_bytes(self) -> int:
        """Size of a shard index with its checksum."""
        return 16 * math.prod(self.per_shard) + 4


def _named(codec: Any) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(codec, Mapping) or not isinstance(codec.get("name"), str):
        return "", {}
    configuration = codec.get("configuration") or {}
    return codec["name"], configuration if isinstance(configuration, Mapping) else {}


def _little(codec: Any) -> bool:
    name, config = _named(codec)
    return name == "bytes" and config.get("endian", "little") == "little"


def plan(metadata: Mapping[str, Any] | None) -> ShardPlan | None:
    """The read plan of an array's (v3) metadata, or ``None`` when it is not of the shape read here."""
    try:
        if metadata is None or metadata.get("zarr_format") != 3 or metadata.get("data_type") not in _DTYPES:
            return None
        grid = metadata["chunk_grid"]
        encoding = metadata.get("chunk_key_encoding") or {"name": "default"}
        codecs = metadata["codecs"]
        if _named(grid)[0] != "regular" or _named(encoding)[0] != "default" or len(codecs) != 1:
            return None
        name, config = _named(codecs[0])
        if name != "sharding_indexed" or config.get("index_location", "end") != "end":
            return None
        index = config.get("index_codecs") or []
        if len(index) != 2 or not _little(index[0]) or _named(index[1])[0] != "crc32c":
            return None
        inner = list(config.get("codecs") or [])
        while inner and _named(inner[0])[0] in _FILTERS:
            inner.pop(0)
        if not inner or not _little(inner[0]):
            return None
        rest = [_named(c)[0] for c in inner[1:]]
        if rest not in (["blosc", "crc32c"], ["crc32c"], ["blosc"], []):
            return None
        shape = tuple(int(n) for n in metadata["shape"])
        shard = tuple(int(n) for n in _named(grid)[1]["chunk_shape"])
        chunk = tuple(int(n) for n in config["chunk_shape"])
        separator = str(_named(encoding)[1].get("separator", "/"))
        if len(shard) != len(shape) or len(chunk) != len(shape) or any(
            c <= 0 or s <= 0 or s % c for s, c in zip(shard, chunk, strict=True)
        ):
            return None
        dtype = np.dtype(metadata["data_type"])
        fill = metadata.get("fill_value", 0)
        if not isinstance(fill, int | float | bool):
            return None
        return ShardPlan(shape, dtype, shard, chunk, dtype.type(fill), separator, "blosc" in rest,
                         "crc32c" in rest)
    except (KeyError, TypeError, ValueError):
        return None


def _shape_of(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list | tuple) or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return None
    return tuple(value)


def check_chunking(metadata: Mapping[str, Any], expected: tuple[int, ...] | None, *, url: str, path: str) -> None:
    """Refuse an array whose chunking is not what the model says, or whose chunks or shards are too large.

    Checked before any chunk is read: the (inner) chunk shape equals ``expected`` when given
    (a plane: one cell; the PSF: one kernel); one decoded chunk holds at most
    ``cellcoadd.limits.chunk_bytes`` bytes; a shard holds at most
    ``cellcoadd.limits.shard_chunks`` chunks (the rows of its index).

    Parameters
    ----------
    metadata
        The array's v3 metadata (``zarr.json`` as a mapping).
    expected
        The chunk shape the model implies, or ``None`` to check the caps only.
    url, path
        The archive and the array, for messages.

    Raises
    ------
    LimitExceededError
        A chunk or a shard larger than its cap.
    ArchiveFormatError
        A chunk shape other than ``expected``, or an unreadable chunk grid.
    """
    from ...limits import check

    where = f"array {path.strip('/')!r}"
    grid = metadata.get("chunk_grid")
    outer = _shape_of(_named(grid)[1].get("chunk_shape"))
    if _named(grid)[0] != "regular" or outer is None or any(n <= 0 for n in outer):
        raise ArchiveFormatError(f"{where}: chunk_grid {grid!r} is not a regular grid of positive sizes", url=url)
    chunk = outer
    codecs = metadata.get("codecs")
    first = _named(codecs[0]) if isinstance(codecs, list | tuple) and codecs else ("", {})
    if first[0] == "sharding_indexed":
        inner = _shape_of(first[1].get("chunk_shape"))
        if inner is None or len(inner) != len(outer) or any(n <= 0 for n in inner):
            raise ArchiveFormatError(f"{where}: sharding chunk_shape {inner!r} is invalid", url=url)
        per_shard = math.prod(-(-s // c) for s, c in zip(outer, inner, strict=True))
        check(per_shard, "shard_chunks", field=f"{where} chunks per shard ({outer} / {inner})", url=url)
        chunk = inner
    try:
        itemsize = np.dtype(str(metadata.get("data_type"))).itemsize
    except TypeError:
        itemsize = 16
    check(math.prod(chunk) * itemsize, "chunk_bytes", field=f"{where} chunk_shape {list(chunk)}", url=url)
    if expected is not None and tuple(chunk) != tuple(expected):
        raise ArchiveFormatError(
            f"{where}: chunk_shape {list(chunk)} is not the {list(expected)} the tree's cell grid implies", url=url
        )


class ShardedArray:
    """Reads regions of one sharded array of an archive (see the module notes).

    Parameters
    ----------
    url
        The archive (group) URL.
    path
        The array's path in the group.
    plan
        Its read plan (:func:`plan`).
    storage_options
        fsspec options.
    """

    def __init__(self, url: str, path: str, plan: ShardPlan, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url
        self.path = path.strip("/")
        self.plan = plan
        self.storage_options = dict(storage_options or {})
        self._indexes: dict[tuple[int, ...], tuple[np.ndarray, ObjectPin]] = {}
        self._lock = threading.Lock()

    def _shard_url(self, shard: tuple[int, ...]) -> str:
        key = self.plan.separator.join(["c", *(str(n) for n in shard)])
        base, _, query = self.url.partition("?")
        return f"{base.rstrip('/')}/{self.path}/{key}" + (f"?{query}" if query else "")

    def _contained(self, shard: tuple[int, ...], read: ObjectPin | None = None) -> None:
        """In a local store, refuse a shard file that a symbolic link leads out of the store.

        Checked before the index is read and after, with its pin (chunk reads are pinned to the
        same file, so they cannot be sent elsewhere by a link swapped later).
        """
        root = local_path(self.url)
        if root is not None and "?" not in self.url:
            url = self._shard_url(shard)
            check_contained(root, local_path(url) or url, url, read)

    def _error(self, shard: tuple[int, ...], message: str) -> ArchiveFormatError:
        return ArchiveFormatError(f"array {self.path!r}, shard {'/'.join(map(str, shard))}: {message}",
                                  url=self.url)

    def _index(self, shard: tuple[int, ...]) -> tuple[np.ndarray, ObjectPin]:
        """The shard's ``(offset, length)`` rows and pin (a missing shard is an error: layout 2 stores them all)."""
        with self._lock:
            if shard in self._indexes:
                return self._indexes[shard]
        size = self.plan.index_bytes
        self._contained(shard)
        try:
            raw, pin = fetch_suffix(self._shard_url(shard), size, storage_options=self.storage_options)
        except ObjectNotFoundError:
            # Layout 2 stores every chunk: a missing shard is damage, not a fill value.
            raise self._error(shard, "the shard is missing (layout 2 stores every chunk)") from None
        else:
            self._contained(shard, pin)
            if len(raw) != size:
                raise self._error(shard, f"shorter ({len(raw)} bytes) than its index ({size} bytes)")
            _check(raw, self, shard, "index")
            rows = np.frombuffer(raw[:-4], dtype="<u8").reshape(*self.plan.per_shard, 2)
            total = pin.size
            used = rows[..., 0] != _EMPTY
            if total is not None and np.any(rows[used, 0] + rows[used, 1] > total - size):
                raise self._error(shard, "its index points past the end of the shard")
            cap = limit("chunk_bytes") + CHUNK_OVERHEAD
            if np.any(rows[used, 1] > cap):
                raise LimitExceededError(
                    f"array {self.path!r}, shard {'/'.join(map(str, shard))}: its index gives a chunk of "
                    f"{int(rows[used, 1].max())} bytes, more than the cap cellcoadd.limits.chunk_bytes (+ overhead)",
                    field="shard index", cap="chunk_bytes", url=self.url,
                )
            found = (rows, pin)
        with self._lock:
            self._indexes[shard] = found
        return found

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """The array over ``region`` (unit-step slices, one per axis, inside the array)."""
        p = self.plan
        out = np.full(tuple(s.stop - s.start for s in region), p.fill, dtype=p.dtype)
        if out.size == 0:
            return out
        spans = [range(s.start // c, -(-s.stop // c)) for s, c in zip(region, p.chunk, strict=True)]
        by_shard: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for chunk in itertools.product(*spans):
            shard = tuple(c // k for c, k in zip(chunk, p.per_shard, strict=True))
            by_shard.setdefault(shard, []).append(chunk)
        jobs: list[tuple[tuple[int, ...], tuple[int, ...], Any]] = []
        for shard, chunks in by_shard.items():
            rows, pin = self._index(shard)
            wanted = []
            for chunk in chunks:
                local = tuple(c % k for c, k in zip(chunk, p.per_shard, strict=True))
                offset, length = (int(v) for v in rows[local])
                if rows[local][0] == _EMPTY:
                    raise self._error(shard, f"chunk {'/'.join(map(str, chunk))} is missing from the shard "
                                             "(layout 2 stores every chunk)")
                wanted.append((chunk, (offset, offset + length)))
            if not wanted:
                continue
            try:
                blobs = fetch_ranges(self._shard_url(shard), [r for _, r in wanted],
                                     storage_options=self.storage_options, pin=pin, copy=False)
            except ObjectNotFoundError:
                raise ObjectChangedError(
                    f"{shown_url(self._shard_url(shard))}: the object was deleted since it was first read."
                ) from None
            jobs.extend((shard, chunk, blob) for (chunk, _), blob in zip(wanted, blobs, strict=True))

        def decode(n: int) -> None:
            shard, chunk, blob = jobs[n]
            self._place(out, region, chunk, self._decode(blob, shard))

        run_indexed(len(jobs), decode)
        return out

    def _decode(self, blob: Any, shard: tuple[int, ...]) -> np.ndarray:
        p = self.plan
        if p.checksum:
            _check(blob, self, shard, "chunk")
            blob = memoryview(blob)[:-4]
        if p.blosc:
            import imagecodecs

            try:
                blob = imagecodecs.blosc_decode(blob)
            except Exception as exc:  # the codec's own error types
                raise self._error(shard, f"a chunk does not decode ({type(exc).__name__}: {exc})") from None
        expected = math.prod(p.chunk) * p.dtype.itemsize
        if len(blob) != expected:
            raise self._error(shard, f"a chunk decodes to {len(blob)} bytes, not {expected}")
        return np.frombuffer(blob, dtype=p.dtype.newbyteorder("<")).reshape(p.chunk)

    def _place(self, out: np.ndarray, region: tuple[slice, ...], chunk: tuple[int, ...], values: np.ndarray) -> None:
        target, source = [], []
        for s, c, n in zip(region, chunk, self.plan.chunk, strict=True):
            lo, hi = max(s.start, c * n), min(s.stop, (c + 1) * n)
            target.append(slice(lo - s.start, hi - s.start))
            source.append(slice(lo - c * n, hi - c * n))
        out[tuple(target)] = values[tuple(source)]

    def __repr__(self) -> str:
        return f"ShardedArray({shown_url(self.url)!r}, {self.path!r}, shard={self.plan.shard}, chunk={self.plan.chunk})"


def _check(raw: Any, array: ShardedArray, shard: tuple[int, ...], what: str) -> None:
    import google_crc32c

    data = memoryview(raw)
    if len(data) < 4:
        raise array._error(shard, f"its {what} of {len(data)} bytes has no checksum")
    stored = int.from_bytes(bytes(data[-4:]), "little")
    if google_crc32c.value(bytes(data[:-4])) != stored:
        raise array._error(shard, f"its {what} fails its CRC-32C checksum")
