"""Moments of a set of pixels (count, sum, sum of squared deviations, extremes), in float64.

One row of moments is ``(pixels, count, sum, m2, min, max)``: pixels looked at, pixels
counted (finite and allowed by the mask), their sum, the sum of their squared deviations
from their mean, and their extremes (``inf``/``-inf`` when none is counted).  Moments of
disjoint sets merge exactly (Chan, Golub and LeVeque), so a statistic over many tiles
or blocks is a tree of merges.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MOMENTS", "empty_moments", "merge_moments", "moments_of"]

MOMENTS = 6
"""Length of a row of moments: pixels, count, sum, m2, min, max."""


def empty_moments(shape: tuple[int, ...] = ()) -> np.ndarray:
    """Moments of nothing, ``(MOMENTS, *shape)``: zero counts, ``min = inf``, ``max = -inf``."""
    out = np.zeros((MOMENTS, *shape))
    out[4] = np.inf
    out[5] = -np.inf
    return out


def moments_of(values: np.ndarray, valid: np.ndarray | None = None, full: bool = True) -> np.ndarray:
    """The ``(MOMENTS,)`` moments of ``values`` (any shape) over its finite pixels allowed by ``valid``.

    Made for tiles of a few ten thousand pixels, which stay in the processor's cache: the
    common case (every pixel finite and allowed) is five passes over the values, one with
    ``full=False`` (counts and sum only; ``m2``, ``min`` and ``max`` are NaN).
    """
    out = empty_moments()
    out[0] = values.size
    if valid is not None and not valid.all():
        values = values[valid]
        if values.size == 0:
            return out
    if values.size == 0:
        return out
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, found just below
        total = np.add.reduce(values, axis=None, dtype=np.float64)
    if not np.isfinite(total):
        # Some pixel is NaN or infinite (or the sum overflows): count only the finite ones.
        values = values[np.isfinite(values)]
        if values.size == 0:
            return out
        total = np.add.reduce(values, axis=None, dtype=np.float64)
    flat = values.reshape(-1)
    if not full:
        out[1:] = flat.size, total, np.nan, np.nan, np.nan
        return out
    deviation = np.subtract(flat, total / flat.size, dtype=np.float64)
    out[1] = flat.size
    out[2] = total
    # Squared in place and summed: not np.dot, whose BLAS threads cost more than the sum on tiles.
    np.multiply(deviation, deviation, out=deviation)
    out[3] = np.add.reduce(deviation)
    out[4] = flat.min()
    out[5] = flat.max()
    return out


def merge_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Moments of the union of two disjoint sets (element-wise over any trailing shape)."""
    na, nb = a[1], b[1]
    n = na + nb
    mean_a = np.divide(a[2], na, out=np.zeros_like(na), where=na > 0)
    mean_b = np.divide(b[2], nb, out=np.zeros_like(nb), where=nb > 0)
    delta = mean_b - mean_a
    cross = np.divide(na * nb, n, out=np.zeros_like(n), where=n > 0)
    out = np.empty_like(a)
    out[0] = a[0] + b[0]
    out[1] = n
    out[2] = a[2] + b[2]
    out[3] = a[3] + b[3] + delta * delta * cross
    out[4] = np.minimum(a[4], b[4])
    out[5] = np.maximum(a[5], b[5])
    return out
