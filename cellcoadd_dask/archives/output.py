"""Writing, written once for every format: :func:`serialize <cellcoadd_dask.archives.output.serialize>`.

It builds the tree; an :class:`OutputArchive` stores.

This is the seed's ``CellCoadd.serialize(archive)``.  The model side is here and nowhere else:
which arrays and tables a coadd has, the ``cell_coadd`` tree that describes them, the fields of a
stored tree passed through unchanged, arrays that only such fields (or background models)
reference, checks of names, and validation against the frozen schema.  An archive supplies
only what is its own: how a plane, the mask, the PSF, a table or a small array is stored and
the model that references it (:meth:`OutputArchive.add_image` ...), and what happens to the
finished tree (:meth:`OutputArchive.add_tree`).  Archives are context managers: the bytes are
committed when the ``with`` block ends without an error, and nothing is left behind otherwise.
"""

from __future__ import annotations

import abc
import copy
import re
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ..errors import ValidationError
from .tree_out import build_tree, merge_unknown, table_subtrees

if TYPE_CHECKING:
    from ..coadd import CellCoadd
    from ..image import Image
    from ..mask import Mask
    from ..model import CellCoaddModel
    from ..psf import CellPointSpreadFunction
    from ..stored import StoredArchive

__all__ = ["OutputArchive", "check_plane_names", "serialize", "stored_array"]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class OutputArchive(abc.ABC):
    """Where :func:`~cellcoadd_dask.archives.output.serialize` puts a coadd: each format's "how is it stored?".

    Every ``add_*`` method stores (or schedules) one item and returns the JSON model that
    references it in the tree.  Methods are called in the order lsst-images writes the items
    (image, mask, variance, mask fractions, noise realizations, PSF, tables, other arrays),
    then :meth:`add_tree` once.

    Attributes
    ----------
    url
        The destination (normalized URL).
    scheme
        The source grammar of the archive's tree: ``"fits"``, ``"zarr"``, or ``"inline"``
        (arrays held in the tree itself).
    """

    url: str
    scheme: str

    @abc.abstractmethod
    def add_image(self, key: str, image: Image) -> dict[str, Any]:
        """Store an image plane.

        ``key`` is ``"image"``, ``"variance"``, ``"mask_fractions/<name>"`` or ``"noise_realizations/<n>"``.
        """

    @abc.abstractmethod
    def add_mask(self, mask: Mask) -> list[dict[str, Any]]:
        """Store the mask; returns the models of the tree's ``mask.data`` list."""

    @abc.abstractmethod
    def add_psf(self, psf: CellPointSpreadFunction) -> dict[str, Any]:
        """Store the 4-d ``(n_i, n_j, ky, kx)`` PSF kernel array."""

    @abc.abstractmethod
    def add_table(self, path: str, table: Any) -> list[dict[str, Any]]:
        """Store an astropy table (``"provenance/inputs"`` ...); returns its column models."""

    @abc.abstractmethod
    def add_array(self, path: str, values: np.ndarray) -> dict[str, Any]:
        """Store a small in-memory array found at tree path ``path`` (background model data ...)."""

    def begin(self, coadd: CellCoadd) -> None:  # noqa: B027 - optional hook
        """Called first, with the coadd being written (for what every item shares, e.g. FITS WCS cards)."""

    def add_stored(self, source: str, stored: StoredArchive) -> str | None:
        """Store an item of the archive the coadd was read from as it is; ``None`` if this archive cannot.

        The default copies nothing: :func:`~cellcoadd_dask.archives.output.serialize` then reads the array and calls
        :meth:`add_array`.  A format may copy an item of its own kind byte for byte.
        """
        return None

    @abc.abstractmethod
    def add_tree(self, tree: dict[str, Any]) -> None:
        """Take the finished, validated tree (written after every array)."""

    def commit(self) -> None:  # noqa: B027 - optional hook
        """Write what was added (called when the ``with`` block ends without an error)."""

    def abort(self) -> None:  # noqa: B027 - optional hook
        """Forget what was added, leaving the destination as it was."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def check_plane_names(coadd: CellCoadd) -> None:
    """Refuse mask-fraction names that cannot name an array in every format (or clash in FITS, by case)."""
    seen: dict[str, str] = {}
    for name in coadd.mask_fractions:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationError(
                f"Mask fraction name {name!r} cannot be an array name (use letters, digits, '_' and '-')."
            )
        if name.upper() in seen:
            raise ValidationError(f"Mask fraction names {seen[name.upper()]!r} and {name!r} differ only in case.")
        seen[name.upper()] = name


def _references(tree: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every array reference of ``tree`` (a dict with a string ``source``) and its tree path."""
    if isinstance(tree, dict):
        if isinstance(tree.get("source"), str):
            yield path, tree
            return
        for key, value in tree.items():
            yield from _references(value, (*path, str(key)))
    elif isinstance(tree, list):
        for n, value in enumerate(tree):
            yield from _references(value, (*path, str(n)))


