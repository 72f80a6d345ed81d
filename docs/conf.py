"""Sphinx configuration of the cellcoadd-dask documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -n``): every warning fails the build.
The user guide and the tutorials are MyST text notebooks that are executed on every build, so a
renamed function or a changed behaviour breaks the documentation as it breaks a test.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from sphinx.util import logging

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cellcoadd_dask  # noqa: E402

logger = logging.getLogger(__name__)

# -- Project ------------------------------------------------------------------------------------------

project = "cellcoadd-dask"
author = "The cellcoadd-dask developers"
copyright = "the cellcoadd-dask developers"  # noqa: A001
version = release = cellcoadd_dask.__version__

# -- General ------------------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "sphinx_design",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "README.md"]
templates_path: list[str] = []
default_role = "py:obj"
pygments_style = "default"
nitpicky = True

# The build runs offline (no intersphinx inventories), so names of other projects that appear in
# signatures and docstrings cannot be linked; they are accepted as plain text.  Names of this
# package must resolve: a typo or a renamed object is an error.
_EXTERNAL = (
    "astropy", "dask", "distributed", "fsspec", "numpy", "np", "xarray", "xr", "zarr", "s3fs",
    "pathlib", "os", "collections", "typing", "concurrent", "contextlib", "click", "lsst",
    "enum", "dataclasses", "io", "types", "json", "subprocess", "threading", "u", "da", "matplotlib", "uuid",
)
nitpick_ignore_regex = [
    # Private helpers and type variables that appear in signatures have no entry of their own.
    (r"py:.*", r"cellcoadd_dask(\.\w+)*\.(_\w+|T)"),
    # Where a plane's pixels come from: set by the archive readers, never by users.
    (r"py:class", r"cellcoadd_dask\.lazy\.(PlaneOrigin|ArraySource)"),
    # Return annotations imported only for type checking reach autodoc by their short names.
    (r"py:class", r"(StoredArchive|CellCoaddModel|OutputArchive|Figure|Box)"),
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..*)?"),
    # Generic aliases in dataclass field types are split at their commas into unresolvable pieces.
    (r"py:class", r"(tuple|dict|list)\[.*"),
    (r"py:.*", r"(PathLike|Path|Mapping|Sequence|Iterable|Iterator|Callable|ndarray|Quantity|SkyCoord|"
               r"UnitBase|Unit|Header|WCS|Dataset|DataArray|Array|Client|LocalCluster|AbstractFileSystem|"
               r"Variable|BackendEntrypoint|BackendArray|Enum|IntEnum|StrEnum|T|dtype|DTypeLike|ArrayLike)"),
]

# -- autodoc / autosummary / numpydoc ------------------------------------------------------------------

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- MyST and notebook execution ----------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "fieldlist", "substitution"]
myst_heading_anchors = 3

# "force" executes every notebook page on every build, so a page can never show outputs that the
# current code no longer produces.  ``CELLCOADD_DOCS_EXECUTION=cache`` (``make docs
# DOCS_EXECUTION=cache``) reuses the outputs of unchanged pages from the cache under _build while
# writing prose; CI always builds from a fresh clone, where there is nothing to reuse.
nb_execution_mode = os.environ.get("CELLCOADD_DOCS_EXECUTION", "force")
nb_execution_cache_path = os.environ.get("CELLCOADD_DOCS_CACHE", str(HERE / "_build" / ".jupyter_cache"))
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_allow_errors = False
nb_execution_in_temp = True
nb_execution_show_tb = True
nb_output_stderr = "warn"
nb_merge_streams = True
nb_kernel_rgx_aliases = {".*": "python3"}

# -- HTML ---------------------------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"cellcoadd-dask {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}

# -- Checks -------------------------------------------------------------------------------------------

# Modules whose ``__all__`` is public: every name in them needs an entry in docs/api/.
PUBLIC_MODULES = ("cellcoadd_dask", "cellcoadd_dask.testing", "cellcoadd_dask.testing.servers")


def undocumented_public_names(documented: set[str]) -> list[str]:
    """Public names (``__all__`` of :data:`PUBLIC_MODULES`) that the API reference does not document."""
    import importlib

    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        missing += [f"{module_name}.{name}" for name in module.__all__ if f"{module_name}.{name}" not in documented]
    return missing


def _check_public_api(app: Any, env: Any) -> None:
    """Warn (an error under ``-W``) for every public name without an API reference entry."""
    documented = set(env.get_domain("py").objects)
    for name in undocumented_public_names(documented):
        logger.warning(
            "%s is public (in its module's __all__) but not documented in docs/api/ "
            "(add an autoclass/autofunction/autodata entry)",
            name,
            type="cellcoadd",
            subtype="api",
        )


def _check_tutorial_figures(app: Any, exception: Exception | None) -> None:
    """Fail when a built tutorial page holds no figure (a plot that stopped rendering)."""
    if exception is not None or app.builder.format != "html":
        return
    for page in sorted((HERE / "tutorials").glob("*.md")):
        if page.stem == "index":
            continue
        built = Path(app.outdir) / "tutorials" / f"{page.stem}.html"
        if built.exists() and not re.search(r'<img[^>]+src="[^"]+\.png"', built.read_text()):
            logger.warning("the built tutorial %s shows no figure", built, type="cellcoadd", subtype="figures")


def _check_no_stray_outputs(app: Any, exception: Exception | None) -> None:
    """Fail when an executed page wrote into the source tree (pages write to temporary directories)."""
    if exception is not None:
        return
    stray = [p for p in HERE.parent.iterdir() if re.fullmatch(r".*\.(fits|zarr|npz|png)", p.name)]
    for path in stray:
        logger.warning("an executed page left %s in the repository", path, type="cellcoadd", subtype="outputs")


# Annotations that name these under ``TYPE_CHECKING`` or through a type alias reach Sphinx as bare
# names; they link to the entries below.  (``autodoc_type_aliases`` renders unions of them wrongly.)
_SHORT_NAMES = {
    "Chunks": "cellcoadd_dask.lazy.Chunks",
    "SkyProjection": "cellcoadd_dask.projection.SkyProjection",
}


def _resolve_short_names(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve the bare names of :data:`_SHORT_NAMES` to their documented objects."""
    target = _SHORT_NAMES.get(node.get("reftarget", ""))
    if node.get("refdomain") != "py" or target is None:
        return None
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, node, contnode)


def setup(app: Any) -> dict[str, Any]:
    """Connect the documentation checks."""
    app.connect("missing-reference", _resolve_short_names)
    app.connect("env-check-consistency", _check_public_api)
    app.connect("build-finished", _check_no_stray_outputs)
    app.connect("build-finished", _check_tutorial_figures)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
