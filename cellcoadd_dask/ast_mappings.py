"""Starlink AST for sky projections: parsing checked text, evaluating mappings, writing FITS WCS.

Every call into the AST library holds :data:`AST_LOCK` (AST keeps global state, and two threads
parsing at once can crash the process).  AST text is checked in the sandbox
(:mod:`cellcoadd_dask.starlink_sandbox`) before the library parses it.  Errors name the field of
the ``sky_projection`` subtree they come from.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np

from ._starlink_sandbox_child import AstLines
from .errors import ArchiveFormatError
from .geom import Box

__all__ = [
    "AST_LOCK", "FITS_WCS_TOLERANCE", "fits_header", "make_wcs", "parse_ast", "apply_mapping", "projection_error",
]

FITS_WCS_TOLERANCE = 1e-4
"""Largest pixel discrepancy accepted between a FITS WCS and the AST projection."""

SUBTREE = "sky_projection"
"""The tree field that errors name (with the path below it)."""

AST_LOCK = threading.RLock()
"""The lock every call into the AST library holds (other modules that call AST take it too).

AST keeps global state, and two threads parsing at once (patches of a tract opened in parallel)
can crash the process."""


def projection_error(message: str, field: str, url: str | None) -> ArchiveFormatError:
    """The typed error of a bad ``sky_projection`` field (``field`` is its path below the subtree)."""
    return ArchiveFormatError(message, url=url, hdu=f"{SUBTREE}.{field}" if field else SUBTREE)


def parse_ast(text: str, field: str, url: str | None) -> Any:
    """Parse AST native text into a 2 -> 2 Mapping whose output is ICRS (radians).

    Raises
    ------
    ArchiveFormatError
        If the text is refused by the sandbox, is not AST text, or is not a 2 -> 2 mapping to a
        sky frame.
    """
    with AST_LOCK:
        return _parse_ast_unlocked(text, field, url)


def _parse_ast_unlocked(text: str, field: str, url: str | None) -> Any:
    from starlink import Ast

    from .starlink_sandbox import check_ast_text

    if "\x00" in text:
        raise projection_error("AST text contains a NUL character", field, url)
    problem = check_ast_text(text)
    if problem is not None:
        raise projection_error(f"not parsable as AST text: {problem}", field, url)
    try:
        obj = Ast.Channel(AstLines(text)).read()
    except Exception as exc:  # the AST library raises several error types
        raise projection_error(f"not parsable as AST text: {exc}", field, url) from None
    if obj is None or not isinstance(obj, Ast.Mapping):
        raise projection_error("AST text does not hold a Mapping or FrameSet", field, url)
    if obj.Nin != 2 or obj.Nout != 2:
        raise projection_error(f"AST mapping must map 2 -> 2 axes, not {obj.Nin} -> {obj.Nout}", field, url)
    if isinstance(obj, Ast.FrameSet):
        sky = obj.getframe(Ast.CURRENT)
        if not isinstance(sky, Ast.SkyFrame):
            raise projection_error(f"current frame is a {type(sky).__name__}, not a SkyFrame", field, url)
        if obj.System != "ICRS":
            # Setting the system of the current frame makes AST re-map it to ICRS.
            obj.System = "ICRS"
    return obj


def apply_mapping(
    mapping: Any, a: np.ndarray, b: np.ndarray, forward: bool, url: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply an AST mapping to flat float64 arrays; AST's bad value becomes NaN.

    Raises
    ------
    ArchiveFormatError
        If AST cannot evaluate the mapping (names ``pixel_to_sky.mappings[0].ast`` and ``url``).
    """
    from starlink import Ast

    with AST_LOCK:
        try:
            out = np.asarray(mapping.tran(np.stack([a, b]), forward), dtype=np.float64)
        except Ast.AstError as exc:
            raise projection_error(f"the AST mapping cannot be evaluated: {exc}", "pixel_to_sky.mappings[0].ast",
                                   url) from None
    out[out == Ast.BAD] = np.nan
    return out[0], out[1]


def fits_header(mapping: Any, bbox: Box, url: str | None) -> Any:
    """FITS-WCS header of ``mapping`` shifted to ``bbox`` (FITS pixel (1, 1) at ``bbox.start``).

    ``None`` when AST cannot write it as FITS-WCS, or when the header does not invert the
    mapping within :data:`FITS_WCS_TOLERANCE` pixel at the corners and centre of ``bbox``.
    """
    from astropy.io import fits
    from starlink import Ast

    with AST_LOCK:
        grid_to_sky = Ast.CmpMap(Ast.ShiftMap([bbox.x.start - 1.0, bbox.y.start - 1.0]), mapping, True)
        sky = mapping.getframe(Ast.CURRENT) if isinstance(mapping, Ast.FrameSet) else Ast.SkyFrame("")
        frames = Ast.FrameSet(Ast.Frame(2, "Domain=GRID"))
        frames.addframe(Ast.BASE, grid_to_sky, sky)
        chan = Ast.FitsChan(None, None, "Encoding=FITS-WCS, CDMatrix=1, FitsAxisOrder=<copy>, "
                                         f"FitsTol={FITS_WCS_TOLERANCE}, FitsDigits=17")
        chan.setfitsI("NAXIS1", bbox.x.size, "", 0)
        chan.setfitsI("NAXIS2", bbox.y.size, "", 0)
        try:
            written = chan.write(frames)
        except Ast.AstError:
            return None
        if not written:
            return None
        chan.Card = 1
        cards = list(chan)
    header = fits.Header([fits.Card.fromstring(c) for c in cards])
    for key in ("NAXIS1", "NAXIS2"):
        header.remove(key, ignore_missing=True)
    if "CTYPE1" not in header or "CTYPE2" not in header:
        return None
    try:
        wcs = make_wcs(header)
    except (KeyError, ValueError):
        return None
    if not _agrees(mapping, wcs, bbox, url):
        return None
    return header


def _agrees(mapping: Any, wcs: Any, bbox: Box, url: str | None) -> bool:
    """Whether ``wcs`` inverts ``mapping`` within the tolerance at the corners and centre of ``bbox``."""
    lx = np.array([0.0, bbox.x.size - 1.0, 0.0, bbox.x.size - 1.0, (bbox.x.size - 1) / 2])
    ly = np.array([0.0, 0.0, bbox.y.size - 1.0, bbox.y.size - 1.0, (bbox.y.size - 1) / 2])
    ra, dec = apply_mapping(mapping, lx + bbox.x.start, ly + bbox.y.start, True, url)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        return False
    px, py = wcs.all_world2pix(np.degrees(ra), np.degrees(dec), 0)
    return bool(np.max(np.hypot(px - lx, py - ly)) <= FITS_WCS_TOLERANCE)


def make_wcs(header: Any) -> Any:
    """An astropy WCS of FITS WCS cards (astropy's header fix-up warnings silenced)."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        # AST's header is complete; astropy's "fixes" (e.g. of MJDREF/DATE-OBS) are noise here.
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)
