"""S3: GETs on presigned URLs through plain aiohttp, or ``GetObject`` calls through s3fs.

Credentials and endpoint come from the storage options (s3fs).  ``IfMatch`` is sent when the
object's ETag is known.  Presigned GETs cost a fraction of the CPU of a botocore call per
request: it matters when hundreds of objects are opened at once.

When the storage options name everything a signature needs (key, secret, an endpoint URL and
nothing that changes how requests are signed or addressed), URLs are signed with botocore's
SigV4 query signer directly: creating s3fs's client (loading botocore's S3 service model, about
0.15 s) is then left out of a process's first read.  Otherwise, and whenever a signature is
refused, s3fs's client signs.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import re
import time
from typing import Any
from urllib.parse import quote, urlsplit

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

__all__ = ["presigned", "presigned_on_loop", "s3_range", "s3_tail"]

_PRESIGN_SECONDS = 3600
_presigned: dict[tuple[str, str], tuple[str, float]] = {}


_NEUTRAL_CONFIG = frozenset({"connect_timeout", "read_timeout", "max_pool_connections", "retries",
                             "tcp_keepalive", "user_agent", "user_agent_extra"})
"""botocore ``Config`` keys that change nothing in how a GET is signed or addressed."""


def _direct_settings(fs: Any) -> tuple[str, str, str, str | None, str] | None:
    """``(endpoint, key, secret, token, region)`` when ``fs`` can be signed for without its client, else ``None``.

    Only explicit settings qualify: a key and secret, an endpoint URL (path-style addressing,
    as botocore uses for one) that is not AWS's own, a region from ``client_kwargs`` (or none
    configured anywhere: ``us-east-1``), no botocore session, session options (a profile, say),
    extra request parameters or signing option.
    """
    client_kwargs = dict(getattr(fs, "client_kwargs", None) or {})
    endpoint = getattr(fs, "endpoint_url", None) or client_kwargs.get("endpoint_url")
    key, secret, token = getattr(fs, "key", None), getattr(fs, "secret", None), getattr(fs, "token", None)
    if (getattr(fs, "anon", False) or getattr(fs, "session", None) is not None
            or not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))
            or _is_aws(endpoint)
            or not isinstance(key, str) or not key or not isinstance(secret, str) or not secret
            or not (token is None or isinstance(token, str))
            or set(client_kwargs) - {"endpoint_url", "region_name", "verify", "use_ssl"}
            or set(getattr(fs, "config_kwargs", None) or {}) - _NEUTRAL_CONFIG
            or getattr(fs, "s3_additional_kwargs", None) or getattr(fs, "kwargs", None)):
        return None
    region = client_kwargs.get("region_name")
    if region is None:
        configured = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE")
        if any(os.environ.get(name) for name in configured) or os.path.exists(os.path.expanduser("~/.aws/config")):
            return None  # a region may be configured: let botocore find it
        region = "us-east-1"
    if not isinstance(region, str) or not region:
        return None
    return endpoint.rstrip("/"), key, secret, token, region


def _is_aws(endpoint: str) -> bool:
    """Whether ``endpoint`` is AWS's own (regions and addressing there are botocore's business)."""
    host = (urlsplit(endpoint).hostname or "").lower()
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn")) or host == "amazonaws.com"


def _sign_directly(fs: Any, path: str) -> str | None:
    """A SigV4 presigned GET URL of ``path`` signed without creating s3fs's client, or ``None``."""
    settings = _direct_settings(fs)
    if settings is None:
        return None
    endpoint, access, secret, token, region = settings
    bucket, key, version = fs.split_path(path)
    if version or not bucket or not key:
        return None
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=f"{endpoint}/{quote(bucket, safe='')}/{quote(key, safe='/~')}")
    S3SigV4QueryAuth(Credentials(access, secret, token), "s3", region, expires=_PRESIGN_SECONDS).add_auth(request)
    url = request.url
    return url if isinstance(url, str) else None


def _presign(fs: Any, path: str, *, renew: bool = False) -> str | None:
    """A presigned GET URL of ``path`` (cached per filesystem for most of its lifetime), or ``None``.

    ``renew`` signs anew through s3fs's client (a refused signature is never signed the same way twice).
    Not on the filesystem's event loop (s3fs's client is called through its blocking interface).
    """
    key, cached = _cached(fs, path, renew)
    if cached is not None:
        return cached
    try:
        url = None if renew else _sign_directly(fs, path)
        if url is None:
            url = fs.url(path, expires=_PRESIGN_SECONDS)
    except Exception:  # e.g. a configuration botocore cannot presign: use signed API calls instead
        return None
    return _keep(key, url)


async def _presign_on_loop(fs: Any, path: str, *, renew: bool = False) -> str | None:
    """:func:`_presign` on the filesystem's event loop (s3fs's client called from a thread of the loop's executor)."""
    key, cached = _cached(fs, path, renew)
    if cached is not None:
        return cached
    try:
        url = None if renew else _sign_directly(fs, path)
        if url is None:
            url = await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(fs.url, path, expires=_PRESIGN_SECONDS))
    except Exception:  # as in _presign
        return None
    return _keep(key, url)


def _cached(fs: Any, path: str, renew: bool) -> tuple[tuple[str, str], str | None]:
    key = (str(getattr(fs, "_fs_token", id(fs))), path)
    cached = _presigned.get(key)
    if cached is not None and not renew and cached[1] > time.monotonic():
        return key, cached[0]
    return key, None


def _keep(key: tuple[str, str], url: Any) -> str | None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    _presigned[key] = (url, time.monotonic() + _PRESIGN_SECONDS - 300)
    return url


def _http_for(fs: Any, path: str) -> Any:
    """The HTTP filesystem on ``fs``'s event loop, when plain GETs can read ``path``, else ``None``."""
    import fsspec

    _, _, version = fs.split_path(path)
    if version or getattr(fs, "requester_pays", False) or getattr(fs, "req_kw", None):
        return None
    http = fsspec.filesystem("http")
    return http if http.loop is fs.loop else None


def presigned(fs: Any, path: str, *, renew: bool = False) -> tuple[Any, str] | None:
    """``(http filesystem, presigned URL)`` for plain-HTTP reads of an S3 object, or ``None``."""
    http = _http_for(fs, path)
    target = None if http is None else _presign(fs, path, renew=renew)
    return None if target is None else (http, target)


async def presigned_on_loop(fs: Any, path: str, *, renew: bool = False) -> tuple[Any, str] | None:
    """:func:`presigned` on the filesystem's event loop."""
    http = _http_for(fs, path)
    target = None if http is None else await _presign_on_loop(fs, path, renew=renew)
    return None if target is None else (http, target)


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
