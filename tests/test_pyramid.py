"""Overview pyramids: ``write_pyramid`` / ``open_pyramid`` / ``cellcoadd-dask pyramid``.

Pyramids of the corpus' 2x2 test tract and 3x3 demonstration tract are validated as OME-Zarr 0.5
images with ome-zarr-models; level ``k`` must equal ``ds.cellcoadd.coarsen(factor_k)`` exactly;
opening a level reads one object and an overview reads only that level's chunks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import cellcoadd_dask as ccd


@pytest.fixture(scope="module", params=["tract", "demo_tract"])
def tract(corpus: Path, request: pytest.FixtureRequest) -> xr.Dataset:
    return ccd.open_tract(sorted(str(p) for p in (corpus / request.param).glob("*.fits")))


def _validated(path: Path) -> Any:
    """The group read by ome-zarr-models as an OME-Zarr 0.5 image (which validates it)."""
    import warnings

    import zarr
    from ome_zarr_models.v05.image import Image

    with warnings.catch_warnings():  # zarr-python notes that consolidated metadata is its own convention
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        return Image.from_zarr(zarr.open_group(str(path), mode="r"))


def _stored_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_levels_equal_coarsen_and_validate_as_ome_zarr(tract: xr.Dataset, tmp_path: Path) -> None:
    url = ccd.write_pyramid(tract, tmp_path / "p.zarr", levels=4)
    image = _validated(tmp_path / "p.zarr")
    datasets = image.ome_attributes.multiscales[0].datasets
    assert [d.path for d in datasets] == ["0", "1", "2", "3"]
    for k, factor in enumerate([1, 2, 4, 8]):
        level = ccd.open_pyramid(url, k)
        expected = tract if factor == 1 else tract.cellcoadd.coarsen(factor)
        for name in ("image", "variance", "mask"):
            np.testing.assert_array_equal(level[name].values, expected[name].values, err_msg=f"{name} level {k}")
        if factor > 1:
            np.testing.assert_array_equal(level["count"].values, expected["count"].values)
        np.testing.assert_array_equal(level["y"].values, expected["y"].values)
        scale = datasets[k].coordinateTransformations[0].scale
        translation = datasets[k].coordinateTransformations[1].translation
        assert list(scale) == [factor, factor]
        assert list(translation) == [float(expected["y"][0]), float(expected["x"][0])]
        assert level.cellcoadd.factor == factor
        assert level.cellcoadd.bbox == tract.cellcoadd.bbox
    for group in ("variance", "mask", "count"):
        _validated(tmp_path / "p.zarr" / group)


def test_written_in_bands_smaller_than_a_chunk_it_is_exact(
    tract: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows of 8 rows and a third of the columns (cut off every tile edge), on a selection off every grid."""
    from cellcoadd_dask import pyramid_bands

    part = tract.isel(y=slice(37, 237), x=slice(5, -11))  # at most 200 rows: 25 bands
    cuts = pyramid_bands.bands(part, 8, target=8)
    assert cuts[0][0] == int(part["y"][0]) and cuts[-1][1] == int(part["y"][-1]) + 1 and len(cuts) >= 6
    assert all(a % 8 == 0 and b - a >= 8 for a, b in cuts[1:])
    width = part.sizes["x"] // 3
    columns = pyramid_bands.bands(part, 8, target=width, axis="x")
    assert columns[0][0] == int(part["x"][0]) and columns[-1][1] == int(part["x"][-1]) + 1 and len(columns) >= 2
    assert all(a % 8 == 0 for a, _ in columns[1:]) and all(b - a >= width for a, b in columns[:-1])
    monkeypatch.setattr(pyramid_bands, "BAND_ROWS", 8)
    monkeypatch.setattr(pyramid_bands, "BAND_COLUMNS", width)
    monkeypatch.setattr(pyramid_bands, "STRIP_COLUMNS", 16)  # each window reduced in several strips
    url = ccd.write_pyramid(part, tmp_path / "p.zarr", levels=4)
    for k, factor in enumerate([1, 2, 4, 8]):
        level = ccd.open_pyramid(url, k)
        expected = part if factor == 1 else part.cellcoadd.coarsen(factor)
        for name in ("image", "variance", "mask", "count"):
            if name in expected:
                np.testing.assert_array_equal(level[name].values, expected[name].values, err_msg=f"{name} {k}")


