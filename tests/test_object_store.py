"""Reading from a real S3-compatible object store (SeaweedFS on loopback) through fsspec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from oracle import hdu_bytes, lsst_read
from servers import S3Server

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import fetch_stats


@pytest.fixture(scope="module")
def s3_coadd(s3_server: S3Server, reference_dir: Path) -> tuple[str, dict]:
    return s3_server.upload(reference_dir / "synthetic_3x3.fits"), s3_server.storage_options


def test_opening_from_s3_reads_metadata_only(s3_coadd: tuple[str, dict], reference_dir: Path) -> None:
    url, options = s3_coadd
    with fetch_stats() as stats:
        coadd = ccd.open_coadd(url, storage_options=options)
    primary = fits.getheader(reference_dir / "synthetic_3x3.fits", 0)
    tail = (primary["JSONADDR"], primary["INDXADDR"] + primary["INDXSIZE"])
    assert sorted((start, stop) for _, start, stop in stats.ranges) == [(0, 2880), tail]
    assert coadd.bbox == ccd.Box.factory[1200:1650, 1650:2100]
    assert coadd.source_url == url


def test_one_cell_from_s3_fetches_its_tile(s3_coadd: tuple[str, dict], reference_dir: Path) -> None:
    url, options = s3_coadd
    coadd = ccd.open_coadd(url, storage_options=options, bbox=ccd.Box.factory[1500:1650, 1800:1950])
    tile = hdu_bytes(reference_dir / "synthetic_3x3.fits", "IMAGE").tiles[7]  # cell (3, 2)
    with fetch_stats() as stats:
        pixels = coadd.image.array.compute()
    assert tile in [(start, stop) for _, start, stop in stats.ranges]
    assert stats.nbytes <= (tile[1] - tile[0]) + 16 * 1024
    expected = lsst_read(str(reference_dir / "synthetic_3x3.fits")).image.array[300:450, 150:300]
    assert np.array_equal(pixels, expected)


def test_wrong_credentials_give_a_typed_error(s3_coadd: tuple[str, dict]) -> None:
    url, options = s3_coadd
    bad = {**options, "secret": "not-the-secret", "skip_instance_cache": True}
    with pytest.raises(ccd.CellCoaddError):
        ccd.open_coadd(url, storage_options=bad)
