"""The one module that uses astropy internals: its compiled copy of CFITSIO's dequantization.

Dithered quantization (FITS standard 10.2.2) is undone with the same routine astropy uses
to read such images, so the random sequence and the arithmetic are CFITSIO's own.  The
routine is private to astropy; ``tests/test_codecs.py`` checks our decoding bit-for-bit
against full astropy reads, so a change there shows up as a test failure.
"""

from __future__ import annotations

import numpy as np
from astropy.io.fits.hdu.compressed._compression import unquantize_double_c, unquantize_float_c

__all__ = ["DITHER_METHODS", "unquantize_dithered"]

DITHER_METHODS = {"SUBTRACTIVE_DITHER_1": 1, "SUBTRACTIVE_DITHER_2": 2}
"""``ZQUANTIZ`` value -> CFITSIO dither method code."""


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
