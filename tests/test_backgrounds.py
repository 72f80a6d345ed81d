"""Background models evaluated lazily and ``CellCoadd.apply_background``, against lsst-images.

Values are compared exactly: each field renders over any box and at points to the values
lsst-images computes, and ``apply_background`` gives the pixels lsst-images' in-place
``apply_background`` does.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import astropy.units as u
import dask.array as da
import numpy as np
import pytest
from oracle import to_lsst_box, tree_and_columns
from paths import REFERENCE_FITS, REFERENCE_JSON

import cellcoadd_dask as ccd
from cellcoadd_dask.backgrounds import Background, BackgroundMap
from cellcoadd_dask.errors import ArchiveFormatError
from cellcoadd_dask.fetch import fetch_stats
from cellcoadd_dask.fields import BaseField, SplineField, field_from_json

REFERENCE_FILES = (*REFERENCE_FITS, *REFERENCE_JSON)


def lsst_read(path: Path) -> Any:
    from lsst.images.cells import CellCoadd

    return CellCoadd.read(str(path))


def with_backgrounds(reference_dir: Path) -> list[Path]:
    out = []
    for name in REFERENCE_FILES:
        tree, _ = tree_and_columns(reference_dir / name)
        if (tree.get("backgrounds") or {}).get("fields"):
            out.append(reference_dir / name)
    return out


def sub_box(box: ccd.Box) -> ccd.Box:
    """A box inside ``box``, off its origin and off the cell grid."""
    y0, x0 = box.y.start + box.y.size // 5 + 3, box.x.start + box.x.size // 3 + 1
    return ccd.Box.factory[y0 : box.y.stop - box.y.size // 7, x0 : box.x.stop - 2]


def assert_fields_match(ours: BaseField, theirs: Any, box: ccd.Box, chunks: Any) -> None:
    for dtype in (None, np.float32):
        rendered = ours.render(box, dtype=dtype, chunks=chunks)
        assert isinstance(rendered, da.Array) and rendered.chunks == da.core.normalize_chunks(
            chunks, shape=tuple(box.shape), dtype=rendered.dtype
        )
        expected = theirs.render(to_lsst_box(box), dtype=dtype).array
        values = rendered.compute()
        assert values.dtype == expected.dtype
        np.testing.assert_array_equal(values, expected)
    rng = np.random.default_rng(5)
    ys = rng.uniform(box.y.start, box.y.stop - 1, 40)
    xs = rng.uniform(box.x.start, box.x.stop - 1, 40)
    np.testing.assert_array_equal(ours(x=xs, y=ys), theirs(x=xs, y=ys))
    assert ours(x=float(xs[0]), y=float(ys[0])) == theirs(x=float(xs[0]), y=float(ys[0]))
    assert ours(ccd.YX(y=ys[1], x=xs[1])) == theirs(x=xs[1], y=ys[1])
    assert ours(x=xs, y=ys, quantity=True).unit == (theirs.unit or u.dimensionless_unscaled)
    assert ours.unit == theirs.unit and ours.is_constant == theirs.is_constant
    assert ours.bbox.to_json() == ccd.Box.factory[
        theirs.bounds.bbox.y.start : theirs.bounds.bbox.y.stop, theirs.bounds.bbox.x.start : theirs.bounds.bbox.x.stop
    ].to_json()


def assert_coadd_backgrounds_match(path: Path) -> None:
    coadd = ccd.open_coadd(path, chunks="cell")
    reference = lsst_read(path)
    assert list(coadd.backgrounds) == list(reference.backgrounds)
    assert coadd.backgrounds.subtracted == (
        None if reference.backgrounds.subtracted is None else reference.backgrounds.subtracted.name
    )
    chunks = coadd.image.array.chunks
    for name in coadd.backgrounds:
        ours, theirs = coadd.backgrounds[name], reference.backgrounds[name]
        assert isinstance(ours, Background) and ours.name == name and ours.description == theirs.description
        assert ours.field.field_type == coadd.backgrounds.field_type(name)
        assert_fields_match(ours.field, theirs.field, coadd.bbox, chunks)
        assert_fields_match(ours.field, theirs.field, sub_box(coadd.bbox), 37)
    for name in [*coadd.backgrounds, None]:
        with fetch_stats() as applying:
            applied = coadd.apply_background(name)
        assert applying.requests == 0
        expected = lsst_read(path)
        expected.apply_background(name)
        assert applied.image.array.chunks == chunks
        np.testing.assert_array_equal(applied.image.array.compute(), expected.image.array)
        assert applied.backgrounds.subtracted == name
        assert applied.image.unit == expected.image.unit


def test_corpus_has_background_files(reference_dir: Path) -> None:
    assert with_backgrounds(reference_dir)


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_corpus_backgrounds_match_lsst_images(reference_dir: Path, name: str) -> None:
    path = reference_dir / name
    if path not in with_backgrounds(reference_dir):
        coadd = ccd.open_coadd(path)
        assert coadd.backgrounds is None or list(coadd.backgrounds) == []
        assert coadd.apply_background(None).image.array is coadd.image.array
        with pytest.raises(KeyError):
            coadd.apply_background("nope")
        return
    assert_coadd_backgrounds_match(path)


def test_apply_background_is_lazy_and_chains(reference_dir: Path, tmp_path: Path) -> None:
    path = with_backgrounds(reference_dir)[0]
    coadd = ccd.open_coadd(path, chunks="cell")
    first, second = list(coadd.backgrounds)[:2]
    with fetch_stats() as applying:
        chained = coadd.apply_background(first).apply_background(second)
        restored = chained.apply_background(None)
        same = chained.apply_background(second)
    assert applying.requests == 0
    assert same.image.array is chained.image.array
    with fetch_stats() as computing:
        values = chained.image.array.compute()
    assert computing.requests > 0
    expected = lsst_read(path)
    expected.apply_background(first)
    expected.apply_background(second)
    np.testing.assert_array_equal(values, expected.image.array)
    expected.apply_background(None)
    np.testing.assert_array_equal(restored.image.array.compute(), expected.image.array)
    assert coadd.backgrounds.subtracted is None  # the original is unchanged
    with pytest.raises(KeyError):
        coadd.apply_background("nope")
    # Written and read back by lsst-images: the subtracted background and the pixels agree.
    written = chained.write_fits(tmp_path / "applied.fits")
    back = lsst_read(Path(written))
    assert back.backgrounds.subtracted.name == second
    np.testing.assert_array_equal(back.image.array, values)
    again = ccd.open_coadd(written).apply_background(None)
    np.testing.assert_array_equal(again.image.array.compute(), restored.image.array.compute())


# -- fields of every type, built with lsst-images -------------------------------------------------


def _built_backgrounds(bbox: Any) -> list[tuple[str, Any, bool]]:
    from lsst.images.fields import ChebyshevField, ProductField, SplineField, SumField

    rng = np.random.default_rng(3)
    ys = np.linspace(bbox.y.start - 10.0, bbox.y.stop + 5.0, 10)
    xs = np.sort(rng.uniform(bbox.x.start, bbox.x.stop, 12))
    nodes = 2.0 + np.sin(ys[:, None] / 40.0) * np.cos(xs[None, :] / 55.0) + 0.1 * rng.normal(size=(10, 12))
    nodes[3, 4] = nodes[7, 1] = np.nan
    nodes[:, 6] = np.nan  # a column with no node
    nodes[1:, 9] = np.nan  # a column with one node
    big = SplineField(bbox, nodes, y=ys, x=xs, unit=u.nJy)  # 120 nodes: its own HDU
    small_nodes = np.array([[1.0, 1.5, 1.25], [0.5, 0.75, 2.0], [1.0, 1.0, 1.0]])
    small = SplineField(bbox, small_nodes, y=ys[[0, 4, 9]], x=xs[[0, 5, 11]], unit=u.nJy)
    cheb = ChebyshevField(bbox, rng.normal(size=(4, 3)), unit=u.uJy)
    plain = ChebyshevField(bbox, np.array([[1.5, 0.25], [-0.125, 0.0]]))
    return [
        ("spline_big", big, False),
        ("spline_small", small, False),
        ("cheb_ujy", cheb, False),
        ("sum", SumField([big, cheb * 1e-3, small]), True),
        ("product", ProductField([plain, big]), False),
        ("nested", SumField([ProductField([plain, small]), big]), False),
    ]


@pytest.fixture(scope="module")
def built(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    reference = lsst_read(reference_dir / "synthetic_3x3.fits")
    for name, field, subtracted in _built_backgrounds(reference.bbox):
        reference.backgrounds.add(name, field, f"built {name}", is_subtracted=subtracted)
    path = tmp_path_factory.mktemp("backgrounds") / "built.fits"
    reference.write(str(path))
    return path


def test_every_field_type_matches_lsst_images(built: Path) -> None:
    tree, _ = tree_and_columns(built)
    kinds = {f["field_type"] for f in tree["backgrounds"]["fields"].values()}
    assert kinds == {"SPLINE", "CHEBYSHEV", "SUM", "PRODUCT"} and len(tree["backgrounds"]["fields"]) == 8
    assert "source" in tree["backgrounds"]["fields"]["spline_big"]["data"]
    assert_coadd_backgrounds_match(built)


def test_stored_nodes_are_read_only_when_evaluated(built: Path) -> None:
    coadd = ccd.open_coadd(built)
    with fetch_stats() as building:
        field = coadd.backgrounds["spline_big"].field
        lazy = field.render(coadd.bbox, chunks=coadd.image.array.chunks)
    assert building.requests == 0
    assert isinstance(field, SplineField) and field.source == coadd.backgrounds.data_sources()["spline_big"]
    with fetch_stats() as evaluating:
        lazy.compute()
    assert evaluating.requests > 0
    again = pickle.loads(pickle.dumps(coadd.backgrounds))
    assert again == coadd.backgrounds and again["spline_big"].field.data.shape == (10, 12)
    assert coadd.backgrounds.subtracted_background.name == "sum"
    assert dict(coadd.backgrounds.items())["cheb_ujy"].field.unit == u.uJy
    # The write passes the map through: lsst-images reads the same fields back.
    written = coadd.write_fits(built.parent / "rewritten.fits")
    assert_coadd_backgrounds_match(Path(written))


@pytest.mark.parametrize("factor", [2.5, -0.5 * u.s, u.m, 3])
def test_a_field_times_a_constant_matches_lsst_images(built: Path, factor: Any) -> None:
    coadd = ccd.open_coadd(built)
    reference = lsst_read(built)
    box = coadd.bbox
    for name in coadd.backgrounds:
        ours = coadd.backgrounds[name].field
        theirs = reference.backgrounds[name].field
        for got, expected in ((ours * factor, theirs * factor), (factor * ours, theirs * factor),
                              (ours / factor, theirs / factor)):
            assert type(got) is type(ours), name
            assert got.unit == expected.unit, name
            with fetch_stats() as building:
                lazy = got.render(box, chunks=coadd.image.array.chunks)
            assert building.requests == 0, name  # stored node values are read when evaluated, not before
            np.testing.assert_allclose(lazy.compute(), expected.render(to_lsst_box(box)).array, rtol=1e-12,
                                       atol=1e-12, err_msg=name)
            rebuilt = field_from_json(got.to_json())
            np.testing.assert_allclose(rebuilt(x=box.x.start + 3.5, y=box.y.start + 7.25),
                                       got(x=box.x.start + 3.5, y=box.y.start + 7.25), rtol=1e-12, err_msg=name)
    with pytest.raises(TypeError):
        coadd.backgrounds["cheb_ujy"].field * "2"


def test_fields_without_an_archive_say_so(built: Path) -> None:
    tree, _ = tree_and_columns(built)
    standalone = BackgroundMap.from_json(tree["backgrounds"])
    assert standalone["cheb_ujy"].field(x=1700.0, y=1300.0) == lsst_read(built).backgrounds["cheb_ujy"].field(
        x=1700.0, y=1300.0
    )
    with pytest.raises(ccd.ValidationError, match="archive item"):
        standalone["spline_big"].field.data  # noqa: B018


# -- malformed JSON ---------------------------------------------------------------------------------

CHEB = {
    "schema_version": "1.0.0",
    "bounds": {"y": {"start": 0, "stop": 10}, "x": {"start": 0, "stop": 20}},
    "coefficients": {"data": [[1.0, 0.5], [0.25, 0.0]], "datatype": "float64"},
    "unit": "nJy",
    "field_type": "CHEBYSHEV",
}
SPLINE = {
    "bounds": {"y": {"start": 0, "stop": 10}, "x": {"start": 0, "stop": 20}},
    "data": {"data": [[1.0, 2.0], [3.0, 4.0]], "datatype": "float64"},
    "y": {"data": [0.0, 9.0], "datatype": "float64"},
    "x": {"data": [0.0, 19.0], "datatype": "float64"},
    "field_type": "SPLINE",
}


def _edit(base: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    tree = copy.deepcopy(base)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


@pytest.mark.parametrize(
    ("tree", "where"),
    [
        (_edit(CHEB, ["field_type"], "WAVELET"), "field_type"),
        (_edit(CHEB, ["coefficients", "data"], [[1.0, 2.0], [3.0]]), "coefficients.data"),
        (_edit(CHEB, ["coefficients", "data"], "many"), "coefficients.data"),
        (_edit(CHEB, ["coefficients", "datatype"], "complex128"), "coefficients.datatype"),
        (_edit(CHEB, ["bounds", "y", "stop"], "ten"), "bounds.y.stop"),
        (_edit(CHEB, ["bounds", "y", "stop"], -4), "bounds.y"),
        (_edit(CHEB, ["unit"], "furlongs per hogshead"), "unit"),
        (_edit(CHEB, ["min_read_version"], 7), "f"),
        (_edit(SPLINE, ["y", "data"], [9.0, 0.0]), "y"),
        (_edit(SPLINE, ["data", "data"], [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]), "data"),
        (_edit(SPLINE, ["data"], {"source": "fits:X", "shape": [100000, 100000], "datatype": "float64"}),
         "data.shape"),
        (_edit(SPLINE, ["data"], {"source": "fits:X", "shape": [2, 2], "datatype": "float64"})
         | {"y": {"data": list(range(100000)), "datatype": "float64"},
            "x": {"data": list(range(100000)), "datatype": "float64"}}, "f"),
        (_edit(SPLINE, ["data"], {"source": 3, "shape": [2, 2], "datatype": "float64"}), "data.source"),
        ({"field_type": "SUM", "operands": []}, "operands"),
        ({"field_type": "SUM", "operands": [CHEB, _edit(CHEB, ["unit"], None)]}, "f"),
        ({"field_type": "PRODUCT", "operands": [CHEB, {"field_type": "SPLINE"}]}, "operands[1].bounds"),
        ({"field_type": "SUM", "operands": [CHEB, _edit(SPLINE, ["bounds", "y"], {"start": 50, "stop": 60})]}, "f"),
        ([1, 2], "f"),
    ],
)
def test_malformed_fields_are_refused(tree: Any, where: str) -> None:
    with pytest.raises(ArchiveFormatError) as info:
        field_from_json(tree, path="f")
    assert where in str(info.value)


def test_deep_nesting_is_refused() -> None:
    tree: dict[str, Any] = CHEB
    for _ in range(40):
        tree = {"field_type": "SUM", "operands": [tree]}
    with pytest.raises(ArchiveFormatError, match="nest"):
        field_from_json(tree)


def test_a_malformed_background_fails_at_open_with_its_path(reference_dir: Path, tmp_path: Path) -> None:
    with (reference_dir / "synthetic_3x3_cutout.json").open() as stream:
        archive = json.load(stream)
    archive["backgrounds"]["fields"]["sky_poly"]["coefficients"]["data"] = [[1.0], [2.0, 3.0]]
    with pytest.raises(ArchiveFormatError, match=r"backgrounds\.fields\.sky_poly\.coefficients"):
        BackgroundMap.from_json(archive["backgrounds"], url="x.json")
    path = tmp_path / "malformed_background.json"
    path.write_text(json.dumps(archive))
    with pytest.raises(ArchiveFormatError, match=r"sky_poly") as caught:
        ccd.open_coadd(path)
    assert str(path.name) in str(caught.value)
