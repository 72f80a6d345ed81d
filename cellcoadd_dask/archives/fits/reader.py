"""Open an lsst-images FITS archive as a lazy :class:`~cellcoadd_dask.CellCoadd`.

Opening reads the primary header and the JSON + INDEX tail (two range reads).  Every
plane becomes a dask array over a :class:`FitsArraySource`; a plane's header and the
descriptor rows of its tiles are read when they are first needed, tables (provenance,
aperture corrections) the first time they are asked for.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from ...coadd import CellCoadd
from ...errors import ArchiveFormatError
from ...fetch import fetch_ranges, normalize_url
from ...geom import Box
from ...lazy import Chunks
from ...model import ArrayModel
from ...stored import StoredArchive
from ...streaming import distributed_client
from ..input import ArrayRequest, ColumnReader, InputArchive, coadd_from_archive
from ..names import parse_source
from .cards import parse_header
from .layout import FitsContainer, read_container
from .source import FitsArraySource, HduRef
from .tables import read_bintable, select_column

__all__ = ["FitsInputArchive", "FitsTableReader", "read_fits", "stored_array"]


class FitsTableReader(ColumnReader):
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


def _tile_guess(shape: tuple[int, ...], tile: tuple[int, ...] | None) -> int:
    """Bytes of a lossless tile table if tiles are ``tile`` (8-byte descriptors); 0: header only."""
    if tile is None:
        return 0
    return 8 * math.prod(-(-n // t) for n, t in zip(shape, tile, strict=False))


class FitsInputArchive(InputArchive):
    """An opened FITS archive: its tree, its HDU index and lazily indexed HDUs.

    Parameters
    ----------
    container
        The primary header, tree and INDEX read at open.
    storage_options
        fsspec options.
    preload
        Read every plane's header and tile table when the coadd is built.
    """

    def __init__(
        self, container: FitsContainer, storage_options: Mapping[str, Any] | None, *, preload: bool = False
    ) -> None:
        self.container = container
        self.url = container.url
        self.storage_options = dict(storage_options or {})
        self.preload = preload

    @property
    def tree(self) -> Mapping[str, Any]:
        """The JSON tree HDU's content."""
        return self.container.tree

    def array_source(self, request: ArrayRequest) -> FitsArraySource:
        """A :class:`FitsArraySource` over the image HDUs ``arrays`` name (headers read on first use)."""
        refs = [_hdu_ref(self.container, a, _tile_guess(tuple(a.shape), request.tile_shape)) for a in request.arrays]
        return FitsArraySource(
            self.url, refs, shape=request.shape, dtype=request.dtype, combine=request.combine,
            storage_options=self.storage_options, pin=self.container.pin,
        )

    def table_reader(self) -> FitsTableReader:
        """Reads binary-table HDUs on demand."""
        return FitsTableReader(self.container, self.storage_options)

    def stored(self, tree: Mapping[str, Any]) -> StoredArchive:
        """The tree and HDU index, for writes that pass unknown HDUs through."""
        return StoredArchive(
            self.url, tree, dict(self.container.hdus), self.storage_options, pin=self.container.pin, format="fits"
        )

    def finish(self, coadd: CellCoadd) -> CellCoadd:
        """Preload every plane's metadata when asked."""
        if self.preload:
            coadd.load_metadata()
        return coadd


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
    if preload is None:
        preload = distributed_client() is not None
    return coadd_from_archive(FitsInputArchive(container, storage_options, preload=preload), bbox=bbox, chunks=chunks)


def stored_array(stored: StoredArchive, source: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The whole image HDU ``source`` names in the FITS archive a coadd was read from.

    Raises
    ------
    ArchiveFormatError
        If ``source`` names no image HDU of that archive.
    """
    parsed = parse_source(source, scheme="fits", url=stored.url, column=False)
    entry = stored.hdus.get((parsed.name, parsed.extver))
    if entry is None:
        raise ArchiveFormatError(f"the tree references {source!r}, which the archive does not hold", url=stored.url)
    reader = FitsArraySource(stored.url, [HduRef(entry, shape, np.dtype(dtype).name)], shape=shape, dtype=dtype,
                             storage_options=stored.storage_options, pin=stored.pin)
    return np.asarray(reader[tuple(slice(0, n) for n in shape)])

