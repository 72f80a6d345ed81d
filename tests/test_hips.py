"""HiPS export (``ccd.write_hips`` / ``cellcoadd-dask hips``) read back with ``reproject.hips``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

import cellcoadd_dask as ccd


@pytest.fixture(scope="module")
def demo(corpus: Path) -> xr.Dataset:
    return ccd.open_tract(sorted(str(p) for p in (corpus / "demo_tract").glob("*.fits")))


@pytest.fixture(scope="module")
def survey(demo: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ccd.write_hips(demo, tmp_path_factory.mktemp("hips") / "demo", pixels=600)


def test_a_tile_read_back_covers_a_known_source(demo: xr.Dataset, survey: Path) -> None:
    """The brightest source of the tract is the brightest pixel of the HiPS tile holding its position."""
    from reproject.hips import hips_as_dask_array

    shown = demo.cellcoadd.coarsen(3).cellcoadd.valid()  # what pixels=600 reads
    image = shown["image"].values
    i, j = np.unravel_index(np.nanargmax(image), image.shape)
    source = demo.cellcoadd.pixel_to_sky(y=float(shown["y"][i]), x=float(shown["x"][j]))
    array, wcs = hips_as_dask_array(str(survey), level=8)  # 3.2 arcsec pixels, 256-pixel tiles
    row, column = (int(v) for v in wcs.world_to_array_index(source))
    size = array.chunksize[0]
    tile = np.asarray(array.blocks[row // size, column // size].compute())
    peak = np.unravel_index(np.nanargmax(tile), tile.shape)
    assert abs(peak[0] - row % size) <= 2 and abs(peak[1] - column % size) <= 2, (peak, row % size, column % size)
    assert np.nanmax(tile) > 10 * abs(np.nanmedian(tile)) + 10


def test_properties_and_moc(demo: xr.Dataset, survey: Path) -> None:
    text = (survey / "properties").read_text()
    assert "obs_title" in text and "demo_cells_v1 tract 101 i image" in text
    order = int(next(line.split("=")[1] for line in text.splitlines() if line.startswith("hips_order ")))
    with fits.open(survey / "Moc.fits") as hdus:
        moc = hdus[1]
        assert moc.header["ORDERING"] == "NUNIQ" and moc.header["MOCORDER"] == order
        uniq = np.asarray(moc.data["UNIQ"])
    tiles = {int(p.stem[len("Npix"):]) for p in (survey / f"Norder{order}").rglob("Npix*.fits")}
    assert set((uniq - 4 * 4**order).tolist()) == tiles and tiles


def test_an_existing_directory_is_refused(demo: xr.Dataset, survey: Path) -> None:
    with pytest.raises(ccd.ValidationError, match="exists already"):
        ccd.write_hips(demo, survey, pixels=100)


def test_the_command_line_writes_a_survey(corpus: Path, tmp_path: Path) -> None:
    from cellcoadd_dask.cli import main

    files = sorted(str(p) for p in (corpus / "tract").glob("*.fits"))
    out = tmp_path / "survey"
    assert main(["hips", *files, "-o", str(out)]) == 0
    assert (out / "properties").exists() and (out / "Moc.fits").exists()
