"""CellCoadd.read_legacy: afw MaskedImage FITS files, checked against lsst.images and read lazily."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import cellcoadd_dask as ccd
from cellcoadd_dask.errors import ArchiveFormatError, MissingDependencyError, ValidationError
from cellcoadd_dask.fetch import fetch_stats
from cellcoadd_dask.legacy import LegacyMaskedImage

PLANES = {"BAD": 0, "SAT": 1, "INTRP": 2, "DETECTED": 5, "NO_DATA": 8}
SHAPE = (300, 250)
X0, Y0 = 1000, 2000
TILE = 50


WCS_CARDS = {
    "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 41.5, "CRPIX2": -12.25, "CRVAL1": 150.1,
    "CRVAL2": 2.2, "CD1_1": -5.5e-5, "CD1_2": 1.0e-6, "CD2_1": 1.2e-6, "CD2_2": 5.5e-5, "RADESYS": "ICRS",
    "CUNIT1": "deg", "CUNIT2": "deg",
}


def write_legacy(path: Path, *, compressed: bool, planes: dict[str, int] = PLANES, dither: bool = False,
                 lossless: bool = False, wcs: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """A file in afw's MaskedImage layout (primary + IMAGE, MASK, VARIANCE)."""
    rng = np.random.default_rng(7)
    arrays = {
        "IMAGE": rng.normal(10.0, 3.0, SHAPE).astype(np.float32),
        "MASK": np.zeros(SHAPE, np.int32),
        "VARIANCE": rng.uniform(1.0, 2.0, SHAPE).astype(np.float32),
    }
    for bit in planes.values():
        arrays["MASK"] |= (rng.random(SHAPE) < 0.1).astype(np.int32) << bit
    primary = fits.PrimaryHDU()
    hdus: list[Any] = [primary]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's HIERARCH notices
        primary.header["HIERARCH LSST IMAGES KEY 1"] = "answer"
        primary.header["HIERARCH LSST IMAGES VALUE 1"] = 42
        primary.header["HIERARCH LSST IMAGES KEY 2"] = "Name"
        primary.header["HIERARCH LSST IMAGES VALUE 2"] = "a value"
        primary.header["OBSERVER"] = "someone"
        for name, data in arrays.items():
            if not compressed:
                hdu = fits.ImageHDU(data, name=name)
            elif name == "MASK" or lossless:
                hdu = fits.CompImageHDU(data, name=name, compression_type="GZIP_2", tile_shape=(TILE, TILE),
                                        quantize_level=0.0 if lossless and name != "MASK" else 16.0)
            else:
                hdu = fits.CompImageHDU(data, name=name, compression_type="RICE_1", tile_shape=(TILE, TILE),
                                        quantize_level=16.0,
                                        quantize_method=1 if dither else -1)
            hdu.header["INHERIT"] = True
            hdu.header["EXTTYPE"] = name
            hdu.header["LTV1"] = -X0
            hdu.header["LTV2"] = -Y0
            if name == "IMAGE":
                hdu.header["BUNIT"] = "nJy"
                for key, value in (wcs or {}).items():
                    hdu.header[key] = value
            elif name == "VARIANCE":
                hdu.header["BUNIT"] = "nJy2"
            else:
                for plane, bit in planes.items():
                    hdu.header[f"HIERARCH MP_{plane}"] = bit
            hdus.append(hdu)
        fits.HDUList(hdus).writeto(path, overwrite=True)
    return arrays


def lsst_plane_map(names: list[str] | None = None) -> dict[str, Any]:
    from lsst.images import MaskPlane

    return {n: MaskPlane(n, f"legacy {n}") for n in (names or list(PLANES))}


