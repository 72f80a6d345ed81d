"""JSON archives: our reader against ``lsst.images.serialization.read_archive`` and expected_values.json.

Three archives written by lsst-images (the reference cutout, the as-shipped DP2 fixture with
its old array spelling, and this session's variant ``cutout.json``) are read with
``ccd.open_coadd`` and compared with lsst-images' read of the same file: pixels bit for
bit, mask schema, PSF kernels, cell bounds, patch, identity, provenance tables, aperture
corrections and sky coordinates; then ``bbox=`` reads, a gzip-compressed copy, and broken
files, which must raise ``ccd.ArchiveFormatError`` naming the file.

Coordinates are absolute (tract) pixel indices, ``(y, x)`` order, half-open boxes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from oracle import (
    assert_aperture_corrections_match,
    assert_identical,
    assert_mask_schema_match,
    assert_patch_match,
    assert_planes_match,
    assert_provenance_match,
    assert_psf_match,
    assert_sky_match,
    bounds_of,
    cells_of,
    check_expected_values,
    grid_of,
    intervals,
    lsst_read,
)

import cellcoadd_dask as ccd

REFERENCE_JSON = ("synthetic_3x3_cutout.json", "cell_coadd_min_as_shipped.json")
CASES = [("reference", name) for name in REFERENCE_JSON] + [("variant", "cutout.json")]
# The as-shipped fixture holds the same coadd as min_default.fits (see the reference README).
EXPECTED_KEY = {
    "synthetic_3x3_cutout.json": "synthetic_3x3_cutout.json",
    "cell_coadd_min_as_shipped.json": "min_default.fits",
}


@pytest.fixture(params=CASES, ids=[f"{kind}:{name}" for kind, name in CASES])
def json_path(request: pytest.FixtureRequest, reference_dir: Path) -> Path:
    kind, name = request.param
    if kind == "reference":
        return reference_dir / name
    return request.getfixturevalue("lsst_variants")[name]


def test_every_reference_json_file_is_covered(reference_dir: Path) -> None:
    bookkeeping = {"expected_values.json", "MANIFEST.json"}
    found = sorted(p.name for p in reference_dir.glob("*.json") if p.name not in bookkeeping)
    assert found == sorted(REFERENCE_JSON)


# ----------------------------------------------------------------------------- against lsst-images


def test_planes_are_bit_identical_to_lsst_images(json_path: Path) -> None:
    assert_planes_match(ccd.open_coadd(json_path), lsst_read(str(json_path)), json_path.name)


def test_mask_schema_and_psf_equal_lsst_images(json_path: Path) -> None:
    ref = lsst_read(str(json_path))
    ours = ccd.open_coadd(json_path)
    assert_mask_schema_match(ours.mask.schema, ref.mask.schema, json_path.name)
    assert_psf_match(ours, ref, json_path.name)


def test_geometry_and_identity_equal_lsst_images(json_path: Path) -> None:
    ref = lsst_read(str(json_path))
    ours = ccd.open_coadd(json_path)
    assert intervals(ours.bbox) == intervals(ref.bbox)
    assert grid_of(ours.grid) == grid_of(ref.grid)
    assert bounds_of(ours.bounds) == bounds_of(ref.bounds)
    assert cells_of(ours.bounds.missing) == cells_of(ref.bounds.missing)
    assert ours.unit == ref.unit
    assert ours.variance.unit == ref.variance.unit
    assert list(ours.mask_fractions) == list(ref.mask_fractions)
    assert len(ours.noise_realizations) == len(ref.noise_realizations)
    assert (ours.band, ours.skymap, ours.tract) == (ref.band, ref.skymap, ref.tract)
    assert dict(ours.metadata) == dict(ref.metadata)


def test_patch_equals_lsst_images(json_path: Path) -> None:
    assert_patch_match(ccd.open_coadd(json_path).patch, lsst_read(str(json_path)).patch)


def test_provenance_tables_equal_lsst_images(json_path: Path) -> None:
    assert_provenance_match(ccd.open_coadd(json_path), lsst_read(str(json_path)), json_path.name)


def test_aperture_corrections_equal_lsst_images(json_path: Path) -> None:
    ref = lsst_read(str(json_path))
    assert ref.aperture_corrections, "the archives all carry aperture corrections"
    assert_aperture_corrections_match(ccd.open_coadd(json_path), ref)


def test_sky_coordinates_equal_lsst_images(json_path: Path) -> None:
    ref = lsst_read(str(json_path))
    (y0, y1), (x0, x1) = intervals(ref.bbox)
    y = np.array([y0, y0, y1 - 1, y1 - 1, (y0 + y1) / 2, y0 - 3.75])
    x = np.array([x0, x1 - 1, x0, x1 - 1, (x0 + x1) / 2, x1 + 2.5])
    assert_sky_match(ccd.open_coadd(json_path), ref, y=y, x=x)


@pytest.mark.parametrize("name", REFERENCE_JSON)
def test_reference_archives_reproduce_expected_values(
    reference_dir: Path, expected_values: dict[str, Any], name: str
) -> None:
    check_expected_values(ccd.open_coadd(reference_dir / name), expected_values[EXPECTED_KEY[name]], name)


# ----------------------------------------------------------------------------- bbox reads


def _boxes(ref: Any) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Boxes inside the archive: whole, one pixel, around a cell corner, one row."""
    (y0, y1), (x0, x1) = intervals(ref.bbox)
    (gy, _), (gx, _) = intervals(ref.grid.bbox)
    cy, cx = int(ref.grid.cell_shape.y), int(ref.grid.cell_shape.x)
    corner_y = next(y for y in range(gy, y1, cy) if y > y0)
    corner_x = next(x for x in range(gx, x1, cx) if x > x0)
    h = max(1, min(cy, cx, y1 - y0, x1 - x0) // 4)
    return {
        "full": ((y0, y1), (x0, x1)),
        "one_pixel": ((y1 - 2, y1 - 1), (x0 + 1, x0 + 2)),
        "cell_corner": ((max(y0, corner_y - h), min(y1, corner_y + h)), (max(x0, corner_x - h), min(x1, corner_x + h))),
        "one_row": ((corner_y, corner_y + 1), (x0, x1)),
    }


@pytest.mark.parametrize("kind", ["full", "one_pixel", "cell_corner", "one_row"])
def test_bbox_reads_equal_lsst_images_slices(json_path: Path, kind: str) -> None:
    from lsst.images import Box

    ref = lsst_read(str(json_path))
    (y0, y1), (x0, x1) = _boxes(ref)[kind]
    expected = ref[Box.factory[y0:y1, x0:x1]]
    for ours in (
        ccd.open_coadd(json_path, bbox=ccd.Box.factory[y0:y1, x0:x1]),
        ccd.open_coadd(json_path).absolute[y0:y1, x0:x1],
    ):
        assert intervals(ours.bbox) == ((y0, y1), (x0, x1))
        assert bounds_of(ours.bounds) == bounds_of(expected.bounds)
        assert_planes_match(ours, expected, f"{json_path.name} [{kind}]")
        assert_psf_match(ours, expected, f"{json_path.name} [{kind}]")


def test_bbox_outside_the_archive_raises_bounds_error(json_path: Path) -> None:
    (y0, y1), (x0, x1) = intervals(lsst_read(str(json_path)).bbox)
    with pytest.raises(ccd.BoundsError):
        ccd.open_coadd(json_path, bbox=ccd.Box.factory[y0 - 1 : y1, x0:x1])


@pytest.mark.parametrize("chunks", ["cell", (2, 2)], ids=["cell", "2x2"])
def test_chunks_fall_on_cell_edges(json_path: Path, chunks: Any) -> None:
    ref = lsst_read(str(json_path))
    ours = ccd.open_coadd(json_path, chunks=chunks)
    (gy, _), (gx, _) = intervals(ref.grid.bbox)
    cy, cx = int(ref.grid.cell_shape.y), int(ref.grid.cell_shape.x)
    (y0, _), (x0, _) = intervals(ref.bbox)
    for array in (ours.image.array, ours.variance.array, ours.mask.array):
        y_edges = np.cumsum(array.chunks[0])[:-1] + y0
        x_edges = np.cumsum(array.chunks[1])[:-1] + x0
        assert np.all((y_edges - gy) % cy == 0) and np.all((x_edges - gx) % cx == 0)
    assert_identical(ours.image.array.compute(), ref.image.array, f"{json_path.name} chunks={chunks!r}")


# ----------------------------------------------------------------------------- gzip


def test_gzip_compressed_copy_reads_the_same(json_path: Path, tmp_path: Path) -> None:
    ref = lsst_read(str(json_path))
    packed = gzip.compress(json_path.read_bytes())
    gz = tmp_path / f"{json_path.stem}.json.gz"
    gz.write_bytes(packed)
    assert_planes_match(ccd.CellCoadd.read_json(gz), ref, gz.name)
    # A compressed archive keeping the plain name is recognised by its gzip magic bytes.
    named_json = tmp_path / json_path.name
    named_json.write_bytes(packed)
    opened = ccd.open_coadd(named_json)
    assert_planes_match(opened, ref, named_json.name)
    assert_psf_match(opened, ref, named_json.name)
    (y0, y1), (x0, x1) = intervals(ref.bbox)
    box = ccd.Box.factory[y0 + 1 : y1, x0 : x1 - 1]
    part = ccd.CellCoadd.read_json(gz, bbox=box)
    assert_identical(part.image.array.compute(), ref.image.array[1:, :-1], "image of a bbox= read")


# ----------------------------------------------------------------------------- broken archives


def _broken_archives(reference_dir: Path) -> dict[str, bytes]:
    raw = (reference_dir / "synthetic_3x3_cutout.json").read_bytes()
    tree = json.loads(raw)
    other_type = dict(tree, schema_url="https://images.lsst.io/schemas/image-1.0.0")
    no_mask = {k: v for k, v in tree.items() if k != "mask"}
    bad_dtype = json.loads(raw)
    bad_dtype["image"]["data"]["value"]["data"][0][0] = "not a number"
    too_new = dict(tree, min_read_version=99)
    return {
        "not_json": b"{this is not json",
        "empty": b"",
        "truncated": raw[: len(raw) // 2],
        "top_level_list": b"[1, 2, 3]",
        "another_type": json.dumps(other_type).encode(),
        "image_archive": json.dumps(tree["image"]).encode(),
        "missing_mask": json.dumps(no_mask).encode(),
        "string_pixel": json.dumps(bad_dtype).encode(),
        "too_new": json.dumps(too_new).encode(),
        "corrupt_gzip": b"\x1f\x8b\x08\x00" + bytes(range(64)),
        "truncated_gzip": gzip.compress(raw)[:4096],
    }


BROKEN = (
    "not_json",
    "empty",
    "truncated",
    "top_level_list",
    "another_type",
    "image_archive",
    "missing_mask",
    "string_pixel",
    "too_new",
    "corrupt_gzip",
    "truncated_gzip",
)


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_archive_raises_archive_format_error_naming_the_file(
    reference_dir: Path, tmp_path: Path, kind: str
) -> None:
    data = _broken_archives(reference_dir)[kind]
    path = tmp_path / f"broken_{kind}.json"
    path.write_bytes(data)
    for read in (ccd.open_coadd, ccd.CellCoadd.read_json):
        with pytest.raises(ccd.ArchiveFormatError) as info:
            coadd = read(path)
            # Anything not caught at open must be caught before values come back.
            coadd.image.array.compute()
            coadd.mask.array.compute()
        assert str(path) in str(info.value), f"{kind}: {info.value}"
        assert info.value.url == str(path)


def test_every_broken_kind_is_tested(reference_dir: Path) -> None:
    assert sorted(_broken_archives(reference_dir)) == sorted(BROKEN)


@pytest.mark.parametrize("name", ["synthetic_3x3_offset_cutout.fits", "min_default.fits", "many_planes.fits"])
@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_written_json_is_read_by_lsst_images(reference_dir: Path, tmp_path: Path, name: str, suffix: str) -> None:
    """FITS -> our JSON writer -> lsst-images' reader and ours: equal to lsst-images' read of the FITS."""
    from oracle import assert_planes_match, assert_provenance_match, assert_psf_match, lsst_planes

    original = ccd.open_coadd(reference_dir / name)
    path = tmp_path / f"out{suffix}"
    assert ccd.open_coadd(reference_dir / name).write(path) == str(path)
    ref = lsst_read(str(reference_dir / name))
    ours = ccd.open_coadd(path)
    assert_planes_match(ours, ref, f"{name} -> {suffix}")
    assert_psf_match(ours, ref, name)
    assert_provenance_match(ours, ref, name)
    if suffix == ".json":
        theirs = lsst_read(str(path))
        got, expected = lsst_planes(theirs), lsst_planes(ref)
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")
    assert original.bbox == ours.bbox


def test_json_refuses_what_it_cannot_hold(reference_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cellcoadd_dask.archives.json import writer

    monkeypatch.setattr(writer, "MAX_JSON_PIXELS", 100)
    with pytest.raises(ccd.ValidationError, match="at most 100 "):
        ccd.open_coadd(reference_dir / "min_default.fits").write(tmp_path / "big.json")
    assert not list(tmp_path.iterdir())
