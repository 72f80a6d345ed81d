"""Any other fsspec filesystem (``memory://`` ...): ``cat_ranges`` and ``cat_file``, sizes from ``info``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import FetchError, shown_url
from .core import ByteRange, ObjectPin, PartialResult, Tail, TailResult, Transient, describe, not_found, short_error

__all__ = ["fetch_generic", "read_generic_tail"]


def fetch_generic(fs: Any, url: str, path: str, ranges: Sequence[ByteRange]) -> PartialResult:
    """Byte ranges through one ``cat_ranges`` call (no pinning)."""
    try:
        results = fs.cat_ranges([path] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges],
                                on_error="return")
    except FileNotFoundError as exc:
        raise not_found(url) from exc
    except Exception as exc:
        raise Transient(describe(exc)) from exc
    blobs: list[bytes | None] = []
    errors: list[BaseException | None] = []
    for (start, stop), result in zip(ranges, results, strict=True):
        if isinstance(result, FileNotFoundError):
            raise not_found(url) from result
        if isinstance(result, PermissionError):
            raise FetchError(f"{shown_url(url)}: permission denied ({describe(result)}).") from result
        if isinstance(result, BaseException):
            blobs.append(None)
            errors.append(Transient(describe(result)))
            continue
        if len(result) < stop - start:
            raise short_error(start, stop, len(result), url)
        if len(result) != stop - start:
            raise FetchError(
                f"{shown_url(url)}: asked for bytes [{start}, {stop}) ({stop - start} bytes) and got {len(result)} "
                "(the server ignores Range requests)."
            )
        blobs.append(result)
        errors.append(None)
    return PartialResult(blobs, errors, ObjectPin())


def read_generic_tail(fs: Any, url: str, path: str, tail: Tail) -> TailResult:
    """The object's size from ``info``, then its bytes from ``cat_file``."""
    try:
        info = fs.info(path)
        if info.get("type", "file") != "file":
            raise FetchError(f"{shown_url(url)}: is a directory, not a file.")
        size = int(info["size"])
        tail.check_size(url, size)
        start = tail.start(size)
        if start > size:
            raise short_error(start, start + 1, 0, url)
        data = fs.cat_file(path, start=start, end=size) if start < size else b""
    except FileNotFoundError as exc:
        raise not_found(url) from exc
    except PermissionError as exc:
        raise FetchError(f"{shown_url(url)}: permission denied ({describe(exc)}).") from exc
    except (FetchError, ValueError):
        raise
    except Exception as exc:
        raise Transient(describe(exc)) from exc
    if len(data) != size - start:
        raise Transient(f"short body: {len(data)} of {size - start} bytes")
    etag = info.get("ETag") or info.get("etag")
    return TailResult(bytes(data), start, ObjectPin(size=size, etag=etag if isinstance(etag, str) else None))
