"""Compression and layout variants of the corpus (``variants/``), written by lsst-images.

Each file exercises one thing a reader must handle (another compression algorithm or quantization,
tiles that are not cells, NaN pixels, a cut-out off the cell grid, three ``MASK`` HDUs, a JSON
archive); `VARIANTS` describes them.  Coordinates are absolute (tract) pixels, ``(y, x)``, half-open.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._common import gaussian_kernel, options, quantize, write
from ._expected import describe_file

__all__ = ["JSON_CUTOUT", "OFF_GRID_CUTOUT", "VARIANTS", "Variant", "make_coadd", "plane_names", "write_variants"]

# Names of the first mask planes; further planes are called P000, P001, ...
_NAMED_PLANES = ("NO_DATA", "DETECTED", "SATURATED", "INTERPOLATED", "CLIPPED", "REJECTED")
PSF_SIZE = 9


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    y, x = value
    return (int(y), int(x))


def plane_names(n_planes: int) -> list[str]:
    """Names of the mask planes of a coadd from `make_coadd` with ``n_planes`` planes."""
    named = list(_NAMED_PLANES[: min(n_planes, len(_NAMED_PLANES))])
    return named + [f"P{n:03d}" for n in range(n_planes - len(named))]


def make_coadd(
    *,
    cell: int | tuple[int, int] = 40,
    n_cells: tuple[int, int] = (4, 5),
    offset: tuple[int, int] = (0, 0),
    missing: Collection[tuple[int, int]] = (),
    n_fractions: int = 1,
    n_noise: int = 1,
    n_planes: int = 6,
    with_nan: bool = False,
    seed: int = 1,
) -> Any:
    """Build a synthetic `lsst.images.cells.CellCoadd` through the public API.

    The patch grid has ``n_cells + 2`` cells along each axis (a margin of one
    cell all round) and starts at tract pixel ``offset``; the coadd covers the
    inner ``n_cells`` cells, i.e. cell indices ``i = 1..ny``, ``j = 1..nx``.

    Parameters
    ----------
    cell
        Cell shape in pixels, ``(y, x)`` or one int for square cells.
    n_cells
        Number of cells ``(ny, nx)`` covered by the coadd.
    offset
        Absolute (tract) pixel coordinates ``(y, x)`` of the patch grid start.
    missing
        Grid indices ``(i, j)`` of cells without data (image 0, variance
        +inf, mask ``NO_DATA`` only, PSF NaN, aperture correction NaN).
    n_fractions
        Number of mask-fraction planes (named ``frac0``, ``frac1``, ...).
    n_noise
        Number of noise realizations.
    n_planes
        Number of mask planes (see `plane_names`); more than 31 planes need
        several ``MASK`` HDUs on disk.
    with_nan
        Put a block of NaN pixels in the image of the first cell with data.
    seed
        Seed of the random generator.

    Returns
    -------
    coadd
        The in-memory coadd; write it with ``coadd.write(path, ...)``.
    """
    import astropy.units as u
    import astropy.wcs
    from lsst.images import YX, Box, Image, Mask, MaskPlane, MaskSchema, SkyProjection, TractFrame
    from lsst.images.cells import (
        CellCoadd,
        CellField,
        CellGrid,
        CellGridBounds,
        CellIJ,
        CellPointSpreadFunction,
        PatchDefinition,
    )

    rng = np.random.default_rng(seed)
    cy, cx = _pair(cell)
    ny, nx = n_cells
    oy, ox = offset
    grid_bbox = Box.factory[oy : oy + (ny + 2) * cy, ox : ox + (nx + 2) * cx]
    bbox = Box.factory[oy + cy : oy + (ny + 1) * cy, ox + cx : ox + (nx + 1) * cx]
    tract_bbox = Box.factory[oy - 2 * cy : oy + (ny + 4) * cy, ox - 2 * cx : ox + (nx + 4) * cx]
    missing_cells = frozenset(CellIJ(i=i, j=j) for i, j in missing)
    for c in missing_cells:
        if not (1 <= c.i <= ny and 1 <= c.j <= nx):
            raise ValueError(f"missing cell {c} is outside the coadd cells i=1..{ny}, j=1..{nx}")

    frame = TractFrame(skymap="test_cells_v1", tract=3, bbox=tract_bbox)
    scale = (0.2 * u.arcsec).to_value(u.deg)
    wcs = astropy.wcs.WCS(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRPIX1": tract_bbox.x.size / 2 + 0.5,
            "CRPIX2": tract_bbox.y.size / 2 + 0.5,
            "CRVAL1": 45.0,
            "CRVAL2": -10.0,
            "CD1_1": -scale,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": scale,
        }
    )
    projection = SkyProjection.from_fits_wcs(wcs, frame, x0=tract_bbox.x.start, y0=tract_bbox.y.start)
    grid = CellGrid(bbox=grid_bbox, cell_shape=YX(y=cy, x=cx))
    bounds = CellGridBounds(grid=grid, bbox=bbox, missing=missing_cells)

    shape = (bbox.y.size, bbox.x.size)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = rng.normal(0.0, 4.0, size=shape)
    for _ in range(3):
        sy, sx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        image += 3000.0 / (2 * np.pi * 4.0) * np.exp(-0.5 * ((yy - sy) ** 2 + (xx - sx) ** 2) / 4.0)
    image = quantize(image, 2.0**-6)
    variance = quantize(16.0 + 0.05 * np.clip(image, 0.0, None), 2.0**-6)
    fractions = [quantize(rng.uniform(0.0, 1.0, size=shape), 2.0**-8) for _ in range(n_fractions)]
    noise = [quantize(rng.normal(0.0, 4.0, size=shape), 2.0**-6) for _ in range(n_noise)]

    names = plane_names(n_planes)
    schema = MaskSchema([MaskPlane(name, f"Synthetic mask plane {name}.") for name in names])
    mask = Mask(0, schema=schema, bbox=bbox)
    for name in names[1:]:
        mask.set(name, rng.random(shape) < 0.05)

    psf_array = np.empty((ny, nx, PSF_SIZE, PSF_SIZE), dtype=np.float64)
    ap_corr = np.empty((ny, nx), dtype=np.float64)
    for i in range(ny):
        for j in range(nx):
            psf_array[i, j] = gaussian_kernel(PSF_SIZE, 1.5 + 0.05 * i + 0.03 * j)
            ap_corr[i, j] = 0.97 + 0.001 * (i * nx + j)
    for c in missing_cells:
        local = grid.bbox_of(c).slice_within(bbox)
        image[local] = 0.0
        variance[local] = np.inf
        for plane in (*fractions, *noise):
            plane[local] = 0.0
        sub = mask[grid.bbox_of(c)]
        sub.clear()
        sub.set("NO_DATA")
        psf_array[c.i - 1, c.j - 1] = np.nan
        ap_corr[c.i - 1, c.j - 1] = np.nan
    if with_nan:
        first = min(bounds.cell_indices())
        y0 = (first.i - 1) * cy + 2
        x0 = (first.j - 1) * cx + 3
        image[y0 : y0 + 3, x0 : x0 + 4] = np.nan

    patch = PatchDefinition(id=5, index=YX(y=0, x=1), inner_bbox=bbox, cells=grid)
    return CellCoadd(
        Image(image, bbox=bbox, unit=u.nJy),
        mask=mask,
        variance=Image(variance, bbox=bbox, unit=u.nJy**2),
        mask_fractions={f"frac{n}": Image(f, bbox=bbox) for n, f in enumerate(fractions)},
        noise_realizations=[Image(n, bbox=bbox) for n in noise],
        sky_projection=projection,
        band="i",
        psf=CellPointSpreadFunction(psf_array, bounds),
        aperture_corrections={"base_PsfFlux_instFlux": CellField(bounds, ap_corr)},
        patch=patch,
    )


def _lossy(algorithm: str, dither: str) -> dict[str, Any]:
    # "image" options also apply to the noise realizations.
    opts = options(algorithm, dither)
    return {"compression_options": {"image": opts, "variance": opts}, "compression_seed": 321}


def _everywhere(compression: Any) -> dict[str, Any]:
    keys = ("image", "mask", "variance", "mask_fractions", "psf")
    return {"compression_options": dict.fromkeys(keys, compression)}


@functools.cache
def _standard() -> Any:
    return make_coadd(cell=40, n_cells=(4, 5), offset=(120, -80), missing={(2, 3)}, n_fractions=2, n_noise=2)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One oracle file: how it is built and what it exercises.

    Attributes
    ----------
    description
        What a reader must handle in this file.
    build
        Returns the coadd to write (a whole coadd or a cutout of one).
    write_kwargs
        Keyword arguments of ``CellCoadd.write`` (compression options, seed).
    shape
        Expected ``(y, x)`` shape of the image plane.
    """

    description: str
    build: Callable[[], Any]
    write_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    shape: tuple[int, int] = (160, 200)


