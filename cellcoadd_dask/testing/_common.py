"""Small helpers shared by the corpus writers (lsst-images objects built through its public API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DP2_PLANES", "gaussian_kernel", "make_provenance", "options", "quantize", "tan_projection", "write"]

DP2_PLANES = (
    ("NO_DATA", "No data was available for this pixel."),
    ("INTERPOLATED", "Pixel value is the result of interpolating nearby good pixels."),
    ("COSMIC_RAY", "A cosmic ray affected an input pixel."),
    ("SATURATED", "A saturated pixel contributed at this location."),
    ("DETECTION_EDGE", "Too close to the patch edge for detection."),
    ("CLIPPED", "Identified as an artifact by comparing warps."),
    ("REJECTED", "At least one input was left out here due to masking."),
    ("DETECTED", "Pixel was part of a detected source."),
    ("INEXACT_PSF", "Contributing visits differ from those of the cell PSF."),
)

"""Mask planes of a DP2 cell coadd: ``(name, description)``."""


def quantize(values: np.ndarray, step: float) -> np.ndarray:
    """Round to multiples of a power-of-two ``step`` as float32 (short mantissas compress well)."""
    return (np.round(values / step) * step).astype(np.float32)


def gaussian_kernel(size: int, sigma: float, ellipticity: float = 0.0) -> np.ndarray:
    """A normalized ``size`` x ``size`` float64 Gaussian kernel, elongated along x by ``ellipticity``."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    sx, sy = sigma * (1.0 + ellipticity), sigma * (1.0 - ellipticity)
    kernel = np.exp(-0.5 * ((x / sx) ** 2 + (y / sy) ** 2))
    return kernel / kernel.sum()


def tan_projection(
    frame: Any, *, ra: float, dec: float, crpix: tuple[float, float], x0: int, y0: int, pixel_bounds: Any = None
) -> Any:
    """An lsst-images ``SkyProjection``: TAN, 0.2 arcsec/px, north up, east left.

    Parameters
    ----------
    frame
        The ``lsst.images.TractFrame``.
    ra, dec
        Tangent point, degrees.
    crpix
        FITS ``(CRPIX1, CRPIX2)`` (x, y; 1-based) of the tangent point on the FITS pixel grid whose
        pixel (1, 1) is tract pixel ``(x0, y0)``.
    x0, y0
        Absolute (tract) pixel of FITS pixel (1, 1).
    pixel_bounds
        The ``lsst.images.Box`` where the projection is valid, if given.
    """
    import astropy.units as u
    import astropy.wcs
    from lsst.images import SkyProjection

    scale = (0.2 * u.arcsec).to_value(u.deg)
    wcs = astropy.wcs.WCS(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRPIX1": crpix[0],
            "CRPIX2": crpix[1],
            "CRVAL1": ra,
            "CRVAL2": dec,
            "CD1_1": -scale,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": scale,
        }
    )
    if pixel_bounds is not None:
        return SkyProjection.from_fits_wcs(wcs, frame, pixel_bounds=pixel_bounds, x0=x0, y0=y0)
    return SkyProjection.from_fits_wcs(wcs, frame, x0=x0, y0=y0)


def options(algorithm: str | None, dither: str | None = None, tile_shape: tuple[int, int] | None = None) -> Any:
    """lsst-images ``FitsCompressionOptions`` (``None`` for an uncompressed HDU); quantized at level 16."""
    if algorithm is None:
        return None
    from lsst.images.fits import (
        FitsCompressionAlgorithm,
        FitsCompressionOptions,
        FitsDitherAlgorithm,
        FitsQuantizationOptions,
    )

    quantization = None
    if dither is not None:
        quantization = FitsQuantizationOptions(dither=FitsDitherAlgorithm[dither], level=16.0)
    return FitsCompressionOptions(
        algorithm=FitsCompressionAlgorithm[algorithm], quantization=quantization, tile_shape=tile_shape
    )


def write(coadd: Any, path: Path, **kwargs: Any) -> Path:
    """Write ``coadd`` with lsst-images (which refuses to overwrite) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    coadd.write(str(path), **kwargs)
    return path


def make_provenance(
    visits: list[int],
    detectors: list[int],
    day_obs: list[int],
    rows: list[tuple[int, int, int]],
    corners: list[tuple[float, float]],
    size: tuple[float, float],
) -> Any:
    """A ``CoaddProvenance`` of one instrument and filter; ``rows`` are ``(cell_i, cell_j, input)``."""
    from lsst.images import Polygon
    from lsst.images.cells import CoaddProvenance

    inputs = CoaddProvenance.make_empty_input_table(len(visits))
    # In-place assignment keeps the canonical column dtypes (uint64 visit, uint16 detector, ...).
    inputs["instrument"][:] = "LSSTCam"
    inputs["visit"][:] = visits
    inputs["detector"][:] = detectors
    inputs["physical_filter"][:] = "r_57"
    inputs["day_obs"][:] = day_obs
    for n, (y0, x0) in enumerate(corners):
        h, w = size
        inputs["polygon"][n] = Polygon(
            x_vertices=[x0, x0 + w, x0 + w, x0, x0 - 0.04 * w],
            y_vertices=[y0, y0, y0 + h, y0 + h, y0 + h / 2],
        )
    contributions = CoaddProvenance.make_empty_contribution_table(len(rows))
    for r, (i, j, n) in enumerate(rows):
        contributions["cell_i"][r] = i
        contributions["cell_j"][r] = j
        contributions["instrument"][r] = "LSSTCam"
        contributions["visit"][r] = visits[n]
        contributions["detector"][r] = detectors[n]
        contributions["overlaps_center"][r] = True
        contributions["overlap_fraction"][r] = 1.0 - 0.05 * n
        contributions["unmasked_fraction"][r] = 0.99 - 0.01 * n
        contributions["weight"][r] = 0.04 - 0.005 * n
        contributions["psf_shape_xx"][r] = 3.2 + 0.1 * n
        contributions["psf_shape_yy"][r] = 3.1 + 0.1 * n
        contributions["psf_shape_xy"][r] = 0.01 * n
        contributions["psf_shape_flag"][r] = False
    return CoaddProvenance(inputs=inputs, contributions=contributions)
