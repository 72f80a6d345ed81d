"""The ``ds.cellcoadd`` accessor: cell-coadd operations on the Dataset view of a coadd or a tract.

The Datasets are those of :func:`~cellcoadd_dask.xarray_dataset.coadd_to_dataset`.  Importing
this module (which importing the package does) registers the accessor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import astropy.units as u
import numpy as np
import xarray as xr

from .coadd import CellCoadd
from .errors import BoundsError, CellCoaddError, ValidationError
from .geom import Box
from .xarray_dataset import box_of, dataset_to_coadd, schema_from_attrs

__all__ = ["CellCoaddAccessor"]


def _trim_psf(ds: xr.Dataset) -> xr.Dataset:
    """Keep only the PSF cells that the Dataset's pixels lie in."""
    from .xarray_dataset import PSF_CELL_DIMS

    if "psf" not in ds or "cell_i" not in ds.coords or PSF_CELL_DIMS[0] not in ds["psf"].dims:
        return ds
    ci, cj = ds["cell_i"].values, ds["cell_j"].values
    di, dj = PSF_CELL_DIMS
    return ds.sel({di: slice(int(ci.min()), int(ci.max())), dj: slice(int(cj.min()), int(cj.max()))})


@xr.register_dataset_accessor("cellcoadd")
class CellCoaddAccessor:
    """Cell-coadd operations on the Dataset view of a coadd or a tract (``ds.cellcoadd``).

    Holds no state of its own: everything is read from the Dataset's variables and attrs.
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def _projection(self) -> Any:
        from .projection import SkyProjection

        try:
            return SkyProjection.from_json(json.loads(self._ds.attrs["sky_projection"]))
        except KeyError:
            raise CellCoaddError("This Dataset has no 'sky_projection' attribute (not a cell coadd view).") from None

    @property
    def factor(self) -> int:
        """Full-resolution pixels per pixel of the Dataset (1; the factor after :meth:`coarsen`)."""
        from .coarsen import COARSEN_ATTR

        return int(self._ds.attrs.get(COARSEN_ATTR, 1))

    @property
    def bbox(self) -> Box:
        """Absolute (full-resolution) bbox of the Dataset's (y, x) extent.

        For a coarsened Dataset, the full-resolution pixels its blocks cover.
        """
        if self.factor > 1:
            from .coarsen import covered_box

            return covered_box(self._ds)
        return box_of(self._ds)

    @property
    def wcs(self) -> Any:
        """Astropy WCS of the Dataset's local (array) pixel grid (also of a coarsened Dataset)."""
        from .coarsen import grid_wcs

        return grid_wcs(self._projection(), self._ds)

    def coarsen(self, factor: int) -> xr.Dataset:
        """Exact, lazy block reduction by ``factor``, blocks aligned on absolute multiples of it.

        Image (and noise, mask fractions): mean of the finite pixels without ``NO_DATA``;
        variance: sum of their variances over their number squared; mask: bitwise OR of the
        block; ``count``: pixels averaged.  See :func:`cellcoadd_dask.coarsen.coarsen_dataset`.
        """
        from .coarsen import coarsen_dataset

        return coarsen_dataset(self._ds, factor)

    def pixel_to_sky(self, *, y: Any, x: Any) -> Any:
        """Sky coordinates (ICRS ``SkyCoord``) of absolute pixel positions."""
        return self._projection().pixel_to_sky(x=x, y=y)

    def sky_to_pixel(self, coord: Any) -> Any:
        """Absolute pixel positions ``(x, y)`` of sky coordinates."""
        return self._projection().sky_to_pixel(coord)

    def sel_sky(self, ra: Any, dec: Any, radius: Any) -> xr.Dataset:
        """The part of the Dataset within ``radius`` of (``ra``, ``dec``), as a box.

        Parameters
        ----------
        ra, dec
            ICRS position: astropy Quantities (or Angles), or numbers in degrees.
        radius
            An astropy angle Quantity (``5 * u.arcsec``).  A bare number is refused: read as
            degrees, ``5`` would select a box as wide as several tracts.

        Returns
        -------
        xarray.Dataset
            The box of pixels covering the circle (clipped to the Dataset); the ``psf``
            variable keeps only the cells the box covers.

        Raises
        ------
        ValidationError
            If ``radius`` is not an angle Quantity.
        BoundsError
            If the circle does not overlap the Dataset.
        """
        from astropy.coordinates import SkyCoord

        if not isinstance(radius, u.Quantity) or radius.unit.physical_type != "angle":
            raise ValidationError(
                f"sel_sky: radius must be an astropy angle Quantity (for example 5 * u.arcsec), not {radius!r}."
            )
        ra_q = ra if isinstance(ra, u.Quantity) else ra * u.deg
        dec_q = dec if isinstance(dec, u.Quantity) else dec * u.deg
        center = SkyCoord(ra_q, dec_q, frame="icrs")
        angles = np.linspace(0.0, 360.0, 64, endpoint=False) * u.deg
        xs, ys = self.sky_to_pixel(center.directional_offset_by(angles, radius))
        xc, yc = self.sky_to_pixel(center)
        xs = np.append(np.asarray(xs), xc)
        ys = np.append(np.asarray(ys), yc)
        y0, y1 = int(np.floor(ys.min() + 0.5)), int(np.floor(ys.max() + 0.5)) + 1
        x0, x1 = int(np.floor(xs.min() + 0.5)), int(np.floor(xs.max() + 0.5)) + 1
        half = (self.factor - 1) / 2  # coarsened: keep every block whose pixels meet the box
        out = self._ds.sel(y=slice(y0 - half, y1 - 1 + half), x=slice(x0 - half, x1 - 1 + half))
        if out.sizes["y"] == 0 or out.sizes["x"] == 0:
            raise BoundsError(f"The sky circle does not overlap the Dataset ({self.bbox}).")
        return _trim_psf(out)

    def valid(self, exclude: Sequence[str] = ("NO_DATA",)) -> xr.Dataset:
        """The Dataset with excluded pixels set to NaN, lazily.

        Pixels where a plane of ``exclude`` is set (by default ``NO_DATA``) become NaN in every
        floating-point variable on ``(y, x)`` (image, variance, noise realizations, mask
        fractions), so that a missing cell inside a patch (stored as image 0, variance inf)
        and a missing patch of a tract (NaN) read alike and NaN-aware reductions
        (``.mean()``, ``coarsen``) skip both.  The mask is kept as it is.

        Raises
        ------
        ValidationError
            If a plane of ``exclude`` other than ``NO_DATA`` is not in the mask schema.
        """
        from .cellstats import valid_mask

        keep = valid_mask(self._ds, exclude)
        out = self._ds.copy()
        for name, var in self._ds.data_vars.items():
            if name != "mask" and {"y", "x"} <= set(var.dims) and var.dtype.kind == "f":
                out[name] = var.where(keep)
                out[name].attrs = var.attrs
        return out

    def plot(self, variable: str = "image", **kwargs: Any) -> Any:
        """A figure of a variable or mask plane on sky axes, read at the resolution it shows.

        See :func:`cellcoadd_dask.dataset_plot.plot_dataset` for the keywords (``stretch``,
        ``overlay``, ``grid``, ``pixels``, ``pyramid``, ``figsize``, ``dpi``).
        """
        from .dataset_plot import plot_dataset

        return plot_dataset(self._ds, variable, **kwargs)

    def cell_statistics(self, variable: str = "image", *, exclude: Sequence[str] = ("NO_DATA",),
                        statistics: Sequence[str] | None = None, compute: bool = True) -> xr.Dataset:
        """Per-cell statistics of a variable over the pixels the mask allows.

        See :func:`cellcoadd_dask.cell_statistics` (``statistics=None``: all of them).
        """
        from .cellstats import CELL_STATISTICS, cell_statistics

        return cell_statistics(self._ds, variable, exclude=exclude,
                               statistics=CELL_STATISTICS if statistics is None else statistics, compute=compute)

    def summary(self) -> Any:
        """What the Dataset holds, from its attrs and coordinates (no variable is read).

        Returns
        -------
        cellcoadd_dask.display.dataset.DatasetSummary
            Shown as HTML in notebooks; ``.describe()`` gives plain text.  For a tract
            (:func:`~cellcoadd_dask.open_tract`): skymap, tract, band, tract frame and cell
            grid, a map of the patches present, variables and mask planes; for one coadd's
            view: its patch, cells (missing ones mapped), variables and mask planes.
        """
        from .display.dataset import DatasetSummary, dataset_report

        return DatasetSummary(dataset_report(self._ds))

    def describe(self) -> str:
        """The :meth:`summary` as plain text for terminals (``print(ds.cellcoadd.describe())``)."""
        return str(self.summary().describe())

    def mask_plane(self, name: str) -> xr.DataArray:
        """Lazy boolean DataArray of one mask plane."""
        mask = self._ds["mask"]
        names = mask.attrs["flag_meanings"].split()
        if name not in names:
            raise KeyError(f"Unknown mask plane {name!r}; planes are {names}.")
        if mask.chunks is None:
            # Arithmetic on a lazily indexed (not dask) variable would read the whole mask now.
            mask = mask.chunk()
        if "mask_element" in mask.dims:
            # Too many planes for one integer: the in-memory (y, x, element) layout.
            element, bit = schema_from_attrs(mask.attrs).bit(name)
            return ((mask.isel(mask_element=element) & bit) != 0).rename(name)
        bit = int(mask.attrs["flag_masks"][names.index(name)])
        return ((mask & bit) != 0).rename(name)

    def to_coadd(self) -> CellCoadd:
        """Rebuild a lazy :class:`~cellcoadd_dask.CellCoadd` from the Dataset.

        Provenance, aperture corrections and backgrounds are not Dataset variables: when
        the Dataset has a ``source_url`` attribute they are re-read from that archive on
        first access (without storage options, so a private object store needs them in
        the environment).  A presigned ``source_url`` keeps no signature in the attrs
        (``...?***``), so such a coadd has none of them.
        """
        return dataset_to_coadd(self._ds)
