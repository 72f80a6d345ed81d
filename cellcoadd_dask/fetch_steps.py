"""One fetch of byte ranges as steps, without I/O: what both the threads' and the event loop's callers run.

:func:`fetch_steps` holds everything a fetch decides (validation, the served cache, merging,
retries with backoff, counting, typed and redacted errors) and leaves the I/O to its caller:
:func:`cellcoadd_dask.fetch.fetch_ranges` answers each :class:`Attempt` through the backend on
the calling thread; :mod:`cellcoadd_dask.fetch_readers` awaits it on fsspec's event loop.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import fetch_cache
from .errors import CellCoaddError, FetchError, shown_url
from .fetch_backends.core import ObjectPin
from .fetch_counters import record, record_failure
from .fetch_merge import ByteRange, merge_ranges
from .fetch_policy import FetchPolicy
from .fetch_redact import redact, typed_error

__all__ = ["Attempt", "Backoff", "FetchSteps", "backoff", "fetch_steps", "resume"]


def backoff(policy: FetchPolicy, attempt: int) -> float:
    """Seconds to wait before attempt number ``attempt`` (``>= 1``): doubling, capped, with jitter."""
    delay = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
    return delay * (0.5 + random.random())


@dataclass(frozen=True)
class Attempt:
    """A step of :func:`fetch_steps`: fetch these merged ranges once (answer: the backend's ``PartialResult``)."""

    ranges: list[ByteRange]
    pin: ObjectPin
    buffers: bool


@dataclass(frozen=True)
class Backoff:
    """A step of :func:`fetch_steps`: wait this many seconds (answer: ``None``)."""

    seconds: float


FetchSteps = Generator[Attempt | Backoff, Any, tuple[Any, ObjectPin]]


def resume(steps: Generator[Any, Any, Any], answer: Any, error: Exception | None) -> tuple[bool, Any]:
    """Resume ``steps`` with ``answer`` (or throw ``error`` into it).

    Returns ``(True, result)`` once the generator is done, else ``(False, its next step)``.
    """
    try:
        return False, steps.throw(error) if error is not None else steps.send(answer)
    except StopIteration as stop:
        return True, stop.value


def fetch_steps(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None,
    max_gap: int | None,
    max_share: float | None,
    copy: bool,
    pin: ObjectPin | None,
    policy: FetchPolicy,
) -> FetchSteps:
    """How one fetch of ``ranges`` proceeds, without doing any I/O.

    Yields :class:`Attempt` and :class:`Backoff` steps, is sent each attempt's
    ``PartialResult`` (or has the attempt's exception thrown in), and returns ``(blobs, pin)``
    as :func:`~cellcoadd_dask.fetch.fetch_head` does.

    Validation, the served cache, merging, retries of transient failures, counting, typing
    and redaction of errors all live here, so a caller on a thread (:func:`~cellcoadd_dask.fetch.fetch_ranges`)
    and one on an event loop (:mod:`cellcoadd_dask.fetch_readers`) fetch alike.
    """
    from .fetch_backends import PartialResult, Transient

    if not ranges:
        return [], pin or ObjectPin()
    for start, stop in ranges:
        if start < 0 or stop < start:
            raise FetchError(f"{shown_url(url)}: invalid byte range [{start}, {stop}).")
    hit = fetch_cache.lookup(url, ranges, pin)
    if hit is not None:  # bytes a tract index holds: no request
        cached, known = hit
        return (cached if copy else [memoryview(b) for b in cached]), known
    record(url, [], call=True)
    merged, placement = merge_ranges(ranges, policy.coalesce_gap if max_gap is None else max_gap,
                                     policy.coalesce_share if max_share is None else max_share)
    blobs: list[bytes | memoryview | None] = [None] * len(merged)
    todo = list(range(len(merged)))
    seen = pin or ObjectPin()
    last: BaseException | None = None
    for attempt in range(policy.retries + 1):
        if attempt:
            yield Backoff(backoff(policy, attempt))
        wanted = [merged[k] for k in todo]
        try:
            result: PartialResult = yield Attempt(wanted, seen, not copy)
        except Transient as exc:
            last = exc
            record_failure(url, len(wanted))
            continue
        except (CellCoaddError, FileNotFoundError, PermissionError) as exc:
            raise typed_error(exc, url, storage_options) or exc from None
        seen = seen.merge(result.pin)
        failed = []
        for k, blob, error in zip(todo, result.blobs, result.errors, strict=True):
            if blob is not None:
                blobs[k] = blob
                record(url, [merged[k]])
                continue
            if isinstance(error, Transient):
                failed.append(k)
                last = error
                continue
            typed = typed_error(error, url, storage_options) if error is not None else None
            if typed is not None:
                raise typed from None
            message = f"{shown_url(url)}: reading bytes {merged[k]} failed: {error!r}"
            raise FetchError(redact(message, storage_options)) from None
        record_failure(url, len(failed))
        todo = failed
        if not todo:
            break
    if todo:
        start, stop = merged[todo[0]]
        raise FetchError(redact(
            f"{shown_url(url)}: reading {len(todo)} byte range(s) (first [{start}, {stop})) failed after "
            f"{policy.retries + 1} attempts: {last}", storage_options))
    full = [b for b in blobs if b is not None]
    out: list[Any]
    if len(merged) == len(ranges) and all(n == len(full[m]) and off == 0 for m, off, n in placement):
        out = [full[m] for m, _, _ in placement]
    else:
        views = [memoryview(b) for b in full]
        if not copy:
            out = [views[m][off : off + n] for m, off, n in placement]
        else:
            out = [bytes(views[m][off : off + n]) for m, off, n in placement]
    fetch_cache.note(url, ranges, out, seen)
    return out, seen
