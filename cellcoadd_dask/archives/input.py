"""Reading, written once for every format: an :class:`InputArchive` supplies bytes, this builds the coadd.

A format supplies only what is its own: where the tree lives (:attr:`InputArchive.tree`), how
the arrays a tree references become lazy sources (:meth:`InputArchive.array_source`), how table
columns are read (:meth:`InputArchive.table_reader`) and what a coadd remembers of it for a later
write (:meth:`InputArchive.stored`).  :func:`coadd_from_archive` does the rest the same way for
all of them: the tree is parsed and validated, every plane becomes a dask array chunked on cell
edges, the mask is assembled from its stored arrays, the PSF is read one kernel at a time, and
tables are read the first time they are asked for.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArchiveFormatError, BoundsError, CellCoaddError, ValidationError
from ..geom import Box

if TYPE_CHECKING:
    from ..coadd import CellCoadd
    from ..lazy import ArraySource, Chunks
    from ..model import ArrayModel, CellCoaddModel
    from ..stored import StoredArchive

__all__ = [
    "ArrayRequest",
    "ColumnReader",
    "Combine",
    "InMemorySource",
    "InputArchive",
    "check_bbox",
    "coadd_from_archive",
    "coadd_from_model",
    "deferred_tables",
]

Combine = Callable[[list[np.ndarray], tuple[slice, ...]], np.ndarray]
"""Turns the regions read from each stored array into the region of the logical array."""


@dataclasses.dataclass(frozen=True)
class ArrayRequest:
    """What the coadd builder asks an archive for: one logical array and how it is stored.

    Attributes
    ----------
    arrays
        The tree's models of the stored arrays (one, or the mask's several).
    what
        Where in the tree they are, for messages (``"image"``, ``"mask"``...).
    shape, dtype
        The logical array's shape and dtype.
    combine
        With several stored arrays, how their regions make the logical array's region.
    tile_shape
        The expected tile (cell) shape, a hint for formats that index tiles.
    """

    arrays: Sequence[ArrayModel]
    what: str
    shape: tuple[int, ...]
    dtype: np.dtype
    combine: Combine | None = None
    tile_shape: tuple[int, ...] | None = None

    def labels(self) -> list[str]:
        """Where each stored array is in the tree (``"image"``, or ``"mask.data[1]"`` for one of several)."""
        if len(self.arrays) == 1:
            return [self.what]
        return [f"{self.what}.data[{n}]" for n in range(len(self.arrays))]


class ColumnReader(abc.ABC):
    """Hands out table columns by ``source`` string; picklable (it travels in deferred loaders)."""

    url: str

    @abc.abstractmethod
    def column(self, source: str) -> np.ndarray:
        """The column a ``source`` string names.

        Raises
        ------
        ArchiveFormatError
            If the archive holds no such column.
        """


class InputArchive(abc.ABC):
    """An opened archive, as the one coadd builder sees it.

    Attributes
    ----------
    url
        The archive (normalized URL).
    storage_options
        fsspec options it was opened with.
    """

    url: str
    storage_options: dict[str, Any]

    @property
    @abc.abstractmethod
    def tree(self) -> Mapping[str, Any]:
        """The ``cell_coadd`` tree, as parsed from the archive."""

    @abc.abstractmethod
    def array_source(self, request: ArrayRequest) -> ArraySource:
        """A lazy, picklable source of the logical array ``request`` describes."""

    @abc.abstractmethod
    def table_reader(self) -> ColumnReader:
        """The reader of this archive's table columns."""

    @abc.abstractmethod
    def stored(self, tree: Mapping[str, Any]) -> StoredArchive:
        """What a coadd read from here remembers for a later write (``tree`` as the coadd holds it)."""

    def resolve_backgrounds(self, backgrounds: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The backgrounds subtree as the coadd keeps it (default: as stored)."""
        return backgrounds

    def finish(self, coadd: CellCoadd) -> CellCoadd:
        """Last step of opening (default: nothing); ``coadd`` covers the whole archive."""
        return coadd


class InMemorySource:
    """A source over arrays already in memory (archives that hold their arrays inline).

    Parameters
    ----------
    arrays
        The stored arrays.
    shape, dtype
        The logical array's shape and dtype.
    combine
        With several stored arrays, how their regions make the logical array's region.
    """

    def __init__(
        self, arrays: Sequence[np.ndarray], *, shape: tuple[int, ...], dtype: np.dtype, combine: Combine | None = None
    ) -> None:
        self.arrays = list(arrays)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.combine = combine

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return ("in-memory", tokenize(*self.arrays), self.shape, self.dtype.str, tokenize(self.combine))

    def derive(self, combine: Combine, shape: tuple[int, ...], dtype: np.dtype) -> InMemorySource:
        """A source over the same arrays with another combiner."""
        return InMemorySource(self.arrays, shape=shape, dtype=dtype, combine=combine)

    def __getitem__(self, key: Any) -> np.ndarray:
        from ..lazy import apply_rest, normalize_key

        region, rest = normalize_key(key, self.shape)
        if any(s.stop <= s.start for s in region):
            return apply_rest(np.empty(tuple(s.stop - s.start for s in region), dtype=self.dtype), rest)
        if self.combine is None:
            out = np.asarray(self.arrays[0][region], dtype=self.dtype)
        else:
            out = np.asarray(self.combine([a[region[:2]] for a in self.arrays], region), dtype=self.dtype)
        return apply_rest(out, rest)


def _load_provenance(tree: Mapping[str, Any], tables: ColumnReader) -> Any:
    from ..provenance import CoaddProvenance

    return CoaddProvenance.from_json(dict(tree), tables.column, url=tables.url)


def _check_aperture_grid(tree: Any, psf_bounds: Any, url: str | None) -> None:
    """Aperture corrections share the PSF's cell grid (as lsst-images requires); checked from the tree."""
    if not isinstance(tree, Mapping) or not isinstance(tree.get("bounds"), Mapping):
        return  # read (and refused if malformed) with the tables, on first access
    from ..model import bounds_from_json

    try:
        grid = bounds_from_json(tree["bounds"]).grid
    except (CellCoaddError, KeyError, TypeError, ValueError):
        return
    if grid != psf_bounds.grid:
        raise ArchiveFormatError(
            f"aperture_corrections.bounds.grid ({grid}) differs from psf.bounds.grid ({psf_bounds.grid}): "
            "aperture corrections and PSF share one cell grid", url=url, hdu="JSON",
        )


def _load_aperture_corrections(tree: Mapping[str, Any], tables: ColumnReader) -> Any:
    from ..aperture import ApertureCorrections

    return ApertureCorrections.from_json(dict(tree), tables.column, url=tables.url)


def deferred_tables(model: CellCoaddModel, tables: ColumnReader) -> tuple[Any, Any]:
    """Provenance and aperture corrections read on first access, or ``None`` when the tree has none."""
    from ..deferred import Deferred

    provenance = (
        None if model.provenance is None else Deferred(functools.partial(_load_provenance, model.provenance, tables))
    )
    aperture = (
        None
        if model.aperture_corrections is None
        else Deferred(functools.partial(_load_aperture_corrections, model.aperture_corrections, tables))
    )
    return provenance, aperture


def coadd_from_model(
    model: CellCoaddModel,
    *,
    images: Mapping[str, Any],
    mask: Any,
    psf: Any,
    provenance: Any,
    aperture_corrections: Any,
    url: str,
    stored: Any = None,
) -> CellCoadd:
    """Assemble a :class:`~cellcoadd_dask.CellCoadd` from a parsed tree and its lazily read parts."""
    from ..backgrounds import BackgroundMap
    from ..coadd import CellCoadd
    from ..projection import SkyProjection

    projection = SkyProjection.from_json(dict(model.sky_projection), url=url)
    backgrounds = None if model.backgrounds is None else BackgroundMap.from_json(dict(model.backgrounds), url=url)
    return CellCoadd(
        images["image"],
        mask=mask,
        variance=images["variance"],
        mask_fractions={k: images[f"mask_fractions/{k}"] for k in model.mask_fractions},
        noise_realizations=[images[f"noise_realizations/{n}"] for n in range(len(model.noise_realizations))],
        projection=projection,
        band=model.band,
        psf=psf,
        patch=model.patch,
        provenance=provenance,
        aperture_corrections=aperture_corrections,
        backgrounds=backgrounds,
        metadata=model.metadata,
        extra=model.extra,
        butler_info=model.butler_info,
        source_url=url,
        stored=stored,
    )


def check_bbox(bbox: Box | None, model: CellCoaddModel, url: str) -> None:
    """Refuse a ``bbox`` that is not a :class:`~cellcoadd_dask.Box` inside the coadd."""
    if bbox is None:
        return
    if not isinstance(bbox, Box):
        raise TypeError(f"bbox must be a cellcoadd_dask.Box, not {type(bbox).__name__}.")
    if not model.image.bbox.contains(bbox):
        raise BoundsError(f"Box {bbox} is not contained in the coadd bbox {model.image.bbox} of {url}.")


def coadd_from_archive(archive: InputArchive, *, bbox: Box | None = None, chunks: Chunks = "auto") -> CellCoadd:
    """Build the lazy coadd an opened archive holds.

    Raises
    ------
    ArchiveFormatError
        If the tree is invalid or references arrays the archive cannot provide.
    BoundsError
        If ``bbox`` is not inside the coadd.
    """
    from ..image import Image
    from ..lazy import PlaneOrigin, cell_chunks, plane_array
    from ..mask import Mask, MaskPlane, MaskSchema, combine_disk_arrays, combine_packed_array
    from ..model import parse_cell_coadd
    from ..psf import CellPointSpreadFunction

    url = archive.url
    tree = archive.tree
    model = parse_cell_coadd(tree, url=url)
    check_bbox(bbox, model, url)
    backgrounds = archive.resolve_backgrounds(model.backgrounds)
    if backgrounds is not model.backgrounds:
        model = dataclasses.replace(model, backgrounds=backgrounds)
        tree = {**tree, "backgrounds": backgrounds}
    grid = model.psf.bounds.grid
    cell = tuple(grid.cell_shape)

    images = {}
    for name, plane in model.planes().items():
        label = name.replace("/", "-")
        source = archive.array_source(
            ArrayRequest([plane.array], name, tuple(plane.array.shape), plane.array.dtype, tile_shape=cell)
        )
        array = plane_array(source, name=label, chunks=cell_chunks(plane.bbox, grid, chunks, source.dtype.itemsize))
        origin = PlaneOrigin(source, plane.bbox, array, label)
        images[name] = Image(array, bbox=plane.bbox, unit=plane.unit, origin=origin)

    m = model.mask
    schema = MaskSchema([None if p is None else MaskPlane(p.name, p.description) for p in m.planes], dtype=m.dtype)
    combine = functools.partial(combine_packed_array if m.packed else combine_disk_arrays, schema)
    mask_source = archive.array_source(
        ArrayRequest(m.arrays, "mask", (*m.bbox.shape, schema.mask_size), schema.dtype, combine, tile_shape=cell)
    )
    yx_chunks = cell_chunks(m.bbox, grid, chunks, 4 * len(m.arrays))
    mask_array = plane_array(mask_source, name="mask", chunks=(*yx_chunks, (schema.mask_size,)))
    mask = Mask(mask_array, schema=schema, bbox=m.bbox, origin=PlaneOrigin(mask_source, m.bbox, mask_array, "mask"),
                packed_origin=m.packed)

    p = model.psf
    n_i, n_j, ky, kx = p.array.shape
    psf_source = archive.array_source(ArrayRequest([p.array], "psf", tuple(p.array.shape), p.array.dtype))
    psf_array = plane_array(psf_source, name="psf", chunks=((1,) * n_i, (1,) * n_j, (ky,), (kx,)))
    psf = CellPointSpreadFunction(psf_array, p.bounds, origin=(psf_source, (0, 0)))

    _check_aperture_grid(model.aperture_corrections, p.bounds, url)
    provenance, aperture = deferred_tables(model, archive.table_reader())
    try:
        coadd = coadd_from_model(
            model, images=images, mask=mask, psf=psf, provenance=provenance, aperture_corrections=aperture,
            url=url, stored=archive.stored(tree),
        )
    except ValidationError as exc:
        raise ArchiveFormatError(f"the tree describes an invalid coadd: {exc}", url=url, hdu="JSON") from None
    coadd = archive.finish(coadd)
    return coadd if bbox is None else coadd[bbox]
