"""``ds.cellcoadd.coarsen``: exact block reductions aligned on absolute multiples of the factor.

The expected values are a plain numpy block reduction of the computed full-resolution arrays,
padded to absolute multiples of the factor; the tract is the corpus' 2x2 test tract (one
patch missing, one partly covered, one cell missing).
"""

from __future__ import annotations

import math
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import xarray as xr

import cellcoadd_dask as ccd
from cellcoadd_dask.testing._tracts import TEST_TRACT_COVERAGE as COVERAGE


@pytest.fixture(scope="module")
def patch(reference_dir: Path) -> xr.Dataset:
    return ccd.open_coadd(reference_dir / "synthetic_3x3.fits").to_xarray()


@pytest.fixture(scope="module")
def tract(corpus: Path) -> xr.Dataset:
    return ccd.open_tract([str(corpus / "tract" / f"patch_{i}_{j}.fits") for i, j in sorted(COVERAGE)])


def _blocks(values: np.ndarray, y0: int, x0: int, factor: int, fill: object) -> np.ndarray:
    """``values`` padded to absolute multiples of ``factor``, as (ny, nx, factor, factor, ...) blocks."""
    ny, nx = values.shape[:2]
    before_y, before_x = y0 - math.floor(y0 / factor) * factor, x0 - math.floor(x0 / factor) * factor
    after_y = math.ceil((y0 + ny) / factor) * factor - (y0 + ny)
    after_x = math.ceil((x0 + nx) / factor) * factor - (x0 + nx)
    pad = [(before_y, after_y), (before_x, after_x)] + [(0, 0)] * (values.ndim - 2)
    padded = np.pad(values, pad, constant_values=fill)
    by, bx = padded.shape[0] // factor, padded.shape[1] // factor
    return padded.reshape(by, factor, bx, factor, *padded.shape[2:]).swapaxes(1, 2)


