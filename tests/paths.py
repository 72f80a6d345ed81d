"""Where the reference files are, for fixtures and for parametrising at collection time.

By default the reference files are the project's own corpus, written by lsst-images with
`cellcoadd_dask.testing` and cached between runs (built here, once, when the test session starts).
``$CELLCOADD_REFERENCE_DIR`` names an *extra* corpus of the same files (for example the
lsst-images reference files kept beside the repository) to run the reference tests on instead;
nothing else outside the repository is ever read (see `guard`).
"""

from __future__ import annotations

import os
from pathlib import Path

from cellcoadd_dask.testing import corpus_dir

REPO = Path(__file__).resolve().parent.parent
REFERENCE_ENV = "CELLCOADD_REFERENCE_DIR"
EXTRA_REFERENCE_DIR = Path(os.environ[REFERENCE_ENV]).resolve() if os.environ.get(REFERENCE_ENV) else None
"""The extra corpus named by ``$CELLCOADD_REFERENCE_DIR``, or ``None``."""
CORPUS_DIR = corpus_dir("base")
"""The generated corpus (built on first use, cached)."""
REFERENCE_DIR = EXTRA_REFERENCE_DIR or CORPUS_DIR
"""The directory of the reference files the tests read: the extra corpus when named, else the generated one."""

REFERENCE_FITS = (
    "many_planes.fits",
    "min_default.fits",
    "min_lossy_rice.fits",
    "min_uncompressed.fits",
    "synthetic_3x3.fits",
    "synthetic_3x3_lossy.fits",
    "synthetic_3x3_offset_cutout.fits",
)
"""The FITS reference files (a test checks the directory holds no others)."""
REFERENCE_JSON = ("cell_coadd_min_as_shipped.json", "synthetic_3x3_cutout.json")
"""The JSON archives among the reference files."""
