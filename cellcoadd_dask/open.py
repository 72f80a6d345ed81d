"""``open_coadd``: open any supported archive, sniffing its format."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

from .coadd import CellCoadd
from .errors import ArchiveFormatError
from .fetch import fetch_ranges, normalize_url
from .geom import Box
from .lazy import Chunks

__all__ = ["open_coadd", "sniff_format"]


def sniff_format(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """``"fits"``, ``"json"`` or ``"zarr"`` from the URL's suffix (query string ignored), else from its first bytes."""
    lower = url.split("?", 1)[0].split("#", 1)[0].lower().rstrip("/")
    if lower.endswith((".fits", ".fit", ".fits.fz")):
        return "fits"
    if lower.endswith((".json", ".json.gz")):
        return "json"
    if lower.endswith(".zarr"):
        return "zarr"
    try:
        (head,) = fetch_ranges(url, [(0, 80)], storage_options=storage_options)
    except ArchiveFormatError:
        raise ArchiveFormatError("not a FITS or JSON coadd archive (shorter than 80 bytes)", url=url) from None
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.lstrip()[:1] == b"{" or head[:2] == b"\x1f\x8b":
        return "json"
    raise ArchiveFormatError("not a FITS or JSON coadd archive (unrecognised first bytes)", url=url, byte_range=(0, 80))


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
    url = normalize_url(url)
    kind = sniff_format(url, storage_options)
    if kind == "fits":
        return CellCoadd.read_fits(url, bbox=bbox, chunks=chunks, storage_options=storage_options, preload=preload)
    if kind == "json":
        return CellCoadd.read_json(url, bbox=bbox, chunks=chunks, storage_options=storage_options)
    return CellCoadd.read_zarr(url, bbox=bbox, chunks=chunks, storage_options=storage_options)
