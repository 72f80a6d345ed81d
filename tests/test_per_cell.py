"""Per-cell science on patch and tract Datasets: cell coordinates, ``valid()``, ``cell_statistics``.

Every result is compared with plain numpy over the computed full-resolution arrays: per-cell
groups are formed from each pixel's absolute position and the cell grid, not from the
package's own coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import cellcoadd_dask as ccd
from cellcoadd_dask.testing._tracts import TEST_CELL as CELL
from cellcoadd_dask.testing._tracts import TEST_TRACT_COVERAGE as COVERAGE


@pytest.fixture(scope="module")
def patch(reference_dir: Path) -> xr.Dataset:
    return ccd.open_coadd(reference_dir / "synthetic_3x3.fits").to_xarray()


@pytest.fixture(scope="module")
def tract(corpus: Path) -> xr.Dataset:
    return ccd.open_tract([str(corpus / "tract" / f"patch_{i}_{j}.fits") for i, j in sorted(COVERAGE)])


def _bit(ds: xr.Dataset, name: str) -> int:
    names = ds["mask"].attrs["flag_meanings"].split()
    return int(ds["mask"].attrs["flag_masks"][names.index(name)])


def _expected(ds: xr.Dataset, origin: tuple[int, int], cell: int,
              exclude: tuple[str, ...]) -> dict[tuple[int, int], np.ndarray]:
    """Pixels counted per cell, from absolute positions: finite and no excluded plane set."""
    image = ds["image"].values.astype(np.float64)
    mask = ds["mask"].values
    bits = 0
    for name in exclude:
        bits |= _bit(ds, name)
    keep = np.isfinite(image) & ((mask & bits) == 0)
    ci = (ds["y"].values - origin[0]) // cell
    cj = (ds["x"].values - origin[1]) // cell
    out: dict[tuple[int, int], np.ndarray] = {}
    for i in np.unique(ci):
        for j in np.unique(cj):
            sel = (ci[:, None] == i) & (cj[None, :] == j)
            out[int(i), int(j)] = image[sel & keep]
    return out


def _check(stats: xr.Dataset, expected: dict[tuple[int, int], np.ndarray]) -> None:
    assert stats.sizes["cell_i"] * stats.sizes["cell_j"] == len(expected)
    for (i, j), values in expected.items():
        row = stats.sel(cell_i=i, cell_j=j)
        assert int(row["count"]) == values.size, (i, j)
        if values.size:
            np.testing.assert_allclose(float(row["sum"]), values.sum(), rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(float(row["mean"]), values.mean(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(float(row["std"]), values.std(), rtol=1e-9, atol=1e-12)
            assert float(row["min"]) == values.min() and float(row["max"]) == values.max()
        else:
            assert np.isnan(float(row["mean"])) and np.isnan(float(row["min"]))


def _grid_origin(ds: xr.Dataset) -> tuple[int, int]:
    import json

    if "cell_grid" in ds.attrs:
        bbox = json.loads(ds.attrs["cell_grid"])["bbox"]
        return bbox["y"]["start"], bbox["x"]["start"]
    bounds = json.loads(ds.attrs["cell_bounds"])
    bbox = bounds["grid"]["bbox"]
    return bbox["y"]["start"], bbox["x"]["start"]


def test_cell_coordinates_follow_the_grid(patch: xr.Dataset) -> None:
    y0, x0 = _grid_origin(patch)
    np.testing.assert_array_equal(patch["cell_i"].values, (patch["y"].values - y0) // 150)
    np.testing.assert_array_equal(patch["cell_j"].values, (patch["x"].values - x0) // 150)
    assert patch["cell_i"].dims == ("y",) and patch["cell_j"].dims == ("x",)
    # numbered as the PSF's cells
    assert set(np.unique(patch["cell_i"].values)) == set(patch["psf_cell_i"].values.tolist())


def test_groupby_cell_is_exact_on_a_box_off_the_cell_edges(patch: xr.Dataset) -> None:
    box = patch.isel(y=slice(37, 401), x=slice(5, 333))
    got = box.image.groupby(["cell_i", "cell_j"]).sum().compute()
    expected = _expected(box, _grid_origin(patch), 150, ())
    for (i, j), values in expected.items():
        np.testing.assert_allclose(float(got.sel(cell_i=i, cell_j=j)), values.sum(dtype=np.float32), rtol=1e-5)


@pytest.mark.parametrize("exclude", [(), ("NO_DATA",), ("NO_DATA", "DETECTED")])
def test_cell_statistics_of_a_patch_box(patch: xr.Dataset, exclude: tuple[str, ...]) -> None:
    box = patch.isel(y=slice(37, 401), x=slice(5, 333)).chunk(y=100, x=77)  # blocks split cells
    stats = ccd.cell_statistics(box, "image", exclude=exclude)
    _check(stats, _expected(box, _grid_origin(patch), 150, exclude))
    assert stats.attrs["excluded"] == list(exclude)


def test_cell_statistics_read_the_mask_only_when_a_plane_is_excluded(reference_dir: Path) -> None:
    path = reference_dir / "synthetic_3x3.fits"
    with ccd.fetch_stats() as image_only:
        ccd.open_coadd(path).to_xarray()["image"].compute()
    with ccd.fetch_stats() as everything_finite:
        ccd.cell_statistics(ccd.open_coadd(path).to_xarray(), "image", exclude=())
    with ccd.fetch_stats() as no_data_left_out:
        ccd.cell_statistics(ccd.open_coadd(path).to_xarray(), "image")
    assert everything_finite.nbytes == image_only.nbytes
    assert no_data_left_out.nbytes > image_only.nbytes


def test_cell_statistics_of_a_tract_skip_the_missing_patch(tract: xr.Dataset) -> None:
    stats = tract.cellcoadd.cell_statistics("image")
    expected = _expected(tract, _grid_origin(tract), CELL, ("NO_DATA",))
    _check(stats, expected)
    assert (stats["count"] == 0).any()  # the missing patch (1, 1) and uncovered cells count nothing
    assert int(stats["pixels"].sum()) == tract.sizes["y"] * tract.sizes["x"]


def test_cell_statistics_of_a_coadd_and_lazily(reference_dir: Path, patch: xr.Dataset) -> None:
    coadd = ccd.open_coadd(reference_dir / "synthetic_3x3.fits")
    lazy = ccd.cell_statistics(coadd, "variance", compute=False)
    assert lazy["mean"].chunks is not None
    eager = patch.cellcoadd.cell_statistics("variance")
    xr.testing.assert_identical(lazy.compute(), eager)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"exclude": ["NOT_A_PLANE"]}, "unknown mask plane 'NOT_A_PLANE'"),
    ({"variable": "psf"}, "must be on"),
    ({"variable": "nothing"}, "must be on"),
])
def test_cell_statistics_refuses_what_it_cannot_do(patch: xr.Dataset, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ccd.ValidationError, match=message):
        ccd.cell_statistics(patch, **kwargs)


def test_valid_turns_both_fill_conventions_into_nan(tract: xr.Dataset) -> None:
    valid = tract.cellcoadd.valid()
    assert valid["image"].chunks is not None  # lazy
    no_data = (tract["mask"].values & _bit(tract, "NO_DATA")) != 0
    assert no_data.any() and (~no_data).any()
    for name in ("image", "variance"):
        values = valid[name].values
        assert np.isnan(values[no_data]).all(), name
        np.testing.assert_array_equal(values[~no_data], tract[name].values[~no_data])
    np.testing.assert_array_equal(valid["mask"].values, tract["mask"].values)
    assert valid["image"].attrs == tract["image"].attrs


def test_to_coadd_of_a_tract_says_why_not(tract: xr.Dataset) -> None:
    with pytest.raises(ccd.ValidationError, match="tract mosaic"):
        tract.cellcoadd.to_coadd()


def test_to_coadd_of_a_reduction_says_what_is_missing(patch: xr.Dataset) -> None:
    with pytest.raises(ccd.ValidationError, match="no 'psf'"):
        patch.drop_vars("psf").cellcoadd.to_coadd()


def test_many_chunks_on_a_tract_warn(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dask.array as da

    from cellcoadd_dask import tract as tract_module

    urls = [str(corpus / "tract" / f"patch_{i}_{j}.fits") for i, j in sorted(COVERAGE)]
    monkeypatch.setattr(tract_module, "MAX_CHUNKS_PER_PLANE", 20)  # the test tract has 36 cells
    with pytest.warns(da.PerformanceWarning, match="36 chunks per plane"):
        ds = ccd.open_tract(urls, chunks="cell")
    assert ds["image"].data.npartitions == 36
    ccd.open_tract(urls, chunks="auto")  # no warning (warnings are errors in the tests)