def _expected(ds: xr.Dataset, factor: int) -> dict[str, np.ndarray]:
    y0, x0 = int(ds["y"][0]), int(ds["x"][0])
    image = ds["image"].values
    mask = ds["mask"].values
    names = ds["mask"].attrs["flag_meanings"].split()
    no_data = int(ds["mask"].attrs["flag_masks"][names.index("NO_DATA")])
    valid = np.isfinite(image) & ((mask & no_data) == 0)
    v = _blocks(valid, y0, x0, factor, False)
    n = v.sum(axis=(2, 3))
    out = {"count": n}
    for name in ("image", "variance"):
        b = _blocks(np.where(valid, ds[name].values, 0).astype(np.float64), y0, x0, factor, 0.0).sum(axis=(2, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            value = b / n if name == "image" else b / n.astype(np.float64) ** 2
        out[name] = np.where(n > 0, value, np.nan).astype(ds[name].dtype)
    out["mask"] = np.bitwise_or.reduce(np.bitwise_or.reduce(_blocks(mask, y0, x0, factor, 0), axis=3), axis=2)
    return out


def _check(got: xr.Dataset, ds: xr.Dataset, factor: int) -> None:
    expected = _expected(ds, factor)
    for name, values in expected.items():
        assert got[name].shape == values.shape, name
        if name in ("image", "variance"):
            np.testing.assert_allclose(got[name].values, values, rtol=2e-6, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name].values, values, err_msg=name)
    y0 = int(ds["y"][0])
    first = math.floor(y0 / factor)
    np.testing.assert_array_equal(got["y"].values, (first + np.arange(got.sizes["y"])) * factor + (factor - 1) / 2)


@pytest.mark.parametrize("factor", [2, 8, 7, 64])
def test_patch_equals_a_numpy_block_reduction(patch: xr.Dataset, factor: int) -> None:
    _check(patch.cellcoadd.coarsen(factor).compute(), patch, factor)


@pytest.mark.parametrize("factor", [2, 8, 7])
def test_tract_equals_a_numpy_block_reduction(tract: xr.Dataset, factor: int) -> None:
    _check(tract.cellcoadd.coarsen(factor).compute(), tract, factor)


def test_a_selection_off_the_block_edges_aligns_on_absolute_multiples(patch: xr.Dataset) -> None:
    box = patch.isel(y=slice(13, 301), x=slice(29, 250))
    got = box.cellcoadd.coarsen(8).compute()
    _check(got, box, 8)
    whole = patch.cellcoadd.coarsen(8).compute()
    inner = whole.sel(y=got["y"].values[1:-1], x=got["x"].values[1:-1])  # blocks not cut by the box
    np.testing.assert_array_equal(got["image"].values[1:-1, 1:-1], inner["image"].values)


def test_noise_and_fractions_are_means_over_the_valid_pixels(patch: xr.Dataset) -> None:
    got = patch.cellcoadd.coarsen(5).compute()
    for name, axis in (("noise_realizations", "realization"), ("mask_fractions", "fraction")):
        for k in range(patch.sizes[axis]):
            plane = patch.isel({axis: k}).drop_vars(["image"]).rename({name: "image"})
            plane["image"].attrs = {}
            expected = _expected(xr.merge([plane["image"], patch["mask"], patch["variance"]]).assign(
                image=patch["image"].where(np.isfinite(patch["image"]), np.nan) * 0 + plane["image"]), 5)
            np.testing.assert_allclose(got[name].isel({axis: k}).values, expected["image"], rtol=2e-6,
                                       equal_nan=True, err_msg=f"{name} {k}")


@pytest.mark.parametrize("factor", [7, 64])
def test_each_tile_is_read_once(reference_dir: Path, factor: int) -> None:
    """Every image and mask tile byte is read, none twice, nothing of the other planes."""
    from oracle import hdu_bytes

    path = reference_dir / "synthetic_3x3.fits"
    ds = ccd.open_coadd(path).to_xarray()
    with ccd.fetch_stats() as stats:
        ds.cellcoadd.coarsen(factor)["image"].compute()
    reads = np.zeros(path.stat().st_size, dtype=np.int64)
    for _, start, stop in stats.ranges:
        reads[start:stop] += 1
    for name in ("IMAGE", "MASK"):
        for tile in hdu_bytes(path, name).tiles:
            if tile is not None:
                assert (reads[tile[0]:tile[1]] == 1).all(), (name, tile)
    for name in ("VARIANCE",):
        for tile in hdu_bytes(path, name).tiles:
            if tile is not None:
                assert not reads[tile[0]:tile[1]].any(), (name, tile)


def test_the_accessor_works_on_the_coarsened_dataset(patch: xr.Dataset) -> None:
    coarse = patch.cellcoadd.coarsen(8)
    assert coarse.cellcoadd.factor == 8
    assert coarse.cellcoadd.bbox == patch.cellcoadd.bbox
    wcs = coarse.cellcoadd.wcs
    # array pixel (j, i) of the coarse grid is the block centre (y, x) at full resolution
    i, j = 17, 31
    sky = wcs.pixel_to_world(j, i)
    exact = patch.cellcoadd.pixel_to_sky(y=float(coarse["y"][i]), x=float(coarse["x"][j]))
    assert sky.separation(exact).to_value(u.arcsec) < 1e-6
    stamp = coarse.cellcoadd.sel_sky(exact.ra, exact.dec, 1 * u.arcsec)  # smaller than a block
    assert stamp.sizes["y"] >= 1 and stamp.sizes["x"] >= 1
    assert float(coarse["y"][i]) in stamp["y"].values
    detected = coarse.cellcoadd.mask_plane("DETECTED").compute()
    assert detected.shape == coarse["mask"].shape


@pytest.mark.parametrize("factor", [0, -2, 2.5, True, "4"])
def test_bad_factors_are_refused(patch: xr.Dataset, factor: object) -> None:
    with pytest.raises(ccd.ValidationError, match="positive integer"):
        patch.cellcoadd.coarsen(factor)  # type: ignore[arg-type]


def test_coarsening_twice_is_refused_with_the_way_out(patch: xr.Dataset) -> None:
    with pytest.raises(ccd.ValidationError, match="product of the factors"):
        patch.cellcoadd.coarsen(2).cellcoadd.coarsen(2)
