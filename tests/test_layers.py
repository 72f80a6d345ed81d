"""Layers only look down, no module reads another's private attributes, and importing the package stays cheap.

Every ``import`` and ``from ... import`` of every module is checked, wherever it is: at module
level, in a function or method, or in a class body.  Only imports under ``if TYPE_CHECKING:``
are exempt: they never run and only name types for annotations.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cellcoadd_dask"
FILES = {p.relative_to(PACKAGE).as_posix(): p for p in sorted(PACKAGE.rglob("*.py"))}


def _dotted(rel: str) -> str:
    parts = ["cellcoadd_dask", *Path(rel).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_FILES = {_dotted(rel): rel for rel in FILES}
"""Dotted module name -> file (relative to the package)."""


# ------------------------------------------------------------------------------- imports
@dataclass(frozen=True)
class Import:
    """One imported module: its dotted name, where the statement is, and its line."""

    module: str
    where: str  # "module", "function" or "type-checking"
    line: int
    names: tuple[str, ...] = ()  # the names a ``from`` import takes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(rel: str) -> list[Import]:
    """Every import of the module ``rel``, resolved to absolute module names."""
    this = _dotted(rel)
    package = this if rel.endswith("__init__.py") else this.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, "type-checking")
            for child in node.orelse:
                visit(child, where)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and where == "module":
            where = "function"
        if isinstance(node, ast.Import):
            out.extend(Import(alias.name, where, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULE_FILES:  # ``from . import module``
                    out.append(Import(sub, where, node.lineno))
                else:
                    out.append(Import(base, where, node.lineno, (alias.name,)))
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(ast.parse(FILES[rel].read_text()), "module")
    return out


IMPORTS = {rel: _imports(rel) for rel in FILES}


def _runtime_imports(rel: str) -> set[str]:
    return {i.module for i in IMPORTS[rel] if i.where != "type-checking"}


# -------------------------------------------------------------------------------- layers
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", (
        "errors.py", "geom.py", "cells.py", "compression.py", "moments.py", "deferred.py", "stored.py", "streaming.py",
        "schema.py", "archives/names.py", "starlink_sandbox.py", "_starlink_sandbox_child.py", "limits.py",
    )),
    ("storage", ("fetch*.py", "fetch_backends/*", "atomic.py")),
    ("codecs", (*(f"archives/fits/{name}.py" for name in (
        "_astropy_codecs", "cards", "codecs", "dither", "tiles", "plain", "tile_tables", "tables", "layout", "encode",
        "hdu_writer", "legacy_layout",
    )), "archives/decode_pool.py", "archives/zarr/shards.py")),
    ("model", ("model.py", "tree_fields.py", "projection.py", "ast_mappings.py", "fits_wcs.py", "provenance.py",
               "aperture.py", "backgrounds.py", "butler_info.py", "fields/*")),
    ("lazy", ("lazy.py",)),
    # Reports from metadata: the objects' describe() and _repr_html_ call down into it, and it
    # knows them only by annotations (it finds archive sources through sys.modules).
    ("display", ("display/*",)),
    ("objects", ("image.py", "mask.py", "psf.py", "coadd.py", "coadd_archives.py", "legacy.py")),
    ("archives", ("archives/*",)),  # readers, writers, the registry: they build and read CellCoadds
    ("views", ("open.py", "xarray_dataset.py", "xarray_accessor.py", "xarray_backend.py", "tract.py", "tract_index.py",
               "tract_source.py", "tract_patches.py", "pyramid.py", "pyramid_bands.py", "butler.py",
               "cellstats.py", "coarsen.py", "dataset_plot.py", "hips.py")),
    ("applications", ("summary.py", "plot.py", "demo.py", "cli*.py", "__main__.py", "__init__.py")),
    ("testing", ("testing/*",)),
)
"""Lowest first.  A module may import its own layer and the layers below it, never one above.

