"""Write a :class:`~cellcoadd_dask.CellCoadd` as a Zarr v3 archive.

Layout
------
The archive is one Zarr v3 group:

- group attribute ``cellcoadd`` = ``{"container_version": 1, "tree": <tree>}``, where ``<tree>``
  is the lsst-images ``cell_coadd`` 1.0.0 JSON tree (the same tree a FITS archive stores)
  with every array and table-column ``source`` of the form ``zarr:<array path>``.  The
  container version counts changes of this layout, independently of the tree's schema
  version;
- ``image``, ``variance``, ``mask_fractions/<name>``, ``noise_realizations/<n>``: 2-d arrays of
  the planes, chunked by cell shape (chunks start at the array origin, so they are the cells
  when the coadd's bbox is cell-aligned);
- ``mask/0``, ``mask/1`` ...: the mask as signed int32 2-d arrays of 31 planes each, reserved
  (null) planes dropped, exactly as in FITS archives;
- ``psf``: the 4-d ``(n_i, n_j, ky, kx)`` kernel array, one chunk per cell's kernel;
- ``aperture_corrections/table/<column>``, ``provenance/inputs/<column>``,
  ``provenance/contributions/<column>``: one array per table column (1-d, or n-d for vector
  columns), in the stored form of the FITS tables;
- ``backgrounds/<name>/data``: node values of background fields whose data is not inline.

Arrays use Zarr's default lossless compression.

Writes are atomic where the store allows it: a local archive is written into a hidden
temporary sibling directory and renamed into place (an existing archive is renamed away
first and deleted after).  On other stores the arrays are written first and the group
attribute holding the tree last, so a reader never sees a tree pointing at missing arrays.
Pixels are read and written in bands of whole chunk rows, several at a time
(``streaming.ordered_map``), so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from ...atomic import ArchiveExistsError, is_local
from ...errors import ValidationError
from ...fetch import normalize_url
from ...streaming import ordered_map
from ..fits.table_hdus import table_column_models, table_subtrees
from ..fits.tree_out import build_tree, merge_unknown
from .reader import CONTAINER_VERSION, TREE_ATTRIBUTE, zarr_store

if TYPE_CHECKING:
    import dask.array as da

    from ...coadd import CellCoadd

__all__ = ["zarr_column_models", "write_zarr"]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_COLUMN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
Job = tuple[Callable[[np.ndarray], int], "da.Array"]


def _column_path(group: str, name: str, n: int) -> str:
    """Array path of column ``n`` (0-based) named ``name``; unusual names get a numbered path."""
    if _COLUMN.fullmatch(name) and not name.startswith("__"):
        return f"{group}/{name}"
    return f"{group}/column_{n}"


def zarr_column_models(table: Any, group: str) -> list[dict[str, Any]]:
    """JSON column models of ``table`` stored as one Zarr array per column under ``group``.

    Parameters
    ----------
    table
        An :class:`astropy.table.Table` in its stored form.
    group
        Path of the table's group in the archive (``"provenance/inputs"`` ...).

    Returns
    -------
    list of dict
        ``TableColumnModel`` dicts whose ``data.source`` is ``zarr:<group>/<column>``.

    Raises
    ------
    ValidationError
        If a column has a type the format cannot hold (strings, objects).
    """
    return table_column_models(table, group, lambda n, name: f"zarr:{_column_path(group, name, n)}")


def _tables(coadd: CellCoadd) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Column arrays to write (array path -> values) and the table subtrees."""
    arrays: dict[str, np.ndarray] = {}

    def models_for(table: Any, group: str) -> list[dict[str, Any]]:
        models = zarr_column_models(table, group)
        for model in models:
            arrays[model["data"]["source"][len("zarr:") :]] = np.asarray(table[model["name"]])
        return models

    _, subtrees = table_subtrees(coadd, models_for)
    return arrays, subtrees


