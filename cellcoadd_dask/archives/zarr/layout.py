"""The Zarr layouts: where each item of a coadd lives in the group, and how it is chunked and encoded.

Layout 2 (written by default) is made for object stores and follows lsst-images' experimental
Zarr archive (``lsst.*`` root attributes, the tree in ``/lsst_json``, masks packed with CF flag
attributes, ``zarr:/path`` sources, ≈ 16 MiB shards, consolidated metadata):

=================================  ==============================================================
``/image``, ``/variance``          2-d, chunk = one cell, sharded; ``dimension_names`` ``y``, ``x``
``/mask``                          2-d packed unsigned integer, schema plane ``n`` at bit ``n``,
                                   CF ``flag_masks`` / ``flag_meanings`` / ``flag_descriptions``
                                   (masks of more than 64 planes: ``/mask/0`` ... int32, 31 planes each)
``/mask_fractions/<name>``         as the image
``/noise_realizations/<n>``        as the image
``/psf``                           4-d ``(n_i, n_j, ky, kx)``, one chunk per cell kernel, sharded
``/lsst/tables/<table>/<column>``  one array per table column, one chunk
``/<tree path>``                   other arrays the tree references (background model data), one chunk
``/lsst_json``                     the ``cell_coadd`` tree, UTF-8 JSON as 1-d ``uint8``, one chunk
=================================  ==============================================================

Layout 1 (read, and written on request) keeps the tree in the group attribute ``cellcoadd``,
relative ``zarr:`` sources, the mask as int32 arrays ``mask/<k>``, unsharded chunks and no
consolidated metadata.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..names import SCHEMA_NAME, SCHEMA_URL_PREFIX, SCHEMA_VERSION

__all__ = [
    "ARCHIVE_CLASS",
    "LATEST_LAYOUT",
    "LAYOUT_ATTRIBUTE",
    "LSST_ATTRIBUTE",
    "LSST_VERSION",
    "SHARD_BYTES",
    "TREE_ARRAY",
    "TREE_ATTRIBUTE",
    "ZarrLayout",
    "codecs",
    "shard_shape",
]

LATEST_LAYOUT = 2
"""The layout this package writes by default."""
TREE_ATTRIBUTE = "cellcoadd"
"""Root attribute: ``{"container_version": 1, "tree": ...}`` in layout 1, ``{"layout": 2}`` in layout 2."""
LAYOUT_ATTRIBUTE = "layout"
"""Key of the layout number inside :data:`TREE_ATTRIBUTE` (layout 2 and later)."""
LSST_ATTRIBUTE = "lsst"
"""Root attribute of lsst-images' Zarr archives: ``version``, ``archive_class``, ``json``, ``data_model``."""
LSST_VERSION = 1
"""Version of the ``lsst`` attribute block written."""
ARCHIVE_CLASS = "CellCoadd"
"""``lsst.archive_class`` of a cell coadd."""
TREE_ARRAY = "lsst_json"
"""Array holding the JSON tree (layout 2)."""
SHARD_BYTES = 16 * 1024 * 1024
"""Target uncompressed size of a shard (whole cells)."""
DATA_MODEL = f"{SCHEMA_URL_PREFIX}{SCHEMA_NAME}-{SCHEMA_VERSION}"

_COLUMN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_PART = re.compile(r"[^A-Za-z0-9_.-]")


def shard_shape(chunks: tuple[int, ...], shape: tuple[int, ...], itemsize: int, axes: int,
                target: int = SHARD_BYTES) -> tuple[int, ...]:
    """Whole chunks per shard, about ``target`` bytes uncompressed, growing the first ``axes`` axes alike.

    The number of chunks per growable axis is ``round((target / chunk bytes) ** (1 / axes))``,
    capped by the chunks the array has along that axis.
    """
    chunk_bytes = max(1, math.prod(chunks) * itemsize)
    k = max(1, round((target / chunk_bytes) ** (1 / max(1, axes))))
    out = []
    for n, (c, s) in enumerate(zip(chunks, shape, strict=True)):
        if n < axes:
            out.append(c * max(1, min(k, -(-s // c) if c else 1)))
        else:
            out.append(c)
    return tuple(out)


def codecs(dtype: np.dtype, *, layout: int) -> dict[str, Any]:
    """``create_array`` keyword arguments (layout 2): blosc zstd 5 with shuffle, crc32c, every chunk stored.

    Layout 1 keeps Zarr's defaults.
    """
    if layout < 2:
        return {}
    # Every chunk is stored, fill values included: a missing chunk or shard is then damage,
    # never a silent fill value.
    from zarr.codecs import BloscCodec, Crc32cCodec

    shuffle: Literal["shuffle", "bitshuffle"] = "bitshuffle" if dtype.itemsize == 1 else "shuffle"
    blosc = BloscCodec(cname="zstd", clevel=5, shuffle=shuffle, typesize=max(1, dtype.itemsize))
    return {"compressors": [blosc, Crc32cCodec()], "config": {"write_empty_chunks": True}}


@dataclass(frozen=True)
class ZarrLayout:
    """Paths of the items of a coadd in one layout."""

    number: int = LATEST_LAYOUT

    def path(self, key: str) -> str:
        """Array path of a plane key (``image``, ``mask_fractions/<name>``, ``psf``...)."""
        return f"/{key}" if self.number >= 2 else key

    def source(self, path: str) -> str:
        """The ``zarr:`` source string of an array path."""
        return f"zarr:{path}"

    def column(self, table: str, name: str, n: int) -> str:
        """Array path of column ``n`` (0-based) called ``name`` of table ``table``."""
        leaf = name if _COLUMN.fullmatch(name) and not name.startswith("__") else f"column_{n}"
        return f"/lsst/tables/{table}/{leaf}" if self.number >= 2 else f"{table}/{leaf}"

    def extra(self, tree_path: str) -> str:
        """Array path of another array found at ``tree_path`` of the tree."""
        parts = [_PART.sub("_", p) or "_" for p in tree_path.split("/") if p]
        parts = [f"_{p}" if p in (".", "..") else p for p in parts] or ["array"]
        return self.path("/".join(parts))

    def packs_mask(self, n_planes: int) -> bool:
        """Whether a mask of ``n_planes`` schema bits is one packed array (layout 2, at most 64 bits)."""
        return self.number >= 2 and n_planes <= 64
