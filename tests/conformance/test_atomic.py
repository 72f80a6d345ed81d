"""Writes are atomic: a write that fails mid-way leaves the previous archive readable and no temporary files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
from oracle import lsst_read

import cellcoadd_dask as ccd

from .archives import CELLS, Archive, archive_named, oracle_path
from .checks import assert_matches_lsst
from .library import Library
from .sources import Source


class PixelsRead(Exception):
    """Raised by a poisoned plane when its last cell is read."""


def _poisoned(coadd: ccd.CellCoadd, monkeypatch: pytest.MonkeyPatch) -> ccd.CellCoadd:
    """A copy of ``coadd`` whose image, chunked by cell, raises `PixelsRead` when its last cell is read."""
    cell = (coadd.grid.cell_shape.y, coadd.grid.cell_shape.x)
    array = coadd.image.array.rechunk(cell)
    last = tuple(n - 1 for n in array.numblocks)

    def pixels(block: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        if block_info is not None and tuple(block_info[None]["chunk-location"]) == last:
            raise PixelsRead(f"block {last}")
        return block

    poisoned = coadd.copy()
    image = ccd.Image(da.map_blocks(pixels, array, dtype=array.dtype), bbox=coadd.bbox, unit=coadd.unit)
    monkeypatch.setattr(poisoned, "_image", image)
    return poisoned


@pytest.mark.writable
@pytest.mark.sources("local")
def test_a_failing_write_keeps_the_previous_archive(archive: Archive, source: Source, library: Library,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert archive.write is not None
    previous = Path(source.publish(library.local(archive, archive.files[0])).url)
    # Another coadd (lsst-images' 3x3-cell one), so that a partial overwrite could not go unnoticed.
    other = _poisoned(ccd.open_coadd(library.local(archive_named("fits-lsst"), CELLS)), monkeypatch)
    with pytest.raises(PixelsRead):
        archive.write(other, str(previous))
    assert sorted(os.listdir(previous.parent)) == [previous.name], "temporary files left behind"
    assert_matches_lsst(ccd.open_coadd(previous), lsst_read(oracle_path(archive, archive.files[0])), "previous")

