"""CoaddProvenance and BackgroundMap against lsst-images' reads of the reference files."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from oracle import tree_and_columns

from cellcoadd_dask.backgrounds import BackgroundMap
from cellcoadd_dask.cells import CellIJ
from cellcoadd_dask.errors import ArchiveFormatError
from cellcoadd_dask.provenance import CoaddProvenance


def oracle(path: Path) -> Any:
    from lsst.images.serialization import read_archive

    return read_archive(str(path))


def assert_tables_equal(ours: Any, theirs: Any) -> None:
    assert ours.colnames == theirs.colnames
    assert len(ours) == len(theirs)
    for name in ours.colnames:
        a, b = ours[name], theirs[name]
        assert a.dtype == b.dtype, name
        assert a.unit == b.unit, name
        assert a.description == b.description, name
        if name == "polygon":
            for pa, pb in zip(a, b, strict=True):
                np.testing.assert_array_equal(pa.x_vertices, pb.x_vertices)
                np.testing.assert_array_equal(pa.y_vertices, pb.y_vertices)
                assert pa.n_vertices == pb.n_vertices
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", ["synthetic_3x3.fits", "min_default.fits",
                                  "synthetic_3x3_offset_cutout.fits", "synthetic_3x3_cutout.json",
                                  "cell_coadd_min_as_shipped.json"])
def test_tables_equal_lsst_images(reference_dir: Path, name: str) -> None:
    path = reference_dir / name
    tree, get_column = tree_and_columns(path)
    ours = CoaddProvenance.from_json(tree["provenance"], get_column, url=str(path))
    theirs = oracle(path).provenance
    assert_tables_equal(ours.inputs, theirs.inputs)
    assert_tables_equal(ours.contributions, theirs.contributions)


def test_counts_equal_expected_values(reference_dir: Path, expected_values: dict[str, Any]) -> None:
    for name in ("synthetic_3x3.fits", "min_default.fits"):
        tree, get_column = tree_and_columns(reference_dir / name)
        ours = CoaddProvenance.from_json(tree["provenance"], get_column)
        assert len(ours.inputs) == expected_values[name]["provenance"]["n_inputs"]
        assert len(ours.contributions) == expected_values[name]["provenance"]["n_contributions"]


@pytest.fixture(scope="module")
def synthetic(reference_dir: Path) -> tuple[CoaddProvenance, Any]:
    tree, get_column = tree_and_columns(reference_dir / "synthetic_3x3.fits")
    return CoaddProvenance.from_json(tree["provenance"], get_column), oracle(
        reference_dir / "synthetic_3x3.fits").provenance


def _keys(table: Any) -> list[tuple[str, int, int]]:
    return [(str(r["instrument"]), int(r["visit"]), int(r["detector"])) for r in table]


def test_subset_keeps_the_cells_and_deduplicates_inputs(synthetic: tuple[CoaddProvenance, Any]) -> None:
    from lsst.images._cell_grid import CellIJ as LsstCellIJ

    ours, theirs = synthetic
    cells = [CellIJ(2, 2), CellIJ(3, 2), CellIJ(3, 3)]
    sub = ours.subset(cells)
    ref = theirs.subset([LsstCellIJ(i=c.i, j=c.j) for c in cells])
    assert sub is not None
    key = ["cell_i", "cell_j", "visit", "detector"]
    assert sorted(map(tuple, sub.contributions[key].as_array().tolist())) == sorted(
        map(tuple, ref.contributions[key].as_array().tolist()))
    assert sub.contributions.colnames == ours.contributions.colnames
    # lsst-images repeats an input once per contribution; here each input appears once
    assert len(ref.inputs) == len(sub.contributions) > len(sub.inputs)
    assert sorted(_keys(sub.inputs)) == sorted(set(_keys(ref.inputs)))
    assert sub.inputs.colnames == ours.inputs.colnames
    row = list(_keys(ours.inputs)).index(_keys(sub.inputs)[0])
    np.testing.assert_array_equal(sub.inputs["polygon"][0].x_vertices, ours.inputs["polygon"][row].x_vertices)


def test_subset_of_cells_without_contributions_is_none(synthetic: tuple[CoaddProvenance, Any]) -> None:
    ours, _ = synthetic
    assert ours.subset([CellIJ(2, 3)]) is None  # the missing cell
    assert ours.subset([]) is None
    assert ours[CellIJ(1, 1)] is not None


def test_subset_drops_rows_duplicated_in_the_file(reference_dir: Path) -> None:
    tree, get_column = tree_and_columns(reference_dir / "synthetic_3x3_offset_cutout.fits")
    ours = CoaddProvenance.from_json(tree["provenance"], get_column)
    assert len(ours.inputs) == 24  # as stored: one row per contribution
    rows = zip(ours.contributions["cell_i"], ours.contributions["cell_j"], strict=True)
    cells = {CellIJ(int(i), int(j)) for i, j in rows}
    sub = ours.subset(cells)
    assert sub is not None and len(sub.contributions) == 24
    assert len(sub.inputs) == len(set(_keys(ours.inputs))) == 4


def test_storage_tables_reproduce_the_stored_columns(reference_dir: Path) -> None:
    path = reference_dir / "synthetic_3x3.fits"
    tree, get_column = tree_and_columns(path)
    fields, inputs, contributions = CoaddProvenance.from_json(tree["provenance"], get_column).storage_tables()
    assert fields == {"instrument": tree["provenance"]["instrument"],
                      "physical_filter": tree["provenance"]["physical_filter"]}
    with fits.open(path) as hdus:
        for table, extname in ((inputs, "PROVENANCE/INPUTS"), (contributions, "PROVENANCE/CONTRIBUTIONS")):
            stored = hdus[extname].data
            assert table.colnames == list(stored.names)
            for name in stored.names:
                want = np.asarray(stored[name])
                assert table[name].dtype == want.dtype.newbyteorder("=")
                np.testing.assert_array_equal(np.asarray(table[name]), want)


def _with_codes(tree: dict[str, Any]) -> dict[str, Any]:
    """The cutout's inline provenance rewritten with {name: code} string columns."""
    tree = copy.deepcopy(tree)
    n_inputs = len(tree["inputs"]["columns"][0]["data"]["data"])
    n_contributions = len(tree["contributions"]["columns"][0]["data"]["data"])
    tree["instrument"] = {"HSC": 0, "LSSTCam": 1}
    tree["physical_filter"] = {"r_57": 0, "HSC-R": 1}
    def codes(n: int) -> list[int]:
        return [n_ % 2 for n_ in range(n)]
    tree["inputs"]["columns"].insert(0, {"data": {"data": codes(n_inputs), "datatype": "uint8"},
                                         "name": "instrument"})
    tree["inputs"]["columns"].insert(3, {"data": {"data": codes(n_inputs)[::-1], "datatype": "uint8"},
                                         "name": "physical_filter"})
    tree["contributions"]["columns"].insert(2, {"data": {"data": codes(n_contributions), "datatype": "uint8"},
                                                "name": "instrument"})
    return tree


