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
import math
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import IO, TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from ...atomic import atomic_output
from ...coadd import _DEFAULT as DEFAULT
from ...compression import FitsCompressionOptions, FitsDitherAlgorithm, FitsQuantizationOptions
from ...errors import ValidationError
from ...fetch import fetch_ranges, normalize_url
from ...mask import DISK_PLANES_PER_ARRAY
from ...streaming import ordered_map
from .encode import TileEncoder
from .hdu_writer import Card, FitsStreamWriter, HduPosition, render_header, utc_now
from .planes import (
    encode_jobs,
    mask_to_disk,
    origin_window,
    pick_disk_array,
    piece_edges,
    pieces_from_array,
    pieces_from_source,
    plain_piece,
)
from .source import FitsArraySource
from .table_hdus import column_models, table_hdu, table_subtrees
from .tree_out import build_tree, merge_unknown

if TYPE_CHECKING:
    from ...coadd import CellCoadd
    from ...image import Image

__all__ = ["DEFAULT", "write_fits"]



_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SCHEMA_URL = "https://images.lsst.io/schemas/cell_coadd-1.0.0"
_FMTVER = 1


@dataclass
class _Plane:
    """One pixel HDU to write."""

    key: str  # tree path, e.g. "image", "mask_fractions/rejected", "mask/1", "psf"
    extname: str
    extver: int
    shape: tuple[int, ...]
    dtype: np.dtype
    tile_shape: tuple[int, ...]
    options: FitsCompressionOptions | None
    pieces: Callable[[Sequence[int]], list[da.Array]]
    prepare: Callable[[np.ndarray], np.ndarray] | None = None
    cards: list[Card | Any] = field(default_factory=list)
    copy_from: Any = None  # (url, storage_options, HduEntry) of a stored HDU copied as is
    zdither0: int = 0

    @property
    def source(self) -> str:
        return f"fits:{self.extname}" + (f",{self.extver}" if self.extver > 1 else "")

    def edges(self) -> list[int]:
        """Piece edges along axis 0 (whole tile rows)."""
        return piece_edges(self.shape[0], self.tile_shape[0], math.prod(self.shape[1:]) * self.dtype.itemsize)


def _options(value: Any, what: str) -> FitsCompressionOptions | None:
    if value is DEFAULT:
        return FitsCompressionOptions.DEFAULT
    try:
        return FitsCompressionOptions.coerce(value)
    except ValidationError as exc:
        raise ValidationError(f"{what}: {exc}") from None


def _check_names(coadd: CellCoadd) -> None:
    seen: dict[str, str] = {}
    for name in coadd.mask_fractions:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValidationError(
                f"Mask fraction name {name!r} cannot be an HDU name (use letters, digits, '_' and '-')."
            )
        if name.upper() in seen:
            raise ValidationError(f"Mask fraction names {seen[name.upper()]!r} and {name!r} differ only in case.")
        seen[name.upper()] = name


def _unit_cards(unit: Any) -> list[Card]:
    return [] if unit is None else [("BUNIT", unit.to_string("fits"), "")]


def _offset_wcs(bbox: Any) -> list[Card]:
    return [
        ("CTYPE1A", "LINEAR", ""),
        ("CTYPE2A", "LINEAR", ""),
        ("CRPIX1A", 1.0, ""),
        ("CRPIX2A", 1.0, ""),
        ("CRVAL1A", float(bbox.x.start), ""),
        ("CRVAL2A", float(bbox.y.start), ""),
        ("CUNIT1A", "PIXEL", ""),
        ("CUNIT2A", "PIXEL", ""),
    ]


def _celestial_wcs(coadd: CellCoadd) -> list[Any]:
    from ...projection import FitsWcsError

    try:
        header = coadd.projection.fits_wcs(coadd.bbox)
    except FitsWcsError:
        return []
    return list(header.cards)


def _mask_cards(schema: Any, k: int) -> list[Card]:
    cards: list[Card] = []
    planes = [p for p in schema if p is not None][k * DISK_PLANES_PER_ARRAY : (k + 1) * DISK_PLANES_PER_ARRAY]
    for bit, plane in enumerate(planes):
        cards.append((f"MSKN{bit:04d}", plane.name, f"Name for mask plane {bit}."))
        cards.append((f"MSKM{bit:04d}", 1 << bit, f"Bitmask for plane n={bit}; always 1<<n."))
        cards.append((f"MSKD{bit:04d}", plane.description, ""))
    return cards


