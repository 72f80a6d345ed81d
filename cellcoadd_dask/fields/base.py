"""What every field does: point evaluation, lazy rendering over an absolute box, units.

A field is a 2-d function of absolute pixel coordinates.  ``BaseField.render`` builds a
dask array over any box, one task per chunk, each computing only its own pixels;
``BaseField.evaluate`` and calling the field give values at points, computed now.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geom import Box

if TYPE_CHECKING:
    import astropy.units as u
    import dask.array as da

__all__ = ["BaseField", "unit_scale", "unit_json"]


def unit_json(unit: u.UnitBase | None) -> str | None:
    """A unit as field JSON stores it (the VOUnit string where there is one), ``None`` for none."""
    if unit is None:
        return None
    try:
        return str(unit.to_string("vounit"))
    except ValueError:
        return str(unit.to_string())


def _constant(factor: Any) -> bool:
    """Whether ``factor`` is what a field multiplies by: a real number, an astropy unit or a scalar Quantity."""
    import astropy.units as u

    if isinstance(factor, u.Quantity):
        return factor.ndim == 0
    return isinstance(factor, (u.UnitBase, int, float, np.integer, np.floating)) and not isinstance(factor, bool)


def unit_scale(source: u.UnitBase | None, target: u.UnitBase | None) -> float:
    """The factor taking values in ``source`` to ``target`` (``None`` is dimensionless).

    Raises
    ------
    astropy.units.UnitConversionError
        If the units are not compatible.
    """
    import astropy.units as u

    a = u.dimensionless_unscaled if source is None else source
    b = u.dimensionless_unscaled if target is None else target
    return 1.0 if a == b else float(a.to(b))


class BaseField(abc.ABC):
    """A 2-d function of absolute pixel coordinates ``(y, x)``, read from its JSON form.

    Fields are immutable and picklable.  Build them with :func:`cellcoadd_dask.fields.field_from_json`.
    """

    @property
    @abc.abstractmethod
    def field_type(self) -> str:
        """``"CHEBYSHEV"``, ``"SPLINE"``, ``"SUM"`` or ``"PRODUCT"``."""

    @property
    @abc.abstractmethod
    def bbox(self) -> Box:
        """The box of the region where the field can be evaluated (absolute pixels)."""

    @property
    @abc.abstractmethod
    def unit(self) -> u.UnitBase | None:
        """The field's unit (an astropy unit), or ``None``."""

    @property
    @abc.abstractmethod
    def is_constant(self) -> bool:
        """Whether the field is spatially constant (a spline's stored node values are read to tell)."""

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The field's JSON form, as stored (a copy)."""

    @abc.abstractmethod
    def evaluate(self, *, x: Any, y: Any) -> np.ndarray:
        """Values (float64) at points: ``x`` and ``y`` are absolute pixel coordinates that broadcast together."""

    @abc.abstractmethod
    def render_axes(self, ys: da.Array, xs: da.Array, dtype: np.dtype) -> da.Array:
        """The field on the grid of rows ``ys`` and columns ``xs`` (1-d int64 dask arrays), lazily.

        The result's chunks are those of ``ys`` by those of ``xs``; :meth:`render` is the usual door.
        """

    def render(self, bbox: Box | None = None, *, dtype: Any = None, chunks: Any = "auto") -> da.Array:
        """The field over an absolute box, as a lazy dask array (nothing is computed or read now).

        Parameters
        ----------
        bbox
            The box (absolute pixels, ``(y, x)``, half-open); :attr:`bbox` when omitted.
        dtype
            Pixel type of the result (float64 by default).  Values are computed in float64
            and rounded once, except where the model itself works at that precision (a
            spline's interpolation along ``y``, the sums and products of operands).
        chunks
            Chunks of the result, in any form ``dask.array`` accepts (for example
            ``coadd.image.array.chunks`` for a box the size of the coadd).

        Raises
        ------
        TypeError
            If ``bbox`` is not a :class:`~cellcoadd_dask.Box`.
        """
        import dask.array as da

        box = self.bbox if bbox is None else bbox
        if not isinstance(box, Box):
            raise TypeError(f"bbox must be a cellcoadd_dask.Box, not {type(box).__name__}.")
        out_dtype = np.dtype(np.float64 if dtype is None else dtype)
        shape = (box.y.size, box.x.size)
        ychunks, xchunks = da.core.normalize_chunks(chunks, shape=shape, dtype=out_dtype)
        ys = da.arange(box.y.start, box.y.stop, chunks=(ychunks,), dtype=np.int64)
        xs = da.arange(box.x.start, box.x.stop, chunks=(xchunks,), dtype=np.int64)
        return self.render_axes(ys, xs, out_dtype)

    def __call__(self, point: Any = None, /, *, x: Any = None, y: Any = None, quantity: bool = False) -> Any:
        """Values at a point (anything with ``.x`` and ``.y``) or at ``x=``, ``y=`` (scalars or arrays).

        Returns a float for scalar coordinates, else an array; with ``quantity=True``, an
        ``astropy.units.Quantity`` in :attr:`unit` (dimensionless when it is ``None``).
        """
        if point is None:
            if x is None or y is None:
                raise TypeError("Pass either a point or both x= and y= to a field call.")
        else:
            if x is not None or y is not None:
                raise TypeError("A point and x=, y= are mutually exclusive.")
            x, y = point.x, point.y
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        values = self.evaluate(x=xa, y=ya)
        if quantity:
            import astropy.units as u

            return u.Quantity(values, self.unit)
        return float(values) if values.ndim == 0 else values

    @abc.abstractmethod
    def _multiplied(self, value: float, unit: u.UnitBase | None) -> BaseField:
        """The field times ``value``, with unit ``unit`` (a new field of the same type)."""

    def __mul__(self, factor: Any) -> BaseField:
        """The field times a constant: a number, an astropy ``Quantity`` or unit (whose unit multiplies :attr:`unit`).

        The result is a field of the same type (a sum scales every operand, a product its last),
        as in ``lsst.images.fields``; nothing is read or computed now.
        """
        import astropy.units as u

        if not _constant(factor):
            return NotImplemented
        unit = self.unit
        if isinstance(factor, u.UnitBase):
            value, extra = 1.0, factor
        elif isinstance(factor, u.Quantity):
            value, extra = float(factor.value), factor.unit
        else:
            value, extra = float(factor), None
        if extra is not None:
            unit = extra if unit is None else unit * extra
        return self._multiplied(value, unit)

    __rmul__ = __mul__

    __array_ufunc__ = None
    """numpy and astropy defer to the field's operators (``2 * u.s * field`` is a field, not an array)."""

    def __truediv__(self, factor: Any) -> BaseField:
        """The field divided by a constant (see ``__mul__``)."""
        return self * (1.0 / factor) if _constant(factor) else NotImplemented

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseField):
            return NotImplemented
        return type(self) is type(other) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        unit = "" if self.unit is None else f", unit={self.unit}"
        return f"{type(self).__name__}({self.bbox}{unit})"

