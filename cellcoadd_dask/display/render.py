"""Render a :class:`Report` as plain text (terminals) or as HTML (notebooks).

A report is plain data: a headline, labelled values, and sections holding more values,
tables and at most one map of cells or patches.  :mod:`cellcoadd_dask.display` builds
reports from metadata; this module only lays them out.  Every string reaching the HTML
is escaped with :func:`html.escape`; the HTML holds no script, its styles are one small
``<style>`` block scoped to the ``ccd-repr`` class, and its colours read on light and
dark notebook themes (text colours are inherited, greys are translucent).
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["GridMap", "Report", "Section", "Table", "to_html", "to_text"]

Field = tuple[str, str]


@dataclass(frozen=True)
class Table:
    """A table of strings: a header row, rows of the same length, and an optional note below."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class GridMap:
    """A small map of a grid of cells (or patches), drawn with y upwards.

    Attributes
    ----------
    states
        ``states[r][c]``: the state of the element at row ``r`` (counted upwards from
        ``start[0]``) and column ``c`` (counted from ``start[1]``); a key of ``legend``.
    start
        Index of the first row and column (cell ``(i, j)`` or patch ``(y, x)``).
    legend
        State -> what it means, in legend order.
    element
        What an element is (``"cell"``, ``"patch"``) and the names of its row and column
        indices, for labels and tooltips.
    outline
        ``(r0, c0, r1, c1)``: a half-open block of the map to outline (a patch's inner
        region), or ``None``.
    outline_label
        What the outline shows.
    """

    states: tuple[tuple[str, ...], ...]
    start: tuple[int, int]
    legend: Mapping[str, str]
    element: tuple[str, str, str] = ("cell", "i", "j")
    outline: tuple[int, int, int, int] | None = None
    outline_label: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns."""
        return len(self.states), (len(self.states[0]) if self.states else 0)


@dataclass(frozen=True)
class Section:
    """A titled part of a report; ``open`` says whether the HTML shows it unfolded."""

    title: str
    fields: tuple[Field, ...] = ()
    tables: tuple[Table, ...] = ()
    grid_map: GridMap | None = None
    open: bool = True


@dataclass(frozen=True)
class Report:
    """What to show about one object."""

    kind: str
    headline: str
    fields: tuple[Field, ...] = ()
    sections: tuple[Section, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------------- map styles
_FILL = {"data": "#3f8fd2", "missing": "#e0703a", "outside": "none", "absent": "none", "present": "#3f8fd2"}
_GLYPH = {"data": "#", "present": "#", "missing": "x", "outside": ".", "absent": "."}
_GRID_STROKE = "rgba(128,128,128,0.6)"
_CELL_EDGE = "rgba(255,255,255,0.6)"
_MAX_TEXT_COLUMNS = 64
_MAX_SVG_PX = 240


def _glyph(state: str) -> str:
    return _GLYPH.get(state, "?")


# ----------------------------------------------------------------------------------- text
def _text_table(table: Table, indent: str) -> list[str]:
    rows = [table.columns, *table.rows]
    widths = [max(len(row[k]) for row in rows) for k in range(len(table.columns))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    if table.note:
        lines.append(indent + table.note)
    return lines


def _text_fields(fields: Sequence[Field], indent: str) -> list[str]:
    if not fields:
        return []
    width = max(len(label) for label, _ in fields)
    return [f"{indent}{label.ljust(width)}  {value}" for label, value in fields]


def _text_map(grid: GridMap, indent: str) -> list[str]:
    rows, cols = grid.shape
    kind, row_name, col_name = grid.element
    if cols > _MAX_TEXT_COLUMNS:
        return [f"{indent}({kind} map not drawn: {rows} x {cols} {kind}s)"]
    legend = ", ".join(f"{_glyph(state)} {text}" for state, text in grid.legend.items())
    lines = [f"{indent}{kind} map ({row_name} upwards, {col_name} across; {legend})"]
    r0, c0 = grid.start
    label_width = max(len(str(r0)), len(str(r0 + rows - 1)), len(row_name))
    lines.append(f"{indent}  {row_name.rjust(label_width)}")
    for r in range(rows - 1, -1, -1):
        cells = " ".join(_glyph(s) for s in grid.states[r])
        lines.append(f"{indent}  {str(r0 + r).rjust(label_width)}  {cells}")
    axis = [" "] * (2 * cols)
    for c in range(cols):
        if (c0 + c) % 5 == 0 or c == 0:
            label = str(c0 + c)
            if all(ch == " " for ch in axis[2 * c : 2 * c + len(label) + 1]):
                axis[2 * c : 2 * c + len(label)] = list(label)
    lines.append(f"{indent}  {' ' * label_width}  {''.join(axis).rstrip()}  {col_name}")
    return lines


def to_text(report: Report) -> str:
    """Lay a report out as plain text for a terminal (no colour, no trailing newline)."""
    lines = [f"{report.kind}  {report.headline}".rstrip()]
    lines += _text_fields(report.fields, "  ")
    for section in report.sections:
        lines.append("")
        lines.append(section.title)
        lines += _text_fields(section.fields, "  ")
        if section.grid_map is not None:
            lines += _text_map(section.grid_map, "  ")
        for table in section.tables:
            lines += _text_table(table, "  ")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- HTML
_CSS = """
.ccd-repr{font-family:var(--jp-ui-font-family,system-ui,-apple-system,"Segoe UI",sans-serif);
 font-size:13px;line-height:1.45;color:inherit;margin:2px 0}
