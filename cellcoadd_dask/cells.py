"""Cell geometry: :class:`CellIJ`, :class:`CellGrid`, :class:`CellGridBounds`, :class:`PatchDefinition`.

A cell index ``(i, j)`` counts rows (y) and columns (x) of cells from the grid's
``bbox.start``; every box here is in absolute (tract) pixel coordinates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import BoundsError
from .geom import YX, Box, Interval

__all__ = ["CellGrid", "CellGridBounds", "CellIJ", "PatchDefinition"]


@dataclass(frozen=True, slots=True, order=True)
class CellIJ:
    """Index of a cell: ``i`` is the row (y), ``j`` the column (x), from the grid start."""

    i: int
    j: int

    def __add__(self, other: CellIJ) -> CellIJ:
        return CellIJ(self.i + other.i, self.j + other.j)

    def __sub__(self, other: CellIJ) -> CellIJ:
        return CellIJ(self.i - other.i, self.j - other.j)

    def __repr__(self) -> str:
        return f"CellIJ(i={self.i}, j={self.j})"

    def __str__(self) -> str:
        return f"(i={self.i}, j={self.j})"

    def to_json(self) -> dict[str, int]:
        """The JSON form ``{"i": i, "j": j}``."""
        return {"i": self.i, "j": self.j}


@dataclass(frozen=True, slots=True)
class CellGrid:
    """A gap-free tiling of ``bbox`` by cells of ``cell_shape`` (y, x) pixels."""

    bbox: Box
    cell_shape: YX[int]

    def __post_init__(self) -> None:
        cy, cx = self.cell_shape
        if cy <= 0 or cx <= 0:
            raise BoundsError(f"Cell shape {self.cell_shape} must be positive.")

    @property
    def shape(self) -> YX[int]:
        """Number of cells along (y, x) (partial cells at the far edges count)."""
        cy, cx = self.cell_shape
        return YX(-(-self.bbox.y.size // cy), -(-self.bbox.x.size // cx))

    def index_of(self, *, y: int, x: int) -> CellIJ:
        """The cell containing absolute pixel (y, x) (floor division from the grid start)."""
        return CellIJ((y - self.bbox.y.start) // self.cell_shape.y, (x - self.bbox.x.start) // self.cell_shape.x)

    def bbox_of(self, cell: CellIJ) -> Box:
        """The absolute box of ``cell``."""
        cy, cx = self.cell_shape
        y0 = self.bbox.y.start + cell.i * cy
        x0 = self.bbox.x.start + cell.j * cx
        return Box(Interval(y0, y0 + cy), Interval(x0, x0 + cx))

    def snap(self, box: Box) -> Box:
        """``box`` grown outward to cell boundaries."""
        start = self.index_of(y=box.y.start, x=box.x.start)
        stop = self.index_of(y=box.y.stop - 1, x=box.x.stop - 1)
        a, b = self.bbox_of(start), self.bbox_of(stop)
        return Box(Interval(a.y.start, b.y.stop), Interval(a.x.start, b.x.stop))

    def __str__(self) -> str:
        return f"{self.bbox}, cell_shape={self.cell_shape}"

    def to_json(self) -> dict[str, Any]:
        """The JSON form used by the ``cell_coadd`` schema."""
        return {"bbox": self.bbox.to_json(), "cell_shape": {"y": self.cell_shape.y, "x": self.cell_shape.x}}


@dataclass(frozen=True, slots=True)
class CellGridBounds:
    """The cells of ``grid`` covering ``bbox``, less the ``missing`` ones."""

    grid: CellGrid
    bbox: Box
    missing: frozenset[CellIJ] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "missing", frozenset(self.missing))

    @property
    def subgrid_start(self) -> CellIJ:
        """Index of the cell at ``bbox.start``."""
        return self.grid.index_of(y=self.bbox.y.start, x=self.bbox.x.start)

    @property
    def subgrid_stop(self) -> CellIJ:
        """One past the index of the cell holding the last pixel of ``bbox``."""
        last = self.grid.index_of(y=self.bbox.y.stop - 1, x=self.bbox.x.stop - 1)
        return CellIJ(last.i + 1, last.j + 1)

    @property
    def subgrid_size(self) -> CellIJ:
        """Number of cells along (i, j)."""
        return self.subgrid_stop - self.subgrid_start

    def all_cell_indices(self) -> Iterator[CellIJ]:
        """Every cell overlapping ``bbox``, row-major, missing ones included."""
        a, b = self.subgrid_start, self.subgrid_stop
        for i in range(a.i, b.i):
            for j in range(a.j, b.j):
                yield CellIJ(i, j)

    def cell_indices(self) -> Iterator[CellIJ]:
        """Cells with data, row-major (``i`` outer), missing cells skipped."""
        return (c for c in self.all_cell_indices() if c not in self.missing)

    def __contains__(self, cell: object) -> bool:
        if not isinstance(cell, CellIJ):
            return False
        a, b = self.subgrid_start, self.subgrid_stop
        return a.i <= cell.i < b.i and a.j <= cell.j < b.j and cell not in self.missing

    def check(self, cell: CellIJ, what: str = "these bounds") -> None:
        """Raise :class:`BoundsError` when ``cell`` is outside the bounds or missing."""
        a, b = self.subgrid_start, self.subgrid_stop
        if not (a.i <= cell.i < b.i and a.j <= cell.j < b.j):
            raise BoundsError(f"Cell {cell!r} is out of bounds for {what}.")
        if cell in self.missing:
            raise BoundsError(f"Cell {cell!r} is missing for {what}.")

    def __getitem__(self, box: Box) -> CellGridBounds:
        """Bounds restricted to the cells touching ``box`` (which must lie inside ``bbox``)."""
        if not isinstance(box, Box):
            raise TypeError(f"Expected a Box, not {box!r}.")
        if not self.bbox.contains(box):
            raise BoundsError(f"Box {box} is not contained in the cell bounds {self.bbox}.")
        snapped = self.grid.snap(box)
        sub = CellGridBounds(self.grid, snapped)
        start, stop = sub.subgrid_start, sub.subgrid_stop
        missing = {c for c in self.missing if start.i <= c.i < stop.i and start.j <= c.j < stop.j}
        return CellGridBounds(self.grid, snapped, frozenset(missing))

    def __str__(self) -> str:
        if not self.missing:
            return f"{self.bbox} in grid ({self.grid})"
        missing = ", ".join(str(c) for c in sorted(self.missing))
        return f"{self.bbox} in grid ({self.grid}), missing={{{missing}}}"

    def to_json(self) -> dict[str, Any]:
        """The JSON form used by the ``cell_coadd`` schema (missing cells sorted)."""
        return {
            "grid": self.grid.to_json(),
            "bbox": self.bbox.to_json(),
            "missing": [c.to_json() for c in sorted(self.missing)],
        }


@dataclass(frozen=True, slots=True)
class PatchDefinition:
    """Identity and geometry of a patch within its tract.

    Attributes
    ----------
    id
        Sequential patch id within the tract.
    index
        (y, x) index of the patch within the tract.
    inner_bbox
        The patch's inner (non-overlapping) region, absolute pixels.
    cells
        The full patch cell grid; its bbox is the patch's outer bbox.
    """

    id: int
    index: YX[int]
    inner_bbox: Box
    cells: CellGrid

    @property
    def outer_bbox(self) -> Box:
        """The patch's outer bbox (the cell grid bbox)."""
        return self.cells.bbox

    def __str__(self) -> str:
        return f"id={self.id}, index={self.index}, inner_bbox={self.inner_bbox}, cells=({self.cells})"

    def to_json(self) -> dict[str, Any]:
        """The JSON form used by the ``cell_coadd`` schema."""
        return {
            "id": self.id,
            "index": {"y": self.index.y, "x": self.index.x},
            "inner_bbox": self.inner_bbox.to_json(),
            "cells": self.cells.to_json(),
        }
