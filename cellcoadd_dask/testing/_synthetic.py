"""The 3x3-cell synthetic coadd of the corpus, built through lsst-images' public API.

Geometry (absolute tract pixels, ``(y, x)``, half-open): tract ``[0:4200, 0:4200]`` of skymap
``synthetic_cells_v1``, tract 42; patch 17 at index (y=1, x=2) with grid ``[1050:1950, 1500:2400]``
(6x6 cells of 150 px) and inner box ``[1200:1800, 1650:2250]``; the coadd covers
``[1200:1650, 1650:2100]`` (cells i, j = 1..3) with cell (2, 3) missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import DP2_PLANES, gaussian_kernel, make_provenance, quantize, tan_projection

__all__ = ["make_synthetic"]

CELL = 150
PSF_SIZE = 25
SOURCES = ((1290.5, 1705.25, 20000.0, 2.5), (1512.0, 1833.0, 90000.0, 3.0), (1610.0, 2050.0, 5000.0, 2.0))
"""Round sources: ``(y, x, flux in nJy, sigma in px)``."""


def _schema() -> Any:
    from lsst.images import MaskPlane, MaskSchema

    planes: list[Any] = [MaskPlane(name, doc) for name, doc in DP2_PLANES if name != "COSMIC_RAY"]
    planes.insert(2, None)  # a reserved bit: dropped (planes renumbered) on disk
    planes += [
        MaskPlane("SENSOR_EDGE", "Near the edge of an input sensor."),
        MaskPlane("STREAK", "Satellite streak on an input."),
    ]
    return MaskSchema(planes, dtype=np.uint8)


def _backgrounds(coadd: Any, bbox: Any) -> None:
    import astropy.units as u
    from lsst.images.fields import ChebyshevField, SplineField

    # A spline of 9x9 nodes (stored in an HDU of its own) and a Chebyshev polynomial (inline in the
    # tree); neither is subtracted.
    ys = np.linspace(bbox.y.start, bbox.y.stop - 1, 9)
    xs = np.linspace(bbox.x.start, bbox.x.stop - 1, 9)
    nodes = 0.5 + 0.001 * (ys[:, np.newaxis] - 1200.0) + 0.0005 * (xs[np.newaxis, :] - 1650.0)
    coadd.backgrounds.add(
        "sky_spline",
        SplineField(bbox, nodes, y=ys, x=xs, unit=u.nJy),
        description="Synthetic spline background (not subtracted).",
    )
    coadd.backgrounds.add(
        "sky_poly",
        ChebyshevField(bbox, np.array([[0.5, 0.1], [0.05, 0.0]]), unit=u.nJy),
        description="Synthetic Chebyshev background (not subtracted).",
    )


def make_synthetic() -> Any:
    """Build the synthetic coadd (an ``lsst.images.cells.CellCoadd``)."""
    import astropy.units as u
    from lsst.images import YX, Box, Image, Mask, TractFrame
    from lsst.images.cells import (
        CellCoadd,
        CellField,
        CellGrid,
        CellGridBounds,
        CellIJ,
        CellPointSpreadFunction,
        PatchDefinition,
    )

    rng = np.random.default_rng(20260101)
    tract = Box.factory[0:4200, 0:4200]
    frame = TractFrame(skymap="synthetic_cells_v1", tract=42, bbox=tract)
    projection = tan_projection(frame, ra=150.0, dec=2.0, crpix=(2100.5, 2100.5), x0=0, y0=0, pixel_bounds=tract)
    grid = CellGrid(bbox=Box.factory[1050:1950, 1500:2400], cell_shape=YX(y=CELL, x=CELL))
    bbox = Box.factory[1200:1650, 1650:2100]
    missing = CellIJ(i=2, j=3)
    bounds = CellGridBounds(grid=grid, bbox=bbox, missing=frozenset({missing}))
    shape = tuple(bbox.shape)
    yy, xx = np.mgrid[bbox.y.start : bbox.y.stop, bbox.x.start : bbox.x.stop]

    sky_sigma = 5.0
    image = rng.normal(0.0, sky_sigma, size=shape)
    for sy, sx, flux, sig in SOURCES:
        image += flux / (2 * np.pi * sig**2) * np.exp(-0.5 * (((yy - sy) / sig) ** 2 + ((xx - sx) / sig) ** 2))
    image = quantize(image, 2.0**-6)
    variance = quantize(sky_sigma**2 + 0.05 * np.clip(image, 0.0, None), 2.0**-6)

    mask = Mask(0, schema=_schema(), bbox=bbox)
    mask.set("DETECTED", image > 20.0)
    mask.set("DETECTION_EDGE", (yy < bbox.y.start + 8) | (xx < bbox.x.start + 8))
    mask.set("SATURATED", image > 400.0)
    mask.set("REJECTED", image > 400.0)
    mask.set("STREAK", np.abs((yy - 1200) - 0.5 * (xx - 1650)) < 1.0)
    mask.set("SENSOR_EDGE", (xx >= 1800) & (xx < 1803))
    mask.set("INTERPOLATED", rng.random(shape) < 0.002)
    rejected = np.zeros(shape, dtype=np.float32)
    rejected[image > 400.0] = 0.25
    clipped = quantize(np.where(mask.get("STREAK"), 0.5, 0.0), 2.0**-8)
    clipped[(xx >= 1800) & (xx < 1803)] = 0.125
    mask.set("CLIPPED", clipped > 0)
    noise = [quantize(rng.normal(0.0, sky_sigma, size=shape), 2.0**-6) for _ in range(2)]

    # The missing cell holds no data, as in real coadds.
    local = grid.bbox_of(missing).slice_within(bbox)
    image[local] = 0.0
    variance[local] = np.inf
    for plane in (rejected, clipped, *noise):
        plane[local] = 0.0
    sub = mask[grid.bbox_of(missing)]
    sub.clear()
    sub.set("NO_DATA")

    psf = np.zeros((3, 3, PSF_SIZE, PSF_SIZE))
    for cell in bounds.cell_indices():
        k = cell - bounds.subgrid_start
        psf[k.i, k.j] = gaussian_kernel(PSF_SIZE, 1.8 + 0.05 * k.i + 0.02 * k.j, 0.03 * (k.j - 1))
    k = missing - bounds.subgrid_start
    psf[k.i, k.j] = np.nan
    ap_corr = {}
    for n, name in enumerate(["base_PsfFlux_instFlux", "modelfit_CModel_instFlux"]):
        values = 0.98 + 0.001 * n + 0.0001 * np.arange(9, dtype=np.float64).reshape(3, 3)
        values[k.i, k.j] = np.nan
        ap_corr[name] = CellField(bounds, values)

    visits = [2026010100101, 2026010100102, 2026010200201, 2026010200202]
    rows = [(c.i, c.j, n) for c in bounds.cell_indices() for n in range(4) if (c.i + c.j + n) % 4 != 3]
    provenance = make_provenance(
        visits,
        [10, 11, 94, 95],
        [20260101, 20260101, 20260102, 20260102],
        rows,
        [(1150.0 + 30.0 * n, 1600.0 + 40.0 * n) for n in range(4)],
        (500.0, 600.0),
    )
    coadd = CellCoadd(
        Image(image, bbox=bbox, unit=u.nJy),
        mask=mask,
        variance=Image(variance, bbox=bbox, unit=u.nJy**2),
        mask_fractions={"rejected": Image(rejected, bbox=bbox), "clipped": Image(clipped, bbox=bbox)},
        noise_realizations=[Image(n, bbox=bbox) for n in noise],
        sky_projection=projection,
        band="r",
        psf=CellPointSpreadFunction(psf, bounds),
        aperture_corrections=ap_corr,
        patch=PatchDefinition(id=17, index=YX(y=1, x=2), inner_bbox=Box.factory[1200:1800, 1650:2250], cells=grid),
        provenance=provenance,
    )
    _backgrounds(coadd, bbox)
    coadd.metadata["REFGEN"] = "cellcoadd_dask.testing"
    coadd.metadata["SYNTH_SEED"] = 20260101
    return coadd
