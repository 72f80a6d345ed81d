"""The sky projection of a coadd: absolute tract pixels <-> ICRS, evaluated with Starlink AST.

The exact projection is the AST object stored as text in the ``sky_projection``
JSON subtree (``pixel_to_sky.mappings[0].ast``).  Its forward direction maps
absolute tract pixel coordinates ``(x, y)`` (0-based, integer values at pixel
centres) to ``(RA, Dec)`` in radians.  AST objects cannot be pickled, so a
:class:`SkyProjection` keeps the text and parses it on first use (once per
instance and per process).
"""

from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import numpy as np

from .archives.names import SUBTREE_VERSION
from .ast_mappings import (
    AST_LOCK,
    FITS_WCS_TOLERANCE,
    SUBTREE,
    apply_mapping,
    fits_header,
    make_wcs,
    parse_ast,
    projection_error,
)
from .errors import CellCoaddError
from .geom import Box
from .model import box_from_json

__all__ = ["AST_LOCK", "FITS_WCS_TOLERANCE", "FitsWcsError", "PixelXY", "SkyProjection", "make_wcs"]



class FitsWcsError(CellCoaddError, ValueError):
    """The projection cannot be written as a FITS WCS within the tolerance."""


class PixelXY(NamedTuple):
    """Pixel coordinates returned by :meth:`SkyProjection.sky_to_pixel`, ordered **(x, y)**.

    The (x, y) order matches ``lsst.images.XY`` and astropy's ``world_to_pixel``;
    use the attribute names to stay clear of the ordering.
    """

    x: Any
    y: Any


