"""Checked reading of the JSON pieces of a field: errors, inline arrays, units, bounds.

Every failure is an :class:`~cellcoadd_dask.errors.ArchiveFormatError` naming the field path
(``backgrounds.fields.sky.operands[1].coefficients``).  Nothing here allocates more than the
parsed JSON already holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ArchiveFormatError, BoundsError
from ..geom import Box, Interval

__all__ = ["FieldPath", "MAX_NESTING", "READ_MAJOR"]

MAX_NESTING = 32
"""How deep sums and products (and bounds intersections) may nest."""
READ_MAJOR = 1
"""Field trees needing a newer reader (``min_read_version``) are refused."""
_FLOAT_TYPES = {"float32", "float64"}
_NUMBER_TYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", *_FLOAT_TYPES}


class FieldPath:
    """Where a field's JSON sits in the tree and the file it came from, for error messages.

    Parameters
    ----------
    path
        Dotted tree path (``"backgrounds.fields.sky"``).
    url
        The file, if known.
    """

    def __init__(self, path: str, url: str | None = None) -> None:
        self.path = path
        self.url = url

    def child(self, key: str | int) -> FieldPath:
        """The path of a member (a key, or a list index)."""
        suffix = f"[{key}]" if isinstance(key, int) else f".{key}"
        return FieldPath(self.path + suffix, self.url)

    def error(self, message: str) -> ArchiveFormatError:
        """An error about this path."""
        return ArchiveFormatError(f"background field {self.path!r}: {message}", url=self.url, hdu=self.path)

    def mapping(self, node: Any) -> Mapping[str, Any]:
        """``node`` as an object, checked; refuses trees needing a newer reader."""
        if not isinstance(node, Mapping):
            raise self.error(f"expected an object, got {type(node).__name__}")
        version = node.get("min_read_version", 1)
        if isinstance(version, bool) or not isinstance(version, int):
            raise self.child("min_read_version").error(f"expected an integer, got {version!r}")
        if version > READ_MAJOR:
            raise self.error(f"needs a reader of version {version}; this one reads version {READ_MAJOR}")
        return node

    def member(self, node: Mapping[str, Any], key: str) -> Any:
        """``node[key]``, which must be present."""
        if key not in node:
            raise self.child(key).error("required field is missing")
        return node[key]

    def integer(self, value: Any) -> int:
        """``value`` as an integer (not a boolean)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"expected an integer, got {value!r}")
        return value

    def inline_array(self, node: Any, ndim: int) -> np.ndarray:
        """An inline ``{"data": nested lists, "datatype": ...}`` array of ``ndim`` dimensions, as float64."""
        node = self.mapping(node)
        datatype = self.member(node, "datatype")
        if datatype not in _NUMBER_TYPES:
            raise self.child("datatype").error(f"unsupported datatype {datatype!r}")
        data = self.member(node, "data")
        depth, probe = 0, data
        while isinstance(probe, list) and depth <= ndim:
            depth += 1
            probe = probe[0] if probe else None
        if depth != ndim:
            raise self.child("data").error(f"expected a {ndim}-d array of numbers")
        try:
            with np.errstate(over="raise", invalid="raise"):
                values = np.array(data, dtype=np.dtype(datatype))
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            raise self.child("data").error(f"not a {ndim}-d {datatype} array: {exc}") from None
        if values.dtype == object or values.ndim != ndim or values.size == 0:
            raise self.child("data").error(f"expected a non-empty {ndim}-d array of numbers")
        return values.astype(np.float64)

    def unit(self, value: Any) -> Any:
        """An astropy unit from its string (``None`` stays ``None``)."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(f"expected a unit string, got {value!r}")
        import astropy.units as u

        for fmt in ("vounit", None):
            try:
                return u.Unit(value, format=fmt, parse_strict="raise")
            except ValueError:
                continue
        raise self.error(f"unit {value!r} does not parse")

    def _interval(self, node: Any) -> Interval:
        node = self.mapping(node)
        start = self.child("start").integer(self.member(node, "start"))
        stop = self.child("stop").integer(self.member(node, "stop"))
        try:
            return Interval(start, stop)
        except BoundsError as exc:
            raise self.error(str(exc)) from None

    def bounds_bbox(self, node: Any, depth: int = 0) -> Box:
        """The bounding box of a field's ``bounds`` (a box, cell-grid bounds, a region or an intersection)."""
        if depth > MAX_NESTING:
            raise self.error(f"bounds nest deeper than {MAX_NESTING} levels")
        node = self.mapping(node)
        if "y" in node and "x" in node:
            return Box(self.child("y")._interval(node["y"]), self.child("x")._interval(node["x"]))
        if "grid" in node and "bbox" in node:
            return self.child("bbox").bounds_bbox(node["bbox"], depth + 1)
        if "a" in node and "b" in node:
            a = self.child("a").bounds_bbox(node["a"], depth + 1)
            b = self.child("b").bounds_bbox(node["b"], depth + 1)
            both = a.intersection(b)
            if both is None:
                raise self.error("the intersected bounds do not overlap")
            return both
        if "coordinates" in node:
            return self._region_bbox(node["coordinates"])
        raise self.error("expected a box, cell-grid bounds, a region or an intersection of bounds")

    def _region_bbox(self, coordinates: Any) -> Box:
        """Box of a GeoJSON (multi)polygon: vertices may reach half a pixel beyond it."""
        points: list[tuple[float, float]] = []
        stack = [(coordinates, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > 4 or not isinstance(node, list):
                raise self.child("coordinates").error("expected nested lists of (x, y) vertices")
            if len(node) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in node):
                points.append((float(node[0]), float(node[1])))
            else:
                stack.extend((child, depth + 1) for child in node)
        if not points or not all(math.isfinite(v) for p in points for v in p):
            raise self.child("coordinates").error("expected finite (x, y) vertices")
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]

        def up(v: float) -> int:
            return math.floor(v + 0.5)

        def down(v: float) -> int:
            return math.ceil(v - 0.5)

        try:
            return Box(Interval(up(min(ys)), down(max(ys)) + 1), Interval(up(min(xs)), down(max(xs)) + 1))
        except BoundsError as exc:
            raise self.child("coordinates").error(str(exc)) from None
