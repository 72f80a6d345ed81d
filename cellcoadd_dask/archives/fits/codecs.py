"""Tile codecs of FITS tile-compressed images: pure ``bytes -> array`` transforms.

A :class:`TileCodec` holds the settings that are constant over one HDU (the
header cards turned into values by :func:`.tile_tables.codec_from_header`);
:func:`decode_tile` turns the stored bytes of one tile into its pixels, in the
tile's own row-major order (last numpy axis fastest), as a 1-d array of the
image's logical dtype in native byte order.

Supported: ``GZIP_1``, ``GZIP_2``, ``RICE_1`` and ``NOCOMPRESS``, lossless or
quantized (``NO_DITHER``, ``SUBTRACTIVE_DITHER_1``, ``SUBTRACTIVE_DITHER_2``,
FITS standard section 10.2), with the quantization-fallback tiles stored
losslessly in ``GZIP_COMPRESSED_DATA`` (gzip) or ``UNCOMPRESSED_DATA`` (raw).
The results are bit-identical to astropy's reader.  ``HCOMPRESS_1``,
``PLIO_1`` and anything else are refused when the codec is built, so no
decoder ever sees their bytes.

Decompression goes through ``imagecodecs`` (libdeflate gzip, Rice) or :mod:`zlib`, the
byte shuffling through whole-array numpy operations, and dithered dequantization through
astropy's compiled copy of CFITSIO's routine (:mod:`._astropy_codecs`).

Errors
------
Every failure raises :class:`TileDecodeError`, a subclass of
:class:`~cellcoadd_dask.errors.ArchiveFormatError` that carries no location:
a codec sees bytes, not files.  The tile layer catches it and raises an
``ArchiveFormatError`` naming the URL, HDU and byte range of the tile.
"""

from __future__ import annotations

import sys
import threading
import zlib
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ...errors import ArchiveFormatError

__all__ = [
    "ALGORITHMS",
    "BITPIX_DTYPES",
    "QUANTIZE_METHODS",
    "TileCodec",
    "TileDecodeError",
    "decode_tile",
    "decode_tile_into",
    "quantized_integers",
]

ALGORITHMS = ("GZIP_1", "GZIP_2", "RICE_1", "NOCOMPRESS")
"""``ZCMPTYPE`` values this module decodes."""

QUANTIZE_METHODS = ("NO_DITHER", "SUBTRACTIVE_DITHER_1", "SUBTRACTIVE_DITHER_2")
"""``ZQUANTIZ`` values this module decodes."""

FALLBACKS = ("GZIP_1", "NOCOMPRESS")
"""How a tile with an empty ``COMPRESSED_DATA`` cell is stored instead."""

BITPIX_DTYPES: dict[int, np.dtype] = {
    8: np.dtype(np.uint8),
    16: np.dtype(np.int16),
    32: np.dtype(np.int32),
    64: np.dtype(np.int64),
    -32: np.dtype(np.float32),
    -64: np.dtype(np.float64),
}
"""Native-byte-order numpy dtype of each FITS ``BITPIX``/``ZBITPIX`` value."""

_RICE_DTYPES: dict[int, np.dtype] = {1: np.dtype(np.uint8), 2: np.dtype(np.int16), 4: np.dtype(np.int32)}
_N_RANDOM = 10_000
_LITTLE_ENDIAN = sys.byteorder == "little"
_SCRATCH_KEEP_BYTES = 4 * 1024 * 1024
"""Largest inflate buffer a thread keeps between tiles (a 150x150 float64 tile takes 180 kB)."""
_scratch = threading.local()

_Raw = bytes | bytearray | memoryview | np.ndarray
"""Inflated bytes of a tile: a bytes-like object or a 1-d ``uint8`` array."""


class TileDecodeError(ArchiveFormatError):
    """The bytes of a tile (or the codec settings) cannot be decoded.

    Raised without a location; the tile layer re-raises it as an
    :class:`~cellcoadd_dask.errors.ArchiveFormatError` naming the file, HDU and
    byte range.
    """


