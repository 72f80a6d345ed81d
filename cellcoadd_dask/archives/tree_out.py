"""Build the ``cell_coadd`` 1.0.0 JSON tree of a coadd being written, for every archive format.

Keys come in the order lsst-images writes them (spec 4.3); every schema-bearing node is
stamped with ``schema_version``, ``min_read_version`` and ``schema_url``.  Fields of a stored
tree that this version does not interpret are merged back in by :func:`merge_unknown`.  The
archive decides only how each array is referenced (the reference models passed in); the
tables of aperture corrections and provenance are described here too (:func:`table_subtrees`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ValidationError
from .names import SCHEMA_NAME, SCHEMA_URL_PREFIX, SCHEMA_VERSION, SUBTREE_VERSION

if TYPE_CHECKING:
    from ..coadd import CellCoadd
    from ..image import Image

__all__ = [
    "aperture_table",
    "array_ref",
    "build_tree",
    "merge_unknown",
    "stamped",
    "table_column_models",
    "table_subtrees",
]



def stamped(name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` between the version stamps of schema ``name``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "min_read_version": 1,
        **body,
        "schema_url": f"{SCHEMA_URL_PREFIX}{name}-{SCHEMA_VERSION}",
    }


def array_ref(source: str, shape: Any, dtype: Any) -> dict[str, Any]:
    """The reference model of an array stored at ``source`` (``ArrayReferenceModel``)."""
    return {"source": source, "shape": [int(n) for n in shape], "datatype": np.dtype(dtype).name, "byteorder": "big"}


def _image(image: Image, ref: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = dict(ref)
    if image.unit is not None:
        data = {"value": data, "unit": image.unit.to_string("vounit")}
    return stamped("image", {"data": data, "yx0": [int(image.bbox.y.start), int(image.bbox.x.start)]})


def build_tree(coadd: CellCoadd, refs: Mapping[str, Any], subtrees: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON tree of ``coadd`` with its arrays stored as ``refs`` say.

    Parameters
    ----------
    coadd
        The coadd.
    refs
        ``"image"``, ``"variance"``, ``"mask_fractions/<name>"``, ``"noise_realizations/<n>"``,
        ``"psf"`` -> the array's model (a reference, or inline data); ``"mask"`` -> the list
        of the mask's array models.
    subtrees
        Ready ``"aperture_corrections"`` and ``"provenance"`` subtrees (or ``None``).
    """
    mask = coadd.mask
    schema = mask.schema
    mask_data = [dict(ref) for ref in refs["mask"]]
    planes = [None if p is None else {"name": p.name, "description": p.description} for p in schema]
    body: dict[str, Any] = {}
    if coadd.metadata:
        body["metadata"] = copy.deepcopy(dict(coadd.metadata))
    body["image"] = _image(coadd.image, refs["image"])
    body["mask"] = stamped("mask", {
        "data": mask_data,
        "yx0": [int(mask.bbox.y.start), int(mask.bbox.x.start)],
        "planes": planes,
        "dtype": schema.dtype.name,
    })
    body["variance"] = _image(coadd.variance, refs["variance"])
    body["sky_projection"] = coadd.projection.to_json()
    body["mask_fractions"] = {
        name: _image(image, refs[f"mask_fractions/{name}"]) for name, image in coadd.mask_fractions.items()
    }
    body["noise_realizations"] = [
        _image(image, refs[f"noise_realizations/{n}"]) for n, image in enumerate(coadd.noise_realizations)
    ]
    body["band"] = coadd.band
    psf = coadd.psf
    body["psf"] = stamped("cell_psf", {
        "array": dict(refs["psf"]),
        "bounds": psf.bounds.to_json(),
    })
    body["aperture_corrections"] = subtrees.get("aperture_corrections")
    body["patch"] = coadd.patch_definition.to_json() if coadd.patch_definition is not None else None
    body["provenance"] = subtrees.get("provenance")
    backgrounds = coadd.backgrounds
    if backgrounds is not None:
        body["backgrounds"] = backgrounds.to_json()
    if coadd.butler_info is not None:
        body["butler_info"] = copy.deepcopy(coadd.butler_info)
    for key, value in coadd.extra.items():
        if key not in body and key not in ("schema_version", "min_read_version", "schema_url"):
            body[key] = copy.deepcopy(value)
    return stamped(SCHEMA_NAME, body)


def merge_unknown(ours: Any, stored: Any) -> Any:
    """``ours`` plus the keys of ``stored`` it lacks, recursively (objects by key, lists by position).

    Only keys absent from ``ours`` are taken from ``stored``; values this writer produces
    always win.  Keys written as ``null``/omitted on purpose (``metadata``, the optional
    subtrees) are left out.
    """
    if isinstance(ours, dict) and isinstance(stored, Mapping):
        if _is_array_model(ours):  # how an array is stored belongs to the archive being written
            return ours
        out = dict(ours)
        schema_url = out.pop("schema_url", None)
        for key, value in stored.items():
            if key in out:
                out[key] = merge_unknown(out[key], value)
            elif key not in _OWNED and key != "schema_url":
                out[key] = copy.deepcopy(value)
        if schema_url is not None:
            out["schema_url"] = schema_url
        return out
    if isinstance(ours, list) and isinstance(stored, list) and len(ours) == len(stored):
        return [merge_unknown(a, b) for a, b in zip(ours, stored, strict=True)]
    return ours


