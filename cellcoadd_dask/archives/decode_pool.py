"""One process-wide thread pool for decoding the tiles of large reads in parallel.

zlib/libdeflate, the Rice decoder and numpy copies release the GIL, so the tiles of one
read decode on every core.  Small reads stay on the calling thread.  The pool is created
on first use and dropped in a forked child (a pool's threads do not survive a fork).

The thread that asks for a read always decodes its tiles itself; pool threads help only while
fewer threads than cores are decoding.  Several reads at once (the chunks of a dask graph on
its own threads) then decode one thread per core, with no helper competing for a core, and a
read left alone (the last chunk of a graph, a read from a single thread) gets helpers as soon
as a core frees up.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MIN_PARALLEL_JOBS", "run_indexed", "run_parallel"]

MIN_PARALLEL_JOBS = 16
"""Fewer jobs than this run on the calling thread."""

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_state = threading.Lock()
"""Guards :data:`_active` and :data:`_open` (taken before a call's own lock, never after it)."""
_active = 0
"""Threads running the jobs of :func:`run_indexed` calls (their callers and the helpers)."""
_open: list[_Call] = []
"""Calls of :func:`run_indexed` whose jobs may not all be taken yet, oldest first."""


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
    global _pool, _lock, _state, _active, _open
    _pool = None
    _lock = threading.Lock()
    _state = threading.Lock()
    _active = 0
    _open = []


os.register_at_fork(after_in_child=_forget_pool)


class _Call:
    """The jobs of one :func:`run_indexed` call, taken one at a time by its caller and helpers."""

    def __init__(self, count: int, job: Callable[[int], None]) -> None:
        self.pending = iter(range(count))
        self.job = job
        self.exhausted = False
        self.errors: list[BaseException] = []
        self.helpers = 0
        self.lock = threading.Lock()
        self.helper_left = threading.Condition(self.lock)

    def take(self) -> int | None:
        """The number of the next job, or ``None`` when none is left or a job has failed."""
        with self.lock:
            if self.errors or self.exhausted:
                return None
            job = next(self.pending, None)
            if job is None:
                self.exhausted = True
            return job

    def run(self, k: int) -> bool:
        """Run job ``k``; ``False`` (and the error kept for the caller) if it raised."""
        try:
            self.job(k)
        except BaseException as exc:  # re-raised by the caller once every running job is done
            with self.lock:
                self.errors.append(exc)
            return False
        return True

    def wait_for_helpers(self) -> None:
        with self.lock:
            while self.helpers:
                self.helper_left.wait()


def _recruit() -> None:
    """Start helpers on open calls while fewer threads than cores decode (``_state`` held)."""
    global _active
    workers = _workers()
    while _active < workers:
        call = next((c for c in _open if not c.exhausted and not c.errors), None)
        if call is None:
            return
        _active += 1
        with call.lock:
            call.helpers += 1
        _get_pool().submit(_help, call, workers)


def _help(call: _Call, workers: int) -> None:
    """A pool thread's share of ``call``: jobs until none is left or more threads than cores decode."""
    global _active
    retired = False
    try:
        while True:
            if _active > workers:  # a read started elsewhere: leave the core to its thread
                with _state:
                    if _active > workers:
                        _active -= 1
                        retired = True
                if retired:
                    return
            k = call.take()
            if k is None or not call.run(k):
                return
    finally:
        with _state:
            if not retired:
                _active -= 1
                _recruit()
        with call.lock:
            call.helpers -= 1
            call.helper_left.notify_all()


def run_parallel(jobs: Sequence[Callable[[], None]]) -> None:
    """Run ``jobs`` (independent, GIL-releasing) to completion: :func:`run_indexed` over a sequence."""
    run_indexed(len(jobs), lambda k: jobs[k]())


def run_indexed(count: int, job: Callable[[int], None]) -> None:
    """Run ``job(0)``, ..., ``job(count - 1)`` (independent, GIL-releasing); the first exception is re-raised.

    The calling thread takes the jobs one at a time; pool threads join it while fewer threads
    than cores are running jobs of this or any other call, and leave when more are (see the
    module's description).  After a failure no new job starts.  A job running on a pool thread
    never submits to the pool, so nesting cannot deadlock.  Jobs are numbers, so a call of
    thousands of jobs leaves nothing per job for the garbage collector to track.
    """
    global _active
    if count < MIN_PARALLEL_JOBS or _workers() == 1 or threading.current_thread().name.startswith(
        "cellcoadd-decode"
    ):
        for n in range(count):
            job(n)
        return
    call = _Call(count, job)
    with _state:
        _active += 1
        _open.append(call)
        _recruit()
    try:
        while (taken := call.take()) is not None and call.run(taken):
            pass
    finally:
        with _state:
            _active -= 1
            _open.remove(call)
            _recruit()
        call.wait_for_helpers()
    if call.errors:
        raise call.errors[0]
