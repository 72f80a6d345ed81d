"""Oracle corpus variants: further cell-coadd files written by lsst-images' public API.

The files themselves are part of the generated corpus (``variants/`` of
`cellcoadd_dask.testing`, cached between runs); this module re-exports how they are built
(`make_coadd`, `VARIANTS`) for tests that write coadds of their own, and the `lsst_variants`
fixture that maps each variant's name to its file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cellcoadd_dask.testing._variants import (
    JSON_CUTOUT,
    OFF_GRID_CUTOUT,
    VARIANTS,
    Variant,
    make_coadd,
    plane_names,
)

__all__ = ["JSON_CUTOUT", "OFF_GRID_CUTOUT", "VARIANTS", "Variant", "lsst_variants", "make_coadd", "plane_names"]


@pytest.fixture(scope="session")
def lsst_variants(corpus: Path) -> dict[str, Path]:
    """Oracle files written by lsst-images, from the generated corpus: ``{name: path}`` (see `VARIANTS`)."""
    return {name: corpus / "variants" / name for name in VARIANTS}