def test_mapping_form_decodes_columns_in_place(reference_dir: Path) -> None:
    with (reference_dir / "synthetic_3x3_cutout.json").open() as stream:
        tree = _with_codes(json.load(stream)["provenance"])
    ours = CoaddProvenance.from_json(tree, lambda s: np.zeros(0))
    assert ours.inputs.colnames == [
        "instrument", "visit", "detector", "physical_filter", "day_obs", "polygon"
    ]
    assert ours.contributions.colnames[2] == "instrument"
    n = len(ours.inputs)
    assert list(ours.inputs["instrument"]) == [("HSC", "LSSTCam")[k % 2] for k in range(n)]
    assert list(ours.inputs["physical_filter"]) == [("r_57", "HSC-R")[k % 2] for k in range(n)][::-1]
    assert ours.inputs["instrument"].dtype == object
    assert ours.inputs["instrument"].description == "Name of the instrument."
    fields, inputs, _ = ours.storage_tables()
    assert fields["instrument"] == {"HSC": 0, "LSSTCam": 1}
    assert inputs["instrument"].dtype == np.uint8


def test_unknown_codes_are_refused(reference_dir: Path) -> None:
    with (reference_dir / "synthetic_3x3_cutout.json").open() as stream:
        tree = _with_codes(json.load(stream)["provenance"])
    tree["instrument"] = {"HSC": 0}
    with pytest.raises(ArchiveFormatError, match="code 1"):
        CoaddProvenance.from_json(tree, lambda s: np.zeros(0))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop("instrument"), "instrument"),
        (lambda t: t["inputs"]["columns"].pop(), "polygon"),
        (lambda t: t["inputs"]["columns"][0]["data"].__setitem__("datatype", "complex128"), "datatype"),
        (lambda t: t["inputs"]["columns"][0]["data"].__setitem__("data", ["a"]), "uint64"),
        (lambda t: t["contributions"]["columns"][0]["data"]["data"].pop(), "length"),
        (lambda t: t.__setitem__("physical_filter", 5), "physical_filter"),
        (lambda t: t["contributions"]["columns"][-2].__setitem__("unit", "furlong/fortnight^^"), "unit"),
        # No columns at all would read as 0 rows; lsst-images refuses such a table, and so do we.
        (lambda t: t["contributions"].__setitem__("columns", []), r"lacks the columns \['cell_i'"),
        (lambda t: t["inputs"]["columns"].pop(2), r"lacks the columns \['day_obs'\]"),
    ],
)
def test_malformed_provenance_is_refused(reference_dir: Path, edit: Any, message: str) -> None:
    with (reference_dir / "synthetic_3x3_cutout.json").open() as stream:
        tree = json.load(stream)["provenance"]
    edit(tree)
    with pytest.raises(ArchiveFormatError, match=message):
        CoaddProvenance.from_json(tree, lambda s: np.zeros(0))


