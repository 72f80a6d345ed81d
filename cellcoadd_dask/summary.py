"""Plain-data summaries of a coadd: what it holds (metadata only) and per-cell pixel statistics.

Every function returns JSON-ready ``dict``/``list`` values (no numpy scalars, no NaN:
an undefined statistic is ``None``).  Boxes are written as ``{"y": [start, stop], "x":
[start, stop]}`` in absolute (tract) pixels, half-open; cells as ``{"i": row, "j": column}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from .cells import CellIJ
from .errors import shown_url
from .geom import Box, Interval

if TYPE_CHECKING:
    import astropy.units as u

    from .coadd import CellCoadd
    from .fetch import FetchStats
    from .image import Image

__all__ = [
    "CellPiece",
    "box_json",
    "cell_statistics",
    "coadd_summary",
    "fetched_json",
    "plane_image",
    "plane_names",
]


def box_json(box: Box) -> dict[str, list[int]]:
    """Write a box as ``{"y": [start, stop], "x": [start, stop]}``."""
    return {"y": [box.y.start, box.y.stop], "x": [box.x.start, box.x.stop]}


def _cell_json(cell: CellIJ) -> dict[str, int]:
    return {"i": cell.i, "j": cell.j}


def _unit_string(unit: u.UnitBase | None) -> str | None:
    return None if unit is None else unit.to_string()


def fetched_json(stats: FetchStats | None) -> dict[str, int] | None:
    """Report the requests and bytes counted by a :func:`~cellcoadd_dask.fetch.fetch_stats` block."""
    if stats is None:
        return None
    return {"requests": stats.requests, "bytes": stats.nbytes}


def plane_names(coadd: CellCoadd) -> list[str]:
    """List the names of the float planes accepted by :func:`plane_image`.

    ``image``, ``variance``, ``mask_fractions/<name>`` and ``noise_realizations/<n>``.
    """
    names = ["image", "variance"]
    names += [f"mask_fractions/{name}" for name in coadd.mask_fractions]
    names += [f"noise_realizations/{n}" for n in range(len(coadd.noise_realizations))]
    return names


def plane_image(coadd: CellCoadd, name: str) -> Image:
    """Return the lazy float plane called ``name`` (see :func:`plane_names`).

    Raises
    ------
    KeyError
        If the coadd has no such plane; the message lists the planes it has.
    """
    if name == "image":
        return coadd.image
    if name == "variance":
        return coadd.variance
    kind, _, key = name.partition("/")
    if kind == "mask_fractions" and key in coadd.mask_fractions:
        return coadd.mask_fractions[key]
    if kind == "noise_realizations" and key.isdigit() and int(key) < len(coadd.noise_realizations):
        return coadd.noise_realizations[int(key)]
    raise KeyError(f"no plane {name!r}; this coadd has {', '.join(plane_names(coadd))}")


def _sky_corners(coadd: CellCoadd) -> list[dict[str, float]]:
    bbox = coadd.bbox
    ys = [bbox.y.start, bbox.y.start, bbox.y.max, bbox.y.max]
    xs = [bbox.x.start, bbox.x.max, bbox.x.start, bbox.x.max]
    sky = coadd.projection.pixel_to_sky(x=np.array(xs, dtype=float), y=np.array(ys, dtype=float))
    ra, dec = np.atleast_1d(sky.ra.deg), np.atleast_1d(sky.dec.deg)
    return [
        {"y": y, "x": x, "ra_deg": float(r), "dec_deg": float(d)}
        for y, x, r, d in zip(ys, xs, ra, dec, strict=True)
    ]


def _plane_json(name: str, array: Any, unit: u.UnitBase | None) -> dict[str, Any]:
    return {
        "name": name,
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "unit": _unit_string(unit),
        "chunksize": list(array.chunksize),
        "nchunks": math.prod(len(c) for c in array.chunks),
    }


def coadd_summary(
    coadd: CellCoadd, *, url: str | None = None, fetched: FetchStats | None = None
) -> dict[str, Any]:
    """Describe a coadd from its metadata alone, without reading a pixel.

    Parameters
    ----------
    coadd
        An opened coadd.
    url
        Where it was opened from (copied to the ``"url"`` key without its query string or
        password, as :func:`~cellcoadd_dask.errors.shown_url` shows it: a presigned URL's
        signature is never reported).
    fetched
        The fetch counters of the open call, reported under ``"fetched"``.

    Returns
    -------
    dict
        ``bbox``, ``grid_bbox``, ``cell_shape``, ``grid_shape``, ``bounds_bbox``,
        ``cells_with_data``, ``missing_cells``, ``unit``, ``variance_unit``, ``band``,
        ``skymap``, ``tract``, ``patch``, ``mask_planes`` (name, memory bit, description),
        ``mask_dtype``, ``mask_size``, ``mask_fraction_names``, ``n_noise_realizations``,
        ``planes`` (dtype, shape, unit, chunk size), ``chunks`` (chunk edges along y and x,
        absolute pixels), ``corners_sky`` (RA/Dec of the corner pixels, degrees) and
        ``fetched``.
    """
    bounds = coadd.bounds
    grid = coadd.grid
    schema = coadd.mask.schema
    try:
        patch = coadd.patch
    except AttributeError:
        patch_json = None
    else:
        patch_json = {
            "id": patch.id,
            "index": {"y": patch.index.y, "x": patch.index.x},
            "inner_bbox": box_json(patch.inner_bbox),
        }
    image = coadd.image
    y_edges = np.cumsum((0, *image.array.chunks[0])) + coadd.bbox.y.start
    x_edges = np.cumsum((0, *image.array.chunks[1])) + coadd.bbox.x.start
    planes = [_plane_json("image", image.array, image.unit),
              _plane_json("variance", coadd.variance.array, coadd.variance.unit),
              _plane_json("mask", coadd.mask.array, None)]
    planes += [_plane_json(f"mask_fractions/{k}", v.array, v.unit) for k, v in coadd.mask_fractions.items()]
    planes += [_plane_json(f"noise_realizations/{n}", v.array, v.unit)
               for n, v in enumerate(coadd.noise_realizations)]
    return {
        "url": None if url is None else shown_url(url),
        "bbox": box_json(coadd.bbox),
        "grid_bbox": box_json(grid.bbox),
        "cell_shape": {"y": grid.cell_shape.y, "x": grid.cell_shape.x},
        "grid_shape": {"y": grid.shape.y, "x": grid.shape.x},
        "bounds_bbox": box_json(bounds.bbox),
        "cells_with_data": [_cell_json(c) for c in bounds.cell_indices()],
        "missing_cells": [_cell_json(c) for c in sorted(bounds.missing)],
        "unit": _unit_string(coadd.unit),
        "variance_unit": _unit_string(coadd.variance.unit),
        "band": coadd.band,
        "skymap": coadd.skymap,
        "tract": coadd.tract,
        "patch": patch_json,
        "mask_planes": [
            {"name": plane.name, "memory_bit": n, "description": plane.description}
            for n, plane in enumerate(schema)
            if plane is not None
        ],
        "mask_dtype": str(schema.dtype),
        "mask_size": schema.mask_size,
        "mask_fraction_names": list(coadd.mask_fractions),
        "n_noise_realizations": len(coadd.noise_realizations),
        "planes": planes,
        "chunks": {"y": [int(v) for v in y_edges], "x": [int(v) for v in x_edges]},
        "corners_sky": _sky_corners(coadd),
        "fetched": fetched_json(fetched),
    }


@dataclass(frozen=True, slots=True)
class CellPiece:
    """The part of one cell that lies in one dask block.

    Attributes
    ----------
    cell
        The cell index.
    box
        Absolute box of the part.
    region
        ``(y, x)`` slices of the part within the block's array.
    """

    cell: CellIJ
    box: Box
    region: tuple[slice, slice]


def _block_pieces(coadd: CellCoadd, block_box: Box) -> Iterator[CellPiece]:
    grid = coadd.grid
    bounds = coadd.bounds
    first = grid.index_of(y=block_box.y.start, x=block_box.x.start)
    last = grid.index_of(y=block_box.y.max, x=block_box.x.max)
    for i in range(first.i, last.i + 1):
        for j in range(first.j, last.j + 1):
            cell = CellIJ(i, j)
            if cell not in bounds:
                continue
            part = grid.bbox_of(cell).intersection(block_box)
            if part is not None:
                yield CellPiece(cell, part, part.slice_within(block_box))


_Moments = tuple[int, int, float, float, float, float]


def _moments(block: np.ndarray, pieces: Sequence[CellPiece]) -> list[_Moments]:
    """Per piece: (pixels, finite pixels, sum, sum of squared deviations from the mean, min, max).

    Everything is accumulated in float64.
    """
    out = []
    for piece in pieces:
        values = np.asarray(block[piece.region], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            total = float(finite.sum())
            m2 = float(np.square(finite - total / finite.size).sum())
            out.append((values.size, finite.size, total, m2, float(finite.min()), float(finite.max())))
        else:
            out.append((values.size, 0, 0.0, 0.0, math.nan, math.nan))
    return out


@dataclass
class _Accumulator:
    """Merges the moments of the pieces of one cell (pairwise update of Chan, Golub and LeVeque)."""

    box: Box
    pixels: int = 0
    count: int = 0
    total: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, box: Box, moments: _Moments) -> None:
        pixels, count, total, m2, low, high = moments
        self.box = Box(Interval(min(self.box.y.start, box.y.start), max(self.box.y.stop, box.y.stop)),
                       Interval(min(self.box.x.start, box.x.start), max(self.box.x.stop, box.x.stop)))
        self.pixels += pixels
        if count == 0:
            return
        if self.count:
            delta = total / count - self.total / self.count
            m2 = self.m2 + m2 + delta * delta * self.count * count / (self.count + count)
        self.count += count
        self.total += total
        self.m2 = m2
        self.low = min(self.low, low)
        self.high = max(self.high, high)

    def to_json(self, cell: CellIJ) -> dict[str, Any]:
        defined = self.count > 0
        return {
            "i": cell.i,
            "j": cell.j,
            "bbox": box_json(self.box),
            "pixels": self.pixels,
            "finite_count": self.count,
            "sum": self.total,
            "mean": self.total / self.count if defined else None,
            "std": math.sqrt(self.m2 / self.count) if defined else None,
            "min": self.low if defined else None,
            "max": self.high if defined else None,
        }


def cell_statistics(coadd: CellCoadd, plane: str = "image") -> list[dict[str, Any]]:
    """Compute finite-pixel statistics of every cell with data (computes, one dask task per chunk).

    Only finite pixels count; values are converted to float64 first.  A cell cut by the
    coadd's bbox is summarised over the part inside it.  Missing cells are left out.

    Parameters
    ----------
    coadd
        The coadd.
    plane
        A name from :func:`plane_names`.

    Returns
    -------
    list of dict
        One per cell, row-major: ``i``, ``j``, ``bbox`` (the part summarised), ``pixels``,
        ``finite_count``, ``sum``, ``mean``, ``std`` (population, ``ddof=0``), ``min`` and
        ``max``; the last four are ``None`` when the cell has no finite pixel.
    """
    array = plane_image(coadd, plane).array
    bbox = coadd.bbox
    blocks = array.to_delayed()
    tasks = []
    block_pieces = []
    y0 = bbox.y.start
    for by, ny in enumerate(array.chunks[0]):
        x0 = bbox.x.start
        for bx, nx in enumerate(array.chunks[1]):
            block_box = Box(Interval(y0, y0 + ny), Interval(x0, x0 + nx))
            pieces = list(_block_pieces(coadd, block_box))
            if pieces:
                tasks.append(dask.delayed(_moments, pure=True)(blocks[by, bx], pieces))
                block_pieces.append(pieces)
            x0 += nx
        y0 += ny
    results = dask.compute(*tasks)
    cells: dict[CellIJ, _Accumulator] = {}
    for pieces, moments in zip(block_pieces, results, strict=True):
        for piece, values in zip(pieces, moments, strict=True):
            cells.setdefault(piece.cell, _Accumulator(piece.box)).add(piece.box, values)
    return [cells[cell].to_json(cell) for cell in sorted(cells)]
