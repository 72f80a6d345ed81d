"""The :class:`CellCoadd` data model: lazy planes plus cell PSF, sky projection and provenance.

No I/O happens here; archive readers build a ``CellCoadd`` from lazily indexed sources,
and nothing is read until an array is computed or a deferred table is asked for.  Opening
and writing archives (``read_*``, ``write*``, ``serialize``) come from its base
:class:`~cellcoadd_dask.coadd_archives.CoaddArchives`.
"""

from __future__ import annotations

import copy as _copy
import functools
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import astropy.units as u
import dask.array as da
import numpy as np

from .cells import CellGrid, CellGridBounds, CellIJ, PatchDefinition
from .coadd_archives import DEFAULT_COMPRESSION, CoaddArchives
from .deferred import Deferred, resolve
from .errors import BoundsError, ValidationError
from .geom import Box, Interval, SlicedByBox
from .image import Image
from .mask import Mask, MaskSchema
from .psf import CellPointSpreadFunction

if TYPE_CHECKING:
    import astropy.io.fits
    import astropy.wcs
    import xarray as xr
    from astropy.coordinates import SkyCoord

    from .projection import SkyProjection
    from .stored import StoredArchive

__all__ = ["DEFAULT_COMPRESSION", "CellCoadd"]


def _subset_provenance(parent: Any, cells: frozenset[CellIJ]) -> Any:
    prov = resolve(parent)
    return None if prov is None else prov.subset(cells)


