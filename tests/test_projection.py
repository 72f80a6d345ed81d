"""SkyProjection against lsst-images' own projection and the expected values of the reference files."""

from __future__ import annotations

import copy
import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from paths import REFERENCE_FITS

from cellcoadd_dask.errors import ArchiveFormatError, CellCoaddError
from cellcoadd_dask.geom import Box
from cellcoadd_dask.projection import FitsWcsError, SkyProjection

FITS_FILES = list(REFERENCE_FITS)
JSON_FILES = ["cell_coadd_min_as_shipped.json", "synthetic_3x3_cutout.json"]
ALL_FILES = FITS_FILES + JSON_FILES


def read_tree(path: Path) -> dict[str, Any]:
    """The JSON tree of a reference file, read with astropy (FITS) or json (JSON archive)."""
    if path.suffix == ".json":
        with path.open() as stream:
            return json.load(stream)
    with fits.open(path) as hdus:
        return json.loads(bytes(hdus["JSON"].data["JSON"][0]).decode())


def oracle_projection(path: Path) -> Any:
    """lsst-images' SkyProjection of a reference file."""
    from lsst.images.serialization import read_archive

    return read_archive(str(path)).sky_projection


def image_bbox(path: Path) -> Box:
    from lsst.images.serialization import read_archive

    bbox = read_archive(str(path)).bbox
    return Box.factory[bbox.y.start : bbox.y.stop, bbox.x.start : bbox.x.stop]


@pytest.fixture(scope="module", params=ALL_FILES)
def case(request: pytest.FixtureRequest, reference_dir: Path) -> tuple[str, Path, SkyProjection]:
    path = reference_dir / request.param
    return request.param, path, SkyProjection.from_json(read_tree(path)["sky_projection"], url=str(path))


def test_sky_coordinates_equal_expected_values(case: Any, expected_values: dict[str, Any]) -> None:
    name, _, projection = case
    if name not in expected_values:
        name = "min_default.fits"  # the shipped JSON is the same coadd
    for point in expected_values[name]["pixel_to_sky"]:
        sky = projection.pixel_to_sky(x=point["x"], y=point["y"])
        assert abs((sky.ra.deg - point["ra_deg"] + 180) % 360 - 180) < 1e-9
        assert abs(sky.dec.deg - point["dec_deg"]) < 1e-9


def test_sky_coordinates_equal_lsst_images_on_a_grid(case: Any) -> None:
    _, path, projection = case
    bbox = image_bbox(path)
    y, x = np.meshgrid(np.linspace(bbox.y.start - 3.5, bbox.y.stop + 2.25, 9),
                       np.linspace(bbox.x.start - 1.25, bbox.x.stop + 4.5, 7), indexing="ij")
    ours = projection.pixel_to_sky(x=x, y=y)
    theirs = oracle_projection(path).pixel_to_sky(x=x, y=y)
    assert ours.shape == x.shape
    assert np.max(np.abs((ours.ra.deg - theirs.ra.deg + 180) % 360 - 180)) < 1e-9
    assert np.max(np.abs(ours.dec.deg - theirs.dec.deg)) < 1e-9


def test_sky_to_pixel_inverts_pixel_to_sky(case: Any) -> None:
    _, path, projection = case
    bbox = image_bbox(path)
    x = np.array([bbox.x.start, bbox.x.stop - 1, bbox.x.start + 0.3, bbox.x.stop + 10.7])
    y = np.array([bbox.y.start, bbox.y.stop - 1, bbox.y.stop - 0.6, bbox.y.start - 5.2])
    back = projection.sky_to_pixel(projection.pixel_to_sky(x=x, y=y))
    assert np.max(np.abs(back.x - x)) < 1e-8
    assert np.max(np.abs(back.y - y)) < 1e-8
    scalar = projection.sky_to_pixel(projection.pixel_to_sky(x=float(x[0]), y=float(y[0])))
    assert isinstance(scalar.x, float) and abs(scalar.x - x[0]) < 1e-8 and abs(scalar.y - y[0]) < 1e-8


def test_sky_to_pixel_equals_lsst_images(case: Any) -> None:
    _, path, projection = case
    bbox = image_bbox(path)
    sky = projection.pixel_to_sky(x=[bbox.x.start + 0.5, bbox.x.stop], y=[bbox.y.stop - 2.0, bbox.y.start])
    ours = projection.sky_to_pixel(sky)
    theirs = oracle_projection(path).sky_to_pixel(sky)
    np.testing.assert_allclose(ours.x, theirs.x, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.y, theirs.y, rtol=0, atol=1e-8)


