"""A sky projection from the FITS WCS cards of a legacy (afw) image HDU.

afw writes an image's celestial WCS in FITS pixel coordinates of the HDU's array (the first
pixel is ``(1, 1)``) and its origin in ``LTV1``/``LTV2``.  :func:`projection_from_cards` reads
the celestial cards with astropy, converts them to an AST ``FrameSet`` through AST's FITS
channel, and prepends the shift from this package's absolute 0-based pixel coordinates to the
FITS ones, so that the result maps absolute pixels to ICRS as a coadd's projection does.  The
AST text is checked in the sandbox (:mod:`cellcoadd_dask.starlink_sandbox`) like any other.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

from .errors import ArchiveFormatError
from .geom import Box

__all__ = ["LEGACY_SKYMAP", "LEGACY_TRACT", "projection_from_cards"]

LEGACY_SKYMAP = ""
"""The ``skymap`` of a projection read from a FITS WCS: it belongs to no skymap."""

LEGACY_TRACT = -1
"""The ``tract`` of a projection read from a FITS WCS."""

_WCS_KEY = re.compile(
    r"^(WCSAXES|CTYPE[12]|CRPIX[12]|CRVAL[12]|CDELT[12]|CUNIT[12]|CROTA[12]|CD[12]_[12]|PC[12]_[12]|"
    r"PV[12]_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|MJD-OBS|DATE-OBS|MJDREF|"
    r"(A|B|AP|BP)_(ORDER|\d+_\d+|DMAX))$"
)


def _sky_cards(cards: Mapping[str, Any]) -> Any:
    from astropy.io import fits

    header = fits.Header()
    for key, value in cards.items():
        if _WCS_KEY.match(key) and value is not None:
            header[key] = value
    return header


def projection_from_cards(
    cards: Mapping[str, Any], *, bbox: Box, url: str | None = None, hdu: str | None = None
) -> Any:
    """The projection the celestial FITS WCS of ``cards`` describes, or ``None`` when there is none.

    Parameters
    ----------
    cards
        The valued cards of the image HDU.
    bbox
        Absolute box of the HDU's array (its start is the array's first pixel).
    url, hdu
        For error messages.

    Returns
    -------
    cellcoadd_dask.projection.SkyProjection or None
        Absolute 0-based pixels to ICRS; its ``skymap`` is :data:`LEGACY_SKYMAP`, its tract
        :data:`LEGACY_TRACT` and its tract box ``bbox``.

    Raises
    ------
    ArchiveFormatError
        If the WCS cards are malformed or AST cannot convert them.
    """
    import astropy.wcs
    from starlink import Ast

    from .projection import AST_LOCK, SkyProjection

    header = _sky_cards(cards)
    if not any(key.startswith("CTYPE") for key in header):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's notes on fixed-up or non-standard cards
            wcs = astropy.wcs.WCS(header, naxis=2, relax=True)
            if not wcs.has_celestial:
                return None
            lines = wcs.to_header(relax=True).tostring(sep="\n").splitlines()
    except Exception as exc:  # astropy raises several error types for malformed WCS cards
        raise ArchiveFormatError(f"FITS WCS cards do not describe a WCS: {exc}", url=url, hdu=hdu) from None
    try:
        with AST_LOCK:
            text = _fits_to_ast(lines, bbox)
    except Ast.AstError as exc:
        raise ArchiveFormatError(f"AST cannot convert the FITS WCS: {exc}", url=url, hdu=hdu) from None
    if text is None:
        raise ArchiveFormatError("AST reads no WCS from the FITS WCS cards", url=url, hdu=hdu)
    return SkyProjection.from_ast_text(text, skymap=LEGACY_SKYMAP, tract=LEGACY_TRACT, tract_bbox=bbox,
                                       pixel_bounds=bbox, field=f"{hdu or 'IMAGE'} FITS WCS", url=url)


def _fits_to_ast(lines: list[str], bbox: Box) -> str | None:
    """AST text of the FrameSet from absolute pixels to the sky the FITS cards describe (``None``: no WCS)."""
    from starlink import Ast

    channel = Ast.FitsChan([line for line in lines if line.strip()])
    fits_frames = channel.read()
    if not isinstance(fits_frames, Ast.FrameSet):
        return None
    # Absolute 0-based pixel (x, y) -> FITS pixel (x - x0 + 1, y - y0 + 1) -> sky.
    shift = Ast.ShiftMap([1.0 - bbox.x.start, 1.0 - bbox.y.start])
    to_sky = Ast.CmpMap(shift, fits_frames.getmapping(Ast.BASE, Ast.CURRENT), True)
    frames = Ast.FrameSet(Ast.Frame(2, "Domain=PIXEL"))
    frames.addframe(Ast.BASE, to_sky.simplify(), fits_frames.getframe(Ast.CURRENT))
    return _ast_text(frames)


def _ast_text(obj: Any) -> str:
    from starlink import Ast

    lines: list[str] = []

    class _Sink:
        def astsink(self, line: str) -> None:
            lines.append(line)

    Ast.Channel(None, _Sink()).write(obj)
    return "\n".join(lines)