@dataclass(frozen=True, slots=True)
class TileCodec:
    """Decode settings shared by every tile of one tile-compressed HDU.

    Attributes
    ----------
    algorithm
        ``ZCMPTYPE``: ``"GZIP_1"``, ``"GZIP_2"``, ``"RICE_1"`` or ``"NOCOMPRESS"``.
    zbitpix
        ``ZBITPIX``, the logical ``BITPIX`` of the image (8, 16, 32, 64, -32, -64).
    blocksize
        Rice block size in pixels (``ZNAME``/``ZVAL`` ``BLOCKSIZE``).
    bytepix
        Rice bytes per integer (``BYTEPIX``: 1, 2 or 4).
    quantize
        ``None`` for lossless tiles, else the quantization method
        (``ZQUANTIZ``; ``"NO_DITHER"`` when quantized without that card).
    zdither0
        ``ZDITHER0``, the dither seed (1..10000) of the subtractive dithers.
    zblank
        Header ``ZBLANK``: the quantized integer that encodes NaN (floats only).
    fallback
        How tiles with an empty ``COMPRESSED_DATA`` cell are stored instead:
        ``"GZIP_1"`` (``GZIP_COMPRESSED_DATA``), ``"NOCOMPRESS"``
        (``UNCOMPRESSED_DATA``) or ``None`` (no such column).
    """

    algorithm: str
    zbitpix: int
    blocksize: int = 32
    bytepix: int = 4
    quantize: str | None = None
    zdither0: int = 0
    zblank: int | None = None
    fallback: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise TileDecodeError(f"unsupported tile compression {self.algorithm!r} "
                                  f"(supported: {', '.join(ALGORITHMS)})")
        if self.zbitpix not in BITPIX_DTYPES:
            raise TileDecodeError(f"invalid ZBITPIX {self.zbitpix!r}")
        if self.algorithm == "RICE_1":
            if self.bytepix not in _RICE_DTYPES:
                raise TileDecodeError(f"invalid RICE_1 BYTEPIX {self.bytepix!r} (1, 2 or 4)")
            if not 1 <= self.blocksize <= 1 << 16:
                raise TileDecodeError(f"invalid RICE_1 BLOCKSIZE {self.blocksize!r}")
        if self.quantize is not None:
            if self.quantize not in QUANTIZE_METHODS:
                raise TileDecodeError(f"unsupported quantization {self.quantize!r} "
                                      f"(supported: {', '.join(QUANTIZE_METHODS)})")
            if self.zbitpix > 0:
                raise TileDecodeError(f"quantization of an integer image (ZBITPIX {self.zbitpix})")
            if self.quantize != "NO_DITHER" and not 1 <= self.zdither0 <= _N_RANDOM:
                raise TileDecodeError(f"dither seed ZDITHER0 {self.zdither0!r} outside 1..{_N_RANDOM}")
        if self.fallback is not None and self.fallback not in FALLBACKS:
            raise TileDecodeError(f"invalid fallback storage {self.fallback!r}")

    @property
    def dtype(self) -> np.dtype:
        """Native-byte-order logical dtype of the decoded pixels."""
        return BITPIX_DTYPES[self.zbitpix]


def _scratch_buffer(nbytes: int) -> np.ndarray:
    """A ``uint8`` buffer of ``nbytes`` owned by the calling thread (reused from tile to tile)."""
    buffer: np.ndarray | None = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.size < nbytes:
        buffer = np.empty(nbytes, dtype=np.uint8)
        if nbytes <= _SCRATCH_KEEP_BYTES:
            _scratch.buffer = buffer
    return buffer[:nbytes]


def _gunzip(blob: bytes | memoryview, nbytes: int, out: np.ndarray | None = None) -> _Raw:
    """Inflate a gzip (or zlib) stream that must hold exactly ``nbytes`` bytes.

    A gzip stream is inflated into ``out`` (``nbytes`` of ``uint8``) when given: the result is
    then a view of it.
    """
    if bytes(blob[:2]) == b"\x1f\x8b":
        import imagecodecs

        # libdeflate: about twice as fast as zlib here, checks CRC32 and length, releases the GIL,
        # and never writes past the ``nbytes`` output buffer.
        try:
            raw = imagecodecs.gzip_decode(blob, out=nbytes if out is None else cast(Any, out))
        except imagecodecs.DeflateError as exc:
            if "INSUFFICIENT_SPACE" in str(exc):
                raise TileDecodeError(f"tile decodes to more than the expected {nbytes} bytes "
                                      "(or its gzip stream is truncated)") from None
            raise TileDecodeError(f"corrupt gzip stream: {exc}") from None
        except ValueError as exc:
            raise TileDecodeError(f"corrupt gzip stream: {exc}") from None
    else:
        inflater = zlib.decompressobj(wbits=15)
        try:
            # Never inflate more than one byte past the expected size.
            raw = inflater.decompress(blob, nbytes + 1)
        except zlib.error as exc:
            raise TileDecodeError(f"corrupt zlib stream: {exc}") from None
        if len(raw) == nbytes and not inflater.eof:
            raise TileDecodeError("zlib stream of the tile is truncated")
    if len(raw) != nbytes:
        more = "more than " if len(raw) > nbytes else ""
        raise TileDecodeError(f"tile decodes to {more}{len(raw)} bytes, expected {nbytes}")
    return raw