.ccd-repr .ccd-head{padding:0 0 3px;margin-bottom:4px;border-bottom:1px solid rgba(128,128,128,.45)}
.ccd-repr .ccd-kind{font-weight:700}
.ccd-repr .ccd-headline{margin-left:.6em;opacity:.8}
.ccd-repr details{margin:3px 0 0}
.ccd-repr summary{cursor:pointer;font-weight:600;padding:1px 0}
.ccd-repr .ccd-body{display:flex;flex-wrap:wrap;gap:4px 28px;align-items:flex-start;margin:2px 0 4px 1.1em}
.ccd-repr table{border-collapse:collapse;border:none;margin:2px 0;table-layout:auto;font-size:12.5px}
.ccd-repr th,.ccd-repr td{text-align:left;vertical-align:top;padding:1px 14px 1px 0;border:none;
 white-space:nowrap;background:transparent}
.ccd-repr tr,.ccd-repr tbody tr:nth-child(odd),.ccd-repr tbody tr:hover{background:transparent}
.ccd-repr thead th{font-weight:600;opacity:.7;border-bottom:1px solid rgba(128,128,128,.35)}
.ccd-repr td.ccd-wrap{white-space:normal;min-width:16em}
.ccd-repr .ccd-kv th{font-weight:400;opacity:.7;padding-right:18px}
.ccd-repr .ccd-note{opacity:.7;font-size:12px;margin:1px 0 4px}
.ccd-repr figure{margin:2px 0;display:flex;gap:12px;align-items:flex-start}
.ccd-repr figcaption{font-size:12px;opacity:.85;line-height:1.6}
.ccd-repr .ccd-sw{display:inline-block;width:.8em;height:.8em;vertical-align:-1px;margin-right:5px;
 border:1px solid rgba(128,128,128,.7)}
.ccd-repr .ccd-out{display:inline-block;width:.8em;height:0;vertical-align:3px;margin-right:5px;
 border-top:2px dashed currentColor}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_fields(fields: Sequence[Field]) -> str:
    rows = "".join(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in fields)
    return f'<table class="ccd-kv"><tbody>{rows}</tbody></table>'


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    wrap = {k for k, c in enumerate(table.columns) if c == "description"}
    body = "".join(
        "<tr>"
        + "".join(f'<td class="ccd-wrap">{_e(v)}</td>' if k in wrap else f"<td>{_e(v)}</td>" for k, v in enumerate(row))
        + "</tr>"
        for row in table.rows
    )
    note = f'<div class="ccd-note">{_e(table.note)}</div>' if table.note else ""
    return f"<div><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}</div>"


def _grid_pattern(pattern_id: str, size: int, fill: str, stroke: str) -> str:
    """A cell-sized tile: ``fill`` with its top and left edges drawn, so tiled runs show cell edges."""
    back = "" if fill == "none" else f'<rect width="{size}" height="{size}" fill="{fill}"/>'
    return (
        f'<pattern id="{pattern_id}" width="{size}" height="{size}" patternUnits="userSpaceOnUse">{back}'
        f'<path d="M {size} 0 L 0 0 0 {size}" fill="none" stroke="{stroke}" stroke-width="1"/></pattern>'
    )


