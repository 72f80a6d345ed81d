"""Integer pixel geometry: :class:`YX` pairs, half-open :class:`Interval` and :class:`Box`.

Axis order is always (y, x).  Coordinates are integer pixel indices; intervals are
half-open ``[start, stop)``.  Boxes usually hold *absolute* (tract-frame) coordinates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import BoundsError

__all__ = ["YX", "BBoxSlicer", "Box", "Interval", "SlicedByBox"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class YX[T]:
    """A pair of values ordered (y, x)."""

    y: T
    x: T

    def __iter__(self) -> Iterator[T]:
        yield self.y
        yield self.x

    def __repr__(self) -> str:
        return f"YX(y={self.y!r}, x={self.x!r})"

    def __str__(self) -> str:
        return f"(y={self.y}, x={self.x})"


class _IntervalFactory:
    def __getitem__(self, s: slice) -> Interval:
        return Interval.from_slice(s)


class _BoxFactory:
    def __getitem__(self, key: tuple[slice, slice]) -> Box:
        if not isinstance(key, tuple) or len(key) != 2:
            raise TypeError("Box.factory needs two slices: Box.factory[y0:y1, x0:x1].")
        return Box(Interval.from_slice(key[0]), Interval.from_slice(key[1]))


@dataclass(frozen=True, slots=True)
class Interval:
    """A non-empty half-open integer interval ``[start, stop)``.

    Raises
    ------
    BoundsError
        If ``stop <= start`` (also an ``IndexError``).
    """

    start: int
    stop: int

    factory = _IntervalFactory()

    def __post_init__(self) -> None:
        for name in ("start", "stop"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                try:
                    iv = int(v)
                except (TypeError, ValueError):
                    raise TypeError(f"Interval {name} must be an integer, not {v!r}.") from None
                if iv != v:
                    raise TypeError(f"Interval {name} must be an integer, not {v!r}.")
                object.__setattr__(self, name, iv)
        if self.stop <= self.start:
            raise BoundsError(f"Interval stop ({self.stop}) must be greater than start ({self.start}).")

    @classmethod
    def from_slice(cls, s: slice) -> Interval:
        """Make the interval ``[s.start or 0, s.stop)``; a step other than 1 is refused."""
        if not isinstance(s, slice):
            raise TypeError(f"Expected a slice, not {s!r}.")
        if s.step not in (None, 1):
            raise ValueError(f"Slices with a step ({s.step}) do not describe an interval.")
        if s.stop is None:
            raise BoundsError("An interval needs an explicit stop.")
        return cls(0 if s.start is None else s.start, s.stop)

    @classmethod
    def from_size(cls, size: int, start: int = 0) -> Interval:
        """Make ``[start, start + size)``."""
        return cls(start, start + size)

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.stop - self.start

    @property
    def min(self) -> int:
        """First pixel (``start``)."""
        return self.start

    @property
    def max(self) -> int:
        """Last pixel (``stop - 1``)."""
        return self.stop - 1

    def contains(self, other: Interval) -> bool:
        """Whether ``other`` lies entirely within this interval."""
        return self.start <= other.start and other.stop <= self.stop

    def intersection(self, other: Interval) -> Interval | None:
        """The overlap of two intervals, or ``None``."""
        start, stop = max(self.start, other.start), min(self.stop, other.stop)
        return Interval(start, stop) if stop > start else None

    def slice_within(self, parent: Interval) -> slice:
        """The slice of ``parent``'s array that this interval covers."""
        if not parent.contains(self):
            raise BoundsError(f"{self} is not contained in {parent}.")
        return slice(self.start - parent.start, self.stop - parent.start)

    def __str__(self) -> str:
        return f"{self.start}:{self.stop}"

    def __repr__(self) -> str:
        return f"Interval(start={self.start}, stop={self.stop})"

    def to_json(self) -> dict[str, int]:
        """The JSON form ``{"start": a, "stop": b}``."""
        return {"start": self.start, "stop": self.stop}


