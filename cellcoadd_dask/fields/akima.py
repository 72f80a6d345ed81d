"""One-dimensional Akima splines in plain numpy: slopes, piecewise-cubic coefficients, evaluation.

The spline through points ``(x[k], y[k])`` uses Akima's slope rule at each node: the slopes of
the segments around it, weighted by how much the neighbouring segment slopes change (two slopes
are added past each end by linear extrapolation of the segment slopes).  Where those changes are
negligible (at most ``1e-9`` times their largest value) the node slope is the mean of the outer
two segment slopes.  With two nodes the spline is the straight line through them.

``y`` may carry trailing axes: each column is its own spline over the same nodes.  Pieces are
stored as the coefficients of ``c0 s^3 + c1 s^2 + c2 s + c3`` in ``s = x - x[k]`` and summed in
increasing powers of ``s``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BREAK_FRACTION", "akima_coefficients", "evaluate_pieces", "slope_change_max"]

BREAK_FRACTION = 1.0e-9
"""Slope changes at most this fraction of the largest one count as none."""


def _segment_slopes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment slopes padded by two on each side, and the slope changes ahead of / behind each node."""
    dx = np.diff(x).reshape((x.size - 1,) + (1,) * (y.ndim - 1))
    m = np.empty((x.size + 3, *y.shape[1:]))
    m[2:-2] = np.diff(y, axis=0) / dx
    m[1] = 2.0 * m[2] - m[3]
    m[0] = 2.0 * m[1] - m[2]
    m[-2] = 2.0 * m[-3] - m[-4]
    m[-1] = 2.0 * m[-2] - m[-3]
    dm = np.abs(np.diff(m, axis=0))
    return m, dm[2:], dm[:-2]


def slope_change_max(x: np.ndarray, y: np.ndarray, *, axis: int | None = None) -> np.ndarray:
    """The largest summed slope change of the spline through ``(x, y)`` (over all columns, or along ``axis``)."""
    if x.size < 3:
        return np.asarray(-np.inf)
    _, ahead, behind = _segment_slopes(x, y)
    total = ahead + behind
    if total.size == 0:
        return np.asarray(-np.inf)
    return np.asarray(np.max(total)) if axis is None else np.max(total, axis=axis)


def akima_coefficients(x: np.ndarray, y: np.ndarray, change_max: np.ndarray | float | None = None) -> np.ndarray:
    """Piece coefficients ``(4, n - 1, ...)`` of the Akima spline through ``(x, y)``.

    Parameters
    ----------
    x
        Strictly increasing node positions, shape ``(n,)``, ``n >= 2``.
    y
        Node values (float64), shape ``(n, ...)``.
    change_max
        What negligible slope changes are measured against: by default the largest one over
        all of ``y``; a value broadcasting against ``y.shape[1:]`` gives one per column.
    """
    dxr = np.diff(x).reshape((x.size - 1,) + (1,) * (y.ndim - 1))
    if x.size == 2:
        slopes = np.zeros_like(y)
        slopes[...] = (y[1:] - y[:-1]) / dxr
    else:
        m, ahead, behind = _segment_slopes(x, y)
        slopes = 0.5 * (m[3:] + m[:-3])
        total = ahead + behind
        reference = np.max(total) if change_max is None else change_max
        use = np.nonzero(total > BREAK_FRACTION * np.asarray(reference))
        node = use[0]
        rest = use[1:]
        slopes[use] = m[(node + 1, *rest)] + (behind[use] / total[use]) * (m[(node + 2, *rest)] - m[(node + 1, *rest)])
    secant = np.diff(y, axis=0) / dxr
    curvature = (slopes[:-1] + slopes[1:] - 2 * secant) / dxr
    return np.stack((curvature / dxr, (secant - slopes[:-1]) / dxr - curvature, slopes[:-1], y[:-1]))


def evaluate_pieces(
    coefficients: np.ndarray, x: np.ndarray, at: np.ndarray, *, extrapolate: bool = True, pointwise: bool = False
) -> np.ndarray:
    """Evaluate pieces from :func:`akima_coefficients` at positions ``at`` (1-d).

    Parameters
    ----------
    coefficients
        ``(4, n - 1, ...)`` piece coefficients.
    x
        The nodes, ``(n,)``.
    at
        Where to evaluate, ``(p,)``.
    extrapolate
        Use the end pieces beyond the nodes (else NaN there).
    pointwise
        ``coefficients`` has one column per position (``(4, n - 1, p)``): evaluate column ``k``
        at ``at[k]`` only and return ``(p,)``; else every column at every position, ``(p, ...)``.
    """
    at = np.asarray(at, dtype=np.float64)
    piece = np.clip(np.searchsorted(x, at, side="right") - 1, 0, x.size - 2)
    s = at - x[piece]
    if pointwise:
        c = coefficients[:, piece, np.arange(at.size)]
    else:
        c = coefficients[:, piece]
        s = s.reshape(s.shape + (1,) * (coefficients.ndim - 2))
    power = s
    result = c[3] + c[2] * power
    power = power * s
    result = result + c[1] * power
    power = power * s
    result = result + c[0] * power
    if not extrapolate:
        outside = ~((at >= x[0]) & (at <= x[-1]))
        if outside.any():
            result = np.array(result, copy=True)
            result[outside] = np.nan
    return result