def _quantized_copy(image: Image, options: FitsCompressionOptions | None, bbox: Any) -> Any:
    """The stored HDU to copy as is when a quantized plane is re-written lossy, unchanged."""
    from .tiles import TiledArray

    origin = image._origin
    if options is None or options.quantization is None or origin is None:
        return None
    source = origin.source
    if not isinstance(source, FitsArraySource) or len(source.refs) != 1 or source.combine is not None:
        return None
    if origin.bbox != bbox or image.array is not origin.array:
        return None
    layout = source.layouts()[0]
    if not isinstance(layout, TiledArray) or layout.codec.quantize is None:
        return None
    return (source.url, source.storage_options, source.refs[0].entry, source.pin)


def _image_plane(
    key: str, extname: str, image: Image, options: FitsCompressionOptions | None, cell: tuple[int, int],
    cards: list[Card | Any],
) -> _Plane:
    shape = tuple(int(n) for n in image.array.shape)
    tile = tuple(options.tile_shape) if options is not None and options.tile_shape else cell
    origin = image._origin
    pieces: Callable[[Sequence[int]], list[da.Array]]
    if origin is not None:
        start, window = origin_window(origin, image.bbox)
        pieces = functools.partial(pieces_from_source, origin.source, start, window, name=extname)
    else:
        pieces = functools.partial(pieces_from_array, image.array)
    plane = _Plane(key, extname, 1, shape, np.dtype(image.dtype), tile, options, pieces, cards=cards)
    copy_from = _quantized_copy(image, options, image.bbox)
    # Copied headers keep their EXTNAME: only a plane stored under the same name is copied.
    if copy_from is not None and (copy_from[2].extname, copy_from[2].extver) == (extname, 1):
        plane.copy_from = copy_from
    return plane


def _mask_planes(coadd: CellCoadd, options: FitsCompressionOptions | None, cell: tuple[int, int],
                 celestial: list[Any]) -> list[_Plane]:
    mask = coadd.mask
    schema = mask.schema
    shape = tuple(int(n) for n in mask.array.shape[:2])
    tile = tuple(options.tile_shape) if options is not None and options.tile_shape else cell
    origin = mask._origin
    out = []
    for k in range(schema.n_disk_arrays):
        cards = [*celestial, *_offset_wcs(mask.bbox), *_mask_cards(schema, k)]
        pieces: Callable[[Sequence[int]], list[da.Array]]
        prepare: Callable[[np.ndarray], np.ndarray] | None
        if isinstance(origin.source if origin is not None else None, FitsArraySource) and len(
            origin.source.refs  # type: ignore[union-attr]
        ) == schema.n_disk_arrays:
            assert origin is not None
            stored: Any = origin.source
            full = tuple(int(n) for n in origin.bbox.shape)
            # A source over this one HDU only: piece k reads the tiles of MASK,k and nothing else.
            source = FitsArraySource(stored.url, [stored.refs[k]], shape=full, dtype=np.dtype(np.int32),
                                     combine=functools.partial(pick_disk_array, 0),
                                     storage_options=stored.storage_options, pin=stored.pin)
            start, _ = origin_window(origin, mask.bbox)
            pieces = functools.partial(pieces_from_source, source, start, shape, name=f"mask-{k}")
            prepare = None
        else:
            pieces = functools.partial(pieces_from_array, mask.array)
            prepare = functools.partial(mask_to_disk, schema, k)
        out.append(_Plane(f"mask/{k}", "MASK", k + 1, shape, np.dtype(np.int32), tile, options, pieces,
                          prepare=prepare, cards=cards))
    return out


def _psf_plane(coadd: CellCoadd, options: FitsCompressionOptions | None) -> _Plane:
    psf = coadd.psf
    shape = tuple(int(n) for n in psf.array.shape)
    tile = tuple(options.tile_shape) if options is not None and options.tile_shape else (1,) * (len(shape) - 1) + (
        shape[-1],)
    pieces: Callable[[Sequence[int]], list[da.Array]]
    if psf.origin is not None:
        source, (i0, j0) = psf.origin
        pieces = functools.partial(pieces_from_source, source, (i0, j0), shape, name="psf")
    else:
        pieces = functools.partial(pieces_from_array, psf.array)

    return _Plane("psf", "PSF", 1, shape, np.dtype(psf.array.dtype), tile, options, pieces)


