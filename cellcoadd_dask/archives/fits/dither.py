"""Sums of quantized tiles straight from their integers: CFITSIO's dither sequence, summed.

A pixel of a tile quantized with subtractive dithering (FITS standard 10.2.2) is restored as
``((q - r) + 0.5) * ZSCALE + ZZERO``, where ``r`` walks CFITSIO's table of 10,000 random
numbers from a place set by the tile's seed.  The sum of a tile is therefore
``ZSCALE * (sum(q) - sum(r) + n / 2) + n * ZZERO``: one pass over the integers, and a sum
of ``r`` from prefix sums of the table.  That is the sum of the restored values before they
are rounded to the image's float type (so within that type's rounding of the sum of the
rounded values).  Tiles holding undefined (``ZBLANK``) or exact-zero (``SUBTRACTIVE_DITHER_2``)
pixels are left to the caller (``None``).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["N_RANDOM", "ZERO_VALUE", "dither_offsets", "quantized_sum", "random_table"]

N_RANDOM = 10_000
"""Length of CFITSIO's table of dither random numbers."""

ZERO_VALUE = -2_147_483_646
"""The integer ``SUBTRACTIVE_DITHER_2`` stores for a pixel that is exactly zero."""


@functools.cache
def random_table() -> tuple[np.ndarray, np.ndarray]:
    """CFITSIO's random numbers (float32 as ``fits_init_randoms`` makes them, as float64) and prefix sums.

    Park and Miller's minimal standard generator (multiplier 16807, modulus 2**31 - 1), seed 1,
    each value divided by the modulus and rounded to float32.
    """
    a, m = 16807.0, 2147483647.0
    values = np.empty(N_RANDOM, dtype=np.float32)
    seed = 1.0
    for k in range(N_RANDOM):
        temp = a * seed
        seed = temp - m * float(int(temp / m))
        values[k] = seed / m
    table = values.astype(np.float64)
    prefix = np.concatenate([[0.0], np.cumsum(table)])
    return table, prefix


def _segments(dither_seed: int, n: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` runs of table indices that ``n`` pixels use, for CFITSIO's ``dither_seed``."""
    table, _ = random_table()
    iseed = (dither_seed - 1) % N_RANDOM
    nextrand = int(np.float32(table[iseed]) * np.float32(500))
    out = []
    while n > 0:
        take = min(n, N_RANDOM - nextrand)
        out.append((nextrand, nextrand + take))
        n -= take
        iseed = (iseed + 1) % N_RANDOM
        nextrand = int(np.float32(table[iseed]) * np.float32(500))
    return out


@functools.lru_cache(maxsize=N_RANDOM)
def _offsets_sum(dither_seed: int, n: int) -> float:
    """The sum of the random numbers ``n`` pixels of a tile with ``dither_seed`` subtract."""
    _, prefix = random_table()
    return float(sum(prefix[b] - prefix[a] for a, b in _segments(dither_seed, n)))


def dither_offsets(dither_seed: int, n: int) -> np.ndarray:
    """The random number subtracted from each of ``n`` pixels of a tile with ``dither_seed`` (float64)."""
    table, _ = random_table()
    return np.concatenate([table[a:b] for a, b in _segments(dither_seed, n)] or [np.empty(0)])


def quantized_sum(
    q: np.ndarray, *, dithered: bool, keeps_zeros: bool, dither_seed: int, zscale: float, zzero: float,
    zblank: int | None,
) -> tuple[int, float]:
    """The number of defined pixels of a tile and the float64 sum of the values they stand for.

    Parameters
    ----------
    q
        The tile's integers, in pixel order.
    dithered
        Subtractive dithering (``SUBTRACTIVE_DITHER_1`` or ``_2``); ``False`` for ``NO_DITHER``.
    keeps_zeros
        ``SUBTRACTIVE_DITHER_2``: the integer :data:`ZERO_VALUE` stands for an exact zero.
    dither_seed
        ``ZDITHER0`` plus the zero-based tile number.
    zscale, zzero, zblank
        The tile's scaling and its undefined-pixel (NaN) integer, or ``None``.

    Returns
    -------
    count, total
        Pixels other than ``zblank`` ones, and the sum of their values (exact zeros add nothing).
    """
    q = q.reshape(-1)
    n = q.size
    total = float(np.add.reduce(q, axis=None, dtype=np.int64))
    low = int(q.min()) if n else 0
    # Pixels that are not ``q * scale`` values: exact zeros and undefined ones, rare, found where
    # the range of the integers can hold them (quantized integers start near the bottom of int32).
    specials = {zblank: True} if zblank is not None else {}  # integer -> undefined (NaN)
    if keeps_zeros:
        specials.setdefault(ZERO_VALUE, False)  # CFITSIO tests ZBLANK first
    skipped: list[np.ndarray] = []
    blank = 0
    for value, undefined in specials.items():
        if low <= value:
            where = np.flatnonzero(q == value)
            if where.size:
                skipped.append(where)
                total -= float(value) * where.size
                blank += where.size if undefined else 0
    kept = n - sum(w.size for w in skipped)
    if not dithered:
        return n - blank, zscale * total + kept * zzero
    offsets = _offsets_sum(dither_seed, n)
    if skipped:
        offsets -= float(dither_offsets(dither_seed, n)[np.concatenate(skipped)].sum())
    return n - blank, zscale * (total - offsets + 0.5 * kept) + kept * zzero
