"""Open an lsst-images FITS archive as a lazy :class:`~cellcoadd_dask.CellCoadd`.

Opening reads the primary header and the JSON + INDEX tail (two range reads).  Every
plane becomes a dask array over a :class:`FitsArraySource`; a plane's header and the
descriptor rows of its tiles are read when they are first needed, tables (provenance,
aperture corrections) the first time they are asked for.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from ...coadd import CellCoadd
from ...deferred import Deferred
from ...errors import ArchiveFormatError, BoundsError, ValidationError
from ...fetch import fetch_ranges, normalize_url
from ...geom import Box
from ...image import Image
from ...lazy import Chunks, PlaneOrigin, cell_chunks, plane_array
from ...mask import Mask, MaskPlane, MaskSchema, combine_disk_arrays
from ...model import ArrayModel, CellCoaddModel, ImageModel, parse_cell_coadd
from ...psf import CellPointSpreadFunction
from ...stored import StoredArchive
from ...streaming import distributed_client
from ..names import parse_source
from .cards import parse_header
from .layout import FitsContainer, read_container
from .source import FitsArraySource, HduRef
from .tables import read_bintable, select_column

__all__ = ["FitsTableReader", "coadd_from_model", "deferred_tables", "read_fits"]


class FitsTableReader:
    """Reads binary-table HDUs of an archive on demand and hands out columns by ``source``.

    Picklable; each table is fetched (header + data, one range read) once per instance.
    """

    def __init__(self, container: FitsContainer, storage_options: Mapping[str, Any] | None) -> None:
        self.url = container.url
        self.hdus = dict(container.hdus)
        self.storage_options = dict(storage_options or {})
        self.pin = container.pin
        self._tables: dict[str, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "hdus": self.hdus, "storage_options": self.storage_options, "pin": self.pin}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tables = {}
        self._lock = threading.Lock()

    def table(self, table_source: str) -> dict[str, np.ndarray]:
        """All columns of the table HDU named by ``fits:EXTNAME[,EXTVER]``."""
        with self._lock:
            if table_source not in self._tables:
                table = parse_source(table_source, scheme="fits", url=self.url)
                entry = self.hdus.get((table.name, table.extver))
                if entry is None:
                    raise ArchiveFormatError("the INDEX has no such table HDU", url=self.url, hdu=table_source)
                if entry.compressed or entry.xtension != "BINTABLE":
                    raise ArchiveFormatError("a table source points at an image HDU", url=self.url, hdu=entry.label)
                (blob,) = fetch_ranges(
                    self.url, [(entry.hdraddr, entry.dataddr + entry.datsize)], storage_options=self.storage_options,
                    pin=self.pin,
                )
                header = parse_header(blob, 0, url=self.url, hdu=entry.label)
                if header.size != entry.dataddr - entry.hdraddr:
                    raise ArchiveFormatError(
                        "table header size disagrees with the INDEX",
                        url=self.url,
                        hdu=entry.label,
                        byte_range=(entry.hdraddr, entry.dataddr),
                    )
                self._tables[table_source] = read_bintable(
                    header, blob[header.size :], url=self.url, hdu=entry.label, data_offset=entry.dataddr
                )
            return self._tables[table_source]

    def column(self, source: str) -> np.ndarray:
        """The column named by ``fits:EXTNAME[n]`` (1-based column number)."""
        parsed = parse_source(source, scheme="fits", column=True, url=self.url)
        assert parsed.column is not None
        table_source = str(parsed.table)
        return select_column(self.table(table_source), parsed.column, url=self.url, hdu=table_source)


def _hdu_ref(container: FitsContainer, array: ArrayModel, table_guess: int) -> HduRef:
    if array.source is None:
        raise ArchiveFormatError("array is stored inline in a FITS archive's tree", url=container.url, hdu="JSON")
    parsed = parse_source(array.source, scheme="fits", url=container.url)
    extname, extver = parsed.name, parsed.extver
    if parsed.column is not None:
        raise ArchiveFormatError(f"image source {array.source!r} names a table column", url=container.url, hdu="JSON")
    entry = container.hdu(extname, extver)
    if not entry.compressed and entry.xtension != "IMAGE":
        raise ArchiveFormatError(
            f"image source {array.source!r} points at a table HDU", url=container.url, hdu=entry.label
        )
    return HduRef(entry, tuple(array.shape), array.datatype, table_guess)


def _tile_guess(shape: tuple[int, ...], tile: tuple[int, ...]) -> int:
    """Bytes of a lossless tile table if tiles are ``tile`` (8-byte descriptors)."""
    return 8 * math.prod(-(-n // t) for n, t in zip(shape, tile, strict=True))


class _PlaneBuilder:
    def __init__(
        self, container: FitsContainer, model: CellCoaddModel, chunks: Chunks, storage_options: Mapping[str, Any] | None
    ) -> None:
        self.container = container
        self.model = model
        self.chunks = chunks
        self.storage_options = storage_options
        self.grid = model.psf.bounds.grid
        self.cell = tuple(self.grid.cell_shape)

    def image(self, name: str, plane: ImageModel) -> Image:
        ref = _hdu_ref(self.container, plane.array, _tile_guess(plane.array.shape, self.cell))
        source = FitsArraySource(
            self.container.url,
            [ref],
            shape=plane.array.shape,
            dtype=plane.array.datatype,
            storage_options=self.storage_options,
            pin=self.container.pin,
        )
        chunks = cell_chunks(plane.bbox, self.grid, self.chunks, plane.array.dtype.itemsize)
        array = plane_array(source, name=name, chunks=chunks)
        return Image(array, bbox=plane.bbox, unit=plane.unit, origin=PlaneOrigin(source, plane.bbox, array, name))

    def mask(self) -> Mask:
        m = self.model.mask
        schema = MaskSchema([None if p is None else MaskPlane(p.name, p.description) for p in m.planes], dtype=m.dtype)
        refs = [_hdu_ref(self.container, a, _tile_guess(a.shape, self.cell)) for a in m.arrays]
        shape = (*m.arrays[0].shape, schema.mask_size)
        source = FitsArraySource(
            self.container.url,
            refs,
            shape=shape,
            dtype=schema.dtype,
            combine=functools.partial(combine_disk_arrays, schema),
            storage_options=self.storage_options,
            pin=self.container.pin,
        )
        yx_chunks = cell_chunks(m.bbox, self.grid, self.chunks, 4 * len(refs))
        array = plane_array(source, name="mask", chunks=(*yx_chunks, (schema.mask_size,)))
        return Mask(array, schema=schema, bbox=m.bbox, origin=PlaneOrigin(source, m.bbox, array, "mask"))

    def psf(self) -> CellPointSpreadFunction:
        p = self.model.psf
        n_i, n_j, ky, kx = p.array.shape
        # Header only: a kernel's descriptor rows are read with its first use.
        ref = _hdu_ref(self.container, p.array, 0)
        source = FitsArraySource(
            self.container.url, [ref], shape=p.array.shape, dtype=p.array.datatype,
            storage_options=self.storage_options, pin=self.container.pin,
        )
        chunks = ((1,) * n_i, (1,) * n_j, (ky,), (kx,))
        array = plane_array(source, name="psf", chunks=chunks)
        return CellPointSpreadFunction(array, p.bounds, origin=(source, (0, 0)))


def _load_provenance(tree: Mapping[str, Any], tables: Any) -> Any:
    from ...provenance import CoaddProvenance

    return CoaddProvenance.from_json(dict(tree), tables.column, url=tables.url)


def _load_aperture_corrections(tree: Mapping[str, Any], tables: Any) -> Any:
    from ...aperture import ApertureCorrections

    return ApertureCorrections.from_json(dict(tree), tables.column, url=tables.url)


def deferred_tables(model: CellCoaddModel, tables: Any) -> tuple[Any, Any]:
    """Provenance and aperture corrections read on first access, or ``None`` when the tree has none.

    ``tables`` is an archive's column reader: ``tables.column(source)`` and ``tables.url``.
    """
    provenance = (
        None if model.provenance is None else Deferred(functools.partial(_load_provenance, model.provenance, tables))
    )
    aperture = (
        None
        if model.aperture_corrections is None
        else Deferred(functools.partial(_load_aperture_corrections, model.aperture_corrections, tables))
    )
    return provenance, aperture


def coadd_from_model(
    model: CellCoaddModel,
    *,
    images: Mapping[str, Image],
    mask: Mask,
    psf: CellPointSpreadFunction,
    provenance: Any,
    aperture_corrections: Any,
    url: str,
    stored: Any = None,
) -> CellCoadd:
    """Assemble a :class:`CellCoadd` from a parsed tree and its lazily read parts."""
    from ...backgrounds import BackgroundMap
    from ...projection import SkyProjection

    projection = SkyProjection.from_json(dict(model.sky_projection), url=url)
    backgrounds = None if model.backgrounds is None else BackgroundMap.from_json(dict(model.backgrounds), url=url)
    return CellCoadd(
        images["image"],
        mask=mask,
        variance=images["variance"],
        mask_fractions={k: images[f"mask_fractions/{k}"] for k in model.mask_fractions},
        noise_realizations=[images[f"noise_realizations/{n}"] for n in range(len(model.noise_realizations))],
        projection=projection,
        band=model.band,
        psf=psf,
        patch=model.patch,
        provenance=provenance,
        aperture_corrections=aperture_corrections,
        backgrounds=backgrounds,
        metadata=model.metadata,
        extra=model.extra,
        source_url=url,
        stored=stored,
    )


def read_fits(
    url: str | PathLike[str],
    *,
    bbox: Box | None = None,
    chunks: Chunks = "auto",
    storage_options: Mapping[str, Any] | None = None,
    preload: bool | None = None,
) -> CellCoadd:
    """Open an lsst-images ``cell_coadd`` FITS archive lazily.

    Parameters
    ----------
    url
        Local path or fsspec URL.
    bbox
        Absolute box to restrict the coadd to; only the cells it touches are ever read.
    chunks
        ``"auto"``, ``"cell"`` or cells per chunk side; chunk edges fall on cell edges.
    storage_options
        Passed to fsspec.
    preload
        Also read every plane's header and tile table now (one more batched request), so
        that graphs carry all metadata and workers fetch only tiles.  ``None`` (default):
        when a ``dask.distributed`` client is active.

    Raises
    ------
    ArchiveFormatError
        If the file is not a readable ``cell_coadd`` archive.
    BoundsError
        If ``bbox`` is not inside the coadd.
    """
    url = normalize_url(url)
    container = read_container(url, storage_options)
    model = parse_cell_coadd(container.tree, url=url)
    if bbox is not None:
        if not isinstance(bbox, Box):
            raise TypeError(f"bbox must be a cellcoadd_dask.Box, not {type(bbox).__name__}.")
        if not model.image.bbox.contains(bbox):
            raise BoundsError(f"Box {bbox} is not contained in the coadd bbox {model.image.bbox} of {url}.")
    builder = _PlaneBuilder(container, model, chunks, storage_options)
    images = {name: builder.image(name.replace("/", "-"), plane) for name, plane in model.planes().items()}
    provenance, aperture = deferred_tables(model, FitsTableReader(container, storage_options))
    try:
        coadd = coadd_from_model(
            model,
            images=images,
            mask=builder.mask(),
            psf=builder.psf(),
            provenance=provenance,
            aperture_corrections=aperture,
            url=url,
            stored=StoredArchive(url, container.tree, dict(container.hdus), dict(storage_options or {}),
                                 pin=container.pin),
        )
    except ValidationError as exc:
        raise ArchiveFormatError(f"the JSON tree describes an invalid coadd: {exc}", url=url, hdu="JSON") from None
    if preload is None:
        preload = distributed_client() is not None
    if preload:
        coadd.load_metadata()
    return coadd if bbox is None else coadd[bbox]