def test_sky_to_pixel_accepts_other_frames(case: Any) -> None:
    _, path, projection = case
    bbox = image_bbox(path)
    icrs = projection.pixel_to_sky(x=bbox.x.start + 1.0, y=bbox.y.start + 2.0)
    back = projection.sky_to_pixel(icrs.galactic)
    assert abs(back.x - (bbox.x.start + 1.0)) < 1e-6 and abs(back.y - (bbox.y.start + 2.0)) < 1e-6


def test_frame_identity_matches_lsst_images(case: Any) -> None:
    _, path, projection = case
    from lsst.images.serialization import read_archive

    coadd = read_archive(str(path))
    assert projection.skymap == coadd.skymap
    assert projection.tract == coadd.tract
    tract_bbox = coadd.sky_projection.pixel_frame.bbox
    assert projection.tract_bbox == Box.factory[tract_bbox.y.start : tract_bbox.y.stop,
                                                tract_bbox.x.start : tract_bbox.x.stop]


def _sub_boxes(bbox: Box) -> list[Box]:
    half = Box.from_shape((max(1, bbox.shape.y // 2), max(1, bbox.shape.x // 3)),
                          (bbox.y.start + bbox.shape.y // 4, bbox.x.start + 1))
    return [bbox, half]


def test_astropy_wcs_of_a_sub_box_agrees_with_ast(case: Any) -> None:
    _, path, projection = case
    for box in _sub_boxes(image_bbox(path)):
        wcs = projection.astropy_wcs(box)
        ly, lx = np.meshgrid(np.linspace(-2, box.shape.y + 1, 6), np.linspace(-1, box.shape.x + 2, 5),
                             indexing="ij")
        sky = projection.pixel_to_sky(x=lx + box.x.start, y=ly + box.y.start)
        px, py = wcs.world_to_pixel_values(sky.ra.deg, sky.dec.deg)
        assert np.max(np.hypot(px - lx, py - ly)) < 1e-4


def test_fits_wcs_agrees_with_lsst_images_header(case: Any) -> None:
    from astropy.wcs import WCS

    _, path, projection = case
    box = image_bbox(path)
    ours = WCS(projection.fits_wcs(box))
    theirs = oracle_projection(path).as_fits_wcs(_lsst_box(box))
    lx, ly = np.array([0.0, box.shape.x - 1.0]), np.array([box.shape.y - 1.0, 0.0])
    ra1, dec1 = ours.pixel_to_world_values(lx, ly)
    px, py = theirs.world_to_pixel_values(ra1, dec1)
    assert np.max(np.hypot(px - lx, py - ly)) < 1e-4
    assert "NAXIS1" not in projection.fits_wcs(box)


def _lsst_box(box: Box) -> Any:
    from lsst.images import Box as LsstBox

    return LsstBox.factory[box.y.start : box.y.stop, box.x.start : box.x.stop]


def test_pickle_round_trip_before_and_after_use(case: Any) -> None:
    _, path, projection = case
    bbox = image_bbox(path)
    fresh = pickle.loads(pickle.dumps(projection))
    expected = projection.pixel_to_sky(x=bbox.x.start, y=bbox.y.start)
    again = pickle.loads(pickle.dumps(fresh))
    for copy_ in (fresh, again):
        got = copy_.pixel_to_sky(x=bbox.x.start, y=bbox.y.start)
        assert got.ra.deg == expected.ra.deg and got.dec.deg == expected.dec.deg
        assert copy_ == projection
    assert pickle.loads(pickle.dumps(projection)).to_json() == projection.to_json()


def test_to_json_returns_a_copy_of_the_subtree(reference_dir: Path) -> None:
    tree = read_tree(reference_dir / "synthetic_3x3.fits")["sky_projection"]
    projection = SkyProjection.from_json(tree)
    out = projection.to_json()
    assert out == tree
    out["pixel_to_sky"]["frames"][0]["tract"] = -1
    assert projection.to_json() == tree


def test_concurrent_evaluation_from_threads(reference_dir: Path) -> None:
    projection = SkyProjection.from_json(read_tree(reference_dir / "synthetic_3x3.fits")["sky_projection"])
    fresh = pickle.loads(pickle.dumps(projection))  # parses lazily, under contention
    x = np.arange(1650.0, 2100.0, 3.0)
    expected = projection.pixel_to_sky(x=x, y=x).ra.deg
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: fresh.pixel_to_sky(x=x, y=x).ra.deg, range(32)))
    for result in results:
        np.testing.assert_array_equal(result, expected)


@pytest.fixture
def min_tree(reference_dir: Path) -> dict[str, Any]:
    return read_tree(reference_dir / "min_default.fits")["sky_projection"]


def test_a_pixel_frame_other_than_tract_is_refused(min_tree: dict[str, Any]) -> None:
    tree = copy.deepcopy(min_tree)
    tree["pixel_to_sky"]["frames"][0] = {"instrument": "LSSTCam", "visit": 1, "detector": 2,
                                         "bbox": tree["pixel_to_sky"]["frames"][0]["bbox"],
                                         "frame_type": "DETECTOR"}
    with pytest.raises(ArchiveFormatError, match=r"frames\[0\].*TRACT") as info:
        SkyProjection.from_json(tree, url="file.fits")
    assert info.value.url == "file.fits"


def test_unparsable_ast_text_is_refused(min_tree: dict[str, Any]) -> None:
    tree = copy.deepcopy(min_tree)
    tree["pixel_to_sky"]["mappings"][0]["ast"] = " Begin FrameSet\n  Nframe = banana\n"
    with pytest.raises(ArchiveFormatError, match=r"mappings\[0\]\.ast"):
        SkyProjection.from_json(tree)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t["pixel_to_sky"].pop("mappings"), "mappings"),
        (lambda t: t["pixel_to_sky"]["frames"].__setitem__(1, "GALACTIC"), r"frames\[1\]"),
        (lambda t: t["pixel_to_sky"]["frames"][0].__setitem__("tract", "9813"), "tract"),
        (lambda t: t["pixel_to_sky"]["frames"][0]["bbox"]["x"].__setitem__("stop", -5), "bbox"),
        (lambda t: t["pixel_to_sky"].__setitem__("bounds", [None]), "bounds"),
        (lambda t: t["pixel_to_sky"]["mappings"].__setitem__(0, {"column": {}, "row": 1}), r"mappings\[0\]"),
        (lambda t: t.pop("pixel_to_sky"), "pixel_to_sky"),
    ],
)
def test_malformed_trees_name_the_field(min_tree: dict[str, Any], edit: Any, field: str) -> None:
    tree = copy.deepcopy(min_tree)
    edit(tree)
    with pytest.raises(ArchiveFormatError, match=field):
        SkyProjection.from_json(tree)


