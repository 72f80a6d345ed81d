"""Where the lsst-images reference files are, for fixtures and for parametrising at collection time."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE_ENV = "CELLCOADD_REFERENCE_DIR"
REFERENCE_DIR = Path(os.environ.get(REFERENCE_ENV) or REPO.parent / "shared" / "data" / "lsst-images-ref")
"""``$CELLCOADD_REFERENCE_DIR`` when set, else ``<repo>/../shared/data/lsst-images-ref``."""

REFERENCE_FITS = (
    "many_planes.fits",
    "min_default.fits",
    "min_lossy_rice.fits",
    "min_uncompressed.fits",
    "synthetic_3x3.fits",
    "synthetic_3x3_lossy.fits",
    "synthetic_3x3_offset_cutout.fits",
)
"""The FITS reference files written by lsst-images (a test checks the directory holds no others)."""
