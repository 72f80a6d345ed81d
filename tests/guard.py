"""The test suite reads nothing beside the repository: an audit hook refuses such opens.

A clone must pass its tests with nothing next to it.  The hook watches the directory that holds
the repository (where an undeclared ``../shared`` or ``../data`` would be) and refuses, with
`OutsideReadError`, any ``open`` of a path there that is not inside the repository, the corpus
cache, the temporary directory, the Python installation, or the extra corpus explicitly named by
``$CELLCOADD_REFERENCE_DIR``.  Every refusal is also recorded, and the session fails if there was
any (so a refusal swallowed by a ``try`` still fails the run).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["OutsideReadError", "OutsideReadGuard", "default_allowed"]


class OutsideReadError(PermissionError):
    """A test opened a file beside the repository that it may not depend on."""


class OutsideReadGuard:
    """Refuse opens of files under ``watched`` except under ``allowed`` roots.

    Parameters
    ----------
    watched
        The directory to watch (the repository's parent).
    allowed
        Directories inside ``watched`` that may be read.
    """

    def __init__(self, watched: Path, allowed: list[Path]) -> None:
        self.watched = watched.resolve()
        # A root that holds the watched directory (a clone under /tmp, where the temporary
        # directory is /tmp) would allow everything: such a root is dropped.  What it was meant
        # for (temporary files outside the watched directory) is permitted anyway.
        self.allowed = [p.resolve() for p in allowed if not self.watched.is_relative_to(p.resolve())]
        self.violations: list[str] = []
        self.active = False

    def permits(self, path: Path) -> bool:
        """Whether opening ``path`` is allowed."""
        try:
            resolved = Path(os.path.abspath(path))
        except (TypeError, ValueError):
            return True
        if not resolved.is_relative_to(self.watched):
            return True
        return any(resolved.is_relative_to(root) for root in self.allowed)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event != "open" or not args:
            return
        target = args[0]
        if isinstance(target, int):
            return
        if isinstance(target, bytes):
            target = os.fsdecode(target)
        if not isinstance(target, str):
            return
        if not self.permits(Path(target)):
            message = (
                f"the tests opened {target}, outside the repository: a clone with nothing beside it must "
                f"pass its tests (generate data with cellcoadd_dask.testing, or name an extra corpus with "
                f"$CELLCOADD_REFERENCE_DIR)"
            )
            self.violations.append(message)
            raise OutsideReadError(message)

    def install(self) -> OutsideReadGuard:
        """Install the audit hook (it stays for the life of the process; `active` switches it)."""
        sys.addaudithook(self._hook)
        self.active = True
        return self


def default_allowed(repo: Path, *extra: Path | None) -> list[Path]:
    """The roots a test may read under the repository's parent."""
    roots = [repo, Path(tempfile.gettempdir()), Path(sys.prefix), Path(sys.base_prefix)]
    return roots + [p for p in extra if p is not None]
