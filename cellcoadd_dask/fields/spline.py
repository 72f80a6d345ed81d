"""Akima-spline interpolation of values on a grid of nodes (``field_type`` ``SPLINE``).

Values are interpolated along ``y`` in each node column first, then along ``x``.  Node values
that are NaN are missing: a column interpolates its finite nodes only and a column with none
is left out.  A spline of more than 64 nodes keeps its node values in an archive item of its
own (``data.source``); they are read through the archive's reader only when the field is
evaluated, once per computation.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..deferred import Deferred
from ..errors import ArchiveFormatError, ValidationError
from ..limits import check
from .akima import akima_coefficients, evaluate_pieces, slope_change_max
from .base import BaseField, unit_json
from .parse import FieldPath

if TYPE_CHECKING:
    import astropy.units as u
    import dask.array as da

    from ..geom import Box, Interval

__all__ = ["ArrayReader", "SplineField"]

ArrayReader = Callable[[str, tuple[int, ...], str], np.ndarray]
"""Reads a whole archive item: ``reader(source, shape, datatype)``."""


def _times(nodes: Deferred[np.ndarray], value: float) -> np.ndarray:
    return nodes.get() * value


def _read_nodes(reader: ArrayReader | None, source: str, shape: tuple[int, int], datatype: str,
                where: FieldPath) -> np.ndarray:
    if reader is None:
        raise ValidationError(f"{where.path}: the node values are stored in archive item {source!r}, and this "
                              "background map was not read from an archive.")
    values = np.asarray(reader(source, shape, datatype))
    if values.shape != shape:
        raise ArchiveFormatError(f"archive item {source!r} holds an array of shape {values.shape}, "
                                 f"the tree says {shape}", url=where.url, hdu=where.path)
    return np.asarray(values, dtype=np.float64)


def _ends(interval: Interval) -> np.ndarray:
    """Nodes of the constant stand-in for a single node: the interval grown by half a pixel."""
    return np.array([interval.start - 0.5, interval.stop - 1 + 0.5])


def _node_values(field: SplineField) -> np.ndarray:
    return field.data


def _x_change_max(ys: np.ndarray, nodes: np.ndarray, *, field: SplineField, out_dtype: np.dtype) -> Any:
    xg, columns = field.columns_at(nodes, ys, out_dtype)
    return slope_change_max(xg, columns) if xg.size >= 3 else None


def _grid_block(ys: np.ndarray, xs: np.ndarray, *, field: SplineField, nodes: np.ndarray, change_max: Any,
                out_dtype: np.dtype) -> np.ndarray:
    xg, columns = field.columns_at(nodes, ys, out_dtype)
    if xg.size == 1:
        values = evaluate_pieces(akima_coefficients(_ends(field.bbox.x), np.stack([columns[0], columns[0]])),
                                 _ends(field.bbox.x), xs, extrapolate=False)
    else:
        values = evaluate_pieces(akima_coefficients(xg, columns, change_max), xg, xs)
    return np.asarray(values.T, dtype=out_dtype)


class SplineField(BaseField):
    """A 2-d Akima spline through values on a grid of nodes.

    Parameters
    ----------
    tree
        The field's JSON (``bounds``, ``data``, ``y``, ``x``, ``unit``).
    where
        Its place in the tree, for error messages.
    reader
        Reads the archive item holding the node values when ``data`` references one.

    Raises
    ------
    ArchiveFormatError
        If the JSON is malformed (node positions not increasing, sizes that disagree, a
        referenced array larger than the ``chunk_bytes`` limit...).
    """

    def __init__(self, tree: Mapping[str, Any], where: FieldPath, reader: ArrayReader | None = None) -> None:
        node = where.mapping(tree)
        self._tree = copy.deepcopy(dict(node))
        self._bbox = where.child("bounds").bounds_bbox(where.member(node, "bounds"))
        self._unit = where.child("unit").unit(node.get("unit"))
        self._y = self._positions(node, "y", where)
        self._x = self._positions(node, "x", where)
        shape = (self._y.size, self._x.size)
        data_path = where.child("data")
        data = data_path.mapping(where.member(node, "data"))
        self._source: str | None = None
        if "source" in data:
            source = data["source"]
            if not isinstance(source, str):
                raise data_path.child("source").error(f"expected a string, got {source!r}")
            declared = data_path.member(data, "shape")
            if not isinstance(declared, list) or tuple(declared) != shape:
                raise data_path.child("shape").error(f"expected {list(shape)} (the y and x node counts), "
                                                     f"got {declared!r}")
            datatype = data_path.member(data, "datatype")
            if datatype not in ("float32", "float64"):
                raise data_path.child("datatype").error(f"expected float32 or float64, got {datatype!r}")
            check(shape[0] * shape[1] * np.dtype(datatype).itemsize, "chunk_bytes", field=data_path.path,
                  url=where.url, hdu=data_path.path)
            self._source = source
            self._nodes: Deferred[np.ndarray] = Deferred(
                functools.partial(_read_nodes, reader, source, shape, datatype, where)
            )
        else:
            values = data_path.inline_array(data, 2)
            if values.shape != shape:
                raise data_path.error(f"node values of shape {values.shape} do not match the y and x node "
                                      f"counts {shape}")
            values.flags.writeable = False
            self._nodes = Deferred(functools.partial(np.asarray, values))
        self._token = json.dumps(self._tree, sort_keys=True, default=str) + repr(where.url)
        self._multiplied_nodes = False
        """Whether the node values are the stored ones times a constant (then ``to_json`` holds them inline)."""

    @staticmethod
    def _positions(node: Mapping[str, Any], key: str, where: FieldPath) -> np.ndarray:
        path = where.child(key)
        values = path.inline_array(where.member(node, key), 1)
        if not np.all(np.isfinite(values)) or not np.all(values[:-1] < values[1:]):
            raise path.error("node positions must be finite and strictly increasing")
        values.flags.writeable = False
        return values

    @property
    def field_type(self) -> str:
        """``"SPLINE"``."""
        return "SPLINE"

    @property
    def bbox(self) -> Box:
        """The box where the field can be evaluated."""
        return self._bbox

    @property
    def unit(self) -> u.UnitBase | None:
        """The field's unit, or ``None``."""
        return self._unit

    @property
    def y(self) -> np.ndarray:
        """Row positions of the nodes (read-only)."""
        return self._y

    @property
    def x(self) -> np.ndarray:
        """Column positions of the nodes (read-only)."""
        return self._x

    @property
    def source(self) -> str | None:
        """The archive item holding the node values, or ``None`` when they are inline."""
        return self._source

    @property
    def data(self) -> np.ndarray:
        """Node values, ``(len(y), len(x))`` float64, NaN where missing (read from the archive on first use)."""
        values = self._nodes.get()
        values.flags.writeable = False
        return values

    @property
    def is_constant(self) -> bool:
        """Whether every node value is the same (reads them)."""
        values = self.data
        return bool((values == values[0, 0]).all())

    def to_json(self) -> dict[str, Any]:
        """The stored JSON (a copy).

        A field multiplied by a constant whose node values are stored apart holds them inline (read now).
        """
        tree = copy.deepcopy(self._tree)
        if self._multiplied_nodes and self._source is not None:
            tree["data"] = {"data": self.data.tolist(), "datatype": "float64"}
        return tree

    def _multiplied(self, value: float, unit: u.UnitBase | None) -> SplineField:
        out = copy.copy(self)
        out._tree = {**copy.deepcopy(self._tree), "unit": unit_json(unit)}
        out._unit = unit
        if self._source is None:
            out._tree["data"] = {"data": (self.data * value).tolist(), "datatype": "float64"}
            scaled = np.asarray(self.data * value)
            scaled.flags.writeable = False
            out._nodes = Deferred(functools.partial(np.asarray, scaled))
        else:  # read when evaluated, as the stored values are
            out._multiplied_nodes = True
            out._nodes = Deferred(functools.partial(_times, self._nodes, value))
        out._token = f"{self._token}*{value!r}"
        return out

    def columns_at(self, nodes: np.ndarray, ys: np.ndarray, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """Each usable node column interpolated at rows ``ys``: (their x positions, ``(n, len(ys))`` values).

        Values are rounded to ``dtype``, then held as float64.

        Raises
        ------
        ValueError
            If no node value is finite.
        """
        rows = np.asarray(ys, dtype=np.float64)
        out = np.zeros((self._x.size, rows.size), dtype=dtype)
        keep = np.zeros(self._x.size, dtype=bool)
        for j in range(self._x.size):
            finite = np.isfinite(nodes[:, j])
            if not finite.any():
                continue
            ys_j, zs_j = self._y[finite], nodes[finite, j]
            if ys_j.size == 1:
                ys_j, zs_j = _ends(self._bbox.y), np.array([zs_j[0], zs_j[0]])
                out[j] = evaluate_pieces(akima_coefficients(ys_j, zs_j), ys_j, rows, extrapolate=False)
            else:
                out[j] = evaluate_pieces(akima_coefficients(ys_j, zs_j), ys_j, rows)
            keep[j] = True
        if not keep.any():
            raise ValueError("No valid data points.")
        return self._x[keep], out[keep].astype(np.float64)

    def evaluate(self, *, x: Any, y: Any) -> np.ndarray:
        """Values (float64) at points ``(y, x)`` that broadcast together (reads the node values)."""
        yb, xb = np.broadcast_arrays(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64))
        xg, columns = self.columns_at(self.data, yb.ravel(), np.float64)
        if xg.size == 1:
            ends = _ends(self._bbox.x)
            coefficients = akima_coefficients(ends, np.stack([columns[0], columns[0]]))
            values = evaluate_pieces(coefficients, ends, xb.ravel(), extrapolate=False, pointwise=True)
        else:
            coefficients = akima_coefficients(xg, columns, slope_change_max(xg, columns, axis=0))
            values = evaluate_pieces(coefficients, xg, xb.ravel(), pointwise=True)
        return values.reshape(yb.shape)

    def render_axes(self, ys: da.Array, xs: da.Array, dtype: np.dtype) -> da.Array:
        """The spline on the grid ``ys`` x ``xs``, one task per chunk.

        One task reads the node values and one finds the scale of slope changes over all rows
        of the grid (so each chunk matches a rendering of the whole grid); chunks depend on both.
        """
        import dask
        import dask.array as da
        from dask.base import tokenize

        token = tokenize(self._token, dtype.str, ys.name, ys.chunks)
        nodes = dask.delayed(_node_values, pure=True)(self, dask_key_name=f"spline-nodes-{tokenize(self._token)}")
        change_max = dask.delayed(_x_change_max, pure=True)(ys, nodes, field=self, out_dtype=dtype,
                                                             dask_key_name=f"spline-scale-{token}")
        return da.blockwise(_grid_block, "yx", ys, "y", xs, "x", field=self, nodes=nodes, change_max=change_max,
                            out_dtype=dtype, dtype=dtype, meta=np.empty((0, 0), dtype=dtype))
