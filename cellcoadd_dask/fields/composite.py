"""Sums and products of fields (``field_type`` ``SUM`` and ``PRODUCT``), evaluated operand by operand."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import BaseField, unit_scale
from .parse import FieldPath

if TYPE_CHECKING:
    import astropy.units as u
    import dask.array as da

    from ..geom import Box

__all__ = ["ProductField", "SumField"]



def _times_unit(operand: u.UnitBase | None, before: u.UnitBase | None, after: u.UnitBase | None) -> u.UnitBase | None:
    """An operand's unit once the whole field's unit went from ``before`` to ``after``."""
    if after is None or after == before:
        return operand
    extra = after if before is None else after / before
    return extra if operand is None else operand * extra


def _sum_blocks(*blocks: np.ndarray, scales: Sequence[float], out_dtype: np.dtype) -> np.ndarray:
    total = np.zeros(blocks[0].shape, dtype=out_dtype)
    for block, scale in zip(blocks, scales, strict=True):
        total += block if scale == 1.0 else scale * block
    return total


def _product_blocks(*blocks: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    total = np.full(blocks[0].shape, 1.0, dtype=out_dtype)
    for block in blocks:
        total *= block
    return total


class _Composite(BaseField):
    """Operands read from ``operands`` in the JSON; the box is where all of them can be evaluated."""

    def __init__(self, tree: Mapping[str, Any], where: FieldPath, build: Callable[[Any, FieldPath, int], BaseField],
                 depth: int) -> None:
        node = where.mapping(tree)
        self._tree = copy.deepcopy(dict(node))
        operands = where.member(node, "operands")
        if not isinstance(operands, list) or not operands:
            raise where.child("operands").error("expected a non-empty list of fields")
        self._operands = tuple(build(op, where.child("operands").child(n), depth + 1) for n, op in enumerate(operands))
        box: Box | None = self._operands[0].bbox
        for operand in self._operands[1:]:
            box = None if box is None else box.intersection(operand.bbox)
        if box is None:
            raise where.error("the operands' bounds do not overlap")
        self._bbox = box

    @property
    def operands(self) -> tuple[BaseField, ...]:
        """The fields combined."""
        return self._operands

    @property
    def bbox(self) -> Box:
        """Where every operand can be evaluated (the intersection of their boxes)."""
        return self._bbox

    @property
    def is_constant(self) -> bool:
        """Whether every operand is constant."""
        return all(op.is_constant for op in self._operands)

    def to_json(self) -> dict[str, Any]:
        """The stored JSON (a copy), with each operand's."""
        return {**copy.deepcopy(self._tree), "operands": [op.to_json() for op in self._operands]}

    def _with_operands(self, operands: Sequence[BaseField], unit: u.UnitBase | None) -> Any:
        out = copy.copy(self)
        out._operands = tuple(operands)
        out._unit = unit  # type: ignore[attr-defined]
        return out

    def _stack(self, combine: Callable[..., np.ndarray], ys: da.Array, xs: da.Array, dtype: np.dtype,
               **kwargs: Any) -> da.Array:
        import dask.array as da

        args: list[Any] = []
        for op in self._operands:
            args += [op.render_axes(ys, xs, dtype), "yx"]
        return da.blockwise(combine, "yx", *args, out_dtype=dtype, dtype=dtype, meta=np.empty((0, 0), dtype=dtype),
                            **kwargs)


class SumField(_Composite):
    """The sum of fields; operands with units are converted to the first operand's unit.

    Parameters
    ----------
    tree
        The field's JSON (``operands``).
    where
        Its place in the tree, for error messages.
    build
        Builds each operand.
    depth
        How deep this field is nested.

    Raises
    ------
    ArchiveFormatError
        If the JSON is malformed or the operands' units cannot be added.
    """

    def __init__(self, tree: Mapping[str, Any], where: FieldPath, build: Callable[[Any, FieldPath, int], BaseField],
                 depth: int = 0) -> None:
        super().__init__(tree, where, build, depth)
        import astropy.units as u

        self._unit = self._operands[0].unit
        self._scales = []
        for op in self._operands:
            if (op.unit is None) != (self._unit is None):
                raise where.error("cannot add a field with a unit to one without")
            try:
                self._scales.append(unit_scale(op.unit, self._unit))
            except u.UnitConversionError as exc:
                raise where.error(f"operand units do not add: {exc}") from None

    @property
    def field_type(self) -> str:
        """``"SUM"``."""
        return "SUM"

    @property
    def unit(self) -> u.UnitBase | None:
        """The first operand's unit."""
        return self._unit

    def evaluate(self, *, x: Any, y: Any) -> np.ndarray:
        """Values (float64) at points ``(y, x)``: the operands' values summed in :attr:`unit`."""
        total = None
        for op, scale in zip(self._operands, self._scales, strict=True):
            values = op.evaluate(x=x, y=y)
            values = values if scale == 1.0 else scale * values
            total = values if total is None else total + values
        assert total is not None
        return np.asarray(total, dtype=np.float64)

    def _multiplied(self, value: float, unit: u.UnitBase | None) -> SumField:
        """Every operand multiplied (their unit ratios, hence :attr:`_scales`, do not change)."""
        operands = [op._multiplied(value, _times_unit(op.unit, self._unit, unit)) for op in self._operands]
        return self._with_operands(operands, unit)

    def render_axes(self, ys: da.Array, xs: da.Array, dtype: np.dtype) -> da.Array:
        """The sum on the grid ``ys`` x ``xs``: each operand rendered at ``dtype``, added at ``dtype``."""
        return self._stack(_sum_blocks, ys, xs, dtype, scales=tuple(self._scales))


class ProductField(_Composite):
    """The product of fields; its unit is the product of the operands' units.

    Parameters
    ----------
    tree
        The field's JSON (``operands``).
    where
        Its place in the tree, for error messages.
    build
        Builds each operand.
    depth
        How deep this field is nested.

    Raises
    ------
    ArchiveFormatError
        If the JSON is malformed.
    """

    def __init__(self, tree: Mapping[str, Any], where: FieldPath, build: Callable[[Any, FieldPath, int], BaseField],
                 depth: int = 0) -> None:
        super().__init__(tree, where, build, depth)
        unit = None
        for op in self._operands:
            if op.unit is not None:
                unit = op.unit if unit is None else unit * op.unit
        self._unit = unit

    @property
    def field_type(self) -> str:
        """``"PRODUCT"``."""
        return "PRODUCT"

    @property
    def unit(self) -> u.UnitBase | None:
        """The product of the operands' units (``None`` when none has one)."""
        return self._unit

    def evaluate(self, *, x: Any, y: Any) -> np.ndarray:
        """Values (float64) at points ``(y, x)``: the operands' values multiplied."""
        total = None
        for op in self._operands:
            values = op.evaluate(x=x, y=y)
            total = values if total is None else total * values
        assert total is not None
        return np.asarray(total, dtype=np.float64)

    def _multiplied(self, value: float, unit: u.UnitBase | None) -> ProductField:
        """The last operand multiplied."""
        last = self._operands[-1]
        operands = [*self._operands[:-1], last._multiplied(value, _times_unit(last.unit, self._unit, unit))]
        return self._with_operands(operands, unit)

    def render_axes(self, ys: da.Array, xs: da.Array, dtype: np.dtype) -> da.Array:
        """The product on the grid ``ys`` x ``xs``: each operand rendered at ``dtype``, multiplied at ``dtype``."""
        return self._stack(_product_blocks, ys, xs, dtype)
