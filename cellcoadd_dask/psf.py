"""Per-cell point-spread functions, read lazily one cell at a time."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from .cells import CellGridBounds, CellIJ
from .errors import ValidationError
from .geom import Box, Interval
from .image import Image

__all__ = ["CellPointSpreadFunction"]


class CellPointSpreadFunction:
    """A PSF kernel image per cell, piecewise constant over cells.

    Parameters
    ----------
    array
        4-d array ``(n_i, n_j, ky, kx)``: element ``[i - subgrid_start.i, j - subgrid_start.j]``
        is the kernel of cell ``(i, j)``; usually a lazy dask array with one chunk per cell.
    bounds
        The cells the array covers.
    origin
        ``(source, (i0, j0))`` when ``array`` is ``source[i0:i0 + n_i, j0:j0 + n_j]`` of a lazily
        indexed stored array (set by archive readers, so writers can read it in their own pieces).
    """

    def __init__(
        self, array: Any, bounds: CellGridBounds, *, origin: tuple[Any, tuple[int, int]] | None = None
    ) -> None:
        if not isinstance(array, da.Array):
            array = da.asarray(array)
        size = bounds.subgrid_size
        if array.ndim != 4 or tuple(array.shape[:2]) != (size.i, size.j):
            raise ValidationError(f"PSF array of shape {array.shape} does not fit the {size.i}x{size.j} cell bounds.")
        ky, kx = array.shape[2:]
        if ky % 2 == 0 or kx % 2 == 0:
            raise ValidationError(f"PSF kernel sizes must be odd, got {(ky, kx)}.")
        self.array = array
        self.bounds = bounds
        self.origin = origin

    @property
    def kernel_bbox(self) -> Box:
        """The kernel's bbox, centred on 0: ``[y=-(ky//2):ky//2+1, x=-(kx//2):kx//2+1]``."""
        ky, kx = self.array.shape[2:]
        return Box(Interval(-(ky // 2), ky // 2 + 1), Interval(-(kx // 2), kx // 2 + 1))

    def kernel_array(self, cell: CellIJ) -> np.ndarray:
        """The kernel of ``cell`` as a numpy array (reads only that cell's tiles).

        Raises
        ------
        BoundsError
            If the cell is outside the bounds or missing.
        """
        self.bounds.check(cell, "this PSF")
        k = cell - self.bounds.subgrid_start
        return np.asarray(self.array[k.i, k.j].compute())

    def __getitem__(self, cell: CellIJ) -> Image:
        """The kernel image of ``cell`` (computed)."""
        return Image(self.kernel_array(cell), bbox=self.kernel_bbox)

    def cell_at(self, *, y: float, x: float) -> CellIJ:
        """The cell whose kernel applies at absolute position (y, x) (the rounded pixel's cell)."""
        return self.bounds.grid.index_of(y=int(np.floor(y + 0.5)), x=int(np.floor(x + 0.5)))

    def compute_kernel_image(self, *, y: float, x: float) -> Image:
        """The kernel at absolute position (y, x): the kernel of the cell containing it."""
        return self[self.cell_at(y=y, x=x)]

    def subset(self, box: Box) -> CellPointSpreadFunction:
        """The PSF restricted to the cells touching ``box`` (which must lie inside the bounds)."""
        sub = self.bounds[box]
        a = sub.subgrid_start - self.bounds.subgrid_start
        b = sub.subgrid_stop - self.bounds.subgrid_start
        origin = None
        if self.origin is not None:
            source, (i0, j0) = self.origin
            origin = (source, (i0 + a.i, j0 + a.j))
        return CellPointSpreadFunction(self.array[a.i : b.i, a.j : b.j], sub, origin=origin)

    def __repr__(self) -> str:
        return f"CellPointSpreadFunction({self.bounds}, kernel={self.kernel_bbox})"

    def describe(self) -> str:
        """A plain-text summary: kernel shape and bbox, cell bounds and a map of missing cells (no kernel is read)."""
        from .display.render import to_text
        from .display.reports import psf_report

        return to_text(psf_report(self))

    def _repr_html_(self) -> str:
        """The summary of :meth:`describe` as HTML, for notebooks (no I/O)."""
        from .display.render import to_html
        from .display.reports import psf_report

        return to_html(psf_report(self))