class CellCoadd(SlicedByBox, CoaddArchives):
    """A cell-based coadd.

    Image, mask, variance, mask fractions and noise realizations over one absolute bbox,
    with a PSF per cell, a sky projection on a tract frame, and patch provenance.

    Parameters
    ----------
    image
        The main plane; must have a unit.
    mask
        The mask; exactly one of ``mask`` and ``mask_schema`` is given.
    variance
        Per-pixel variance in ``unit**2``; defaults to 1.0 everywhere.
    mask_fractions
        Plane name -> fraction image (no unit).
    noise_realizations
        Monte Carlo noise images.
    mask_schema
        Schema of an all-zero mask when ``mask`` is not given.
    projection
        Sky projection of absolute pixels (``sky_projection`` is accepted as an alias).
    band
        Band name, e.g. ``"r"``.
    psf
        The per-cell PSF; its bounds are the coadd's cell bounds.
    patch, provenance, aperture_corrections, backgrounds, metadata
        Patch geometry, input provenance (may be deferred), per-cell aperture corrections,
        background models and flexible metadata.
    extra
        Top-level fields of a stored tree that this version does not interpret, kept so that
        a write can pass them through.
    source_url
        The archive the coadd was read from, if any.
    stored
        What the reader kept of that archive (its tree and HDU index), so that writes pass
        through unknown fields and the HDUs only they reference.
    """

    def __init__(
        self,
        image: Image,
        *,
        mask: Mask | None = None,
        variance: Image | None = None,
        mask_fractions: Mapping[str, Image] | None = None,
        noise_realizations: Sequence[Image] = (),
        mask_schema: MaskSchema | None = None,
        projection: SkyProjection | None = None,
        sky_projection: SkyProjection | None = None,
        band: str | None = None,
        psf: CellPointSpreadFunction,
        patch: PatchDefinition | None = None,
        provenance: Any = None,
        aperture_corrections: Any = None,
        backgrounds: Any = None,
        metadata: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        source_url: str | None = None,
        stored: Any = None,
        butler_info: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(image, Image):
            raise TypeError(f"image must be a cellcoadd_dask.Image, not {type(image).__name__}.")
        if image.unit is None:
            raise ValidationError("The image of a CellCoadd must have a unit.")
        if (mask is None) == (mask_schema is None):
            raise ValidationError("Give exactly one of mask and mask_schema.")
        if mask is None:
            assert mask_schema is not None
            mask = Mask(
                da.zeros(
                    (*image.bbox.shape, mask_schema.mask_size),
                    dtype=mask_schema.dtype,
                    chunks=(*image.array.chunks, -1),
                ),
                schema=mask_schema,
                bbox=image.bbox,
            )
        if variance is None:
            variance = Image(
                da.ones(image.array.shape, dtype=np.float32, chunks=image.array.chunks),
                bbox=image.bbox,
                unit=image.unit**2,
            )
        elif variance.unit is None:
            variance = Image(variance.array, bbox=variance.bbox, unit=image.unit**2)
        elif variance.unit != image.unit**2:
            raise ValidationError(
                f"Variance unit ({variance.unit}) should be the square of the image unit ({image.unit})."
            )
        checked: list[tuple[str, Image | Mask]] = [("mask", mask), ("variance", variance)]
        for name, plane in checked:
            if plane.bbox != image.bbox:
                raise ValidationError(f"Image ({image.bbox}) and {name} ({plane.bbox}) bboxes do not agree.")
        mask_fractions = dict(mask_fractions or {})
        noise_realizations = list(noise_realizations)
        for name, plane in [*mask_fractions.items(), *((str(n), v) for n, v in enumerate(noise_realizations))]:
            if plane.bbox != image.bbox:
                raise ValidationError(f"Image ({image.bbox}) and plane {name!r} ({plane.bbox}) bboxes do not agree.")
        if projection is None:
            projection = sky_projection
        if projection is None:
            raise ValidationError("A CellCoadd needs a sky projection.")
        if not isinstance(psf, CellPointSpreadFunction):
            raise TypeError("psf must be a CellPointSpreadFunction.")
        if psf.bounds.bbox.intersection(image.bbox) is None:
            raise ValidationError(f"PSF bounds {psf.bounds.bbox} do not overlap the image {image.bbox}.")
        if not psf.bounds.bbox.contains(image.bbox) or not image.bbox.contains(psf.bounds.bbox):
            inner = psf.bounds.bbox.intersection(image.bbox)
            assert inner is not None
            psf = psf.subset(inner)
        if provenance is not None and patch is None:
            raise ValidationError("A CellCoadd cannot carry provenance without a patch definition.")
        self._image = image
        self._mask = mask
        self._variance = variance
        self._mask_fractions = mask_fractions
        self._noise_realizations = noise_realizations
        self._projection = projection
        self._band = band
        self._psf = psf
        self._patch = patch
        self._provenance = provenance
        self._aperture_corrections = aperture_corrections
        self._backgrounds = backgrounds
        self._metadata = dict(metadata or {})
        self._extra = dict(extra or {})
        self._butler_info = None if butler_info is None else dict(butler_info)
        self._source_url = source_url
        self._stored = stored

    # ----------------------------------------------------------------- planes
    @property
    def image(self) -> Image:
        """The main plane."""
        return self._image

    @property
    def mask(self) -> Mask:
        """The bit mask."""
        return self._mask

    @property
    def mask_schema(self) -> MaskSchema:
        """The mask planes."""
        return self._mask.schema

    @property
    def variance(self) -> Image:
        """Per-pixel variance (``unit**2``)."""
        return self._variance

    @property
    def mask_fractions(self) -> Mapping[str, Image]:
        """Mask-fraction planes by name."""
        return self._mask_fractions

    @property
    def noise_realizations(self) -> Sequence[Image]:
        """Monte Carlo noise realizations."""
        return self._noise_realizations

    # ----------------------------------------------------------------- geometry
    @property
    def bbox(self) -> Box:
        """Absolute (tract) bbox of every plane."""
        return self._image.bbox

    @property
    def yx0(self) -> Any:
        """Absolute coordinates of the first pixel."""
        return self.bbox.start

    @property
    def unit(self) -> u.UnitBase:
        """The image unit."""
        return self._image.unit

    @property
    def psf(self) -> CellPointSpreadFunction:
        """The per-cell PSF (kernels are read per cell on demand)."""
        return self._psf

    @property
    def bounds(self) -> CellGridBounds:
        """Cells covered by this coadd, and the missing ones (from the PSF bounds)."""
        return self._psf.bounds

    @property
    def grid(self) -> CellGrid:
        """The cell grid."""
        return self._psf.bounds.grid

    @property
    def projection(self) -> SkyProjection:
        """Sky projection of absolute pixel coordinates."""
        return self._projection

    @property
    def sky_projection(self) -> SkyProjection:
        """Alias of :attr:`projection` (the lsst-images name)."""
        return self._projection

    @property
    def skymap(self) -> str:
        """Name of the skymap of the tract frame."""
        return self._projection.skymap

    @property
    def tract(self) -> int:
        """Tract number."""
        return self._projection.tract

    @property
    def band(self) -> str | None:
        """Band name."""
        return self._band

    @property
    def patch(self) -> PatchDefinition:
        """Patch geometry (``AttributeError`` when the coadd has none, as in lsst-images)."""
        if self._patch is None:
            raise AttributeError("This coadd has no patch definition.")
        return self._patch

    @property
    def patch_definition(self) -> PatchDefinition | None:
        """The patch geometry, or ``None`` when the coadd has none.

        Unlike :attr:`patch`, which raises ``AttributeError`` then (as in lsst-images).
        """
        return self._patch

    @property
    def deferred_fields(self) -> Mapping[str, Any]:
        """The fields read on first access, as held: looking at them never reads them.

        A read-only mapping of ``"provenance"``, ``"aperture_corrections"`` and
        ``"backgrounds"`` to ``None`` when the coadd has none, a
        ``Deferred`` (its ``loaded`` says whether it has been
        read) or the value itself.  :attr:`provenance`, :attr:`aperture_corrections` and
        :attr:`backgrounds` give the values, reading them if needed.
        """
        return MappingProxyType(
            {
                "provenance": self._provenance,
                "aperture_corrections": self._aperture_corrections,
                "backgrounds": self._backgrounds,
            }
        )

    @property
    def provenance(self) -> Any:
        """Input provenance, read on first access (``AttributeError`` when absent)."""
        prov = resolve(self._provenance)
        if prov is None:
            raise AttributeError("This coadd has no provenance.")
        return prov

    @property
    def aperture_corrections(self) -> Any:
        """Per-cell aperture corrections by algorithm name (empty mapping when none)."""
        value = resolve(self._aperture_corrections)
        return {} if value is None else value

    @property
    def backgrounds(self) -> Any:
        """Background models: a :class:`~cellcoadd_dask.backgrounds.BackgroundMap`, or ``None`` when absent.

        Its fields render lazily; node values stored in archive items of their own are read from
        the archive this coadd was read from, when a field is evaluated.
        """
        backgrounds = resolve(self._backgrounds)
        if backgrounds is not None and self._stored is not None and backgrounds.array_reader is None:
            backgrounds = backgrounds.with_array_reader(self._stored_array_reader(self._stored))
        return backgrounds

    def apply_background(self, name: str | None) -> CellCoadd:
        """A copy of the coadd with background ``name`` subtracted instead of the one subtracted now (lazy).

        The background subtracted now, if any, is added back and ``name``'s subtracted;
        ``name=None`` restores the original pixels.  Only the image changes, as a dask
        expression: nothing is read or computed now.  The new coadd's
        ``backgrounds.subtracted`` is ``name``.

        Raises
        ------
        KeyError
            If the coadd has no background ``name``.
        astropy.units.UnitConversionError
            If a background's unit does not convert to the image's.
        """
        from .backgrounds import apply_background

        image = self._image
        pixels, backgrounds = apply_background(image.array, bbox=image.bbox, unit=image.unit,
                                               backgrounds=self.backgrounds, name=name)
        out = self.copy()
        if pixels is not image.array:
            out._image = Image(pixels, bbox=image.bbox, unit=image.unit)
        out._backgrounds = backgrounds
        return out

    @property
    def source_url(self) -> str | None:
        """The archive this coadd was read from (``None`` for one built in memory)."""
        return self._source_url

    @property
    def stored(self) -> StoredArchive | None:
        """What the coadd remembers of the archive it was read from (``None`` for one built in memory).

        A write passes through what this version does not interpret: unknown tree fields and
        the arrays only they (or background models) reference.
        """
        return self._stored

    @property
    def metadata(self) -> dict[str, Any]:
        """Flexible metadata (str -> scalar)."""
        return self._metadata

    @property
    def butler_info(self) -> dict[str, Any] | None:
        """The tree's ``butler_info`` as stored (JSON), or ``None``; see :attr:`butler_dataset`."""
        return self._butler_info

    @property
    def butler_dataset(self) -> Any:
        """The butler dataset this coadd was written as, or ``None``.

        A ``lsst.daf.butler.SerializedDatasetRef`` when ``lsst.daf.butler`` is importable,
        otherwise a :class:`~cellcoadd_dask.butler_info.DatasetRefInfo` with the same fields.
        """
        from .butler_info import dataset_of

        return dataset_of(self._butler_info, url=self._source_url)

    @property
    def butler_provenance(self) -> Any:
        """The butler inputs and quantum that produced this coadd, or ``None``.

        A ``lsst.daf.butler.DatasetProvenance`` when ``lsst.daf.butler`` is importable,
        otherwise a :class:`~cellcoadd_dask.butler_info.DatasetProvenanceInfo` with the same fields.
        """
        from .butler_info import provenance_of

        return provenance_of(self._butler_info, url=self._source_url)

    @property
    def extra(self) -> dict[str, Any]:
        """Top-level tree fields this version does not interpret (passed through on write)."""
        return self._extra

    @property
    def obs_info(self) -> dict[str, Any]:
        """Observation summary: band, skymap, tract, patch id and index."""
        patch = self._patch
        return {
            "band": self._band,
            "skymap": self.skymap,
            "tract": self.tract,
            "patch": None if patch is None else patch.id,
            "patch_index": None if patch is None else (patch.index.y, patch.index.x),
        }

    @property
    def fits_wcs(self) -> astropy.io.fits.Header:
        """FITS WCS cards for the local pixel grid of this coadd (FITS pixel 1 = ``bbox.start``)."""
        return self._projection.fits_wcs(self.bbox)

    @property
    def astropy_wcs(self) -> astropy.wcs.WCS:
        """Astropy WCS for the local (array) pixel grid of this coadd."""
        return self._projection.astropy_wcs(self.bbox)

    def bbox_from_sky_circle(self, center: SkyCoord, radius: u.Quantity) -> Box:
        """The part of :attr:`bbox` that covers a sky circle (raises :class:`BoundsError` if none)."""
        n = 64
        import astropy.units as units

        angles = np.linspace(0.0, 360.0, n, endpoint=False) * units.deg
        ring = center.directional_offset_by(angles, radius)
        x, y = self._projection.sky_to_pixel(ring)
        xc, yc = self._projection.sky_to_pixel(center)
        xs = np.concatenate([np.atleast_1d(x), np.atleast_1d(xc)])
        ys = np.concatenate([np.atleast_1d(y), np.atleast_1d(yc)])
        box = Box(
            Interval(int(np.floor(ys.min() + 0.5)), int(np.floor(ys.max() + 0.5)) + 1),
            Interval(int(np.floor(xs.min() + 0.5)), int(np.floor(xs.max() + 0.5)) + 1),
        )
        out = box.intersection(self.bbox)
        if out is None:
            raise BoundsError(f"The sky circle ({box}) does not overlap the coadd {self.bbox}.")
        return out

    # ----------------------------------------------------------------- subsets
    def __getitem__(self, box: Any) -> CellCoadd:
        """The coadd over an absolute ``box`` (lazy; ``...`` means the whole coadd)."""
        if box is Ellipsis:
            return self
        if not isinstance(box, Box):
            raise TypeError(f"A CellCoadd is sliced with a Box (absolute coordinates) or ..., not {box!r}.")
        if not self.bbox.contains(box):
            raise BoundsError(f"Box {box} is not contained in the coadd bbox {self.bbox}.")
        psf = self._psf.subset(box)
        cells = frozenset(psf.bounds.cell_indices())
        provenance = self._provenance
        if provenance is not None:
            provenance = Deferred(functools.partial(_subset_provenance, provenance, cells))
        return CellCoadd(
            self._image[box],
            mask=self._mask[box],
            variance=self._variance[box],
            mask_fractions={k: v[box] for k, v in self._mask_fractions.items()},
            noise_realizations=[v[box] for v in self._noise_realizations],
            projection=self._projection,
            band=self._band,
            psf=psf,
            patch=self._patch,
            provenance=provenance,
            aperture_corrections=self._aperture_corrections,
            backgrounds=self._backgrounds,
            metadata=self._metadata,
            extra=self._extra,
            butler_info=self._butler_info,
            source_url=self._source_url,
            stored=self._stored,
        )

    def copy(self) -> CellCoadd:
        """A deep copy of the model (dask graphs are immutable and shared; nothing is computed)."""
        out = _copy.copy(self)
        out._mask_fractions = dict(self._mask_fractions)
        out._noise_realizations = list(self._noise_realizations)
        out._metadata = _copy.deepcopy(self._metadata)
        return out

    def persist(self, *planes: str, **kwargs: Any) -> CellCoadd:
        """A coadd whose planes are read once and kept in memory (``dask.persist``).

        Parameters
        ----------
        *planes
            Which planes: ``"image"``, ``"variance"``, ``"mask"``, ``"mask_fractions"``,
            ``"noise_realizations"``; all of them when none is given.
        **kwargs
            Passed to :func:`dask.persist` (e.g. ``scheduler``).
        """
        import dask

        known = ("image", "variance", "mask", "mask_fractions", "noise_realizations")
        unknown = set(planes) - set(known)
        if unknown:
            raise ValueError(f"Unknown planes {sorted(unknown)}; choose from {known}.")
        chosen = set(planes or known)
        out = self.copy()
        images: list[tuple[str, Any, Image]] = []
        if "image" in chosen:
            images.append(("_image", None, self._image))
        if "variance" in chosen:
            images.append(("_variance", None, self._variance))
        if "mask_fractions" in chosen:
            images += [("_mask_fractions", k, v) for k, v in self._mask_fractions.items()]
        if "noise_realizations" in chosen:
            images += [("_noise_realizations", n, v) for n, v in enumerate(self._noise_realizations)]
        arrays = [image.array for _, _, image in images]
        if "mask" in chosen:
            arrays.append(self._mask.array)
        persisted = list(dask.persist(*arrays, **kwargs))
        if "mask" in chosen:
            out._mask = Mask(persisted.pop(), schema=self._mask.schema, bbox=self._mask.bbox)
        for (attr, key, image), array in zip(images, persisted, strict=True):
            new = Image(array, bbox=image.bbox, unit=image.unit)
            if key is None:
                setattr(out, attr, new)
            else:
                getattr(out, attr)[key] = new
        return out

    # ----------------------------------------------------------------- metadata
    def load_metadata(self) -> CellCoadd:
        """Read every plane's header and tile table now, in at most two batched requests per file.

        After this the planes' sources hold the byte range and decode parameters of every
        tile, so the tasks of a graph (on any worker) fetch tiles and nothing else.  Opening
        does this by itself when a ``dask.distributed`` client is active (``preload=None``).

        Returns
        -------
        CellCoadd
            ``self``.
        """
        # Sources that keep metadata of their own (FITS headers and tile tables) offer a
        # ``load_metadata(sources)`` that loads it for many sources at once.
        by_type: dict[type, list[Any]] = {}
        planes: list[Any] = [self._image, self._variance, self._mask, *self._mask_fractions.values(),
                             *self._noise_realizations]
        sources = [origin.source for plane in planes if (origin := plane.origin) is not None]
        if self._psf.origin is not None:
            sources.append(self._psf.origin[0])
        for source in sources:
            by_type.setdefault(type(source), []).append(source)
        for kind, group in by_type.items():
            load = getattr(kind, "load_metadata", None)
            if load is not None:
                load(group)
        return self

    # ----------------------------------------------------------------- views
    def to_xarray(self) -> xr.Dataset:
        """The coadd as a lazy :class:`xarray.Dataset` (see :mod:`cellcoadd_dask.xarray_dataset`)."""
        from .xarray_dataset import coadd_to_dataset

        return coadd_to_dataset(self)

    def __repr__(self) -> str:
        return f"CellCoadd({self.bbox}, tract={self.tract})"

    def describe(self) -> str:
        """A plain-text summary for terminals (``print(coadd.describe())``); reads no pixel, table or header.

        Band, skymap, tract, patch, bbox, sky position, the cell grid with a map of missing
        cells, every plane with what the archive's index already tells of its storage, and
        the mask planes.
        """
        from .display.render import to_text
        from .display.reports import coadd_report

        return to_text(coadd_report(self))

    def _repr_html_(self) -> str:
        """The summary of :meth:`describe` as HTML, for notebooks (no I/O)."""
        from .display.render import to_html
        from .display.reports import coadd_report

        return to_html(coadd_report(self))
