"""Coadd provenance (``coadd_provenance`` 1.0.0): which (visit, detector) images fed which cells.

Two astropy tables mirror ``lsst.images.cells.CoaddProvenance``:

- ``inputs``: one row per input image; columns in the order lsst-images gives
  after reading (``visit, detector, day_obs, instrument, physical_filter,
  polygon``).
- ``contributions``: one row per (cell, input image) (``cell_i, cell_j, visit,
  detector, overlaps_center, overlap_fraction, unmasked_fraction, weight,
  psf_shape_xx/yy/xy [pix2], psf_shape_flag, instrument``).

In storage, ``instrument`` and ``physical_filter`` are either a single JSON
string (the column is then dropped from the stored tables and re-appended at the
end on read, as lsst-images does) or a ``{name: code}`` mapping (the column stays
in place as integer codes and is decoded in place); the polygon is stored as
``n_vertices``/``x_vertices``/``y_vertices`` and rebuilt into one ``polygon``
column of :class:`Polygon` objects appended at the end.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cells import CellIJ
from .errors import ArchiveFormatError
from .model import inline_values

__all__ = [
    "CoaddProvenance",
    "GetColumn",
    "Polygon",
    "TableColumnData",
    "parse_unit",
    "read_table_columns",
]

GetColumn = Callable[[str], np.ndarray]
"""Archive callback: column ``source`` string (``"fits:PROVENANCE/INPUTS[3]"``) -> column array."""

_DATATYPES = frozenset(
    {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"}
)

_REQUIRED_INPUTS = ("visit", "detector", "day_obs")
"""Columns every ``inputs`` table stores (besides instrument, filter and polygon, decoded apart)."""
_REQUIRED_CONTRIBUTIONS = (
    "cell_i", "cell_j", "visit", "detector", "overlaps_center", "overlap_fraction", "unmasked_fraction",
    "weight", "psf_shape_xx", "psf_shape_yy", "psf_shape_xy", "psf_shape_flag",
)
"""Columns every ``contributions`` table stores (as lsst-images requires them)."""

# Descriptions lsst-images attaches to the columns that are not stored as such.
_INSTRUMENT = "Name of the instrument."
_PHYSICAL_FILTER = "Full name of the bandpass filter."
_POLYGON = ("Polygon that approximates the overlap of the observation and the coadd patch, "
            "in coadd coordinates.")
_POLYGON_COLUMNS = ("n_vertices", "x_vertices", "y_vertices")


def parse_unit(text: str, *, url: str | None = None, path: str = "unit") -> Any:
    """Parse a unit string from the tree: VOUnit first, then astropy's generic syntax.

    Raises
    ------
    ArchiveFormatError
        If neither parser accepts ``text``.
    """
    import astropy.units as u

    for fmt in ("vounit", "generic"):
        try:
            return u.Unit(text, format=fmt)
        except ValueError:
            continue
    raise ArchiveFormatError(f"unparsable unit {text!r}", url=url, hdu=path)


@dataclass(frozen=True, slots=True, eq=False)
class TableColumnData:
    """One column of a ``TableModel``: its values and the metadata the tree gives it."""

    name: str
    data: np.ndarray
    datatype: str
    description: str = ""
    unit: str | None = None
    meta: Mapping[str, Any] | None = None


def _column_values(model: Any, get_column: GetColumn, url: str | None, path: str) -> tuple[np.ndarray, str]:
    """Values of one column's array model (referenced or inline), checked against its datatype."""
    if not isinstance(model, dict):
        raise ArchiveFormatError(f"column data must be an array model, got {model!r}", url=url, hdu=path)
    datatype = model.get("datatype")
    if not isinstance(datatype, str) or datatype not in _DATATYPES:
        raise ArchiveFormatError(f"unsupported column datatype {datatype!r}", url=url, hdu=path)
    dtype = np.dtype(datatype)
    if "source" in model:
        values = np.asarray(get_column(model["source"]))
        shape = model.get("shape", [])
        if not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
            raise ArchiveFormatError(f"bad per-row shape {shape!r}", url=url, hdu=path)
        if values.dtype != dtype or values.ndim < 1 or values.shape[1:] != tuple(shape):
            raise ArchiveFormatError(
                f"column {model['source']!r} holds {values.dtype} of row shape {values.shape[1:]}, "
                f"the tree says {datatype} of row shape {tuple(shape)}", url=url, hdu=path,
            )
        return values, datatype
    if "data" in model:
        try:
            values = inline_values(model["data"], dtype)
        except ValueError as exc:
            raise ArchiveFormatError(f"inline column data is not {datatype}: {exc}",
                                     url=url, hdu=path) from None
        if values.ndim < 1:
            raise ArchiveFormatError("inline column data must be a list", url=url, hdu=path)
        return values, datatype
    raise ArchiveFormatError("column data has neither 'source' nor inline 'data'", url=url, hdu=path)