@pytest.mark.parametrize("kind", ["plain", "rice-dithered", "rice", "lossless"])
def test_matches_lsst_images(tmp_path: Path, kind: str) -> None:
    from lsst.images import MaskedImage

    path = tmp_path / "legacy.fits"
    write_legacy(path, compressed=kind != "plain", dither=kind == "rice-dithered", lossless=kind == "lossless")
    plane_map = lsst_plane_map()
    ref = MaskedImage.read_legacy(path, plane_map=plane_map)
    ours = ccd.CellCoadd.read_legacy(path, plane_map=plane_map)
    assert isinstance(ours, LegacyMaskedImage)
    assert (ours.bbox.y.start, ours.bbox.x.start, *ours.bbox.shape) == (
        ref.bbox.y.start, ref.bbox.x.start, ref.bbox.y.size, ref.bbox.x.size
    )
    np.testing.assert_array_equal(ours.image.compute(), ref.image.array)
    np.testing.assert_array_equal(ours.variance.compute(), ref.variance.array)
    assert ours.image.unit == ref.image.unit and ours.variance.unit == ref.variance.unit
    assert ours.mask.schema.names == [p.name for p in ref.mask.schema if p is not None]
    assert ours.mask.schema.descriptions() == {p.name: p.description for p in ref.mask.schema if p is not None}
    for plane in plane_map.values():
        np.testing.assert_array_equal(ours.mask.get(plane.name).compute(), ref.mask.get(plane.name))
    assert dict(ours.metadata) == {"answer": 42, "Name": "a value"}
    assert all(ref.metadata[k] == v for k, v in ours.metadata.items())
    assert ours.header["OBSERVER"] == "someone"
    assert ours.quantized == (() if kind in ("plain", "lossless") else ("image", "variance"))


def test_without_plane_map_keeps_legacy_planes(tmp_path: Path) -> None:
    path = tmp_path / "legacy.fits"
    arrays = write_legacy(path, compressed=True)
    mi = ccd.CellCoadd.read_legacy(path)
    assert isinstance(mi, LegacyMaskedImage)
    assert mi.mask.schema.names == list(PLANES)
    assert all(mi.mask.schema.index(n) == b for n, b in PLANES.items())
    assert set(mi.mask.schema.descriptions().values()) == {""}
    for name, bit in PLANES.items():
        np.testing.assert_array_equal(mi.mask.get(name).compute(), (arrays["MASK"] >> bit) & 1 == 1)
    np.testing.assert_array_equal(mi.mask.packed().compute(), arrays["MASK"])
    sub = ccd.Box.from_shape((20, 30), (Y0 + 33, X0 + 77))
    np.testing.assert_array_equal(mi[sub].mask.get("DETECTED").compute(),
                                  (arrays["MASK"][33:53, 77:107] >> 5) & 1 == 1)


def _tile_bytes(path: Path, tile: int) -> int:
    """Stored bytes of one tile, summed over the three planes (from the raw tile tables)."""
    total = 0
    with fits.open(path, disable_image_compression=True) as hdus:
        for hdu in hdus[1:4]:
            total += len(hdu.data["COMPRESSED_DATA"][tile])
    return total


def _header_and_table_spans(path: Path) -> list[tuple[int, int]]:
    """``[header start, tile table end)`` of the three plane HDUs."""
    spans = []
    with fits.open(path, disable_image_compression=True) as hdus:
        for hdu in hdus[1:4]:
            info = hdu.fileinfo()
            spans.append((info["hdrLoc"], info["datLoc"] + hdu.header["NAXIS1"] * hdu.header["NAXIS2"]))
    return spans


