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
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, overload

from . import fetch_cache
from .errors import ArchiveFormatError, CellCoaddError, FetchError, shown_url
from .fetch_backends.core import ObjectChangedError, ObjectNotFoundError, ObjectPin, filesystem
from .fetch_counters import FetchStats, fetch_stats, record, record_failure
from .fetch_merge import ByteRange, merge_ranges
from .fetch_policy import FetchPolicy

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


def redact(text: str, storage_options: Mapping[str, Any] | None) -> str:
    """``text`` with every secret-looking value of ``storage_options`` replaced by ``***``."""
    for value in _secrets(storage_options):
        text = text.replace(value, "***")
    return text


_SECRET_KEYS = ("key", "secret", "token", "password", "passwd", "credential", "auth", "session", "signature")


def _secrets(options: Any, parent_secret: bool = False) -> Iterator[str]:
    if isinstance(options, Mapping):
        for k, v in options.items():
            secret = parent_secret or any(word in str(k).lower() for word in _SECRET_KEYS)
            yield from _secrets(v, secret)
    elif isinstance(options, list | tuple):
        for v in options:
            yield from _secrets(v, parent_secret)
    elif isinstance(options, str) and parent_secret and len(options) >= 4:
        yield options


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
            delay = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random()))
        yield attempt


def _typed(exc: BaseException, url: str, storage_options: Mapping[str, Any] | None) -> CellCoaddError | None:
    """The typed, redacted error a non-transient backend failure becomes (``None``: not ours to type)."""
    if isinstance(exc, CellCoaddError):
        return _redacted(exc, storage_options)
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFoundError(redact(f"{shown_url(url)}: {_what(exc)}", storage_options))
    if isinstance(exc, PermissionError):
        return FetchError(redact(f"{shown_url(url)}: {_what(exc)}", storage_options))
    return None


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
            typed = _typed(exc, url, storage_options)
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
    from .fetch_backends import PartialResult, Transient, fetch_with_backend

    if not ranges:
        return [], pin or ObjectPin()
    for start, stop in ranges:
        if start < 0 or stop < start:
            raise FetchError(f"{shown_url(url)}: invalid byte range [{start}, {stop}).")
    hit = fetch_cache.lookup(url, ranges, pin)
    if hit is not None:  # bytes a tract index holds: no request
        cached, known = hit
        return (cached if copy else [memoryview(b) for b in cached]), known
    policy = FetchPolicy.current()
    record(url, [], call=True)
    merged, placement = merge_ranges(ranges, policy.coalesce_gap if max_gap is None else max_gap,
                                     policy.coalesce_share if max_share is None else max_share)
    blobs: list[bytes | memoryview | None] = [None] * len(merged)
    todo = list(range(len(merged)))
    seen = pin or ObjectPin()
    last: BaseException | None = None
    for _ in _attempts(policy):
        wanted = [merged[k] for k in todo]
        try:
            result: PartialResult = fetch_with_backend(url, wanted, storage_options=storage_options, pin=seen,
                                                       timeout=policy.timeout, concurrency=policy.concurrency,
                                                       buffers=not copy)
        except Transient as exc:
            last = exc
            record_failure(url, len(wanted))
            continue
        except (CellCoaddError, FileNotFoundError, PermissionError) as exc:
            raise _typed(exc, url, storage_options) or exc from None
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
            typed = _typed(error, url, storage_options) if error is not None else None
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


def _what(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file."
    if isinstance(exc, PermissionError):
        return f"access denied (check the credentials in storage_options): {exc}"
    return str(exc)


def _redacted(exc: CellCoaddError, storage_options: Mapping[str, Any] | None) -> CellCoaddError:
    if not list(_secrets(storage_options)):
        return exc
    text = str(exc)
    clean = redact(text, storage_options)
    if clean == text:
        return exc
    if isinstance(exc, ArchiveFormatError):
        return ArchiveFormatError(redact(exc.args[0] if exc.args else text, storage_options))
    return type(exc)(clean)
