"""Tile-descriptor rows are read on demand: one cell of a big lossy plane, one PSF kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lsst.images.cells import CellCoadd as LsstCellCoadd
from oracle import hdu_bytes

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import fetch_stats


def _last_cell(coadd: ccd.CellCoadd) -> ccd.CellIJ:
    return list(coadd.bounds.cell_indices())[-1]


def test_one_cell_of_a_lossy_plane_reads_one_descriptor_row(lsst_variants: dict[str, Path]) -> None:
    path = lsst_variants["rice_dither1.fits"]
    layout = hdu_bytes(path, "IMAGE")
    assert layout.row_bytes == 32  # COMPRESSED_DATA, GZIP_COMPRESSED_DATA, ZSCALE, ZZERO
    coadd = ccd.open_coadd(path)
    cell = _last_cell(coadd)
    box = coadd.grid.bbox_of(cell)
    tile = layout.tiles[layout.tile_of(tuple(np.subtract(tuple(box.start), tuple(coadd.bbox.start))))]
    assert tile is not None
    with fetch_stats() as stats:
        pixels = coadd.image[box].array.compute()
    ranges = sorted((a, b) for _, a, b in stats.ranges)
    # Header plus the rows that came with it, then exactly the cell's row, then its tile.
    assert ranges[0][0] == layout.header[0]
    assert any(b - a == layout.row_bytes for a, b in ranges)
    assert tile in ranges
    beyond_tile = stats.nbytes - (tile[1] - tile[0])
    assert beyond_tile <= (layout.header[1] - layout.header[0]) + (layout.table[1] - layout.table[0])
    assert beyond_tile <= 16 * 1024
    oracle = LsstCellCoadd.read(str(path))
    sy, sx = box.slice_within(coadd.bbox)
    assert np.array_equal(pixels, oracle.image.array[sy, sx])

    # A second cell costs its row and its tile only.
    other = list(coadd.bounds.cell_indices())[-2]
    with fetch_stats() as again:
        coadd.image[coadd.grid.bbox_of(other)].array.compute()
    assert all(a >= layout.table[0] for _, a, _ in again.ranges)
    assert again.nbytes < 32 + max(b - a for t in layout.tiles if t for a, b in [t])


def test_one_psf_kernel_reads_its_rows_and_tiles_only(reference_dir: Path) -> None:
    path = reference_dir / "synthetic_3x3.fits"
    psf = hdu_bytes(path, "PSF")
    coadd = ccd.open_coadd(path)
    cell = ccd.CellIJ(i=3, j=2)
    with fetch_stats() as stats:
        kernel = coadd.psf[cell].array.compute()
    ky = kernel.shape[0]
    table_reads = [(a, b) for _, a, b in stats.ranges if psf.table[0] <= a < psf.table[1]]
    assert sum(b - a for a, b in table_reads) == ky * psf.row_bytes
    k = cell - coadd.bounds.subgrid_start
    first = (k.i * coadd.bounds.subgrid_size.j + k.j) * ky
    tiles = psf.tiles[first : first + ky]
    assert all(t is not None for t in tiles)
    tile_bytes = sum(b - a for a, b in tiles)  # type: ignore[misc]
    header = psf.header[1] - psf.header[0]
    assert stats.nbytes == header + ky * psf.row_bytes + tile_bytes
    oracle = LsstCellCoadd.read(str(path))
    assert np.array_equal(kernel, oracle.psf[ccd_to_lsst(cell)].array)


def ccd_to_lsst(cell: ccd.CellIJ) -> object:
    from lsst.images.cells import CellIJ

    return CellIJ(i=cell.i, j=cell.j)


@pytest.mark.parametrize("name", ["rice_dither1.fits", "gzip2_quantized.fits", "default_4x5.fits"])
def test_reading_rows_piecemeal_gives_the_whole_plane(lsst_variants: dict[str, Path], name: str) -> None:
    path = lsst_variants[name]
    coadd = ccd.open_coadd(path, chunks="cell")
    oracle = LsstCellCoadd.read(str(path))
    cells = list(coadd.bounds.all_cell_indices())
    for cell in reversed(cells):  # rows are loaded out of order, one cell at a time
        box = coadd.grid.bbox_of(cell).intersection(coadd.bbox)
        assert box is not None
        sy, sx = box.slice_within(coadd.bbox)
        assert np.array_equal(coadd.variance[box].array.compute(), oracle.variance.array[sy, sx], equal_nan=True)
    assert np.array_equal(coadd.variance.array.compute(), oracle.variance.array, equal_nan=True)
