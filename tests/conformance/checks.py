"""Comparisons shared by the conformance tests: a coadd of ours against lsst-images' read."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from oracle import (
    assert_aperture_corrections_match,
    assert_patch_match,
    assert_planes_match,
    assert_provenance_match,
    assert_psf_match,
    assert_sky_match,
    bounds_of,
    intervals,
)

import cellcoadd_dask as ccd

__all__ = ["assert_matches_lsst"]


def assert_matches_lsst(ours: ccd.CellCoadd, ref: Any, what: str) -> None:
    """Every field of ``ours`` equals lsst-images' read ``ref``.

    Box and cell bounds, every pixel plane and mask plane (bit-identical), PSF kernels,
    provenance, aperture corrections, patch, band and the sky coordinates of two corners.
    """
    assert intervals(ours.bbox) == intervals(ref.bbox), what
    assert bounds_of(ours.bounds) == bounds_of(ref.bounds), what
    assert_planes_match(ours, ref, what)
    assert_psf_match(ours, ref, what)
    assert_provenance_match(ours, ref, what)
    if ref.aperture_corrections is None:
        assert not ours.aperture_corrections, what
    else:
        assert_aperture_corrections_match(ours, ref)
    if ref._patch is None:
        with pytest.raises(AttributeError):
            _ = ours.patch
    else:
        assert_patch_match(ours.patch, ref.patch)
    ys = np.array([ref.bbox.y.start, ref.bbox.y.stop - 1], dtype=float)
    xs = np.array([ref.bbox.x.start, ref.bbox.x.stop - 1], dtype=float)
    assert_sky_match(ours, ref, y=ys, x=xs)
    assert ours.band == ref.band, what
