"""Binary-table HDUs (aperture corrections, provenance) and their JSON ``TableModel``.

Tables are converted by astropy (``table_to_hdu``), which maps unsigned integers to the
signed FITS types plus ``TZERO`` and fixed-size vector columns to ``nD`` + ``TDIM`` exactly as
lsst-images' files have them.  The JSON column models are built from the in-memory table
(dtype, per-row shape, description, unit, meta), as lsst-images builds them.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from ...errors import ValidationError
from .hdu_writer import BLOCK, Card, render_header, utc_now

__all__ = ["aperture_table", "column_models", "table_hdu"]

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
    out = []
    for n, name in enumerate(table.colnames, start=1):
        column = table[name]
        dtype = np.dtype(column.dtype)
        if dtype.name not in _STORABLE:
            raise ValidationError(f"Table {extname}: column {name!r} of type {dtype} cannot be stored.")
        model: dict[str, Any] = {
            "data": {
                "source": f"fits:{extname}[{n}]",
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
