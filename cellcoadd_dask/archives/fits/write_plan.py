"""The pixel HDUs of a FITS write, planned before the first byte: one :class:`WritePlane` per HDU.

Each plane knows its name, shape, dtype, tile shape, compression options, header cards and how
to cut its pixels into pieces of whole tile rows (from its stored source when it has one, so
that only the tiles of the written box are read).  Quantization seeds are resolved and options
checked against every plane here, so that a bad option fails before anything is written.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from ...coadd_archives import DEFAULT_COMPRESSION as DEFAULT
from ...compression import FitsCompressionOptions, FitsDitherAlgorithm
from ...errors import ValidationError
from ...mask import DISK_PLANES_PER_ARRAY
from .hdu_writer import Card
from .planes import mask_to_disk, origin_window, pick_disk_array, piece_edges, pieces_from_array, pieces_from_source
from .source import FitsArraySource

if TYPE_CHECKING:
    from ...coadd import CellCoadd
    from ...image import Image
    from ...mask import Mask
    from ...psf import CellPointSpreadFunction

__all__ = [
    "WritePlane", "celestial_wcs", "check_compression", "compression_options", "image_plane", "mask_planes",
    "offset_wcs", "psf_plane", "resolve_seeds", "unit_cards",
]


@dataclass
class WritePlane:
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
        """The tree's source string of the HDU, e.g. ``fits:MASK,2``."""
        return f"fits:{self.extname}" + (f",{self.extver}" if self.extver > 1 else "")

    def edges(self) -> list[int]:
        """Piece edges along axis 0 (whole tile rows)."""
        return piece_edges(self.shape[0], self.tile_shape[0], math.prod(self.shape[1:]) * self.dtype.itemsize)


def compression_options(value: Any, what: str) -> FitsCompressionOptions | None:
    """A ``*_compression`` argument as options (``DEFAULT``: lossless ``GZIP_2``); ``what`` names it in errors."""
    if value is DEFAULT:
        return FitsCompressionOptions.DEFAULT
    try:
        return FitsCompressionOptions.coerce(value)
    except ValidationError as exc:
        raise ValidationError(f"{what}: {exc}") from None


def unit_cards(unit: Any) -> list[Card]:
    """The ``BUNIT`` card of a unit (none for ``None``)."""
    return [] if unit is None else [("BUNIT", unit.to_string("fits"), "")]


def offset_wcs(bbox: Any) -> list[Card]:
    """The ``A`` linear WCS giving absolute pixel positions from array indices (lsst-images' cards)."""
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


def celestial_wcs(coadd: CellCoadd) -> list[Any]:
    """The celestial FITS WCS cards of the coadd's box, or none when its projection has no FITS form."""
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

    origin = image.origin
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


def image_plane(
    key: str, extname: str, image: Image, options: FitsCompressionOptions | None, cell: tuple[int, int],
    cards: list[Card | Any],
) -> WritePlane:
    """The plane of an image HDU (a stored lossy HDU written again unchanged is copied as stored)."""
    shape = tuple(int(n) for n in image.array.shape)
    tile = tuple(options.tile_shape) if options is not None and options.tile_shape else cell
    origin = image.origin
    pieces: Callable[[Sequence[int]], list[da.Array]]
    if origin is not None:
        start, window = origin_window(origin, image.bbox)
        pieces = functools.partial(pieces_from_source, origin.source, start, window, name=extname)
    else:
        pieces = functools.partial(pieces_from_array, image.array)
    plane = WritePlane(key, extname, 1, shape, np.dtype(image.dtype), tile, options, pieces, cards=cards)
    copy_from = _quantized_copy(image, options, image.bbox)
    # Copied headers keep their EXTNAME: only a plane stored under the same name is copied.
    if copy_from is not None and (copy_from[2].extname, copy_from[2].extver) == (extname, 1):
        plane.copy_from = copy_from
    return plane


def mask_planes(mask: Mask, options: FitsCompressionOptions | None, cell: tuple[int, int],
                 celestial: list[Any]) -> list[WritePlane]:
    """The ``MASK`` HDUs of a mask, 31 planes each (one stored HDU read per plane when the mask is stored)."""
    schema = mask.schema
    shape = tuple(int(n) for n in mask.array.shape[:2])
    tile = tuple(options.tile_shape) if options is not None and options.tile_shape else cell
    origin = mask.origin
    out = []
    for k in range(schema.n_disk_arrays):
        cards = [*celestial, *offset_wcs(mask.bbox), *_mask_cards(schema, k)]
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
        out.append(WritePlane(f"mask/{k}", "MASK", k + 1, shape, np.dtype(np.int32), tile, options, pieces,
                          prepare=prepare, cards=cards))
    return out


def psf_plane(psf: CellPointSpreadFunction, options: FitsCompressionOptions | None) -> WritePlane:
    """The ``PSF`` HDU: one tile per row of each cell's kernel unless the options give a tile shape."""
    shape = tuple(int(n) for n in psf.array.shape)
    tile = tuple(options.tile_shape) if options is not None and options.tile_shape else (1,) * (len(shape) - 1) + (
        shape[-1],)
    pieces: Callable[[Sequence[int]], list[da.Array]]
    if psf.origin is not None:
        source, (i0, j0) = psf.origin
        pieces = functools.partial(pieces_from_source, source, (i0, j0), shape, name="psf")
    else:
        pieces = functools.partial(pieces_from_array, psf.array)

    return WritePlane("psf", "PSF", 1, shape, np.dtype(psf.array.dtype), tile, options, pieces)


def resolve_seeds(planes: Sequence[WritePlane], compression_seed: int | None) -> None:
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


def check_compression(planes: Sequence[WritePlane]) -> None:
    """Check every plane's options against its dtype and shape.

    Raises
    ------
    ValidationError
        Naming the HDU, for options that do not fit it.
    """
    for plane in planes:
        if plane.options is None:
            continue
        plane.options.check_for(plane.dtype, plane.shape, plane=plane.extname)
        if len(plane.tile_shape) != len(plane.shape) or any(t <= 0 for t in plane.tile_shape):
            raise ValidationError(f"{plane.extname}: tile shape {plane.tile_shape} does not fit shape {plane.shape}.")
