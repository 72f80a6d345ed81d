"""Byte ranges kept from earlier reads, served again without a request: the fetch layer's cache.

A tract index (:mod:`cellcoadd_dask.tract_index`) stores, per patch file, the bytes that opening
the file reads (primary header, JSON tree and INDEX, every plane's header and tile table) with
the file's pin.  Opening the patch *inside* :func:`served_from` then runs the ordinary reader:
each read the cache covers is answered from memory (no request, not counted by
``fetch_stats``), anything else (tiles) goes to the store.  :func:`recording` captures those
bytes in the first place.  Both are scoped to the current thread (a context variable).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from .fetch_backends.core import ObjectPin

__all__ = ["CachedObject", "Recorder", "lookup", "note", "recording", "served", "served_from"]

ByteRange = tuple[int, int]


@dataclass(frozen=True)
class CachedObject:
    """Known bytes of one object: disjoint spans ``(start, data)`` sorted by start, and its pin."""

    pin: ObjectPin
    spans: tuple[tuple[int, bytes], ...]

    def get(self, start: int, stop: int) -> bytes | None:
        """``[start, stop)`` if one span holds all of it, else ``None``."""
        starts = [s for s, _ in self.spans]
        k = bisect.bisect_right(starts, start) - 1
        if k < 0:
            return None
        first, data = self.spans[k]
        if stop - first > len(data):
            return None
        return data[start - first : stop - first]


@dataclass
class Recorder:
    """What :func:`recording` captured: per URL, the bytes read and the pin seen."""

    spans: dict[str, dict[int, bytes]] = field(default_factory=dict)
    pins: dict[str, ObjectPin] = field(default_factory=dict)

    def cached(self, url: str) -> CachedObject:
        """The captured bytes of ``url`` as disjoint spans (overlapping reads merged)."""
        merged: list[tuple[int, bytearray]] = []
        for start, data in sorted(self.spans.get(url, {}).items()):
            if merged and start <= merged[-1][0] + len(merged[-1][1]):
                first, buffer = merged[-1]
                end = start + len(data)
                if end > first + len(buffer):
                    buffer += data[first + len(buffer) - start :]
            else:
                merged.append((start, bytearray(data)))
        return CachedObject(self.pins.get(url, ObjectPin()), tuple((s, bytes(b)) for s, b in merged))


_SERVED: ContextVar[Mapping[str, CachedObject] | None] = ContextVar("cellcoadd_served", default=None)
_RECORDER: ContextVar[Recorder | None] = ContextVar("cellcoadd_recorder", default=None)


@contextmanager
def served_from(objects: Mapping[str, CachedObject]) -> Iterator[None]:
    """Answer reads of these objects from their known bytes while the block runs (this thread)."""
    token = _SERVED.set(objects)
    try:
        yield
    finally:
        _SERVED.reset(token)


def served(url: str) -> CachedObject | None:
    """The known bytes of ``url`` that :func:`served_from` serves here now, if any.

    A reader that defers reads (a tile table loaded on first use) keeps them, and serves
    its later reads from them again.
    """
    objects = _SERVED.get()
    return None if not objects else objects.get(url)


@contextmanager
def recording() -> Iterator[Recorder]:
    """Capture every byte range read (and each object's pin) while the block runs (this thread)."""
    recorder = Recorder()
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)


def lookup(url: str, ranges: Sequence[ByteRange], pin: ObjectPin | None) -> tuple[list[bytes], ObjectPin] | None:
    """The ranges from the served cache when it holds every one of them, else ``None``.

    A cached object whose pin contradicts ``pin`` is not used (the read then goes to the store,
    which tells whether the object changed).
    """
    served = _SERVED.get()
    if not served:
        return None
    cached = served.get(url)
    if cached is None:
        return None
    if pin is not None and not _compatible(pin, cached.pin):
        return None
    out = []
    for start, stop in ranges:
        data = cached.get(start, stop)
        if data is None:
            return None
        out.append(data)
    return out, cached.pin if pin is None else pin.merge(cached.pin)


def note(url: str, ranges: Sequence[ByteRange], blobs: Sequence[bytes | memoryview], pin: ObjectPin) -> None:
    """Record a completed read when :func:`recording` is active."""
    recorder = _RECORDER.get()
    if recorder is None:
        return
    spans = recorder.spans.setdefault(url, {})
    for (start, _), blob in zip(ranges, blobs, strict=True):
        data = bytes(blob)
        if len(data) > len(spans.get(start, b"")):
            spans[start] = data
    recorder.pins[url] = recorder.pins[url].merge(pin) if url in recorder.pins else pin


def _compatible(a: ObjectPin, b: ObjectPin) -> bool:
    return all(x is None or y is None or x == y for x, y in
               ((a.size, b.size), (a.etag, b.etag), (a.mtime_ns, b.mtime_ns), (a.ctime_ns, b.ctime_ns),
                (a.inode, b.inode)))
