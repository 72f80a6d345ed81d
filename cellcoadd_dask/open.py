"""``open_coadd``: open any supported archive, sniffing its format."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

from .coadd import CellCoadd
from .errors import ArchiveFormatError, FetchError
from .fetch import filesystem, normalize_url
from .geom import Box
from .lazy import Chunks

__all__ = ["open_coadd", "sniff_format"]


def sniff_format(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """``"fits"``, ``"json"`` or ``"zarr"`` from the URL's suffix, else from the first bytes."""
    lower = url.lower().rstrip("/")
    if lower.endswith((".fits", ".fit", ".fits.fz")):
        return "fits"
    if lower.endswith((".json", ".json.gz")):
        return "json"
    if lower.endswith(".zarr"):
        return "zarr"
    fs, path = filesystem(url, storage_options)
    try:
        with fs.open(path, "rb") as f:
            head = f.read(80)
    except FileNotFoundError:
        raise FetchError(f"{url}: no such file.") from None
    except OSError as exc:
        raise FetchError(f"{url}: reading failed: {exc!r}") from exc
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
        Passed to fsspec.
    """
    url = normalize_url(url)
    kind = sniff_format(url, storage_options)
    if kind == "fits":
        return CellCoadd.read_fits(url, bbox=bbox, chunks=chunks, storage_options=storage_options)
    if kind == "json":
        return CellCoadd.read_json(url, bbox=bbox, chunks=chunks, storage_options=storage_options)
    return CellCoadd.read_zarr(url, bbox=bbox, chunks=chunks, storage_options=storage_options)
