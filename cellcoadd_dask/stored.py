"""What a coadd remembers of the archive it was read from.

A write passes through what this version does not interpret: unknown JSON fields, and the
HDUs only they reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["StoredArchive"]


@dataclasses.dataclass(frozen=True, eq=False)
class StoredArchive:
    """The stored tree and HDU index of the archive a coadd was read from.

    Attributes
    ----------
    url
        The archive.
    tree
        Its JSON tree, as parsed.
    hdus
        ``(EXTNAME, EXTVER)`` -> INDEX entry (FITS archives; empty for JSON archives).
    storage_options
        fsspec options the archive was opened with.
    pin
        The archive's identity when it was opened (size, ETag or modification time).
    format
        The name of the archive's format (``"fits"``, ``"json"``, ``"zarr"``; see
        :mod:`cellcoadd_dask.archives.registry`), or ``""`` when unknown.
    """

    url: str
    tree: Mapping[str, Any]
    hdus: Mapping[tuple[str, int], Any] = dataclasses.field(default_factory=dict)
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pin: Any = None
    format: str = ""

    def __repr__(self) -> str:
        from .errors import shown_url

        return f"StoredArchive({shown_url(self.url)!r}, {len(self.hdus)} HDUs, format {self.format!r})"
