"""Counting what a process asks of S3 through s3fs, and its peak memory (for the tract benchmarks).

lsst-images reads S3 through s3fs (``lsst.resources``); wrapping s3fs's one entry point for S3
calls counts its requests and the body bytes it reads in every process that installs the
counter (the client and each ``dask.distributed`` worker).  cellcoadd_dask's own counters
(``cellcoadd_dask.fetch_stats``) count its reads the same way the tests do.
"""

from __future__ import annotations

import resource
import threading
from typing import Any


class _CountedBody:
    """A ``GetObject`` body that adds the bytes actually read from it to ``counts["bytes"]``."""

    def __init__(self, body: Any, counts: dict[str, int], lock: threading.Lock) -> None:
        self._body = body
        self._counts = counts
        self._lock = lock

    async def read(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = await self._body.read(*args, **kwargs)
        with self._lock:
            self._counts["bytes"] += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


def install_s3_counter() -> None:
    """Count every S3 call s3fs makes in this process, and the body bytes read from ``GetObject`` answers.

    The counts live on the s3fs class itself so that they survive between separate
    ``client.run`` calls on a worker.  Installing twice is harmless.
    """
    from s3fs import S3FileSystem

    if getattr(S3FileSystem, "_bench_counts", None) is not None:
        return
    original = S3FileSystem._call_s3
    lock = threading.Lock()
    counts = {"calls": 0, "get_object": 0, "bytes": 0}

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        out = await original(self, method, *args, **kwargs)
        with lock:
            counts["calls"] += 1
            if method == "get_object":
                counts["get_object"] += 1
        if method == "get_object" and "Body" in out:
            out["Body"] = _CountedBody(out["Body"], counts, lock)
        return out

    S3FileSystem._call_s3 = counted
    S3FileSystem._bench_counts = counts
    S3FileSystem._bench_lock = lock


def s3_counts(reset: bool = False) -> dict[str, int]:
    """This process's S3 counts since the last reset (installing the counter if needed)."""
    from s3fs import S3FileSystem

    install_s3_counter()
    counts: dict[str, int] = S3FileSystem._bench_counts
    with S3FileSystem._bench_lock:
        snapshot = dict(counts)
        if reset:
            for key in counts:
                counts[key] = 0
    return snapshot


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
