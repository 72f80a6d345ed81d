"""Layers only look down, and importing the package stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cellcoadd_dask"


def _module_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside functions or ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                out.add(node.module)
    return out


MODULES = {p.relative_to(PACKAGE).as_posix(): _module_level_imports(p) for p in PACKAGE.rglob("*.py")}


def test_only_the_xarray_modules_import_xarray() -> None:
    users = sorted(name for name, imports in MODULES.items() if any(i.split(".")[0] == "xarray" for i in imports))
    assert users == ["xarray_accessor.py", "xarray_backend.py", "xarray_dataset.py"]


@pytest.mark.parametrize(
    "module",
    [
        "archives/fits/cards.py",
        "archives/fits/codecs.py",
        "archives/fits/tiles.py",
        "archives/fits/tile_tables.py",
        "archives/fits/tables.py",
        "geom.py",
        "cells.py",
        "model.py",
        "errors.py",
    ],
)
def test_lower_layers_do_not_import_upper_ones(module: str) -> None:
    upper = {
        "cellcoadd_dask.coadd",
        "cellcoadd_dask.lazy",
        "cellcoadd_dask.xarray_backend",
        "cellcoadd_dask.xarray_dataset",
        "cellcoadd_dask.xarray_accessor",
        "cellcoadd_dask.cli",
        "cellcoadd_dask.archives.fits.reader",
        "cellcoadd_dask.archives.fits.source",
        "cellcoadd_dask.open",
        "dask",
        "dask.array",
        "xarray",
    }
    assert not MODULES[module] & upper


def test_importing_the_package_leaves_optional_dependencies_unloaded() -> None:
    code = (
        "import sys, cellcoadd_dask\n"
        "heavy = ['matplotlib', 'lsst', 's3fs', 'zarr', 'distributed', 'click', 'starlink']\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_astropy_internals_are_used_in_one_module_only() -> None:
    users = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "astropy.io.fits.hdu" in path.read_text()
    )
    assert users == ["archives/fits/_astropy_codecs.py"]


def test_importing_the_package_registers_the_dataset_accessor() -> None:
    code = "import cellcoadd_dask, xarray as xr\nprint(type(xr.Dataset().cellcoadd).__name__)\n"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "CellCoaddAccessor"
