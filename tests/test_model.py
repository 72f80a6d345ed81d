"""The serialization model: version rules, unknown fields, YX spellings, located errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import cellcoadd_dask as ccd
from cellcoadd_dask.model import parse_cell_coadd, yx_from_json


@pytest.fixture(scope="module")
def tree(reference_dir: Path) -> dict:
    with (reference_dir / "synthetic_3x3_cutout.json").open() as stream:
        return json.load(stream)


def test_newer_minor_versions_and_unknown_fields_are_read_and_kept(tree: dict, tmp_path: Path) -> None:
    edited = copy.deepcopy(tree)
    edited["schema_version"] = "1.7.2"
    edited["image"]["schema_version"] = "1.1.0"
    edited["future_field"] = {"kind": "added later", "values": [1, 2]}
    edited["image"]["future_note"] = "ignored by this reader"
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(edited))
    coadd = ccd.open_coadd(path)
    assert coadd.extra == {"future_field": {"kind": "added later", "values": [1, 2]}}
    assert coadd.absolute[1470:1480, 1920:1930].extra == coadd.extra
    original = tmp_path / "original.json"
    original.write_text(json.dumps(tree))
    reference = ccd.open_coadd(original)
    assert reference.extra == {}
    assert (coadd.image.array.compute() == reference.image.array.compute()).all()


@pytest.mark.parametrize("node", ["", "image", "mask", "psf", "sky_projection", "provenance"])
def test_a_node_needing_a_newer_reader_is_refused_by_name(tree: dict, node: str) -> None:
    edited = copy.deepcopy(tree)
    target = edited if not node else edited[node]
    target["min_read_version"] = 2
    with pytest.raises(ccd.ArchiveFormatError, match="reader major >= 2") as info:
        parse_cell_coadd(edited, url="newer.json")
    assert "newer.json" in str(info.value)
    assert node in str(info.value)


def test_missing_schema_version_is_refused(tree: dict) -> None:
    edited = copy.deepcopy(tree)
    del edited["variance"]["schema_version"]
    with pytest.raises(ccd.ArchiveFormatError, match=r"variance\.schema_version"):
        parse_cell_coadd(edited)


def test_both_yx_spellings_are_accepted() -> None:
    assert yx_from_json({"y": 6, "x": 7}) == ccd.YX(6, 7)
    assert yx_from_json([6, 7]) == ccd.YX(6, 7)
    with pytest.raises(ccd.ArchiveFormatError):
        yx_from_json({"y": 6})
    with pytest.raises(ccd.ArchiveFormatError):
        yx_from_json([6, "7"])


def test_yx0_in_object_form_is_refused_as_lsst_images_does(tree: dict) -> None:
    edited = copy.deepcopy(tree)
    edited["image"]["yx0"] = {"y": 1470, "x": 1920}
    with pytest.raises(ccd.ArchiveFormatError, match=r"image\.yx0"):
        parse_cell_coadd(edited)


def test_plane_bboxes_must_agree(tree: dict) -> None:
    edited = copy.deepcopy(tree)
    edited["variance"]["yx0"] = [1471, 1920]
    with pytest.raises(ccd.ArchiveFormatError, match="variance"):
        parse_cell_coadd(edited)