def _stored_array(coadd: CellCoadd, source: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Read an array the coadd's tree references in the archive it was read from (background data)."""
    from ..names import parse_source

    stored = coadd._stored
    if stored is None:
        raise ValidationError(f"The coadd references {source!r} but was not read from an archive.")
    if source.startswith("zarr:"):
        from .reader import read_stored_array

        return read_stored_array(stored.url, source, stored.storage_options)
    from ..fits.source import FitsArraySource, HduRef

    parsed = parse_source(source, scheme="fits", url=stored.url)
    entry = stored.hdus.get((parsed.name, parsed.extver))
    if entry is None or parsed.column is not None:
        raise ValidationError(f"The coadd references {source!r}, which its archive {stored.url} does not hold.")
    reader = FitsArraySource(stored.url, [HduRef(entry, shape, dtype)], shape=shape, dtype=dtype,
                             storage_options=stored.storage_options, pin=stored.pin)
    return np.asarray(reader[tuple(slice(0, n) for n in shape)])


def _backgrounds(coadd: CellCoadd, tree: dict[str, Any]) -> dict[str, np.ndarray]:
    """Move referenced background data to ``backgrounds/<name>/data`` (rewriting ``tree``)."""
    arrays: dict[str, np.ndarray] = {}
    fields = (tree.get("backgrounds") or {}).get("fields") or {}
    for name, field in fields.items():
        data = field.get("data") if isinstance(field, dict) else None
        if not (isinstance(data, dict) and isinstance(data.get("source"), str)):
            continue
        if not _NAME.fullmatch(name):
            raise ValidationError(f"Background name {name!r} cannot be an array name (use letters, digits, _ and -).")
        shape = tuple(int(n) for n in data["shape"])
        path = f"backgrounds/{name}/data"
        arrays[path] = _stored_array(coadd, data["source"], shape, data["datatype"])
        data["source"] = f"zarr:{path}"
        data["byteorder"] = "big"
    return arrays


def _check_names(coadd: CellCoadd) -> None:
    for name in coadd.mask_fractions:
        if not _NAME.fullmatch(name):
            raise ValidationError(
                f"Mask fraction name {name!r} cannot be an array name (use letters, digits, _ and -)."
            )


def _sources(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "source" and isinstance(value, str):
                yield value
            else:
                yield from _sources(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _sources(value)


def _cell_chunks(coadd: CellCoadd, shape: tuple[int, ...]) -> tuple[int, ...]:
    cell = (int(coadd.grid.cell_shape.y), int(coadd.grid.cell_shape.x))
    return tuple(max(1, min(c, n)) for c, n in zip(cell, shape[:2], strict=True)) + tuple(shape[2:])


def _write_region(target: Any, region: tuple[slice, ...], block: np.ndarray) -> int:
    target[region] = block
    return int(block.nbytes)


def _write_mask_region(targets: list[Any], schema: Any, region: tuple[slice, ...], block: np.ndarray) -> int:
    from ...mask import memory_to_disk

    for target, disk in zip(targets, memory_to_disk(block, schema), strict=True):
        target[region] = disk
    return int(block.nbytes)


def _bands(n: int, step: int) -> Iterator[slice]:
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


class _Planned:
    """Everything a write needs, decided (and validated) before the first byte is written."""

    def __init__(self, coadd: CellCoadd, url: str) -> None:
        from ...schema import validate_tree

        _check_names(coadd)
        self.coadd = coadd
        self.tables, subtrees = _tables(coadd)
        schema = coadd.mask.schema
        sources = {"image": "zarr:image", "variance": "zarr:variance", "psf": "zarr:psf"}
        sources.update({f"mask/{k}": f"zarr:mask/{k}" for k in range(schema.n_disk_arrays)})
        sources.update({f"mask_fractions/{name}": f"zarr:mask_fractions/{name}" for name in coadd.mask_fractions})
        sources.update({
            f"noise_realizations/{n}": f"zarr:noise_realizations/{n}" for n in range(len(coadd.noise_realizations))
        })
        tree = build_tree(coadd, sources, subtrees)
        if coadd._stored is not None:
            tree = merge_unknown(tree, coadd._stored.tree)
        tree = copy.deepcopy(tree)
        self.extra_arrays = _backgrounds(coadd, tree)
        written = set(sources.values()) | {f"zarr:{p}" for p in (*self.tables, *self.extra_arrays)}
        foreign = sorted({s for s in _sources(tree) if s not in written})
        if foreign:
            raise ValidationError(
                f"The tree references arrays {foreign} that this coadd cannot provide in a Zarr archive."
            )
        validate_tree(tree, url=url, scheme="zarr")
        self.tree = tree

    def create(self, group: Any) -> list[Job]:
        """Create every array in ``group``, write the small ones, and return the pixel jobs."""
        coadd = self.coadd
        jobs: list[Job] = []
        planes = {"image": coadd.image, "variance": coadd.variance}
        planes.update({f"mask_fractions/{k}": v for k, v in coadd.mask_fractions.items()})
        planes.update({f"noise_realizations/{n}": v for n, v in enumerate(coadd.noise_realizations)})
        for path, image in planes.items():
            shape = tuple(int(n) for n in image.array.shape)
            chunks = _cell_chunks(coadd, shape)
            target = group.create_array(path, shape=shape, dtype=image.dtype, chunks=chunks, fill_value=0)
            for band in _bands(shape[0], chunks[0]):
                jobs.append((functools.partial(_write_region, target, (band,)), image.array[band]))
        mask = coadd.mask
        shape2 = tuple(int(n) for n in mask.array.shape[:2])
        chunks = _cell_chunks(coadd, shape2)
        targets = [
            group.create_array(f"mask/{k}", shape=shape2, dtype="int32", chunks=chunks, fill_value=0)
            for k in range(mask.schema.n_disk_arrays)
        ]
        for band in _bands(shape2[0], chunks[0]):
            jobs.append((functools.partial(_write_mask_region, targets, mask.schema, (band,)), mask.array[band]))
        psf = coadd.psf.array
        pshape = tuple(int(n) for n in psf.shape)
        target = group.create_array("psf", shape=pshape, dtype=psf.dtype, chunks=(1, 1, *pshape[2:]),
                                    fill_value=0)
        for i in range(pshape[0]):
            jobs.append((functools.partial(_write_region, target, (slice(i, i + 1),)), psf[i : i + 1]))
        for path, values in {**self.tables, **self.extra_arrays}.items():
            chunks = tuple(max(1, int(n)) for n in values.shape)
            array = group.create_array(path, shape=values.shape, dtype=values.dtype, chunks=chunks, fill_value=0)
            if values.size:
                array[...] = values
        return jobs

    def write(self, group: Any) -> None:
        """Write the arrays, then the tree (last)."""
        for _ in ordered_map(self.create(group)):
            pass
        group.attrs[TREE_ATTRIBUTE] = {"container_version": CONTAINER_VERSION, "tree": self.tree}


def _local_path(url: str) -> str:
    return os.path.abspath(url[len("file://") :] if url.startswith("file://") else url)


def _write_local(plan: _Planned, path: str, overwrite: bool) -> None:
    import zarr

    directory, name = os.path.split(path.rstrip(os.sep))
    if os.path.exists(path) and not overwrite:
        raise ArchiveExistsError(f"Archive {path!r} already exists.")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Directory {directory!r} of {path!r} does not exist.")
    spool = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.partial")
    old = None
    try:
        group = zarr.open_group(zarr.storage.LocalStore(spool), mode="w-")
        plan.write(group)
        if os.path.lexists(path):
            old = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.old")
            os.rename(path, old)
        os.rename(spool, path)
    except BaseException:
        shutil.rmtree(spool, ignore_errors=True)
        if old is not None and not os.path.lexists(path):
            os.rename(old, path)
            old = None
        raise
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)


def _write_remote(plan: _Planned, url: str, storage_options: Mapping[str, Any] | None, overwrite: bool) -> None:
    import zarr

    store = zarr_store(url, storage_options, read_only=False)
    if not overwrite:
        try:
            zarr.open_group(zarr_store(url, storage_options, read_only=True), mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            pass
        else:
            raise ArchiveExistsError(f"Archive {url!r} already exists.")
    # mode "w" clears the store first: the old tree is gone before any array changes.
    plan.write(zarr.open_group(store, mode="w"))


def write_zarr(
    coadd: CellCoadd,
    url: str | PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> str:
    """Write ``coadd`` as a Zarr v3 archive (see :meth:`CellCoadd.write_zarr` and the module notes).

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
    """
    url = normalize_url(url)
    plan = _Planned(coadd, url)
    if is_local(url):
        _write_local(plan, _local_path(url), overwrite)
    else:
        _write_remote(plan, url, storage_options, overwrite)
    return url
