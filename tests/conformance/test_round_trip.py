"""Every archive, read from every source, written in another format our package writes, reads back equal.

The read-back archive must equal lsst-images' read of the file the original archive was made from.
Each case writes to one target, in turn (`conftest.round_trip_targets`): every archive goes to
every other writable archive, and every source feeds every target, over the matrix.
"""

from __future__ import annotations

from pathlib import Path

from oracle import lsst_read

import cellcoadd_dask as ccd

from .archives import ARCHIVES, Archive, oracle_path
from .checks import assert_matches_lsst
from .library import Library
from .sources import Source


def test_round_trip(archive: Archive, source: Source, target: Archive, library: Library, tmp_path: Path) -> None:
    published = library.published(archive, source)
    ours = ccd.open_coadd(published.url, **published.open_kwargs())
    assert target.write is not None
    url = target.write(ours, str(tmp_path / f"round-trip{target.suffix}"))
    assert_matches_lsst(ccd.open_coadd(url), lsst_read(oracle_path(archive)), f"{archive} from {source} -> {target}")


def test_the_round_trips_cover_every_pair() -> None:
    from .conftest import applicable, round_trip_targets
    from .sources import SOURCE_NAMES

    writable = [t for t in ARCHIVES if t.write is not None]
    done = {(a.name, s, round_trip_targets(a, s)[0].name) for a in ARCHIVES for s in SOURCE_NAMES if applicable(a, s)}
    assert {(a, t) for a, _, t in done} == {(a.name, t.name) for a in ARCHIVES for t in writable if t is not a}
    assert {(s, t) for _, s, t in done} == {(s, t.name) for s in SOURCE_NAMES for t in writable}