def _svg_runs(grid: GridMap, size: int, height: int) -> tuple[list[str], list[str]]:
    """One rectangle per run of equal, drawn states along a row (keeps big maps small), and their patterns."""
    kind, row_name, col_name = grid.element
    r0, c0 = grid.start
    out, patterns = [], {}
    for r, row in enumerate(grid.states):
        y = height - (r + 1) * size
        c = 0
        for state, run in itertools.groupby(row):
            n = len(list(run))
            fill = _FILL.get(state, "#999999")
            if fill != "none":
                pattern_id = f"ccd-{state}-{size}"
                patterns[pattern_id] = _grid_pattern(pattern_id, size, fill, _CELL_EDGE)
                cols = f"{c0 + c}" if n == 1 else f"{c0 + c}..{c0 + c + n - 1}"
                title = f"{kind} ({row_name}={r0 + r}, {col_name}={cols}): {grid.legend.get(state, state)}"
                out.append(
                    f'<rect x="{c * size}" y="{y}" width="{n * size}" height="{size}" fill="url(#{pattern_id})">'
                    f"<title>{_e(title)}</title></rect>"
                )
            c += n
    return out, list(patterns.values())


def _html_map(grid: GridMap) -> str:
    rows, cols = grid.shape
    kind, row_name, col_name = grid.element
    # Patches are few: draw them larger than cells.
    largest = 40 if kind == "patch" else 22
    size = max(3, min(largest, _MAX_SVG_PX // max(rows, cols, 1)))
    width, height = cols * size, rows * size
    runs, patterns = _svg_runs(grid, size, height)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 1}" height="{height + 1}" '
        f'viewBox="-0.5 -0.5 {width + 1} {height + 1}" role="img">',
        f"<title>{_e(kind)} map, {_e(row_name)} upwards, {_e(col_name)} across</title>",
        f"<defs>{_grid_pattern(f'ccd-grid-{size}', size, 'none', _GRID_STROKE)}{''.join(patterns)}</defs>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="url(#ccd-grid-{size})" '
        f'stroke="{_GRID_STROKE}" stroke-width="1"/>',
        *runs,
    ]
    if grid.outline is not None:
        a, b, c, d = grid.outline
        parts.append(
            f'<rect x="{b * size}" y="{height - c * size}" width="{(d - b) * size}" height="{(c - a) * size}" '
            f'fill="none" stroke="currentColor" stroke-width="1.5" stroke-dasharray="4 2">'
            f"<title>{_e(grid.outline_label)}</title></rect>"
        )
    parts.append("</svg>")
    r0, c0 = grid.start
    legend = [
        f'<span class="ccd-sw" style="background:{_FILL[state]}"></span>{_e(text)}'
        if _FILL.get(state, "none") != "none"
        else f'<span class="ccd-sw"></span>{_e(text)}'
        for state, text in grid.legend.items()
    ]
    if grid.outline is not None:
        legend.append(f'<span class="ccd-out"></span>{_e(grid.outline_label)}')
    axes = f"{_e(row_name)} {r0}..{r0 + rows - 1} upwards, {_e(col_name)} {c0}..{c0 + cols - 1} across"
    caption = "<br>".join([*legend, axes])
    return f"<figure>{''.join(parts)}<figcaption>{caption}</figcaption></figure>"


def _html_section(section: Section) -> str:
    body = []
    if section.fields:
        body.append(_html_fields(section.fields))
    if section.grid_map is not None:
        body.append(_html_map(section.grid_map))
    body += [_html_table(t) for t in section.tables]
    opened = " open" if section.open else ""
    return (
        f"<details{opened}><summary>{_e(section.title)}</summary>"
        f'<div class="ccd-body">{"".join(body)}</div></details>'
    )


def to_html(report: Report) -> str:
    """Lay a report out as a self-contained HTML fragment (no script; styles scoped to ``.ccd-repr``)."""
    css = " ".join(line.strip() for line in _CSS.strip().splitlines())
    head = (
        f'<div class="ccd-head"><span class="ccd-kind">{_e(report.kind)}</span>'
        f'<span class="ccd-headline">{_e(report.headline)}</span></div>'
    )
    top = f'<div class="ccd-body" style="margin-left:0">{_html_fields(report.fields)}</div>' if report.fields else ""
    sections = "".join(_html_section(s) for s in report.sections)
    return f'<div class="ccd-repr"><style>{css}</style>{head}{top}{sections}</div>'
