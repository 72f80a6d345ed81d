"""Reading the fields of a ``cell_coadd`` tree: typed access with the field's path in every error.

:class:`TreeContext` and the ``*_field`` helpers check one value each; the ``*_from_json``
functions parse the geometry objects (pairs, boxes, cell grids and bounds, patches) that the
coadd tree, the projection and the tables share.  Every failure is an
:class:`~cellcoadd_dask.errors.ArchiveFormatError` naming the archive and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .cells import CellGrid, CellGridBounds, CellIJ, PatchDefinition
from .errors import ArchiveFormatError, BoundsError
from .geom import YX, Box, Interval

__all__ = [
    "READER_MAJOR",
    "TreeContext",
    "bounds_from_json",
    "box_from_json",
    "check_stamp",
    "get_field",
    "grid_from_json",
    "int_field",
    "patch_from_json",
    "str_field",
    "yx_from_json",
]

READER_MAJOR = 1
"""The major version of the ``cell_coadd`` schema this reader reads (``min_read_version`` above it is refused)."""


class TreeContext:
    """The archive a tree came from, for error messages (:meth:`error` names the field's path)."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def error(self, path: str, message: str) -> ArchiveFormatError:
        """The typed error of a bad field: its path in the tree, the archive's URL, the ``JSON`` HDU."""
        return ArchiveFormatError(f"JSON tree field {path!r}: {message}", url=self.url, hdu="JSON")


def get_field(ctx: TreeContext, node: Any, key: str, path: str, *, required: bool = True, default: Any = None) -> Any:
    """``node[key]`` of an object node (``default`` when absent and not ``required``)."""
    if not isinstance(node, Mapping):
        raise ctx.error(path, f"expected an object, got {type(node).__name__}")
    if key not in node:
        if required:
            raise ctx.error(f"{path}.{key}", "required field is missing")
        return default
    return node[key]


def int_field(ctx: TreeContext, value: Any, path: str) -> int:
    """``value`` as an integer (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(path, f"expected an integer, got {value!r}")
    return value


def str_field(ctx: TreeContext, value: Any, path: str) -> str:
    """``value`` as a string."""
    if not isinstance(value, str):
        raise ctx.error(path, f"expected a string, got {value!r}")
    return value


def check_stamp(ctx: TreeContext, node: Any, path: str) -> None:
    """Require ``schema_version`` and refuse trees needing a newer reader (``min_read_version``)."""
    version = get_field(ctx, node, "schema_version", path)
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ctx.error(f"{path}.schema_version", f"expected 'major.minor.patch', got {version!r}")
    mrv_json = get_field(ctx, node, "min_read_version", path, required=False, default=1)
    mrv = int_field(ctx, mrv_json, f"{path}.min_read_version")
    if mrv > READER_MAJOR:
        raise ctx.error(path, f"tree requires reader major >= {mrv}; this reader supports {READER_MAJOR}")


def yx_from_json(value: Any, path: str = "yx", url: str | None = None) -> YX[int]:
    """A YX pair from ``{"y": .., "x": ..}`` or the old ``[y, x]`` array spelling."""
    ctx = TreeContext(url)
    if isinstance(value, Mapping):
        y, x = (int_field(ctx, get_field(ctx, value, key, path), f"{path}.{key}") for key in ("y", "x"))
        return YX(y, x)
    if isinstance(value, list) and len(value) == 2:
        return YX(int_field(ctx, value[0], f"{path}[0]"), int_field(ctx, value[1], f"{path}[1]"))
    raise ctx.error(path, f"expected a (y, x) pair, got {value!r}")


def _interval(ctx: TreeContext, value: Any, path: str) -> Interval:
    start = int_field(ctx, get_field(ctx, value, "start", path), f"{path}.start")
    stop = int_field(ctx, get_field(ctx, value, "stop", path), f"{path}.stop")
    try:
        return Interval(start, stop)
    except BoundsError as exc:
        raise ctx.error(path, str(exc)) from None


def box_from_json(value: Any, path: str = "bbox", url: str | None = None) -> Box:
    """A Box from ``{"y": {"start", "stop"}, "x": {...}}``."""
    ctx = TreeContext(url)
    return Box(
        _interval(ctx, get_field(ctx, value, "y", path), f"{path}.y"),
        _interval(ctx, get_field(ctx, value, "x", path), f"{path}.x"),
    )


def grid_from_json(value: Any, path: str = "grid", url: str | None = None) -> CellGrid:
    """A CellGrid from its JSON form."""
    ctx = TreeContext(url)
    shape = yx_from_json(get_field(ctx, value, "cell_shape", path), f"{path}.cell_shape", url)
    try:
        return CellGrid(box_from_json(get_field(ctx, value, "bbox", path), f"{path}.bbox", url), shape)
    except BoundsError as exc:
        raise ctx.error(path, str(exc)) from None


def bounds_from_json(value: Any, path: str = "bounds", url: str | None = None) -> CellGridBounds:
    """A CellGridBounds from its JSON form (``missing`` as a list of ``{"i", "j"}`` or ``[i, j]``)."""
    ctx = TreeContext(url)
    grid = grid_from_json(get_field(ctx, value, "grid", path), f"{path}.grid", url)
    bbox = box_from_json(get_field(ctx, value, "bbox", path), f"{path}.bbox", url)
    missing_json = get_field(ctx, value, "missing", path, required=False, default=[])
    if not isinstance(missing_json, list):
        raise ctx.error(f"{path}.missing", "expected a list")
    missing = set()
    for n, m in enumerate(missing_json):
        p = f"{path}.missing[{n}]"
        if isinstance(m, Mapping):
            i, j = (int_field(ctx, get_field(ctx, m, key, p), p) for key in ("i", "j"))
            missing.add(CellIJ(i, j))
        elif isinstance(m, list) and len(m) == 2:
            missing.add(CellIJ(int_field(ctx, m[0], p), int_field(ctx, m[1], p)))
        else:
            raise ctx.error(p, f"expected a cell index, got {m!r}")
    if not grid.bbox.contains(bbox):
        raise ctx.error(path, f"bbox {bbox} lies outside the cell grid {grid.bbox}")
    return CellGridBounds(grid, bbox, frozenset(missing))


def patch_from_json(value: Any, path: str = "patch", url: str | None = None) -> PatchDefinition:
    """A PatchDefinition from its JSON form."""
    ctx = TreeContext(url)
    return PatchDefinition(
        id=int_field(ctx, get_field(ctx, value, "id", path), f"{path}.id"),
        index=yx_from_json(get_field(ctx, value, "index", path), f"{path}.index", url),
        inner_bbox=box_from_json(get_field(ctx, value, "inner_bbox", path), f"{path}.inner_bbox", url),
        cells=grid_from_json(get_field(ctx, value, "cells", path), f"{path}.cells", url),
    )
