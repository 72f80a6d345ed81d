"""Tracts of the corpus: a small test tract (``tract/``) and a demonstration tract (``demo_tract/``).

Coordinates are absolute (tract) pixels, ``(y, x)``, half-open.

``tract/``
    2x2 patches whose inner boxes are 3x3 cells of 20 px, each patch grid with a one-cell border
    overlapping its neighbours.  Patch (0, 0) is written over its whole outer grid, with one missing
    cell; (0, 1) over exactly its inner box; (1, 0) over part of its inner box plus its top border;
    (1, 1) is not written.
``demo_tract/``
    3x3 patches whose inner boxes are 4x4 cells of 150 px (tract ``[0:1800, 0:1800]``), each written
    over its whole 6x6-cell grid (so neighbours overlap by a cell), sky and sources drawn from one
    field of the tract so that overlaps agree; a few missing cells; patch (2, 0) is not written.
    Image, variance and noise are RICE_1 quantized, the rest lossless.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._common import options, tan_projection, write

__all__ = [
    "TEST_TRACT_COVERAGE",
    "tract_inner_box",
    "make_demo_patch",
    "make_test_tract_patch",
    "write_demo_tract",
    "write_test_tract",
]

TEST_CELL = 20
TEST_INNER_CELLS = 3
TEST_PLANES = ("NO_DATA", "DETECTED", "SATURATED")
TEST_TRACT_COVERAGE = {
    (0, 0): ((0, 5), (0, 5)),  # the whole outer grid, borders included
    (0, 1): ((1, 4), (1, 4)),  # exactly the inner box
    (1, 0): ((0, 4), (1, 3)),  # top border and inner rows, only the first two inner columns
}
"""``(patch y, patch x)`` -> covered grid cells ``((i0, i1), (j0, j1))`` of the 5x5-cell patch grid."""
TEST_MISSING_CELL = {(0, 0): (2, 2)}


def tract_inner_box(index: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    size = TEST_INNER_CELLS * TEST_CELL
    return ((index[0] * size, (index[0] + 1) * size), (index[1] * size, (index[1] + 1) * size))


def _missing_cell_fill(
    grid: Any, bbox: Any, cells: Any, planes: list[np.ndarray], variance: np.ndarray, mask: Any
) -> None:
    for cell in cells:
        local = grid.bbox_of(cell).slice_within(bbox)
        variance[local] = np.inf
        for plane in planes:
            plane[local] = 0.0
        sub = mask[grid.bbox_of(cell)]
        sub.clear()
        sub.set("NO_DATA")


def make_test_tract_patch(
    index: tuple[int, int], *, seed: int, band: str = "i", cell: int = TEST_CELL, fractions: int = 1
) -> Any:
    """An lsst-images coadd of one patch of the test tract, covering ``TEST_TRACT_COVERAGE[index]``.

    ``band``, ``cell`` and ``fractions`` can be changed to make patches that do not match the others.
    """
    import astropy.units as u
    from lsst.images import YX, Box, Image, Mask, MaskPlane, MaskSchema, TractFrame
    from lsst.images.cells import CellCoadd, CellGrid, CellGridBounds, CellIJ, CellPointSpreadFunction, PatchDefinition

    rng = np.random.default_rng(seed)
    (iy0, iy1), (ix0, ix1) = tract_inner_box(index)
    tract_bbox = Box.factory[-TEST_CELL : 120 + TEST_CELL, -TEST_CELL : 120 + TEST_CELL]
    frame = TractFrame(skymap="tiny_tract_v1", tract=7, bbox=tract_bbox)
    projection = tan_projection(
        frame, ra=150.0, dec=2.0, crpix=(80.5, 80.5), x0=tract_bbox.x.start, y0=tract_bbox.y.start
    )
    grid_bbox = Box.factory[iy0 - TEST_CELL : iy1 + TEST_CELL, ix0 - TEST_CELL : ix1 + TEST_CELL]
    grid = CellGrid(bbox=grid_bbox, cell_shape=YX(y=cell, x=cell))
    (i0, i1), (j0, j1) = TEST_TRACT_COVERAGE.get(index, ((1, 4), (1, 4)))
    y0, x0 = grid_bbox.y.start, grid_bbox.x.start
    bbox = Box.factory[y0 + i0 * cell : y0 + i1 * cell, x0 + j0 * cell : x0 + j1 * cell]
    missing = frozenset(CellIJ(i=i, j=j) for i, j in ([TEST_MISSING_CELL[index]] if index in TEST_MISSING_CELL else []))
    bounds = CellGridBounds(grid=grid, bbox=bbox, missing=missing)

    shape = (bbox.y.size, bbox.x.size)
    image = np.round(rng.normal(100.0, 4.0, size=shape) * 64) / 64
    variance = np.round((16.0 + 0.05 * np.abs(image)) * 64) / 64
    frac = [np.round(rng.uniform(0.0, 1.0, size=shape) * 256) / 256 for _ in range(fractions)]
    noise = np.round(rng.normal(0.0, 4.0, size=shape) * 64) / 64
    mask = Mask(0, schema=MaskSchema([MaskPlane(name, f"Test plane {name}.") for name in TEST_PLANES]), bbox=bbox)
    for name in TEST_PLANES[1:]:
        mask.set(name, rng.random(shape) < 0.1)
    psf = np.full((i1 - i0, j1 - j0, 5, 5), 1 / 25.0)
    _missing_cell_fill(grid, bbox, missing, [image, *frac, noise], variance, mask)
    for c in missing:
        psf[c.i - i0, c.j - j0] = np.nan
    patch = PatchDefinition(
        id=index[0] * 2 + index[1],
        index=YX(y=index[0], x=index[1]),
        inner_bbox=Box.factory[iy0:iy1, ix0:ix1],
        cells=grid,
    )
    return CellCoadd(
        Image(image.astype(np.float32), bbox=bbox, unit=u.nJy),
        mask=mask,
        variance=Image(variance.astype(np.float32), bbox=bbox, unit=u.nJy**2),
        mask_fractions={f"frac{n}": Image(f.astype(np.float32), bbox=bbox) for n, f in enumerate(frac)},
        noise_realizations=[Image(noise.astype(np.float32), bbox=bbox)],
        sky_projection=projection,
        band=band,
        psf=CellPointSpreadFunction(psf, bounds),
        patch=patch,
    )


def write_test_tract(directory: Path) -> dict[str, Any]:
    """Write the test tract's patch files as ``tract/patch_<y>_<x>.fits``."""
    for seed, index in enumerate(sorted(TEST_TRACT_COVERAGE), start=3):
        write(make_test_tract_patch(index, seed=seed), directory / "tract" / f"patch_{index[0]}_{index[1]}.fits")
    return {}