# The standard coadd covers [y=160:320, x=-40:160]; its missing cell (2, 3) is [y=200:240, x=40:80].
OFF_GRID_CUTOUT = ((173, 243), (-13, 77))
"""``(y, x)`` intervals of the off-grid cutout (absolute): 13 and 27 px off the cell boundaries."""
JSON_CUTOUT = ((230, 250), (70, 90))
"""``(y, x)`` intervals of the JSON cutout (absolute): straddles cells (2, 3)=missing, (2, 4), (3, 3)
and (3, 4)."""


def _cutout(intervals: tuple[tuple[int, int], tuple[int, int]]) -> Callable[[], Any]:
    def build() -> Any:
        from lsst.images import Box

        (y0, y1), (x0, x1) = intervals
        return _standard()[Box.factory[y0:y1, x0:x1]]

    return build


VARIANTS: dict[str, Variant] = {
    "default_4x5.fits": Variant(
        "4x5 cells of 40x40 px (grid origin y=120, x=-80), missing cell (2, 3), 6 mask planes, "
        "2 mask fractions, 2 noise realizations; default lossless GZIP_2 with tile = cell.",
        _standard,
    ),
    "rice_dither1.fits": Variant(
        "As default_4x5, image/noise/variance RICE_1 quantized with SUBTRACTIVE_DITHER_1, level 16.",
        _standard,
        _lossy("RICE_1", "SUBTRACTIVE_DITHER_1"),
    ),
    "rice_no_dither.fits": Variant(
        "As default_4x5, image/noise/variance RICE_1 quantized with NO_DITHER (astropy writes no ZQUANTIZ "
        "card, which the FITS standard reads as NO_DITHER).",
        _standard,
        _lossy("RICE_1", "NO_DITHER"),
    ),
    "gzip2_quantized.fits": Variant(
        "As default_4x5, image/noise/variance GZIP_2 of quantized integers (SUBTRACTIVE_DITHER_2).",
        _standard,
        _lossy("GZIP_2", "SUBTRACTIVE_DITHER_2"),
    ),
    "gzip1_lossless.fits": Variant(
        "As default_4x5 with every array (image, mask, variance, fractions, noise, PSF) lossless GZIP_1.",
        _standard,
        _everywhere(options("GZIP_1")),
    ),
    "lossy_nan.fits": Variant(
        "3x3 cells of 32x48 px with a 3x4 block of NaN image pixels; image RICE_1 + SUBTRACTIVE_DITHER_2, "
        "so the image HDU carries ZBLANK for the NaNs.",
        lambda: make_coadd(cell=(32, 48), n_cells=(3, 3), offset=(0, 0), with_nan=True, seed=5),
        _lossy("RICE_1", "SUBTRACTIVE_DITHER_2"),
        (96, 144),
    ),
    "tile_7x13.fits": Variant(
        "As default_4x5 but with explicit FITS tiles of 7x13 px (not the cell shape, partial edge tiles) "
        "for image, mask, variance and mask fractions.",
        _standard,
        {
            "compression_options": dict.fromkeys(
                ("image", "mask", "variance", "mask_fractions"), options("GZIP_2", tile_shape=(7, 13))
            )
        },
    ),
    "uncompressed.fits": Variant(
        "As default_4x5 with every array a plain (uncompressed) IMAGE HDU.",
        _standard,
        _everywhere(None),
    ),
    "offset_cutout.fits": Variant(
        "Cutout [y=173:243, x=-13:77] of default_4x5 written with coadd[box].write(): origin off the "
        "cell grid, so its 40x40 tiles start at the cutout origin and straddle cells; overlaps missing "
        "cell (2, 3).",
        _cutout(OFF_GRID_CUTOUT),
        {},
        (70, 90),
    ),
    "mask_70_planes.fits": Variant(
        "2x2 cells of 16x16 px at a negative origin with 70 mask planes: three int32 MASK HDUs "
        "(EXTVER 1, 2, 3 holding 31, 31 and 8 planes); no mask fractions or noise.",
        lambda: make_coadd(cell=16, n_cells=(2, 2), offset=(-48, 16), n_fractions=0, n_noise=0, n_planes=70, seed=7),
        {},
        (32, 32),
    ),
    "cutout.json": Variant(
        "JSON archive of the 20x20 cutout [y=230:250, x=70:90] of default_4x5, straddling cells "
        "(2, 3)=missing, (2, 4), (3, 3) and (3, 4).",
        _cutout(JSON_CUTOUT),
        {},
        (20, 20),
    ),
}
"""Every oracle variant, keyed by file name."""


def write_variants(directory: Path, names: Collection[str] | None = None) -> dict[str, Any]:
    """Write the variants into ``directory/variants`` and describe each as lsst-images reads it.

    Parameters
    ----------
    directory
        The corpus directory.
    names
        Variants to write (default: all of `VARIANTS`).

    Returns
    -------
    expected
        Expected values keyed by ``variants/<name>``.
    """
    expected = {}
    for name in names if names is not None else VARIANTS:
        variant = VARIANTS[name]
        path = write(variant.build(), directory / "variants" / name, **variant.write_kwargs)
        expected[f"variants/{name}"] = describe_file(path, [])
    return expected
