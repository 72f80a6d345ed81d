"""One process-wide thread pool for decoding the tiles of large reads in parallel.

zlib/libdeflate, the Rice decoder and numpy copies release the GIL, so the tiles of one
read decode on every core.  Small reads stay on the calling thread.  The pool is created
on first use and dropped in a forked child (a pool's threads do not survive a fork).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MIN_PARALLEL_JOBS", "run_parallel"]

MIN_PARALLEL_JOBS = 16
"""Fewer jobs than this run on the calling thread."""

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="cellcoadd-decode")
        return _pool


def _forget_pool() -> None:
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def run_parallel(jobs: Sequence[Callable[[], None]]) -> None:
    """Run ``jobs`` (independent, GIL-releasing) to completion; the first exception is re-raised.

    Jobs are grouped into one batch per pool worker, so a read of hundreds of tiles costs
    a handful of hand-offs.  A job running on a pool thread never submits to the pool, so
    nesting cannot deadlock.
    """
    workers = _workers()
    if len(jobs) < MIN_PARALLEL_JOBS or workers == 1 or threading.current_thread().name.startswith(
        "cellcoadd-decode"
    ):
        for job in jobs:
            job()
        return
    batches = [jobs[k::workers] for k in range(workers)]

    def run_batch(batch: Sequence[Callable[[], None]]) -> None:
        for job in batch:
            job()

    futures = [_get_pool().submit(run_batch, batch) for batch in batches[1:]]
    error: BaseException | None = None
    try:
        run_batch(batches[0])
    except BaseException as exc:  # re-raised after the other batches finish writing
        error = exc
    for future in futures:
        try:
            future.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error
