"""A value loaded on first use (provenance and aperture-correction tables are read only when asked for)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Deferred", "resolve"]

T = TypeVar("T")
_UNSET: Any = object()


class Deferred[T]:
    """Calls ``load()`` once, on first :meth:`get`, and keeps the result.

    ``load`` must be picklable (a module-level function or a ``functools.partial`` of one)
    for the owning object to be picklable; the cached value is not pickled.
    """

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: Any = _UNSET
        self._lock = threading.Lock()

    def get(self) -> T:
        """The value, loading it on first use."""
        if self._value is _UNSET:
            with self._lock:
                if self._value is _UNSET:
                    self._value = self._load()
        return self._value

    @property
    def loaded(self) -> bool:
        """Whether the value has been loaded."""
        return self._value is not _UNSET

    def __getstate__(self) -> dict[str, Any]:
        return {"_load": self._load}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_load"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Deferred({'loaded' if self.loaded else 'not loaded'})"


def resolve(value: Any) -> Any:
    """``value.get()`` for a :class:`Deferred`, else ``value`` itself."""
    return value.get() if isinstance(value, Deferred) else value
