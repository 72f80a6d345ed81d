"""How a :class:`~cellcoadd_dask.CellCoadd` is opened from and written to archives.

:class:`CoaddArchives` is the part of ``CellCoadd`` that is the public API's door to the
archive layer: each method imports its format's reader or writer when called, so that the
coadd model itself imports no archive code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from .archives.output import OutputArchive
    from .coadd import CellCoadd
    from .geom import Box
    from .image import Image
    from .lazy import Chunks
    from .legacy import LegacyMaskedImage
    from .mask import Mask
    from .model import CellCoaddModel

__all__ = ["DEFAULT_COMPRESSION", "CoaddArchives"]


class _DefaultCompression:
    """Marker for "the plane's default compression" (lossless ``GZIP_2``)."""

    def __repr__(self) -> str:
        return "DEFAULT"


_DEFAULT: Any = _DefaultCompression()
DEFAULT_COMPRESSION: Any = _DEFAULT
"""Marker for "the plane's default compression" (lossless ``GZIP_2``) in the ``write_fits`` options."""


class CoaddArchives:
    """Reading and writing archives: the classmethods ``read_*`` and the methods ``write*`` and ``serialize``.

    A base of :class:`~cellcoadd_dask.CellCoadd`; it holds no state.
    """

    @staticmethod
    def _stored_array_reader(stored: Any) -> Callable[..., Any]:
        """A reader of the arrays kept in ``stored`` (what a reader kept of an archive), by source string."""
        from .archives.output import stored_array

        return functools.partial(stored_array, stored)

    # ----------------------------------------------------------------- opening
    @classmethod
    def read_fits(
        cls,
        url: str | PathLike[str],
        *,
        bbox: Box | None = None,
        chunks: Chunks = "auto",
        storage_options: Mapping[str, Any] | None = None,
        preload: bool | None = None,
    ) -> CellCoadd:
        """Open an lsst-images FITS archive lazily (reads metadata only; see :func:`open_coadd`)."""
        from .archives.fits.reader import read_fits

        return read_fits(url, bbox=bbox, chunks=chunks, storage_options=storage_options, preload=preload)

    @classmethod
    def read_json(
        cls,
        url: str | PathLike[str],
        *,
        bbox: Box | None = None,
        chunks: Chunks = "auto",
        storage_options: Mapping[str, Any] | None = None,
    ) -> CellCoadd:
        """Read an lsst-images JSON archive (the whole file is parsed; planes are dask arrays)."""
        from .archives.json.reader import read_json

        return read_json(url, bbox=bbox, chunks=chunks, storage_options=storage_options)

    @classmethod
    def read_zarr(
        cls,
        url: str | PathLike[str],
        *,
        bbox: Box | None = None,
        chunks: Chunks = "auto",
        storage_options: Mapping[str, Any] | None = None,
    ) -> CellCoadd:
        """Open a Zarr archive written by :meth:`CellCoadd.write_zarr` lazily.

        Only the archive's tree is read; see :func:`open_coadd`.
        """
        from .archives.zarr.reader import read_zarr

        return read_zarr(url, bbox=bbox, chunks=chunks, storage_options=storage_options)

    @classmethod
    def read_legacy(
        cls,
        uri: str | PathLike[str],
        *,
        preserve_quantization: bool = False,
        plane_map: Mapping[str, Any] | None = None,
        component: Literal["image", "mask", "variance"] | None = None,
        fits_wcs_frame: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        chunks: Chunks = "auto",
    ) -> LegacyMaskedImage | Image | Mask:
        """Open a FITS file written by afw's ``MaskedImage.writeFits`` lazily (or its masked-image HDUs).

        Reads the headers of the primary HDU and of HDUs 1-3 (image, mask, variance; plain or
        tile-compressed) and the tile-table rows that come with them; a region's pixels are read
        when computed, and then only the tiles it touches.

        Parameters
        ----------
        uri
            Local path or fsspec URL.
        preserve_quantization
            Accepted for compatibility with ``lsst.images``; the result remembers it
            (its ``preserve_quantization`` attribute) and which planes are stored quantized
            (``quantized``), but no precompressed bytes are kept: this package writes no legacy file.
        plane_map
            Legacy plane name -> plane (any object with string ``name`` and ``description``, such
            as a :class:`MaskPlane` or an ``lsst.images.MaskPlane``).  The schema is the map's
            planes, in its order; a legacy plane left out of the map with pixels set raises
            :class:`~cellcoadd_dask.errors.ValidationError` when a region holding such pixels is
            computed.  Without it, the legacy planes are kept as the ``MP_`` cards name them, at
            their bits, with empty descriptions (``lsst.images`` guesses new names instead).
        component
            ``"image"``, ``"mask"`` or ``"variance"``: return that plane only
            (:class:`Image` or :class:`Mask`).
        fits_wcs_frame
            When not ``None`` (``lsst.images`` takes its pixel ``Frame``; any value does here),
            the image HDU's celestial FITS WCS becomes the result's ``projection``, a
            :class:`~cellcoadd_dask.projection.SkyProjection` of absolute pixels (no skymap:
            ``skymap`` ``""``, ``tract`` -1).  Malformed WCS cards raise
            :class:`~cellcoadd_dask.errors.ArchiveFormatError`.
        storage_options
            Passed to fsspec.
        chunks
            ``"auto"``, ``"cell"`` or a number of tiles per chunk side (chunk edges fall on tile
            edges; an uncompressed plane counts 256x256-pixel tiles).

        Returns
        -------
        `~cellcoadd_dask.legacy.LegacyMaskedImage` | `Image` | `Mask`
            The masked image, or the plane ``component`` names.

        Raises
        ------
        ArchiveFormatError
            If the file is malformed (names the URL, the HDU and the byte range).
        """
        from .archives.fits.legacy_reader import read_legacy

        return read_legacy(
            uri, preserve_quantization=preserve_quantization, plane_map=plane_map, component=component,
            fits_wcs_frame=fits_wcs_frame, storage_options=storage_options, chunks=chunks,
        )

    @classmethod
    def from_legacy(cls, legacy: Any) -> CellCoadd:
        """Convert an ``lsst.cell_coadds`` multiple-cell coadd (needs ``lsst.cell_coadds``).

        Raises
        ------
        MissingDependencyError
            If ``lsst.cell_coadds`` is not installed.
        """
        from .legacy import require_cell_coadds

        require_cell_coadds("CellCoadd.from_legacy")
        raise NotImplementedError("CellCoadd.from_legacy: converting lsst.cell_coadds objects is not implemented.")

    def to_legacy(self) -> Any:
        """Convert to an ``lsst.cell_coadds`` multiple-cell coadd (needs ``lsst.cell_coadds``).

        Raises
        ------
        MissingDependencyError
            If ``lsst.cell_coadds`` is not installed.
        """
        from .legacy import require_cell_coadds

        require_cell_coadds("CellCoadd.to_legacy")
        raise NotImplementedError("CellCoadd.to_legacy: converting to lsst.cell_coadds objects is not implemented.")


    # ----------------------------------------------------------------- writing
    def write_fits(
        self,
        url: str | PathLike[str],
        *,
        image_compression: Any = _DEFAULT,
        mask_compression: Any = _DEFAULT,
        variance_compression: Any = _DEFAULT,
        mask_fractions_compression: Any = _DEFAULT,
        psf_compression: Any = _DEFAULT,
        compression_seed: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        progress: bool = False,
    ) -> str:
        """Write the coadd as an lsst-images ``cell_coadd`` FITS archive (streaming, parallel, atomic).

        Pixels are read and compressed piece by piece (a few tile rows at a time) on dask's
        workers, so memory stays bounded whatever the coadd's size, and only the tiles of this
        coadd's box are read from its source.  The destination appears only once complete:
        a temporary sibling renamed over it locally, one upload to an object store.

        Parameters
        ----------
        url
            Local path or fsspec URL.
        image_compression
            :class:`FitsCompressionOptions` of ``IMAGE`` and every noise realization; ``None``
            stores them uncompressed.  Default: lossless ``GZIP_2`` with one tile per cell.
        mask_compression, variance_compression, mask_fractions_compression, psf_compression
            The same for the ``MASK`` HDUs, ``VARIANCE``, every mask fraction and the PSF.
            lsst-images' own option objects are accepted too.
        compression_seed
            Dither seed (1..10000) for quantized planes whose options carry no seed; it is
            incremented after each use in HDU order, as lsst-images does, so the same seed gives
            the same pixels as lsst-images.
        storage_options
            Passed to fsspec.
        overwrite
            Whether an existing destination may be replaced (atomically).
        progress
            Show a progress bar (tqdm, on stderr) while pixels are written.

        Returns
        -------
        str
            The destination URL.

        Raises
        ------
        ValidationError
            Before anything is written, for options that do not fit a plane (quantized
            integers, ``RICE_1`` floats without quantization, tile shapes of the wrong rank),
            a missing quantization seed, plane names that cannot be HDU names, or a tree that
            does not match the ``cell_coadd`` 1.0.0 schema.

        Notes
        -----
        Planes read from an archive where they were quantized, and written again with
        quantization, are copied as stored rather than quantized a second time, so re-writing
        lossy data never drifts.
        """
        from .archives.fits.writer import write_fits

        return write_fits(
            cast("CellCoadd", self),
            url,
            image_compression=image_compression,
            mask_compression=mask_compression,
            variance_compression=variance_compression,
            mask_fractions_compression=mask_fractions_compression,
            psf_compression=psf_compression,
            compression_seed=compression_seed,
            storage_options=storage_options,
            overwrite=overwrite,
            progress=progress,
        )

    def write_zarr(
        self,
        url: str | PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        keep_bits: int | None = None,
    ) -> str:
        """Write the coadd as a Zarr v3 archive (streaming, parallel, lossless by default).

        Layout 2 (:mod:`cellcoadd_dask.archives.zarr.layout`): one array per plane, chunked by
        cell in shards of about 16 MiB, the mask packed with CF flag attributes, the
        ``cell_coadd`` 1.0.0 tree (``zarr:/<path>`` sources) in the ``lsst_json`` array, and
        consolidated metadata, so that opening reads two objects.  A local archive appears
        atomically (a temporary sibling directory renamed into place); on other stores the
        tree and the root metadata are written last, after every array.

        Parameters
        ----------
        url
            Local path or fsspec URL of the group (conventionally ending in ``.zarr``).
        storage_options
            Passed to fsspec.
        overwrite
            Whether an existing archive may be replaced.
        keep_bits
            Lossy mode: keep this many mantissa bits of every floating-point plane (not the
            PSF).  The error of each value ``x`` is at most ``2**-(keep_bits + 1) * |x|``; zeros,
            NaN and infinities are exact.  ``None`` (default): lossless.

        Returns
        -------
        str
            The destination URL.

        Raises
        ------
        ValidationError
            Before anything is written, for plane or table names that cannot be stored, a
            tree that does not match the ``cell_coadd`` 1.0.0 schema, or a bad ``keep_bits``.
        ArchiveExistsError
            If the destination exists and ``overwrite`` is false.
        """
        from .archives.zarr.writer import write_zarr

        coadd = cast("CellCoadd", self)
        return write_zarr(coadd, url, storage_options=storage_options, overwrite=overwrite, keep_bits=keep_bits)

    def write_json(
        self,
        url: str | PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = True,
    ) -> str:
        """Write the coadd as an lsst-images JSON archive, every array inline (small coadds only).

        A ``.json.gz`` destination is gzip-compressed.  See
        :mod:`cellcoadd_dask.archives.json.writer` for the size limit.

        Returns
        -------
        str
            The destination URL.

        Raises
        ------
        ValidationError
            Before anything is written, if the coadd is too large for a JSON archive or its
            tree cannot be stored.
        ArchiveExistsError
            If the destination exists and ``overwrite`` is false.
        """
        from .archives.json.writer import write_json

        return write_json(cast("CellCoadd", self), url, storage_options=storage_options, overwrite=overwrite)

    def write(self, url: str | PathLike[str], **options: Any) -> str:
        """Write the coadd in the format its destination's suffix names (``.fits``, ``.zarr``, ``.json``...).

        Parameters
        ----------
        url
            Destination; see :mod:`cellcoadd_dask.archives.registry` for the suffixes.
        **options
            Passed to that format's writer (:meth:`write_fits`, :meth:`write_zarr`,
            :meth:`write_json`).

        Returns
        -------
        str
            The destination URL.

        Raises
        ------
        ValidationError
            If the suffix names no writable format, or as the format's writer raises.
        """
        from .archives.registry import format_for_destination
        from .fetch import normalize_url

        target = normalize_url(url)
        return format_for_destination(target).write(cast("CellCoadd", self), target, **options)

    def serialize(self, archive: OutputArchive) -> CellCoaddModel:
        """Write the coadd into ``archive``, as the seed's ``CellCoadd.serialize`` does.

        Every format is written this way (:mod:`cellcoadd_dask.archives.output`): the archive
        stores each plane, the mask, the PSF, the tables and the arrays passed through from
        the archive the coadd was read from, then takes the validated tree.  The archive's
        bytes are committed when its ``with`` block ends::

            with FitsOutputArchive("out.fits") as archive:
                coadd.serialize(archive)

        Parameters
        ----------
        archive
            An :class:`~cellcoadd_dask.archives.output.OutputArchive` (FITS, Zarr, JSON ...).

        Returns
        -------
        CellCoaddModel
            The model of the tree written (its ``tree`` attribute is the JSON tree).

        Raises
        ------
        ValidationError
            For names, tables or a tree the archive cannot store, before it commits anything.
        """
        from .archives.output import serialize

        return serialize(cast("CellCoadd", self), archive)
