"""Lazy, dask-backed cell-based coadds in the lsst-images data model."""

from __future__ import annotations

from . import xarray_accessor as _xarray_accessor  # noqa: F401  (registers ds.cellcoadd)
from .butler import open_butler
from .cells import CellGrid, CellGridBounds, CellIJ, PatchDefinition
from .cellstats import cell_statistics
from .coadd import CellCoadd
from .compression import (
    FitsCompressionAlgorithm,
    FitsCompressionOptions,
    FitsDitherAlgorithm,
    FitsQuantizationOptions,
)
from .errors import (
    ArchiveFormatError,
    BoundsError,
    CellCoaddError,
    DatasetNotFoundError,
    FetchError,
    MissingDependencyError,
    ValidationError,
)
from .fetch import FetchStats, ObjectChangedError, ObjectNotFoundError, fetch_stats
from .geom import YX, Box, Interval
from .hips import write_hips
from .image import Image
from .mask import Mask, MaskPlane, MaskSchema
from .open import open_coadd
from .psf import CellPointSpreadFunction
from .pyramid import open_pyramid, write_pyramid
from .tract import open_tract
from .tract_index import write_tract_index

__version__ = "0.1.0"

__all__ = [
    "YX",
    "ArchiveFormatError",
    "Box",
    "BoundsError",
    "CellCoadd",
    "CellCoaddError",
    "CellGrid",
    "CellGridBounds",
    "CellIJ",
    "CellPointSpreadFunction",
    "DatasetNotFoundError",
    "FetchError",
    "FetchStats",
    "FitsCompressionAlgorithm",
    "FitsCompressionOptions",
    "FitsDitherAlgorithm",
    "FitsQuantizationOptions",
    "Image",
    "Interval",
    "Mask",
    "MaskPlane",
    "MaskSchema",
    "MissingDependencyError",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "PatchDefinition",
    "ValidationError",
    "__version__",
    "cell_statistics",
    "fetch_stats",
    "open_butler",
    "open_coadd",
    "open_pyramid",
    "open_tract",
    "write_hips",
    "write_pyramid",
    "write_tract_index",
]
