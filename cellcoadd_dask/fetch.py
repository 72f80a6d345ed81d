"""Byte-range fetching over fsspec: one batched ``cat_ranges`` call, merged ranges, checked lengths.

Every read of the package goes through :func:`fetch_ranges`, so a short read, a server
that ignores ``Range`` or a missing file always becomes a typed error naming the URL
and the byte range.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import fsspec
from fsspec.core import url_to_fs

from .errors import ArchiveFormatError, FetchError

__all__ = ["ByteRange", "FetchStats", "fetch_ranges", "fetch_stats", "filesystem", "merge_ranges", "normalize_url"]

ByteRange = tuple[int, int]
"""A half-open byte range ``(start, stop)`` from the start of a file."""


@dataclass(eq=False)
class FetchStats:
    """What :func:`fetch_ranges` read while a :func:`fetch_stats` block was active (this process only).

    Attributes
    ----------
    calls
        Number of batched fetches.
    ranges
        Every merged range requested, as ``(url, start, stop)``.
    """

    calls: int = 0
    ranges: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Number of byte ranges requested (one request each on HTTP and object stores)."""
        return len(self.ranges)

    @property
    def nbytes(self) -> int:
        """Total bytes fetched."""
        return sum(b - a for _, a, b in self.ranges)


_observers: list[FetchStats] = []
_observers_lock = threading.Lock()


@contextlib.contextmanager
def fetch_stats() -> Iterator[FetchStats]:
    """Count the requests and bytes fetched by this process inside the ``with`` block."""
    stats = FetchStats()
    with _observers_lock:
        _observers.append(stats)
    try:
        yield stats
    finally:
        with _observers_lock:
            _observers.remove(stats)


def _record(url: str, merged: Sequence[ByteRange]) -> None:
    if _observers:
        with _observers_lock:
            for stats in _observers:
                stats.calls += 1
                stats.ranges.extend((url, a, b) for a, b in merged)


def normalize_url(url: str | os.PathLike[str]) -> str:
    """A string URL; local paths become absolute paths."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise TypeError(f"Expected a path or URL, not {url!r}.")
    if "://" not in url and not url.startswith("memory:"):
        return os.path.abspath(os.path.expanduser(url))
    return url


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem (cached per options by fsspec) and the path within it."""
    try:
        return url_to_fs(url, **dict(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise FetchError(f"{url}: cannot open a filesystem for this URL ({exc}).") from exc


def merge_ranges(ranges: Sequence[ByteRange], max_gap: int = 0) -> tuple[list[ByteRange], list[tuple[int, int, int]]]:
    """Merge overlapping or nearly adjacent ranges.

    Returns
    -------
    merged
        The ranges to fetch, sorted.
    placement
        For each input range, ``(index into merged, offset within it, length)``.
    """
    order = sorted(range(len(ranges)), key=lambda k: ranges[k])
    merged: list[list[int]] = []
    placement: list[tuple[int, int, int]] = [(0, 0, 0)] * len(ranges)
    for k in order:
        start, stop = ranges[k]
        if merged and start <= merged[-1][1] + max_gap:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
        placement[k] = (len(merged) - 1, start - merged[-1][0], stop - start)
    return [(a, b) for a, b in merged], placement


@overload
def fetch_ranges(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None = ...,
    max_gap: int = ...,
    copy: Literal[True] = ...,
) -> list[bytes]: ...


@overload
def fetch_ranges(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None = ...,
    max_gap: int = ...,
    copy: Literal[False],
) -> list[memoryview]: ...


def fetch_ranges(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None = None,
    max_gap: int = 0,
    copy: bool = True,
) -> list[bytes] | list[memoryview]:
    """Fetch byte ranges of one file in a single batched call, results in the caller's order.

    Adjacent ranges are merged into one request.  With ``copy=True`` each result is
    copied out of the merged buffer so a small range does not keep a big buffer alive;
    ``copy=False`` returns read-only memoryviews into it instead (no copy), which is
    what a reader that decodes every range at once wants.

    Raises
    ------
    ArchiveFormatError
        If a range comes back short: the file ends before it (truncated file).
    FetchError
        If the file cannot be read, or a range comes back longer than asked (a server
        that ignores ``Range``).
    """
    if not ranges:
        return []
    for start, stop in ranges:
        if start < 0 or stop < start:
            raise FetchError(f"{url}: invalid byte range [{start}, {stop}).")
    merged, placement = merge_ranges(ranges, max_gap)
    fs, path = filesystem(url, storage_options)
    _record(url, merged)
    try:
        blobs = fs.cat_ranges([path] * len(merged), [a for a, _ in merged], [b for _, b in merged], on_error="return")
    except Exception as exc:
        raise FetchError(f"{url}: reading {len(merged)} byte range(s) failed: {exc!r}") from exc
    for (start, stop), blob in zip(merged, blobs, strict=True):
        if isinstance(blob, BaseException):
            if isinstance(blob, FileNotFoundError):
                raise FetchError(f"{url}: no such file.") from blob
            raise FetchError(f"{url}: reading bytes [{start}, {stop}) failed: {blob!r}") from blob
        if len(blob) < stop - start:
            raise ArchiveFormatError(
                f"file ends inside the byte range asked for ({len(blob)} of {stop - start} bytes): truncated",
                url=url,
                byte_range=(start, stop),
            )
        if len(blob) != stop - start:
            raise FetchError(
                f"{url}: asked for bytes [{start}, {stop}) ({stop - start} bytes) and got {len(blob)} "
                "(file truncated, or the server ignores Range requests)."
            )
    if len(merged) == len(ranges):
        out: list[bytes] = [b""] * len(ranges)
        for k, (m, _, _) in enumerate(placement):
            out[k] = blobs[m]
        return out
    views = [memoryview(b) for b in blobs]
    if not copy:
        return [views[m][off : off + n] for m, off, n in placement]
    return [bytes(views[m][off : off + n]) for m, off, n in placement]
