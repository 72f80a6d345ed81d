"""Damaged archives end in typed errors naming the URL, never in raw exceptions or wrong pixels.

Each archive lists the ways its copies are damaged (`archives.Archive.damage`): a truncated or
scrambled object; for a Zarr store a scrambled chunk, a deleted chunk, a scrambled tree.
Opening and reading everything must raise a `ccd.CellCoaddError` whose message names the
archive's URL (without its query string: presigned URLs sign there).
"""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest
from oracle import coadd_planes

import cellcoadd_dask as ccd
from cellcoadd_dask.errors import shown_url

from .archives import Archive
from .library import Library
from .sources import Published, Source


def _read_everything(published: Published) -> None:
    coadd = ccd.open_coadd(published.url, **published.open_kwargs())
    planes, psf = dask.compute(coadd_planes(coadd), coadd.psf.array)
    assert all(isinstance(v, np.ndarray) for v in planes.values()) and isinstance(psf, np.ndarray)
    _ = coadd.provenance, coadd.aperture_corrections


def test_damaged_archive_gives_a_typed_error_naming_its_url(archive: Archive, source: Source, damage: str,
                                                            library: Library, tmp_path: Path) -> None:
    published = source.publish(library.damaged(archive, damage, tmp_path))
    with pytest.raises(ccd.CellCoaddError) as info:
        _read_everything(published)
    assert shown_url(published.url) in str(info.value), info.value
