"""A lazy masked image read from a legacy (afw ``MaskedImage.writeFits``) FITS file.

:meth:`CellCoadd.read_legacy <cellcoadd_dask.CellCoadd.read_legacy>` returns a
:class:`LegacyMaskedImage`: an image, a mask and a variance plane over one absolute bbox,
with the file's primary metadata.  Nothing but headers is read until a plane is computed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np

from .errors import MissingDependencyError, ValidationError, shown_url
from .geom import Box, SlicedByBox
from .image import Image
from .mask import Mask, packed_dtype

if TYPE_CHECKING:
    import xarray as xr

    from .projection import SkyProjection

__all__ = ["LegacyMaskedImage", "require_cell_coadds"]


def require_cell_coadds(what: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``lsst.cell_coadds`` if it cannot be imported."""
    import importlib.util

    for package in ("lsst.cell_coadds", "lsst.afw"):
        try:
            found = importlib.util.find_spec(package) is not None
        except ImportError:
            found = False
        if not found:
            raise MissingDependencyError(f"{what} needs {package}, which is not installed.")


class LegacyMaskedImage(SlicedByBox):
    """Image, mask and variance planes of a legacy masked image, read lazily.

    Parameters
    ----------
    image, variance
        The image and variance planes.
    mask
        The mask.  Read without a ``plane_map``, its planes are the legacy ones, named by the
        file's ``MP_<NAME>`` cards, each at its legacy bit (gaps are reserved bits), with empty
        descriptions.  (``lsst.images`` instead guesses new plane names from built-in tables
        and from which optional planes have pixels set, which needs a full read; pass
        ``plane_map`` to get the names it would choose.)
    metadata
        The ``LSST IMAGES KEY n``/``LSST IMAGES VALUE n`` pairs of the primary header.
    header
        The other valued cards of the primary header (structural cards left out).
    source_url
        The file read.
    quantized
        The planes whose pixels the file stores quantized (lossy tile compression).
    preserve_quantization
        What the reader was asked: remembered only, since this package writes no legacy file
        (its FITS writer compresses anew, so quantized values are quantized again).
    storage
        Plane -> how the file stores it, for :meth:`describe`.
    projection
        The image's sky projection (see :attr:`projection`).

    Raises
    ------
    ValidationError
        If the planes do not share one bbox.
    """

    def __init__(
        self,
        image: Image,
        mask: Mask,
        variance: Image,
        *,
        metadata: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
        source_url: str | None = None,
        quantized: Sequence[str] = (),
        preserve_quantization: bool = False,
        storage: Mapping[str, str] | None = None,
        projection: SkyProjection | None = None,
    ) -> None:
        if not image.bbox == mask.bbox == variance.bbox:
            raise ValidationError(f"planes over different boxes: {image.bbox}, {mask.bbox}, {variance.bbox}")
        self.image = image
        self.mask = mask
        self.variance = variance
        self._metadata = dict(metadata or {})
        self._header = dict(header or {})
        self.source_url = source_url
        self.quantized = tuple(quantized)
        self.preserve_quantization = preserve_quantization
        self._storage = dict(storage or {})
        self._projection = projection

    @property
    def bbox(self) -> Box:
        """Absolute bbox of the planes (the first pixel is ``-LTV2, -LTV1`` of the file)."""
        return self.image.bbox

    @property
    def unit(self) -> u.UnitBase | None:
        """Unit of the image plane (``BUNIT``), or ``None``."""
        return self.image.unit

    @property
    def projection(self) -> SkyProjection | None:
        """The image HDU's celestial FITS WCS as a projection of absolute pixels, when read with ``fits_wcs_frame``.

        ``None`` otherwise, or when the HDU has no celestial WCS.  It belongs to no skymap
        (``skymap`` is ``""``, ``tract`` -1, its tract box the image's).
        """
        return self._projection

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The ``LSST IMAGES KEY``/``VALUE`` pairs of the primary header (read-only)."""
        return MappingProxyType(self._metadata)

    @property
    def header(self) -> Mapping[str, Any]:
        """The other valued primary cards, ``HIERARCH`` keywords included (read-only)."""
        return MappingProxyType(self._header)

    def __getitem__(self, box: Any) -> LegacyMaskedImage:
        if box is Ellipsis:
            return self
        if not isinstance(box, Box):
            raise TypeError(f"Masked images are sliced with a Box (absolute coordinates), not {box!r}.")
        return LegacyMaskedImage(
            self.image[box], self.mask[box], self.variance[box], metadata=self._metadata, header=self._header,
            source_url=self.source_url, quantized=self.quantized, preserve_quantization=self.preserve_quantization,
            storage=self._storage, projection=self._projection,
        )

    def to_xarray(self) -> xr.Dataset:
        """A lazy Dataset of the three planes on absolute ``(y, x)`` coordinates (nothing is read).

        Variables and attributes as in :meth:`CellCoadd.to_xarray <cellcoadd_dask.CellCoadd.to_xarray>`
        where they apply: ``image`` and ``variance`` (``units``), ``mask`` packed (schema bit
        ``n`` at bit ``n``, CF ``flag_masks``/``flag_meanings``); attrs ``title``, ``bbox``,
        ``metadata`` (JSON), ``source_url``.
        """
        import xarray as xr_module
        bbox = self.bbox
        schema = self.mask.schema
        mask_attrs = {
            "long_name": "bit mask",
            "flag_masks": [1 << schema.index(n) for n in schema.names],
            "flag_meanings": " ".join(schema.names),
            "flag_descriptions": json.dumps(schema.descriptions()),
            "mask_schema": json.dumps([None if p is None else [p.name, p.description] for p in schema]),
            "mask_dtype": str(schema.dtype),
        }
        try:
            packed_dtype(schema)
            mask_var = xr_module.Variable(("y", "x"), self.mask.packed(), mask_attrs)
        except ValueError:
            mask_var = xr_module.Variable(("y", "x", "mask_element"), self.mask.array, mask_attrs)

        def units(image: Image) -> dict[str, Any]:
            return {"units": None if image.unit is None else image.unit.to_string()}

        data_vars = {
            "image": xr_module.Variable(("y", "x"), self.image.array, units(self.image)),
            "mask": mask_var,
            "variance": xr_module.Variable(("y", "x"), self.variance.array, units(self.variance)),
        }
        coords = {
            "y": ("y", np.arange(bbox.y.start, bbox.y.stop, dtype=np.int64)),
            "x": ("x", np.arange(bbox.x.start, bbox.x.stop, dtype=np.int64)),
        }
        attrs: dict[str, Any] = {
            "title": "masked image (legacy FITS)",
            "bbox": str(bbox),
            "metadata": json.dumps(self._metadata, default=str),
        }
        ds = xr_module.Dataset(data_vars, coords=coords, attrs=attrs)
        if self.source_url is not None:
            ds.attrs["source_url"] = shown_url(self.source_url)
            ds.encoding["source"] = shown_url(self.source_url)
        return ds

    def __repr__(self) -> str:
        unit = f", unit={self.unit}" if self.unit is not None else ""
        return f"LegacyMaskedImage({self.bbox}, {self.image.dtype}{unit}, planes={self.mask.schema.names})"

    def describe(self) -> str:
        """A plain-text summary: source, bbox, planes with dtype, unit, chunks and storage, mask planes (no I/O)."""
        lines = [
            "LegacyMaskedImage",
            f"  source    {shown_url(self.source_url) if self.source_url else '(in memory)'}",
            f"  bbox      {self.bbox} (shape {tuple(self.bbox.shape)})",
        ]
        for name, plane in (("image", self.image), ("mask", self.mask), ("variance", self.variance)):
            unit = getattr(plane, "unit", None)
            chunks = "x".join(str(max(c)) for c in plane.array.chunks[:2])
            stored = self._storage.get(name, "")
            lines.append(
                f"  {name:<9} {plane.array.dtype}{'' if unit is None else f' [{unit}]'}, chunks up to {chunks}"
                f"{f', {stored}' if stored else ''}"
            )
        if self.quantized:
            lines.append(f"  quantized {', '.join(self.quantized)}")
        lines.append("  mask planes")
        for n, mask_plane in enumerate(self.mask.schema):
            if mask_plane is not None:
                text = f": {mask_plane.description}" if mask_plane.description else ""
                lines.append(f"    {n:>2} {mask_plane.name}{text}")
        lines.append(f"  metadata  {len(self._metadata)} entries; primary header {len(self._header)} cards")
        return "\n".join(lines)
