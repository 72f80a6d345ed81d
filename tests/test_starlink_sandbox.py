"""Corrupted AST texts that crash the AST library are refused without crashing this process."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import cellcoadd_dask as ccd
from cellcoadd_dask.projection import SkyProjection
from cellcoadd_dask.starlink_sandbox import check_ast_text


@pytest.fixture(scope="module")
def sky_tree(reference_dir: Path) -> dict:
    with (reference_dir / "cell_coadd_min_as_shipped.json").open() as stream:
        return json.load(stream)["sky_projection"]


def _ast_text(tree: dict) -> str:
    return tree["pixel_to_sky"]["mappings"][0]["ast"]


def _without_line(text: str, start: str) -> str:
    lines = text.splitlines()
    k = next(n for n, line in enumerate(lines) if line.strip().startswith(start))
    return "\n".join(lines[:k] + lines[k + 1 :])


# Each of these made the AST library kill the process (SIGSEGV) when parsed directly.
CRASHERS = {
    "truncated inside a WcsMap": lambda t: t[: t.index("End WcsMap")],
    "no End WcsMap": lambda t: _without_line(t, "End WcsMap"),
    "mangled projection parameter key": lambda t: t.replace("PV1_3 =", "PV1_# =", 1),
}


@pytest.mark.parametrize("edit", list(CRASHERS), ids=list(CRASHERS))
def test_crashing_ast_text_is_refused_with_a_located_error(sky_tree: dict, edit: str) -> None:
    tree = copy.deepcopy(sky_tree)
    tree["pixel_to_sky"]["mappings"][0]["ast"] = CRASHERS[edit](_ast_text(tree))
    with pytest.raises(ccd.ArchiveFormatError, match="mappings") as info:
        SkyProjection.from_json(tree, url="crafted.json")
    assert "crafted.json" in str(info.value)


def test_checker_recovers_after_a_crash_and_accepts_good_text(sky_tree: dict, expected_values: dict) -> None:
    good = _ast_text(sky_tree)
    assert check_ast_text(CRASHERS["no End WcsMap"](good)) is not None
    assert check_ast_text(good) is None
    projection = SkyProjection.from_json(copy.deepcopy(sky_tree))
    corner = expected_values["min_default.fits"]["pixel_to_sky"][0]
    coord = projection.pixel_to_sky(x=float(corner["x"]), y=float(corner["y"]))
    assert abs(coord.ra.deg - corner["ra_deg"]) < 1e-9


def test_nul_characters_are_refused(sky_tree: dict) -> None:
    tree = copy.deepcopy(sky_tree)
    tree["pixel_to_sky"]["mappings"][0]["ast"] = _ast_text(tree).replace("Nframe", "\x00frame", 1)
    with pytest.raises(ccd.ArchiveFormatError, match="NUL"):
        SkyProjection.from_json(tree)
