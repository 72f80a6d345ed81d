"""The reference coadds of the corpus: a minimal DP2-like coadd, a 3x3-cell synthetic one, 40 mask planes.

Boxes are absolute (tract) pixels, ``(y, x)``, half-open.  Files written (see `corpus`):

- ``min_default.fits``, ``min_lossy_rice.fits``, ``min_uncompressed.fits``: a 12x12 coadd of 6x6
  cells on a 22x22-cell patch grid, one missing cell, aperture corrections over wider bounds than
  the coadd, provenance; lossless GZIP_2, RICE_1 quantized (``compression_seed`` 4242; mask RICE_1,
  fractions GZIP_1), and uncompressed.  ``cell_coadd_min_as_shipped.json`` is the same coadd as a
  JSON archive in the older array spelling of shipped files (``"cell_shape": [6, 6]``,
  ``"index": [4, 3]``).
- ``synthetic_3x3.fits`` and ``synthetic_3x3_lossy.fits``: 450x450 px, 3x3 cells of 150 px, one
  missing cell, a reserved mask bit, 2 mask fractions, 2 noise realizations, PSF, aperture
  corrections, provenance, two backgrounds (one in its own HDU), metadata; lossless and RICE_1
  quantized (seed 77).  ``synthetic_3x3_offset_cutout.fits`` (tiles off the cell grid) and
  ``synthetic_3x3_cutout.json`` (a 60x60 JSON archive over four cells) are cut-outs of it.
- ``many_planes.fits``: 16x16 px, 40 mask planes and a reserved bit, so two int32 ``MASK`` HDUs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ._common import DP2_PLANES, gaussian_kernel, make_provenance, options, quantize, tan_projection, write
from ._expected import describe_file

__all__ = ["write_many_planes", "write_minimal", "write_synthetic"]


def make_minimal() -> Any:
    """A 12x12 coadd of 6x6 cells (cells (8..9, 6..7), (8, 6) missing) shaped like a minimal DP2 coadd."""
    import astropy.units as u
    from lsst.images import YX, Box, Image, Mask, MaskPlane, MaskSchema, TractFrame
    from lsst.images.cells import (
        CellCoadd,
        CellField,
        CellGrid,
        CellGridBounds,
        CellIJ,
        CellPointSpreadFunction,
        PatchDefinition,
    )

    rng = np.random.default_rng(9813)
    bbox = Box.factory[48:60, 36:48]
    frame = TractFrame(skymap="lsst_cells_v2", tract=9813, bbox=Box.factory[0:132, 0:132])
    projection = tan_projection(frame, ra=0.26, dec=-3.04, crpix=(37.0, 49.0), x0=0, y0=0)
    grid = CellGrid(bbox=Box.factory[0:132, 0:132], cell_shape=YX(y=6, x=6))
    missing = CellIJ(i=8, j=6)
    bounds = CellGridBounds(grid=grid, bbox=bbox, missing=frozenset({missing}))
    shape = tuple(bbox.shape)
    image = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
    image[11, 11] += 3.0
    variance = (3.0 + 0.05 * rng.normal(0.0, 1.0, size=shape)).astype(np.float32)
    noise = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
    rejected = np.zeros(shape, dtype=np.float32)
    schema = MaskSchema([MaskPlane(name, doc) for name, doc in DP2_PLANES], dtype=np.uint8)
    mask = Mask(0, schema=schema, bbox=bbox)
    mask.set("DETECTED", image > 1.5)
    inexact = np.zeros(shape, dtype=bool)
    inexact[6:, :5] = True
    mask.set("INEXACT_PSF", inexact)
    mask.set("REJECTED", rng.random(shape) < 0.04)
    local = grid.bbox_of(missing).slice_within(bbox)
    image[local] = 0.0
    variance[local] = np.inf
    noise[local] = 0.0
    sub = mask[grid.bbox_of(missing)]
    sub.clear()
    sub.set("NO_DATA")
    psf = np.stack([np.stack([gaussian_kernel(5, 1.1 + 0.05 * i + 0.02 * j) for j in range(2)]) for i in range(2)])
    psf[0, 0] = np.nan
    # Aperture corrections cover wider bounds than the coadd (cells i=7..10, j=5..7).
    ap_bounds = CellGridBounds(grid=grid, bbox=Box.factory[42:66, 30:48], missing=frozenset({missing}))
    ap_names = (
        "ext_convolved_ConvolvedFlux_2_3_3_instFlux",
        "ext_gaap_GaapFlux_1_15x_2_5_instFluxErr",
        "modelfit_CModel_initial_instFlux",
    )
    ap_corr = {}
    for n, (name, level) in enumerate(zip(ap_names, (2.2, 4e-4, 0.988), strict=True)):
        values = level * (1.0 + 1e-3 * rng.normal(0.0, 1.0, size=(4, 3)))
        values[missing.i - 7, missing.j - 5] = np.nan
        ap_corr[name] = CellField(ap_bounds, values + 0.0 * n)
    rows = [(8, 7, 1), (8, 7, 0), (9, 6, 4), (9, 6, 3), (9, 7, 2), (9, 7, 5)]
    provenance = make_provenance(
        [2025052000177] * 3 + [2025052000178] * 3,
        [94, 95, 96] * 2,
        [20250520] * 6,
        rows,
        [(11849.5 + 100.0 * n, 8849.5 + 50.0 * n) for n in range(6)],
        (3300.0, 3100.0),
    )
    return CellCoadd(
        Image(image, bbox=bbox, unit=u.nJy),
        mask=mask,
        variance=Image(variance, bbox=bbox, unit=u.nJy**2),
        mask_fractions={"rejected": Image(rejected, bbox=bbox)},
        noise_realizations=[Image(noise, bbox=bbox)],
        sky_projection=projection,
        band="r",
        psf=CellPointSpreadFunction(psf, bounds),
        aperture_corrections=ap_corr,
        patch=PatchDefinition(id=43, index=YX(y=4, x=3), inner_bbox=Box.factory[6:126, 6:126], cells=grid),
        provenance=provenance,
    )


def _old_spelling(node: Any) -> Any:
    """Rewrite a tree in the array spelling of shipped files: ``cell_shape`` and ``patch.index`` as lists."""
    if isinstance(node, list):
        return [_old_spelling(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "cell_shape" and isinstance(value, dict) and set(value) == {"y", "x"}:
            out[key] = [value["y"], value["x"]]
        else:
            out[key] = _old_spelling(value)
    patch = out.get("patch")
    if isinstance(patch, dict) and isinstance(patch.get("index"), dict):
        patch["index"] = [patch["index"]["y"], patch["index"]["x"]]
    return out


def write_minimal(directory: Path) -> dict[str, Any]:
    """Write the minimal coadd as three FITS files and a JSON archive in the shipped spelling."""
    coadd = make_minimal()
    lossy = options("RICE_1", "SUBTRACTIVE_DITHER_2")
    write(coadd, directory / "min_default.fits")
    write(
        coadd,
        directory / "min_lossy_rice.fits",
        compression_seed=4242,
        compression_options={
            "image": lossy,
            "variance": lossy,
            "mask": options("RICE_1"),
            "mask_fractions": options("GZIP_1"),
        },
    )
    write(
        coadd,
        directory / "min_uncompressed.fits",
        compression_options=dict.fromkeys(("image", "mask", "variance", "mask_fractions", "psf")),
    )
    shipped = write(coadd, directory / ".min_new_spelling.json")
    tree = _old_spelling(json.loads(shipped.read_text()))
    (directory / "cell_coadd_min_as_shipped.json").write_text(json.dumps(tree, allow_nan=True))
    shipped.unlink()
    pixels = [(48, 36), (54, 42), (55, 43), (59, 47), (56, 40)]
    return {
        name: describe_file(directory / name, pixels)
        for name in ("min_default.fits", "min_lossy_rice.fits", "min_uncompressed.fits")
    }


def write_synthetic(directory: Path) -> dict[str, Any]:
    """Write the synthetic coadd (lossless and lossy) and two cut-outs of it."""
    from lsst.images import Box

    from ._synthetic import make_synthetic

    coadd = make_synthetic()
    lossy = options("RICE_1", "SUBTRACTIVE_DITHER_2")
    write(coadd, directory / "synthetic_3x3.fits")
    write(
        coadd,
        directory / "synthetic_3x3_lossy.fits",
        compression_seed=77,
        compression_options={"image": lossy, "variance": lossy},
    )
    write(coadd[Box.factory[1275:1575, 1725:2025]], directory / "synthetic_3x3_offset_cutout.fits")
    write(coadd[Box.factory[1470:1530, 1920:1980]], directory / "synthetic_3x3_cutout.json")
    pixels = [
        (1200, 1650),
        (1290, 1705),
        (1512, 1833),
        (1349, 1949),
        (1350, 1950),
        (1499, 2099),
        (1649, 2099),
        (1610, 2050),
    ]
    keys = ("REFGEN", "SYNTH_SEED")
    expected = {
        name: describe_file(directory / name, pixels, keys)
        for name in ("synthetic_3x3.fits", "synthetic_3x3_lossy.fits")
    }
    expected["synthetic_3x3_offset_cutout.fits"] = describe_file(
        directory / "synthetic_3x3_offset_cutout.fits", [(1275, 1725), (1349, 1799), (1350, 1950), (1574, 2024)], keys
    )
    expected["synthetic_3x3_cutout.json"] = describe_file(
        directory / "synthetic_3x3_cutout.json", [(1470, 1920), (1499, 1949), (1500, 1950), (1529, 1979)], keys
    )
    return expected


def make_many_planes() -> Any:
    """A 16x16 coadd (2x2 cells of 8x8, negative y origin) with 40 mask planes and a reserved bit."""
    import astropy.units as u
    from lsst.images import YX, Box, Image, Mask, MaskPlane, MaskSchema, TractFrame
    from lsst.images.cells import CellCoadd, CellGrid, CellGridBounds, CellPointSpreadFunction

    rng = np.random.default_rng(7)
    bbox = Box.factory[-16:0, 104:120]
    frame = TractFrame(skymap="synthetic_cells_v1", tract=7, bbox=Box.factory[-64:64, 0:256])
    projection = tan_projection(frame, ra=10.0, dec=-30.0, crpix=(1.0, 1.0), x0=0, y0=-64)
    bounds = CellGridBounds(grid=CellGrid(bbox=Box.factory[-32:32, 96:128], cell_shape=YX(y=8, x=8)), bbox=bbox)
    planes: list[Any] = [MaskPlane(f"P{n:02d}", f"Synthetic plane {n}.") for n in range(20)]
    planes.append(None)
    planes += [MaskPlane(f"P{n:02d}", f"Synthetic plane {n}.") for n in range(20, 40)]
    mask = Mask(0, schema=MaskSchema(planes), bbox=bbox)
    for n in range(40):
        mask.set(f"P{n:02d}", rng.random(tuple(bbox.shape)) < 0.1)
    image = quantize(rng.normal(0.0, 1.0, size=tuple(bbox.shape)), 2.0**-8)
    psf = np.stack([np.stack([gaussian_kernel(5, 1.0) for _ in range(2)]) for _ in range(2)])
    return CellCoadd(
        Image(image, bbox=bbox, unit=u.nJy),
        mask=mask,
        sky_projection=projection,
        psf=CellPointSpreadFunction(psf, bounds),
    )


def write_many_planes(directory: Path) -> dict[str, Any]:
    """Write ``many_planes.fits`` (two ``MASK`` HDUs on disk)."""
    write(make_many_planes(), directory / "many_planes.fits")
    return {"many_planes.fits": describe_file(directory / "many_planes.fits", [(-16, 104), (-1, 119)])}