def _distorted_ast_text() -> str:
    from starlink import Ast

    class Sink:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def astsink(self, line: str) -> None:
            self.lines.append(line)

    frames = Ast.FrameSet(Ast.Frame(2, "Domain=PIXEL"))
    wobble = Ast.MathMap(2, 2, ["r = x + 3 * sin(y / 50)", "d = y + 2 * cos(x / 40)"],
                         ["x = r - 3 * sin(d / 50)", "y = d"])
    tan = Ast.WcsMap(2, Ast.TAN, 1, 2)
    tan.Invert = True
    frames.addframe(Ast.BASE, Ast.CmpMap(Ast.CmpMap(wobble, Ast.ZoomMap(2, 1e-4), True), tan, True),
                    Ast.SkyFrame(""))
    sink = Sink()
    Ast.Channel(None, sink).write(frames)
    return "\n".join(sink.lines) + "\n"


def test_a_projection_fits_cannot_express_raises_fits_wcs_error(min_tree: dict[str, Any]) -> None:
    tree = copy.deepcopy(min_tree)
    tree["pixel_to_sky"]["mappings"][0]["ast"] = _distorted_ast_text()
    projection = SkyProjection.from_json(tree)
    assert np.isfinite(projection.pixel_to_sky(x=40.0, y=50.0).dec.deg)
    with pytest.raises(FitsWcsError) as info:
        projection.astropy_wcs(Box.factory[48:60, 36:48])
    assert isinstance(info.value, CellCoaddError) and isinstance(info.value, ValueError)


def test_the_fits_approximation_is_used_when_the_projection_is_not_fits(min_tree: dict[str, Any]) -> None:
    tree = copy.deepcopy(min_tree)
    tree["fits_approximation"] = copy.deepcopy(tree["pixel_to_sky"])
    tree["pixel_to_sky"]["mappings"][0]["ast"] = _distorted_ast_text()
    projection = SkyProjection.from_json(tree)
    box = Box.factory[48:60, 36:48]
    exact = SkyProjection.from_json(min_tree)
    wcs = projection.astropy_wcs(box)
    sky = exact.pixel_to_sky(x=[36.0, 47.0], y=[48.0, 59.0])
    px, py = wcs.world_to_pixel_values(sky.ra.deg, sky.dec.deg)
    assert np.max(np.hypot(px - [0.0, 11.0], py - [0.0, 11.0])) < 1e-4
    assert projection.has_fits_approximation


def test_pixels_outside_the_projection_domain_give_nan(min_tree: dict[str, Any]) -> None:
    projection = SkyProjection.from_json(min_tree)
    sky = projection.pixel_to_sky(x=[np.nan, 36.0], y=[0.0, 48.0])
    assert np.isnan(sky.ra.deg[0]) and np.isfinite(sky.ra.deg[1])
    far = SkyCoord(ra=180 * u.deg, dec=0 * u.deg)  # behind the tangent plane
    assert np.isnan(projection.sky_to_pixel(far).x)
