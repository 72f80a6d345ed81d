"""HTTP(S): GETs on fsspec's own aiohttp session (its storage options apply).

Ranged GETs carry ``If-Match`` when the object's ETag is known; the status, ``Content-Range``
and body length of every answer are checked.  Presigned S3 URLs go through the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..errors import FetchError, shown_url
from .core import (
    TRANSIENT_STATUS,
    ObjectPin,
    Tail,
    TailResult,
    Transient,
    changed_error,
    describe,
    not_found,
    parse_content_range,
    short_error,
)

__all__ = ["Forbidden", "http_range", "http_tail"]


class Forbidden(Exception):
    """A presigned GET was refused (HTTP ``status``): renew the signature once, then report the refusal."""

    def __init__(self, status: int = 403) -> None:
        super().__init__(status)
        self.status = status


async def _get(fs: Any, url: str, target: str | None, range_header: str | None, pin: ObjectPin | None,
               timeout: float, tail: Tail | None = None) -> tuple[int, bytes, Mapping[str, str], str]:
    """One GET; returns ``(status, body, headers, reason)`` or raises the errors every GET shares.

    With a ``tail`` that has a limit, an object larger than the limit (by its ``Content-Range``
    or ``Content-Length``) is refused before its body is read.
    """
    import aiohttp

    kw = dict(fs.kwargs)
    headers = dict(kw.pop("headers", None) or {})
    if range_header is not None:
        headers["Range"] = range_header
    if pin is not None and pin.etag is not None:
        headers["If-Match"] = pin.etag
    kw.pop("timeout", None)
    session = await fs.set_session()
    try:
        async with session.get(target if target is not None else fs.encode_url(url), headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout), **kw) as r:
            status = r.status
            if status == 412:
                raise changed_error(url)
            if status == 404:
                raise not_found(url, " (HTTP 404)")
            if status in (400, 403) and target is not None:
                # A presigned URL refused (400: a signature some servers reject as malformed, such as
                # one for another region): sign anew once.
                raise Forbidden(status)
            if status in TRANSIENT_STATUS:
                raise Transient(f"HTTP {status}")
            if status >= 400 and status != 416:
                raise FetchError(f"{shown_url(url)}: HTTP {status} {r.reason or ''}".rstrip() + ".")
            if tail is not None and status in (200, 206):
                tail.check_size(url, _announced_size(status, r.headers))
            body = b"" if status == 416 else await r.read()
            return status, body, r.headers.copy(), r.reason or ""  # case-insensitive
    except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as exc:
        raise Transient(describe(exc)) from exc


def _announced_size(status: int, headers: Mapping[str, str]) -> int | None:
    """The object's size as the headers of a 200 or 206 answer announce it, if they do."""
    if status == 206:
        return parse_content_range(headers.get("Content-Range"))[2]
    length = headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


async def http_range(fs: Any, url: str, start: int, stop: int, pin: ObjectPin | None, timeout: float,
                     semaphore: asyncio.Semaphore, target: str | None = None) -> tuple[bytes, ObjectPin]:
    """One ranged GET of ``target`` (default ``url``; a presigned URL for S3), named ``url`` in errors."""
    async with semaphore:
        status, body, headers, _ = await _get(fs, url, target, f"bytes={start}-{stop - 1}", pin, timeout)
    _, _, total = parse_content_range(headers.get("Content-Range"))
    if status == 416:
        raise short_error(start, stop, max(0, (total or start) - start), url)
    seen = ObjectPin(size=total, etag=headers.get("ETag"))
    if status == 200:
        # The server ignored Range and sent the whole object: only acceptable if that is what was asked.
        if start == 0 and len(body) == stop:
            seen = ObjectPin(size=len(body), etag=seen.etag)
        else:
            raise FetchError(
                f"{shown_url(url)}: asked for bytes [{start}, {stop}) ({stop - start} bytes) and got {len(body)} "
                "with status 200 (the server ignores Range requests)."
            )
    if len(body) != stop - start:
        if seen.size is not None and stop > seen.size:
            raise short_error(start, stop, len(body), url)
        raise Transient(f"short body: {len(body)} of {stop - start} bytes")
    return body, seen


async def http_tail(fs: Any, url: str, tail: Tail, pin: ObjectPin | None, timeout: float,
                    target: str | None = None) -> TailResult:
    """One GET of the whole object or of its end (suffix or open-ended ``Range``)."""
    status, body, headers, _ = await _get(fs, url, target, tail.header(), pin, timeout, tail)
    first, last, total = parse_content_range(headers.get("Content-Range"))
    etag = headers.get("ETag")
    if status == 416:
        # Nothing to send: an empty object (suffix), or an offset at or past the end.
        if total is not None and tail.start(total) == total:
            return TailResult(b"", total, ObjectPin(size=total, etag=etag))
        start = tail.offset
        raise short_error(start, start + 1, 0, url)
    if status == 200:
        size = len(body)  # aiohttp raises ClientPayloadError (transient) on a body shorter than announced
        tail.check_size(url, size)
        start = tail.start(size)
        if start and tail.header() is not None:
            raise FetchError(
                f"{shown_url(url)}: asked for {tail} and got all {size} bytes with status 200 "
                "(the server ignores Range requests)."
            )
        return TailResult(body[start:], start, ObjectPin(size=size, etag=etag))
    if first is None or last is None or total is None:
        raise FetchError(f"{shown_url(url)}: HTTP {status} without a valid Content-Range for {tail}.")
    tail.check_size(url, total)
    if len(body) != last + 1 - first:
        raise Transient(f"short body: {len(body)} of {last + 1 - first} bytes")
    if first != tail.start(total) or last + 1 != total:
        raise FetchError(f"{shown_url(url)}: asked for {tail} and got bytes [{first}, {last + 1}) of {total}.")
    return TailResult(body, first, ObjectPin(size=total, etag=etag))
