"""The frozen ``cell_coadd`` 1.0.0 JSON Schema and ``validate_tree``.

Trees come from files written by lsst-images: the FITS and JSON reference files and
a few variants written during the session.  All must validate.  Mutated trees must be
refused with a ``ValidationError`` naming the JSON path at fault, while unknown extra
keys are accepted anywhere.  lsst-images' own schema (generated from its pydantic
models) is an independent oracle: it must accept the same reference trees, and reject
the mutations it can express.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import pytest
from paths import REFERENCE_DIR, REFERENCE_FITS, REPO

import cellcoadd_dask
from cellcoadd_dask.archives.fits.layout import read_container
from cellcoadd_dask.errors import CellCoaddError, ValidationError
from cellcoadd_dask.schema import SCHEMA_ID, load_schema, validate_tree

REFERENCE_JSON = ("cell_coadd_min_as_shipped.json", "synthetic_3x3_cutout.json")
VARIANT_FILES = ("default_4x5.fits", "offset_cutout.fits", "mask_70_planes.fits", "lossy_nan.fits", "cutout.json")
PREFIX = "JSON tree does not match cell_coadd 1.0.0 at "

Tree = dict[str, Any]


def read_tree(path: Path) -> Tree:
    """The JSON tree of an archive: row 0 of the JSON HDU, or the whole (maybe gzip'd) JSON file."""
    if path.suffix == ".fits":
        return dict(read_container(str(path)).tree)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    tree: Tree = json.loads(raw)
    return tree


@functools.cache
def reference_tree(name: str) -> Tree:
    return read_tree(REFERENCE_DIR / name)


def fresh(name: str) -> Tree:
    return copy.deepcopy(reference_tree(name))


@functools.cache
def lsst_validator() -> jsonschema.protocols.Validator:
    """lsst-images' own JSON Schema of the tree, generated from its pydantic model."""
    from lsst.images.cells import CellCoaddSerializationModel
    from lsst.images.serialization import dump_schema

    schema = dump_schema(CellCoaddSerializationModel)
    assert schema["$id"] == SCHEMA_ID
    return jsonschema.Draft202012Validator(schema)


def rejection(tree: Any, url: str | None = None) -> str:
    with pytest.raises(ValidationError) as info:
        validate_tree(tree, url=url)
    return str(info.value)


# ----------------------------------------------------------------------------- the schema document


def test_schema_is_a_valid_draft_2020_12_document_with_our_id() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID == "https://images.lsst.io/schemas/cell_coadd-1.0.0"
    assert {"image", "mask", "cell_psf", "patch", "provenance", "array_reference"} <= set(schema["$defs"])


def test_load_schema_returns_an_independent_copy() -> None:
    first = load_schema()
    first["$defs"].clear()
    assert load_schema()["$defs"]
    validate_tree(reference_tree("min_default.fits"))


def test_schema_ships_as_package_data() -> None:
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "schemas/*.json" in pyproject["tool"]["setuptools"]["package-data"]["cellcoadd_dask"]
    assert (REPO / "cellcoadd_dask" / "schemas" / "cell_coadd-1.0.0.json").is_file()


# ----------------------------------------------------------------------------- trees written by lsst-images


def test_every_reference_file_is_covered() -> None:
    assert sorted(p.name for p in REFERENCE_DIR.glob("*.fits")) == sorted(REFERENCE_FITS)
    archives = [p.name for p in REFERENCE_DIR.glob("*.json") if p.name not in ("expected_values.json", "MANIFEST.json")]
    assert sorted(archives) == sorted(REFERENCE_JSON)


@pytest.mark.parametrize("name", REFERENCE_FITS + REFERENCE_JSON)
def test_reference_trees_validate(name: str) -> None:
    validate_tree(reference_tree(name), url=name)


@pytest.mark.parametrize("name", REFERENCE_FITS + REFERENCE_JSON)
def test_reference_trees_accepted_by_lsst_schema_are_accepted_by_ours(name: str) -> None:
    tree = reference_tree(name)
    assert lsst_validator().is_valid(tree)
    validate_tree(tree)


@pytest.mark.parametrize("name", VARIANT_FILES)
def test_trees_of_files_written_by_lsst_images_validate(lsst_variants: dict[str, Path], name: str) -> None:
    tree = read_tree(lsst_variants[name])
    assert lsst_validator().is_valid(tree)
    validate_tree(tree, url=str(lsst_variants[name]))


def test_gzip_json_archive_tree_validates(tmp_path: Path) -> None:
    path = tmp_path / "cutout.json.gz"
    path.write_bytes(gzip.compress((REFERENCE_DIR / "synthetic_3x3_cutout.json").read_bytes()))
    tree = read_tree(path)
    assert tree["image"]["yx0"] == [1470, 1920]
    validate_tree(tree)


def test_json_text_round_trip_and_tuples_validate() -> None:
    tree = json.loads(json.dumps(reference_tree("synthetic_3x3.fits")))
    validate_tree(tree)
    tree["image"]["yx0"] = tuple(tree["image"]["yx0"])
    tree["noise_realizations"] = tuple(tree["noise_realizations"])
    validate_tree(tree)
    validate_tree(MappingProxyType(tree))
    tree["noise_realizations"] = MappingProxyType({})
    assert rejection(MappingProxyType(tree)).startswith(f"{PREFIX}noise_realizations: ")


def test_validation_is_fast() -> None:
    tree = reference_tree("synthetic_3x3.fits")
    assert len(json.dumps(tree)) > 20_000
    validate_tree(tree)
    start = time.perf_counter()
    for _ in range(20):
        validate_tree(tree)
    assert (time.perf_counter() - start) / 20 < 0.05


# ----------------------------------------------------------------------------- mutations


def _set(path: str, value: Any) -> Callable[[Tree], None]:
    *parents, last = path.split(".")

    def mutate(tree: Tree) -> None:
        node: Any = tree
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _drop(path: str) -> Callable[[Tree], None]:
    *parents, last = path.split(".")

    def mutate(tree: Tree) -> None:
        node: Any = tree
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return mutate


# (mutation, JSON path named in the error, also rejected by lsst-images' schema)
MUTATIONS: dict[str, tuple[Callable[[Tree], None], str, bool]] = {
    "missing band": (_drop("band"), "band", True),
    "missing patch": (_drop("patch"), "patch", True),
    "yx0 as an object": (_set("image.yx0", {"y": 1200, "x": 1650}), "image.yx0", True),
    "yx0 of three": (_set("mask.yx0", [1, 2, 3]), "mask.yx0", False),
    "float mask dtype": (_set("mask.dtype", "float32"), "mask.dtype", True),
    "bad source": (_set("image.data.value.source", "fits:IMAGE HDU"), "image.data.value.source", False),
    "source with a newline": (
        _set("variance.data.value.source", "fits:VARIANCE\n"),
        "variance.data.value.source",
        False,
    ),
    "image source naming a column": (
        _set("image.data.value.source", "fits:IMAGE[1]"),
        "image.data.value.source",
        False,
    ),
    "column source without column": (
        _set("provenance.inputs.columns.0.data.source", "fits:PROVENANCE/INPUTS"),
        "provenance.inputs.columns[0].data.source",
        False,
    ),
    "min_read_version 0": (_set("min_read_version", 0), "min_read_version", False),
    "nested min_read_version 0": (_set("psf.min_read_version", 0), "psf.min_read_version", False),
    "image without schema_version": (_drop("image.schema_version"), "image.schema_version", False),
    "bad schema_version": (_set("mask.schema_version", "1.0"), "mask.schema_version", False),
    "noise_realizations not a list": (_set("noise_realizations", {"0": None}), "noise_realizations", True),
    "nested metadata value": (_set("metadata.REFGEN", {"nested": 1}), "metadata.REFGEN", True),
    "image without unit": (
        lambda t: t["image"].__setitem__("data", t["image"]["data"]["value"]),
        "image.data.value",
        False,
    ),
    "unknown datatype": (_set("psf.array.datatype", "float16"), "psf.array.datatype", True),
    "byteorder little": (_set("psf.array.byteorder", "little"), "psf.array.byteorder", True),
    "tract as a string": (
        _set("sky_projection.pixel_to_sky.frames.0.tract", "42"),
        "sky_projection.pixel_to_sky.frames[0].tract",
        True,
    ),
    "sky frame not ICRS": (
        _set("sky_projection.pixel_to_sky.frames.1", "GALACTIC"),
        "sky_projection.pixel_to_sky.frames[1]",
        True,
    ),
    "mapping without ast": (
        _set("sky_projection.pixel_to_sky.mappings.0", {"text": "Begin FrameSet"}),
        "sky_projection.pixel_to_sky.mappings[0].column",
        True,
    ),
    "cell shape of one": (_set("psf.bounds.grid.cell_shape", [150]), "psf.bounds.grid.cell_shape", True),
    "missing cell as a list": (_set("psf.bounds.missing.0", [2, 3]), "psf.bounds.missing[0]", True),
    "interval without stop": (_drop("patch.inner_bbox.x.stop"), "patch.inner_bbox.x.stop", True),
    "mask plane without description": (_drop("mask.planes.0.description"), "mask.planes[0].description", True),
    "instrument code not an integer": (
        _set("provenance.instrument", {"LSSTCam": "0"}),
        "provenance.instrument.LSSTCam",
        True,
    ),
    "background field without field_type": (
        _drop("backgrounds.fields.sky_poly.field_type"),
        "backgrounds.fields.sky_poly.field_type",
        False,
    ),
    "top schema_url of another type": (
        _set("schema_url", "https://images.lsst.io/schemas/image-1.0.0"),
        "schema_url",
        False,
    ),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_mutated_trees_are_refused_naming_the_path(case: str) -> None:
    mutate, path, _ = MUTATIONS[case]
    tree = fresh("synthetic_3x3.fits")
    mutate(tree)
    message = rejection(tree, url="memory://coadd.fits")
    assert message.startswith(f"memory://coadd.fits: {PREFIX}{path}: "), message


@pytest.mark.parametrize("case", [case for case, (_, _, both) in MUTATIONS.items() if both])
def test_mutations_expressible_in_lsst_schema_are_refused_by_both(case: str) -> None:
    mutate, _, _ = MUTATIONS[case]
    tree = fresh("synthetic_3x3.fits")
    assert lsst_validator().is_valid(tree)
    mutate(tree)
    assert not lsst_validator().is_valid(tree)
    rejection(tree)


def test_schema_document_alone_gives_the_same_verdicts() -> None:
    # A plain draft 2020-12 validator on the shipped document, as any other tool would use it.
    plain = jsonschema.Draft202012Validator(load_schema())
    for name in REFERENCE_FITS + REFERENCE_JSON:
        assert plain.is_valid(reference_tree(name)), name
    for case, (mutate, _path, _both) in MUTATIONS.items():
        tree = fresh("synthetic_3x3.fits")
        mutate(tree)
        assert not plain.is_valid(tree), case


def test_validation_error_is_a_package_error_without_url() -> None:
    tree = fresh("min_default.fits")
    del tree["mask"]
    with pytest.raises(CellCoaddError, match=r"^JSON tree does not match cell_coadd 1\.0\.0 at mask: required"):
        validate_tree(tree)


def test_non_object_tree_is_refused_at_the_top_level() -> None:
    assert rejection([1, 2]).startswith(f"{PREFIX}the top level: ")


def test_mutated_json_archive_tree_is_refused() -> None:
    tree = fresh("synthetic_3x3_cutout.json")
    tree["image"]["data"]["value"]["data"] = "not an array"
    assert rejection(tree).startswith(f"{PREFIX}image.data.value.data: ")
    tree = fresh("synthetic_3x3_cutout.json")
    tree["mask"]["data"][0]["datatype"] = "uint8"
    assert rejection(tree).startswith(f"{PREFIX}mask.data[0].datatype: ")


def test_message_stays_short_for_long_values() -> None:
    tree = fresh("synthetic_3x3.fits")
    ast = tree["sky_projection"]["pixel_to_sky"]["mappings"][0]["ast"]
    assert len(ast) > 2000
    tree["sky_projection"]["pixel_to_sky"]["mappings"][0] = {"ast": [ast]}
    message = rejection(tree)
    assert message.startswith(f"{PREFIX}sky_projection.pixel_to_sky.mappings[0].ast: ")
    assert len(message) < 500


# ----------------------------------------------------------------------------- accepted variations


def test_unknown_keys_are_accepted_at_top_level_and_nested() -> None:
    tree = fresh("synthetic_3x3.fits")
    tree["future_component"] = {"schema_version": "2.0.0", "anything": [1, {"x": None}]}
    tree["image"]["future_field"] = "x"
    tree["image"]["data"]["value"]["compression"] = {"algorithm": "GZIP_2"}
    tree["mask"]["planes"][0]["color"] = "red"
    tree["psf"]["bounds"]["grid"]["origin"] = "corner"
    tree["patch"]["cells"]["bbox"]["y"]["step"] = 1
    tree["provenance"]["inputs"]["columns"][0]["format"] = "K"
    tree["sky_projection"]["pixel_to_sky"]["frames"][0]["comment"] = "tract frame"
    tree["backgrounds"]["fields"]["sky_spline"]["order"] = 3
    validate_tree(tree)


def test_newer_minor_versions_validate() -> None:
    tree = fresh("min_default.fits")
    tree["schema_version"] = "1.3.0"
    tree["image"]["schema_version"] = "1.1.2"
    tree["schema_url"] = "https://images.lsst.io/schemas/cell_coadd-1.3.0"
    validate_tree(tree)


def test_yx_pairs_accept_both_spellings_except_yx0() -> None:
    # The reference FITS trees spell YX pairs as objects, the as-shipped archive as arrays.
    assert reference_tree("synthetic_3x3.fits")["patch"]["index"] == {"y": 1, "x": 2}
    assert reference_tree("cell_coadd_min_as_shipped.json")["patch"]["index"] == [4, 3]
    tree = fresh("synthetic_3x3.fits")
    tree["patch"]["index"] = [1, 2]
    tree["patch"]["cells"]["cell_shape"] = [150, 150]
    tree["psf"]["bounds"]["grid"]["cell_shape"] = [150, 150]
    validate_tree(tree)
    tree = fresh("cell_coadd_min_as_shipped.json")
    tree["patch"]["index"] = {"y": 4, "x": 3}
    tree["psf"]["bounds"]["grid"]["cell_shape"] = {"y": 6, "x": 6}
    validate_tree(tree)
    tree["psf"]["bounds"]["grid"]["cell_shape"] = {"y": 0, "x": 6}
    assert rejection(tree).startswith(f"{PREFIX}psf.bounds.grid.cell_shape.y: ")


def test_optional_components_may_be_null_or_absent() -> None:
    tree = fresh("synthetic_3x3.fits")
    for key in ("band", "patch", "provenance", "aperture_corrections"):
        tree[key] = None
    del tree["backgrounds"]
    del tree["metadata"]
    tree["mask_fractions"] = {}
    tree["noise_realizations"] = []
    validate_tree(tree)


def test_instrument_and_filter_as_code_maps() -> None:
    tree = fresh("synthetic_3x3.fits")
    tree["provenance"]["instrument"] = {"LATISS": 0, "LSSTCam": 1}
    tree["provenance"]["physical_filter"] = {}
    validate_tree(tree)


def test_pointer_mappings_validate() -> None:
    tree = fresh("synthetic_3x3.fits")
    pointer = {
        "column": {"name": "JSON", "data": {"source": "fits:JSON[1]", "shape": [4096], "datatype": "uint8"}},
        "row": 1,
    }
    tree["sky_projection"]["pixel_to_sky"]["mappings"][0] = pointer
    validate_tree(tree)
    tree["sky_projection"]["pixel_to_sky"]["mappings"][0] = {"$ref": "#/indirect/0"}
    validate_tree(tree)
    tree["sky_projection"]["pixel_to_sky"]["mappings"][0] = {"$ref": "#/elsewhere"}
    assert rejection(tree).startswith(f"{PREFIX}sky_projection.pixel_to_sky.mappings[0].$ref: ")


def test_bounds_forms_in_transforms() -> None:
    tree = fresh("synthetic_3x3.fits")
    box = tree["sky_projection"]["pixel_to_sky"]["bounds"][0]
    region = {"type": "Polygon", "coordinates": [[[0.0, 0.0], [0.0, 10.0], [10.0, 0.0]]]}
    tree["sky_projection"]["pixel_to_sky"]["bounds"][0] = {"a": box, "b": region}
    validate_tree(tree)
    tree["sky_projection"]["pixel_to_sky"]["bounds"][0] = {"a": box, "b": {"type": "Circle", "coordinates": []}}
    assert rejection(tree).startswith(f"{PREFIX}sky_projection.pixel_to_sky.bounds[0].b.type: ")


@pytest.mark.parametrize(
    ("source", "valid"),
    [("zarr:image", True), ("zarr:/image", True), ("zarr:../x", False), ("zarr:a/../b", False),
     ("zarr:image/", False), ("fits:IMAGE", False)],
)
def test_zarr_trees_are_checked_with_the_zarr_source_grammar(tmp_path: Path, source: str, valid: bool) -> None:
    store = cellcoadd_dask.open_coadd(REFERENCE_DIR / "synthetic_3x3.fits").write_zarr(tmp_path / "a.zarr")
    tree = copy.deepcopy(dict(cellcoadd_dask.open_coadd(store)._stored.tree))
    validate_tree(tree, scheme="zarr")
    with pytest.raises(ValidationError):
        validate_tree(tree)  # the frozen schema spells FITS sources only
    tree["image"]["data"]["value"]["source"] = source
    if valid:
        validate_tree(tree, scheme="zarr")
    else:
        with pytest.raises(ValidationError, match="image"):
            validate_tree(tree, scheme="zarr")
