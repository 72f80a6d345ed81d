"""The package's one fetch layer: byte ranges, whole objects and object ends, retried, pinned and counted.

Every read of the package goes through :func:`fetch_ranges` (byte ranges of an object of
known layout), :func:`fetch_object` (an object of unknown size, e.g. a Zarr chunk) or
:func:`fetch_suffix` (the last bytes of an object, e.g. a Zarr shard index), so a short read,
a server that ignores ``Range``, a missing or a replaced object always becomes a typed error
naming the URL and the byte range, transient failures are retried (:class:`FetchPolicy`),
and :func:`fetch_stats` sees every request.  How each protocol is read lives in
:mod:`cellcoadd_dask.fetch_backends`, which never imports this module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, overload

from .errors import FetchError, shown_url
from .fetch_backends.core import ObjectChangedError, ObjectNotFoundError, ObjectPin, filesystem
from .fetch_counters import FetchStats, fetch_stats, record, record_failure
from .fetch_merge import ByteRange, merge_ranges
from .fetch_policy import FetchPolicy
from .fetch_redact import redact, typed_error
from .fetch_steps import Backoff, backoff, fetch_steps, resume

__all__ = [
    "ByteRange",
    "FetchPolicy",
    "FetchStats",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "ObjectPin",
    "fetch_head",
    "fetch_object",
    "fetch_ranges",
    "fetch_stats",
    "fetch_suffix",
    "filesystem",
    "merge_ranges",
    "normalize_url",
    "redact",
]

def normalize_url(url: str | os.PathLike[str]) -> str:
    """A string URL; local paths become absolute paths."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise TypeError(f"Expected a path or URL, not {url!r}.")
    if "://" not in url and not url.startswith("memory:"):
        return os.path.abspath(os.path.expanduser(url))
    return url


@overload
def fetch_ranges(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None = ...,
    max_gap: int | None = ...,
    max_share: float | None = ...,
    copy: Literal[True] = ...,
    pin: ObjectPin | None = ...,
) -> list[bytes]: ...


@overload
def fetch_ranges(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None = ...,
    max_gap: int | None = ...,
    max_share: float | None = ...,
    copy: Literal[False],
    pin: ObjectPin | None = ...,
) -> list[memoryview]: ...


def fetch_ranges(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None = None,
    max_gap: int | None = None,
    max_share: float | None = None,
    copy: bool = True,
    pin: ObjectPin | None = None,
) -> list[bytes] | list[memoryview]:
    """Fetch byte ranges of one object, results in the caller's order.

    Nearby ranges are merged (gap below ``max_gap``, default the policy's
    ``coalesce_gap``; smallest gaps within ``max_share`` of the bytes wanted, default the
    policy's ``coalesce_share``; see :func:`merge_ranges`) and every merged range is one
    request; requests run concurrently (bounded), each is length-checked, and ranges that
    fail transiently are retried with exponential backoff (:class:`FetchPolicy`).  With
    ``copy=True`` each result is copied out of its merged buffer; ``copy=False`` returns
    read-only memoryviews into it.

    Parameters
    ----------
    url
        Local path or fsspec URL.
    ranges
        Half-open ``(start, stop)`` byte ranges.
    storage_options
        Passed to fsspec (never shown in errors).
    max_gap
        Coalescing threshold in bytes.
    max_share
        Most gap bytes read beyond ``max_gap``, as a share of the bytes wanted.
    copy
        Copy results out of merged buffers.
    pin
        The object's identity when it was opened: bytes of a changed object are refused.

    Raises
    ------
    ArchiveFormatError
        If a range lies beyond the end of the object (truncated file).
    ObjectChangedError
        If the object changed since ``pin`` was taken.
    FetchError
        If the object cannot be read (missing, permission denied, server ignoring
        ``Range``), or transient failures persist after the last retry.
    """
    return _fetch(url, ranges, storage_options=storage_options, max_gap=max_gap, max_share=max_share, copy=copy,
                  pin=pin)[0]


def fetch_head(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None = None,
    pin: ObjectPin | None = None,
) -> tuple[list[bytes], ObjectPin]:
    """Like :func:`fetch_ranges`, also returning what the responses told of the object (size, ETag).

    Used for the first read of an object, to pin it without a ``HEAD`` request (and for later
    reads that complete a ``pin``).
    """
    return _fetch(url, ranges, storage_options=storage_options, max_gap=None, max_share=None, copy=True, pin=pin)


