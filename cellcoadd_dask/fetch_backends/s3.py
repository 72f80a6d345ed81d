"""S3: GETs on presigned URLs through plain aiohttp, or ``GetObject`` calls through s3fs.

Credentials and endpoint come from the storage options (s3fs).  ``IfMatch`` is sent when the
object's ETag is known.  Presigned GETs cost a fraction of the CPU of a botocore call per
request: it matters when hundreds of objects are opened at once.
"""

from __future__ import annotations

import asyncio
import errno
import re
import time
from typing import Any

from ..errors import ArchiveFormatError, FetchError, shown_url
from .core import (
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

__all__ = ["presigned", "s3_range", "s3_tail"]

_PRESIGN_SECONDS = 3600
_presigned: dict[tuple[str, str], tuple[str, float]] = {}


def _presign(fs: Any, path: str, *, renew: bool = False) -> str | None:
    """A presigned GET URL of ``path`` (cached per filesystem for most of its lifetime), or ``None``."""
    key = (str(getattr(fs, "_fs_token", id(fs))), path)
    now = time.monotonic()
    cached = _presigned.get(key)
    if cached is not None and not renew and cached[1] > now:
        return cached[0]
    try:
        url = fs.url(path, expires=_PRESIGN_SECONDS)
    except Exception:  # e.g. a configuration botocore cannot presign: use signed API calls instead
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    _presigned[key] = (url, now + _PRESIGN_SECONDS - 300)
    return url


def presigned(fs: Any, path: str, *, renew: bool = False) -> tuple[Any, str] | None:
    """``(http filesystem, presigned URL)`` for plain-HTTP reads of an S3 object, or ``None``."""
    import fsspec

    _, _, version = fs.split_path(path)
    if version or getattr(fs, "requester_pays", False) or getattr(fs, "req_kw", None):
        return None
    http = fsspec.filesystem("http")
    if http.loop is not fs.loop:
        return None
    target = _presign(fs, path, renew=renew)
    if target is None:
        return None
    return http, target


async def _get_object(fs: Any, url: str, path: str, range_header: str | None, pin: ObjectPin | None,
                      timeout: float, tail: Tail | None = None) -> tuple[bytes, dict[str, Any]]:
    bucket, key, version = fs.split_path(path)
    kw: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if range_header is not None:
        kw["Range"] = range_header
    if version:
        kw["VersionId"] = version
    if pin is not None and pin.etag is not None:
        kw["IfMatch"] = pin.etag
    try:
        resp = await asyncio.wait_for(fs._call_s3("get_object", **kw), timeout)
        try:
            if tail is not None:  # refuse an object over the limit before reading its body
                total = parse_content_range(resp.get("ContentRange"))[2]
                length = resp.get("ContentLength")
                tail.check_size(url, total if total is not None else length if isinstance(length, int) else None)
            body = await asyncio.wait_for(resp["Body"].read(), timeout)
        finally:
            resp["Body"].close()
    except FileNotFoundError as exc:
        raise not_found(url) from exc
    except (PermissionError, ArchiveFormatError):
        raise
    except OSError as exc:
        text = str(exc)
        if exc.errno == errno.EINVAL and re.search(r"pre-?condition", text, re.IGNORECASE):
            raise changed_error(url) from exc
        if "InvalidRange" in text or "Range Not Satisfiable" in text or "416" in text:
            raise _Unsatisfiable() from exc
        raise Transient(describe(exc)) from exc
    except Exception as exc:  # botocore/aiohttp transport errors
        raise Transient(describe(exc)) from exc
    return body, resp


class _Unsatisfiable(Exception):
    """S3 answered ``InvalidRange``."""


async def s3_range(fs: Any, url: str, path: str, start: int, stop: int, pin: ObjectPin | None,
                   timeout: float, semaphore: asyncio.Semaphore) -> tuple[bytes, ObjectPin]:
    """One ranged ``GetObject`` call."""
    async with semaphore:
        try:
            body, resp = await _get_object(fs, url, path, f"bytes={start}-{stop - 1}", pin, timeout)
        except _Unsatisfiable:
            raise short_error(start, stop, 0, url) from None
    _, _, total = parse_content_range(resp.get("ContentRange"))
    seen = ObjectPin(size=total, etag=resp.get("ETag"))
    if len(body) != stop - start:
        if seen.size is not None and stop > seen.size:
            raise short_error(start, stop, len(body), url)
        raise Transient(f"short body: {len(body)} of {stop - start} bytes")
    return body, seen


async def s3_tail(fs: Any, url: str, path: str, tail: Tail, pin: ObjectPin | None, timeout: float) -> TailResult:
    """One ``GetObject`` call for the whole object or its end."""
    try:
        body, resp = await _get_object(fs, url, path, tail.header(), pin, timeout, tail)
    except _Unsatisfiable:
        if tail.suffix is not None:  # an empty object has no last bytes
            return TailResult(b"", 0, ObjectPin(size=0, etag=None))
        raise short_error(tail.offset, tail.offset + 1, 0, url) from None
    etag = resp.get("ETag")
    first, last, total = parse_content_range(resp.get("ContentRange"))
    if first is None or last is None or total is None:
        size = len(body)
        length = resp.get("ContentLength")
        if isinstance(length, int) and length != size:
            raise Transient(f"short body: {size} of {length} bytes")
        tail.check_size(url, size)
        start = tail.start(size)
        if start and tail.header() is not None:
            raise FetchError(f"{shown_url(url)}: asked for {tail} and got all {size} bytes (Range ignored).")
        return TailResult(body[start:], start, ObjectPin(size=size, etag=etag))
    tail.check_size(url, total)
    if len(body) != last + 1 - first:
        raise Transient(f"short body: {len(body)} of {last + 1 - first} bytes")
    if first != tail.start(total) or last + 1 != total:
        raise FetchError(f"{shown_url(url)}: asked for {tail} and got bytes [{first}, {last + 1}) of {total}.")
    return TailResult(body, first, ObjectPin(size=total, etag=etag))
