"""Binary-table HDUs (aperture corrections, provenance) and the ``fits:`` sources of their columns.

Tables are converted by astropy (``table_to_hdu``), which maps unsigned integers to the
signed FITS types plus ``TZERO`` and fixed-size vector columns to ``nD`` + ``TDIM`` exactly as
lsst-images' files have them.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from ..tree_out import table_column_models
from .hdu_writer import BLOCK, Card, render_header, utc_now

__all__ = ["column_models", "table_hdu"]

def column_models(table: Any, extname: str) -> list[dict[str, Any]]:
    """JSON column models of ``table`` stored as HDU ``extname`` (1-based column numbers).

    Raises
    ------
    ValidationError
        If a column has a type FITS tables of this format cannot hold (strings, objects).
    """
    return table_column_models(table, extname, lambda n, _: f"fits:{extname}[{n + 1}]")






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


