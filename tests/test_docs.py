"""The documentation sources keep up with the code.

``make docs`` builds the site with warnings as errors and executes every guide page and tutorial
(CI runs it).  These tests check, without building, what a build would only catch late or not
at all: every public name has an entry in the API reference, every runnable example of the guide
and the tutorials is a cell that the build executes, and every tutorial is listed, makes its
own data and draws a figure.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from paths import REPO

DOCS = REPO / "docs"
API = DOCS / "api"
NOTEBOOK_DIRS = ("guide", "tutorials")
PUBLIC_MODULES = ("cellcoadd_dask", "cellcoadd_dask.testing", "cellcoadd_dask.testing.servers")

_DIRECTIVE = re.compile(r"^\.\. (auto\w+|currentmodule|py:\w+)::\s*(\S+?)(\(\))?\s*$")
_OPTION = re.compile(r"^\s+:(\w[\w-]*):")
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\{[\w-]+\}|[\w+-]*)")
_MYSTNB_HEADER = re.compile(r"\A---\n(?:.*\n)*?file_format: mystnb\n(?:.*\n)*?---\n")


def documented_names() -> set[str]:
    """Fully qualified names that the API reference documents, read from its directives."""
    names: set[str] = set()
    for rst in sorted(API.glob("*.rst")):
        module = ""
        directive = ""
        for line in rst.read_text().splitlines():
            match = _DIRECTIVE.match(line)
            if match:
                directive, target = match.group(1), match.group(2)
                if directive == "currentmodule":
                    module = target
                    continue
                qualified = target if target.startswith("cellcoadd_dask") else f"{module}.{target}"
                names.add(qualified)
                if directive == "automodule":
                    module_name = qualified
                continue
            option = _OPTION.match(line)
            if option and directive == "automodule" and option.group(1) == "members":
                listed = line.split(":members:", 1)[1].strip()
                members = importlib.import_module(module_name).__all__ if not listed else listed.split(",")
                names.update(f"{module_name}.{name.strip()}" for name in members)
            elif not line.startswith(" "):
                directive = directive if not line.strip() else ""
    return names


def public_names() -> list[str]:
    """Every name in the ``__all__`` of the public modules."""
    return [
        f"{module_name}.{name}"
        for module_name in PUBLIC_MODULES
        for name in importlib.import_module(module_name).__all__
    ]


def notebook_pages() -> list[Path]:
    """The executed pages: every Markdown page of the guide and the tutorials but their indexes."""
    return [page for folder in NOTEBOOK_DIRS for page in sorted((DOCS / folder).glob("*.md")) if page.stem != "index"]


def test_every_public_name_is_in_the_api_reference() -> None:
    documented = documented_names()
    missing = [name for name in public_names() if name not in documented]
    assert not missing, f"public names without an entry in docs/api/: {missing}"


def test_the_api_reference_names_only_what_exists() -> None:
    stale = []
    for name in documented_names():
        module_name, _, attribute = name.rpartition(".")
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        # Walk down from the longest importable module prefix (``CellCoadd.read_fits``).
        parts = name.split(".")
        for split in range(len(parts) - 1, 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for part in parts[split:]:
                if not hasattr(obj, part):
                    stale.append(name)
                    break
                obj = getattr(obj, part)
            break
        else:
            stale.append(f"{module_name}.{attribute}")
    assert not stale, f"docs/api/ documents names that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("page", notebook_pages(), ids=lambda page: f"{page.parent.name}/{page.name}")
def test_every_example_is_executed(page: Path) -> None:
    text = page.read_text()
    assert _MYSTNB_HEADER.match(text), f"{page.relative_to(REPO)} is not a MyST notebook (file_format: mystnb)"
    plain = [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if (match := _FENCE.match(line)) and match.group(2) in {"python", "py", "python3", "ipython", "ipython3"}
    ]
    assert not plain, (
        f"{page.relative_to(REPO)}: Python in plain code blocks at lines {plain}; write runnable examples as "
        "```{code-cell} ipython3 so that the docs build executes them"
    )
    assert "```{code-cell}" in text, f"{page.relative_to(REPO)} has no executed cell"


def test_the_tutorials_are_listed_make_their_data_and_plot() -> None:
    index = (DOCS / "tutorials" / "index.md").read_text()
    for page in (DOCS / "tutorials").glob("*.md"):
        if page.stem == "index":
            continue
        text = page.read_text()
        assert re.search(rf"^{re.escape(page.stem)}\s*$", index, re.MULTILINE), f"{page.name} is not in the toctree"
        assert "cellcoadd_dask.testing" in text, f"{page.name} does not make its data with the corpus generator"
        assert re.search(r"\bplt\.|\.plot\(|quicklook\(", text), f"{page.name} draws no figure"
    assert len([p for p in (DOCS / "tutorials").glob("*.md") if p.stem != "index"]) >= 5


def test_the_guide_lists_every_page() -> None:
    index = (DOCS / "guide" / "index.md").read_text()
    unlisted = [page.name for page in (DOCS / "guide").glob("*.md") if page.stem != "index" and page.stem not in index]
    assert not unlisted, f"guide pages missing from guide/index.md: {unlisted}"