def _resolve_seeds(planes: Sequence[_Plane], compression_seed: int | None) -> None:
    """Give every quantized plane its ``ZDITHER0`` as lsst-images does (spec 3.5)."""
    seed = compression_seed
    for plane in planes:
        q = plane.options.quantization if plane.options is not None else None
        if q is None or plane.copy_from is not None or plane.dtype.kind != "f":
            continue
        if q.seed:
            if q.seed == -1:
                raise ValidationError(f"{plane.extname}: checksum-derived dither seeds (-1) are not supported; "
                                      "give a seed in 1..10000 or compression_seed.")
            plane.zdither0 = q.seed
            continue
        if seed is None:
            if q.dither == FitsDitherAlgorithm.NO_DITHER:
                continue
            if q.seed == 0:
                plane.zdither0 = secrets.randbelow(10000) + 1
                continue
            raise ValidationError(
                f"{plane.extname}: no quantization seed provided (give FitsQuantizationOptions(seed=...) "
                "or compression_seed=...)."
            )
        plane.zdither0 = seed
        seed = 1 if seed >= 10000 else seed + 1


def _check_compression(planes: Sequence[_Plane]) -> None:
    for plane in planes:
        if plane.options is None:
            continue
        try:
            plane.options.check_for(plane.dtype, plane.shape, plane=plane.extname)
        except ValidationError:
            raise
        if len(plane.tile_shape) != len(plane.shape) or any(t <= 0 for t in plane.tile_shape):
            raise ValidationError(f"{plane.extname}: tile shape {plane.tile_shape} does not fit shape {plane.shape}.")


def _tables(coadd: CellCoadd) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """Table HDUs to write (EXTNAME, table) and the subtrees that describe them."""
    tables, subtrees = table_subtrees(coadd, lambda table, path: column_models(table, path.upper()))
    return [(path.upper(), table) for path, table in tables], subtrees


def _passthrough(coadd: CellCoadd, written: set[tuple[str, int]], referenced: set[tuple[str, int]]) -> list[Any]:
    """Stored HDUs the tree still references (backgrounds, unknown fields) that are not written anew."""
    stored = coadd._stored
    if stored is None or not stored.hdus:
        return []
    out = []
    for key, entry in stored.hdus.items():
        if key in written or key[0] in ("", "JSON", "INDEX") or key not in referenced:
            continue
        out.append((stored.url, stored.storage_options, entry, stored.pin))
    return out