def read_table_columns(
    tree: Any, get_column: GetColumn, *, url: str | None = None, path: str = "table"
) -> list[TableColumnData]:
    """Resolve the columns of a JSON ``TableModel`` (``{"columns": [...]}``), in order.

    Parameters
    ----------
    tree
        The table model.
    get_column
        Called with each referenced column's ``source``; inline columns are decoded here.
    url, path
        Location, for error messages.

    Raises
    ------
    ArchiveFormatError
        If the model is malformed, a column's dtype or row shape disagrees with the
        tree, names repeat, or the columns differ in length.
    """
    columns = tree.get("columns") if isinstance(tree, dict) else None
    if not isinstance(columns, list):
        raise ArchiveFormatError("table model has no 'columns' list", url=url, hdu=path)
    out: list[TableColumnData] = []
    for n, column in enumerate(columns):
        where = f"{path}.columns[{n}]"
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            raise ArchiveFormatError("table column needs a string 'name'", url=url, hdu=where)
        values, datatype = _column_values(column.get("data"), get_column, url, f"{where}.data")
        description = column.get("description", "")
        unit = column.get("unit")
        meta = column.get("meta")
        if not isinstance(description, str) or not (unit is None or isinstance(unit, str)):
            raise ArchiveFormatError("column description and unit must be strings", url=url, hdu=where)
        out.append(TableColumnData(column["name"], values, datatype, description, unit or None,
                                   meta if isinstance(meta, dict) else None))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ArchiveFormatError(f"duplicate column names {names}", url=url, hdu=path)
    if len({len(c.data) for c in out}) > 1:
        raise ArchiveFormatError("table columns differ in length", url=url, hdu=path)
    return out


class Polygon:
    """Overlap polygon of an input image, in absolute (tract) pixel coordinates.

    Parameters
    ----------
    x_vertices, y_vertices
        Vertex coordinates, in order (the ring is implicitly closed).
    """

    __slots__ = ("x_vertices", "y_vertices")

    def __init__(self, *, x_vertices: Any, y_vertices: Any) -> None:
        self.x_vertices = np.array(x_vertices, dtype=np.float64)
        self.y_vertices = np.array(y_vertices, dtype=np.float64)
        self.x_vertices.flags.writeable = False
        self.y_vertices.flags.writeable = False

    @property
    def n_vertices(self) -> int:
        """Number of vertices."""
        return len(self.x_vertices)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Polygon):
            return NotImplemented
        return bool(np.array_equal(self.x_vertices, other.x_vertices)
                    and np.array_equal(self.y_vertices, other.y_vertices))

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.x_vertices, self.y_vertices)

    def __setstate__(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        self.__init__(x_vertices=state[0], y_vertices=state[1])  # type: ignore[misc]

    def __repr__(self) -> str:
        points = ", ".join(f"{x:g} {y:g}" for x, y in zip(self.x_vertices, self.y_vertices, strict=True))
        return f"Polygon(({points}))"


def _build_table(columns: list[TableColumnData], url: str | None, path: str) -> Any:
    import astropy.table

    table = astropy.table.Table()
    for c in columns:
        unit = parse_unit(c.unit, url=url, path=f"{path}.{c.name}.unit") if c.unit else None
        table[c.name] = astropy.table.Column(c.data, name=c.name, description=c.description or None,
                                             unit=unit, meta=dict(c.meta) if c.meta else None)
    return table


def _decode_strings(table: Any, column: str, value: Any, description: str, url: str | None,
                    path: str) -> None:
    """Re-insert a string column the way lsst-images does on read."""
    import astropy.table

    if isinstance(value, str):
        if column in table.colnames:
            raise ArchiveFormatError(f"{column!r} is both a JSON string and a table column",
                                     url=url, hdu=path)
        table[column] = astropy.table.Column([value] * len(table), dtype=object, description=description)
        return
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in value.items()
    ):
        raise ArchiveFormatError(f"{column!r} must be a string or a {{name: code}} object", url=url, hdu=path)
    if not value and len(table) == 0 and column not in table.colnames:
        table[column] = astropy.table.Column([], dtype=object, description=description)
        return
    if column not in table.colnames:
        raise ArchiveFormatError(f"{column!r} codes are given but the table has no such column",
                                 url=url, hdu=path)
    names = {code: name for name, code in value.items()}
    try:
        decoded = [names[int(code)] for code in table[column]]
    except KeyError as exc:
        raise ArchiveFormatError(f"{column!r} code {exc.args[0]} is not in the mapping",
                                 url=url, hdu=path) from None
    table.replace_column(
        column, astropy.table.Column(decoded, name=column, dtype=object, description=description)
    )


