"""A full-size patch for benchmarks and tutorials (``patch/``), written by lsst-images.

Geometry of an ``lsst_cells_v1``-style skymap: a patch grid of 22x22 cells of 150x150 px (3300x3300
px) whose inner region is the 20x20 inner cells, patch (y=3, x=4) of a tract of 10x10 patches with
3000-px inner regions.  Content (seeded):

- image: full-mantissa float32 sky noise (sigma 8 nJy, so lossless compression ratios are honest)
  plus 600 Gaussian sources with lognormal fluxes;
- variance: per-cell depth (from the number of contributing inputs), a source term, pixel noise;
- mask (10 planes): NO_DATA on 3 missing cells, DETECTED, SATURATED and INTERPOLATED on bright
  cores, COSMIC_RAY, DETECTION_EDGE on the outer 20 px, a STREAK with CLIPPED, REJECTED, INEXACT_PSF;
- 2 mask fractions, 3 noise realizations, a 41x41 float64 PSF per cell (NaN on missing cells), 2
  aperture-correction fields, the patch definition and provenance (150 inputs with polygons).

``patch_lossless.fits`` uses lsst-images' defaults (GZIP_2, tile = cell); ``patch_lossy.fits``
quantizes image (and noise realizations) and variance with RICE_1 + SUBTRACTIVE_DITHER_2, level 16,
``compression_seed=1234``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._common import options, write

__all__ = ["TRACT_PATCH_STEP", "make_full_patch", "tract_patch_origin", "write_patch", "write_tract_patch"]

CELL, NCELL, PSF = 150, 22, 41
SIZE = CELL * NCELL
ORIGIN = (9600, 12900)
TRACT_PATCH_STEP = 3000
"""Inner width of a patch of the benchmark tract: patch ``(y, x)`` starts at ``3000 * (y, x)``."""
MISSING = ((5, 7), (12, 12), (20, 3))
SKY = 8.0
N_SOURCES, N_INPUTS, N_NOISE = 600, 150, 3
MASK_PLANES = (
    ("NO_DATA", "No data was available for this pixel."),
    ("INTERPOLATED", "Pixel value is the result of interpolating nearby good pixels."),
    ("COSMIC_RAY", "A cosmic ray affected an input pixel."),
    ("SATURATED", "A saturated pixel contributed at this location."),
    ("DETECTION_EDGE", "Too close to the patch edge for detection."),
    ("CLIPPED", "Identified as an artifact by comparing warps."),
    ("REJECTED", "At least one input was left out here due to masking."),
    ("DETECTED", "Pixel was part of a detected source."),
    ("INEXACT_PSF", "Contributing visits differ from those of the cell PSF."),
    ("STREAK", "Satellite streak on an input."),
)


def _provenance(rng: np.random.Generator, origin: tuple[int, int]) -> tuple[Any, np.ndarray]:
    """Provenance of 150 detector-sized inputs and the number of inputs per cell."""
    from lsst.images import Polygon
    from lsst.images.cells import CoaddProvenance

    oy, ox = origin
    inputs = CoaddProvenance.make_empty_input_table(N_INPUTS)
    inputs["instrument"][:] = "LSSTCam"
    inputs["physical_filter"][:] = "i_39"
    inputs["visit"][:] = 2026010100000 + np.arange(N_INPUTS // 2).repeat(2) * 100
    inputs["detector"][:] = np.tile([40, 41], N_INPUTS // 2)
    inputs["day_obs"][:] = 20260101 + (np.arange(N_INPUTS) // 30)
    boxes = []
    for n in range(N_INPUTS):
        x0, y0 = ox + rng.uniform(-4000, SIZE), oy + rng.uniform(-4072, SIZE)
        boxes.append((y0, y0 + 4072.0, x0, x0 + 4000.0))
        inputs["polygon"][n] = Polygon(
            x_vertices=[x0, x0 + 4000.0, x0 + 4010.0, x0 + 10.0], y_vertices=[y0, y0, y0 + 4072.0, y0 + 4072.0]
        )
    rows, depth = [], np.zeros((NCELL, NCELL))
    for i in range(NCELL):
        for j in range(NCELL):
            if (i, j) in MISSING:
                continue
            cy, cx = oy + (i + 0.5) * CELL, ox + (j + 0.5) * CELL
            for n, (y0, y1, x0, x1) in enumerate(boxes):
                if y0 <= cy < y1 and x0 <= cx < x1:
                    rows.append((i, j, n))
                    depth[i, j] += 1
    table = CoaddProvenance.make_empty_contribution_table(len(rows))
    r = np.array(rows)
    table["cell_i"][:], table["cell_j"][:] = r[:, 0], r[:, 1]
    table["instrument"][:] = "LSSTCam"
    table["visit"][:] = np.asarray(inputs["visit"])[r[:, 2]]
    table["detector"][:] = np.asarray(inputs["detector"])[r[:, 2]]
    table["overlaps_center"][:] = True
    table["overlap_fraction"][:] = rng.uniform(0.5, 1.0, len(rows))
    table["unmasked_fraction"][:] = rng.uniform(0.9, 1.0, len(rows))
    table["weight"][:] = rng.uniform(0.01, 0.05, len(rows))
    table["psf_shape_xx"][:] = rng.normal(3.2, 0.2, len(rows))
    table["psf_shape_yy"][:] = rng.normal(3.1, 0.2, len(rows))
    table["psf_shape_xy"][:] = rng.normal(0.0, 0.05, len(rows))
    table["psf_shape_flag"][:] = False
    return CoaddProvenance(inputs=inputs, contributions=table), depth


def _pixels(rng: np.random.Generator, depth: np.ndarray) -> tuple[np.ndarray, ...]:
    """Image, variance and the sky sigma map."""
    shape = (SIZE, SIZE)
    sky_per_cell = SKY * np.sqrt(np.clip(depth.mean(), 1, None) / np.clip(depth, 1, None))
    sky_map = np.repeat(np.repeat(sky_per_cell, CELL, 0), CELL, 1).astype(np.float32)
    image = (rng.standard_normal(shape, dtype=np.float32) * sky_map).astype(np.float32)
    ys, xs = rng.uniform(0, SIZE, N_SOURCES), rng.uniform(0, SIZE, N_SOURCES)
    fluxes, sig = rng.lognormal(8.0, 1.5, N_SOURCES), 2.2
    for y, x, f in zip(ys, xs, fluxes, strict=True):
        y0, y1, x0, x1 = int(max(y - 15, 0)), int(min(y + 16, SIZE)), int(max(x - 15, 0)), int(min(x + 16, SIZE))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1] += (
            f / (2 * np.pi * sig**2) * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / sig**2)
        ).astype(np.float32)
    variance = sky_map**2 + 0.02 * np.clip(image, 0, None) + rng.normal(0, 0.5, shape).astype(np.float32)
    return image, variance.astype(np.float32), sky_map


def _mask(rng: np.random.Generator, image: np.ndarray, bbox: Any) -> tuple[Any, dict[str, np.ndarray]]:
    from lsst.images import Mask, MaskPlane, MaskSchema
    from scipy.ndimage import uniform_filter

    mask = Mask(0, schema=MaskSchema([MaskPlane(n, d) for n, d in MASK_PLANES], dtype=np.uint8), bbox=bbox)
    smooth = uniform_filter(image, size=5, mode="nearest")
    mask.set("DETECTED", uniform_filter((smooth > SKY).astype(np.float32), size=5, mode="nearest") > 0)
    sat = image > 2500
    mask.set("SATURATED", sat)
    cosmic = rng.random(image.shape) < 2e-4
    mask.set("COSMIC_RAY", cosmic)
    mask.set("INTERPOLATED", cosmic | sat)
    yy, xx = np.ogrid[0:SIZE, 0:SIZE]
    mask.set("DETECTION_EDGE", (yy < 20) | (yy >= SIZE - 20) | (xx < 20) | (xx >= SIZE - 20))
    streak = np.abs((yy - 400) - 0.37 * xx) < 2.0
    mask.set("STREAK", streak)
    mask.set("CLIPPED", streak)
    mask.set("REJECTED", sat | streak)
    inexact = np.zeros(image.shape, dtype=bool)
    for i, j in [(2, 2), (9, 15), (17, 8), (17, 9)]:
        inexact[i * CELL : (i + 1) * CELL, j * CELL : (j + 1) * CELL] = True
    mask.set("INEXACT_PSF", inexact)
    rejected = np.where(sat | streak, 0.25, 0.0).astype(np.float32)
    rejected[sat] = rng.choice(np.array([0.125, 0.25, 0.5], np.float32), int(sat.sum()))
    clipped = np.where(streak, 1.0 / 30, 0.0).astype(np.float32)
    return mask, {"rejected": rejected, "clipped": clipped}


def _psf() -> np.ndarray:
    half = PSF // 2
    py, px = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    psf = np.empty((NCELL, NCELL, PSF, PSF))
    for i in range(NCELL):
        for j in range(NCELL):
            s, e = 1.7 + 0.01 * i + 0.005 * j, 0.02 * np.sin(0.3 * i + 0.2 * j)
            k = np.exp(-0.5 * ((px / (s * (1 + e))) ** 2 + (py / (s * (1 - e))) ** 2))
            k += 0.05 * np.exp(-0.5 * (px**2 + py**2) / (3 * s) ** 2)  # wings
            psf[i, j] = k / k.sum()
    return psf


def tract_patch_origin(index: tuple[int, int]) -> tuple[int, int]:
    """Grid origin ``(y, x)`` of patch ``index`` in the 10x10 benchmark tract (`write_tract_patch`)."""
    return index[0] * TRACT_PATCH_STEP, index[1] * TRACT_PATCH_STEP


def make_full_patch(index: tuple[int, int] = (3, 4), *, origin: tuple[int, int] = ORIGIN, seed: int = 7) -> Any:
    """Build a full-size patch (an ``lsst.images.cells.CellCoadd``).

    Parameters
    ----------
    index
        Patch index ``(y, x)`` in the 10x10-patch tract; the patch id is ``10 * y + x``.
    origin
        Absolute pixel ``(y, x)`` of the patch grid's first pixel.
    seed
        Seed of the pixels, mask and provenance.

    Returns
    -------
    lsst.images.cells.CellCoadd
        The defaults give the corpus's ``patch/`` files.
    """
    import astropy.units as u
    from lsst.images import YX, Box, Image, TractFrame
    from lsst.images.cells import (
        CellCoadd,
        CellField,
        CellGrid,
        CellGridBounds,
        CellIJ,
        CellPointSpreadFunction,
        PatchDefinition,
    )

    from ._common import tan_projection

    rng = np.random.default_rng(seed)
    oy, ox = origin
    bbox = Box.factory[oy : oy + SIZE, ox : ox + SIZE]
    tract = Box.factory[0:30600, 0:30600]
    frame = TractFrame(skymap="bench_cells_v1", tract=1234, bbox=tract)
    projection = tan_projection(frame, ra=53.1, dec=-28.1, crpix=(15300.5, 15300.5), x0=0, y0=0, pixel_bounds=tract)
    grid = CellGrid(bbox=bbox, cell_shape=YX(y=CELL, x=CELL))
    bounds = CellGridBounds(grid=grid, bbox=bbox, missing=frozenset(CellIJ(i=i, j=j) for i, j in MISSING))
    provenance, depth = _provenance(rng, origin)
    image, variance, sky_map = _pixels(rng, depth)
    mask, fractions = _mask(rng, image, bbox)
    noise = [(rng.standard_normal(image.shape, dtype=np.float32) * sky_map).astype(np.float32) for _ in range(N_NOISE)]
    psf = _psf()
    for i, j in MISSING:
        cell = grid.bbox_of(CellIJ(i=i, j=j))
        local = cell.slice_within(bbox)
        image[local] = 0.0
        variance[local] = np.inf
        for plane in (*fractions.values(), *noise):
            plane[local] = 0.0
        sub = mask[cell]
        sub.clear()
        sub.set("NO_DATA")
        psf[i, j] = np.nan
    ap_corr = {}
    for n, name in enumerate(["base_PsfFlux_instFlux", "modelfit_CModel_instFlux"]):
        values = 0.98 + 0.001 * n + 1e-4 * rng.standard_normal((NCELL, NCELL))
        for i, j in MISSING:
            values[i, j] = np.nan
        ap_corr[name] = CellField(bounds, values)
    inner = Box.factory[oy + CELL : oy + SIZE - CELL, ox + CELL : ox + SIZE - CELL]
    coadd = CellCoadd(
        Image(image, bbox=bbox, unit=u.nJy),
        mask=mask,
        variance=Image(variance, bbox=bbox, unit=u.nJy**2),
        mask_fractions={name: Image(plane, bbox=bbox) for name, plane in fractions.items()},
        noise_realizations=[Image(n, bbox=bbox) for n in noise],
        sky_projection=projection,
        band="i",
        psf=CellPointSpreadFunction(psf, bounds),
        aperture_corrections=ap_corr,
        patch=PatchDefinition(
            id=10 * index[0] + index[1], index=YX(y=index[0], x=index[1]), inner_bbox=inner, cells=grid
        ),
        provenance=provenance,
    )
    coadd.metadata["CORPUS"] = "cellcoadd_dask.testing full patch"
    return coadd


def write_patch(directory: Path) -> dict[str, Any]:
    """Write ``patch/patch_lossless.fits`` and ``patch/patch_lossy.fits``."""
    coadd = make_full_patch()
    write(coadd, directory / "patch" / "patch_lossless.fits")
    lossy = options("RICE_1", "SUBTRACTIVE_DITHER_2")
    write(
        coadd,
        directory / "patch" / "patch_lossy.fits",
        compression_options={"image": lossy, "variance": lossy},
        compression_seed=1234,
    )
    return {}


def write_tract_patch(path: Path, index: tuple[int, int]) -> Path:
    """Write patch ``index`` of a 10x10 tract of distinct full-size lossy patches to ``path``.

    The patch's grid starts at `tract_patch_origin` (neighbours overlap by one cell on each
    side); its pixels are seeded by its index, and it is compressed as ``patch_lossy.fits``.
    """
    coadd = make_full_patch(index, origin=tract_patch_origin(index), seed=1000 + 10 * index[0] + index[1])
    lossy = options("RICE_1", "SUBTRACTIVE_DITHER_2")
    write(coadd, path, compression_options={"image": lossy, "variance": lossy}, compression_seed=1234)
    return path