A module belongs to the layer of the longest pattern it matches (``archives/fits/tiles.py``
is a FITS codec, any other ``archives/`` module is in the archive layer)."""


ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("coadd_archives.py", "archives/*"): "CellCoadd.read_fits/read_json/read_zarr/write_fits/write_zarr/serialize "
    "(from its base CoaddArchives) are the "
    "public API's doors to the archive layer: each imports its reader or writer when called.",
    ("coadd.py", "xarray_dataset.py"): "CellCoadd.to_xarray is the public door to coadd_to_dataset.",
}
"""(importer, imported pattern) -> why: the only imports, inside functions, that look up."""


def _layer(rel: str) -> int | None:
    best: tuple[int, int] | None = None
    for rank, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if fnmatch.fnmatch(rel, pattern) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), rank)
    return None if best is None else best[1]


def _upward_imports() -> list[tuple[str, Import, str]]:
    """(importer, import, imported file) for every import of a higher layer."""
    out = []
    for rel, imports in IMPORTS.items():
        own = _layer(rel)
        for imp in imports:
            target = MODULE_FILES.get(imp.module)
            if imp.where == "type-checking" or target is None or own is None:
                continue
            layer = _layer(target)
            if layer is not None and layer > own:
                out.append((rel, imp, target))
    return out


def _allowed(rel: str, imp: Import, target: str) -> tuple[str, str] | None:
    if imp.where != "function":
        return None
    return next((key for key in ALLOWED_UPWARD if key[0] == rel and fnmatch.fnmatch(target, key[1])), None)


def test_every_module_has_a_layer() -> None:
    assert [rel for rel in FILES if _layer(rel) is None] == []


def test_imports_look_down_even_inside_functions() -> None:
    bad = [
        f"{rel}:{imp.line} ({imp.where}) imports {target} "
        f"({LAYERS[_layer(rel) or 0][0]} -> {LAYERS[_layer(target) or 0][0]})"
        for rel, imp, target in _upward_imports()
        if _allowed(rel, imp, target) is None
    ]
    assert bad == []


def test_the_upward_allow_list_has_no_stale_entry() -> None:
    used = {_allowed(rel, imp, target) for rel, imp, target in _upward_imports()}
    assert sorted(set(ALLOWED_UPWARD) - used) == []


def test_only_the_xarray_modules_import_xarray() -> None:
    users = sorted(rel for rel in FILES if any(m.split(".")[0] == "xarray" for m in _runtime_imports(rel)))
    assert users == ["cellstats.py", "coarsen.py", "legacy.py", "pyramid.py", "tract.py", "xarray_accessor.py",
                     "xarray_backend.py", "xarray_dataset.py"]


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
def test_pure_modules_import_neither_dask_nor_xarray(module: str) -> None:
    assert {m for m in _runtime_imports(module) if m.split(".")[0] in ("dask", "xarray")} == set()


# ---------------------------------------------------------------------------- privacy
REWRITTEN_ELSEWHERE: dict[str, set[str]] = {
    "fetch_backends.py": {"_call_s3", "_fs_token"},  # s3fs and fsspec internals
    "fetch_backends/s3.py": {"_call_s3", "_fs_token"},  # s3fs and fsspec internals
    "fetch_backends/core.py": {"_fs_token"},  # fsspec internals
}
"""File -> private attributes of other modules' objects it still reads."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _names_slots(node: ast.Assign) -> bool:
    return any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)


def _own_private_names(tree: ast.Module) -> set[str]:
    """Private names the module itself defines: on ``self``/``cls``, in class bodies, at module level."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.Module):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    own.add(item.name)
                targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
                own.update(t.id for t in targets if isinstance(t, ast.Name))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            own.add(node.attr)
        elif isinstance(node, ast.Assign) and _names_slots(node):
            strings = (c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
            own.update(v for v in strings if isinstance(v, str))
    return {name for name in own if _is_private(name)}


def _private_reads(rel: str) -> list[tuple[int, str]]:
    """(line, name) of every private attribute of another module's object that ``rel`` touches."""
    tree = ast.parse(FILES[rel].read_text())
    own = _own_private_names(tree)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                out.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
            and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls"))
        ):
            out.append((node.lineno, node.args[1].value))
    for imp in IMPORTS[rel]:
        if imp.module in MODULE_FILES:  # ``from .module import _helper``
            out.extend((imp.line, name) for name in imp.names if _is_private(name))
    return [(line, name) for line, name in out if name not in own]


def test_no_module_reads_private_attributes_of_another_modules_objects() -> None:
    bad = [
        f"{rel}:{line} reads {name}"
        for rel in FILES
        for line, name in _private_reads(rel)
        if name not in REWRITTEN_ELSEWHERE.get(rel, set())
    ]
    assert bad == []


# ------------------------------------------------------------------------- import cost
def test_importing_the_package_leaves_optional_dependencies_unloaded() -> None:
    code = (
        "import sys, cellcoadd_dask\n"
        "heavy = ['matplotlib', 'lsst', 's3fs', 'zarr', 'distributed', 'click', 'starlink']\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_astropy_internals_are_used_in_one_module_only() -> None:
    users = sorted(rel for rel, path in FILES.items() if "astropy.io.fits.hdu" in path.read_text())
    assert users == ["archives/fits/_astropy_codecs.py"]


def test_importing_the_package_registers_the_dataset_accessor() -> None:
    code = "import cellcoadd_dask, xarray as xr\nprint(type(xr.Dataset().cellcoadd).__name__)\n"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "CellCoaddAccessor"