def _decode_polygons(table: Any, url: str | None, path: str) -> None:
    import astropy.table

    missing = [name for name in _POLYGON_COLUMNS if name not in table.colnames]
    if missing:
        raise ArchiveFormatError(f"inputs table lacks polygon columns {missing}", url=url, hdu=path)
    counts = np.asarray(table["n_vertices"])
    xs, ys = np.asarray(table["x_vertices"]), np.asarray(table["y_vertices"])
    if xs.ndim != 2 or ys.shape != xs.shape or np.any(counts > xs.shape[1]):
        raise ArchiveFormatError("polygon vertex columns are inconsistent with n_vertices", url=url, hdu=path)
    polygons = np.empty(len(table), dtype=object)
    for row, (n, x, y) in enumerate(zip(counts, xs, ys, strict=True)):
        polygons[row] = Polygon(x_vertices=x[:n], y_vertices=y[:n])
    table.remove_columns(list(_POLYGON_COLUMNS))
    table["polygon"] = astropy.table.Column(polygons, name="polygon", dtype=object, description=_POLYGON)


class CoaddProvenance:
    """The ``inputs`` and ``contributions`` tables of a coadd.

    Build with :meth:`from_json`.  Instances are picklable.

    Parameters
    ----------
    inputs, contributions
        astropy tables in the in-memory form described in the module docstring.
    tree
        The ``provenance`` subtree they were read from, if any (for write-back).
    """

    def __init__(self, inputs: Any, contributions: Any, *, tree: dict[str, Any] | None = None) -> None:
        self._inputs = inputs
        self._contributions = contributions
        self._tree = tree

    @classmethod
    def from_json(cls, tree: dict[str, Any], get_column: GetColumn, *, url: str | None = None
                  ) -> CoaddProvenance:
        """Rebuild the provenance tables from the ``provenance`` subtree.

        Parameters
        ----------
        tree
            The ``provenance`` subtree, as parsed by :func:`json.loads`.
        get_column
            Returns the array of a referenced column, given its ``source``; called
            once per referenced column, during this call only.
        url
            File the tree came from, for error messages.

        Raises
        ------
        ArchiveFormatError
            If the subtree or the columns are malformed.
        """
        path = "provenance"
        if not isinstance(tree, dict):
            raise ArchiveFormatError("expected an object", url=url, hdu=path)
        for key in ("instrument", "physical_filter", "inputs", "contributions"):
            if key not in tree:
                raise ArchiveFormatError(f"missing field {key!r}", url=url, hdu=path)
        inputs = _build_table(read_table_columns(tree["inputs"], get_column, url=url, path=f"{path}.inputs"),
                              url, f"{path}.inputs")
        contributions = _build_table(
            read_table_columns(tree["contributions"], get_column, url=url, path=f"{path}.contributions"),
            url, f"{path}.contributions",
        )
        for table, where, required in ((inputs, "inputs", _REQUIRED_INPUTS),
                                       (contributions, "contributions", _REQUIRED_CONTRIBUTIONS)):
            missing = [name for name in required if name not in table.colnames]
            if missing:
                raise ArchiveFormatError(f"table lacks the columns {missing}", url=url, hdu=f"{path}.{where}")
        for table, where in ((inputs, "inputs"), (contributions, "contributions")):
            _decode_strings(table, "instrument", tree["instrument"], _INSTRUMENT, url, f"{path}.{where}")
        _decode_strings(inputs, "physical_filter", tree["physical_filter"], _PHYSICAL_FILTER, url,
                        f"{path}.inputs")
        _decode_polygons(inputs, url, f"{path}.inputs")
        return cls(inputs, contributions, tree=copy.deepcopy(tree))

    @property
    def inputs(self) -> Any:
        """Input images: one row per (instrument, visit, detector) (an :class:`astropy.table.Table`)."""
        return self._inputs

    @property
    def contributions(self) -> Any:
        """Per-cell contributions: one row per (cell, instrument, visit, detector)."""
        return self._contributions

    def to_json(self) -> dict[str, Any] | None:
        """Return the ``provenance`` subtree this object was read from (a copy).

        ``None`` for provenance that was not read as is (e.g. a :meth:`subset`): its
        tables must be written anew (see :meth:`storage_tables`).
        """
        return copy.deepcopy(self._tree) if self._tree is not None else None

    def __getitem__(self, cell: CellIJ) -> CoaddProvenance | None:
        return self.subset([cell])

    def subset(self, cells: Iterable[CellIJ]) -> CoaddProvenance | None:
        """Provenance restricted to ``cells``.

        Contributions keep their order; ``inputs`` keeps, in its own order and once
        each, the rows whose (instrument, visit, detector) still contribute.  Unlike
        lsst-images (spec 10.4) inputs are not duplicated per contribution, and no
        remaining contribution gives ``None`` rather than an error.

        Parameters
        ----------
        cells
            Cells to keep.

        Returns
        -------
        CoaddProvenance or None
            The subset, or ``None`` when none of ``cells`` has a contribution.
        """
        wanted = {(c.i, c.j) for c in cells}
        ci = np.asarray(self._contributions["cell_i"])
        cj = np.asarray(self._contributions["cell_j"])
        keep = np.fromiter(((int(i), int(j)) in wanted for i, j in zip(ci, cj, strict=True)), bool, len(ci))
        if not keep.any():
            return None
        contributions = self._contributions[keep]
        used = set(zip(contributions["instrument"], (int(v) for v in contributions["visit"]),
                       (int(d) for d in contributions["detector"]), strict=True))
        seen: set[tuple[Any, int, int]] = set()
        rows = []
        for n, key in enumerate(zip(self._inputs["instrument"], (int(v) for v in self._inputs["visit"]),
                                    (int(d) for d in self._inputs["detector"]), strict=True)):
            if key in used and key not in seen:
                seen.add(key)
                rows.append(n)
        return CoaddProvenance(self._inputs[rows], contributions)

    def storage_tables(self) -> tuple[dict[str, Any], Any, Any]:
        """Return the tables in their stored form, for writing.

        Returns
        -------
        fields : dict
            ``{"instrument": ..., "physical_filter": ...}``: a string when the inputs
            table has one distinct value (the column is dropped), else ``{name: code}``
            with codes in sorted-name order (the column becomes ``uint8`` codes in place).
        inputs, contributions : astropy.table.Table
            Stored column order; polygons as ``n_vertices`` (uint8) and NaN-padded
            ``x_vertices``/``y_vertices`` (float64) appended at the end of ``inputs``.
        """
        import astropy.table

        inputs = self._inputs.copy(copy_data=False)
        contributions = self._contributions.copy(copy_data=False)
        fields: dict[str, Any] = {}
        for column, tables in (("instrument", (inputs, contributions)), ("physical_filter", (inputs,))):
            names = sorted({str(v) for v in inputs[column]})
            if len(names) <= 1:
                fields[column] = names[0] if names else {}
                for table in tables:
                    table.remove_column(column)
                continue
            codes = {name: n for n, name in enumerate(names)}
            fields[column] = codes
            for table in tables:
                table.replace_column(column, astropy.table.Column(
                    np.array([codes[str(v)] for v in table[column]], dtype=np.uint8), name=column,
                    description=f"Integer mapped to {column} name."))
        polygons = list(inputs["polygon"])
        width = max((p.n_vertices for p in polygons), default=0)
        xs = np.full((len(polygons), width), np.nan)
        ys = np.full((len(polygons), width), np.nan)
        for row, p in enumerate(polygons):
            xs[row, : p.n_vertices] = p.x_vertices
            ys[row, : p.n_vertices] = p.y_vertices
        inputs.remove_column("polygon")
        inputs["n_vertices"] = astropy.table.Column(np.array([p.n_vertices for p in polygons], np.uint8),
                                                    description="Number of polygon vertices.")
        inputs["x_vertices"] = astropy.table.Column(
            xs, description="X coordinates of polygon vertices, in tract coordinates.")
        inputs["y_vertices"] = astropy.table.Column(
            ys, description="Y coordinates of polygon vertices, in tract coordinates.")
        return fields, inputs, contributions

    def __repr__(self) -> str:
        return f"CoaddProvenance({len(self._inputs)} inputs, {len(self._contributions)} contributions)"
