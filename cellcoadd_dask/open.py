"""``open_coadd``: open any supported archive, sniffing its format."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

from .archives.registry import format_of
from .coadd import CellCoadd
from .fetch import normalize_url
from .geom import Box
from .lazy import Chunks

__all__ = ["open_coadd", "sniff_format"]


def sniff_format(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The name of the archive format at ``url`` (``"fits"``, ``"json"`` or ``"zarr"``): suffix, else first bytes.

    See :func:`cellcoadd_dask.archives.registry.format_of`.
    """
    return format_of(url, storage_options).name


def open_coadd(
    url: str | PathLike[str],
    *,
    bbox: Box | None = None,
    chunks: Chunks = "auto",
    storage_options: Mapping[str, Any] | None = None,
    preload: bool | None = None,
) -> CellCoadd:
    """Open a cell coadd lazily from a local path or fsspec URL, whatever its archive format.

    Parameters
    ----------
    url
        Local path, :class:`pathlib.Path` or fsspec URL (``s3://``, ``https://``, ``memory://`` ...).
    bbox
        Absolute box; only the cells it touches are ever read.
    chunks
        ``"auto"``, ``"cell"`` or ``(ny, nx)`` cells per chunk.
    storage_options
        Passed to fsspec.  Secrets in them are never shown in messages; note that a graph
        built from the coadd carries them to the workers (pickled).  Workers that take
        credentials from their own environment need none: pass only the endpoint.
    preload
        FITS: also read every plane's header and tile table at open (one more batched
        request), so graphs carry all metadata and workers fetch only tiles.  ``None``
        (default): when a ``dask.distributed`` client is active.
    """
    from .starlink_sandbox import prestart

    prestart()  # the projection check's child process starts while the metadata is fetched
    url = normalize_url(url)
    fmt = format_of(url, storage_options)
    options: dict[str, Any] = {"preload": preload} if fmt.name == "fits" else {}
    return fmt.read(url, bbox=bbox, chunks=chunks, storage_options=storage_options, **options)
