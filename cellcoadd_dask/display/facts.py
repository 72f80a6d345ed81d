"""The facts the displays show, gathered from metadata without I/O: geometry, cells, sky, storage, mask.

Shared by :mod:`cellcoadd_dask.display` (coadds, planes, masks, PSFs) and
:mod:`cellcoadd_dask.display.dataset` (Datasets).  Everything here is either
part of the model (boxes, grids, units, dtypes, chunks, the mask schema, the sky projection)
or something the archive reader already holds: the FITS INDEX read at open gives each HDU's
extent; a plane's compression is known once its header has been read (by a pixel read or
:meth:`~cellcoadd_dask.CellCoadd.load_metadata`); tables read on first access (provenance,
aperture corrections) are described from the JSON tree until then.  What is not known is
shown as ``—``.  URLs are shown without password or query string.

Boxes are absolute (tract) pixels, ``(y, x)``, half-open.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .render import GridMap, Table

if TYPE_CHECKING:
    from ..cells import CellGridBounds, PatchDefinition
    from ..geom import Box
    from ..mask import MaskSchema

__all__ = [
    "NA",
    "TIMES",
    "StorageFacts",
    "bbox_text",
    "box_text",
    "cell_map",
    "cells_fields",
    "chunks_text",
    "is_cutout",
    "mask_fields",
    "mask_table",
    "origin_source",
    "plural",
    "shape_text",
    "size_text",
    "sky_fields",
    "storage_facts",
    "unit_text",
]

NA = "—"
"""Shown for what is not known without reading more of the archive."""

TIMES = "\N{MULTIPLICATION SIGN}"
"""Between the sizes of a shape."""

Field = tuple[str, str]


# ----------------------------------------------------------------------------------- formatting
def size_text(n: float) -> str:
    """A byte count in binary units (``311.0 KiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def box_text(box: Box) -> str:
    """A box with its size: ``[y=0:450, x=0:450]  (450 x 450 px)`` (with a multiplication sign)."""
    return f"{box}  ({box.y.size} {TIMES} {box.x.size} px)"


def bbox_text(box: Box) -> str:
    """A coadd's or Dataset's bbox, its size and the coordinate convention."""
    return f"{box}  {shape_text(box.shape)} px; absolute tract pixels, (y, x), half-open"


def unit_text(unit: Any) -> str:
    """An astropy unit as a string, or ``—``."""
    return NA if unit is None else (unit.to_string() or "dimensionless")


def shape_text(shape: Iterable[int]) -> str:
    """``(450, 450)`` as ``450 x 450`` (with a multiplication sign)."""
    return f" {TIMES} ".join(str(int(n)) for n in shape)


def plural(n: int, word: str) -> str:
    """``1 chunk``, ``2 chunks``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def chunks_text(chunks: Sequence[Sequence[int]], cell_shape: Sequence[int] | None = None) -> str:
    """Largest chunk along (y, x), in cells when the cell shape is known, and the number of chunks."""
    cy, cx = (max(c) for c in chunks[:2])
    count = math.prod(len(c) for c in chunks[:2])
    if cell_shape is not None:
        ny, nx = -(-cy // cell_shape[0]), -(-cx // cell_shape[1])
        per = f"{ny} {TIMES} {nx} cells per chunk ({cy} {TIMES} {cx} px)"
    else:
        per = f"{cy} {TIMES} {cx} px per chunk"
    return f"{per}, {plural(count, 'chunk')}"


def sky_fields(projection: Any, bbox: Box) -> list[Field]:
    """Sky position of the centre of ``bbox``, the pixel scale there and the field size.

    Evaluates the projection (metadata); a projection that cannot be evaluated is reported,
    never raised, since a display must not fail.
    """
    yc = (bbox.y.start + bbox.y.stop - 1) / 2
    xc = (bbox.x.start + bbox.x.stop - 1) / 2
    try:
        sky = projection.pixel_to_sky(x=np.array([xc, xc + 1, xc]), y=np.array([yc, yc, yc + 1]))
        ra, dec = float(sky.ra.deg[0]), float(sky.dec.deg[0])
        if not (math.isfinite(ra) and math.isfinite(dec)):
            return [("centre", "outside the projection's valid region")]
        scale = float((sky[0].separation(sky[1]).arcsec + sky[0].separation(sky[2]).arcsec) / 2)
        sexagesimal = sky[0].to_string("hmsdms", precision=1, sep=":")
    except Exception as exc:  # a display reports a broken projection, never fails
        return [("centre", f"unavailable ({type(exc).__name__})")]
    return [
        ("centre (ICRS)", f"RA {ra:.6f}°, Dec {dec:+.6f}°  ({sexagesimal})  at (y={yc:g}, x={xc:g})"),
        ("pixel scale", f"{scale:.4f} arcsec/px; field {bbox.y.size * scale / 60:.2f} {TIMES} "
                        f"{bbox.x.size * scale / 60:.2f} arcmin"),
    ]


def cell_map(bounds: CellGridBounds, patch: PatchDefinition | None = None) -> GridMap:
    """Map of a cell grid: cells with data, missing cells, cells outside the bounds.

    The map spans the whole grid (a patch's cells) when it has at most 64 cells a side,
    else only the bounds; the patch's inner region is outlined.
    """
    grid = bounds.grid
    a, b = bounds.subgrid_start, bounds.subgrid_stop
    gy, gx = grid.shape
    if max(gy, gx) <= 64:
        (i0, j0), (i1, j1) = (0, 0), (gy, gx)
    else:
        (i0, j0), (i1, j1) = (a.i, a.j), (b.i, b.j)
    states = []
    for i in range(i0, i1):
        row = []
        for j in range(j0, j1):
            inside = a.i <= i < b.i and a.j <= j < b.j
            row.append("outside" if not inside else "missing" if _is_missing(bounds, i, j) else "data")
        states.append(tuple(row))
    present = {s for row in states for s in row}
    legend = {k: v for k, v in (("data", "cells with data"), ("missing", "missing cells"),
                                ("outside", "outside the bbox")) if k in present}
    outline = None
    if patch is not None and patch.cells.bbox == grid.bbox:
        inner, cy, cx = patch.inner_bbox, grid.cell_shape.y, grid.cell_shape.x
        y0, x0 = grid.bbox.y.start, grid.bbox.x.start
        outline = (
            (inner.y.start - y0) // cy - i0, (inner.x.start - x0) // cx - j0,
            -(-(inner.y.stop - y0) // cy) - i0, -(-(inner.x.stop - x0) // cx) - j0,
        )
    return GridMap(tuple(states), (i0, j0), legend, outline=outline, outline_label="patch inner region")


def _is_missing(bounds: CellGridBounds, i: int, j: int) -> bool:
    from ..cells import CellIJ

    return CellIJ(i, j) in bounds.missing


def cells_fields(bounds: CellGridBounds) -> list[Field]:
    """Cell shape, grid, the cells the bounds cover and which of them are missing."""
    grid = bounds.grid
    size = bounds.subgrid_size
    total = size.i * size.j
    missing = sorted(bounds.missing)
    shown = ", ".join(str(c) for c in missing[:12]) + (" …" if len(missing) > 12 else "")
    a, b = bounds.subgrid_start, bounds.subgrid_stop
    return [
        ("cell shape", f"{grid.cell_shape.y} {TIMES} {grid.cell_shape.x} px"),
        ("cell grid", f"{grid.bbox}  ({grid.shape.y} {TIMES} {grid.shape.x} cells)"),
        ("cells in bbox", f"i {a.i}:{b.i}, j {a.j}:{b.j}  ({size.i} {TIMES} {size.j} = {total} cells)"),
        ("with data", f"{total - len(missing)} of {total}"),
        ("missing", f"{len(missing)}: {shown}" if missing else "none"),
    ]


# ----------------------------------------------------------------------------------- storage
@dataclass(frozen=True)
class StorageFacts:
    """Where a plane is stored and what the reader knows of it (``—`` when unknown)."""

    where: str = NA
    size: str = NA
    compression: str = NA


def _fits_compression(source: Any) -> str:
    from ..archives.fits.tiles import TiledArray

    # Loaded by the first pixel read or load_metadata(); looking never triggers a read.
    layouts = source.loaded_layouts
    if layouts is None:
        kinds = {r.entry.compressed for r in source.refs}
        if kinds == {False}:
            return "none"
        return f"tile-compressed, codec {NA}"
    out = []
    for layout in layouts:
        if isinstance(layout, TiledArray):
            codec = layout.codec
            text = codec.algorithm
            if codec.quantize is not None:
                text += f", quantized ({codec.quantize}, seed {codec.zdither0})"
            else:
                text += ", lossless"
            text += f", tiles {shape_text(layout.tile_shape)}"
        else:
            text = "none"
        if text not in out:
            out.append(text)
    return "; ".join(out)


def _codec_names(codecs: Any, names: list[str]) -> None:
    for codec in codecs:
        spec: Any = codec.to_dict() if hasattr(codec, "to_dict") else {}
        name = str(spec.get("name", type(codec).__name__)) if isinstance(spec, Mapping) else type(codec).__name__
        if name == "sharding_indexed":  # the codecs of the chunks inside each shard
            if "sharded" not in names:
                names.append("sharded")
            _codec_names(getattr(codec, "codecs", ()), names)
        # "bytes" only lays the array out as bytes: not a compression.
        elif name not in names and name != "bytes":
            names.append(name)


def _zarr_compression(source: Any) -> str:
    arrays = getattr(source, "opened_arrays", None)
    if arrays is None:
        return NA
    names: list[str] = []
    for array in arrays:
        _codec_names(getattr(array.metadata, "codecs", ()), names)
    return ", ".join(names) or "none"


def storage_facts(source: Any, archive: Any) -> StorageFacts:
    """What the reader of ``archive`` knows, without I/O, of the stored array behind ``source``.

    Parameters
    ----------
    source
        The whole stored array's source (``PlaneOrigin.source``, or a PSF's origin source),
        or ``None`` when the plane has no lazily indexed source.
    archive
        The coadd's :class:`~cellcoadd_dask.stored.StoredArchive`, or ``None``.
    """
    import sys

    fits = sys.modules.get("cellcoadd_dask.archives.fits.source")
    zarr = sys.modules.get("cellcoadd_dask.archives.zarr.reader")
    if fits is not None and isinstance(source, fits.FitsArraySource):
        entries = [r.entry for r in source.refs]
        stored = sum(e.datsize for e in entries)
        raw = sum(math.prod(r.shape) * np.dtype(r.dtype).itemsize for r in source.refs)
        # A tiny HDU is padded to whole FITS blocks: a ratio below 1 says nothing of its codec.
        ratio = f" ({raw / stored:.1f}:1)" if entries[0].compressed and raw > stored > 0 else ""
        return StorageFacts(
            ", ".join(f"HDU {e.label}" for e in entries), f"{size_text(stored)}{ratio}", _fits_compression(source)
        )
    if zarr is not None and isinstance(source, zarr.ZarrArraySource):
        return StorageFacts(", ".join(f"zarr:{p}" for p in source.paths), NA, _zarr_compression(source))
    inline = sys.modules.get("cellcoadd_dask.archives.input")
    if inline is not None and isinstance(source, inline.InMemorySource):
        kind = archive.format.upper() if archive is not None and archive.format else "in memory"
        return StorageFacts(f"inline ({kind})", NA, "none")
    return StorageFacts()


def origin_source(plane: Any) -> Any:
    """The source of the whole stored array an image or mask reads through, or ``None``."""
    origin = getattr(plane, "origin", None)
    return None if origin is None else origin.source


def is_cutout(plane: Any) -> bool:
    """Whether an image or mask covers only part of its stored array."""
    origin = getattr(plane, "origin", None)
    return origin is not None and origin.bbox != plane.bbox


# ----------------------------------------------------------------------------------- mask
def mask_table(schema: MaskSchema, packed: bool = False) -> Table:
    """The mask planes: bit (schema position), name, stored position and description.

    ``packed``: the mask is stored as one packed array (schema bit ``n`` at bit ``n``), not
    as int32 arrays of 31 planes.
    """
    disk = schema.disk_positions()
    rows = []
    for k, name in enumerate(schema.names):
        d_arr, d_bit, _, _ = disk[k]
        label = "MASK" if d_arr == 0 else f"MASK,{d_arr + 1}"
        stored = f"mask bit {schema.index(name)}" if packed else f"{label} bit {d_bit}"
        rows.append((str(schema.index(name)), name, stored, schema.descriptions()[name] or NA))
    reserved = len(schema) - len(schema.names)
    note = f"{plural(reserved, 'reserved bit')} not listed." if reserved else ""
    return Table(("bit", "name", "stored as", "description"), tuple(rows), note)


def mask_fields(schema: MaskSchema, packed: bool = False) -> list[Field]:
    """Plane count and the in-memory and stored layouts of a mask schema (see :func:`mask_table`)."""
    stored = (f"one packed {schema.packed_dtype} array" if packed
              else plural(schema.n_disk_arrays, "int32 array"))
    return [
        ("planes", f"{len(schema.names)} named, {len(schema)} bits"),
        ("layout", f"{schema.mask_size} {TIMES} {schema.dtype} per pixel in memory (bit n: element n // "
                   f"{schema.bits_per_element}); {stored} on disk"),
    ]
