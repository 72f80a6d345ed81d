"""How bytes are fetched from each kind of storage (used by :mod:`cellcoadd_dask.fetch` only).

Every backend fetches a list of ranges of one object, or one open-ended part of it (the whole
object, its end from an offset, its last bytes), and reports, with the bytes, what it learned
of the object's identity (:class:`ObjectPin`): its size and its ETag (object stores, HTTP) or
nanosecond modification and status-change times, device and inode (local files).  Given a
pin, a backend refuses bytes from an object that changed since it was opened (``If-Match`` on
HTTP and S3; ``fstat`` locally, see :class:`ObjectPin` for what that does and does not
detect), so a replaced object is an error, never wrong pixels.

- local files (:mod:`.local`): ``os.pread`` on one descriptor, ``fstat`` checked before and after;
- ``http(s)://`` (:mod:`.http`): GETs on fsspec's own aiohttp session (its storage options
  apply), ``If-Match`` when the ETag is known, the status, ``Content-Range`` and length checked;
- ``s3://`` (:mod:`.s3`): GETs on presigned URLs, or ``GetObject`` calls through s3fs (its
  credentials and endpoint apply), ``IfMatch`` when the ETag is known;
- anything else fsspec offers (:mod:`.generic`): ``cat_ranges`` / ``cat_file`` (sizes only).

Backends raise :class:`Transient` for failures worth retrying (timeouts, dropped
connections, 5xx, 429/SlowDown) and typed errors for the rest; :mod:`cellcoadd_dask.fetch`
retries, counts and redacts.  The layering is one-way: this package never imports
:mod:`cellcoadd_dask.fetch`; what both need (pins, errors) lives in :mod:`.core`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..errors import FetchError, shown_url
from .core import (
    ByteRange,
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectPin,
    PartialResult,
    Tail,
    TailResult,
    Transient,
    check_pin,
    filesystem,
    local_path,
    protocol_of,
)

__all__ = [
    "ObjectChangedError",
    "ObjectNotFoundError",
    "ObjectPin",
    "PartialResult",
    "Tail",
    "TailResult",
    "Transient",
    "Route",
    "fetch_on_loop",
    "fetch_with_backend",
    "filesystem",
    "loop_route",
    "read_tail_with_backend",
]


def _denied(url: str, refusal: BaseException | None = None) -> FetchError:
    status = getattr(refusal, "status", 403)
    if status == 403:
        return FetchError(f"{shown_url(url)}: access denied (check the credentials in storage_options).")
    return FetchError(f"{shown_url(url)}: the server refused the signed request (HTTP {status}; check the "
                      "region and endpoint in storage_options).")


Route = tuple[Any, str, str]
"""``(filesystem, path, kind)`` of an object read on fsspec's event loop (``kind``: ``"http"`` or ``"s3"``)."""


def loop_route(url: str, storage_options: Any) -> Route | None:
    """How ``url`` is read on fsspec's event loop (HTTP(S) and S3), or ``None`` for other storage."""
    if local_path(url) is not None:
        return None
    fs, path = filesystem(url, storage_options)
    protocol = protocol_of(fs)
    if protocol in ("http", "https"):
        return fs, url, "http"
    if protocol in ("s3", "s3a"):
        return fs, path, "s3"
    return None


async def fetch_on_loop(route: Route, url: str, ranges: Sequence[ByteRange], pin: ObjectPin | None,
                        timeout: float, concurrency: int) -> PartialResult:
    """One attempt at fetching ``ranges`` of ``url`` (a coroutine on the filesystem's loop).

    Errors as :func:`fetch_with_backend`.
    """
    from .http import Forbidden, http_range
    from .s3 import presigned_on_loop, s3_range

    fs, path, kind = route
    signed = await presigned_on_loop(fs, path) if kind == "s3" else None

    async def run() -> list[Any]:
        semaphore = asyncio.Semaphore(concurrency)
        if kind == "http":
            coros = [http_range(fs, url, a, b, pin, timeout, semaphore) for a, b in ranges]
        elif signed is not None:
            http, target = signed
            coros = [http_range(http, url, a, b, pin, timeout, semaphore, target) for a, b in ranges]
        else:
            coros = [s3_range(fs, url, path, a, b, pin, timeout, semaphore) for a, b in ranges]
        if len(coros) == 1:  # no task to create
            try:
                return [await coros[0]]
            except Exception as exc:
                return [exc]
        return await asyncio.gather(*coros, return_exceptions=True)

    results = await run()
    if signed is not None and any(isinstance(r, Forbidden) for r in results):
        # Expired or refused signature: sign anew once; a second refusal is the answer.
        renewed = await presigned_on_loop(fs, path, renew=True)
        if renewed is not None:
            signed = renewed
            results = await run()
        refused = next((r for r in results if isinstance(r, Forbidden)), None)
        if refused is not None:
            raise _denied(url, refused)
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
    if pin is not None:
        check_pin(url, pin, seen)
    return PartialResult(blobs, errors, seen)


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
    ObjectNotFoundError
        The object does not exist.
    FetchError
        Other errors that retrying cannot fix (permission denied, Range ignored).
    Transient
        A failure of the whole attempt that is worth retrying.
    """
    local = local_path(url)
    if local is not None:
        from .local import fetch_local

        return fetch_local(local, url, ranges, pin, buffers)
    route = loop_route(url, storage_options)
    if route is not None:
        from fsspec.asyn import sync

        return sync(route[0].loop, fetch_on_loop, route, url, ranges, pin, timeout, concurrency)
    from .generic import fetch_generic

    fs, path = filesystem(url, storage_options)
    result = fetch_generic(fs, url, path, ranges)
    if pin is not None:
        check_pin(url, pin, result.pin)
    return result


def read_tail_with_backend(
    url: str, tail: Tail, *, storage_options: Any, pin: ObjectPin | None, timeout: float
) -> TailResult:
    """One attempt at an open-ended read of ``url`` (whole object, from an offset, or its last bytes): one request.

    Raises
    ------
    ArchiveFormatError
        The offset lies beyond the end of the object.
    ObjectChangedError
        The object is not the one ``pin`` describes.
    ObjectNotFoundError
        The object does not exist.
    FetchError
        Other errors that retrying cannot fix.
    Transient
        A failure worth retrying.
    """
    local = local_path(url)
    if local is not None:
        from .local import read_local_tail

        return read_local_tail(local, url, tail, pin)
    fs, path = filesystem(url, storage_options)
    protocol = protocol_of(fs)
    if protocol in ("http", "https", "s3", "s3a"):
        from fsspec.asyn import sync

        from .http import Forbidden, http_tail
        from .s3 import presigned, s3_tail

        if protocol in ("http", "https"):
            result = sync(fs.loop, http_tail, fs, url, tail, pin, timeout)
        else:
            signed = presigned(fs, path)
            if signed is None:
                result = sync(fs.loop, s3_tail, fs, url, path, tail, pin, timeout)
            else:
                try:
                    result = sync(fs.loop, http_tail, signed[0], url, tail, pin, timeout, signed[1])
                except Forbidden:
                    renewed = presigned(fs, path, renew=True)
                    if renewed is None:
                        raise _denied(url) from None
                    try:
                        result = sync(fs.loop, http_tail, renewed[0], url, tail, pin, timeout, renewed[1])
                    except Forbidden as refused:
                        raise _denied(url, refused) from None
    else:
        from .generic import read_generic_tail

        result = read_generic_tail(fs, url, path, tail)
    check_pin(url, pin, result.pin)
    return result
