"""The guard that keeps the tests from reading beside the repository is installed and works."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from conftest import GUARD
from guard import OutsideReadError, OutsideReadGuard, default_allowed
from paths import REPO


def test_the_session_guard_watches_the_directory_beside_the_repository() -> None:
    assert GUARD.active
    assert GUARD.watched == REPO.parent.resolve()
    assert GUARD.permits(REPO / "README.md")
    assert not GUARD.permits(REPO.parent / "shared" / "data" / "lsst-images-ref" / "many_planes.fits")


def test_an_open_beside_the_repository_is_refused_and_recorded(tmp_path: Path) -> None:
    watched = tmp_path / "checkout"
    repo = watched / "repo"
    beside = watched / "shared" / "data.fits"
    beside.parent.mkdir(parents=True)
    repo.mkdir()
    beside.write_bytes(b"x")
    (repo / "inside.txt").write_text("ok")
    guard = OutsideReadGuard(watched, default_allowed(repo)).install()
    try:
        assert (repo / "inside.txt").read_text() == "ok"
        with pytest.raises(OutsideReadError, match="outside the repository"):
            beside.read_bytes()
        assert len(guard.violations) == 1
    finally:
        guard.active = False


def test_a_temporary_directory_holding_the_clone_does_not_disable_the_guard(tmp_path: Path) -> None:
    # A clone in /tmp/x/repo, with /tmp as the temporary directory.
    watched = tmp_path / "x"
    guard = OutsideReadGuard(watched, [watched / "repo", Path(tempfile.gettempdir()), tmp_path])
    assert guard.permits(watched / "repo" / "f")
    assert not guard.permits(watched / "shared" / "f")
    assert guard.permits(tmp_path / "elsewhere" / "f")