def _sources(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "source" and isinstance(value, str):
                yield value
            else:
                yield from _sources(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _sources(value)


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


def _encoder(plane: _Plane) -> TileEncoder:
    assert plane.options is not None
    quantization = plane.options.quantization if plane.dtype.kind == "f" else None
    if quantization is not None and quantization.seed != plane.zdither0:
        quantization = FitsQuantizationOptions(level=quantization.level, dither=quantization.dither,
                                               seed=plane.zdither0 or None)
    return TileEncoder(plane.options.algorithm, plane.dtype, quantization, zdither0=plane.zdither0)


def _plane_jobs(plane: _Plane, encoder: TileEncoder | None) -> list[tuple[Callable[[np.ndarray], Any], da.Array]]:
    """The pieces of a plane to compute, each with the function that turns it into what is written."""
    edges = plane.edges()
    pieces = plane.pieces(edges)
    if encoder is None:
        return [(functools.partial(plain_piece, plane.dtype, plane.prepare), p) for p in pieces]
    return list(encode_jobs(pieces, edges, plane.shape, plane.tile_shape, encoder, plane.prepare))


def _write_planes(writer: FitsStreamWriter, planes: Sequence[_Plane], progress: Callable[[int], Any] | None) -> None:
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


@dataclass
class WritePlan:
    """Everything a write does, decided and checked before the first byte."""

    planes: list[_Plane]
    tables: list[tuple[str, Any]]
    passthrough: list[Any]
    tree: dict[str, Any]

    @property
    def n_pieces(self) -> int:
        """Pieces the pixel planes are read and written in (the unit of progress)."""
        return sum(len(plane.edges()) - 1 for plane in self.planes)


def plan_write(
    coadd: CellCoadd,
    *,
    image_compression: Any = DEFAULT,
    mask_compression: Any = DEFAULT,
    variance_compression: Any = DEFAULT,
    mask_fractions_compression: Any = DEFAULT,
    psf_compression: Any = DEFAULT,
    compression_seed: int | None = None,
) -> WritePlan:
    """Check a write and decide its HDUs and tree (reads no pixel; see :func:`write_fits`)."""
    from ...schema import validate_tree

    if compression_seed is not None and (
        isinstance(compression_seed, bool) or not isinstance(compression_seed, int)
        or not 1 <= compression_seed <= 10000
    ):
        raise ValidationError(f"compression_seed must be an int in 1..10000, not {compression_seed!r}.")
    _check_names(coadd)
    opts = {
        "image": _options(image_compression, "image_compression"),
        "mask": _options(mask_compression, "mask_compression"),
        "variance": _options(variance_compression, "variance_compression"),
        "mask_fractions": _options(mask_fractions_compression, "mask_fractions_compression"),
        "psf": _options(psf_compression, "psf_compression"),
    }
    cell = (int(coadd.grid.cell_shape.y), int(coadd.grid.cell_shape.x))
    celestial = _celestial_wcs(coadd)
    offset = _offset_wcs(coadd.bbox)
    planes: list[_Plane] = [
        _image_plane("image", "IMAGE", coadd.image, opts["image"], cell,
                     [*_unit_cards(coadd.image.unit), *celestial, *offset]),
        *_mask_planes(coadd, opts["mask"], cell, celestial),
        _image_plane("variance", "VARIANCE", coadd.variance, opts["variance"], cell,
                     [*_unit_cards(coadd.variance.unit), *celestial, *offset]),
    ]
    for name, image in coadd.mask_fractions.items():
        planes.append(_image_plane(f"mask_fractions/{name}", f"MASK_FRACTIONS/{name.upper()}", image,
                                   opts["mask_fractions"], cell, [*_unit_cards(image.unit), *offset]))
    for n, image in enumerate(coadd.noise_realizations):
        planes.append(_image_plane(f"noise_realizations/{n}", f"NOISE_REALIZATIONS/{n}", image, opts["image"],
                                   cell, [*_unit_cards(image.unit), *offset]))
    planes.append(_psf_plane(coadd, opts["psf"]))
    _check_compression(planes)
    _resolve_seeds(planes, compression_seed)
    tables, subtrees = _tables(coadd)
    sources = {plane.key: plane.source for plane in planes}
    tree = build_tree(coadd, sources, subtrees)
    if coadd._stored is not None:
        tree = merge_unknown(tree, coadd._stored.tree)
    written = {(p.extname, p.extver) for p in planes} | {(name, 1) for name, _ in tables}
    referenced = {key for s in _sources(tree) if (key := _source_key(s)) is not None}
    passthrough = _passthrough(coadd, written, referenced)
    available = written | {(e.extname, e.extver) for _, _, e, _ in passthrough} | {("JSON", 1)}
    missing = sorted(referenced - available)
    if missing:
        raise ValidationError(
            f"The tree references HDUs {missing} that this coadd cannot provide (they belong to an archive "
            "it was not read from)."
        )
    validate_tree(tree)
    return WritePlan(planes, tables, passthrough, tree)


def write_plan(plan: WritePlan, stream: IO[bytes], progress: Callable[[int], Any] | None = None) -> None:
    """Stream the HDUs of ``plan`` into ``stream`` (opened ``w+b``, empty).

    ``progress``, if given, is called with the number of pieces done as they are written.
    """
    import json

    writer = FitsStreamWriter(stream)
    date = utc_now()
    primary = writer.write_hdu(_primary({}, date), b"", extname="", xtension="IMAGE")
    _write_planes(writer, plan.planes, progress)
    for extname, table in plan.tables:
        header, data = table_hdu(table, extname)
        writer.write_hdu(header, data, extname=extname, xtension="BINTABLE")
    for url, storage_options, entry, pin in plan.passthrough:
        _copy_hdu(writer, url, storage_options, entry, pin)
    text = json.dumps(plan.tree, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode("utf-8")
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
    plan = plan_write(
        coadd,
        image_compression=image_compression,
        mask_compression=mask_compression,
        variance_compression=variance_compression,
        mask_fractions_compression=mask_fractions_compression,
        psf_compression=psf_compression,
        compression_seed=compression_seed,
    )
    url = normalize_url(url)
    with atomic_output(url, storage_options=storage_options, overwrite=overwrite) as stream:
        if not progress:
            write_plan(plan, stream)
        else:
            import sys

            from tqdm import tqdm

            with tqdm(total=plan.n_pieces, unit="piece", desc="writing", file=sys.stderr) as bar:
                write_plan(plan, stream, bar.update)
    return url
