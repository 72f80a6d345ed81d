"""Open a legacy (afw ``MaskedImage.writeFits``) FITS file as a lazy :class:`~cellcoadd_dask.legacy.LegacyMaskedImage`.

Opening walks the headers (:mod:`~cellcoadd_dask.archives.fits.legacy_layout`); every plane
becomes a dask array over a :class:`~cellcoadd_dask.archives.fits.source.FitsArraySource`
that already holds its header and the tile-table rows read with it, chunked on tile edges,
so computing a region reads only the tiles it touches.

The mask is remapped lazily, chunk by chunk: each legacy bit (``MP_<NAME>`` cards) is moved to
the position its plane has in the package's stored-mask layout (31 planes per int32 array,
schema order), and from there the package's usual converters give the in-memory array,
single planes (:meth:`~cellcoadd_dask.Mask.get`) and the packed mask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any, Literal

import numpy as np
from dask.base import tokenize

from ...cells import CellGrid
from ...errors import ArchiveFormatError, ValidationError, shown_url
from ...fetch import normalize_url
from ...geom import YX, Box
from ...image import Image
from ...lazy import Chunks, PlaneOrigin, apply_rest, cell_chunks, normalize_key, plane_array
from ...legacy import LegacyMaskedImage
from ...mask import DISK_PLANES_PER_ARRAY, Mask, MaskPlane, MaskSchema, combine_disk_arrays
from .legacy_layout import (
    LEGACY_HDUS,
    LegacyFile,
    LegacyHdu,
    legacy_bunit,
    legacy_mask_planes,
    legacy_yx0,
    split_primary,
    walk_legacy,
)
from .source import FitsArraySource, HduRef
from .tiles import TiledArray

__all__ = ["LegacyMaskSource", "LegacyRemap", "read_legacy"]

PLAIN_UNIT = 256
"""Chunk unit (pixels per side) of an uncompressed plane, whose reads are row runs of any size."""


class LegacyRemap:
    """Moves the bits of a legacy mask block to the package's stored-mask layout.

    Parameters
    ----------
    moves
        ``(legacy bit, stored array, stored bit)`` of every mapped plane.
    orphans
        Legacy plane name -> bit of the planes the map leaves out (pixels set there are an error).
    n_arrays
        Number of stored int32 arrays.
    url
        The file, for messages.
    """

    def __init__(self, moves: list[tuple[int, int, int]], orphans: dict[str, int], n_arrays: int, url: str) -> None:
        self.moves = moves
        self.orphans = orphans
        self.n_arrays = n_arrays
        self.url = url

    def __dask_tokenize__(self) -> Any:
        return ("legacy-remap", self.moves, sorted(self.orphans.items()), self.n_arrays, self.url)

    def __call__(self, legacy: np.ndarray) -> list[np.ndarray]:
        """The stored int32 arrays of one block of the legacy mask.

        Raises
        ------
        ValidationError
            If a legacy plane left out of the plane map has pixels set in the block.
        """
        bits = np.asarray(legacy).astype(np.int64, copy=False) & 0xFFFFFFFF
        for name, bit in self.orphans.items():
            if n := int(np.count_nonzero(bits & (1 << bit))):
                raise ValidationError(
                    f"{shown_url(self.url)}: HDU 2 (MASK): legacy mask plane {name!r} (bit {bit}) is not in the "
                    f"plane map, but {n} pixels of this block have it set; add it to plane_map."
                )
        out = [np.zeros(bits.shape, dtype=np.int64) for _ in range(self.n_arrays)]
        for old, k, new in self.moves:
            out[k] |= ((bits >> old) & 1) << new
        return [a.astype(np.int32) for a in out]


class LegacyMaskSource:
    """A lazily indexed mask over a legacy mask HDU: reads the region's tiles, remaps, then ``combine``.

    ``combine`` has the signature of the package's stored-mask combiners
    (:func:`~cellcoadd_dask.mask.combine_disk_arrays` and friends); :meth:`derive` swaps it,
    which is how :meth:`~cellcoadd_dask.Mask.get` and :meth:`~cellcoadd_dask.Mask.packed` read.
    """

    def __init__(self, raw: FitsArraySource, remap: LegacyRemap,
                 combine: Callable[[list[np.ndarray], tuple[slice, ...]], np.ndarray],
                 shape: tuple[int, ...], dtype: np.dtype | str) -> None:
        self.raw = raw
        self.remap = remap
        self.combine = combine
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __dask_tokenize__(self) -> Any:
        return ("legacy-mask", tokenize(self.raw), tokenize(self.remap), tokenize(self.combine), self.shape,
                str(self.dtype))

    def __repr__(self) -> str:
        return f"LegacyMaskSource({self.raw!r}, shape={self.shape}, dtype={self.dtype})"

    def derive(self, combine: Callable[[list[np.ndarray], tuple[slice, ...]], np.ndarray], shape: tuple[int, ...],
               dtype: np.dtype | str) -> LegacyMaskSource:
        """The same stored mask through another combiner."""
        return LegacyMaskSource(self.raw, self.remap, combine, shape, dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        region, rest = normalize_key(key, self.shape)
        legacy = self.raw.read(region[:2])
        return apply_rest(self.combine(self.remap(legacy), region), rest)


def _chunks(hdu: LegacyHdu, bbox: Box, chunks: Chunks, itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    layout = hdu.layout
    unit = tuple(layout.tile_shape) if isinstance(layout, TiledArray) else (PLAIN_UNIT, PLAIN_UNIT)
    return cell_chunks(bbox, CellGrid(bbox=bbox, cell_shape=YX(int(unit[0]), int(unit[1]))), chunks, itemsize)


def _source(legacy: LegacyFile, hdu: LegacyHdu, storage_options: Mapping[str, Any] | None) -> FitsArraySource:
    shape = tuple(hdu.layout.shape)
    dtype = np.dtype(hdu.layout.dtype).newbyteorder("=")
    source = FitsArraySource(legacy.url, [HduRef(hdu.entry, shape, dtype.name)], shape=shape, dtype=dtype,
                             storage_options=storage_options, pin=legacy.pin)
    source.set_layouts([hdu.layout])
    return source


def _image(legacy: LegacyFile, hdu: LegacyHdu, bbox: Box, chunks: Chunks,
           storage_options: Mapping[str, Any] | None) -> Image:
    unit = None
    if (bunit := hdu.cards.get("BUNIT")) is not None:
        unit = legacy_bunit(bunit, legacy.primary.get("LSST ISR UNITS"), url=legacy.url, hdu=hdu.label)
    source = _source(legacy, hdu, storage_options)
    name = f"legacy-{hdu.plane.lower()}"
    array = plane_array(source, name=name, chunks=_chunks(hdu, bbox, chunks, source.dtype.itemsize))
    return Image(array, bbox=bbox, unit=unit, origin=PlaneOrigin(source, bbox, array, name))


def _plane(value: Any, old: str) -> MaskPlane:
    name, description = getattr(value, "name", None), getattr(value, "description", None)
    if not isinstance(name, str) or not isinstance(description, str) or not name:
        raise ValidationError(f"plane_map[{old!r}] = {value!r} has no string .name and .description")
    return MaskPlane(name, description)


def _schema(old_planes: dict[str, int], plane_map: Mapping[str, Any] | None) -> tuple[MaskSchema, dict[str, str]]:
    """The schema and legacy name -> schema name of the planes kept."""
    if plane_map is None:
        planes: list[MaskPlane | None] = [None] * (max(old_planes.values(), default=-1) + 1)
        for old, bit in old_planes.items():
            planes[bit] = MaskPlane(old, "")
        return MaskSchema(planes), {old: old for old in old_planes}
    if not isinstance(plane_map, Mapping):
        raise ValidationError(f"plane_map must be a mapping of legacy plane names to planes, not {plane_map!r}")
    mapped = {str(old): _plane(value, str(old)) for old, value in plane_map.items()}
    schema = MaskSchema(list(dict.fromkeys(mapped.values())))
    return schema, {old: plane.name for old, plane in mapped.items() if old in old_planes}


def _mask(legacy: LegacyFile, hdu: LegacyHdu, bbox: Box, chunks: Chunks, plane_map: Mapping[str, Any] | None,
          storage_options: Mapping[str, Any] | None) -> Mask:
    if np.dtype(hdu.layout.dtype).kind not in "iu":
        raise _format_error(legacy, hdu, f"the mask holds {hdu.layout.dtype} pixels, not integers")
    bits = np.dtype(hdu.layout.dtype).itemsize * 8
    old_planes = legacy_mask_planes(hdu.cards, bits, url=legacy.url, hdu=hdu.label)
    schema, kept = _schema(old_planes, plane_map)
    stored = {name: k for k, name in enumerate(schema.names)}
    moves = [(old_planes[old], stored[new] // DISK_PLANES_PER_ARRAY, stored[new] % DISK_PLANES_PER_ARRAY)
             for old, new in kept.items()]
    orphans = {old: bit for old, bit in old_planes.items() if old not in kept}
    remap = LegacyRemap(moves, orphans, schema.n_disk_arrays, legacy.url)
    raw = _source(legacy, hdu, storage_options)
    shape = (*bbox.shape, schema.mask_size)
    source = LegacyMaskSource(raw, remap, functools.partial(combine_disk_arrays, schema), shape, schema.dtype)
    yx = _chunks(hdu, bbox, chunks, raw.dtype.itemsize)
    array = plane_array(source, name="legacy-mask", chunks=(*yx, (schema.mask_size,)))
    return Mask(array, schema=schema, bbox=bbox, origin=PlaneOrigin(source, bbox, array, "legacy-mask"))


def _format_error(legacy: LegacyFile, hdu: LegacyHdu, message: str) -> ArchiveFormatError:
    """The :class:`~cellcoadd_dask.errors.ArchiveFormatError` of an HDU (its header's byte range)."""
    return ArchiveFormatError(message, url=legacy.url, hdu=hdu.label, byte_range=(hdu.entry.hdraddr, hdu.entry.dataddr))


def read_legacy(
    uri: str | PathLike[str],
    *,
    preserve_quantization: bool = False,
    plane_map: Mapping[str, Any] | None = None,
    component: Literal["image", "mask", "variance"] | None = None,
    fits_wcs_frame: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Chunks = "auto",
) -> LegacyMaskedImage | Image | Mask:
    """Open an afw ``MaskedImage`` FITS file lazily (see :meth:`~cellcoadd_dask.CellCoadd.read_legacy`).

    Raises
    ------
    ArchiveFormatError
        If the file is malformed (names the URL, the HDU and the byte range).
    ValidationError
        For an invalid ``component``, ``plane_map`` or ``chunks``.
    """
    if component not in (None, *(p.lower() for p in LEGACY_HDUS)):
        raise ValidationError(f"component must be 'image', 'mask', 'variance' or None, not {component!r}")
    url = normalize_url(uri)
    count = 3 if component is None else [p.lower() for p in LEGACY_HDUS].index(component) + 1
    legacy = walk_legacy(url, count, storage_options)
    metadata, header = split_primary(legacy.primary, url=url)
    boxes = []
    for hdu in legacy.hdus:
        y0, x0 = legacy_yx0(hdu.cards, url=url, hdu=hdu.label)
        boxes.append(Box.from_shape(tuple(hdu.layout.shape), (y0, x0)))
    for hdu, box in zip(legacy.hdus, boxes, strict=True):
        if box != boxes[0]:
            raise _format_error(legacy, hdu, f"bbox {box} differs from the image's {boxes[0]}")
    bbox = boxes[0]
    planes: dict[str, Image | Mask] = {}
    for hdu in legacy.hdus:
        if component is not None and hdu.plane.lower() != component:
            continue
        if hdu.plane == "MASK":
            planes["mask"] = _mask(legacy, hdu, bbox, chunks, plane_map, storage_options)
        else:
            planes[hdu.plane.lower()] = _image(legacy, hdu, bbox, chunks, storage_options)
    if component is not None:
        return planes[component]
    image, mask, variance = planes["image"], planes["mask"], planes["variance"]
    assert isinstance(image, Image) and isinstance(mask, Mask) and isinstance(variance, Image)
    projection = None
    if fits_wcs_frame is not None:
        from ...fits_wcs import projection_from_cards

        first = legacy.hdus[0]
        projection = projection_from_cards(first.cards, bbox=bbox, url=url, hdu=first.label)
    return LegacyMaskedImage(
        image, mask, variance, metadata=metadata, header=header, source_url=url, projection=projection,
        quantized=tuple(h.plane.lower() for h in legacy.hdus if h.quantized),
        preserve_quantization=preserve_quantization,
        storage={h.plane.lower(): _storage(h) for h in legacy.hdus},
    )


def _storage(hdu: LegacyHdu) -> str:
    """How an HDU stores its pixels, for :meth:`LegacyMaskedImage.describe`."""
    layout = hdu.layout
    if isinstance(layout, TiledArray):
        tile = "x".join(str(n) for n in layout.tile_shape)
        quantized = f", quantized ({layout.codec.quantize})" if layout.codec.quantize is not None else ""
        return f"tile-compressed {layout.codec.algorithm}, tiles {tile}{quantized}"
    return "uncompressed"
