"""Every archive, read from every source, written in another format our package writes, reads back equal.

The read-back archive must equal lsst-images' read of the file the original archive was made from.
From local files every archive goes to every other writable archive; from the other sources to
one in turn (`conftest.round_trip_targets`).
"""

from __future__ import annotations

from pathlib import Path

from oracle import lsst_read

import cellcoadd_dask as ccd

from .archives import Archive, oracle_path
from .checks import assert_matches_lsst
from .library import Library
from .sources import Source


def test_round_trip(archive: Archive, source: Source, target: Archive, library: Library, tmp_path: Path) -> None:
    published = library.published(archive, source)
    ours = ccd.open_coadd(published.url, **published.open_kwargs())
    assert target.write is not None
    url = target.write(ours, str(tmp_path / f"round-trip{target.suffix}"))
    assert_matches_lsst(ccd.open_coadd(url), lsst_read(oracle_path(archive)), f"{archive} from {source} -> {target}")
