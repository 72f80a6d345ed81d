"""2-d Chebyshev polynomials (``field_type`` ``CHEBYSHEV``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import BaseField, unit_json
from .parse import FieldPath

if TYPE_CHECKING:
    import astropy.units as u
    import dask.array as da

    from ..geom import Box

__all__ = ["ChebyshevField"]


def _grid_block(ys: np.ndarray, xs: np.ndarray, *, field: ChebyshevField, out_dtype: np.dtype) -> np.ndarray:
    my, mx = field.remap(y=ys, x=xs)
    return np.asarray(np.polynomial.chebyshev.chebgrid2d(my, mx, field.coefficients), dtype=out_dtype)


class ChebyshevField(BaseField):
    """A 2-d Chebyshev polynomial of the first kind over a box.

    The box, grown by half a pixel on every side, is mapped onto ``[-1, 1] x [-1, 1]``; element
    ``[p, q]`` of :attr:`coefficients` multiplies ``T_p(y) T_q(x)``.

    Parameters
    ----------
    tree
        The field's JSON (``bounds``, ``coefficients``, ``unit``).
    where
        Its place in the tree, for error messages.

    Raises
    ------
    ArchiveFormatError
        If the JSON is malformed.
    """

    def __init__(self, tree: Mapping[str, Any], where: FieldPath) -> None:
        node = where.mapping(tree)
        self._tree = copy.deepcopy(dict(node))
        self._bbox = where.child("bounds").bounds_bbox(where.member(node, "bounds"))
        self._coefficients = where.child("coefficients").inline_array(where.member(node, "coefficients"), 2)
        self._coefficients.flags.writeable = False
        self._unit = where.child("unit").unit(node.get("unit"))
        box = self._bbox
        self._x_scale = 2.0 / box.x.size
        self._x_shift = box.x.start + 0.5 * box.x.size - 0.5
        self._y_scale = 2.0 / box.y.size
        self._y_shift = box.y.start + 0.5 * box.y.size - 0.5

    @property
    def field_type(self) -> str:
        """``"CHEBYSHEV"``."""
        return "CHEBYSHEV"

    @property
    def bbox(self) -> Box:
        """The box the polynomial's domain is mapped from."""
        return self._bbox

    @property
    def unit(self) -> u.UnitBase | None:
        """The field's unit, or ``None``."""
        return self._unit

    @property
    def coefficients(self) -> np.ndarray:
        """Coefficients (read-only, float64): ``[p, q]`` multiplies ``T_p(y) T_q(x)``."""
        return self._coefficients

    @property
    def y_order(self) -> int:
        """Highest order in ``y``."""
        return int(self._coefficients.shape[0]) - 1

    @property
    def x_order(self) -> int:
        """Highest order in ``x``."""
        return int(self._coefficients.shape[1]) - 1

    @property
    def order(self) -> int:
        """Highest order in either direction."""
        return max(self.x_order, self.y_order)

    @property
    def is_constant(self) -> bool:
        """Whether the polynomial is of order 0."""
        return self.order == 0

    def to_json(self) -> dict[str, Any]:
        """The stored JSON (a copy)."""
        return copy.deepcopy(self._tree)

    def _multiplied(self, value: float, unit: u.UnitBase | None) -> ChebyshevField:
        tree = copy.deepcopy(self._tree)
        tree["coefficients"] = {"data": (self._coefficients * value).tolist(), "datatype": "float64"}
        tree["unit"] = unit_json(unit)
        return ChebyshevField(tree, FieldPath("field"))

    def remap(self, *, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Absolute coordinates mapped onto the polynomial's ``[-1, 1]`` domain (float64)."""
        my = (np.asarray(y, dtype=np.float64) - self._y_shift) * self._y_scale
        mx = (np.asarray(x, dtype=np.float64) - self._x_shift) * self._x_scale
        return my, mx

    def evaluate(self, *, x: Any, y: Any) -> np.ndarray:
        """Values (float64) at points ``(y, x)`` that broadcast together."""
        yb, xb = np.broadcast_arrays(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64))
        my, mx = self.remap(y=yb, x=xb)
        return np.asarray(np.polynomial.chebyshev.chebval2d(my, mx, self._coefficients), dtype=np.float64)

    def render_axes(self, ys: da.Array, xs: da.Array, dtype: np.dtype) -> da.Array:
        """The polynomial on the grid ``ys`` x ``xs``, one task per chunk."""
        import dask.array as da

        return da.blockwise(_grid_block, "yx", ys, "y", xs, "x", field=self, out_dtype=dtype, dtype=dtype,
                            meta=np.empty((0, 0), dtype=dtype))