def test_factors_that_are_not_powers_of_two_are_exact(tract: xr.Dataset, tmp_path: Path) -> None:
    """Levels 1, 3, 6: each reduced from full resolution (no level-by-level cascade), equal to coarsen."""
    part = tract.isel(y=slice(11, 190), x=slice(4, 170))
    url = ccd.write_pyramid(part, tmp_path / "p.zarr", levels=[1, 3, 6])
    for k, factor in enumerate([1, 3, 6]):
        level = ccd.open_pyramid(url, k)
        assert level.cellcoadd.factor == factor
        expected = part if factor == 1 else part.cellcoadd.coarsen(factor)
        for name in ("image", "variance", "mask", "count"):
            if name in expected:
                np.testing.assert_array_equal(level[name].values, expected[name].values, err_msg=f"{name} {k}")


def test_bands_end_on_tile_edges_so_each_tile_is_read_once(
    tract: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellcoadd_dask import pyramid_bands
    from cellcoadd_dask.fetch import fetch_stats

    rows, columns = tract.sizes["y"] // 5, tract.sizes["x"] // 3
    cuts = pyramid_bands.bands(tract, 4, target=rows)
    cell_edges = set(tract["y"].values[1:][np.diff(tract["cell_i"].values) != 0].tolist())
    assert len(cuts) >= 3 and all(a in cell_edges and a % 4 == 0 for a, _ in cuts[1:])
    cuts = pyramid_bands.bands(tract, 4, target=columns, axis="x")
    cell_edges = set(tract["x"].values[1:][np.diff(tract["cell_j"].values) != 0].tolist())
    assert len(cuts) >= 2 and all(a in cell_edges and a % 4 == 0 for a, _ in cuts[1:])
    monkeypatch.setattr(pyramid_bands, "BAND_ROWS", rows)
    monkeypatch.setattr(pyramid_bands, "BAND_COLUMNS", columns)
    with fetch_stats() as once:  # first, so that the tile tables a first read fetches are not counted below
        tract[["image", "variance", "mask"]].compute()
    with fetch_stats() as banded:
        ccd.write_pyramid(tract, tmp_path / "p.zarr", levels=3)
    assert banded.nbytes == once.nbytes


def test_opening_reads_one_object_and_an_overview_only_its_level(tract: xr.Dataset, tmp_path: Path) -> None:
    path = tmp_path / "p.zarr"
    ccd.write_pyramid(tract, path, levels=3)
    with ccd.fetch_stats() as opening:
        level = ccd.open_pyramid(path, pixels=1)  # the coarsest level serves a 1-pixel figure
    assert opening.requests == 1
    assert level.cellcoadd.factor == 4
    with ccd.fetch_stats() as reading:
        level["image"].values  # noqa: B018
    assert {url.split("p.zarr/", 1)[1].split("/")[0] for url, _, _ in reading.ranges} == {"2"}
    assert reading.nbytes <= _stored_bytes(path / "2")
    chosen = ccd.open_pyramid(path, pixels=tract.sizes["y"] // 2)  # a figure half the tract's size
    assert chosen.cellcoadd.factor == 2


def test_default_levels_end_at_about_a_thousand_pixels() -> None:
    from cellcoadd_dask.pyramid import default_factors

    assert default_factors((120, 120)) == [1]
    assert default_factors((1800, 1800)) == [1, 2]
    assert default_factors((30000, 30000)) == [1, 2, 4, 8, 16, 32]


def test_the_accessor_works_on_a_level(tract: xr.Dataset, tmp_path: Path) -> None:
    import astropy.units as u

    url = ccd.write_pyramid(tract, tmp_path / "p.zarr", levels=3)
    level = ccd.open_pyramid(url, 2)
    centre = tract.cellcoadd.pixel_to_sky(y=float(level["y"][5]), x=float(level["x"][7]))
    sky = level.cellcoadd.wcs.pixel_to_world(7, 5)
    assert sky.separation(centre).to_value(u.arcsec) < 1e-6
    assert level.cellcoadd.mask_plane("NO_DATA").dtype == bool


def test_on_s3_a_rewrite_is_atomic_and_reads_back(corpus: Path, s3_server: Any) -> None:
    ds = ccd.open_tract(sorted(str(p) for p in (corpus / "tract").glob("*.fits")))
    url = f"s3://{s3_server.bucket}/pyramids-{os.getpid()}/p.zarr"
    options = s3_server.storage_options
    ccd.write_pyramid(ds, url, levels=2, storage_options=options)
    ccd.write_pyramid(ds, url, levels=3, storage_options=options)  # replaces the first (one version left)
    prefix = f"{s3_server.bucket}/pyramids-{os.getpid()}/p.zarr/"
    objects = [p.removeprefix(prefix) for p in s3_server.filesystem().find(prefix)]
    assert {p.split("/", 1)[0] for p in objects} - {"zarr.json"} == {objects[0].split("/", 1)[0]}  # one version
    with ccd.fetch_stats() as stats:
        level = ccd.open_pyramid(url, 2, storage_options=options)
    assert stats.requests == 1
    np.testing.assert_array_equal(level["image"].values, ds.cellcoadd.coarsen(4)["image"].values)


@pytest.mark.parametrize(("levels", "message"), [(0, "at least 1"), ([2, 4], "start at 1"), ([1, 4, 2], "increase")])
def test_bad_levels_are_refused(tract: xr.Dataset, tmp_path: Path, levels: Any, message: str) -> None:
    with pytest.raises(ccd.ValidationError, match=message):
        ccd.write_pyramid(tract, tmp_path / "p.zarr", levels=levels)


def test_a_coarsened_dataset_is_refused(tract: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ccd.ValidationError, match="full-resolution"):
        ccd.write_pyramid(tract.cellcoadd.coarsen(2), tmp_path / "p.zarr")


def test_not_a_pyramid(tmp_path: Path) -> None:
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3).attrs["x"] = 1
    with pytest.raises(ccd.ArchiveFormatError, match="not a cellcoadd pyramid"):
        ccd.open_pyramid(tmp_path / "other.zarr")


def test_the_command_line_writes_a_pyramid(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cellcoadd_dask.cli import main

    files = sorted(str(p) for p in (corpus / "demo_tract").glob("*.fits"))
    out = tmp_path / "p.zarr"
    assert main(["pyramid", *files, "-o", str(out), "--levels", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pyramid"] == str(out) and report["shape"] == [1800, 1800]
    assert ccd.open_pyramid(out).cellcoadd.factor == 2


def test_writes_to_s3_leave_no_network_session_open(corpus: Path, s3_server: Any) -> None:
    """Zarr writes on object stores (pyramids and archives) close the session they open on zarr's loop."""
    import gc
    import sys
    import warnings

    import s3fs

    from cellcoadd_dask.archives.zarr.writer import write_zarr

    ds = ccd.open_tract(sorted(str(p) for p in (corpus / "tract").glob("*.fits")))
    coadd = ccd.open_coadd(sorted((corpus / "tract").glob("*.fits"))[0])
    base = f"s3://{s3_server.bucket}/sessions-{os.getpid()}"
    ccd.write_pyramid(ds, f"{base}/p.zarr", levels=2, storage_options=s3_server.storage_options)
    write_zarr(coadd, f"{base}/c.zarr", storage_options=s3_server.storage_options)
    leaked: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: leaked.append(repr(unraisable.exc_value))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            s3fs.S3FileSystem.clear_instance_cache()
            gc.collect()
    finally:
        sys.unraisablehook = previous
    assert leaked == []
