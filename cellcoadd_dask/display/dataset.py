"""Summaries of cell-coadd Datasets (``ds.cellcoadd.summary()``) from their attrs and coordinates.

Two kinds of Dataset carry what a summary needs in their ``attrs``: the view of one coadd
(:meth:`~cellcoadd_dask.CellCoadd.to_xarray`, the ``cellcoadd`` engine), with its cell
bounds and patch, and a tract (:func:`~cellcoadd_dask.open_tract`), with its patches and
cell grid.  Only attrs, coordinate indexes, dtypes, shapes and dask chunk sizes are looked
at: no variable is read, whether it is a dask array or lazily indexed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import shown_url
from ..geom import Box, Interval
from .facts import NA, TIMES, bbox_text, box_text, cell_map, cells_fields, shape_text, sky_fields
from .render import GridMap, Report, Section, Table, to_html, to_text

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["DatasetSummary", "dataset_report"]

Field = tuple[str, str]


class DatasetSummary:
    """What a cell-coadd Dataset holds, ready to display (``_repr_html_``) or print (:meth:`describe`).

    Built by ``ds.cellcoadd.summary()``; it keeps the report only, not the Dataset.
    """

    def __init__(self, report: Report) -> None:
        self.report = report

    def describe(self) -> str:
        """The summary as plain text."""
        return to_text(self.report)

    def _repr_html_(self) -> str:
        return to_html(self.report)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"<DatasetSummary: {self.report.kind} {self.report.headline}>"


def _box(ds: xr.Dataset) -> Box | None:
    try:
        y, x = ds.indexes["y"], ds.indexes["x"]
    except KeyError:
        return None
    if len(y) == 0 or len(x) == 0:
        return None
    return Box(Interval(int(y[0]), int(y[-1]) + 1), Interval(int(x[0]), int(x[-1]) + 1))


def _chunks(var: xr.DataArray) -> str:
    if var.chunks is None:
        return "lazily indexed (not chunked)"
    sizes = var.chunksizes
    largest = f" {TIMES} ".join(str(max(sizes[d])) for d in var.dims)
    count = 1
    for d in var.dims:
        count *= len(sizes[d])
    return f"{largest} ({count} chunk{'' if count == 1 else 's'})"


def variables_table(ds: xr.Dataset) -> Table:
    """Data variables with dims, shape, dtype, units and chunks (no data is touched)."""
    rows = []
    for name, var in ds.data_vars.items():
        rows.append((str(name), f"({', '.join(str(d) for d in var.dims)})", shape_text(var.shape), str(var.dtype),
                     str(var.attrs.get("units") or NA), _chunks(var)))
    return Table(("variable", "dims", "shape", "dtype", "units", "chunks"), tuple(rows))


def mask_table_from_attrs(attrs: Mapping[str, Any]) -> Table | None:
    """The mask planes from the CF ``flag_masks``/``flag_meanings`` attrs and their descriptions."""
    names = str(attrs.get("flag_meanings", "")).split()
    masks = list(attrs.get("flag_masks", []))
    if not names or len(masks) != len(names):
        return None
    try:
        descriptions = json.loads(attrs.get("flag_descriptions", "{}"))
    except ValueError:
        descriptions = {}
    rows = tuple(
        (str(int(m).bit_length() - 1), name, f"0x{int(m):x}", str(descriptions.get(name) or NA))
        for name, m in zip(names, masks, strict=True)
    )
    return Table(("bit", "name", "flag value", "description"), rows)


def _projection(attrs: Mapping[str, Any]) -> Any:
    from ..projection import SkyProjection

    try:
        return SkyProjection.from_json(json.loads(attrs["sky_projection"]))
    except Exception:  # a summary shows what it can
        return None


def _patch_map(indices: Sequence[Sequence[int]]) -> GridMap:
    present = {(int(y), int(x)) for y, x in indices}
    ny = max(y for y, _ in present) + 1
    nx = max(x for _, x in present) + 1
    states = tuple(tuple("present" if (y, x) in present else "absent" for x in range(nx)) for y in range(ny))
    legend = {"present": "patches given"}
    if len(present) < ny * nx:
        legend["absent"] = "not given (fill values, NO_DATA)"
    return GridMap(states, (0, 0), legend, element=("patch", "y", "x"))


def _tract_sections(ds: xr.Dataset, projection: Any) -> tuple[list[Field], list[Section]]:
    attrs = ds.attrs
    fields: list[Field] = []
    if projection is not None:
        fields.append(("tract frame", box_text(projection.tract_bbox)))
    try:
        grid = json.loads(attrs["cell_grid"])
        gb = grid["bbox"]
        fields.append(("cell grid", f"[y={gb['y']['start']}:{gb['y']['stop']}, x={gb['x']['start']}:{gb['x']['stop']}]"
                                    f", cells {grid['cell_shape']['y']} {TIMES} {grid['cell_shape']['x']} px"))
    except (KeyError, TypeError, ValueError):
        pass
    try:
        indices = json.loads(attrs["patch_indices"])
    except (KeyError, ValueError):
        return fields, []
    ids = list(attrs.get("patches", []))
    urls = list(attrs.get("urls", []))
    rows = tuple(
        (str(ids[n]) if n < len(ids) else NA, f"(y={y}, x={x})", shown_url(urls[n]) if n < len(urls) else NA)
        for n, (y, x) in enumerate(indices)
    )
    patches = Section(
        f"Patches ({len(indices)})",
        tables=(Table(("id", "index", "source"), rows),),
        grid_map=_patch_map(indices) if indices else None,
    )
    return fields, [patches]


def _coadd_view_sections(ds: xr.Dataset) -> tuple[list[Field], list[Section]]:
    from ..model import bounds_from_json, patch_from_json

    attrs = ds.attrs
    fields: list[Field] = []
    patch = None
    if "patch_definition" in attrs:
        try:
            patch = patch_from_json(json.loads(attrs["patch_definition"]))
            fields.append(("patch", f"id {patch.id}, index (y={patch.index.y}, x={patch.index.x}), "
                                    f"inner bbox {patch.inner_bbox}"))
        except Exception:  # a summary shows what it can
            patch = None
    if "source_url" in attrs:
        fields.append(("source", shown_url(attrs["source_url"])))
    try:
        bounds = bounds_from_json(json.loads(attrs["cell_bounds"]))
    except Exception:
        return fields, []
    box = _box(ds)
    if box is not None and bounds.bbox.contains(box) and box != bounds.bbox:
        bounds = bounds[box]
    return fields, [Section("Cells", tuple(cells_fields(bounds)), grid_map=cell_map(bounds, patch))]


def dataset_report(ds: xr.Dataset) -> Report:
    """Describe a Dataset made by ``coadd.to_xarray()``, the ``cellcoadd`` engine or :func:`open_tract`."""
    attrs = ds.attrs
    is_tract = "patch_indices" in attrs
    band = str(attrs.get("band") or NA)
    box = _box(ds)
    projection = _projection(attrs)
    fields: list[Field] = [
        ("band", band),
        ("skymap, tract", f"{attrs.get('skymap', NA)}, {attrs.get('tract', NA)}"),
        ("bbox", bbox_text(box) if box is not None else "empty"),
    ]
    if "cell_shape" in attrs:
        cy, cx = attrs["cell_shape"]
        fields.append(("cell shape", f"{cy} {TIMES} {cx} px"))
    if projection is not None and box is not None:
        fields += sky_fields(projection, box)
    extra_fields, sections = _tract_sections(ds, projection) if is_tract else _coadd_view_sections(ds)
    fields += extra_fields
    if "fraction" in ds.coords:
        fields.append(("mask fractions", ", ".join(str(v) for v in ds.indexes["fraction"])))
    if "realization" in ds.coords:
        fields.append(("noise realizations", str(ds.sizes["realization"])))
    sections.append(Section(f"Variables ({len(ds.data_vars)})", tables=(variables_table(ds),)))
    mask = mask_table_from_attrs(ds["mask"].attrs) if "mask" in ds.data_vars else None
    if mask is not None:
        sections.append(Section(f"Mask planes ({len(mask.rows)})", tables=(mask,), open=len(mask.rows) <= 16))
    kind = "Tract" if is_tract else "CellCoadd Dataset"
    headline = f"band {band} · tract {attrs.get('tract', NA)} ({attrs.get('skymap', NA)})"
    if is_tract:
        headline += f" · {len(attrs.get('patches', []))} patches"
    elif "patch" in attrs:
        headline += f" · patch {attrs['patch']}"
    if box is not None:
        headline += f" · {shape_text(box.shape)} px"
    return Report(kind, headline, tuple(fields), tuple(sections))