def test_a_column_whose_dtype_differs_from_the_tree_is_refused(reference_dir: Path) -> None:
    tree, get_column = tree_and_columns(reference_dir / "min_default.fits")
    with pytest.raises(ArchiveFormatError, match="the tree says uint64"):
        CoaddProvenance.from_json(tree["provenance"], lambda s: get_column(s).astype(np.int64), url="x.fits")


def test_provenance_pickles_and_keeps_its_tree(synthetic: tuple[CoaddProvenance, Any],
                                               reference_dir: Path) -> None:
    ours, _ = synthetic
    again = pickle.loads(pickle.dumps(ours))
    assert_tables_equal(again.inputs, ours.inputs)
    assert_tables_equal(again.contributions, ours.contributions)
    tree, _ = tree_and_columns(reference_dir / "synthetic_3x3.fits")
    assert again.to_json() == tree["provenance"]
    assert ours.subset([CellIJ(1, 1)]).to_json() is None


# -- backgrounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["synthetic_3x3.fits", "synthetic_3x3_cutout.json", "min_default.fits"])
def test_background_map_matches_lsst_images(reference_dir: Path, name: str) -> None:
    tree, _ = tree_and_columns(reference_dir / name)
    ours = BackgroundMap.from_json(tree.get("backgrounds"), url=name)
    theirs = oracle(reference_dir / name).backgrounds
    assert ours.names == list(theirs)
    assert ours.subtracted == theirs.subtracted
    assert ours.to_json() == tree["backgrounds"]
    assert pickle.loads(pickle.dumps(ours)) == ours


def test_background_fields_are_kept_verbatim(reference_dir: Path) -> None:
    tree, _ = tree_and_columns(reference_dir / "synthetic_3x3.fits")
    ours = BackgroundMap.from_json(tree["backgrounds"])
    assert ours.data_sources() == {"sky_spline": "fits:BACKGROUND/FIELDS/SKY_SPLINE/DATA"}
    assert ours.field_type("sky_spline") == "SPLINE" and ours.field_type("sky_poly") == "CHEBYSHEV"
    assert ours.descriptions == tree["backgrounds"]["descriptions"]
    assert ours.field_json("sky_poly") == tree["backgrounds"]["fields"]["sky_poly"]
    assert "sky_poly" in ours and len(ours) == 2


def test_absent_backgrounds_give_an_empty_map() -> None:
    empty = BackgroundMap.from_json(None)
    assert empty.names == [] and empty.subtracted is None and empty.data_sources() == {}
    assert empty.to_json()["fields"] == {}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.__setitem__("subtracted", "nope"), "subtracted"),
        (lambda t: t["fields"].__setitem__("bad", {"bounds": {}}), "field_type"),
        (lambda t: t.__setitem__("fields", []), "objects"),
        (lambda t: t["descriptions"].__setitem__("sky_poly", 3), "strings"),
    ],
)
def test_malformed_background_maps_are_refused(reference_dir: Path, edit: Any, message: str) -> None:
    with (reference_dir / "synthetic_3x3_cutout.json").open() as stream:
        tree = json.load(stream)["backgrounds"]
    edit(tree)
    with pytest.raises(ArchiveFormatError, match=message):
        BackgroundMap.from_json(tree)
