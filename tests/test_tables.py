"""FITS binary tables and the aperture-correction table, against astropy and lsst-images."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from oracle import tree_and_columns
from paths import REFERENCE_DIR, REFERENCE_FITS

from cellcoadd_dask.aperture import ApertureCorrections
from cellcoadd_dask.archives.fits.cards import parse_header
from cellcoadd_dask.archives.fits.tables import (
    parse_columns,
    read_bintable,
    select_column,
    split_column_source,
)
from cellcoadd_dask.cells import CellIJ
from cellcoadd_dask.errors import ArchiveFormatError, BoundsError
from cellcoadd_dask.model import bounds_from_json

FITS_FILES = list(REFERENCE_FITS)


def table_hdus(path: Path) -> list[tuple[str, int, int]]:
    """(EXTNAME, header offset, data offset) of every plain binary table of a file."""
    with fits.open(path, disable_image_compression=True) as hdus:
        return [
            (hdu.name, hdu.fileinfo()["hdrLoc"], hdu.fileinfo()["datLoc"])
            for hdu in hdus[1:]
            if isinstance(hdu, fits.BinTableHDU) and not hdu.header.get("ZIMAGE")
        ]


CASES = [(name, hdu) for name in FITS_FILES for hdu, _, _ in table_hdus(REFERENCE_DIR / name)]


def native(array: np.ndarray) -> np.ndarray:
    return array.astype(array.dtype.newbyteorder("="))


@pytest.mark.parametrize(("name", "extname"), CASES)
def test_every_reference_table_equals_astropy(reference_dir: Path, name: str, extname: str) -> None:
    path = reference_dir / name
    raw = path.read_bytes()
    (hdr_loc, dat_loc), = [(h, d) for n, h, d in table_hdus(path) if n == extname]
    ours = read_bintable(parse_header(raw, hdr_loc), raw[dat_loc:], url=str(path), hdu=extname)
    with fits.open(path, disable_image_compression=True) as hdus:
        theirs = hdus[extname].data
        units = hdus[extname].columns.units
        assert list(ours) == list(theirs.names)
        for column, unit in zip(parse_columns(hdus[extname].header), units, strict=True):
            assert column.unit == (unit or None)
        for column in theirs.names:
            got = ours[column]
            if extname == "JSON":
                # descriptor (count, offset) of each variable-length row
                assert got.shape == (len(theirs), 2)
                assert list(got[:, 0]) == [len(row) for row in theirs[column]]
                continue
            expected = np.asarray(theirs[column])
            assert got.dtype.isnative
            if expected.dtype.kind == "U":
                assert got.dtype.kind == "U"
            else:
                assert got.dtype == expected.dtype.newbyteorder("=")
            assert got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)


def _table_bytes(hdu: fits.BinTableHDU) -> tuple[Any, bytes]:
    stream = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(stream)
    raw = stream.getvalue()
    header = parse_header(raw, 2880)
    return header, raw[2880 + header.size :]


def test_types_scalings_and_shapes_written_by_astropy() -> None:
    rng = np.random.default_rng(5)
    columns = [
        fits.Column("i8", "B", array=np.array([-128, 0, 127, -1], np.int8)),
        fits.Column("u16", "I", array=np.array([0, 1, 65535, 40000], np.uint16)),
        fits.Column("u32", "J", array=np.array([0, 1, 2**32 - 1, 3_000_000_000], np.uint32)),
        fits.Column("u64", "K", array=np.array([0, 1, 2**64 - 1, 2**63 + 5], np.uint64)),
        fits.Column("i16", "I", array=np.array([-5, 0, 5, 32767], np.int16)),
        fits.Column("f32", "E", array=rng.normal(size=4).astype(np.float32)),
        fits.Column("vec", "3D", array=rng.normal(size=(4, 3))),
        fits.Column("mat", "6J", dim="(3,2)", array=np.arange(24, dtype=np.int32).reshape(4, 2, 3)),
        fits.Column("flag", "2L", array=np.array([[1, 0], [0, 1], [1, 1], [0, 0]], bool)),
        fits.Column("text", "5A", array=np.array(["ab", "", "abcde", "x y"])),
    ]
    header, data = _table_bytes(fits.BinTableHDU.from_columns(columns))
    ours = read_bintable(header, data)
    expected = fits.BinTableHDU.from_columns(columns).data
    for column in expected.names:
        want = np.asarray(expected[column])
        if want.dtype.kind != "U":
            assert ours[column].dtype == want.dtype.newbyteorder("="), column
        assert ours[column].shape == want.shape, column
        np.testing.assert_array_equal(ours[column], want)


def test_tscal_and_other_tzero_give_float64() -> None:
    raw = np.array([-3, 0, 7, 32767], np.int16)
    header, data = _table_bytes(fits.BinTableHDU.from_columns([fits.Column("s", "I", array=raw)]))
    scaled = dict(header) | {"TSCAL1": 0.5, "TZERO1": 10}
    values = read_bintable(scaled, data)["s"]
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, raw * 0.5 + 10)


def test_zero_rows() -> None:
    header, data = _table_bytes(fits.BinTableHDU.from_columns([fits.Column("a", "D", array=np.zeros(0))]))
    table = read_bintable(header, data)
    assert table["a"].shape == (0,) and table["a"].dtype == np.float64


@pytest.fixture
def small_table() -> tuple[dict[str, Any], bytes]:
    hdu = fits.BinTableHDU.from_columns([fits.Column("a", "K", array=np.arange(3)),
                                         fits.Column("b", "2D", array=np.ones((3, 2)))])
    header, data = _table_bytes(hdu)
    return dict(header), data


def test_truncated_data_is_reported_with_its_byte_range(small_table: tuple[dict[str, Any], bytes]) -> None:
    header, data = small_table
    with pytest.raises(ArchiveFormatError, match="truncated") as info:
        read_bintable(header, data[:40], url="f.fits", hdu="T", data_offset=5760)
    assert info.value.byte_range == (5760, 5760 + 72)
    assert info.value.url == "f.fits" and info.value.hdu == "T"


@pytest.mark.parametrize(
    ("card", "value", "message"),
    [
        ("NAXIS1", 25, "NAXIS1"),
        ("TFORM2", "2X", "unsupported"),
        ("TFORM2", "2C", "unsupported"),
        ("TFORM1", "K(3)x", "TFORM1"),
        ("TFORM1", "2PB(3)", "repeat 1"),
        ("TFORM2", None, "TFORM2"),
        ("TDIM2", "(3)", "TDIM2"),
        ("TDIM2", "3", "TDIM2"),
        ("XTENSION", "IMAGE", "binary table"),
        ("NAXIS2", -1, "truncated"),
        ("NAXIS2", "many", "NAXIS2"),
        ("TTYPE2", "a", "duplicate"),
        ("TZERO1", "lots", "TZERO1"),
    ],
)
def test_inconsistent_headers_are_refused(small_table: tuple[dict[str, Any], bytes], card: str,
                                          value: Any, message: str) -> None:
    header, data = small_table
    header = dict(header)
    if value is None:
        del header[card]
    else:
        header[card] = value
    with pytest.raises(ArchiveFormatError, match=message):
        read_bintable(header, data, hdu="T")


def test_column_sources_are_split_and_selected(small_table: tuple[dict[str, Any], bytes]) -> None:
    assert split_column_source("fits:PROVENANCE/INPUTS[3]") == ("fits:PROVENANCE/INPUTS", 3)
    assert split_column_source("fits:MASK,2[12]") == ("fits:MASK,2", 12)
    for bad in ("fits:PROVENANCE/INPUTS", "fits:X[0]", "fits:X[a]", "[1]"):
        with pytest.raises(ArchiveFormatError):
            split_column_source(bad)
    table = read_bintable(*small_table)
    np.testing.assert_array_equal(select_column(table, 1), np.arange(3))
    with pytest.raises(ArchiveFormatError):
        select_column(table, 3)


# -- aperture corrections ------------------------------------------------------------------------


def lsst_cell(cell: CellIJ) -> Any:
    from lsst.images._cell_grid import CellIJ as LsstCellIJ

    return LsstCellIJ(i=cell.i, j=cell.j)


@pytest.mark.parametrize("name", ["min_default.fits", "synthetic_3x3.fits",
                                  "synthetic_3x3_offset_cutout.fits", "synthetic_3x3_cutout.json",
                                  "cell_coadd_min_as_shipped.json"])
def test_aperture_corrections_equal_lsst_images(reference_dir: Path, name: str) -> None:
    from lsst.images.serialization import read_archive

    path = reference_dir / name
    tree, get_column = tree_and_columns(path)
    ours = ApertureCorrections.from_json(tree["aperture_corrections"], get_column, url=str(path))
    theirs = read_archive(str(path)).aperture_corrections
    assert list(ours) == list(theirs)
    for algorithm, field in theirs.items():
        mine = ours[algorithm]
        assert {(c.i, c.j) for c in mine.bounds.missing} == {(c.i, c.j) for c in field.bounds.missing}
        assert mine.bounds.bbox.to_json() == json.loads(json.dumps(
            {"y": {"start": field.bounds.bbox.y.start, "stop": field.bounds.bbox.y.stop},
             "x": {"start": field.bounds.bbox.x.start, "stop": field.bounds.bbox.x.stop}}))
        for cell in ours.bounds.all_cell_indices():
            if cell in mine.bounds:
                assert ours.value(algorithm, cell) == field.value_in_cell(lsst_cell(cell))
            else:
                with pytest.raises(BoundsError):
                    ours.value(algorithm, cell)
    assert ours.to_json() == tree["aperture_corrections"]


def test_aperture_correction_lookups_outside_bounds_raise(reference_dir: Path) -> None:
    tree, get_column = tree_and_columns(reference_dir / "synthetic_3x3.fits")
    ours = ApertureCorrections.from_json(tree["aperture_corrections"], get_column)
    name = ours.names[0]
    with pytest.raises(BoundsError, match="missing"):
        ours.value(name, CellIJ(2, 3))
    with pytest.raises(BoundsError, match="out of bounds"):
        ours.value(name, CellIJ(0, 0))
    with pytest.raises(KeyError):
        ours.value("no_such_algorithm", CellIJ(1, 1))


@pytest.fixture
def inline_map(reference_dir: Path) -> dict[str, Any]:
    with (reference_dir / "synthetic_3x3_cutout.json").open() as stream:
        return json.load(stream)["aperture_corrections"]


def test_nan_marks_a_cell_missing_for_one_algorithm_only(inline_map: dict[str, Any]) -> None:
    tree = copy.deepcopy(inline_map)
    tree["table"]["columns"][2]["data"]["data"][4] = float("nan")  # row 4 = cell (2, 2)
    ours = ApertureCorrections.from_json(tree, lambda s: np.zeros(0))
    first, second = ours.names
    with pytest.raises(BoundsError, match="missing"):
        ours.value(first, CellIJ(2, 2))
    assert ours.value(second, CellIJ(2, 2)) == tree["table"]["columns"][3]["data"]["data"][4]
    assert CellIJ(2, 2) not in ours.bounds.missing


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["table"]["columns"][1]["data"]["data"].reverse(), "row-major"),
        (lambda t: t["table"]["columns"][0]["data"]["data"].pop(), "differ in length"),
        (lambda t: t["bounds"].__setitem__("missing", []), "rows but the bounds"),
        (lambda t: t["bounds"]["bbox"]["y"].__setitem__("stop", 10**9), "outside the cell grid"),
        (lambda t: t["table"]["columns"].pop(0), "cell_i"),
        (lambda t: t["table"]["columns"][2]["data"].__setitem__("datatype", "int64"), "float"),
        (lambda t: t["bounds"]["grid"].__setitem__("cell_shape", [150]), "cell_shape"),
    ],
)
def test_inconsistent_aperture_tables_are_refused(inline_map: dict[str, Any], edit: Any,
                                                  message: str) -> None:
    tree = copy.deepcopy(inline_map)
    edit(tree)
    with pytest.raises(ArchiveFormatError, match=message):
        ApertureCorrections.from_json(tree, lambda s: np.zeros(0))


def test_cell_grid_bounds_accept_both_yx_spellings(inline_map: dict[str, Any]) -> None:
    tree = copy.deepcopy(inline_map["bounds"])
    object_form = bounds_from_json(tree)
    tree["grid"]["cell_shape"] = [150, 150]
    tree["missing"] = [[2, 3]]
    assert bounds_from_json(tree) == object_form
    assert object_form.grid.cell_shape.y == 150 and object_form.missing == {CellIJ(2, 3)}


def test_aperture_corrections_pickle(reference_dir: Path) -> None:
    import pickle

    tree, get_column = tree_and_columns(reference_dir / "min_default.fits")
    ours = ApertureCorrections.from_json(tree["aperture_corrections"], get_column)
    again = pickle.loads(pickle.dumps(ours))
    assert again.names == ours.names and again.bounds == ours.bounds
    for name in ours:
        np.testing.assert_array_equal(again[name].array, ours[name].array)