def _is_array_model(node: Mapping[str, Any]) -> bool:
    return isinstance(node.get("source"), str) or ("datatype" in node and "data" in node)


_OWNED = frozenset({
    "metadata", "aperture_corrections", "provenance", "backgrounds", "fits_approximation", "missing", "butler_info"
})
"""Keys this writer decides on its own: never revived from a stored tree when it leaves them out."""


_STORABLE = frozenset(
    {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"}
)


def table_column_models(table: Any, where: str, source_of: Callable[[int, str], str]) -> list[dict[str, Any]]:
    """JSON column models of ``table``, column ``n`` (0-based) named ``name`` stored at ``source_of(n, name)``.

    Models are built from the in-memory table (dtype, per-row shape, description, unit,
    meta), as lsst-images builds them; ``where`` names the table in errors.

    Raises
    ------
    ValidationError
        If a column has a type the format cannot hold (strings, objects).
    """
    out = []
    for n, name in enumerate(table.colnames):
        column = table[name]
        dtype = np.dtype(column.dtype)
        if dtype.name not in _STORABLE:
            raise ValidationError(f"Table {where}: column {name!r} of type {dtype} cannot be stored.")
        model: dict[str, Any] = {
            "data": {
                "source": source_of(n, name),
                "shape": [int(s) for s in column.shape[1:]],
                "datatype": dtype.name,
                "byteorder": "big",
            },
            "name": name,
        }
        if column.description:
            model["description"] = str(column.description)
        if column.unit is not None:
            model["unit"] = column.unit.to_string("vounit")
        if column.meta:
            model["meta"] = dict(column.meta)
        out.append(model)
    return out


def table_subtrees(
    coadd: Any, models_for: Callable[[Any, str], list[dict[str, Any]]]
) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The tables a coadd stores and the ``aperture_corrections`` / ``provenance`` subtrees describing them.

    Parameters
    ----------
    coadd
        The coadd.
    models_for
        ``(table, path) -> column models`` of the archive, ``path`` being the table's archive
        path (``aperture_corrections/table``, ``provenance/inputs``, ``provenance/contributions``).

    Returns
    -------
    tables
        ``(path, astropy table)`` in the order lsst-images writes them.
    subtrees
        ``{"aperture_corrections": ..., "provenance": ...}`` (``None`` when absent).

    Raises
    ------
    ValidationError
        For aperture corrections with a unit, or provenance without input rows.
    """
    tables: list[tuple[str, Any]] = []
    subtrees: dict[str, Any] = {"aperture_corrections": None, "provenance": None}

    def add(table: Any, path: str) -> dict[str, Any]:
        tables.append((path, table))
        return {"columns": models_for(table, path)}

    corrections = coadd.aperture_corrections
    if corrections:
        for name in corrections:
            if corrections[name].unit is not None:
                raise ValidationError("Aperture corrections should be dimensionless.")
        subtrees["aperture_corrections"] = {
            "schema_version": SUBTREE_VERSION,
            "min_read_version": 1,
            "table": add(aperture_table(corrections), "aperture_corrections/table"),
            "bounds": corrections.bounds.to_json(),
            "schema_url": "https://images.lsst.io/schemas/cell_aperture_correction_map-1.0.0",
        }
    try:
        provenance = coadd.provenance
    except AttributeError:
        provenance = None
    if provenance is not None:
        if len(provenance.inputs) == 0:
            raise ValidationError("Coadd provenance must contain at least one input image.")
        fields, inputs, contributions = provenance.storage_tables()
        subtrees["provenance"] = {
            "schema_version": SUBTREE_VERSION,
            "min_read_version": 1,
            "instrument": fields["instrument"],
            "physical_filter": fields["physical_filter"],
            "inputs": add(inputs, "provenance/inputs"),
            "contributions": add(contributions, "provenance/contributions"),
            "schema_url": "https://images.lsst.io/schemas/coadd_provenance-1.0.0",
        }
    return tables, subtrees


def aperture_table(corrections: Any) -> Any:
    """The stored table of aperture corrections: ``cell_i``, ``cell_j`` then one column per algorithm.

    One row per cell of the shared bounds in row-major order (missing cells skipped); a cell
    missing for one algorithm only holds NaN in that column.
    """
    import astropy.table

    bounds = corrections.bounds
    cells = list(bounds.cell_indices())
    table = astropy.table.Table()
    table["cell_i"] = np.array([c.i for c in cells], dtype=np.int64)
    table["cell_j"] = np.array([c.j for c in cells], dtype=np.int64)
    start = bounds.subgrid_start
    rows = (np.array([c.i - start.i for c in cells], dtype=np.intp), np.array([c.j - start.j for c in cells], np.intp))
    for name in corrections:
        field = corrections[name]
        if field.bounds.grid != bounds.grid or field.bounds.bbox != bounds.bbox:
            raise ValidationError(f"Aperture correction {name!r} does not share the grid and bbox of the others.")
        values = np.asarray(field.array, dtype=np.float64)[rows] if cells else np.empty(0)
        missing = np.array([c in field.bounds.missing for c in cells], dtype=bool)
        values = np.where(missing, np.nan, values)
        table[name] = values
    return table
