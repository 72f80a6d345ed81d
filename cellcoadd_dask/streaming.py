"""Compute many small pieces of lazy arrays in parallel and hand them back in order.

Writers turn each band of a plane into encoded bytes with a function, and need the results
in file order while holding only a few bands at once.  :func:`ordered_map` keeps at most
``window`` pieces in flight:

- with a ``dask.distributed`` client as the default scheduler, each piece is one task on
  the cluster (workers read their own tiles; only results travel back);
- otherwise each piece is computed with dask's synchronous scheduler on a thread of a local
  pool (the codecs release the GIL, so pieces run on every core).
"""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import dask
import dask.array as da
import numpy as np

__all__ = ["default_workers", "distributed_client", "ordered_map"]

def default_workers() -> int:
    """Number of local threads used for writing (dask's ``num_workers`` setting, else the CPUs)."""
    configured = dask.config.get("num_workers", None)
    if isinstance(configured, int) and configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def distributed_client() -> Any:
    """The ``dask.distributed`` client that is the default scheduler, or ``None``."""
    if "distributed" not in sys.modules:
        # No client exists before the package is imported (and importing it takes ~0.4 s).
        return None
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _local[R](fn: Callable[[np.ndarray], R], array: da.Array) -> R:
    return fn(np.asarray(array.compute(scheduler="sync")))


def ordered_map[R](
    jobs: Iterable[tuple[Callable[[np.ndarray], R], da.Array]],
    *,
    window: int | None = None,
    workers: int | None = None,
) -> Iterator[R]:
    """Yield ``fn(array.compute())`` for each ``(fn, array)`` of ``jobs``, in order, several at once.

    Parameters
    ----------
    jobs
        Pure functions of one computed piece (picklable when a distributed client is used) and
        the lazy pieces; consumed lazily.
    window
        Most pieces in flight (default: twice the workers).
    workers
        Local threads (default :func:`default_workers`); ignored with a distributed client.
    """
    client = distributed_client()
    workers = workers or default_workers()
    window = window or 2 * workers
    pending: collections.deque[Any] = collections.deque()
    iterator = iter(jobs)
    if client is not None:
        for fn, array in iterator:
            pending.append(client.compute(dask.delayed(fn)(array)))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cellcoadd-write")
    try:
        for fn, array in iterator:
            future: Future[R] = pool.submit(_local, fn, array)
            pending.append(future)
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
