"""Write a :class:`~cellcoadd_dask.CellCoadd` as a Zarr v3 archive (layouts: :mod:`.layout`).

:class:`ZarrOutputArchive` is the Zarr answer to :func:`~cellcoadd_dask.archives.output.serialize`:
each item becomes an array (planned when added, written on commit), the tree is written after
every array, and in layout 2 the metadata is consolidated last, so that a reader never sees a
tree pointing at missing arrays.  Pixels are read and written in bands of whole shard rows,
several at a time (``streaming.ordered_map``), so memory stays bounded.

Committing (``cellcoadd_dask.archives.zarr.commit``) is atomic everywhere:

- a local archive is written into a hidden temporary sibling directory and renamed into place
  (an existing archive is renamed away first and deleted after); its arrays are at the top
  level of the group (``/image`` ...);
- an object-store archive (no rename there) is versioned: every object of a write goes under a
  fresh prefix ``<url>/<version>/`` (``ZarrOutputArchive.prefix``; the tree's sources, the
  ``lsst.json`` root attribute and OME ``datasets.path`` point there), the root ``zarr.json``
  (attributes and consolidated metadata) is written last, in one PUT, as the commit point, and
  the previous version's objects are deleted after.  A failed or killed write leaves the
  previous archive readable and unchanged.

Storage failures (read-only or full disk, file-size limit, an object store that refuses or
resets requests) are :class:`~cellcoadd_dask.errors.WriteError` naming the destination.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from ...atomic import is_local
from ...errors import ValidationError
from ...fetch import normalize_url
from ...streaming import ordered_map
from ..output import OutputArchive, write_with
from ..tree_out import array_ref, table_column_models
from .commit import new_version, write_local, write_remote
from .layout import (
    ARCHIVE_CLASS,
    DATA_MODEL,
    LATEST_LAYOUT,
    LAYOUT_ATTRIBUTE,
    LSST_ATTRIBUTE,
    LSST_VERSION,
    TREE_ARRAY,
    TREE_ATTRIBUTE,
    ZarrLayout,
    codecs,
    shard_shape,
)

if TYPE_CHECKING:
    import dask.array as da

    from ...coadd import CellCoadd
    from ...image import Image
    from ...mask import Mask
    from ...psf import CellPointSpreadFunction

__all__ = ["ZarrOutputArchive", "write_zarr"]

Job = tuple[Callable[[np.ndarray], int], "da.Array"]


@dataclass
class _Planned:
    """One array to create and fill."""

    path: str
    values: Any  # dask array (pixels) or numpy array (small)
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None = None
    prepare: Callable[[np.ndarray], np.ndarray] | None = None
    dtype: np.dtype | None = None
    dimension_names: tuple[str, ...] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    filters: tuple[Any, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.values.shape)


def _write_region(target: Any, region: tuple[slice, ...], prepare: Any, block: np.ndarray) -> int:
    block = np.asarray(block)
    target[region] = block if prepare is None else prepare(block)
    return int(block.nbytes)


def _write_masks(targets: list[Any], schema: Any, region: tuple[slice, ...], block: np.ndarray) -> int:
    from ...mask import memory_to_disk

    for target, disk in zip(targets, memory_to_disk(np.asarray(block), schema), strict=True):
        target[region] = disk
    return int(block.nbytes)


def _bands(n: int, step: int) -> Iterator[slice]:
    for start in range(0, n, max(1, step)):
        yield slice(start, min(n, start + step))


class ZarrOutputArchive(OutputArchive):
    """A Zarr v3 archive being written.

    Parameters
    ----------
    url
        Destination group (normalized; conventionally ending in ``.zarr``).
    layout
        2 (default, sharded, for object stores) or 1 (the first layout, for older readers).
    storage_options
        fsspec options of a remote destination.
    overwrite
        Whether an existing archive may be replaced.
    shard_bytes
        Target uncompressed shard size (layout 2).
    keep_bits
        Lossy mode (layout 2): keep this many mantissa bits of every floating-point plane
        (image, variance, mask fractions, noise realizations; not the PSF), rounding to
        nearest.  Each value ``x`` is stored as ``x'`` with ``|x' - x| <= 2**-(keep_bits + 1) * |x|``;
        zeros, NaN and infinities are kept exactly.  ``None`` (default): lossless.
    """

    scheme = "zarr"

    def __init__(
        self,
        url: str,
        *,
        layout: int = LATEST_LAYOUT,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        shard_bytes: int | None = None,
        keep_bits: int | None = None,
    ) -> None:
        if layout not in (1, 2):
            raise ValidationError(f"Zarr layout must be 1 or 2, not {layout!r}.")
        if keep_bits is not None and (
            isinstance(keep_bits, bool) or not isinstance(keep_bits, int) or not 1 <= keep_bits <= 51 or layout < 2
        ):
            raise ValidationError(f"keep_bits must be an int in 1..51 (layout 2 only), not {keep_bits!r}.")
        self.keep_bits = keep_bits
        self.url = url
        self.layout = ZarrLayout(layout)
        self.storage_options = dict(storage_options or {})
        self.overwrite = overwrite
        self.shard_bytes = shard_bytes
        self.arrays: list[_Planned] = []
        self.mask_group: tuple[list[str], Any, Any] | None = None
        self.tree: dict[str, Any] | None = None
        self._cell: tuple[int, int] = (1, 1)
        self._yx0: tuple[int, int] = (0, 0)
        self.prefix = "" if is_local(url) else new_version()
        """Version prefix of every array (object stores; see :mod:`.commit`), ``""`` for a local archive."""

    @property
    def layout_number(self) -> int:
        """The layout written."""
        return self.layout.number

    def _source(self, path: str) -> str:
        """The ``zarr:`` source of the array written at ``path`` (below :attr:`prefix`)."""
        if not self.prefix:
            return self.layout.source(path)
        return self.layout.source(("/" if path.startswith("/") else "") + f"{self.prefix}/{path.lstrip('/')}")

    def _in_group(self, path: str) -> str:
        """``path`` (relative, no leading ``/``) from the root of the group."""
        return f"{self.prefix}/{path}" if self.prefix else path

    def begin(self, coadd: CellCoadd) -> None:
        """Take the cell shape (the chunk shape) and the image origin (the OME translation)."""
        self._cell = (int(coadd.grid.cell_shape.y), int(coadd.grid.cell_shape.x))
        self._yx0 = (int(coadd.bbox.y.start), int(coadd.bbox.x.start))

    def _shards(self, chunks: tuple[int, ...], shape: tuple[int, ...], itemsize: int, axes: int) -> Any:
        if self.layout.number < 2:
            return None
        kwargs = {} if self.shard_bytes is None else {"target": self.shard_bytes}
        return shard_shape(chunks, shape, itemsize, axes, **kwargs)

    def _plane(self, path: str, array: da.Array, dtype: np.dtype, *, prepare: Any = None,
               attributes: dict[str, Any] | None = None) -> _Planned:
        shape = tuple(int(n) for n in array.shape[:2])
        chunks = tuple(max(1, min(c, n)) for c, n in zip(self._cell, shape, strict=True))
        planned = _Planned(path, array, chunks, self._shards(chunks, shape, dtype.itemsize, 2), prepare, dtype,
                           ("y", "x"), attributes or {})
        self.arrays.append(planned)
        return planned

    def add_image(self, key: str, image: Image) -> dict[str, Any]:
        """Plan a 2-d plane array, chunked by cell."""
        path = self.layout.path(key)
        attributes = {} if image.unit is None else {"units": image.unit.to_string("vounit")}
        planned = self._plane(path, image.array, np.dtype(image.dtype), attributes=attributes)
        dtype = np.dtype(image.dtype)
        if self.keep_bits is not None and dtype.kind == "f":
            from zarr.codecs import BitRound

            mantissa = np.finfo(dtype).nmant
            planned.filters = (BitRound(keepbits=min(self.keep_bits, mantissa)),)
        return array_ref(self._source(path), image.array.shape, image.dtype)

    def add_mask(self, mask: Mask) -> list[dict[str, Any]]:
        """Plan the mask: one packed array with CF flag attributes, or int32 arrays of 31 planes."""
        from ...mask import packed_dtype

        schema = mask.schema
        shape = tuple(int(n) for n in mask.array.shape[:2])
        if self.layout.packs_mask(len(schema)) and schema.dtype.kind == "u":
            dtype = packed_dtype(schema)
            names = schema.names
            attributes = {
                "flag_masks": [1 << schema.index(name) for name in names],
                "flag_meanings": " ".join(names),
                "flag_descriptions": [schema.descriptions()[name] for name in names],
            }
            path = self.layout.path("mask")
            self._plane(path, mask.packed(), dtype, attributes=attributes)
            return [array_ref(self._source(path), shape, schema.dtype)]
        paths = [self.layout.path(f"mask/{k}") for k in range(schema.n_disk_arrays)]
        self.mask_group = (paths, mask.array, schema)
        return [array_ref(self._source(p), shape, "int32") for p in paths]

    def add_psf(self, psf: CellPointSpreadFunction) -> dict[str, Any]:
        """Plan the 4-d PSF array, one chunk per cell kernel."""
        array = psf.array
        shape = tuple(int(n) for n in array.shape)
        chunks = (1, 1, *shape[2:])
        path = self.layout.path("psf")
        shards = self._shards(chunks, shape, np.dtype(array.dtype).itemsize, 2)
        self.arrays.append(_Planned(path, array, chunks, shards, dtype=np.dtype(array.dtype)))
        return array_ref(self._source(path), shape, array.dtype)

    def add_table(self, path: str, table: Any) -> list[dict[str, Any]]:
        """Plan one array per column."""
        def source_of(n: int, name: str) -> str:
            column = self.layout.column(path, name, n)
            self.arrays.append(_small(column, np.asarray(table[name])))
            return self._source(column)

        return table_column_models(table, path, source_of)

    def add_array(self, path: str, values: np.ndarray) -> dict[str, Any]:
        """Plan a small array at the tree path it was found at."""
        target = self.layout.extra(path)
        taken = {a.path for a in self.arrays}
        n = 1
        while target in taken:
            n += 1
            target = self.layout.extra(f"{path}_{n}")
        self.arrays.append(_small(target, np.asarray(values)))
        return array_ref(self._source(target), values.shape, values.dtype)

    def add_tree(self, tree: dict[str, Any]) -> None:
        """Keep the tree; it is written after every array."""
        self.tree = tree

    # ------------------------------------------------------------------ writing
    def _jobs(self, group: Any) -> list[Job]:
        jobs: list[Job] = []
        for planned in self.arrays:
            dtype = planned.dtype or np.dtype(planned.values.dtype)
            target = group.create_array(
                planned.path.lstrip("/"), shape=planned.shape, dtype=dtype, chunks=planned.chunks,
                shards=planned.shards, fill_value=0, dimension_names=planned.dimension_names,
                attributes=planned.attributes or None, filters=planned.filters or None,
                **codecs(dtype, layout=self.layout.number),
            )
            if isinstance(planned.values, np.ndarray):
                if planned.values.size:
                    target[...] = planned.values
                continue
            step = (planned.shards or planned.chunks)[0]
            for band in _bands(planned.shape[0], step):
                jobs.append((functools.partial(_write_region, target, (band,), planned.prepare),
                             planned.values[band]))
        if self.mask_group is not None:
            paths, array, schema = self.mask_group
            shape = tuple(int(n) for n in array.shape[:2])
            chunks = tuple(max(1, min(c, n)) for c, n in zip(self._cell, shape, strict=True))
            shards = self._shards(chunks, shape, 4, 2)
            targets = [
                group.create_array(p.lstrip("/"), shape=shape, dtype="int32", chunks=chunks, shards=shards,
                                   fill_value=0, dimension_names=("y", "x"),
                                   **codecs(np.dtype("int32"), layout=self.layout.number))
                for p in paths
            ]
            for band in _bands(shape[0], (shards or chunks)[0]):
                jobs.append((functools.partial(_write_masks, targets, schema, (band,)), array[band]))
        return jobs

    def root_attributes(self) -> dict[str, Any]:
        """The root group's attributes (the tree in layout 1; ``lsst``, ``cellcoadd``, ``ome`` in layout 2)."""
        if self.layout.number < 2:
            return {TREE_ATTRIBUTE: {"container_version": 1, "tree": self.tree}}
        return {
            LSST_ATTRIBUTE: {"version": LSST_VERSION, "archive_class": ARCHIVE_CLASS,
                             "json": self._in_group(TREE_ARRAY), "data_model": DATA_MODEL},
            TREE_ATTRIBUTE: {LAYOUT_ATTRIBUTE: self.layout.number},
            "ome": {"version": "0.5", "multiscales": [{
                "name": "image",
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": [{"path": self._in_group("image"), "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, 1.0]},
                    {"type": "translation", "translation": [float(self._yx0[0]), float(self._yx0[1])]},
                ]}],
            }]},
        }

    def fill(self, store: Any, *, root: bool = True) -> None:
        """Write every array, then the tree, then (layout 2) the consolidated metadata, into ``store``.

        With ``root`` false (a version group of an object-store archive), the root attributes
        are left out: they belong to the root document written at the commit.
        """
        import zarr

        if self.tree is None:
            raise ValidationError(f"Nothing to write to {self.url}: the tree was never added.")
        group = zarr.open_group(store, mode="w", zarr_format=3)
        for _ in ordered_map(self._jobs(group)):
            pass
        if self.layout.number >= 2:
            text = json.dumps(self.tree, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode("utf-8")
            values = np.frombuffer(text, dtype=np.uint8)
            tree = group.create_array(TREE_ARRAY, shape=values.shape, dtype="uint8", chunks=(max(1, values.size),),
                                      fill_value=0, **codecs(np.dtype("uint8"), layout=self.layout.number))
            tree[...] = values
        if root:
            group.attrs.update(self.root_attributes())
        if self.layout.number >= 2:
            with warnings.catch_warnings():  # consolidated metadata is a zarr-python convention, known here
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                zarr.consolidate_metadata(store)

    def commit(self) -> None:
        """Write the archive, atomically (see :mod:`.commit`)."""
        if is_local(self.url):
            write_local(self, _local_path(self.url), self.overwrite)
        else:
            write_remote(self, self.url, self.storage_options, self.overwrite)


def _small(path: str, values: np.ndarray) -> _Planned:
    return _Planned(path, np.ascontiguousarray(values), tuple(max(1, int(n)) for n in values.shape))


def _local_path(url: str) -> str:
    return os.path.abspath(url[len("file://") :] if url.startswith("file://") else url)


def write_zarr(
    coadd: CellCoadd,
    url: str | PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    layout: int = LATEST_LAYOUT,
    keep_bits: int | None = None,
) -> str:
    """Write ``coadd`` as a Zarr v3 archive (see :meth:`CellCoadd.write_zarr` and :mod:`.layout`).

    ``layout`` and ``keep_bits`` (lossy mode) are those of :class:`ZarrOutputArchive`.

    Returns
    -------
    str
        The normalized destination URL.

    Raises
    ------
    ValidationError
        Before anything is written, for names that cannot be array names, tables the format
        cannot hold, or a tree that does not match the ``cell_coadd`` 1.0.0 schema.
    ArchiveExistsError
        If the destination exists and ``overwrite`` is false.
    DestinationNotFoundError
        If the directory of a local destination does not exist.
    WriteError
        If the storage fails (read-only, full, file-size limit, an object store refusing or
        resetting requests); the previous archive, if any, is then unchanged.
    """
    url = normalize_url(url).rstrip("/")
    archive = ZarrOutputArchive(url, layout=layout, storage_options=storage_options, overwrite=overwrite,
                                keep_bits=keep_bits)
    write_with(archive, coadd)
    return url