def stored_array(stored: StoredArchive, source: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The whole array ``source`` names in the archive a coadd was read from.

    Raises
    ------
    ValidationError
        If that archive's format cannot hand out arrays by source, or does not hold it.
    """
    from .registry import format_named

    reader = format_named(stored.format).stored_array if stored.format else None
    if reader is None:
        raise ValidationError(f"The coadd references {source!r}, which its archive cannot provide.")
    return reader(stored, source, shape, dtype)


def _carry_over(tree: dict[str, Any], produced: set[str], archive: OutputArchive, stored: StoredArchive | None) -> None:
    """Give ``archive`` every array the tree references that this write did not produce.

    They belong to fields passed through from the stored tree, or to background models:
    copied as they are when the archive can, else read and added as arrays.
    """
    for path, node in list(_references(tree)):
        source = node["source"]
        if source in produced:
            continue
        if stored is None:
            raise ValidationError(
                f"The tree references {source!r} at {'.'.join(path)}, but the coadd was not read from an archive."
            )
        copied = archive.add_stored(source, stored)
        if copied is not None:
            node["source"] = copied
            produced.add(copied)
            continue
        shape = tuple(int(n) for n in node.get("shape", ()))
        values = stored_array(stored, source, shape, str(node.get("datatype", "")))
        ref = archive.add_array("/".join(path[:-1] if path[-1] == "value" else path), values)
        node.clear()
        node.update(ref)
        if isinstance(ref.get("source"), str):
            produced.add(ref["source"])


def serialize(coadd: CellCoadd, archive: OutputArchive) -> CellCoaddModel:
    """Write ``coadd`` into ``archive``: every array and table, then the tree (the seed's ``serialize``).

    Parameters
    ----------
    coadd
        The coadd (lazy planes are read piece by piece by the archive).
    archive
        Any :class:`OutputArchive`.

    Returns
    -------
    CellCoaddModel
        The model of the tree written (``.tree`` is the JSON tree).

    Raises
    ------
    ValidationError
        Before the archive commits anything: names that cannot be stored, tables the format
        cannot hold, arrays the coadd cannot provide, or a tree that does not match the
        ``cell_coadd`` 1.0.0 schema.
    """
    from ..model import parse_cell_coadd
    from ..schema import validate_tree

    check_plane_names(coadd)
    archive.begin(coadd)
    refs: dict[str, Any] = {"image": archive.add_image("image", coadd.image), "mask": archive.add_mask(coadd.mask)}
    refs["variance"] = archive.add_image("variance", coadd.variance)
    for name, image in coadd.mask_fractions.items():
        refs[f"mask_fractions/{name}"] = archive.add_image(f"mask_fractions/{name}", image)
    for n, image in enumerate(coadd.noise_realizations):
        refs[f"noise_realizations/{n}"] = archive.add_image(f"noise_realizations/{n}", image)
    refs["psf"] = archive.add_psf(coadd.psf)
    _, subtrees = table_subtrees(coadd, lambda table, path: archive.add_table(path, table))
    produced = {node["source"] for _, node in _references([refs, subtrees])}
    tree = build_tree(coadd, refs, subtrees)
    stored = coadd.stored
    if stored is not None:
        tree = merge_unknown(tree, stored.tree)
    tree = copy.deepcopy(tree)
    _carry_over(tree, produced, archive, stored)
    validate_tree(tree, url=archive.url, scheme="zarr" if archive.scheme == "zarr" else "fits")
    archive.add_tree(tree)
    return parse_cell_coadd(tree, url=archive.url)


def write_with(archive: OutputArchive, coadd: CellCoadd) -> Mapping[str, Any]:
    """Serialize ``coadd`` into ``archive`` and commit it; returns the tree written."""
    with archive:
        model = serialize(coadd, archive)
    return model.tree
