"""Binary-table HDUs (aperture corrections, provenance) and their JSON ``TableModel``.

Tables are converted by astropy (``table_to_hdu``), which maps unsigned integers to the
signed FITS types plus ``TZERO`` and fixed-size vector columns to ``nD`` + ``TDIM`` exactly as
lsst-images' files have them.  The JSON column models are built from the in-memory table
(dtype, per-row shape, description, unit, meta), as lsst-images builds them.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import ValidationError
from ..names import SUBTREE_VERSION
from .hdu_writer import BLOCK, Card, render_header, utc_now

__all__ = ["aperture_table", "column_models", "table_column_models", "table_hdu", "table_subtrees"]

_STORABLE = frozenset(
    {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"}
)


def column_models(table: Any, extname: str) -> list[dict[str, Any]]:
    """JSON column models of ``table`` stored as HDU ``extname`` (1-based column numbers).

    Raises
    ------
    ValidationError
        If a column has a type FITS tables of this format cannot hold (strings, objects).
    """
    return table_column_models(table, extname, lambda n, _: f"fits:{extname}[{n + 1}]")


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


def table_hdu(table: Any, extname: str) -> tuple[bytes, bytes]:
    """Header and (padded) data bytes of ``table`` as a binary-table HDU named ``extname``."""
    import astropy.io.fits as fits
    from astropy.io.fits.verify import VerifyWarning

    plain = table.copy(copy_data=False)
    for name in plain.colnames:  # descriptions and meta live in the JSON, not in the header
        plain[name].description = None
        plain[name].meta = {}
    plain.meta = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        hdu = fits.table_to_hdu(plain, name=extname)
        buffer = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    raw = buffer.getvalue()[BLOCK:]
    end = _header_end(raw)
    cards: list[Card | Any] = [card for card in hdu.header.cards if card.keyword not in ("DATE",)]
    cards.append(("DATE", utc_now(), "UTC date this HDU was written."))
    return render_header(cards), raw[end:]


def _header_end(raw: bytes) -> int:
    for start in range(0, len(raw), BLOCK):
        block = raw[start : start + BLOCK]
        for k in range(0, BLOCK, 80):
            if block[k : k + 8] == b"END     ":
                return start + BLOCK
    raise AssertionError("astropy wrote a table header without END")


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
