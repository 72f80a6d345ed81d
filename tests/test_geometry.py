"""Geometry, cell grids and chunking: the conventions of the lsst-images data model."""

from __future__ import annotations

import pickle

import pytest
from lsst.images import Box as LsstBox
from lsst.images.cells import CellGrid as LsstCellGrid
from lsst.images.cells import CellGridBounds as LsstBounds
from lsst.images.cells import CellIJ as LsstCellIJ

import cellcoadd_dask as ccd
from cellcoadd_dask.lazy import cell_chunks

GRID = ccd.CellGrid(ccd.Box.factory[1050:1950, 1500:2400], ccd.YX(150, 150))


def test_interval_rejects_empty_and_reports_size() -> None:
    with pytest.raises(IndexError):
        ccd.Interval(5, 5)
    with pytest.raises(ccd.BoundsError):
        ccd.Interval(6, 5)
    iv = ccd.Interval.factory[48:60]
    assert (iv.start, iv.stop, iv.size, iv.min, iv.max) == (48, 60, 12, 48, 59)
    assert str(iv) == "48:60"


def test_box_factory_and_string_forms_match_lsst_images() -> None:
    box = ccd.Box.factory[48:60, 36:48]
    ref = LsstBox.factory[48:60, 36:48]
    assert str(box) == str(ref)
    assert repr(box) == repr(ref)
    assert tuple(box.shape) == (ref.shape.y, ref.shape.x)
    with pytest.raises(IndexError):
        ccd.Box.factory[0:, 0:4]
    with pytest.raises(ValueError):
        ccd.Box.factory[0:4:2, 0:4]


def test_absolute_and_local_sub_boxes() -> None:
    box = ccd.Box.factory[1200:1650, 1650:2100]
    assert box.absolute[1300:1400, :] == ccd.Box.factory[1300:1400, 1650:2100]
    assert box.local[-10:, :5] == ccd.Box.factory[1640:1650, 1650:1655]
    with pytest.raises(ccd.BoundsError):
        box.absolute[1100:1300, 1650:1700]


def test_cell_grid_matches_lsst_images() -> None:
    ref = LsstCellGrid(bbox=LsstBox.factory[1050:1950, 1500:2400], cell_shape=ref_yx(150, 150))
    for y, x in [(1050, 1500), (1470, 1920), (1949, 2399), (1200, 1650)]:
        ours = GRID.index_of(y=y, x=x)
        theirs = ref.index_of(y=y, x=x)
        assert (ours.i, ours.j) == (theirs.i, theirs.j)
        assert str(GRID.bbox_of(ours)) == str(ref.bbox_of(theirs))


def ref_yx(y: int, x: int) -> object:
    from lsst.images import YX

    return YX(y=y, x=x)


def test_bounds_subset_snaps_outward_like_lsst_images() -> None:
    bounds = ccd.CellGridBounds(GRID, ccd.Box.factory[1200:1650, 1650:2100], frozenset({ccd.CellIJ(2, 3)}))
    ref = LsstBounds(
        grid=LsstCellGrid(bbox=LsstBox.factory[1050:1950, 1500:2400], cell_shape=ref_yx(150, 150)),
        bbox=LsstBox.factory[1200:1650, 1650:2100],
        missing=frozenset({LsstCellIJ(i=2, j=3)}),
    )
    for y0, y1, x0, x1 in [(1470, 1530, 1920, 1980), (1200, 1201, 1650, 1651), (1200, 1650, 1650, 2100)]:
        ours = bounds[ccd.Box.factory[y0:y1, x0:x1]]
        theirs = ref[LsstBox.factory[y0:y1, x0:x1]]
        assert str(ours.bbox) == str(theirs.bbox)
        assert {(c.i, c.j) for c in ours.missing} == {(c.i, c.j) for c in theirs.missing}
        assert [(c.i, c.j) for c in ours.cell_indices()] == [(c.i, c.j) for c in theirs.cell_indices()]
    assert str(bounds) == str(ref)
    with pytest.raises(ccd.BoundsError):
        bounds[ccd.Box.factory[1000:1300, 1650:1700]]


def test_bounds_check_names_missing_and_out_of_bounds_cells() -> None:
    bounds = ccd.CellGridBounds(GRID, ccd.Box.factory[1200:1650, 1650:2100], frozenset({ccd.CellIJ(2, 3)}))
    with pytest.raises(ccd.BoundsError, match="missing"):
        bounds.check(ccd.CellIJ(2, 3))
    with pytest.raises(ccd.BoundsError, match="out of bounds"):
        bounds.check(ccd.CellIJ(0, 0))
    bounds.check(ccd.CellIJ(1, 1))


@pytest.mark.parametrize(
    ("bbox", "chunks", "expected"),
    [
        (ccd.Box.factory[1200:1650, 1650:2100], "cell", ((150, 150, 150), (150, 150, 150))),
        # Chunk edges sit on multiples of the chunk size counted from the grid start.
        (ccd.Box.factory[1200:1650, 1650:2100], (2, 3), ((150, 300), (300, 150))),
        # An off-grid origin: the first chunk ends on the first cell edge of the grid.
        (ccd.Box.factory[1275:1575, 1725:2025], "cell", ((75, 150, 75), (75, 150, 75))),
        (ccd.Box.factory[1275:1575, 1725:2025], "auto", ((300,), (300,))),
    ],
)
def test_chunk_edges_fall_on_cell_edges(bbox: ccd.Box, chunks: object, expected: tuple) -> None:
    out = cell_chunks(bbox, GRID, chunks, 4)
    assert out == expected
    for axis, (start, cell, grid_start) in enumerate(
        [(bbox.y.start, 150, GRID.bbox.y.start), (bbox.x.start, 150, GRID.bbox.x.start)]
    ):
        edge = start
        for size in out[axis][:-1]:
            edge += size
            assert (edge - grid_start) % cell == 0


def test_bad_chunks_are_refused() -> None:
    with pytest.raises(ValueError, match="chunks"):
        cell_chunks(ccd.Box.factory[0:10, 0:10], GRID, "huge", 4)


def test_geometry_pickles() -> None:
    bounds = ccd.CellGridBounds(GRID, ccd.Box.factory[1200:1650, 1650:2100], frozenset({ccd.CellIJ(2, 3)}))
    assert pickle.loads(pickle.dumps(bounds)) == bounds
