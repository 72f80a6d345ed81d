"""One module owns the schema's name and versions and the grammar of source strings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cellcoadd_dask.archives.names import SCHEMA_NAME, SCHEMA_VERSION, SUBTREE_VERSION, Source, parse_source
from cellcoadd_dask.errors import ArchiveFormatError

PACKAGE = Path(__file__).resolve().parent.parent / "cellcoadd_dask"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fits:IMAGE", Source("fits", "IMAGE")),
        ("fits:MASK,2", Source("fits", "MASK", 2)),
        ("fits:PROVENANCE/INPUTS[3]", Source("fits", "PROVENANCE/INPUTS", 1, 3)),
        ("fits:MASK,2[12]", Source("fits", "MASK", 2, 12)),
        ("fits:MASK_FRACTIONS/rejected", Source("fits", "MASK_FRACTIONS/rejected")),
        ("zarr:image", Source("zarr", "image")),
        ("zarr:mask/0", Source("zarr", "mask/0")),
        ("zarr:tables/provenance.inputs/visit", Source("zarr", "tables/provenance.inputs/visit")),
        ("zarr:/image", Source("zarr", "image", rooted=True)),
        ("zarr:/lsst/tables/inputs/visit", Source("zarr", "lsst/tables/inputs/visit", rooted=True)),
    ],
)
def test_sources_parse_and_print_back(text: str, expected: Source) -> None:
    assert parse_source(text) == expected
    assert str(expected) == text
    if expected.column is not None:
        assert parse_source(text, column=True).table == Source("fits", expected.name, expected.extver)


@pytest.mark.parametrize(
    "text",
    ["", "IMAGE", "fits:", "fits:IMAGE\n", "fits:IM AGE", "fits:X[0]", "fits:X[a]", "fits:X,", "[1]",
     "zarr:", "zarr:/", "zarr://image", "zarr:image/", "zarr:../outside", "zarr:a/./b", "zarr:a/../../b",
     "s3:image", 3, None],
)
def test_malformed_sources_are_typed_errors_naming_the_archive(text: object) -> None:
    with pytest.raises(ArchiveFormatError, match="source") as info:
        parse_source(text, url="file:///data/p.fits")
    assert info.value.url == "file:///data/p.fits"


def test_schemes_and_columns_are_checked_when_asked() -> None:
    with pytest.raises(ArchiveFormatError, match="for a FITS archive"):
        parse_source("zarr:image", scheme="fits")
    with pytest.raises(ArchiveFormatError, match="for a Zarr archive"):
        parse_source("fits:IMAGE", scheme="zarr")
    with pytest.raises(ArchiveFormatError, match="column"):
        parse_source("fits:IMAGE", column=True)
    with pytest.raises(ArchiveFormatError, match="names a table column"):
        parse_source("fits:T[1]", column=False)


def test_no_other_module_spells_the_schema_constants() -> None:
    owner = PACKAGE / "archives" / "names.py"
    literals = {SCHEMA_NAME, SCHEMA_VERSION, SUBTREE_VERSION}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == owner:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in literals:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert not found, found
