"""What the fetch layer read: :func:`fetch_stats` counts requests, bytes and retries (here and on workers).

Every request of :mod:`cellcoadd_dask.fetch` is recorded once, as ``(url, start, stop)`` of the
bytes it returned; failed attempts that were retried are counted apart.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FetchStats", "fetch_stats", "record", "record_failure"]

ByteRange = tuple[int, int]


@dataclass(eq=False)
class FetchStats:
    """What the fetch layer read while a :func:`fetch_stats` block was active.

    Attributes
    ----------
    calls
        Number of batched fetches.
    ranges
        Every merged range fetched, as ``(url, start, stop)``.
    failures
        Requests that failed transiently and were retried.
    """

    calls: int = 0
    ranges: list[tuple[str, int, int]] = field(default_factory=list)
    failures: int = 0

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
def fetch_stats(client: Any = None) -> Iterator[FetchStats]:
    """Count the requests and bytes fetched inside the ``with`` block.

    Parameters
    ----------
    client
        A ``dask.distributed`` client: also count what its workers fetch during the block
        (summed into the yielded object when the block ends).  Without one, this process only.
    """
    stats = FetchStats()
    with _observers_lock:
        _observers.append(stats)
    token = None
    if client is not None:
        import uuid

        token = uuid.uuid4().hex
        client.run(_start_remote, token)
    try:
        yield stats
    finally:
        with _observers_lock:
            _observers.remove(stats)
        if client is not None:
            for calls, ranges, failures in client.run(_stop_remote, token).values():
                stats.calls += calls
                stats.ranges.extend(ranges)
                stats.failures += failures


_remote: dict[str, FetchStats] = {}


def _start_remote(token: str) -> None:
    stats = FetchStats()
    with _observers_lock:
        _observers.append(stats)
        _remote[token] = stats


def _stop_remote(token: str) -> tuple[int, list[tuple[str, int, int]], int]:
    with _observers_lock:
        stats = _remote.pop(token)
        _observers.remove(stats)
    return stats.calls, stats.ranges, stats.failures


def record(url: str, merged: Sequence[ByteRange], *, call: bool = False) -> None:
    """Count a call (``call``) and the requests of ``merged`` in every active :func:`fetch_stats` block."""
    if _observers:
        with _observers_lock:
            for stats in _observers:
                stats.calls += int(call)
                stats.ranges.extend((url, a, b) for a, b in merged)


def record_failure(url: str, n: int) -> None:
    """Count ``n`` failed requests that will be retried."""
    if _observers and n:
        with _observers_lock:
            for stats in _observers:
                stats.failures += n