def test_lazy_reads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.fits"
    arrays = write_legacy(path, compressed=True)
    size = path.stat().st_size
    with fetch_stats() as opened:
        mi = ccd.CellCoadd.read_legacy(path, plane_map=lsst_plane_map())
        repr(mi), mi.describe()
    assert isinstance(mi, LegacyMaskedImage)
    # The first 64 KiB, then only the headers and tile tables of the mask and variance HDUs.
    assert opened.ranges[0][1:] == (0, 65536) and 65536 < size
    spans = _header_and_table_spans(path)
    assert all(any(a <= start and stop <= b for a, b in spans[1:]) for _, start, stop in opened.ranges[1:])
    assert opened.requests <= 7  # per later HDU: its header (one block, then grown) and its tile table
    box = ccd.Box.from_shape((TILE, TILE), (Y0 + TILE, X0 + 2 * TILE))  # tile row 1, column 2
    with fetch_stats() as read:
        image = mi[box].image.compute()
        mask = mi[box].mask.get("DETECTED").compute()
        variance = mi[box].variance.compute()
    tile = 1 * (SHAPE[1] // TILE) + 2
    assert read.requests == 3
    assert read.nbytes == _tile_bytes(path, tile)
    assert image.shape == variance.shape == (TILE, TILE)
    np.testing.assert_array_equal(mask, (arrays["MASK"][50:100, 100:150] >> 5) & 1 == 1)


def test_components_and_options(tmp_path: Path) -> None:
    from lsst.images import MaskedImage

    path = tmp_path / "legacy.fits"
    write_legacy(path, compressed=True)
    full = ccd.CellCoadd.read_legacy(path, preserve_quantization=True, chunks="cell")
    assert isinstance(full, LegacyMaskedImage)
    assert full.preserve_quantization and full.quantized == ("image", "variance")
    assert full.image.array.chunks[0] == (TILE,) * (SHAPE[0] // TILE)
    image = ccd.CellCoadd.read_legacy(path, component="image")
    assert isinstance(image, ccd.Image)
    np.testing.assert_array_equal(image.compute(), MaskedImage.read_legacy(path, component="image").array)
    variance = ccd.CellCoadd.read_legacy(path, component="variance")
    assert isinstance(variance, ccd.Image)
    np.testing.assert_array_equal(variance.compute(), full.variance.compute())
    mask = ccd.CellCoadd.read_legacy(path, component="mask")
    assert isinstance(mask, ccd.Mask) and mask.schema.names == list(PLANES)
    assert full.projection is None
    assert ccd.CellCoadd.read_legacy(path, fits_wcs_frame="pixels").projection is None  # the file has no WCS
    with pytest.raises(ValidationError, match="component"):
        ccd.CellCoadd.read_legacy(path, component="psf")  # type: ignore[arg-type]


@pytest.mark.parametrize("compressed", [False, True])
def test_fits_wcs_becomes_the_projection_as_in_lsst_images(tmp_path: Path, compressed: bool) -> None:
    from lsst.images import MaskedImage
    from lsst.images._image import DEFAULT_PIXEL_FRAME

    path = tmp_path / "legacy.fits"
    write_legacy(path, compressed=compressed, wcs=WCS_CARDS)
    ref = MaskedImage.read_legacy(path, plane_map=lsst_plane_map(), fits_wcs_frame=DEFAULT_PIXEL_FRAME)
    ours = ccd.CellCoadd.read_legacy(path, fits_wcs_frame=DEFAULT_PIXEL_FRAME)
    assert isinstance(ours, LegacyMaskedImage) and ours.projection is not None
    x = X0 + np.array([0.0, 17.5, SHAPE[1] - 1.0, 3.0])
    y = Y0 + np.array([0.0, 4.25, SHAPE[0] - 1.0, SHAPE[0] / 2])
    expected = ref.sky_projection.pixel_to_sky(x=x, y=y)
    got = ours.projection.pixel_to_sky(x=x, y=y)
    assert np.max(got.separation(expected).to_value("arcsec")) < 1e-6
    back = ours.projection.sky_to_pixel(expected)
    np.testing.assert_allclose(back.x, x, atol=1e-6)
    np.testing.assert_allclose(back.y, y, atol=1e-6)
    # FITS pixel (CRPIX1, CRPIX2) is absolute (X0 + CRPIX1 - 1, Y0 + CRPIX2 - 1): the reference point.
    crval = ours.projection.pixel_to_sky(x=X0 + 40.5, y=Y0 - 13.25)
    assert abs(crval.ra.deg - 150.1) < 1e-9 and abs(crval.dec.deg - 2.2) < 1e-9
    box = ccd.Box.factory[Y0 + 10 : Y0 + 20, X0 + 5 : X0 + 9]
    assert ours[box].projection is ours.projection
    assert ccd.CellCoadd.read_legacy(path).projection is None  # only when asked


def test_malformed_fits_wcs_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "legacy.fits"
    write_legacy(path, compressed=False, wcs={**WCS_CARDS, "CTYPE1": "RA---XYZ"})
    with pytest.raises(ArchiveFormatError, match="WCS") as caught:
        ccd.CellCoadd.read_legacy(path, fits_wcs_frame="pixels")
    assert "IMAGE" in str(caught.value) and path.name in str(caught.value)


def test_plane_map_accepts_package_planes_and_flags_unmapped_pixels(tmp_path: Path) -> None:
    path = tmp_path / "legacy.fits"
    write_legacy(path, compressed=False)
    partial = {"BAD": ccd.MaskPlane("BAD", "bad pixel"), "SAT": ccd.MaskPlane("SATURATED", "saturated")}
    mi = ccd.CellCoadd.read_legacy(path, plane_map=partial)  # opening reads no pixel: no error yet
    assert isinstance(mi, LegacyMaskedImage)
    assert mi.mask.schema.names == ["BAD", "SATURATED"]
    with pytest.raises(ValidationError, match="INTRP"):
        mi.mask.get("BAD").compute()


def test_to_xarray(tmp_path: Path) -> None:
    path = tmp_path / "legacy.fits"
    arrays = write_legacy(path, compressed=True)
    mi = ccd.CellCoadd.read_legacy(path)
    assert isinstance(mi, LegacyMaskedImage)
    ds = mi.to_xarray()
    assert ds["y"].dtype == np.int64 and int(ds["y"][0]) == Y0 and int(ds["x"][0]) == X0
    assert ds["image"].attrs["units"] == "nJy"
    assert ds["mask"].attrs["flag_meanings"].split() == list(PLANES)
    np.testing.assert_array_equal(ds["mask"].values, arrays["MASK"])
    np.testing.assert_array_equal(ds["variance"].values, mi.variance.compute())
    assert ds.attrs["metadata"] == '{"answer": 42, "Name": "a value"}'


def _patch(path: Path, old: str, new: str) -> None:
    """Replace the first card starting with ``old`` by the card ``new`` (padded to 80 bytes)."""
    data = bytearray(path.read_bytes())
    at = data.index(old.encode())
    at -= at % 80
    data[at : at + 80] = new.ljust(80).encode()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "HDU"),
        (lambda p: _patch(p, "LTV1    =", "LTV1    = XYZ"), "bad header card"),
        (lambda p: _patch(p, "HIERARCH MP_SAT", "HIERARCH MP_SAT = 'one'"), "MP_SAT"),
        (lambda p: _patch(p, "HIERARCH MP_SAT", "HIERARCH MP_SAT = 40"), "MP_SAT"),
        (lambda p: _patch(p, "NAXIS1  =", "NAXIS1  =        1000000000000"), "declares"),
        (lambda p: _patch(p, "SIMPLE  =", "SIMPLE  =                    F"), "not a FITS"),
    ],
    ids=["truncated", "bad-card", "mp-not-int", "mp-out-of-range", "huge-size", "not-fits"],
)
def test_hostile_files(tmp_path: Path, mutate: Any, match: str) -> None:
    path = tmp_path / "legacy.fits"
    write_legacy(path, compressed=False)
    mutate(path)
    with pytest.raises(ArchiveFormatError, match=match) as info:
        ccd.CellCoadd.read_legacy(path)
    assert info.value.url is not None and info.value.hdu is not None


