"""Rich display of coadds, planes, masks and PSFs from metadata alone: never a pixel, never a request.

``_repr_html_()`` and ``describe()`` of :class:`~cellcoadd_dask.CellCoadd`,
:class:`~cellcoadd_dask.Image`, :class:`~cellcoadd_dask.Mask` and
:class:`~cellcoadd_dask.CellPointSpreadFunction` build a :class:`~.display.render.Report`
here, from the facts of :mod:`cellcoadd_dask.display.facts`, and lay it out with
:mod:`cellcoadd_dask.display.render`.  Nothing is read: the FITS INDEX read at open gives
each HDU's extent; a plane's compression is known once its header has been read (by a pixel
read or :meth:`~cellcoadd_dask.CellCoadd.load_metadata`); tables read on first access
(provenance, aperture corrections) are described from the JSON tree until then.  What is not
known is shown as ``—``.  URLs are shown without password or query string.

Boxes are absolute (tract) pixels, ``(y, x)``, half-open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..deferred import Deferred
from ..errors import shown_url
from .facts import (
    NA,
    TIMES,
    bbox_text,
    box_text,
    cell_map,
    cells_fields,
    chunks_text,
    is_cutout,
    mask_fields,
    mask_table,
    origin_source,
    plural,
    shape_text,
    size_text,
    sky_fields,
    storage_facts,
    unit_text,
)
from .render import Report, Section, Table

if TYPE_CHECKING:
    from ..cells import CellGrid
    from ..coadd import CellCoadd
    from ..image import Image
    from ..mask import Mask
    from ..psf import CellPointSpreadFunction

__all__ = ["coadd_report", "image_report", "mask_report", "psf_report"]

Field = tuple[str, str]

def image_report(image: Image, name: str = "") -> Report:
    """Describe an :class:`~cellcoadd_dask.Image` (no pixel is read)."""
    facts = storage_facts(origin_source(image), None)
    fields = [
        ("bbox", box_text(image.bbox)),
        ("dtype", str(image.dtype)),
        ("unit", unit_text(image.unit)),
        ("chunks", chunks_text(image.array.chunks)),
        ("stored as", facts.where),
        ("on storage", facts.size + (" (whole stored array)" if is_cutout(image) and facts.size != NA else "")),
        ("compression", facts.compression),
    ]
    return Report("Image", f"{name + ' · ' if name else ''}{shape_text(image.bbox.shape)} {image.dtype}", tuple(fields))


def mask_report(mask: Mask) -> Report:
    """Describe a :class:`~cellcoadd_dask.Mask`: its planes, layout and storage."""
    facts = storage_facts(origin_source(mask), None)
    fields = [
        ("bbox", box_text(mask.bbox)),
        ("dtype", f"{mask.schema.dtype}, shape {shape_text(mask.array.shape)} (y, x, element)"),
        *mask_fields(mask.schema, mask.stored_packed),
        ("chunks", chunks_text(mask.array.chunks)),
        ("stored as", facts.where),
        ("on storage", facts.size),
        ("compression", facts.compression),
    ]
    section = Section(f"Mask planes ({len(mask.schema.names)})", tables=(mask_table(mask.schema, mask.stored_packed),),
                      open=len(mask.schema.names) <= 16)
    return Report("Mask", f"{len(mask.schema.names)} planes · {shape_text(mask.bbox.shape)}", tuple(fields), (section,))


def psf_report(psf: CellPointSpreadFunction) -> Report:
    """Describe a :class:`~cellcoadd_dask.CellPointSpreadFunction`: kernel, cell bounds and missing cells."""
    source = psf.origin[0] if psf.origin is not None else None
    facts = storage_facts(source, None)
    ky, kx = psf.array.shape[2:]
    fields = [
        ("kernel", f"{ky} {TIMES} {kx} px, bbox {psf.kernel_bbox} (centred on 0), {psf.array.dtype}"),
        ("bounds", box_text(psf.bounds.bbox)),
        ("stored as", facts.where),
        ("on storage", facts.size),
        ("compression", facts.compression),
    ]
    cells = Section("Cells", tuple(cells_fields(psf.bounds)), grid_map=cell_map(psf.bounds))
    size = psf.bounds.subgrid_size
    return Report("CellPointSpreadFunction", f"{size.i} {TIMES} {size.j} cells · {ky} {TIMES} {kx} px kernels",
                  tuple(fields), (cells,))


def _table_chunks(chunks: Sequence[Sequence[int]], grid: CellGrid) -> str:
    cy, cx = (max(c) for c in chunks[:2])
    count = math.prod(len(c) for c in chunks[:2])
    return f"{-(-cy // grid.cell_shape.y)} {TIMES} {-(-cx // grid.cell_shape.x)} cells ({plural(count, 'chunk')})"


def _plane_row(name: str, plane: Any, grid: CellGrid, archive: Any) -> tuple[str, ...]:
    facts = storage_facts(origin_source(plane), archive)
    return (
        name, str(plane.array.dtype), unit_text(getattr(plane, "unit", None)), shape_text(plane.array.shape),
        _table_chunks(plane.array.chunks, grid),
        facts.where, facts.size, facts.compression,
    )


def planes_table(coadd: CellCoadd) -> Table:
    """Every plane of a coadd with dtype, unit, shape, chunks and what is known of its storage."""
    grid, archive = coadd.grid, coadd.stored
    rows = [
        _plane_row("image", coadd.image, grid, archive),
        _plane_row("variance", coadd.variance, grid, archive),
        _plane_row("mask", coadd.mask, grid, archive),
    ]
    rows += [_plane_row(f"mask_fractions/{k}", v, grid, archive) for k, v in coadd.mask_fractions.items()]
    rows += [_plane_row(f"noise_realizations/{n}", v, grid, archive) for n, v in enumerate(coadd.noise_realizations)]
    psf = coadd.psf
    facts = storage_facts(psf.origin[0] if psf.origin is not None else None, archive)
    rows.append(("psf", str(psf.array.dtype), NA, shape_text(psf.array.shape), "1 cell (1 kernel per chunk)",
                 facts.where, facts.size, facts.compression))
    notes = ["Chunks: the largest chunk, in cells."]
    if any(f"codec {NA}" in row[-1] for row in rows):
        notes.append(f"Compression {NA}: in the HDU header, read with the plane's first pixels or load_metadata().")
    if is_cutout(coadd.image):
        notes.append("Sizes on storage are of the whole stored arrays; a read fetches only the tiles it touches.")
    note = " ".join(notes)
    return Table(("plane", "dtype", "unit", "shape", "chunks", "stored as", "on storage", "compression"),
                 tuple(rows), note)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _loaded(value: Any) -> Any:
    """The value when it is in memory (never loads a :class:`Deferred`), else ``None``."""
    if isinstance(value, Deferred):
        return value.get() if value.loaded else None
    return value


def _tables_fields(coadd: CellCoadd) -> list[Field]:
    tree: Mapping[str, Any] = coadd.stored.tree if coadd.stored is not None else {}
    held = coadd.deferred_fields  # never reads a deferred table
    out: list[Field] = []
    aperture = _loaded(held["aperture_corrections"])
    names: list[str] | None = list(aperture.names) if aperture is not None else None
    if names is None and isinstance(tree.get("aperture_corrections"), Mapping):
        columns = tree["aperture_corrections"].get("table", {}).get("columns", [])
        names = [c.get("name", "?") for c in columns if c.get("name") not in ("cell_i", "cell_j")]
    if names is not None:
        out.append(("aperture corrections", f"{len(names)}: {', '.join(names)}" if names else "none"))
    elif held["aperture_corrections"] is None:
        out.append(("aperture corrections", "none"))
    else:
        out.append(("aperture corrections", f"{NA} (not read yet)"))
    provenance = _loaded(held["provenance"])
    prov_tree = tree.get("provenance")
    if provenance is not None:
        out.append(("provenance", f"{len(provenance.inputs)} input images, {len(provenance.contributions)} "
                                  "cell contributions"))
    elif held["provenance"] is None:
        out.append(("provenance", "none"))
    elif isinstance(prov_tree, Mapping):
        out.append(("provenance", f"instrument {prov_tree.get('instrument', NA)}, physical filter "
                                  f"{prov_tree.get('physical_filter', NA)} (tables not read yet)"))
    else:
        out.append(("provenance", f"{NA} (not read yet)"))
    backgrounds = _loaded(held["backgrounds"])
    if backgrounds is not None and len(backgrounds):
        kinds = ", ".join(f"{n} ({backgrounds.field_type(n)})" for n in backgrounds.names)
        subtracted = backgrounds.subtracted
        out.append(("backgrounds", kinds + (f"; subtracted: {subtracted}" if subtracted else "; none subtracted")))
    elif backgrounds is not None or held["backgrounds"] is None:
        out.append(("backgrounds", "none"))
    else:
        out.append(("backgrounds", f"{NA} (not read yet)"))
    return out


def _source_text(coadd: CellCoadd) -> str:
    url = coadd.source_url
    if url is None:
        return "in memory"
    archive = coadd.stored
    extra = []
    if archive is not None:
        if archive.format:
            extra.append(f"{archive.format.upper() if archive.format != 'zarr' else 'Zarr'} archive")
        size = getattr(archive.pin, "size", None)
        if size is not None:
            extra.append(size_text(size))
    return shown_url(url) + (f"  ({', '.join(extra)})" if extra else "")


def coadd_report(coadd: CellCoadd) -> Report:
    """Describe a :class:`~cellcoadd_dask.CellCoadd` from its metadata (no pixel, table or header is read)."""
    patch = coadd.patch_definition
    band = coadd.band if coadd.band is not None else NA
    headline = f"band {band} · tract {coadd.tract} ({coadd.skymap})"
    if patch is not None:
        headline += f" · patch {patch.id}"
    headline += f" · {shape_text(coadd.bbox.shape)} px"
    fields: list[Field] = [
        ("band", band),
        ("skymap, tract", f"{coadd.skymap}, {coadd.tract}"),
        ("patch", NA if patch is None else f"id {patch.id}, index (y={patch.index.y}, x={patch.index.x}), "
                                           f"inner bbox {patch.inner_bbox}"),
        ("bbox", bbox_text(coadd.bbox)),
        *sky_fields(coadd.projection, coadd.bbox),
        ("unit", f"{unit_text(coadd.unit)}; variance {unit_text(coadd.variance.unit)}"),
        ("source", _source_text(coadd)),
    ]
    if coadd.metadata:
        items = [_clip(f"{k}={v}") for k, v in coadd.metadata.items()]
        fields.append(("metadata", ", ".join(items[:8]) + (f", … ({len(items)} items)" if len(items) > 8 else "")))
    schema = coadd.mask.schema
    planes = planes_table(coadd)
    sections = (
        Section("Cells", tuple(cells_fields(coadd.bounds)), grid_map=cell_map(coadd.bounds, patch)),
        Section(f"Planes ({len(planes.rows)})", tables=(planes,)),
        Section(f"Mask planes ({len(schema.names)})", tuple(mask_fields(schema, coadd.mask.stored_packed)),
                tables=(mask_table(schema, coadd.mask.stored_packed),),
                open=len(schema.names) <= 16),
        Section("PSF", (("kernel", f"{shape_text(coadd.psf.array.shape[2:])} px, bbox {coadd.psf.kernel_bbox}, "
                                   f"{coadd.psf.array.dtype}, one per cell"),), open=False),
        Section("Tables and models", tuple(_tables_fields(coadd)), open=False),
    )
    return Report("CellCoadd", headline, tuple(fields), sections)