def _from_big_endian(raw: _Raw, dtype: np.dtype, npix: int) -> np.ndarray:
    """Big-endian values -> native array (one copy)."""
    if len(raw) != npix * dtype.itemsize:
        raise TileDecodeError(f"tile holds {len(raw)} bytes, expected {npix * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype.newbyteorder(">")).astype(dtype)


def _unshuffle(raw: _Raw, dtype: np.dtype, npix: int) -> np.ndarray:
    """Undo the GZIP_2 byte shuffle and convert to native byte order in one pass."""
    size = dtype.itemsize
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(size, npix)
    values = np.empty((npix, size), dtype=np.uint8)
    # Plane k holds byte k (most significant first) of every value; one strided copy per plane
    # is several times faster than a transposed copy of the whole (size, npix) block.
    for k in range(size):
        values[:, size - 1 - k if _LITTLE_ENDIAN else k] = planes[k]
    return values.view(dtype.newbyteorder("=")).reshape(npix)


def _store(raw: _Raw, target: np.ndarray, shuffled: bool) -> None:
    """Big-endian (and, when ``shuffled``, GZIP_2 byte-shuffled) pixels -> ``target``, in one pass.

    ``target`` is a view of the output with the tile's shape and the output's native dtype.
    """
    dtype = target.dtype
    size = dtype.itemsize
    npix = target.size
    if len(raw) != npix * size:
        raise TileDecodeError(f"tile holds {len(raw)} bytes, expected {npix * size}")
    if not shuffled or size == 1:
        target[...] = np.frombuffer(raw, dtype=dtype.newbyteorder(">")).reshape(target.shape)
        return
    if target.ndim == 0 or target.strides[-1] != size:
        target[...] = _unshuffle(raw, dtype, npix).reshape(target.shape)
        return
    # The bytes of each pixel of ``target`` as a trailing axis (a view: the last axis is contiguous).
    pixel_bytes = np.reshape(target.view(np.uint8), (*target.shape, size), copy=False)
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(size, *target.shape)
    for k in range(size):
        pixel_bytes[..., size - 1 - k if _LITTLE_ENDIAN else k] = planes[k]


def _rice(codec: TileCodec, blob: bytes | memoryview, npix: int) -> np.ndarray:
    import imagecodecs

    dtype = _RICE_DTYPES[codec.bytepix]
    try:
        values = imagecodecs.rcomp_decode(blob, shape=(npix,), dtype=dtype, nblock=codec.blocksize)
    except (imagecodecs.RcompError, ValueError, RuntimeError) as exc:
        raise TileDecodeError(f"corrupt RICE_1 stream: {exc}") from None
    if values.shape != (npix,):
        raise TileDecodeError(f"RICE_1 tile decodes to {values.size} values, expected {npix}")
    return values


def _decode_stream(codec: TileCodec, blob: bytes | memoryview, dtype: np.dtype, npix: int) -> np.ndarray:
    """Undo the compression of ``COMPRESSED_DATA``: ``npix`` values of ``dtype`` (RICE_1: its integers)."""
    if codec.algorithm == "RICE_1":
        return _rice(codec, blob, npix)
    if codec.algorithm == "NOCOMPRESS":
        return _from_big_endian(blob, dtype, npix)
    raw = _gunzip(blob, npix * dtype.itemsize)
    if codec.algorithm == "GZIP_2" and dtype.itemsize > 1:
        return _unshuffle(raw, dtype, npix)
    return _from_big_endian(raw, dtype, npix)


def quantized_integers(codec: TileCodec, data: bytes | memoryview, npix: int) -> np.ndarray:
    """The ``npix`` quantized integers of a quantized tile's ``COMPRESSED_DATA`` (not yet restored to floats).

    Raises
    ------
    TileDecodeError
        If the bytes are corrupt or decode to the wrong number of integers.
    """
    if codec.quantize is None or npix <= 0 or len(data) == 0:
        raise TileDecodeError("not a quantized tile with data")
    return _decode_stream(codec, data, np.dtype(np.int32), npix)


def _dequantize(
    codec: TileCodec, q: np.ndarray, *, zscale: float, zzero: float, zblank: int | None, tile_index: int
) -> np.ndarray:
    """Quantized integers -> floats: ``q * scale + zero``, or CFITSIO's dithered inverse."""
    if codec.quantize == "NO_DITHER":
        values = q.astype(np.float64)
        values *= zscale
        values += zzero
        out = values.astype(codec.dtype, copy=False)
        if zblank is not None:
            out[q == zblank] = np.nan
        return out
    from ._astropy_codecs import unquantize_dithered

    assert codec.quantize is not None
    return unquantize_dithered(
        q,
        method=codec.quantize,
        zdither0=codec.zdither0,
        tile_index=tile_index,
        zscale=zscale,
        zzero=zzero,
        zblank=zblank,
        dtype=codec.dtype,
    )


def _decode_fallback(codec: TileCodec, blob: bytes | memoryview | None, npix: int) -> np.ndarray:
    if codec.fallback is None or blob is None or len(blob) == 0:
        raise TileDecodeError("tile has no data (all its descriptors are empty)")
    if codec.fallback == "GZIP_1":
        return _from_big_endian(_gunzip(blob, npix * codec.dtype.itemsize), codec.dtype, npix)
    return _from_big_endian(blob, codec.dtype, npix)


def decode_tile(
    codec: TileCodec,
    *,
    data: bytes | memoryview,
    gzip_data: bytes | memoryview | None,
    zscale: float,
    zzero: float,
    zblank: int | None,
    tile_index: int,
    npix: int,
) -> np.ndarray:
    """Decode the stored bytes of one tile into its pixels.

    Parameters
    ----------
    codec
        Settings of the HDU.
    data
        The tile's ``COMPRESSED_DATA`` bytes (may be empty for a fallback tile).
    gzip_data
        The tile's ``GZIP_COMPRESSED_DATA`` (or ``UNCOMPRESSED_DATA``) bytes,
        used only when ``data`` is empty; ``None`` when there are none.
    zscale, zzero
        The tile's ``ZSCALE`` and ``ZZERO`` (column value or header keyword);
        ignored for lossless tiles.
    zblank
        The integer that stands for NaN in quantized tiles (per-tile column
        value, else the header ``ZBLANK``), or ``None``.
    tile_index
        Zero-based tile (table row) number; selects the dither sequence.
    npix
        Number of pixels in the tile (smaller than the nominal tile for edge tiles).

    Returns
    -------
    numpy.ndarray
        1-d array of ``npix`` values of ``codec.dtype`` in native byte order, in
        the tile's row-major pixel order.

    Raises
    ------
    TileDecodeError
        If the bytes are corrupt, decode to the wrong number of pixels, or the
        tile has no data at all.
    """
    if npix <= 0:
        raise TileDecodeError(f"invalid tile size {npix}")
    if len(data) == 0:
        return _decode_fallback(codec, gzip_data, npix)
    if codec.quantize is not None:
        q = _decode_stream(codec, data, np.dtype(np.int32), npix)
        return _dequantize(codec, q, zscale=zscale, zzero=zzero, zblank=zblank, tile_index=tile_index)
    values = _decode_stream(codec, data, codec.dtype, npix)
    # RICE_1 yields integers; a float image without quantization is integer-valued (as astropy reads it).
    return values.astype(codec.dtype, copy=False)


def decode_tile_into(
    codec: TileCodec,
    target: np.ndarray,
    *,
    data: bytes | memoryview,
    gzip_data: bytes | memoryview | None,
    zscale: float,
    zzero: float,
    zblank: int | None,
    tile_index: int,
) -> None:
    """Decode the stored bytes of one tile into ``target``: what :func:`decode_tile` returns, without a copy.

    ``target`` is the tile's place in the output: an array of the tile's shape and of
    ``codec.dtype`` (typically a view of a larger array).  Lossless ``GZIP_1``, ``GZIP_2`` and
    ``NOCOMPRESS`` tiles are inflated into a buffer of the calling thread, then unshuffled
    and byte-swapped straight into ``target``; other tiles are decoded with
    :func:`decode_tile` and copied in.  The parameters and errors are those of :func:`decode_tile`.
    """
    if target.dtype != codec.dtype:
        raise TypeError(f"target dtype {target.dtype} is not the tile dtype {codec.dtype}")
    npix = target.size
    if codec.quantize is None and npix > 0 and len(data) and codec.algorithm in ("GZIP_1", "GZIP_2", "NOCOMPRESS"):
        if codec.algorithm == "NOCOMPRESS":
            _store(data, target, shuffled=False)
            return
        nbytes = npix * codec.dtype.itemsize
        raw = _gunzip(data, nbytes, _scratch_buffer(nbytes))
        _store(raw, target, shuffled=codec.algorithm == "GZIP_2")
        return
    pixels = decode_tile(
        codec, data=data, gzip_data=gzip_data, zscale=zscale, zzero=zzero, zblank=zblank, tile_index=tile_index,
        npix=npix,
    )
    target[...] = pixels.reshape(target.shape)