def _int_field(tree: dict[str, Any], key: str, field: str, url: str | None) -> int:
    value = tree.get(key) if isinstance(tree, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise projection_error(f"expected an integer, got {value!r}", field, url)
    return value


class SkyProjection:
    """Mapping between absolute tract pixel coordinates and ICRS sky coordinates.

    Build instances with :meth:`from_json`.  Pixel coordinates are absolute (tract
    frame, 0-based, integer values at pixel centres); sky coordinates are ICRS.

    Instances are immutable, picklable (the AST object is re-parsed from text
    after unpickling) and safe to share between threads.
    """

    def __init__(
        self,
        *,
        ast_text: str,
        skymap: str,
        tract: int,
        tract_bbox: Box,
        pixel_bounds: Box | None = None,
        fits_approximation_text: str | None = None,
        tree: dict[str, Any] | None = None,
        url: str | None = None,
    ) -> None:
        self._ast_text = ast_text
        self._approx_text = fits_approximation_text
        self._skymap = skymap
        self._tract = tract
        self._tract_bbox = tract_bbox
        self._pixel_bounds = pixel_bounds
        self._tree = tree
        self._url = url
        self._mapping: Any = None
        self._approx_mapping: Any = None

    # -- construction and serialization ------------------------------------------------------------

    @classmethod
    def from_json(cls, tree: dict[str, Any], *, url: str | None = None) -> SkyProjection:
        """Build a projection from the ``sky_projection`` JSON subtree.

        The AST text is parsed once here to validate it.

        Parameters
        ----------
        tree
            The ``sky_projection`` subtree, as parsed by :func:`json.loads`.
        url
            File the tree came from, for error messages.

        Raises
        ------
        ArchiveFormatError
            If a field is missing or malformed, the pixel frame is not a ``TRACT``
            frame, the sky frame is not ``ICRS``, or the mapping is not parsable AST text.
        """
        if not isinstance(tree, dict):
            raise projection_error(f"expected an object, got {type(tree).__name__}", "", url)
        transform = tree.get("pixel_to_sky")
        text, frame, bounds = cls._transform_parts(transform, "pixel_to_sky", url)
        approx_text = None
        approx = tree.get("fits_approximation")
        if approx is not None:
            approx_text, _, _ = cls._transform_parts(approx, "fits_approximation", url)
        skymap = frame.get("skymap")
        if not isinstance(skymap, str):
            raise projection_error(f"skymap must be a string, got {skymap!r}", "pixel_to_sky.frames[0].skymap", url)
        tract = _int_field(frame, "tract", "pixel_to_sky.frames[0].tract", url)
        tract_bbox = box_from_json(frame.get("bbox"), f"{SUBTREE}.pixel_to_sky.frames[0].bbox", url)
        pixel_bounds = None
        if isinstance(bounds, dict) and set(bounds) >= {"y", "x"} and "grid" not in bounds:
            pixel_bounds = box_from_json(bounds, f"{SUBTREE}.pixel_to_sky.bounds[0]", url)
        projection = cls(
            ast_text=text,
            skymap=skymap,
            tract=tract,
            tract_bbox=tract_bbox,
            pixel_bounds=pixel_bounds,
            fits_approximation_text=approx_text,
            tree=copy.deepcopy(tree),
            url=url,
        )
        projection._mapping = parse_ast(text, "pixel_to_sky.mappings[0].ast", url)
        if approx_text is not None:
            projection._approx_mapping = parse_ast(approx_text, "fits_approximation.mappings[0].ast", url)
        return projection

    @classmethod
    def from_ast_text(cls, text: str, *, skymap: str, tract: int, tract_bbox: Box, pixel_bounds: Box | None = None,
                      field: str = "pixel_to_sky", url: str | None = None) -> SkyProjection:
        """A projection from AST native text (checked in the sandbox and parsed now).

        Raises
        ------
        ArchiveFormatError
            If the text does not parse as a 2 -> 2 mapping onto a sky frame (names ``field``).
        """
        projection = cls(ast_text=text, skymap=skymap, tract=tract, tract_bbox=tract_bbox,
                         pixel_bounds=pixel_bounds, url=url)
        projection._mapping = parse_ast(text, field, url)
        return projection

    @staticmethod
    def _transform_parts(transform: Any, field: str, url: str | None) -> tuple[str, dict[str, Any], Any]:
        """Check a ``transform`` subtree; return (AST text, pixel frame, pixel bounds)."""
        if not isinstance(transform, dict):
            raise projection_error(f"expected a transform object, got {transform!r}", field, url)
        frames = transform.get("frames")
        if not isinstance(frames, list) or len(frames) != 2:
            raise projection_error("a sky projection needs exactly two frames (pixel, ICRS)", f"{field}.frames", url)
        frame = frames[0]
        if not isinstance(frame, dict) or frame.get("frame_type") != "TRACT":
            kind = frame.get("frame_type") if isinstance(frame, dict) else frame
            raise projection_error(f"the pixel frame must be a TRACT frame, not {kind!r}", f"{field}.frames[0]", url)
        if frames[1] != "ICRS":
            raise projection_error(f"the sky frame must be 'ICRS', not {frames[1]!r}", f"{field}.frames[1]", url)
        bounds = transform.get("bounds", [None, None])
        if not isinstance(bounds, list) or len(bounds) != len(frames):
            raise projection_error("'bounds' must be a list with one entry per frame", f"{field}.bounds", url)
        mappings = transform.get("mappings")
        if not isinstance(mappings, list) or len(mappings) != 1:
            raise projection_error("expected exactly one mapping", f"{field}.mappings", url)
        mapping = mappings[0]
        text = mapping.get("ast") if isinstance(mapping, dict) else None
        if not isinstance(text, str):
            raise projection_error("the mapping must be inline AST text ({'ast': ...}); pointers are not supported",
                        f"{field}.mappings[0]", url)
        return text, frame, bounds[0]

    def to_json(self) -> dict[str, Any]:
        """Return the ``sky_projection`` subtree (a copy of the one read, or a fresh ``1.0.0`` tree)."""
        if self._tree is not None:
            return copy.deepcopy(self._tree)
        return {
            "schema_version": SUBTREE_VERSION,
            "min_read_version": 1,
            "pixel_to_sky": self._transform_json(self._ast_text),
            **(
                {"fits_approximation": self._transform_json(self._approx_text)}
                if self._approx_text is not None
                else {}
            ),
            "schema_url": "https://images.lsst.io/schemas/sky_projection-1.0.0",
        }

    def _transform_json(self, text: str) -> dict[str, Any]:
        frame = {"skymap": self._skymap, "tract": self._tract, "bbox": self._tract_bbox.to_json(),
                 "frame_type": "TRACT"}
        bounds = self._pixel_bounds.to_json() if self._pixel_bounds is not None else None
        return {
            "schema_version": SUBTREE_VERSION,
            "min_read_version": 1,
            "frames": [frame, "ICRS"],
            "bounds": [bounds, None],
            "mappings": [{"ast": text}],
            "schema_url": "https://images.lsst.io/schemas/transform-1.0.0",
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_mapping", "_approx_mapping"):
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._mapping = None
        self._approx_mapping = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SkyProjection):
            return NotImplemented
        return (self._ast_text, self._approx_text, self._skymap, self._tract, self._tract_bbox) == (
            other._ast_text, other._approx_text, other._skymap, other._tract, other._tract_bbox
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SkyProjection(skymap={self._skymap!r}, tract={self._tract}, tract_bbox={self._tract_bbox})"

    # -- identity ----------------------------------------------------------------------------------

    @property
    def skymap(self) -> str:
        """Name of the skymap of the tract frame."""
        return self._skymap

    @property
    def tract(self) -> int:
        """Tract id within the skymap."""
        return self._tract

    @property
    def tract_bbox(self) -> Box:
        """Bounding box of the whole tract, absolute pixels."""
        return self._tract_bbox

    @property
    def pixel_bounds(self) -> Box | None:
        """Region where the pixel coordinates are valid (absolute pixels), when stored as a box."""
        return self._pixel_bounds

    @property
    def has_fits_approximation(self) -> bool:
        """Whether the tree carries a FITS-representable approximation of the projection."""
        return self._approx_text is not None

    # -- evaluation --------------------------------------------------------------------------------

    def _ast(self, approximation: bool = False) -> Any:
        """Return the parsed AST mapping, parsing it on first use in this process."""
        with AST_LOCK:
            if approximation:
                if self._approx_mapping is None and self._approx_text is not None:
                    self._approx_mapping = parse_ast(
                        self._approx_text, "fits_approximation.mappings[0].ast", self._url
                    )
                return self._approx_mapping
            if self._mapping is None:
                self._mapping = parse_ast(self._ast_text, "pixel_to_sky.mappings[0].ast", self._url)
            return self._mapping

    def pixel_to_sky(self, *, x: Any, y: Any) -> Any:
        """Sky coordinates of absolute pixel positions.

        Parameters
        ----------
        x, y
            Absolute (tract) pixel coordinates: scalars or array-likes, broadcast
            against each other.  Integer values are pixel centres.

        Returns
        -------
        astropy.coordinates.SkyCoord
            ICRS coordinates with the broadcast shape of ``x`` and ``y`` (scalar for
            scalar input).  Positions the projection cannot map have NaN RA/Dec.
        """
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        xb, yb = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        ra, dec = apply_mapping(self._ast(), xb.ravel(), yb.ravel(), True, self._url)
        ra = np.mod(ra, 2 * math.pi).reshape(xb.shape)
        dec = dec.reshape(xb.shape)
        with np.errstate(invalid="ignore"):
            beyond = np.abs(dec) > math.pi / 2  # a mapping that leaves the sphere: not a position
        ra[beyond] = np.nan
        dec[beyond] = np.nan
        return SkyCoord(ra=ra * u.rad, dec=dec * u.rad, frame="icrs")

    def sky_to_pixel(self, coord: Any) -> PixelXY:
        """Absolute pixel positions of sky coordinates.

        Parameters
        ----------
        coord
            An :class:`astropy.coordinates.SkyCoord` (any frame; converted to ICRS), any shape.

        Returns
        -------
        PixelXY
            ``(x, y)`` absolute pixel coordinates (note the x-first order; use
            ``.x`` / ``.y``), floats for a scalar ``coord``, else arrays of its shape.
        """
        icrs = coord.icrs
        ra = np.asarray(icrs.ra.radian, dtype=np.float64)
        dec = np.asarray(icrs.dec.radian, dtype=np.float64)
        px, py = apply_mapping(self._ast(), ra.ravel(), dec.ravel(), False, self._url)
        if ra.ndim == 0:
            return PixelXY(float(px[0]), float(py[0]))
        return PixelXY(px.reshape(ra.shape), py.reshape(ra.shape))

    # -- FITS WCS for an array ---------------------------------------------------------------------

    def fits_wcs(self, bbox: Box) -> Any:
        """FITS WCS header cards for the array covering ``bbox``.

        FITS pixel (1, 1) of the header is absolute pixel ``bbox.start``.  The exact
        projection is used when AST can write it as FITS-WCS; otherwise the stored
        FITS approximation (if any).  The header is checked against the AST
        projection it came from at the corners and centre of ``bbox``.

        Parameters
        ----------
        bbox
            Absolute bounding box of the array.

        Returns
        -------
        astropy.io.fits.Header
            Celestial WCS cards only (no ``NAXISn``).

        Raises
        ------
        FitsWcsError
            If neither the projection nor its approximation can be written as a
            FITS WCS that agrees with AST within ``1e-4`` pixel.
        """
        header = fits_header(self._ast(), bbox, self._url)
        if header is None and self._approx_text is not None:
            header = fits_header(self._ast(approximation=True), bbox, self._url)
        if header is None:
            raise FitsWcsError(
                f"The sky projection over {bbox} cannot be written as a FITS WCS within "
                f"{FITS_WCS_TOLERANCE} pixel, and no FITS approximation is stored."
            )
        return header

    def astropy_wcs(self, bbox: Box) -> Any:
        """:class:`astropy.wcs.WCS` for the local (array) pixel grid of ``bbox``.

        Array index ``[0, 0]`` (astropy pixel ``(0, 0)``) is absolute pixel
        ``bbox.start``.  See :meth:`fits_wcs` for how the WCS is obtained.

        Raises
        ------
        FitsWcsError
            If no FITS WCS represents the projection (see :meth:`fits_wcs`).
        """
        return make_wcs(self.fits_wcs(bbox))
