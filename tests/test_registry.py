"""One registry of archive formats serves open_coadd, the xarray engine and the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import xarray as xr

import cellcoadd_dask as ccd
from cellcoadd_dask.archives.registry import FORMATS, format_for_destination, format_named, format_of, suffix_format
from cellcoadd_dask.xarray_backend import CellCoaddBackendEntrypoint


@pytest.fixture(scope="module")
def zarr_store(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    path = tmp_path_factory.mktemp("registry") / "p.zarr"
    ccd.open_coadd(corpus / "synthetic_3x3.fits").write_zarr(path)
    return path


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("a/b.fits", "fits"),
        ("s3://bucket/B.FITS?X-Amz-Signature=abc", "fits"),
        ("https://h/p.fits.fz#frag", "fits"),
        ("p.json", "json"),
        ("p.json.gz", "json"),
        ("memory://p.zarr/", "zarr"),
    ],
)
def test_suffixes_select_the_format(url: str, name: str) -> None:
    fmt = suffix_format(url)
    assert fmt is not None and fmt.name == name


def test_every_format_is_named_once_and_readable() -> None:
    names = [fmt.name for fmt in FORMATS]
    assert sorted(names) == ["fits", "json", "zarr"]
    assert all(format_named(name).name == name for name in names)
    with pytest.raises(ccd.ValidationError, match="unknown archive format"):
        format_named("hdf5")


def test_without_a_suffix_the_first_bytes_decide(corpus: Path, tmp_path: Path) -> None:
    fits_copy = tmp_path / "patch-without-suffix"
    shutil.copyfile(corpus / "synthetic_3x3.fits", fits_copy)
    json_copy = tmp_path / "cutout-without-suffix"
    shutil.copyfile(corpus / "synthetic_3x3_cutout.json", json_copy)
    assert format_of(str(fits_copy)).name == "fits"
    assert format_of(str(json_copy)).name == "json"
    assert ccd.open_coadd(fits_copy).bbox == ccd.open_coadd(corpus / "synthetic_3x3.fits").bbox
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\0" * 100)
    with pytest.raises(ccd.ArchiveFormatError, match="unrecognised first bytes"):
        ccd.open_coadd(garbage)


def test_a_zarr_store_without_suffix_is_found_and_a_plain_directory_is_refused(
    zarr_store: Path, tmp_path: Path
) -> None:
    renamed = tmp_path / "store"
    shutil.copytree(zarr_store, renamed)
    assert format_of(str(renamed)).name == "zarr"
    assert ccd.open_coadd(renamed).bbox == ccd.open_coadd(zarr_store).bbox
    with pytest.raises(ccd.ArchiveFormatError, match="not a Zarr store"):
        ccd.open_coadd(tmp_path / ".." / tmp_path.name)


def test_destinations_must_be_writable_formats() -> None:
    assert format_for_destination("out.fits").name == "fits"
    assert format_for_destination("s3://b/out.zarr").name == "zarr"
    assert format_for_destination("out.json.gz").name == "json"
    with pytest.raises(ccd.ValidationError, match=r"destinations are FITS \(\.fits\), JSON \(\.json\) or Zarr"):
        format_for_destination("out.txt")


def test_the_xarray_engine_claims_and_opens_zarr_stores(zarr_store: Path, corpus: Path, tmp_path: Path) -> None:
    engine = CellCoaddBackendEntrypoint()
    assert engine.guess_can_open(zarr_store)
    assert engine.guess_can_open(corpus / "synthetic_3x3.fits")
    assert engine.guess_can_open("s3://bucket/p.zarr")
    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    (plain / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    assert not engine.guess_can_open(plain)
    ds = xr.open_dataset(zarr_store, engine="cellcoadd", chunks={})
    ref = ccd.open_coadd(corpus / "synthetic_3x3.fits").to_xarray()
    xr.testing.assert_identical(ds.image.load(), ref.image.load())