def test_hostile_layouts(tmp_path: Path) -> None:
    path = tmp_path / "two.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4), np.float32), name="IMAGE")]).writeto(path)
    with pytest.raises(ArchiveFormatError, match="before this HDU") as info:
        ccd.CellCoadd.read_legacy(path)
    assert info.value.hdu == "2 (MASK)"
    cube = tmp_path / "cube.fits"
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 4, 4), np.float32)),
            fits.ImageHDU(np.zeros((4, 4), np.int32)), fits.ImageHDU(np.zeros((4, 4), np.float32))]
    for hdu in hdus[1:]:
        hdu.header["LTV1"], hdu.header["LTV2"] = 0, 0
    fits.HDUList(hdus).writeto(cube)
    with pytest.raises(ArchiveFormatError, match="3 axes"):
        ccd.CellCoadd.read_legacy(cube)
    hdus[1] = fits.ImageHDU(np.zeros((4, 4), np.float32))
    hdus[2] = fits.ImageHDU(np.zeros((4, 4), np.float32))
    for hdu in hdus[1:]:
        hdu.header["LTV1"], hdu.header["LTV2"] = 0, 0
    fits.HDUList(hdus).writeto(cube, overwrite=True)
    with pytest.raises(ArchiveFormatError, match="not integers"):
        ccd.CellCoadd.read_legacy(cube)


def test_from_and_to_legacy_need_cell_coadds() -> None:
    with pytest.raises(MissingDependencyError, match="lsst"):
        ccd.CellCoadd.from_legacy(object())
    with pytest.raises(MissingDependencyError, match="lsst"):
        ccd.CellCoadd.to_legacy(object())  # type: ignore[arg-type]


def test_over_http(tmp_path: Path, http_server: Any) -> None:
    path = tmp_path / "legacy_http.fits"
    arrays = write_legacy(path, compressed=True)
    url = http_server.publish(path)
    mi = ccd.CellCoadd.read_legacy(url)
    assert isinstance(mi, LegacyMaskedImage)
    box = ccd.Box.from_shape((TILE, TILE), (Y0, X0))
    with fetch_stats() as read:
        np.testing.assert_array_equal(mi[box].mask.packed().compute(), arrays["MASK"][:TILE, :TILE])
    assert read.requests == 1
