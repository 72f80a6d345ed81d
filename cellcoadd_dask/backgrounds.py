"""Background models (``background_map`` 1.0.0): named fields, which one is subtracted, and applying one.

A :class:`BackgroundMap` is a mapping of background names to :class:`Background` entries whose
``field`` renders lazily over any box (see :mod:`cellcoadd_dask.fields`).  The map keeps the
JSON subtree it was read from as the source of truth: fields are built from it on first access,
and a write passes it through unchanged (with ``subtracted`` updated by
:func:`apply_background`).  A spline field with more than 64 nodes keeps its node values in a
separate archive item, referenced by ``data.source``; that item is listed by
:meth:`BackgroundMap.data_sources` and is read, through the archive the coadd was read from,
only when the field is evaluated.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .archives.names import SUBTREE_VERSION
from .errors import ArchiveFormatError
from .fields import ArrayReader, BaseField, field_from_json, unit_scale

if TYPE_CHECKING:
    import astropy.units as u
    import dask.array as da

    from .geom import Box

__all__ = ["Background", "BackgroundMap", "apply_background"]

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


@dataclasses.dataclass(frozen=True)
class Background:
    """A named background model.

    Attributes
    ----------
    name
        The background's name in its map.
    field
        The model: a field of :mod:`cellcoadd_dask.fields` (``render``, point evaluation).
    description
        How the model was made or is meant to be used (may be empty).
    """

    name: str
    field: BaseField
    description: str = ""


class BackgroundMap(Mapping[str, Background]):
    """Named background models of a coadd and which one, if any, is subtracted from the pixels.

    A read-only mapping of name -> :class:`Background` (in stored order); each field is built
    from the stored JSON on first access.  Build with :meth:`from_json` (or ``BackgroundMap()``
    for an empty map).  Picklable.

    Parameters
    ----------
    tree
        The ``backgrounds`` subtree (copied).
    url
        The file it came from, for error messages.
    reader
        Reads the archive items spline node values may be stored in (see
        :meth:`with_array_reader`).
    """

    def __init__(self, tree: dict[str, Any] | None = None, *, url: str | None = None,
                 reader: ArrayReader | None = None) -> None:
        self._tree = copy.deepcopy(tree) if tree is not None else _empty_tree()
        self._url = url
        self._reader = reader
        self._built: dict[str, Background] = {}
        self._lock = threading.Lock()

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
            If ``fields`` or ``descriptions`` is not an object, a field does not describe a
            valid field (each is built once here, so a malformed one fails at open, not when
            first used; node values stored in separate archive items are not read), or
            ``subtracted`` names no field.
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
            field_from_json(field, path=f"{_PATH}.fields.{name}", url=url)
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
        return cls(tree, url=url)

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

    @property
    def subtracted_background(self) -> Background | None:
        """The background subtracted from the stored pixels, or ``None``."""
        name = self.subtracted
        return None if name is None else self[name]

    @property
    def array_reader(self) -> ArrayReader | None:
        """What reads archive items the fields reference, or ``None``."""
        return self._reader

    def with_array_reader(self, reader: ArrayReader | None) -> BackgroundMap:
        """The same map whose fields read referenced archive items with ``reader(source, shape, datatype)``."""
        return self._derived(self._tree, reader)

    def with_subtracted(self, name: str | None) -> BackgroundMap:
        """The same map with ``name`` recorded as the subtracted background (``None``: none).

        Raises
        ------
        KeyError
            If there is no such background.
        """
        if name is not None and name not in self:
            raise KeyError(name)
        return self._derived({**self._tree, "subtracted": name}, self._reader)

    def copy(self) -> BackgroundMap:
        """A copy of the map."""
        return self._derived(self._tree, self._reader)

    def _derived(self, tree: dict[str, Any], reader: ArrayReader | None) -> BackgroundMap:
        out = BackgroundMap.__new__(BackgroundMap)
        out._tree = tree  # never mutated: every change builds a new top-level dict
        out._url = self._url
        out._reader = reader
        out._built = dict(self._built) if reader is self._reader else {}
        out._lock = threading.Lock()
        return out

    def __getitem__(self, name: str) -> Background:
        """The background ``name``, its field built from the stored JSON on first access.

        Raises
        ------
        KeyError
            If there is no such background.
        ArchiveFormatError
            If its JSON does not describe a valid field.
        """
        fields = self._tree.get("fields", {})
        if name not in fields:
            raise KeyError(name)
        with self._lock:
            if name not in self._built:
                field = field_from_json(fields[name], path=f"{_PATH}.fields.{name}", url=self._url,
                                        reader=self._reader)
                self._built[name] = Background(name, field, self._tree.get("descriptions", {}).get(name, ""))
            return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._tree.get("fields", {})

    def __getstate__(self) -> dict[str, Any]:
        return {"tree": self._tree, "url": self._url, "reader": self._reader}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._tree = state["tree"]
        self._url = state.get("url")
        self._reader = state.get("reader")
        self._built = {}
        self._lock = threading.Lock()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BackgroundMap):
            return NotImplemented
        return self._tree == other._tree

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BackgroundMap({self.names}, subtracted={self.subtracted!r})"


def apply_background(
    image: da.Array, *, bbox: Box, unit: u.UnitBase | None, backgrounds: BackgroundMap | None, name: str | None
) -> tuple[da.Array, BackgroundMap | None]:
    """Pixels with background ``name`` subtracted instead of the one subtracted now, lazily.

    The background subtracted now (if any) is rendered and added back and ``name``'s is
    subtracted (``name=None`` restores the original pixels): ``image + (current - new)``,
    each background rendered over ``bbox`` at the image's dtype and chunks and converted to
    its unit.  Nothing is computed or read now.

    Parameters
    ----------
    image
        The pixels (a dask array over ``bbox``).
    bbox
        Their absolute box.
    unit
        Their unit.
    backgrounds
        The coadd's background map (``None``: none).
    name
        The background to subtract, or ``None`` to subtract none.

    Returns
    -------
    tuple
        The new pixels and the map recording ``name`` as subtracted.

    Raises
    ------
    KeyError
        If ``name`` is not in the map.
    astropy.units.UnitConversionError
        If a background's unit cannot be converted to the pixels' unit.
    """
    if name is not None and (backgrounds is None or name not in backgrounds):
        raise KeyError(name)
    current = None if backgrounds is None else backgrounds.subtracted
    if backgrounds is None or name == current:
        return image, backgrounds
    dtype, chunks = image.dtype, image.chunks
    adjustment = None
    adjustment_unit = None
    if current is not None:
        field = backgrounds[current].field
        adjustment, adjustment_unit = field.render(bbox, dtype=dtype, chunks=chunks), field.unit
    if name is not None:
        field = backgrounds[name].field
        new = field.render(bbox, dtype=dtype, chunks=chunks)
        if adjustment is None:
            adjustment, adjustment_unit = -new, field.unit
        else:
            scale = unit_scale(field.unit, adjustment_unit)
            adjustment = adjustment - (new if scale == 1.0 else scale * new)
    assert adjustment is not None
    scale = unit_scale(adjustment_unit, unit)
    return image + (adjustment if scale == 1.0 else scale * adjustment), backgrounds.with_subtracted(name)
