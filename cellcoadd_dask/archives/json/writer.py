"""Write a :class:`~cellcoadd_dask.CellCoadd` as an lsst-images JSON archive (every array inline).

JSON archives suit small coadds (cut-outs, tests, exchange): the whole coadd is computed and
held in the tree, so :data:`MAX_JSON_PIXELS` bounds what is accepted.  A ``.json.gz``
destination is gzip-compressed.  The file appears atomically
(``atomic_output``), and storage failures are
:class:`~cellcoadd_dask.errors.WriteError` naming the destination.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from ...atomic import atomic_output
from ...errors import ValidationError
from ...fetch import normalize_url
from ..output import OutputArchive, write_with

if TYPE_CHECKING:
    from ...coadd import CellCoadd
    from ...image import Image
    from ...mask import Mask
    from ...psf import CellPointSpreadFunction

__all__ = ["MAX_JSON_PIXELS", "JsonOutputArchive", "write_json"]

MAX_JSON_PIXELS = 50_000_000
"""Most array elements a JSON archive may hold in all (a JSON number takes ~20 bytes)."""


def inline(values: np.ndarray) -> dict[str, Any]:
    """The inline model of an array (``InlineArrayModel``): nested lists and the datatype name."""
    values = np.asarray(values)
    return {"data": values.tolist(), "datatype": values.dtype.name}


class JsonOutputArchive(OutputArchive):
    """A JSON archive being written: each item is computed into the tree.

    Parameters
    ----------
    url
        Destination (``.json``, or ``.json.gz`` for gzip).
    storage_options
        fsspec options of the destination.
    overwrite
        Whether an existing file may be replaced.
    """

    scheme = "inline"

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None, overwrite: bool = True) -> None:
        self.url = url
        self.storage_options = storage_options
        self.overwrite = overwrite
        self.tree: dict[str, Any] | None = None
        self._elements = 0

    def _take(self, values: Any, what: str) -> np.ndarray:
        self._elements += math.prod(int(n) for n in values.shape)
        if self._elements > MAX_JSON_PIXELS:
            raise ValidationError(
                f"{what}: a JSON archive holds at most {MAX_JSON_PIXELS} array elements; write FITS or Zarr instead."
            )
        return np.asarray(values)

    def add_image(self, key: str, image: Image) -> dict[str, Any]:
        """The plane's values, inline."""
        return inline(self._take(image.array, key))

    def add_mask(self, mask: Mask) -> list[dict[str, Any]]:
        """The mask as inline int32 arrays of 31 planes each (as lsst-images writes them)."""
        from ...mask import memory_to_disk

        values = self._take(mask.array, "mask")
        return [inline(disk) for disk in memory_to_disk(values, mask.schema)]

    def add_psf(self, psf: CellPointSpreadFunction) -> dict[str, Any]:
        """The PSF kernels, inline."""
        return inline(self._take(psf.array, "psf"))

    def add_table(self, path: str, table: Any) -> list[dict[str, Any]]:
        """Column models with their values inline."""
        from ..tree_out import table_column_models

        models = table_column_models(table, path, lambda n, name: "")
        for model in models:
            model["data"] = inline(np.asarray(table[model["name"]]))
        return models

    def add_array(self, path: str, values: np.ndarray) -> dict[str, Any]:
        """The array, inline."""
        return inline(self._take(values, path))

    def add_tree(self, tree: dict[str, Any]) -> None:
        """Keep the tree."""
        self.tree = tree

    def commit(self) -> None:
        """Write the tree as JSON (gzip for ``.json.gz``)."""
        text = json.dumps(self.tree, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode("utf-8")
        if self.url.split("?", 1)[0].lower().endswith(".gz"):
            text = gzip.compress(text, mtime=0)
        with atomic_output(self.url, storage_options=self.storage_options, overwrite=self.overwrite) as stream:
            stream.write(text)


def write_json(
    coadd: CellCoadd,
    url: str | PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> str:
    """Write ``coadd`` as a JSON archive lsst-images reads (see :meth:`CellCoadd.write_json`).

    At most :data:`MAX_JSON_PIXELS` array elements are accepted (a :class:`ValidationError`
    otherwise, before anything is written).  Returns the normalized destination URL.

    Raises
    ------
    ValidationError
        Before anything is written, for too many array elements or a tree that does not match
        the schema.
    ArchiveExistsError
        If the destination exists and ``overwrite`` is false.
    DestinationNotFoundError
        If the directory of a local destination does not exist.
    WriteError
        If the storage fails (read-only, full, file-size limit, an object store refusing or
        resetting requests); the previous file, if any, is then unchanged.
    """
    url = normalize_url(url)
    write_with(JsonOutputArchive(url, storage_options=storage_options, overwrite=overwrite), coadd)
    return url
