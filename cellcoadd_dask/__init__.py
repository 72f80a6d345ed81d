"""Lazy, dask-backed cell-based coadds in the lsst-images data model."""

from __future__ import annotations

from .cells import CellGrid, CellGridBounds, CellIJ, PatchDefinition
from .errors import ArchiveFormatError, BoundsError, CellCoaddError, FetchError, ValidationError
from .geom import YX, Box, Interval

__version__ = "0.1.0"
