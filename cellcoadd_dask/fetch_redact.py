"""Typed, redacted errors of the fetch layer: what a backend failure becomes, with no secret in it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .errors import ArchiveFormatError, CellCoaddError, FetchError, shown_url
from .fetch_backends.core import ObjectNotFoundError

__all__ = ["redact", "typed_error"]


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


def typed_error(exc: BaseException, url: str, storage_options: Mapping[str, Any] | None) -> CellCoaddError | None:
    """The typed, redacted error a non-transient backend failure becomes (``None``: not ours to type)."""
    if isinstance(exc, CellCoaddError):
        return _redacted(exc, storage_options)
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFoundError(redact(f"{shown_url(url)}: {_what(exc)}", storage_options))
    if isinstance(exc, PermissionError):
        return FetchError(redact(f"{shown_url(url)}: {_what(exc)}", storage_options))
    return None


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
