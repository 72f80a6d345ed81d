"""Background models (``background_map`` 1.0.0), kept as their JSON subtree.

The map is read without evaluating its fields: each field stays the JSON object
it was stored as (``field_type`` ``SPLINE``, ``CHEBYSHEV``, ...), so a write
passes it through unchanged.  A spline field with more than 64 nodes keeps its
node values in a separate archive item, referenced by ``data.source``; that item
is listed by :meth:`BackgroundMap.data_sources` and is not read when a coadd is
opened.
"""

from __future__ import annotations

import copy
from typing import Any

from .archives.names import SUBTREE_VERSION
from .errors import ArchiveFormatError

__all__ = ["BackgroundMap"]

_PATH = "backgrounds"


def _empty_tree() -> dict[str, Any]:
    return {
        "schema_version": SUBTREE_VERSION,
        "min_read_version": 1,
        "fields": {},
        "descriptions": {},
        "subtracted": None,
        "schema_url": "https://images.lsst.io/schemas/background_map-1.0.0",
    }


class BackgroundMap:
    """Named background models of a coadd and which one, if any, is subtracted from the pixels.

    Build with :meth:`from_json` (or ``BackgroundMap()`` for an empty map).  Picklable.
    """

    def __init__(self, tree: dict[str, Any] | None = None) -> None:
        self._tree = copy.deepcopy(tree) if tree is not None else _empty_tree()

    @classmethod
    def from_json(cls, tree: dict[str, Any] | None, *, url: str | None = None) -> BackgroundMap:
        """Keep the ``backgrounds`` subtree after checking its shape.

        Parameters
        ----------
        tree
            The subtree, as parsed by :func:`json.loads`; ``None`` (absent) gives an empty map.
        url
            File the tree came from, for error messages.

        Raises
        ------
        ArchiveFormatError
            If ``fields`` or ``descriptions`` is not an object, a field is not an object
            with a string ``field_type``, or ``subtracted`` names no field.
        """
        if tree is None:
            return cls()
        if not isinstance(tree, dict):
            raise ArchiveFormatError("expected an object", url=url, hdu=_PATH)
        fields = tree.get("fields", {})
        descriptions = tree.get("descriptions", {})
        if not isinstance(fields, dict) or not isinstance(descriptions, dict):
            raise ArchiveFormatError("'fields' and 'descriptions' must be objects", url=url, hdu=_PATH)
        for name, field in fields.items():
            if not isinstance(field, dict) or not isinstance(field.get("field_type"), str):
                raise ArchiveFormatError("a background field must be an object with a 'field_type'",
                                         url=url, hdu=f"{_PATH}.fields.{name}")
        for name, text in descriptions.items():
            if not isinstance(text, str):
                raise ArchiveFormatError("descriptions must be strings", url=url,
                                         hdu=f"{_PATH}.descriptions.{name}")
        subtracted = tree.get("subtracted")
        if subtracted is not None and not isinstance(subtracted, str):
            raise ArchiveFormatError(f"subtracted background must be a name or null, not {subtracted!r}",
                                     url=url, hdu=f"{_PATH}.subtracted")
        if subtracted is not None and subtracted not in fields:
            raise ArchiveFormatError(f"subtracted background {subtracted!r} is not in the map",
                                     url=url, hdu=f"{_PATH}.subtracted")
        return cls(tree)

    def to_json(self) -> dict[str, Any]:
        """Return the ``backgrounds`` subtree (a copy)."""
        return copy.deepcopy(self._tree)

    @property
    def names(self) -> list[str]:
        """Background names, in stored order."""
        return list(self._tree.get("fields", {}))

    @property
    def descriptions(self) -> dict[str, str]:
        """Name -> description."""
        return dict(self._tree.get("descriptions", {}))

    @property
    def subtracted(self) -> str | None:
        """Name of the background subtracted from the stored pixels, or ``None``."""
        return self._tree.get("subtracted")

    def field_type(self, name: str) -> str:
        """Return the ``field_type`` of background ``name`` (``"SPLINE"``, ``"CHEBYSHEV"``, ...).

        Raises
        ------
        KeyError
            If there is no such background.
        """
        return self._tree["fields"][name]["field_type"]

    def field_json(self, name: str) -> dict[str, Any]:
        """Return the stored JSON of background ``name`` (a copy).

        Raises
        ------
        KeyError
            If there is no such background.
        """
        return copy.deepcopy(self._tree["fields"][name])

    def data_sources(self) -> dict[str, str]:
        """Archive items the fields reference: background name -> ``source`` string."""
        out = {}
        for name, field in self._tree.get("fields", {}).items():
            data = field.get("data")
            if isinstance(data, dict) and isinstance(data.get("source"), str):
                out[name] = data["source"]
        return out

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._tree.get("fields", {})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BackgroundMap):
            return NotImplemented
        return self._tree == other._tree

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BackgroundMap({self.names}, subtracted={self.subtracted!r})"
