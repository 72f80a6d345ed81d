"""Fields: 2-d functions of absolute pixel coordinates read from their JSON form (background models).

:func:`field_from_json` builds a ``ChebyshevField``, ``SplineField``, ``SumField`` or
``ProductField`` from the JSON lsst-images stores (``field_type`` ``CHEBYSHEV``, ``SPLINE``,
``SUM``, ``PRODUCT``).  Every field renders lazily over any absolute box (``render``, a dask
array) and evaluates at points (calling it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import BaseField, unit_scale
from .chebyshev import ChebyshevField
from .composite import ProductField, SumField
from .parse import MAX_NESTING, FieldPath
from .spline import ArrayReader, SplineField

__all__ = [
    "ArrayReader",
    "BaseField",
    "ChebyshevField",
    "FieldPath",
    "ProductField",
    "SplineField",
    "SumField",
    "field_from_json",
    "unit_scale",
]

FIELD_TYPES = ("CHEBYSHEV", "SPLINE", "SUM", "PRODUCT")


def field_from_json(
    tree: Any, *, path: str = "field", url: str | None = None, reader: ArrayReader | None = None
) -> BaseField:
    """The field a JSON object describes.

    Parameters
    ----------
    tree
        The field's JSON object (with its ``field_type``).
    path
        Where it is in the tree (``"backgrounds.fields.sky"``), for error messages.
    url
        The file it came from, for error messages.
    reader
        Reads archive items a spline's node values may be stored in (``reader(source, shape,
        datatype)``), when the field is evaluated.

    Raises
    ------
    ArchiveFormatError
        If the JSON is malformed: unknown ``field_type``, wrong types, sizes that disagree,
        nesting deeper than 32 levels.
    """
    return _build(tree, FieldPath(path, url), 0, reader)


def _build(tree: Any, where: FieldPath, depth: int, reader: ArrayReader | None) -> BaseField:
    if depth > MAX_NESTING:
        raise where.error(f"fields nest deeper than {MAX_NESTING} levels")
    node: Mapping[str, Any] = where.mapping(tree)
    kind = node.get("field_type")
    if kind not in FIELD_TYPES:
        raise where.child("field_type").error(f"unknown field type {kind!r} (known: {', '.join(FIELD_TYPES)})")

    def build(child: Any, child_where: FieldPath, child_depth: int) -> BaseField:
        return _build(child, child_where, child_depth, reader)

    if kind == "CHEBYSHEV":
        return ChebyshevField(node, where)
    if kind == "SPLINE":
        return SplineField(node, where, reader)
    if kind == "SUM":
        return SumField(node, where, build, depth)
    return ProductField(node, where, build, depth)
