"""A lazy image plane: a dask array, its absolute bbox and its unit."""

from __future__ import annotations

from typing import Any

import astropy.units as u
import dask.array as da
import numpy as np

from .errors import ValidationError
from .geom import Box, SlicedByBox
from .lazy import PlaneOrigin

__all__ = ["Image"]


def _with_unit(block: np.ndarray, *, unit: u.UnitBase) -> u.Quantity:
    return u.Quantity(block, unit, copy=False)


class Image(SlicedByBox):
    """A 2-d image over an absolute (tract) bbox.

    Parameters
    ----------
    array
        2-d array (dask, or anything ``dask.array.asarray`` accepts), indexed (y, x).
    bbox
        Absolute bbox; defaults to the array shape at origin (0, 0).
    unit
        Pixel unit (astropy unit or string), or ``None``.
    base
        The array and bbox this image was cut from, if any (set by slicing).
    origin
        Where the pixels are read from, when they come from an archive: cut-outs then read
        through their own window of the stored array.
    """

    def __init__(
        self,
        array: Any,
        *,
        bbox: Box | None = None,
        unit: u.UnitBase | str | None = None,
        base: tuple[da.Array, Box] | None = None,
        origin: PlaneOrigin | None = None,
    ) -> None:
        if not isinstance(array, da.Array):
            array = da.asarray(array)
        if array.ndim != 2:
            raise ValidationError(f"An image must be 2-d, got shape {array.shape}.")
        if bbox is None:
            bbox = Box.from_shape(array.shape)
        if tuple(bbox.shape) != tuple(array.shape):
            raise ValidationError(f"Image array of shape {array.shape} does not fit bbox {bbox}.")
        self.array = array
        self.bbox = bbox
        self.unit = u.Unit(unit) if isinstance(unit, str) else unit
        # The array this one was cut from: sub-images slice it directly, so that dask hands
        # the source one region (it fuses a single level of slicing into the read).
        self._base = base if base is not None else (array, bbox)
        self._origin = origin

    @property
    def origin(self) -> PlaneOrigin | None:
        """Where the pixels are read from, or ``None`` when they do not come from an archive.

        The stored array's source and bbox: a cut-out keeps its parent's origin and reads
        through its own window of it.
        """
        return self._origin

    @property
    def dtype(self) -> np.dtype:
        """Pixel dtype."""
        return self.array.dtype

    @property
    def quantity(self) -> da.Array:
        """The pixels with their unit, lazily: a dask array whose chunks are `astropy.units.Quantity`.

        Nothing is read until it is computed; ``image.quantity.compute()`` (or any reduction of
        it) is a ``Quantity`` in ``unit`` (dimensionless when the unit is ``None``), as
        ``lsst.images.Image.quantity`` is for an image in memory.
        """
        unit = u.dimensionless_unscaled if self.unit is None else self.unit
        return self.array.map_blocks(_with_unit, unit=unit, dtype=self.array.dtype,
                                     meta=u.Quantity(np.empty((0, 0), dtype=self.array.dtype), unit))

    def __getitem__(self, box: Any) -> Image:
        if box is Ellipsis:
            return self
        if not isinstance(box, Box):
            raise TypeError(f"Images are sliced with a Box (absolute coordinates), not {box!r}.")
        box.slice_within(self.bbox)
        if self._origin is not None:
            return Image(self._origin.cut(box), bbox=box, unit=self.unit, origin=self._origin)
        base, base_bbox = self._base
        sy, sx = box.slice_within(base_bbox)
        return Image(base[sy, sx], bbox=box, unit=self.unit, base=self._base)

    def compute(self, **kwargs: Any) -> np.ndarray:
        """Read and return the pixels as a numpy array (keyword arguments go to ``dask.compute``)."""
        return self.array.compute(**kwargs)

    def copy(self) -> Image:
        """A copy (the dask graph is shared; nothing is computed)."""
        return Image(self.array.copy(), bbox=self.bbox, unit=self.unit, base=self._base, origin=self._origin)

    def __repr__(self) -> str:
        unit = f", unit={self.unit}" if self.unit is not None else ""
        return f"Image({self.bbox}, {self.dtype}{unit})"

    def describe(self) -> str:
        """A plain-text summary: bbox, dtype, unit, chunks and what is known of its storage (no I/O)."""
        from .display.render import to_text
        from .display.reports import image_report

        return to_text(image_report(self))

    def _repr_html_(self) -> str:
        """The summary of :meth:`describe` as HTML, for notebooks (no I/O)."""
        from .display.render import to_html
        from .display.reports import image_report

        return to_html(image_report(self))
