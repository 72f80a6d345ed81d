"""Every archive, read from every byte source, equals lsst-images' read of the file it was made from."""

from __future__ import annotations

from oracle import lsst_read

import cellcoadd_dask as ccd

from .archives import Archive, oracle_path
from .checks import assert_matches_lsst
from .library import Library
from .sources import Source


def test_values_equal_lsst_images(archive: Archive, source: Source, library: Library, name: str) -> None:
    published = library.published(archive, source, name)
    ours = ccd.open_coadd(published.url, **published.open_kwargs())
    assert_matches_lsst(ours, lsst_read(oracle_path(archive, name)), f"{archive} from {source}: {name}")
