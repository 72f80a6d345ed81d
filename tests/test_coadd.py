"""The CellCoadd model: slicing rules, persist, copy and derived properties."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import dask
import numpy as np
import pytest
from lsst.images import Box as LsstBox
from lsst.images.cells import CellCoadd as LsstCellCoadd

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import fetch_stats


@pytest.fixture(scope="module")
def path(reference_dir: Path) -> Path:
    return reference_dir / "synthetic_3x3.fits"


def test_persist_reads_once_and_keeps_values(path: Path) -> None:
    coadd = ccd.open_coadd(path)
    with fetch_stats() as first:
        kept = coadd.persist("image", "mask")
    assert first.requests > 0
    with fetch_stats() as again:
        image = kept.image.array.compute()
        mask = kept.mask.array.compute()
        kept.absolute[1300:1400, 1700:1800].image.array.compute()
    assert again.requests == 0
    oracle = LsstCellCoadd.read(str(path))
    assert np.array_equal(image, oracle.image.array)
    assert np.array_equal(mask, oracle.mask.array)
    with fetch_stats() as lazy:
        kept.variance.array[:10, :10].compute()
    assert lazy.requests > 0
    with pytest.raises(ValueError, match="Unknown planes"):
        coadd.persist("psf")


def test_sub_coadd_matches_lsst_images_and_keeps_absolute_coordinates(path: Path) -> None:
    coadd = ccd.open_coadd(path)
    sub = coadd.absolute[1470:1530, 1920:1980]
    oracle = LsstCellCoadd.read(str(path))[LsstBox.factory[1470:1530, 1920:1980]]
    assert str(sub.bbox) == str(oracle.bbox)
    assert str(sub.bounds.bbox) == str(oracle.bounds.bbox)
    assert np.array_equal(sub.image.array.compute(), oracle.image.array)
    assert sub.local[0:10, -10:].bbox == ccd.Box.factory[1470:1480, 1970:1980]
    assert sub[...] is sub
    nested = sub.absolute[1500:1510, 1950:1960]
    assert np.array_equal(nested.image.array.compute(), oracle.image.array[30:40, 30:40])


def test_slicing_errors_are_typed(path: Path) -> None:
    coadd = ccd.open_coadd(path)
    with pytest.raises(ccd.BoundsError):
        coadd.absolute[1100:1300, 1700:1800]
    with pytest.raises(IndexError):
        coadd[ccd.Box.factory[0:10, 0:10]]
    with pytest.raises(TypeError):
        coadd[0:10, 0:10]  # type: ignore[index]
    with pytest.raises(ccd.BoundsError):
        ccd.open_coadd(path, bbox=ccd.Box.factory[0:10, 0:10])


def test_copy_is_independent_and_lazy(path: Path) -> None:
    coadd = ccd.open_coadd(path)
    with fetch_stats() as stats:
        twin = coadd.copy()
    assert stats.requests == 0
    twin.metadata["NEW"] = 1
    assert "NEW" not in coadd.metadata
    assert twin.image.array.name == coadd.image.array.name


def test_identity_properties(path: Path) -> None:
    coadd = ccd.open_coadd(path)
    assert coadd.unit == u.nJy
    assert coadd.variance.unit == u.nJy**2
    assert coadd.obs_info == {
        "band": "r", "skymap": "synthetic_cells_v1", "tract": 42, "patch": 17, "patch_index": (1, 2)
    }
    assert coadd.yx0 == ccd.YX(1200, 1650)
    many = ccd.open_coadd(path.with_name("many_planes.fits"))
    with pytest.raises(AttributeError):
        many.patch  # noqa: B018
    with pytest.raises(AttributeError):
        many.provenance  # noqa: B018
    assert many.aperture_corrections == {}


def test_bbox_from_sky_circle_covers_the_circle(path: Path) -> None:
    coadd = ccd.open_coadd(path)
    center = coadd.projection.pixel_to_sky(x=1833.0, y=1512.0)
    box = coadd.bbox_from_sky_circle(center, 2.0 * u.arcsec)
    # 0.2 arcsec pixels: a 2 arcsec radius is 10 px around the centre.
    assert box.y.start <= 1502 and box.y.stop >= 1523
    assert box.x.start <= 1823 and box.x.stop >= 1844
    assert box.area < 25 * 25
    far = coadd.projection.pixel_to_sky(x=100.0, y=100.0)
    with pytest.raises(ccd.BoundsError):
        coadd.bbox_from_sky_circle(far, 1.0 * u.arcsec)


def test_xarray_round_trip_rereads_tables_from_the_source(path: Path) -> None:
    coadd = ccd.open_coadd(path)
    assert coadd.source_url == str(path)
    part = coadd.to_xarray().isel(y=slice(0, 100), x=slice(0, 200)).cellcoadd.to_coadd()
    assert part.source_url == str(path)
    expected = coadd.absolute[1200:1300, 1650:1850]
    assert len(part.provenance.contributions) == len(expected.provenance.contributions)
    assert sorted(part.aperture_corrections) == sorted(coadd.aperture_corrections)
    assert part.backgrounds.names == coadd.backgrounds.names


def _tile_ranges(path: Path, extname: str) -> list[tuple[int, int]]:
    from oracle import hdu_bytes

    return [t for t in hdu_bytes(path, extname).tiles if t is not None]


def test_cutouts_read_only_their_own_tiles_even_computed_together(path: Path) -> None:
    coadd = ccd.open_coadd(path)  # one chunk holds the whole plane
    coadd.image.array[:1, :1].compute()  # load the header and tile table first
    tiles = _tile_ranges(path, "IMAGE")
    first = coadd.absolute[1200:1210, 1650:1660]  # cell (1, 1): tile 0
    last = coadd.absolute[1600:1610, 2000:2010]  # cell (3, 3): tile 8
    with fetch_stats() as stats:
        a, b = dask.compute(first.image.array, last.image.array)
    assert sorted((s, e) for _, s, e in stats.ranges) == [tiles[0], tiles[8]]
    oracle = LsstCellCoadd.read(str(path))
    assert np.array_equal(a, oracle.image.array[:10, :10])
    assert np.array_equal(b, oracle.image.array[400:410, 350:360])


def test_a_slice_of_a_cutout_reads_only_the_tiles_it_touches(path: Path) -> None:
    coadd = ccd.open_coadd(path, bbox=ccd.Box.factory[1300:1500, 1700:1900])  # 4 cells
    coadd.image.array[:1, :1].compute()
    coadd.mask.array[:1, :1].compute()
    tiles = _tile_ranges(path, "IMAGE")
    with fetch_stats() as stats:
        pixels = coadd.image.array[150:160, 150:160].compute()  # inside cell (2, 2): tile 4
    assert [(s, e) for _, s, e in stats.ranges] == [tiles[4]]
    oracle = LsstCellCoadd.read(str(path))
    assert np.array_equal(pixels, oracle.image.array[250:260, 200:210])
    mask_tiles = _tile_ranges(path, "MASK")
    with fetch_stats() as stats:
        detected = coadd.mask.get("DETECTED")[150:160, 150:160].compute()
    assert [(s, e) for _, s, e in stats.ranges] == [mask_tiles[4]]
    assert np.array_equal(detected, oracle.mask.get("DETECTED")[250:260, 200:210])


def test_quantity_is_lazy_and_carries_the_unit(path: Path) -> None:
    coadd = ccd.open_coadd(path)
    oracle = LsstCellCoadd.read(str(path))
    with fetch_stats() as stats:
        lazy = coadd.image.quantity
        variance = coadd.variance.quantity
    assert stats.requests == 0
    values = lazy[:150, :150].compute()
    assert isinstance(values, u.Quantity) and values.unit == oracle.image.unit
    np.testing.assert_array_equal(values.value, oracle.image.quantity[:150, :150].value)
    assert lazy.sum().compute().unit == oracle.image.unit
    assert variance[:2, :2].compute().unit == oracle.variance.quantity.unit == u.nJy**2
    assert str(coadd.variance.unit) == str(oracle.variance.unit)