DEMO_CELL = 150
DEMO_INNER_CELLS = 4
DEMO_PATCHES = 3
DEMO_ABSENT = (2, 0)
DEMO_MISSING = {(0, 1): ((2, 3),), (1, 1): ((1, 1), (4, 4)), (2, 2): ((3, 2),)}
"""Missing cells ``(i, j)`` of the demonstration patches' 6x6-cell grids."""


def _demo_sources(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(y, x, flux nJy, sigma px)`` of the demonstration tract's sources."""
    n = 400
    return np.column_stack(
        [
            rng.uniform(-200, size + 200, n),
            rng.uniform(-200, size + 200, n),
            rng.lognormal(8.0, 1.3, n),
            rng.uniform(1.6, 3.5, n),
        ]
    )


def make_demo_patch(index: tuple[int, int], sources: np.ndarray) -> Any:
    """One patch of the demonstration tract (an lsst-images ``CellCoadd`` over its whole grid)."""
    import astropy.units as u
    from lsst.images import YX, Box, Image, Mask, MaskPlane, MaskSchema, TractFrame
    from lsst.images.cells import CellCoadd, CellGrid, CellGridBounds, CellIJ, CellPointSpreadFunction, PatchDefinition

    from ._common import DP2_PLANES, gaussian_kernel

    size, inner = DEMO_CELL * DEMO_INNER_CELLS, DEMO_CELL * DEMO_INNER_CELLS * DEMO_PATCHES
    tract_bbox = Box.factory[-DEMO_CELL : inner + DEMO_CELL, -DEMO_CELL : inner + DEMO_CELL]
    frame = TractFrame(skymap="demo_cells_v1", tract=101, bbox=tract_bbox)
    projection = tan_projection(frame, ra=53.1, dec=-28.1, crpix=(inner / 2 + 0.5, inner / 2 + 0.5), x0=0, y0=0)
    py, px = index
    bbox = Box.factory[
        py * size - DEMO_CELL : (py + 1) * size + DEMO_CELL, px * size - DEMO_CELL : (px + 1) * size + DEMO_CELL
    ]
    grid = CellGrid(bbox=bbox, cell_shape=YX(y=DEMO_CELL, x=DEMO_CELL))
    missing = frozenset(CellIJ(i=i, j=j) for i, j in DEMO_MISSING.get(index, ()))
    bounds = CellGridBounds(grid=grid, bbox=bbox, missing=missing)
    rng = np.random.default_rng(1000 + 10 * py + px)
    yy, xx = np.mgrid[bbox.y.start : bbox.y.stop, bbox.x.start : bbox.x.stop].astype(np.float32)
    model = 2.0 + 1.5 * np.sin(yy / 700.0) * np.cos(xx / 900.0)  # a smooth sky residual over the tract
    for sy, sx, flux, sig in sources:
        # Each source on a stamp of +-20 px: the tract field is the same in overlapping patches.
        y0, y1 = max(int(sy) - 20, bbox.y.start), min(int(sy) + 21, bbox.y.stop)
        x0, x1 = max(int(sx) - 20, bbox.x.start), min(int(sx) + 21, bbox.x.stop)
        if y0 >= y1 or x0 >= x1:
            continue
        sy_, sx_ = (
            yy[y0 - bbox.y.start : y1 - bbox.y.start, x0 - bbox.x.start : x1 - bbox.x.start],
            xx[y0 - bbox.y.start : y1 - bbox.y.start, x0 - bbox.x.start : x1 - bbox.x.start],
        )
        model[y0 - bbox.y.start : y1 - bbox.y.start, x0 - bbox.x.start : x1 - bbox.x.start] += (
            flux / (2 * np.pi * sig**2) * np.exp(-0.5 * ((sy_ - sy) ** 2 + (sx_ - sx) ** 2) / sig**2)
        ).astype(np.float32)
    sigma = np.float32(6.0)
    image = (model + rng.standard_normal(model.shape, dtype=np.float32) * sigma).astype(np.float32)
    variance = (sigma**2 + 0.02 * np.clip(model, 0, None)).astype(np.float32)
    noise = (rng.standard_normal(model.shape, dtype=np.float32) * sigma).astype(np.float32)
    rejected = np.zeros(model.shape, np.float32)
    schema = MaskSchema([MaskPlane(name, doc) for name, doc in DP2_PLANES], dtype=np.uint8)
    mask = Mask(0, schema=schema, bbox=bbox)
    mask.set("DETECTED", model > 30.0)
    mask.set("SATURATED", model > 3000.0)
    mask.set("COSMIC_RAY", rng.random(model.shape) < 2e-4)
    image[model > 3000.0] = np.float32(3000.0)
    _missing_cell_fill(grid, bbox, missing, [image, rejected, noise], variance, mask)
    psf = np.empty((6, 6, 21, 21))
    for i in range(6):
        for j in range(6):
            psf[i, j] = gaussian_kernel(21, 1.9 + 0.02 * (py * 4 + i) + 0.01 * (px * 4 + j), 0.02)
    for c in missing:
        psf[c.i, c.j] = np.nan
    patch = PatchDefinition(
        id=py * DEMO_PATCHES + px,
        index=YX(y=py, x=px),
        inner_bbox=Box.factory[py * size : (py + 1) * size, px * size : (px + 1) * size],
        cells=grid,
    )
    return CellCoadd(
        Image(image, bbox=bbox, unit=u.nJy),
        mask=mask,
        variance=Image(variance, bbox=bbox, unit=u.nJy**2),
        mask_fractions={"rejected": Image(rejected, bbox=bbox)},
        noise_realizations=[Image(noise, bbox=bbox)],
        sky_projection=projection,
        band="i",
        psf=CellPointSpreadFunction(psf, bounds),
        patch=patch,
    )


def write_demo_tract(directory: Path) -> dict[str, Any]:
    """Write the demonstration tract's patch files as ``demo_tract/patch_<y>_<x>.fits``."""
    sources = _demo_sources(np.random.default_rng(101), DEMO_CELL * DEMO_INNER_CELLS * DEMO_PATCHES)
    lossy = options("RICE_1", "SUBTRACTIVE_DITHER_2")
    for py in range(DEMO_PATCHES):
        for px in range(DEMO_PATCHES):
            if (py, px) == DEMO_ABSENT:
                continue
            write(
                make_demo_patch((py, px), sources),
                directory / "demo_tract" / f"patch_{py}_{px}.fits",
                compression_options={"image": lossy, "variance": lossy},
                compression_seed=100 + py * 3 + px,
            )
    return {}
