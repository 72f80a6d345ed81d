"""Files written by lsst-images with unusual geometry and per-plane compression read identically."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lsst.images import Box
from lsst.images.cells import CellCoadd
from lsst.images.fits import FitsCompressionAlgorithm as Algorithm
from lsst.images.fits import FitsCompressionOptions as Options
from lsst.images.fits import FitsDitherAlgorithm as Dither
from lsst.images.fits import FitsQuantizationOptions as Quantization
from lsst_files import make_coadd

import cellcoadd_dask as ccd

BASE = {"cell": (20, 30), "n_cells": (3, 4), "missing": [(2, 2)], "n_fractions": 2, "n_noise": 2, "n_planes": 12}


def _cutout() -> Any:
    coadd = make_coadd(**BASE, seed=5)
    b = coadd.bbox
    return coadd[Box.factory[b.y.start + 7 : b.y.stop - 3, b.x.start + 31 : b.x.start + 59]]


CASES: dict[str, tuple[Callable[[], Any], dict[str, Any]]] = {
    "rectangular cells": (lambda: make_coadd(**BASE, seed=5), {}),
    "PSF GZIP_1 with explicit tiles": (
        lambda: make_coadd(**BASE, seed=5),
        {"compression_options": {"psf": Options(algorithm=Algorithm.GZIP_1, tile_shape=(3, 5))}},
    ),
    "fixed-step quantized fractions, odd mask tiles": (
        lambda: make_coadd(**BASE, seed=6),
        {
            "compression_options": {
                "mask_fractions": Options(
                    algorithm=Algorithm.RICE_1,
                    quantization=Quantization(level=-0.01, dither=Dither.SUBTRACTIVE_DITHER_1, seed=7),
                ),
                "mask": Options(algorithm=Algorithm.GZIP_1, tile_shape=(7, 9)),
            }
        },
    ),
    "plain and compressed mixed": (
        lambda: make_coadd(**BASE, seed=7),
        {
            "compression_options": {
                "image": None,
                "variance": Options(algorithm=Algorithm.GZIP_1),
                "mask": None,
                "psf": None,
            }
        },
    ),
    "cutout cut inside cells on all sides": (_cutout, {}),
    "single cell, single mask plane": (
        lambda: make_coadd(cell=16, n_cells=(1, 1), n_planes=1, n_fractions=0, n_noise=0),
        {},
    ),
    "negative origin, seeds wrapping past 10000": (
        lambda: make_coadd(cell=12, n_cells=(2, 3), offset=(-100, -37), n_planes=31, seed=9),
        {
            "compression_options": {
                "image": Options(
                    algorithm=Algorithm.RICE_1, quantization=Quantization(level=4.0, dither=Dither.SUBTRACTIVE_DITHER_2)
                ),
                "variance": Options(
                    algorithm=Algorithm.GZIP_2, quantization=Quantization(level=8.0, dither=Dither.NO_DITHER)
                ),
            },
            "compression_seed": 9999,
        },
    ),
    "62 mask planes (two full MASK HDUs)": (lambda: make_coadd(cell=10, n_cells=(2, 2), n_planes=62), {}),
    "63 mask planes (three MASK HDUs)": (lambda: make_coadd(cell=10, n_cells=(2, 2), n_planes=63), {}),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("writer-options")
    out = {}
    for n, (name, (build, kwargs)) in enumerate(CASES.items()):
        path = directory / f"case{n}.fits"
        build().write(str(path), **kwargs)
        out[name] = path
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.filterwarnings("ignore:Provided tile size not appropriate")
@pytest.mark.parametrize("name", list(CASES))
def test_file_reads_as_lsst_images_reads_it(written: dict[str, Path], name: str) -> None:
    path = written[name]
    oracle = CellCoadd.read(str(path))
    ours = ccd.open_coadd(path)
    assert str(ours.bbox) == str(oracle.bbox)
    assert str(ours.bounds) == str(oracle.bounds)
    assert _same(ours.image.array.compute(), oracle.image.array)
    assert _same(ours.variance.array.compute(), oracle.variance.array)
    assert _same(ours.mask.array.compute(), oracle.mask.array)
    for key, plane in oracle.mask_fractions.items():
        assert _same(ours.mask_fractions[key].array.compute(), plane.array)
    for a, b in zip(ours.noise_realizations, oracle.noise_realizations, strict=True):
        assert _same(a.array.compute(), b.array)
    for cell in oracle.bounds.cell_indices():
        assert _same(ours.psf[ccd.CellIJ(cell.i, cell.j)].array.compute(), oracle.psf[cell].array)
    b = oracle.bbox
    for dy0, dy1, dx0, dx1 in [(0, 5, 0, 5), (3, 17, 11, 40)]:
        y0, y1 = b.y.start + min(dy0, b.y.size - 1), b.y.start + min(dy1, b.y.size)
        x0, x1 = b.x.start + min(dx0, b.x.size - 1), b.x.start + min(dx1, b.x.size)
        sub = CellCoadd.read(str(path), bbox=Box.factory[y0:y1, x0:x1], provenance=False)
        mine = ccd.open_coadd(path, bbox=ccd.Box.factory[y0:y1, x0:x1])
        assert str(mine.bounds) == str(sub.bounds)
        assert _same(mine.image.array.compute(), sub.image.array)
        assert _same(mine.mask.array.compute(), sub.mask.array)
