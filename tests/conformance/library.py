"""The archives of a test session: made once, published once per byte source, damaged on request."""

from __future__ import annotations

import shutil
from pathlib import Path

from paths import REFERENCE_DIR

from .archives import SMALL, Archive
from .sources import Published, Source

__all__ = ["Library"]


class Library:
    """Archives made once per session, and their copies published on each source.

    Parameters
    ----------
    root
        Where the local archives are made.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._local: dict[tuple[str, str], Path] = {}
        self._published: dict[tuple[str, str, str], Published] = {}

    def local(self, archive: Archive, name: str) -> Path:
        """The archive made from the reference file ``name`` (made on first use)."""
        key = (archive.name, name)
        if key not in self._local:
            directory = self.root / archive.name / name
            directory.mkdir(parents=True)
            self._local[key] = archive.produce(REFERENCE_DIR / name, directory)
        return self._local[key]

    def published(self, archive: Archive, source: Source, name: str = SMALL) -> Published:
        """The archive made from ``name``, published on ``source`` (once per session)."""
        key = (archive.name, source.name, name)
        if key not in self._published:
            self._published[key] = source.publish(self.local(archive, name))
        return self._published[key]

    def damaged(self, archive: Archive, how: str, directory: Path, name: str = SMALL) -> Path:
        """A copy of the archive made from ``name`` in ``directory``, damaged the way called ``how``."""
        original = self.local(archive, name)
        copy = directory / how.replace(" ", "-") / original.name
        copy.parent.mkdir(parents=True)
        if original.is_dir():
            shutil.copytree(original, copy)
        else:
            shutil.copyfile(original, copy)
        archive.damage[how](copy)
        return copy
