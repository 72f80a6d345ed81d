"""How byte ranges are fetched from each kind of storage (used by :mod:`.fetch` only).

Every backend fetches a list of ranges of one object and reports, with the bytes, what it
learned of the object's identity (:class:`ObjectPin`): its size and its ETag (object
stores, HTTP) or modification time (local files).  Given a pin, a backend refuses bytes
from an object that changed since it was opened (``If-Match`` on HTTP and S3; size and
modification time locally), so a replaced object is an error, never wrong pixels.

- local files: ``os.pread`` on one descriptor, ``fstat`` checked before and after;
- ``http(s)://``: ranged GETs on fsspec's own aiohttp session (its storage options apply),
  ``If-Match`` when the ETag is known, the status, ``Content-Range`` and length checked;
- ``s3://``: ranged ``GetObject`` calls through s3fs (its credentials and endpoint apply),
  ``IfMatch`` when the ETag is known;
- anything else fsspec offers: one ``cat_ranges`` call (no pinning).

Backends raise :class:`Transient` for failures worth retrying (timeouts, dropped
connections, 5xx, 429/SlowDown) and typed errors for the rest; :mod:`.fetch` retries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import re
from collections.abc import Sequence
from typing import Any

from .errors import ArchiveFormatError, FetchError, shown_url

__all__ = [
    "ObjectChangedError",
    "ObjectPin",
    "PartialResult",
    "Transient",
    "fetch_with_backend",
]

ByteRange = tuple[int, int]

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class ObjectChangedError(FetchError):
    """The object changed (ETag, size or modification time) since it was opened."""


@dataclasses.dataclass(frozen=True)
class ObjectPin:
    """What identifies the version of an object that was opened.

    Attributes
    ----------
    size
        Object size in bytes, if known.
    etag
        ETag (HTTP, object stores), if the server gave one.
    mtime_ns
        Modification time of a local file.
    """

    size: int | None = None
    etag: str | None = None
    mtime_ns: int | None = None

    def merge(self, other: ObjectPin) -> ObjectPin:
        """Return this pin completed with what ``other`` knows and this one does not."""
        return ObjectPin(
            self.size if self.size is not None else other.size,
            self.etag if self.etag is not None else other.etag,
            self.mtime_ns if self.mtime_ns is not None else other.mtime_ns,
        )


class Transient(Exception):
    """A failure worth retrying (timeout, dropped connection, 5xx, 429, SlowDown)."""


@dataclasses.dataclass
class PartialResult:
    """What one attempt fetched: bytes per range (``None`` where it failed) and the failures."""

    blobs: Sequence[bytes | memoryview | None]
    errors: Sequence[BaseException | None]
    pin: ObjectPin


def _describe(exc: BaseException) -> str:
    text = str(exc) or ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _short(start: int, stop: int, got: int, url: str) -> ArchiveFormatError:
    return ArchiveFormatError(
        f"file ends inside the byte range asked for ({got} of {stop - start} bytes): truncated",
        url=url,
        byte_range=(start, stop),
    )


# ----------------------------------------------------------------------------- local files


def _local_path(url: str) -> str | None:
    if url.startswith("file://"):
        return url[len("file://") :]
    if "://" not in url and not url.startswith("memory:"):
        return url
    return None


_BUFFER_BYTES = 1024 * 1024
"""Ranges at least this long are read into numpy buffers when the caller takes buffers."""


def _read_local(fd: int, start: int, stop: int, url: str, buffer: bool) -> bytes | memoryview:
    """Bytes ``[start, stop)`` of an open file (all of them, or a truncation error).

    With ``buffer``, a long range is read into a numpy buffer (allocated in huge pages where
    the system offers them: several times fewer page faults than a ``bytes`` object) and
    returned as a read-only memoryview.
    """
    n = stop - start
    if buffer and n >= _BUFFER_BYTES and hasattr(os, "preadv"):
        import numpy as np

        array = np.empty(n, dtype=np.uint8)
        view = memoryview(array)
        got = 0
        while got < n:
            count = os.preadv(fd, [view[got:]], start + got)
            if not count:
                break
            got += count
        if got < n:
            raise _short(start, stop, got, url)
        return view.toreadonly()
    data = os.pread(fd, n, start) if n > 0 else b""
    while len(data) < n:
        more = os.pread(fd, n - len(data), start + len(data))
        if not more:
            break
        data += more
    if len(data) < n:
        raise _short(start, stop, len(data), url)
    return data


def _fetch_local(
    path: str, url: str, ranges: Sequence[ByteRange], pin: ObjectPin | None, buffers: bool = False
) -> PartialResult:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise FetchError(f"{shown_url(url)}: no such file.") from exc
    except IsADirectoryError as exc:
        raise FetchError(f"{shown_url(url)}: is a directory, not a file.") from exc
    except PermissionError as exc:
        raise FetchError(f"{shown_url(url)}: permission denied.") from exc
    try:
        st = os.fstat(fd)
        seen = ObjectPin(size=st.st_size, mtime_ns=st.st_mtime_ns)
        _check_pin(url, pin, seen)
        blobs: list[bytes | memoryview | None] = [_read_local(fd, start, stop, url, buffers) for start, stop in ranges]
        after = os.fstat(fd)
        _check_pin(url, seen, ObjectPin(size=after.st_size, mtime_ns=after.st_mtime_ns))
    finally:
        os.close(fd)
    return PartialResult(blobs, [None] * len(blobs), seen)


def _check_pin(url: str, pin: ObjectPin | None, seen: ObjectPin) -> None:
    if pin is None:
        return
    changed = []
    if pin.size is not None and seen.size is not None and pin.size != seen.size:
        changed.append(f"size {pin.size} -> {seen.size}")
    if pin.etag is not None and seen.etag is not None and pin.etag != seen.etag:
        changed.append("ETag")
    if pin.mtime_ns is not None and seen.mtime_ns is not None and pin.mtime_ns != seen.mtime_ns:
        changed.append("modification time")
    if changed:
        raise ObjectChangedError(f"{shown_url(url)}: the object changed since it was opened ({', '.join(changed)}).")


# ----------------------------------------------------------------------------- HTTP


def _parse_total(content_range: str | None) -> int | None:
    if not content_range:
        return None
    m = _CONTENT_RANGE.match(content_range)
    if m is None or m.group(3) == "*":
        return None
    return int(m.group(3))


async def _http_one(fs: Any, url: str, start: int, stop: int, pin: ObjectPin | None,
                    timeout: float, semaphore: asyncio.Semaphore, target: str | None = None) -> tuple[bytes, ObjectPin]:
    """One ranged GET of ``target`` (default ``url``; a presigned URL for S3), named ``url`` in errors."""
    import aiohttp

    kw = dict(fs.kwargs)
    headers = dict(kw.pop("headers", None) or {})
    headers["Range"] = f"bytes={start}-{stop - 1}"
    if pin is not None and pin.etag is not None:
        headers["If-Match"] = pin.etag
    kw.pop("timeout", None)
    async with semaphore:
        session = await fs.set_session()
        try:
            async with session.get(target if target is not None else fs.encode_url(url), headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout), **kw) as r:
                status = r.status
                if status == 412:
                    raise ObjectChangedError(
                        f"{shown_url(url)}: the object changed since it was opened (ETag no longer matches)."
                    )
                if status == 416:
                    total = _parse_total(r.headers.get("Content-Range"))
                    raise _short(start, stop, max(0, (total or start) - start), url)
                if status == 404:
                    raise FetchError(f"{shown_url(url)}: no such file (HTTP 404).")
                if status == 403 and target is not None:
                    raise _Forbidden()
                if status in _TRANSIENT_STATUS:
                    raise Transient(f"HTTP {status}")
                if status >= 400:
                    raise FetchError(f"{shown_url(url)}: HTTP {status} {r.reason or ''}".rstrip() + ".")
                body = await r.read()
                seen = ObjectPin(size=_parse_total(r.headers.get("Content-Range")), etag=r.headers.get("ETag"))
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise Transient(_describe(exc)) from exc
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
            raise _short(start, stop, len(body), url)
        raise Transient(f"short body: {len(body)} of {stop - start} bytes")
    return body, seen


# ----------------------------------------------------------------------------- S3


class _Forbidden(Exception):
    """A presigned GET was refused: renew the signature once, then report the refusal."""


_PRESIGN_SECONDS = 3600
_presigned: dict[tuple[str, str], tuple[str, float]] = {}


def _presign(fs: Any, path: str, *, renew: bool = False) -> str | None:
    """A presigned GET URL of ``path`` (cached per filesystem for most of its lifetime), or ``None``.

    Ranged GETs on presigned URLs go through plain aiohttp, which costs a fraction of the CPU of a
    botocore call per request: it matters when hundreds of objects are opened at once.
    """
    import time

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


async def _s3_one(fs: Any, url: str, path: str, start: int, stop: int, pin: ObjectPin | None,
                  timeout: float, semaphore: asyncio.Semaphore) -> tuple[bytes, ObjectPin]:
    bucket, key, version = fs.split_path(path)
    kw: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{stop - 1}"}
    if version:
        kw["VersionId"] = version
    if pin is not None and pin.etag is not None:
        kw["IfMatch"] = pin.etag
    async with semaphore:
        try:
            resp = await asyncio.wait_for(fs._call_s3("get_object", **kw), timeout)
            try:
                body = await asyncio.wait_for(resp["Body"].read(), timeout)
            finally:
                resp["Body"].close()
        except (FileNotFoundError, PermissionError):
            raise
        except OSError as exc:
            text = str(exc)
            if exc.errno == errno.EINVAL and re.search(r"pre-?condition", text, re.IGNORECASE):
                raise ObjectChangedError(
                    f"{shown_url(url)}: the object changed since it was opened (ETag no longer matches)."
                ) from exc
            if "InvalidRange" in text or "Range Not Satisfiable" in text or "416" in text:
                raise _short(start, stop, 0, url) from exc
            raise Transient(_describe(exc)) from exc
        except Exception as exc:  # botocore/aiohttp transport errors
            raise Transient(_describe(exc)) from exc
    seen = ObjectPin(size=_parse_total(resp.get("ContentRange")), etag=resp.get("ETag"))
    if len(body) != stop - start:
        if seen.size is not None and stop > seen.size:
            raise _short(start, stop, len(body), url)
        raise Transient(f"short body: {len(body)} of {stop - start} bytes")
    return body, seen


# ----------------------------------------------------------------------------- dispatch


async def _gather(coros: list[Any]) -> list[Any]:
    return await asyncio.gather(*coros, return_exceptions=True)


def _fetch_async(fs: Any, url: str, path: str, ranges: Sequence[ByteRange], pin: ObjectPin | None,
                 timeout: float, concurrency: int, kind: str) -> PartialResult:
    from fsspec.asyn import sync

    presigned = _s3_presigned(fs, path) if kind == "s3" else None

    async def run() -> list[Any]:
        semaphore = asyncio.Semaphore(concurrency)
        if kind == "http":
            coros = [_http_one(fs, url, a, b, pin, timeout, semaphore) for a, b in ranges]
        elif presigned is not None:
            http, target = presigned
            coros = [_http_one(http, url, a, b, pin, timeout, semaphore, target) for a, b in ranges]
        else:
            coros = [_s3_one(fs, url, path, a, b, pin, timeout, semaphore) for a, b in ranges]
        return await _gather(coros)

    results = sync(fs.loop, run)
    if presigned is not None and any(isinstance(r, _Forbidden) for r in results):
        # Expired or refused signature: sign anew once; a second refusal is the answer.
        renewed = _s3_presigned(fs, path, renew=True)
        if renewed is not None:
            presigned = renewed
            results = sync(fs.loop, run)
        if any(isinstance(r, _Forbidden) for r in results):
            raise FetchError(f"{shown_url(url)}: access denied (check the credentials in storage_options).")
    blobs: list[bytes | None] = []
    errors: list[BaseException | None] = []
    seen = ObjectPin()
    for result in results:
        if isinstance(result, BaseException):
            blobs.append(None)
            errors.append(result)
        else:
            body, got = result
            blobs.append(body)
            errors.append(None)
            seen = seen.merge(got)
    return PartialResult(blobs, errors, seen)


def _s3_presigned(fs: Any, path: str, *, renew: bool = False) -> tuple[Any, str] | None:
    """``(http filesystem, presigned URL)`` for plain-HTTP range reads of an S3 object, or ``None``."""
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


def _fetch_generic(fs: Any, url: str, path: str, ranges: Sequence[ByteRange], timeout: float) -> PartialResult:
    try:
        results = fs.cat_ranges([path] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges],
                                on_error="return")
    except FileNotFoundError as exc:
        raise FetchError(f"{shown_url(url)}: no such file.") from exc
    except Exception as exc:
        raise Transient(_describe(exc)) from exc
    blobs: list[bytes | None] = []
    errors: list[BaseException | None] = []
    for (start, stop), result in zip(ranges, results, strict=True):
        if isinstance(result, FileNotFoundError):
            raise FetchError(f"{shown_url(url)}: no such file.") from result
        if isinstance(result, PermissionError):
            raise FetchError(f"{shown_url(url)}: permission denied ({_describe(result)}).") from result
        if isinstance(result, BaseException):
            blobs.append(None)
            errors.append(Transient(_describe(result)))
            continue
        if len(result) < stop - start:
            raise _short(start, stop, len(result), url)
        if len(result) != stop - start:
            raise FetchError(
                f"{shown_url(url)}: asked for bytes [{start}, {stop}) ({stop - start} bytes) and got {len(result)} "
                "(the server ignores Range requests)."
            )
        blobs.append(result)
        errors.append(None)
    return PartialResult(blobs, errors, ObjectPin())


def fetch_with_backend(
    url: str,
    ranges: Sequence[ByteRange],
    *,
    storage_options: Any,
    pin: ObjectPin | None,
    timeout: float,
    concurrency: int,
    buffers: bool = False,
) -> PartialResult:
    """One attempt at fetching ``ranges`` of ``url``; failed ranges come back as errors.

    With ``buffers``, a backend may hand back read-only memoryviews instead of ``bytes``
    (local files read long ranges into numpy buffers).

    Raises
    ------
    ArchiveFormatError
        A range lies beyond the end of the object (truncated file).
    ObjectChangedError
        The object is not the one ``pin`` describes.
    FetchError
        Errors that retrying cannot fix (missing object, permission denied, Range ignored).
    Transient
        A failure of the whole attempt that is worth retrying.
    """
    local = _local_path(url)
    if local is not None:
        return _fetch_local(local, url, ranges, pin, buffers)
    from .fetch import filesystem

    fs, path = filesystem(url, storage_options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("http", "https"):
        result = _fetch_async(fs, url, url, ranges, pin, timeout, concurrency, "http")
    elif protocol in ("s3", "s3a"):
        result = _fetch_async(fs, url, path, ranges, pin, timeout, concurrency, "s3")
    else:
        result = _fetch_generic(fs, url, path, ranges, timeout)
    if pin is not None:
        _check_pin(url, pin, result.pin)
    return result
