"""Per-cell aperture corrections (``cell_aperture_correction_map`` 1.0.0).

Stored as one table with a row per cell of the shared bounds (row-major, missing
cells skipped): ``cell_i``, ``cell_j``, then one float64 column per algorithm.
The shared bounds mark a cell missing only when it is missing for every
algorithm; a NaN value marks a cell missing for that algorithm only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .cells import CellGridBounds, CellIJ
from .errors import ArchiveFormatError, ValidationError
from .model import bounds_from_json
from .provenance import GetColumn, read_table_columns

__all__ = ["ApertureCorrections", "CellField"]

_PATH = "aperture_corrections"


def _int(value: Any, url: str | None, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchiveFormatError(f"expected an integer, got {value!r}", url=url, hdu=path)
    return value


class CellField:
    """A per-cell constant value: one aperture correction algorithm (dimensionless).

    Parameters
    ----------
    bounds
        The cells covered; cells without a value are in ``bounds.missing``.
    array
        float64 values of shape ``(subgrid_size.i, subgrid_size.j)``; NaN for missing cells.
    """

    def __init__(self, bounds: CellGridBounds, array: np.ndarray) -> None:
        size = bounds.subgrid_size
        if array.shape != (size.i, size.j):
            raise ValidationError(f"Array shape {array.shape} differs from the subgrid size {size}.")
        self._bounds = bounds
        self._array = array
        self._array.flags.writeable = False

    @property
    def bounds(self) -> CellGridBounds:
        """Cells covered by the field, with its own missing cells."""
        return self._bounds

    @property
    def array(self) -> np.ndarray:
        """Values over the subgrid (read-only), ``[i - subgrid_start.i, j - subgrid_start.j]``."""
        return self._array

    @property
    def unit(self) -> None:
        """Aperture corrections are dimensionless."""
        return None

    def value_in_cell(self, cell: CellIJ) -> float:
        """Return the value of ``cell``.

        Raises
        ------
        BoundsError
            If ``cell`` is outside the bounds or missing for this field.
        """
        self._bounds.check(cell, "this field")
        k = cell - self._bounds.subgrid_start
        return float(self._array[k.i, k.j])

    __getitem__ = value_in_cell

    def __repr__(self) -> str:
        return f"CellField({self._bounds})"


class ApertureCorrections(Mapping[str, CellField]):
    """Aperture corrections: algorithm name -> :class:`CellField`, sharing one grid and bbox.

    Build with :meth:`from_json`.  Picklable.

    Parameters
    ----------
    bounds
        The shared bounds (a cell is missing here only if missing for every algorithm).
    fields
        Algorithm name -> field, in table column order.
    tree
        The subtree the values were read from (for write-back).
    """

    def __init__(self, bounds: CellGridBounds, fields: dict[str, CellField], *,
                 tree: dict[str, Any] | None = None) -> None:
        self._bounds = bounds
        self._fields = dict(fields)
        self._tree = tree

    @classmethod
    def from_json(cls, tree: dict[str, Any], get_column: GetColumn, *, url: str | None = None
                  ) -> ApertureCorrections:
        """Rebuild the corrections from the ``aperture_corrections`` subtree.

        Parameters
        ----------
        tree
            The subtree, as parsed by :func:`json.loads` (not ``null``).
        get_column
            Returns the array of a referenced column, given its ``source``; called
            during this call only.
        url
            File the tree came from, for error messages.

        Raises
        ------
        ArchiveFormatError
            If the subtree is malformed, the table lacks ``cell_i``/``cell_j``, an
            algorithm column is not floating point, or the table rows are not the
            cells of the bounds in row-major order.
        """
        if not isinstance(tree, dict):
            raise ArchiveFormatError("expected an object", url=url, hdu=_PATH)
        bounds = bounds_from_json(tree.get("bounds"), f"{_PATH}.bounds", url)
        columns = read_table_columns(tree.get("table"), get_column, url=url, path=f"{_PATH}.table")
        by_name = {c.name: c.data for c in columns}
        if "cell_i" not in by_name or "cell_j" not in by_name:
            raise ArchiveFormatError("table lacks cell_i/cell_j columns", url=url, hdu=f"{_PATH}.table")
        cell_i, cell_j = by_name["cell_i"], by_name["cell_j"]
        if cell_i.ndim != 1 or cell_i.dtype.kind not in "iu" or cell_j.dtype.kind not in "iu":
            raise ArchiveFormatError("cell_i/cell_j must be integer scalar columns", url=url,
                                     hdu=f"{_PATH}.table")
        size, start = bounds.subgrid_size, bounds.subgrid_start
        # Checked before any allocation sized by the bounds.
        n_missing = sum(1 for c in bounds.missing if c in _Rect(bounds))
        if size.i * size.j - n_missing != len(cell_i):
            raise ArchiveFormatError(
                f"table has {len(cell_i)} rows but the bounds have {size.i * size.j - n_missing} cells",
                url=url, hdu=f"{_PATH}.table")
        expected = np.array([(c.i, c.j) for c in bounds.cell_indices()], dtype=np.int64).reshape(-1, 2)
        if not np.array_equal(expected, np.stack([cell_i, cell_j], axis=1).astype(np.int64)):
            raise ArchiveFormatError("table cells do not match the bounds' cells in row-major order",
                                     url=url, hdu=f"{_PATH}.table")
        rows = (expected[:, 0] - start.i, expected[:, 1] - start.j)
        fields: dict[str, CellField] = {}
        for column in columns:
            if column.name in ("cell_i", "cell_j"):
                continue
            if column.data.dtype.kind != "f" or column.data.ndim != 1:
                raise ArchiveFormatError(f"aperture correction {column.name!r} must be a float column",
                                         url=url, hdu=f"{_PATH}.table")
            array = np.full((size.i, size.j), np.nan)
            array[rows] = column.data
            nan = np.isnan(column.data)
            field_bounds = bounds
            if nan.any():
                extra = {CellIJ(int(i), int(j)) for i, j in expected[nan]}
                field_bounds = CellGridBounds(bounds.grid, bounds.bbox, bounds.missing | extra)
            fields[column.name] = CellField(field_bounds, array)
        return cls(bounds, fields, tree=copy.deepcopy(tree))

    @property
    def bounds(self) -> CellGridBounds:
        """Shared bounds of all algorithms."""
        return self._bounds

    @property
    def names(self) -> list[str]:
        """Algorithm names, in table order."""
        return list(self._fields)

    def value(self, name: str, cell: CellIJ) -> float:
        """Return the correction of algorithm ``name`` in ``cell``.

        Raises
        ------
        KeyError
            If there is no such algorithm.
        BoundsError
            If ``cell`` is outside the bounds or missing for that algorithm.
        """
        return self._fields[name].value_in_cell(cell)

    def __getitem__(self, name: str) -> CellField:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def to_json(self) -> dict[str, Any] | None:
        """Return the subtree these corrections were read from (a copy), or ``None``."""
        return copy.deepcopy(self._tree) if self._tree is not None else None

    def __repr__(self) -> str:
        return f"ApertureCorrections({self.names}, bounds={self._bounds})"


class _Rect:
    """Containment in the rectangle of cells of some bounds, ignoring missing cells."""

    def __init__(self, bounds: CellGridBounds) -> None:
        self._start, self._stop = bounds.subgrid_start, bounds.subgrid_stop

    def __contains__(self, cell: CellIJ) -> bool:
        return self._start.i <= cell.i < self._stop.i and self._start.j <= cell.j < self._stop.j

