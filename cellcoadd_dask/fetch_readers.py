"""Readers: formats' opening protocols as generators of reads, run one at a time or many at once.

A format that opens an object in a few dependent reads (a FITS container: the primary header,
then the tree and index it points at) writes its protocol once, as a *reader*: a generator that
yields :class:`Read` requests, is sent each answer ``(blobs, pin)`` (or has the read's error
thrown in) and returns what it opened.  Parsing lives in the reader; fetching in the driver:

- :func:`run_reader` answers each read with :func:`~cellcoadd_dask.fetch.fetch_head` on the
  calling thread (one object, as :func:`~cellcoadd_dask.open_coadd` opens it);
- :func:`run_readers` runs many readers at once.  Readers of HTTP(S) and S3 objects run as
  tasks on fsspec's event loop: every read is one step of :func:`~cellcoadd_dask.fetch_steps.fetch_steps`
  awaited there, so a hundred objects cost one hand-off between threads instead of one per
  request (a blocking request costs about twice the CPU of one among many in flight).
  Others (local files, other fsspec filesystems) run on a pool of threads.

Either way every read goes through the one fetch layer (served cache, retries, counting,
typed and redacted errors), and each reader runs in a copy of the caller's context
(:func:`~cellcoadd_dask.fetch_cache.served_from` and :func:`~cellcoadd_dask.fetch_cache.recording`
apply as on the caller's thread).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .fetch import fetch_head
from .fetch_backends import Route, fetch_on_loop, loop_route
from .fetch_backends.core import ObjectPin
from .fetch_merge import ByteRange
from .fetch_policy import FetchPolicy
from .fetch_steps import Backoff, fetch_steps, resume

__all__ = ["Read", "Reader", "run_reader", "run_readers"]

T = TypeVar("T")


@dataclass(frozen=True)
class Read:
    """What a reader asks for: byte ranges of one object (answered as :func:`~cellcoadd_dask.fetch.fetch_head`).

    Attributes
    ----------
    url
        The object.
    ranges
        Half-open ``(start, stop)`` byte ranges.
    pin
        The object's identity from an earlier read: bytes of a changed object are refused.
    """

    url: str
    ranges: Sequence[ByteRange]
    pin: ObjectPin | None = None


Reader = Generator[Read, tuple[list[bytes], ObjectPin], T]
"""A reader returning ``T``: yields :class:`Read`, is sent ``(blobs, pin)``."""

_OnLoop = tuple[int, str, Route, Reader[T]]
"""A reader run on the event loop: its place in the results, its object and how that is read."""


def run_reader[T](reader: Reader[T], storage_options: Mapping[str, Any] | None) -> T:
    """Run ``reader`` on this thread, each read fetched with :func:`~cellcoadd_dask.fetch.fetch_head`."""
    answer: Any = None
    error: Exception | None = None
    while True:
        done, read = resume(reader, answer, error)
        if done:
            return read
        answer, error = None, None
        try:
            answer = fetch_head(read.url, read.ranges, storage_options=storage_options, pin=read.pin)
        except Exception as exc:
            error = exc


def run_readers[T](
    readers: Sequence[tuple[str, Reader[T]]], storage_options: Mapping[str, Any] | None, *, threads: int = 16
) -> list[T | Exception]:
    """Run readers at once; each one's result, or the exception it ended with, in the order given.

    Parameters
    ----------
    readers
        ``(url, reader)``: the object each reader reads (it chooses the event loop or a thread).
    storage_options
        Passed to fsspec for every read.
    threads
        Readers run at once on threads (the others); on the event loop, at most the fetch
        policy's ``concurrency`` readers have reads in flight.
    """
    out: list[T | Exception | None] = [None] * len(readers)
    on_loop: list[_OnLoop[T]] = []
    on_threads: list[tuple[int, Reader[T]]] = []
    for k, (url, reader) in enumerate(readers):
        try:
            route = loop_route(url, storage_options)
        except Exception as exc:
            out[k] = exc
            continue
        if route is None:
            on_threads.append((k, reader))
        else:
            on_loop.append((k, url, route, reader))
    context = contextvars.copy_context()
    pool = ThreadPoolExecutor(max_workers=min(threads, len(on_threads))) if on_threads else None
    try:
        futures = [(k, pool.submit(context.copy().run, _guarded, run_reader, reader, storage_options))
                   for k, reader in on_threads] if pool is not None else []
        for group in _by_loop(on_loop):
            for k, result in zip([item[0] for item in group], _run_on_loop(group, storage_options, context),
                                 strict=True):
                out[k] = result
        for k, future in futures:
            out[k] = future.result()
    finally:
        if pool is not None:
            pool.shutdown()
    return out  # type: ignore[return-value]


def _guarded(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or the exception it raised (returned, as the loop's readers return theirs)."""
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def _by_loop[T](items: list[_OnLoop[T]]) -> list[list[_OnLoop[T]]]:
    """The readers grouped by the event loop their filesystem runs on (one for every fsspec default)."""
    groups: dict[int, list[_OnLoop[T]]] = {}
    for item in items:
        groups.setdefault(id(item[2][0].loop), []).append(item)
    return list(groups.values())


def _run_on_loop[T](group: list[_OnLoop[T]], storage_options: Mapping[str, Any] | None,
                    context: contextvars.Context) -> list[Any]:
    """Run ``group`` (readers of one event loop) as tasks there; their results or exceptions, in order."""
    from fsspec.asyn import sync

    policy = FetchPolicy.current()
    loop = group[0][2][0].loop

    async def main() -> list[Any]:
        limit = asyncio.Semaphore(max(1, policy.concurrency))
        running = asyncio.get_running_loop()
        tasks = [running.create_task(_reader_task(reader, url, route, storage_options, policy, limit),
                                     context=context.copy())
                 for _, url, route, reader in group]
        return await asyncio.gather(*tasks, return_exceptions=True)

    return sync(loop, main)


async def _reader_task[T](reader: Reader[T], url: str, route: Route, storage_options: Mapping[str, Any] | None,
                          policy: FetchPolicy, limit: asyncio.Semaphore) -> T:
    answer: Any = None
    error: Exception | None = None
    while True:
        done, read = resume(reader, answer, error)
        if done:
            return read
        answer, error = None, None
        try:
            target = route if read.url == url else loop_route(read.url, storage_options)
            if target is None or target[0].loop is not route[0].loop:
                raise ValueError(f"a reader of {url} read another storage's object")
            async with limit:
                answer = await _fetch_on_loop(read, target, storage_options, policy)
        except Exception as exc:
            error = exc


async def _fetch_on_loop(read: Read, route: Route, storage_options: Mapping[str, Any] | None,
                         policy: FetchPolicy) -> tuple[list[bytes], ObjectPin]:
    """One read, as :func:`~cellcoadd_dask.fetch.fetch_head` would do it, awaited on the loop."""
    steps = fetch_steps(read.url, read.ranges, storage_options=storage_options, max_gap=None, max_share=None,
                        copy=True, pin=read.pin, policy=policy)
    answer: Any = None
    error: Exception | None = None
    while True:
        done, step = resume(steps, answer, error)
        if done:
            return step
        answer, error = None, None
        if isinstance(step, Backoff):
            await asyncio.sleep(step.seconds)
            continue
        try:
            answer = await fetch_on_loop(route, read.url, step.ranges, step.pin, policy.timeout, policy.concurrency)
        except Exception as exc:
            error = exc
