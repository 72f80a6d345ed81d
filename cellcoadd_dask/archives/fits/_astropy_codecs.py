"""The one module that uses astropy internals: its compiled copy of CFITSIO's (de)quantization.

Dithered quantization (FITS standard 10.2.2) is undone with the same routine astropy uses
to read such images, so the random sequence and the arithmetic are CFITSIO's own.  Float
tiles are quantized with the routine astropy uses to write them, so a written tile holds
exactly the integers, ``ZSCALE`` and ``ZZERO`` astropy (and so lsst-images) would write.
The routines are private to astropy; ``tests/test_codecs.py`` and ``tests/test_encode.py``
check both directions bit-for-bit against astropy, so a change there shows up as a test
failure.

The compiled routines release the GIL.  They share a table of random numbers that is
filled on first use without a lock; it is filled here, at import time, so that threads
never race to fill it.
"""

from __future__ import annotations

import numpy as np
from astropy.io.fits.hdu.compressed._compression import (
    quantize_double_c,
    quantize_float_c,
    unquantize_double_c,
    unquantize_float_c,
)

__all__ = ["DITHER_METHODS", "QUANTIZE_METHODS", "quantize", "unquantize_dithered"]

DITHER_METHODS = {"SUBTRACTIVE_DITHER_1": 1, "SUBTRACTIVE_DITHER_2": 2}
"""``ZQUANTIZ`` value -> CFITSIO dither method code."""

QUANTIZE_METHODS = {"NO_DITHER": -1, **DITHER_METHODS}
"""Quantization method -> CFITSIO code (``-1``: no dithering)."""


def unquantize_dithered(
    q: np.ndarray,
    *,
    method: str,
    zdither0: int,
    tile_index: int,
    zscale: float,
    zzero: float,
    zblank: int | None,
    dtype: np.dtype,
) -> np.ndarray:
    """Quantized integers of one tile -> floats, with subtractive dithering.

    Parameters
    ----------
    q
        The tile's quantized integers, native byte order, in pixel order.
    method
        ``"SUBTRACTIVE_DITHER_1"`` or ``"SUBTRACTIVE_DITHER_2"`` (which keeps zeros exact).
    zdither0, tile_index
        ``ZDITHER0`` of the HDU and the zero-based tile number: the random sequence
        starts at seed index ``(zdither0 + tile_index - 1) mod 10000``.
    zscale, zzero
        The tile's ``ZSCALE`` and ``ZZERO``.
    zblank
        Integer marking undefined pixels (decoded as NaN), or ``None``.
    dtype
        ``float32`` or ``float64``.
    """
    q = np.ascontiguousarray(q, dtype=q.dtype.newbyteorder("="))
    unquantize = unquantize_float_c if dtype == np.float32 else unquantize_double_c
    raw = unquantize(
        q.tobytes(),
        zdither0 + tile_index,
        q.size,
        zscale,
        zzero,
        DITHER_METHODS[method],
        0 if zblank is None else 1,
        0 if zblank is None else int(zblank),
        np.nan,
        q.dtype.itemsize,
    )
    return np.frombuffer(raw, dtype=dtype)


def quantize(
    values: np.ndarray, *, method: str, row: int, level: float
) -> tuple[np.ndarray, float, float] | None:
    """Floats of one tile -> quantized integers, as astropy writes a quantized tile.

    Parameters
    ----------
    values
        The tile's pixels (``float32`` or ``float64``, any byte order), without NaN
        (astropy replaces them before quantizing).
    method
        ``"NO_DITHER"``, ``"SUBTRACTIVE_DITHER_1"`` or ``"SUBTRACTIVE_DITHER_2"``.
    row
        Dither row: ``ZDITHER0 + tile_index`` for the subtractive dithers, 0 for
        ``NO_DITHER``.
    level
        Quantization level (``NOISEBIT``): noise sigma / step when positive,
        ``-ZSCALE`` when negative.

    Returns
    -------
    tuple of (numpy.ndarray, float, float) or None
        The ``int32`` values (native byte order, read-only, pixel order), ``ZSCALE``
        and ``ZZERO``; ``None`` when the routine refuses the tile (constant values,
        ``±inf``, single pixels), which is then stored losslessly.  A constant tile
        with ``-inf`` pixels is not refused but comes back with an infinite
        ``ZSCALE``: callers must check that the scaling is finite.
    """
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))
    quantize_c = quantize_float_c if values.dtype.itemsize == 4 else quantize_double_c
    # The whole tile is one "row" of the noise estimate (nx = npix, ny = 1), as astropy does.
    qbytes, status, zscale, zzero = quantize_c(
        values.tobytes(), row, values.size, 1, 0, 0, level, QUANTIZE_METHODS[method]
    )[:4]
    if status == 0:
        return None
    return np.frombuffer(qbytes, dtype=np.int32), float(zscale), float(zzero)


# Fill CFITSIO's shared table of dither randoms once, under the import lock (see module docstring).
unquantize_float_c(np.zeros(1, np.int32).tobytes(), 1, 1, 1.0, 0.0, 1, 0, 0, 0.0, 4)