@dataclass(frozen=True, slots=True)
class Box:
    """A 2-d box: a pair of :class:`Interval` ordered (y, x)."""

    y: Interval
    x: Interval

    factory = _BoxFactory()

    def __post_init__(self) -> None:
        if not isinstance(self.y, Interval) or not isinstance(self.x, Interval):
            raise TypeError("Box arguments must be Interval instances.")

    @classmethod
    def from_shape(cls, shape: Sequence[int] | YX[int], start: Sequence[int] | YX[int] = (0, 0)) -> Box:
        """Make a box from a (y, x) shape and start."""
        sy, sx = tuple(shape)
        y0, x0 = tuple(start)
        return cls(Interval.from_size(int(sy), int(y0)), Interval.from_size(int(sx), int(x0)))

    @property
    def start(self) -> YX[int]:
        """The first pixel, (y, x)."""
        return YX(self.y.start, self.x.start)

    @property
    def stop(self) -> YX[int]:
        """One past the last pixel, (y, x)."""
        return YX(self.y.stop, self.x.stop)

    @property
    def shape(self) -> YX[int]:
        """Size along (y, x)."""
        return YX(self.y.size, self.x.size)

    @property
    def area(self) -> int:
        """Number of pixels."""
        return self.y.size * self.x.size

    def contains(self, other: Box) -> bool:
        """Whether ``other`` lies entirely within this box."""
        return self.y.contains(other.y) and self.x.contains(other.x)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or ``None``."""
        y, x = self.y.intersection(other.y), self.x.intersection(other.x)
        return Box(y, x) if y is not None and x is not None else None

    def slice_within(self, parent: Box) -> tuple[slice, slice]:
        """The (y, x) slices of ``parent``'s array that this box covers."""
        if not parent.contains(self):
            raise BoundsError(f"Box {self} is not contained in {parent}.")
        return (self.y.slice_within(parent.y), self.x.slice_within(parent.x))

    @property
    def absolute(self) -> _AbsoluteBoxSlicer:
        """Sub-box proxy in absolute coordinates: ``box.absolute[y0:y1, x0:x1]``."""
        return _AbsoluteBoxSlicer(self)

    @property
    def local(self) -> _LocalBoxSlicer:
        """Sub-box proxy in local coordinates (Python semantics): ``box.local[a:b, c:d]``."""
        return _LocalBoxSlicer(self)

    def __str__(self) -> str:
        return f"[y={self.y}, x={self.x}]"

    def __repr__(self) -> str:
        return f"Box(y={self.y!r}, x={self.x!r})"

    def to_json(self) -> dict[str, dict[str, int]]:
        """The JSON form ``{"y": {...}, "x": {...}}``."""
        return {"y": self.y.to_json(), "x": self.x.to_json()}


def _two_slices(key: Any) -> tuple[slice, slice]:
    if key is Ellipsis:
        return slice(None), slice(None)
    if not isinstance(key, tuple) or len(key) != 2 or not all(isinstance(k, slice) for k in key):
        raise TypeError(f"Expected two slices [y, x], got {key!r} (indexing that drops an axis is not supported).")
    for k in key:
        if k.step not in (None, 1):
            raise ValueError(f"Slices with a step ({k.step}) are not supported.")
    return key[0], key[1]


def absolute_box(parent: Box, key: Any) -> Box:
    """Resolve an absolute-coordinate slice pair against ``parent`` (ends default to the parent's)."""
    ys, xs = _two_slices(key)
    box = Box(
        Interval(parent.y.start if ys.start is None else ys.start, parent.y.stop if ys.stop is None else ys.stop),
        Interval(parent.x.start if xs.start is None else xs.start, parent.x.stop if xs.stop is None else xs.stop),
    )
    if not parent.contains(box):
        raise BoundsError(f"Box {box} is not contained in {parent}.")
    return box


def local_box(parent: Box, key: Any) -> Box:
    """Resolve a local-index slice pair against ``parent`` with Python semantics (negatives, clipping)."""
    ys, xs = _two_slices(key)
    y0, y1, _ = ys.indices(parent.y.size)
    x0, x1, _ = xs.indices(parent.x.size)
    return Box(
        Interval(parent.y.start + y0, parent.y.start + y1),
        Interval(parent.x.start + x0, parent.x.start + x1),
    )


class _AbsoluteBoxSlicer:
    def __init__(self, parent: Box) -> None:
        self._parent = parent

    def __getitem__(self, key: Any) -> Box:
        return absolute_box(self._parent, key)


class _LocalBoxSlicer:
    def __init__(self, parent: Box) -> None:
        self._parent = parent

    def __getitem__(self, key: Any) -> Box:
        return local_box(self._parent, key)


class BBoxSlicer:
    """``obj.absolute[...]`` / ``obj.local[...]`` for any object with a ``bbox`` and ``obj[box]``.

    Parameters
    ----------
    obj
        The object to slice; ``obj[box]`` must accept an absolute :class:`Box`.
    absolute
        Whether the slices are absolute coordinates (else local array indices).
    """

    def __init__(self, obj: Any, *, absolute: bool) -> None:
        self._obj = obj
        self._absolute = absolute

    def __getitem__(self, key: Any) -> Any:
        resolve = absolute_box if self._absolute else local_box
        return self._obj[resolve(self._obj.bbox, key)]


class SlicedByBox:
    """Mixin for objects with a ``bbox`` and ``obj[box]``: adds the ``absolute`` and ``local`` proxies."""

    @property
    def absolute(self) -> BBoxSlicer:
        """Slicing proxy in absolute (tract) coordinates: ``obj.absolute[y0:y1, x0:x1]``."""
        return BBoxSlicer(self, absolute=True)

    @property
    def local(self) -> BBoxSlicer:
        """Slicing proxy in local (array) indices, negatives from the end: ``obj.local[a:b, c:d]``."""
        return BBoxSlicer(self, absolute=False)
