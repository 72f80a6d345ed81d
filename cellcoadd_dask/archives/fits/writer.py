"""Write a :class:`~cellcoadd_dask.CellCoadd` as an lsst-images ``cell_coadd`` FITS archive.

Everything is checked before the first byte is written: compression options against each
plane's dtype, quantization seeds, plane names, and the JSON tree against the frozen
``cell_coadd`` 1.0.0 schema.  Then the file is streamed, in the HDU order lsst-images writes
(spec section 2.2): primary, ``IMAGE``, ``MASK`` (31 planes per HDU), ``VARIANCE``, mask
fractions, noise realizations, ``PSF``, aperture corrections, provenance tables, HDUs passed
through from the source archive, ``JSON`` and ``INDEX``; the primary header's addresses are
patched last.  Pixels are read and tile-compressed piece by piece in parallel
(:func:`~cellcoadd_dask.streaming.ordered_map`), so memory holds a few tile rows, not planes.
The output appears atomically (:func:`~cellcoadd_dask.atomic.atomic_output`).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from os import PathLike
from typing import IO, TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from ...atomic import atomic_output
from ...coadd_archives import DEFAULT_COMPRESSION as DEFAULT
from ...compression import FitsQuantizationOptions
from ...errors import ValidationError
from ...fetch import fetch_ranges, normalize_url
from ...streaming import ordered_map
from ..names import SCHEMA_NAME, SCHEMA_URL_PREFIX, SCHEMA_VERSION
from ..output import OutputArchive, write_with
from ..tree_out import array_ref
from .encode import TileEncoder
from .hdu_writer import Card, FitsStreamWriter, HduPosition, render_header, utc_now
from .planes import (
    encode_jobs,
    pieces_from_array,
    plain_piece,
)
from .table_hdus import column_models, table_hdu
from .write_plan import (
    WritePlane,
    celestial_wcs,
    check_compression,
    compression_options,
    image_plane,
    mask_planes,
    offset_wcs,
    psf_plane,
    resolve_seeds,
    unit_cards,
)

if TYPE_CHECKING:
    from ...coadd import CellCoadd
    from ...image import Image
    from ...mask import Mask
    from ...psf import CellPointSpreadFunction
    from ...stored import StoredArchive

__all__ = ["DEFAULT", "FitsOutputArchive", "write_fits"]



_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SCHEMA_URL = f"{SCHEMA_URL_PREFIX}{SCHEMA_NAME}-{SCHEMA_VERSION}"
_KINDS = ("image", "mask", "variance", "mask_fractions", "psf")
_FMTVER = 1


def _source_key(source: str) -> tuple[str, int] | None:
    m = re.match(r"^fits:([A-Za-z0-9_/-]+)(?:,([0-9]+))?(?:\[[0-9]+\])?$", source)
    if m is None:
        return None
    return m.group(1), int(m.group(2) or 1)


def _copy_hdu(writer: FitsStreamWriter, url: str, storage_options: Any, entry: Any, pin: Any) -> HduPosition:
    (blob,) = fetch_ranges(url, [(entry.hdraddr, entry.dataddr + entry.datsize)], storage_options=storage_options,
                           pin=pin)
    header, data = blob[: entry.dataddr - entry.hdraddr], blob[entry.dataddr - entry.hdraddr :]
    return writer.write_hdu(bytes(header), bytes(data), extname=entry.extname, extver=entry.extver,
                            xtension=entry.xtension, compressed=entry.compressed)


def _counted[T](items: Iterator[T], n: int, progress: Callable[[int], Any] | None) -> Iterator[T]:
    """The next ``n`` items of a shared iterator, reporting each to ``progress``."""
    for item in itertools.islice(items, n):
        yield item
        if progress is not None:
            progress(1)


def _encoder(plane: WritePlane) -> TileEncoder:
    assert plane.options is not None
    quantization = plane.options.quantization if plane.dtype.kind == "f" else None
    if quantization is not None and quantization.seed != plane.zdither0:
        quantization = FitsQuantizationOptions(level=quantization.level, dither=quantization.dither,
                                               seed=plane.zdither0 or None)
    return TileEncoder(plane.options.algorithm, plane.dtype, quantization, zdither0=plane.zdither0)


def _plane_jobs(plane: WritePlane, encoder: TileEncoder | None) -> list[tuple[Callable[[np.ndarray], Any], da.Array]]:
    """The pieces of a plane to compute, each with the function that turns it into what is written."""
    edges = plane.edges()
    pieces = plane.pieces(edges)
    if encoder is None:
        return [(functools.partial(plain_piece, plane.dtype, plane.prepare), p) for p in pieces]
    return list(encode_jobs(pieces, edges, plane.shape, plane.tile_shape, encoder, plane.prepare))


def _write_planes(
    writer: FitsStreamWriter, planes: Sequence[WritePlane], progress: Callable[[int], Any] | None
) -> None:
    """Write every pixel plane, computing the pieces of all planes in one ordered pipeline.

    One pipeline for the whole file keeps every worker busy across plane boundaries: the
    first pieces of the next plane are computed while the last ones of this plane are written.
    """
    encoders = {
        id(plane): None if plane.options is None or plane.copy_from is not None else _encoder(plane)
        for plane in planes
    }

    def jobs() -> Iterator[tuple[Callable[[np.ndarray], Any], da.Array]]:
        for plane in planes:
            if plane.copy_from is None:
                yield from _plane_jobs(plane, encoders[id(plane)])

    results = ordered_map(jobs())
    try:
        for plane in planes:
            n = len(plane.edges()) - 1
            if plane.copy_from is not None:
                _copy_hdu(writer, *plane.copy_from)
                if progress is not None:
                    progress(n)
                continue
            encoder = encoders[id(plane)]
            if encoder is None:
                writer.write_plain_image(extname=plane.extname, extver=plane.extver, shape=plane.shape,
                                         dtype=plane.dtype, chunks=_counted(results, n, progress),
                                         extra_cards=plane.cards)
                continue
            writer.write_compressed_image(
                extname=plane.extname, extver=plane.extver, shape=plane.shape, dtype=plane.dtype,
                tile_shape=plane.tile_shape, encoder=encoder, tiles=_counted(results, n, progress),
                extra_cards=plane.cards,
            )
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _json_hdu(text: bytes) -> tuple[bytes, bytes]:
    cards: list[Card] = [
        ("XTENSION", "BINTABLE", "binary table extension"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", 8, "length of dimension 1"),
        ("NAXIS2", 1, "length of dimension 2"),
        ("PCOUNT", len(text), "number of group parameters"),
        ("GCOUNT", 1, "number of groups"),
        ("TFIELDS", 1, "number of table fields"),
        ("TTYPE1", "JSON", ""),
        ("TFORM1", f"PB({len(text)})", ""),
        ("EXTNAME", "JSON", "extension name"),
        ("DATE", utc_now(), "UTC date this HDU was written."),
    ]
    return render_header(cards), np.array([len(text), 0], dtype=">i4").tobytes() + text


def _index_hdu(positions: Sequence[HduPosition]) -> tuple[bytes, bytes]:
    width = max(1, max(len(p.extname) for p in positions))
    dtype = np.dtype([("EXTNAME", f"S{width}"), ("EXTVER", ">i4"), ("XTENSION", "S8"), ("ZIMAGE", "S1"),
                      ("HDRADDR", ">i8"), ("DATADDR", ">i8"), ("DATSIZE", ">i8")])
    rows = np.zeros(len(positions), dtype=dtype)
    for n, p in enumerate(positions):
        rows[n] = (p.extname.encode("ascii").ljust(width), p.extver, p.xtension.encode("ascii").ljust(8),
                   b"T" if p.compressed else b"F", p.hdraddr, p.dataddr, p.datsize)
    cards: list[Card] = [
        ("XTENSION", "BINTABLE", "binary table extension"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", dtype.itemsize, "length of dimension 1"),
        ("NAXIS2", len(positions), "length of dimension 2"),
        ("PCOUNT", 0, "number of group parameters"),
        ("GCOUNT", 1, "number of groups"),
        ("TFIELDS", 7, "number of table fields"),
        ("TTYPE1", "EXTNAME", ""), ("TFORM1", f"{width}A", ""),
        ("TTYPE2", "EXTVER", ""), ("TFORM2", "J", ""),
        ("TTYPE3", "XTENSION", ""), ("TFORM3", "8A", ""),
        ("TTYPE4", "ZIMAGE", ""), ("TFORM4", "L", ""),
        ("TTYPE5", "HDRADDR", ""), ("TFORM5", "K", ""),
        ("TTYPE6", "DATADDR", ""), ("TFORM6", "K", ""),
        ("TTYPE7", "DATSIZE", ""), ("TFORM7", "K", ""),
        ("EXTNAME", "INDEX", "extension name"),
        ("DATE", utc_now(), "UTC date this HDU was written."),
    ]
    return render_header(cards), rows.tobytes()


def _primary(addresses: Mapping[str, int], date: str) -> bytes:
    cards: list[Card] = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 0, "number of array dimensions"),
        ("EXTEND", True, ""),
        ("FMTVER", _FMTVER, "FITS container layout version."),
        ("INDXADDR", addresses.get("INDXADDR", 0), "Offset in bytes to the HDU index."),
        ("INDXSIZE", addresses.get("INDXSIZE", 0), "Size of the HDU index."),
        ("JSONADDR", addresses.get("JSONADDR", 0), "Offset in bytes to the JSON tree HDU."),
        ("JSONSIZE", addresses.get("JSONSIZE", 0), "Size of the JSON tree HDU."),
        ("DATE", date, "UTC date this HDU was written."),
        ("DATAMODL", _SCHEMA_URL, "Schema URL."),
    ]
    return render_header(cards)


class FitsOutputArchive(OutputArchive):
    """A FITS archive being written: pixel HDUs planned as items are added, streamed on commit.

    Parameters
    ----------
    url
        Destination (normalized).
    compression
        Options per plane kind (``"image"``, ``"mask"``, ``"variance"``, ``"mask_fractions"``,
        ``"psf"``): :class:`~cellcoadd_dask.FitsCompressionOptions`, ``None`` (uncompressed) or
        ``DEFAULT``.
    compression_seed
        First dither seed of quantized planes (lsst-images' ``compression_seed``).
    storage_options
        fsspec options of the destination.
    overwrite
        Whether an existing file may be replaced.
    progress
        Show a progress bar while writing.
    """

    scheme = "fits"

    def __init__(
        self,
        url: str,
        *,
        compression: Mapping[str, Any] | None = None,
        compression_seed: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        progress: bool = False,
    ) -> None:
        if compression_seed is not None and (
            isinstance(compression_seed, bool) or not isinstance(compression_seed, int)
            or not 1 <= compression_seed <= 10000
        ):
            raise ValidationError(f"compression_seed must be an int in 1..10000, not {compression_seed!r}.")
        given = dict(compression or {})
        self.options = {kind: compression_options(given.get(kind, DEFAULT), f"{kind}_compression") for kind in _KINDS}
        self.url = url
        self.compression_seed = compression_seed
        self.storage_options = storage_options
        self.overwrite = overwrite
        self.progress = progress
        self.planes: list[WritePlane] = []
        self.tables: list[tuple[str, Any]] = []
        self.passthrough: list[Any] = []
        self.extra: list[WritePlane] = []
        self.tree: dict[str, Any] | None = None
        self._celestial: list[Any] | None = None
        self._cell: tuple[int, int] = (0, 0)

    def _names(self) -> set[tuple[str, int]]:
        written = {(p.extname, p.extver) for p in (*self.planes, *self.extra)}
        return written | {(name, 1) for name, _ in self.tables} | {(e.extname, e.extver) for _, _, e, _ in
                                                                    self.passthrough}

    def add_image(self, key: str, image: Image) -> dict[str, Any]:
        """Plan the HDU of an image plane (IMAGE, VARIANCE, MASK_FRACTIONS/<NAME>, NOISE_REALIZATIONS/<n>)."""
        kind, _, name = key.partition("/")
        offset = offset_wcs(image.bbox)
        if kind in ("image", "variance"):
            extname, cards = kind.upper(), [*unit_cards(image.unit), *(self._celestial or []), *offset]
            options = self.options[kind]
        else:
            extname, cards = f"{kind.upper()}/{name.upper()}", [*unit_cards(image.unit), *offset]
            options = self.options["image" if kind == "noise_realizations" else kind]
        plane = image_plane(key, extname, image, options, self._cell, cards)
        self.planes.append(plane)
        return array_ref(plane.source, plane.shape, plane.dtype)

    def add_mask(self, mask: Mask) -> list[dict[str, Any]]:
        """Plan the MASK HDUs (31 planes each); also fixes the cell (tile) shape and celestial cards."""
        planes = mask_planes(mask, self.options["mask"], self._cell, self._celestial or [])
        self.planes.extend(planes)
        return [array_ref(p.source, p.shape, p.dtype) for p in planes]

    def begin(self, coadd: CellCoadd) -> None:
        """Take what every HDU header shares from ``coadd`` (celestial WCS cards, cell shape)."""
        self._cell = (int(coadd.grid.cell_shape.y), int(coadd.grid.cell_shape.x))
        self._celestial = celestial_wcs(coadd)

    def add_psf(self, psf: CellPointSpreadFunction) -> dict[str, Any]:
        """Plan the PSF HDU (one tile per cell kernel)."""
        plane = psf_plane(psf, self.options["psf"])
        self.planes.append(plane)
        return array_ref(plane.source, plane.shape, plane.dtype)

    def add_table(self, path: str, table: Any) -> list[dict[str, Any]]:
        """Plan a binary-table HDU named ``path`` in capitals."""
        extname = path.upper()
        self.tables.append((extname, table))
        return column_models(table, extname)

    def add_array(self, path: str, values: np.ndarray) -> dict[str, Any]:
        """Plan an uncompressed image HDU named ``path`` in capitals (numbered when the name is taken)."""
        extname = re.sub(r"[^A-Z0-9_/-]", "_", path.upper()) or "ARRAY"
        extver = 1
        while (extname, extver) in self._names():
            extver += 1
        shape = tuple(int(n) for n in values.shape)
        array = da.from_array(np.ascontiguousarray(values), chunks=-1)
        plane = WritePlane(path, extname, extver, shape, np.dtype(values.dtype), shape or (1,), None,
                       functools.partial(pieces_from_array, array))
        self.extra.append(plane)
        return array_ref(plane.source, shape, values.dtype)

    def add_stored(self, source: str, stored: StoredArchive) -> str | None:
        """Copy an HDU of the FITS archive the coadd was read from, header and bytes as they are."""
        key = _source_key(source)
        if stored.format != "fits" or key is None or key in self._names():
            return None
        entry = stored.hdus.get(key)
        if entry is None:
            return None
        self.passthrough.append((stored.url, stored.storage_options, entry, stored.pin))
        return source

    def add_tree(self, tree: dict[str, Any]) -> None:
        """Check compression against every plane, choose dither seeds, and keep the tree."""
        check_compression(self.planes)
        resolve_seeds(self.planes, self.compression_seed)
        self.tree = tree

    @property
    def n_pieces(self) -> int:
        """Pieces the pixel planes are read and written in (the unit of progress)."""
        return sum(len(plane.edges()) - 1 for plane in (*self.planes, *self.extra))

    def write_to(self, stream: IO[bytes], progress: Callable[[int], Any] | None = None) -> None:
        """Stream every HDU into ``stream`` (opened ``w+b``, empty); ``progress(n)`` counts pieces."""
        import json

        if self.tree is None:
            raise ValidationError(f"Nothing to write to {self.url}: the tree was never added.")
        writer = FitsStreamWriter(stream)
        date = utc_now()
        primary = writer.write_hdu(_primary({}, date), b"", extname="", xtension="IMAGE")
        _write_planes(writer, self.planes, progress)
        for extname, table in self.tables:
            header, data = table_hdu(table, extname)
            writer.write_hdu(header, data, extname=extname, xtension="BINTABLE")
        for url, storage_options, entry, pin in self.passthrough:
            _copy_hdu(writer, url, storage_options, entry, pin)
        _write_planes(writer, self.extra, progress)
        text = json.dumps(self.tree, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode("utf-8")
        json_header, json_data = _json_hdu(text)
        json_position = writer.write_hdu(json_header, json_data, extname="JSON", xtension="BINTABLE")
        index_header, index_data = _index_hdu(writer.positions)
        index_position = writer.write_hdu(index_header, index_data, extname="INDEX", xtension="BINTABLE")
        addresses = {
            "INDXADDR": index_position.hdraddr,
            "INDXSIZE": index_position.dataddr + index_position.datsize - index_position.hdraddr,
            "JSONADDR": json_position.hdraddr,
            "JSONSIZE": json_position.dataddr + json_position.datsize - json_position.hdraddr,
        }
        writer.rewrite_header(primary, _primary(addresses, date))

    def commit(self) -> None:
        """Write the file; it appears atomically at :attr:`url`."""
        with atomic_output(self.url, storage_options=self.storage_options, overwrite=self.overwrite) as stream:
            if not self.progress:
                self.write_to(stream)
                return
            import sys

            from tqdm import tqdm

            with tqdm(total=self.n_pieces, unit="piece", desc="writing", file=sys.stderr) as bar:
                self.write_to(stream, bar.update)


def write_fits(
    coadd: CellCoadd,
    url: str | PathLike[str],
    *,
    image_compression: Any = DEFAULT,
    mask_compression: Any = DEFAULT,
    variance_compression: Any = DEFAULT,
    mask_fractions_compression: Any = DEFAULT,
    psf_compression: Any = DEFAULT,
    compression_seed: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    progress: bool = False,
) -> str:
    """Write ``coadd`` as an lsst-images FITS archive (see :meth:`CellCoadd.write_fits`).

    Returns
    -------
    str
        The normalized destination URL.
    """
    url = normalize_url(url)
    archive = FitsOutputArchive(
        url,
        compression={
            "image": image_compression,
            "mask": mask_compression,
            "variance": variance_compression,
            "mask_fractions": mask_fractions_compression,
            "psf": psf_compression,
        },
        compression_seed=compression_seed,
        storage_options=storage_options,
        overwrite=overwrite,
        progress=progress,
    )
    write_with(archive, coadd)
    return url
