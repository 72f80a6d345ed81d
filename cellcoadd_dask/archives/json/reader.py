"""Read an lsst-images JSON archive (``.json``, optionally gzip-compressed) into a :class:`CellCoadd`.

JSON archives hold every array inline, so the whole file is read and parsed; the planes
are then wrapped as dask arrays chunked on cell edges like any other archive's.
"""

from __future__ import annotations

import functools
import gzip
import json
import zlib
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from ...coadd import CellCoadd
from ...deferred import Deferred
from ...errors import ArchiveFormatError, BoundsError, FetchError, shown_url
from ...fetch import fetch_head, fetch_ranges, filesystem, normalize_url, redact
from ...geom import Box
from ...image import Image
from ...lazy import Chunks, cell_chunks
from ...mask import Mask, MaskPlane, MaskSchema, disk_to_memory
from ...model import ArrayModel, parse_cell_coadd
from ...psf import CellPointSpreadFunction
from ...stored import StoredArchive
from ..fits.reader import coadd_from_model

__all__ = ["MAX_JSON_BYTES", "read_json"]

MAX_JSON_BYTES = 1 << 30
"""Largest JSON archive (decompressed) this reader accepts."""


def _inline(array: ArrayModel, url: str, path: str) -> np.ndarray:
    if array.inline is None:
        raise ArchiveFormatError(
            f"array {path} references {array.source!r}; a JSON archive must hold it inline", url=url, hdu=path
        )
    try:
        out = np.array(array.inline, dtype=array.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ArchiveFormatError(
            f"array {path} does not hold {array.datatype} values: {exc}", url=url, hdu=path
        ) from None
    if out.dtype == object or out.shape != tuple(array.shape):
        raise ArchiveFormatError(f"array {path} is ragged or mis-shaped ({out.shape})", url=url, hdu=path)
    return out


def _read_text(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    # The first byte tells the size (Content-Range, or the file's size) without a HEAD request;
    # both reads go through the fetch layer (retries, pinning, checked lengths).
    (_,), pin = fetch_head(url, [(0, 1)], storage_options=storage_options)
    size = pin.size
    if size is not None:
        if size > MAX_JSON_BYTES:
            raise ArchiveFormatError(f"JSON archive of {size} bytes is larger than {MAX_JSON_BYTES}", url=url)
        (raw,) = fetch_ranges(url, [(0, size)], storage_options=storage_options, pin=pin)
    else:
        fs, path = filesystem(url, storage_options)
        try:
            size = fs.size(path)
            if size is not None and size > MAX_JSON_BYTES:
                raise ArchiveFormatError(f"JSON archive of {size} bytes is larger than {MAX_JSON_BYTES}", url=url)
            raw = fs.cat_file(path)
        except FileNotFoundError:
            raise FetchError(f"{shown_url(url)}: no such file.") from None
        except OSError as exc:
            raise FetchError(redact(f"{shown_url(url)}: reading failed: {exc!r}", storage_options)) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            d = zlib.decompressobj(wbits=31)
            raw = d.decompress(raw, MAX_JSON_BYTES)
            if d.unconsumed_tail:
                raise ArchiveFormatError(f"decompressed JSON archive exceeds {MAX_JSON_BYTES} bytes", url=url)
            if not d.eof:
                raise ArchiveFormatError("gzip stream ends early: truncated", url=url)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise ArchiveFormatError(f"corrupt gzip stream: {exc}", url=url) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArchiveFormatError(f"JSON archive does not parse: {exc}", url=url) from None


def _check_schema_url(tree: Any, url: str) -> None:
    # The top-level schema_url of a JSON archive says which type it holds.
    schema_url = tree.get("schema_url") if isinstance(tree, dict) else None
    if schema_url is not None and not (isinstance(schema_url, str) and "/cell_coadd-" in schema_url):
        raise ArchiveFormatError(
            f"archive holds {schema_url!r}, not a cell_coadd (top-level schema_url)", url=url, hdu="JSON"
        )


def _load_table_model(cls_path: str, tree: Mapping[str, Any], url: str) -> Any:
    def no_source(source: str) -> np.ndarray:
        raise ArchiveFormatError(f"table column references {source!r}; a JSON archive holds columns inline", url=url)

    if cls_path == "provenance":
        from ...provenance import CoaddProvenance

        return CoaddProvenance.from_json(dict(tree), no_source, url=url)
    from ...aperture import ApertureCorrections

    return ApertureCorrections.from_json(dict(tree), no_source, url=url)


def read_json(
    url: str | PathLike[str],
    *,
    bbox: Box | None = None,
    chunks: Chunks = "auto",
    storage_options: Mapping[str, Any] | None = None,
) -> CellCoadd:
    """Read an lsst-images ``cell_coadd`` JSON archive.

    Raises
    ------
    ArchiveFormatError
        If the file is not a valid ``cell_coadd`` JSON archive.
    BoundsError
        If ``bbox`` is not inside the coadd.
    """
    import dask.array as da

    url = normalize_url(url)
    tree = _read_text(url, storage_options)
    _check_schema_url(tree, url)
    model = parse_cell_coadd(tree, url=url)
    if bbox is not None and not model.image.bbox.contains(bbox):
        raise BoundsError(f"Box {bbox} is not contained in the coadd bbox {model.image.bbox} of {url}.")
    grid = model.psf.bounds.grid
    images = {}
    for name, plane in model.planes().items():
        array = _inline(plane.array, url, name)
        chunked = da.from_array(array, chunks=cell_chunks(plane.bbox, grid, chunks, array.dtype.itemsize), name=False)
        images[name] = Image(chunked, bbox=plane.bbox, unit=plane.unit)
    m = model.mask
    schema = MaskSchema([None if p is None else MaskPlane(p.name, p.description) for p in m.planes], dtype=m.dtype)
    disk = [_inline(a, url, f"mask.data[{n}]") for n, a in enumerate(m.arrays)]
    memory = disk_to_memory(disk, schema)
    mask_chunks = (*cell_chunks(m.bbox, grid, chunks, memory.dtype.itemsize), (schema.mask_size,))
    mask = Mask(da.from_array(memory, chunks=mask_chunks, name=False), schema=schema, bbox=m.bbox)
    psf_array = _inline(model.psf.array, url, "psf.array")
    psf = CellPointSpreadFunction(da.from_array(psf_array, chunks=(1, 1, -1, -1), name=False), model.psf.bounds)
    provenance = (
        None
        if model.provenance is None
        else Deferred(functools.partial(_load_table_model, "provenance", model.provenance, url))
    )
    aperture = (
        None
        if model.aperture_corrections is None
        else Deferred(functools.partial(_load_table_model, "aperture_corrections", model.aperture_corrections, url))
    )
    coadd = coadd_from_model(
        model, images=images, mask=mask, psf=psf, provenance=provenance, aperture_corrections=aperture, url=url,
        stored=StoredArchive(url, tree),
    )
    return coadd if bbox is None else coadd[bbox]
