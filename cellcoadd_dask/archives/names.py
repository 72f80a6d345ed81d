"""Names every archive shares: the schema's name and versions, and the grammar of ``source`` strings.

A tree stores an array or a table column outside itself as a ``source`` string whose scheme
names the archive that holds it:

``fits:EXTNAME[,EXTVER][[COLUMN]]``
    An HDU of a FITS archive (``EXTVER`` defaults to 1), or column ``COLUMN`` (1-based, FITS
    order) of a binary-table HDU.
``zarr:PATH`` or ``zarr:/PATH``
    The array at ``PATH`` (``/``-separated, no ``.`` or ``..`` segment) below the root of a Zarr
    store.  Layout 1 stores write the relative form; layout 2 stores, like lsst-images, the
    rooted one.

:func:`parse_source` and :meth:`Source.__str__` are the only parser and printer of that grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ArchiveFormatError

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_URL_PREFIX",
    "SCHEMA_VERSION",
    "SUBTREE_VERSION",
    "ZARR_SOURCE_PATTERN",
    "Source",
    "parse_source",
]

SCHEMA_NAME = "cell_coadd"
"""Name of the schema of a cell coadd tree."""
SCHEMA_VERSION = "1.0.0"
"""Version of the tree schema this package reads and writes."""
SCHEMA_URL_PREFIX = "https://images.lsst.io/schemas/"
"""Schema URLs are this prefix followed by ``<name>-<version>``."""
SUBTREE_VERSION = "1.0.0"
"""``schema_version`` of the nested models (sky projection, tables, backgrounds)."""

ZARR_SOURCE_PATTERN = r"^zarr:/?[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+)*$"
"""The ``zarr:`` grammar as a JSON Schema pattern (``.`` and ``..`` segments are refused separately)."""

_FITS = re.compile(r"fits:([A-Za-z0-9_/\-]+)(?:,(\d+))?(?:\[(\d+)\])?")
_ZARR = re.compile(r"zarr:(/?)([A-Za-z0-9_\-.]+(?:/[A-Za-z0-9_\-.]+)*)")


@dataclass(frozen=True)
class Source:
    """A parsed ``source`` string.

    Attributes
    ----------
    scheme
        ``"fits"`` or ``"zarr"``.
    name
        The HDU's ``EXTNAME`` or the array's path.
    extver
        The HDU's ``EXTVER`` (1 for Zarr).
    column
        1-based column number of a table column, else ``None``.
    rooted
        Whether a Zarr path was written with a leading ``/``.
    """

    scheme: str
    name: str
    extver: int = 1
    column: int | None = None
    rooted: bool = False

    def __str__(self) -> str:
        if self.scheme == "zarr":
            return f"zarr:{'/' if self.rooted else ''}{self.name}"
        text = f"fits:{self.name}" + (f",{self.extver}" if self.extver != 1 else "")
        return text + (f"[{self.column}]" if self.column is not None else "")

    @property
    def table(self) -> Source:
        """The source of the whole table a column source belongs to."""
        return Source(self.scheme, self.name, self.extver)


def parse_source(
    text: object, *, scheme: str | None = None, url: str | None = None, column: bool | None = None
) -> Source:
    """Parse a ``source`` string.

    Parameters
    ----------
    text
        The string (anything else is refused).
    scheme
        Accept only this scheme.
    url
        Archive the string comes from, for messages.
    column
        ``True``: it must name a table column; ``False``: it must not; ``None``: either.

    Raises
    ------
    ArchiveFormatError
        If ``text`` does not follow the grammar, or not as asked.
    """
    parsed: Source | None = None
    if isinstance(text, str):
        if (m := _FITS.fullmatch(text)) is not None:
            number = int(m.group(3)) if m.group(3) else None
            if number is None or number >= 1:
                parsed = Source("fits", m.group(1), int(m.group(2) or 1), number)
        elif (m := _ZARR.fullmatch(text)) is not None and not any(
            part in (".", "..") for part in m.group(2).split("/")
        ):
            parsed = Source("zarr", m.group(2), rooted=bool(m.group(1)))
    where = f" for {'a FITS' if scheme == 'fits' else 'a Zarr'} archive" if scheme else ""
    if parsed is None or (scheme is not None and parsed.scheme != scheme):
        raise ArchiveFormatError(f"bad 'source' string{where}: {text!r}", url=url, hdu="JSON")
    if column is True and parsed.column is None:
        raise ArchiveFormatError(f"bad table column source {text!r}", url=url, hdu="JSON")
    if column is False and parsed.column is not None:
        raise ArchiveFormatError(f"source {text!r} names a table column, not an array", url=url, hdu="JSON")
    return parsed
