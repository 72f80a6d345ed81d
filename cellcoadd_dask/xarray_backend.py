"""The ``cellcoadd`` xarray engine: ``xr.open_dataset(url, engine="cellcoadd")``.

A thin shim over :func:`cellcoadd_dask.open_coadd` and
:func:`~cellcoadd_dask.xarray_dataset.coadd_to_dataset`.  The Dataset itself is built in
:mod:`cellcoadd_dask.xarray_dataset`; the ``ds.cellcoadd`` accessor lives in
:mod:`cellcoadd_dask.xarray_accessor` (both names are importable from here too).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from .errors import ArchiveFormatError
from .geom import Box
from .xarray_accessor import CellCoaddAccessor
from .xarray_dataset import coadd_to_dataset, dataset_to_coadd

__all__ = ["CellCoaddAccessor", "CellCoaddBackendEntrypoint", "coadd_to_dataset", "dataset_to_coadd"]


class _DaskBackendArray(BackendArray):
    """Lets xarray index one of our dask arrays lazily (only the indexed tiles are read)."""

    def __init__(self, array: da.Array) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._raw)

    def _raw(self, key: tuple[Any, ...]) -> np.ndarray:
        if all(isinstance(k, (slice, int, np.integer)) for k in key):
            # One basic index, so dask hands exactly this region to the source.
            return np.asarray(self.array[key].compute(scheduler="sync"))
        out = self.array
        for axis in range(len(key) - 1, -1, -1):
            k = key[axis]
            if not (isinstance(k, slice) and k == slice(None)):
                out = out[(slice(None),) * axis + (k,)]
        return np.asarray(out.compute(scheduler="sync"))


class CellCoaddBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(url, engine="cellcoadd")``: a coadd archive as a Dataset.

    Pass ``chunks={}`` to get dask arrays chunked on cell edges (the arrays' preferred
    chunks); without ``chunks`` variables are lazily indexed and still read only the
    tiles an index touches.
    """

    description = "Rubin cell-based coadds (lsst-images FITS and JSON archives, Zarr stores)"
    url = "https://github.com/lsst/images"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "bbox", "cell_chunks", "storage_options")

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        bbox: Box | None = None,
        cell_chunks: Any = "auto",
        storage_options: Mapping[str, Any] | None = None,
    ) -> xr.Dataset:
        """Open ``filename_or_obj`` lazily (metadata only)."""
        from .open import open_coadd

        if not isinstance(filename_or_obj, (str, os.PathLike)):
            raise ArchiveFormatError(f"the cellcoadd engine opens paths and URLs, not {type(filename_or_obj).__name__}")
        coadd = open_coadd(filename_or_obj, bbox=bbox, chunks=cell_chunks, storage_options=storage_options)
        ds = coadd_to_dataset(coadd)
        if drop_variables is not None:
            ds = ds.drop_vars(
                [drop_variables] if isinstance(drop_variables, str) else list(drop_variables), errors="ignore"
            )
        for name, var in ds.data_vars.items():
            array = var.data
            lazy = indexing.LazilyIndexedArray(_DaskBackendArray(array))
            ds[name] = xr.Variable(
                var.dims, lazy, var.attrs, encoding={"preferred_chunks": dict(zip(var.dims, array.chunks, strict=True))}
            )
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for paths and URLs of coadd archives: ``.fits``, ``.json`` and ``.zarr``.

        Local files are looked at: a FITS coadd names its data model in the primary header, a
        JSON archive writes its top-level ``schema_url`` last (so the end of the file is read
        too), and a Zarr store has a ``cellcoadd`` attribute in its root ``zarr.json``.  Remote
        URLs are claimed by their suffix alone (nothing is fetched).
        """
        from .archives.registry import suffix_format

        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        name = os.fspath(filename_or_obj)
        fmt = suffix_format(name)
        if fmt is None:
            return False
        if "://" in name:
            return True
        try:
            if fmt.store:
                with open(os.path.join(name, "zarr.json"), "rb") as f:
                    return b'"cellcoadd"' in f.read(_SNIFF_BYTES)
            with open(name, "rb") as f:
                head = f.read(_SNIFF_BYTES)
                if fmt.name == "fits":
                    return head.startswith(b"SIMPLE  =") and b"cell_coadd" in head
                f.seek(max(0, os.fstat(f.fileno()).st_size - _SNIFF_BYTES))
                tail = f.read(_SNIFF_BYTES)
        except OSError:
            return False
        return head.lstrip()[:1] == b"{" and b"/cell_coadd-" in tail


_SNIFF_BYTES = 2880 * 2