def fetch_object(
    url: str,
    *,
    offset: int = 0,
    storage_options: Mapping[str, Any] | None = None,
    pin: ObjectPin | None = None,
    limit: int | None = None,
    cap: str | None = None,
) -> tuple[bytes, ObjectPin]:
    """The bytes of one object of unknown size (from ``offset`` to its end), in one request.

    Retried, pinned, counted (:func:`fetch_stats`) and redacted like :func:`fetch_ranges`; the
    answer that there is no such object counts as one request of no bytes.

    Parameters
    ----------
    url
        Local path or fsspec URL.
    offset
        First byte wanted; ``offset`` equal to the size gives no bytes.
    storage_options
        Passed to fsspec (never shown in errors).
    pin
        The object's identity when it was first read: bytes of a changed object are refused.
    limit
        Most bytes accepted: a larger object is refused without reading it all (on HTTP and
        S3 at most ``limit + 1`` bytes are asked for; locally its size is known first).
    cap
        The name of the cap ``limit`` comes from (``cellcoadd.limits.<cap>``), for the error.

    Returns
    -------
    data, pin
        The bytes, and what the answer told of the object (size, ETag or modification time).

    Raises
    ------
    LimitExceededError
        If the object holds more than ``limit`` bytes from ``offset`` on.
    ObjectNotFoundError
        If there is no such object (a :class:`FetchError` and a ``FileNotFoundError``).
    ObjectChangedError
        If the object changed since ``pin`` was taken.
    ArchiveFormatError
        If ``offset`` lies beyond the end of the object.
    FetchError
        If the object cannot be read, or transient failures persist after the last retry.
    """
    from .fetch_backends import Tail

    if offset < 0:
        raise FetchError(f"{shown_url(url)}: invalid offset {offset}.")
    return _fetch_tail(url, Tail(offset=offset, limit=limit, cap=cap), storage_options=storage_options, pin=pin)


def fetch_suffix(
    url: str,
    nbytes: int,
    *,
    storage_options: Mapping[str, Any] | None = None,
    pin: ObjectPin | None = None,
) -> tuple[bytes, ObjectPin]:
    """The last ``nbytes`` bytes of one object (all of it if it is shorter), in one request.

    A suffix ``Range`` request on HTTP and S3, ``fstat`` and ``pread`` on local files.
    Retried, pinned, counted and redacted like :func:`fetch_ranges`; errors as
    :func:`fetch_object`.

    Parameters
    ----------
    url
        Local path or fsspec URL.
    nbytes
        How many bytes at the end of the object (at least 1).
    storage_options
        Passed to fsspec (never shown in errors).
    pin
        The object's identity when it was first read.

    Returns
    -------
    data, pin
        The bytes and what the answer told of the object (its size, among others).
    """
    from .fetch_backends import Tail

    if nbytes < 1:
        raise FetchError(f"{shown_url(url)}: invalid suffix length {nbytes}.")
    return _fetch_tail(url, Tail(suffix=nbytes), storage_options=storage_options, pin=pin)


def _attempts(policy: FetchPolicy) -> Iterator[int]:
    """Attempt numbers, sleeping the backoff before every attempt after the first."""
    for attempt in range(policy.retries + 1):
        if attempt:
            time.sleep(backoff(policy, attempt))
        yield attempt


def _fetch_tail(
    url: str, tail: Any, *, storage_options: Mapping[str, Any] | None, pin: ObjectPin | None
) -> tuple[bytes, ObjectPin]:
    from .fetch_backends import Transient, read_tail_with_backend

    policy = FetchPolicy.current()
    record(url, [], call=True)
    seen = pin or ObjectPin()
    last: BaseException | None = None
    for _ in _attempts(policy):
        try:
            result = read_tail_with_backend(url, tail, storage_options=storage_options, pin=seen,
                                            timeout=policy.timeout)
        except Transient as exc:
            last = exc
            record_failure(url, 1)
            continue
        except Exception as exc:
            typed = typed_error(exc, url, storage_options)
            if typed is None:
                raise
            if isinstance(typed, ObjectNotFoundError):
                record(url, [(0, 0)])  # a request was answered: no such object, no bytes
            raise typed from None
        record(url, [(result.start, result.start + len(result.data))])
        return result.data, seen.merge(result.pin)
    raise FetchError(redact(
        f"{shown_url(url)}: reading {tail} failed after {policy.retries + 1} attempts: {last}", storage_options))


def _fetch(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Mapping[str, Any] | None,
    max_gap: int | None,
    max_share: float | None,
    copy: bool,
    pin: ObjectPin | None,
) -> tuple[Any, ObjectPin]:
    """:func:`fetch_steps` run here: each attempt through the backend, each backoff slept."""
    from .fetch_backends import fetch_with_backend

    policy = FetchPolicy.current()
    steps = fetch_steps(url, ranges, storage_options=storage_options, max_gap=max_gap, max_share=max_share,
                        copy=copy, pin=pin, policy=policy)
    answer: Any = None
    error: Exception | None = None
    while True:
        done, step = resume(steps, answer, error)
        if done:
            return step
        answer, error = None, None
        if isinstance(step, Backoff):
            time.sleep(step.seconds)
            continue
        try:
            answer = fetch_with_backend(url, step.ranges, storage_options=storage_options, pin=step.pin,
                                        timeout=policy.timeout, concurrency=policy.concurrency, buffers=step.buffers)
        except Exception as exc:
            error = exc
