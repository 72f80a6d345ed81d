"""Corrupt, truncated and foreign files: a typed error naming the file, or a correct read.

Two reference files (``synthetic_3x3.fits``, ``min_default.fits``) are mutated in
many ways: truncated, bits flipped in the primary header, the JSON tree, the INDEX,
the tile descriptor tables, the tile bytes and the HDU headers, plus targeted edits
(invalid JSON, wrong types, missing fields, newer versions, unknown schemas,
addresses outside the file, unsupported compression).  Each mutated file is opened
and *every* plane, every PSF cell, the provenance and the aperture corrections are
computed.  The rule for every case:

- either it reads, and every pixel equals the unmutated file's except in the tiles
  whose bytes (or descriptors, or decoding cards) were altered;
- or it raises a `cellcoadd_dask.CellCoaddError` whose message names the file;

within one second, never another exception type.  Cases known to be unreadable must
raise.  Byte positions come from astropy (`oracle.fits_layout`); random mutations
use a seeded generator.  The mutated files are read in a child process
(`CaseWorker`), so that a crash in native code fails its case instead of the session.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import multiprocessing
import multiprocessing.process
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from astropy.io import fits
from oracle import HduBytes, coadd_planes, fits_layout

import cellcoadd_dask as ccd

FILES = ("synthetic_3x3.fits", "min_default.fits")
TIME_LIMIT = 1.0
"""Seconds one case (open and compute everything) may take."""
CASE_TIMEOUT = 60.0
"""Seconds after which the reading process is considered hung (includes its start-up)."""

Region = tuple[slice, ...] | None
"""Local region of a plane that may differ (``None``: the whole plane)."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One mutated file.

    Attributes
    ----------
    name
        What was done.
    data
        The file's bytes.
    may_differ
        ``(plane, region)`` pairs where pixels may differ from the original if the file reads.
    must_fail
        The file is unreadable: a typed error is required.
    any_values
        The mutation changes what the file describes (its JSON tree): if it reads, the
        values are not compared.
    suffix
        File name suffix.
    """

    name: str
    data: bytes
    may_differ: tuple[tuple[str, Region], ...] = ()
    must_fail: bool = False
    any_values: bool = False
    suffix: str = ".fits"


@dataclasses.dataclass
class Baseline:
    """The unmutated file: its path, bytes and layout (by astropy)."""

    path: Path
    data: bytes
    hdus: dict[str, HduBytes]

    def hdu(self, label: str) -> HduBytes:
        return self.hdus[label]


# ----------------------------------------------------------------------------- reading one case


def plane_of(label: str) -> str:
    """Key of `read_everything`'s result that an HDU holds (``MASK,2`` -> ``mask``)."""
    return label.split(",")[0].lower()


def read_everything(path: Path) -> dict[str, Any]:
    """Open with our reader and compute every plane, PSF cell, table and a sky position."""
    coadd = ccd.open_coadd(path)
    lazy = {key.lower(): array for key, array in coadd_planes(coadd).items()}
    lazy["psf"] = coadd.psf.array
    (values,) = dask.compute(lazy)
    for cell in coadd.bounds.cell_indices():
        values[f"psf_kernel/{cell.i},{cell.j}"] = np.asarray(coadd.psf[cell].array)
    provenance = getattr(coadd, "provenance", None)
    if provenance is not None:
        values["provenance_rows"] = (len(provenance.inputs), len(provenance.contributions))
    values["aperture_corrections"] = {name: np.asarray(field.array)
                                      for name, field in coadd.aperture_corrections.items()}
    sky = coadd.projection.pixel_to_sky(x=coadd.bbox.x.start, y=coadd.bbox.y.start)
    values["sky"] = (float(sky.ra.deg), float(sky.dec.deg))
    values["bbox"] = str(coadd.bbox)
    return values


def equal_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    same = a == b
    if a.dtype.kind == "f":
        same |= np.isnan(a) & np.isnan(b)
    return same


def differences(got: dict[str, Any], base: dict[str, Any], may_differ: tuple[tuple[str, Region], ...]) -> list[str]:
    """What differs between two `read_everything` results outside the allowed regions."""
    if sorted(got) != sorted(base):
        return [f"read {sorted(got)}, expected {sorted(base)}"]
    out = []
    for key, expected in base.items():
        value = got[key]
        if not isinstance(expected, np.ndarray) and key in {plane for plane, _ in may_differ}:
            continue
        if not isinstance(expected, np.ndarray):
            if key == "aperture_corrections":
                if sorted(value) != sorted(expected) or not all(
                        np.array_equal(value[k], expected[k], equal_nan=True) for k in expected):
                    out.append("aperture corrections differ")
            elif value != expected:
                out.append(f"{key}: {value!r} != {expected!r}")
            continue
        if value.dtype != expected.dtype or value.shape != expected.shape:
            out.append(f"{key}: {value.dtype}{value.shape} != {expected.dtype}{expected.shape}")
            continue
        same = equal_arrays(value, expected)
        plane = key.split("/")[0] if key.startswith("psf_kernel") else key
        for allowed, region in may_differ:
            if allowed == plane or (allowed == "psf" and plane == "psf_kernel"):
                if region is None or plane == "psf_kernel":
                    same[...] = True
                else:
                    same[region] = True
        if not same.all():
            out.append(f"{key}: {np.count_nonzero(~same)} values differ outside the altered tiles")
    return out


def judge(path: Path, baseline_values: dict[str, Any], must_fail: bool, any_values: bool,
          may_differ: tuple[tuple[str, Region], ...]) -> str | None:
    """Open and compute one mutated file; return what broke the rule, or None."""
    start = time.perf_counter()
    try:
        values = read_everything(path)
    except ccd.CellCoaddError as exc:
        elapsed = time.perf_counter() - start
        if str(path) not in str(exc):
            return f"{type(exc).__name__} does not name the file: {exc}"
        if elapsed > TIME_LIMIT:
            return f"took {elapsed:.2f} s to fail"
        return None
    except Exception as exc:  # any other type is the failure looked for
        return f"untyped {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-4)}"
    elapsed = time.perf_counter() - start
    if elapsed > TIME_LIMIT:
        return f"took {elapsed:.2f} s to read"
    if must_fail:
        return "read without error, but the file is unreadable"
    if any_values:
        return None
    problems = differences(values, baseline_values, may_differ)
    return "; ".join(problems) if problems else None


def _serve(conn: Connection) -> None:
    """Worker process loop: judge the cases sent by the test process, one at a time."""
    warnings.simplefilter("error")  # as pytest's filterwarnings = error
    baselines: dict[str, dict[str, Any]] = {}
    while True:
        message = conn.recv()
        if message is None:
            return
        baseline_path, case_path, must_fail, any_values, may_differ = message
        if baseline_path not in baselines:
            baselines[baseline_path] = read_everything(Path(baseline_path))  # also warms up imports
        conn.send(judge(Path(case_path), baselines[baseline_path], must_fail, any_values, may_differ))


class CaseWorker:
    """A child process that opens and reads the mutated files, so a crash or a hang in native
    code (a decoder, the AST library) fails one case instead of killing the test session."""

    def __init__(self) -> None:
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> Connection:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe()
            self._process = context.Process(target=_serve, args=(child,), daemon=True)
            self._process.start()
            child.close()
            self._conn = parent
        return self._conn

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(10)
        self._process = self._conn = None

    def check(self, case: Case, baseline: Baseline, path: Path) -> str | None:
        conn = self._start()
        conn.send((str(baseline.path), str(path), case.must_fail, case.any_values, case.may_differ))
        # Generous: the first case also starts the interpreter and reads the baseline.
        if not conn.poll(CASE_TIMEOUT):
            self._kill()
            return f"hung for more than {CASE_TIMEOUT} s"
        try:
            return conn.recv()
        except (EOFError, OSError):
            assert self._process is not None
            self._process.join(10)
            code = self._process.exitcode
            self._kill()
            return f"crashed the reading process (exit code {code}, i.e. signal {-code if code else None})"

    def close(self) -> None:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            self._conn.send(None)
            self._process.join(10)
        self._kill()


@pytest.fixture(scope="module")
def worker() -> Iterator[CaseWorker]:
    case_worker = CaseWorker()
    try:
        yield case_worker
    finally:
        case_worker.close()


def run_cases(cases: list[Case], baseline: Baseline, directory: Path, worker: CaseWorker,
              minimum: int = 1) -> None:
    """Judge every case; fail with the list of every case that broke the rule."""
    failures = []
    for n, case in enumerate(cases):
        path = directory / f"case{n}{case.suffix}"
        path.write_bytes(case.data)
        problem = worker.check(case, baseline, path)
        path.unlink()
        if problem is not None:
            failures.append(f"{case.name}: {problem}")
    assert len(cases) >= minimum, f"only {len(cases)} cases"
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


@pytest.fixture(scope="module", params=FILES)
def baseline(request: pytest.FixtureRequest, reference_dir: Path) -> Baseline:
    path = reference_dir / request.param
    return Baseline(path, path.read_bytes(), {h.label: h for h in fits_layout(path)})


# ----------------------------------------------------------------------------- byte editing


def flip_bits(data: bytes, positions: list[int], masks: list[int]) -> bytes:
    out = bytearray(data)
    for p, m in zip(positions, masks, strict=True):
        out[p] ^= m
    return bytes(out)


def put(data: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    out[offset : offset + len(value)] = value
    return bytes(out)


def find_card(data: bytes, header: tuple[int, int], key: str) -> int:
    """Offset of the card ``key`` in a header."""
    for offset in range(header[0], header[1], 80):
        if data[offset : offset + 8].decode("ascii").rstrip() == key:
            return offset
    raise KeyError(key)


def set_card(data: bytes, header: tuple[int, int], key: str, value: Any = None, *, new_key: str | None = None,
             raw: bytes | None = None) -> bytes:
    """Replace card ``key`` by ``new_key = value`` (astropy formats it), by ``raw``, or by a blank card."""
    offset = find_card(data, header, key)
    if raw is not None:
        image = raw.ljust(80)
    elif value is None and new_key is None:
        image = b" " * 80
    else:
        image = fits.Card(new_key or key, value).image.encode("ascii")
    assert len(image) == 80
    return put(data, offset, image)


def json_location(baseline: Baseline) -> tuple[int, int]:
    """``(offset, length)`` of the JSON text (row 0 of the JSON HDU's heap)."""
    hdu = baseline.hdu("JSON")
    count, offset = (int(v) for v in np.frombuffer(baseline.data, ">i4", 2, hdu.table[0]))
    return hdu.table[0] + hdu.row_bytes + offset, count


def json_tree(baseline: Baseline) -> dict[str, Any]:
    start, count = json_location(baseline)
    return json.loads(baseline.data[start : start + count])


def _strip_schema_urls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_schema_urls(v) for k, v in node.items() if k != "schema_url"}
    if isinstance(node, list):
        return [_strip_schema_urls(v) for v in node]
    return node


def with_json(baseline: Baseline, tree_or_text: Any) -> bytes:
    """The file with another JSON text of at most the same length (padded with blanks).

    A tree that does not fit loses its ``schema_url`` keys (which readers ignore).
    """
    start, count = json_location(baseline)
    if isinstance(tree_or_text, bytes):
        text = tree_or_text
    else:
        text = json.dumps(tree_or_text, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > count:
            text = json.dumps(_strip_schema_urls(tree_or_text), separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= count, f"JSON text of {len(text)} bytes does not fit in {count}"
    return put(baseline.data, start, text.ljust(count))


def index_rows(baseline: Baseline) -> tuple[int, int, dict[str, int], list[str]]:
    """``(data start, row size, {column: offset in row}, [HDU label per row])`` of the INDEX, by astropy."""
    with fits.open(baseline.path, memmap=False) as hdus:
        hdu = hdus["INDEX"]
        raw = np.asarray(hdu.data)
        fields = raw.dtype.fields
        assert fields is not None
        labels = []
        for name, ver in zip(raw["EXTNAME"], raw["EXTVER"], strict=True):
            name = name.decode().strip()
            labels.append(name if int(ver) == 1 else f"{name},{int(ver)}")
        return (int(hdu.fileinfo()["datLoc"]), int(hdu.header["NAXIS1"]),
                {k: int(v[1]) for k, v in fields.items()}, labels)


def edit_tree(baseline: Baseline, edit: Callable[[dict[str, Any]], Any]) -> bytes:
    tree = copy.deepcopy(json_tree(baseline))
    result = edit(tree)
    return with_json(baseline, tree if result is None else result)


def descriptor_offset(hdu: HduBytes, tile: int) -> int:
    """File offset of the ``COMPRESSED_DATA`` descriptor (first column) of a tile."""
    return hdu.table[0] + tile * hdu.row_bytes


def image_hdus(baseline: Baseline) -> list[HduBytes]:
    """The tile-compressed HDUs of the planes and the PSF (background data is not a plane)."""
    return [h for h in baseline.hdus.values() if h.tiles and not h.extname.startswith("BACKGROUND/")]


# ----------------------------------------------------------------------------- truncation


def test_every_truncation_is_a_typed_error(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    size = len(baseline.data)
    json_start = baseline.hdu("JSON").header[0]
    cuts = sorted({*range(0, size, 2880), 1, 79, 80, 2879, 2881, size - 1, size - 2879, json_start + 100,
                   baseline.hdu("INDEX").table[0] + 5})
    cases = [Case(f"truncated to {n} bytes", baseline.data[:n], must_fail=True) for n in cuts]
    run_cases(cases, baseline, tmp_path, worker, minimum=size // 2880)


def test_a_file_truncated_after_opening_gives_a_typed_error(baseline: Baseline, tmp_path: Path) -> None:
    path = tmp_path / "late.fits"
    for hdu in image_hdus(baseline):
        for cut in (hdu.header[1] - 1, hdu.table[1] - 1, max(t[1] for t in hdu.tiles if t) - 1):
            path.write_bytes(baseline.data)
            coadd = ccd.open_coadd(path)
            with path.open("r+b") as stream:
                stream.truncate(cut)
            with pytest.raises(ccd.CellCoaddError) as info:
                dask.compute(coadd_planes(coadd), coadd.psf.array)
            assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- primary header


def test_primary_header_edits(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    primary = baseline.hdu("").header
    data = baseline.data
    size = len(data)
    cases = [
        Case("FMTVER 2", set_card(data, primary, "FMTVER", 2), must_fail=True),
        Case("FMTVER 'one'", set_card(data, primary, "FMTVER", "one"), must_fail=True),
        Case("no FMTVER", set_card(data, primary, "FMTVER"), must_fail=True),
        Case("no DATAMODL", set_card(data, primary, "DATAMODL"), must_fail=True),
        Case("DATAMODL of another schema",
             set_card(data, primary, "DATAMODL", "https://images.lsst.io/schemas/image-1.0.0"), must_fail=True),
        Case("DATAMODL of an unknown schema",
             set_card(data, primary, "DATAMODL", "https://images.lsst.io/schemas/cell_coadd_v9-1.0.0"),
             must_fail=True),
        Case("DATAMODL not a URL", set_card(data, primary, "DATAMODL", "cell_coadd"), must_fail=True),
        Case("DATAMODL an integer", set_card(data, primary, "DATAMODL", 7), must_fail=True),
        Case("DATAMODL of a newer cell_coadd schema",
             set_card(data, primary, "DATAMODL", "https://images.lsst.io/schemas/cell_coadd-1.1.0")),
        Case("SIMPLE = F", set_card(data, primary, "SIMPLE", False), must_fail=True),
        Case("no END card", set_card(data, primary, "END"), any_values=True),
        Case("JSONADDR beyond the end", set_card(data, primary, "JSONADDR", size + 2880), must_fail=True),
        Case("JSONADDR negative", set_card(data, primary, "JSONADDR", -2880), must_fail=True),
        Case("JSONADDR 0", set_card(data, primary, "JSONADDR", 0), must_fail=True),
        Case("JSONADDR off a block", set_card(data, primary, "JSONADDR", baseline.hdu("JSON").header[0] + 80),
             must_fail=True),
        Case("JSONADDR a float", set_card(data, primary, "JSONADDR", float(baseline.hdu("JSON").header[0])),
             must_fail=True),
        Case("JSONSIZE huge", set_card(data, primary, "JSONSIZE", 1 << 50), must_fail=True),
        Case("JSONSIZE 0", set_card(data, primary, "JSONSIZE", 0), must_fail=True),
        Case("INDXADDR 0", set_card(data, primary, "INDXADDR", 0), must_fail=True),
        Case("INDXSIZE huge", set_card(data, primary, "INDXSIZE", 1 << 40), must_fail=True),
        Case("INDXSIZE negative", set_card(data, primary, "INDXSIZE", -5760), must_fail=True),
        Case("no INDXADDR", set_card(data, primary, "INDXADDR"), must_fail=True),
        Case("DATE changed", set_card(data, primary, "DATE", "1999-01-01T00:00:00.000")),
    ]
    rng = np.random.default_rng(20261101)
    for _ in range(40):
        position = int(rng.integers(primary[0], primary[1]))
        mask = 1 << int(rng.integers(0, 8))
        cases.append(Case(f"primary byte {position} ^ {mask}", flip_bits(data, [position], [mask])))
    run_cases(cases, baseline, tmp_path, worker)


# ----------------------------------------------------------------------------- JSON tree


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(tree: dict[str, Any]) -> None:
        node: Any = tree
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(tree: dict[str, Any]) -> None:
        node: Any = tree
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _edit_ast(tree: dict[str, Any], edit: Callable[[list[str]], list[str]]) -> None:
    """Edit the lines of the AST text of the sky projection (which must change)."""
    mapping = tree["sky_projection"]["pixel_to_sky"]["mappings"][0]
    lines = mapping["ast"].split("\n")
    edited = edit(lines)
    assert edited != lines
    mapping["ast"] = "\n".join(edited)


def _break_cmpmap(lines: list[str]) -> list[str]:
    """Misspell the ``Nin`` of the first compound mapping (AST then builds a 0-input mapping)."""
    out = list(lines)
    start = next(n for n, line in enumerate(lines) if line.strip().startswith("Begin CmpMap"))
    n = next(n for n in range(start, len(lines)) if lines[n].strip().startswith("Nin ="))
    out[n] = out[n].replace("Nin =", "Jin =")
    return out


MUST_FAIL_EDITS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "min_read_version 2": _set("min_read_version", 2),
    "image min_read_version 2": _set("image.min_read_version", 2),
    "mask min_read_version 2": _set("mask.min_read_version", 2),
    "psf min_read_version 2": _set("psf.min_read_version", 2),
    "sky_projection min_read_version 2": _set("sky_projection.min_read_version", 2),
    "transform min_read_version 2": _set("sky_projection.pixel_to_sky.min_read_version", 2),
    "no schema_version": _drop("schema_version"),
    "no image": _drop("image"),
    "no mask": _drop("mask"),
    "no psf": _drop("psf"),
    "no sky_projection": _drop("sky_projection"),
    "no image data": _drop("image.data"),
    "no image yx0": _drop("image.yx0"),
    "no image source": _drop("image.data.value.source"),
    "no image shape": _drop("image.data.value.shape"),
    "no mask planes": _drop("mask.planes"),
    "no mask data": _drop("mask.data"),
    "no psf bounds": _drop("psf.bounds"),
    "no psf array": _drop("psf.array"),
    "no psf grid": _drop("psf.bounds.grid"),
    "no transform mappings": _drop("sky_projection.pixel_to_sky.mappings"),
    "tree is a list": lambda tree: b"[]",
    "tree is a number": lambda tree: b"42",
    "tree is null": lambda tree: b"null",
    "invalid JSON": lambda tree: json.dumps(tree, separators=(",", ":")).encode()[:-10],
    "not UTF-8": lambda tree: b'{"schema_version":"\xff\xfe"}',
    "deeply nested": lambda tree: b"[" * 5000 + b"]" * 5000,
    "image shape off by one": lambda tree: tree["image"]["data"]["value"]["shape"].__setitem__(
        1, tree["image"]["data"]["value"]["shape"][1] + 1),
    "image shape negative": _set("image.data.value.shape", [-1, -1]),
    "image shape of strings": _set("image.data.value.shape", ["a", "b"]),
    "image shape huge": _set("image.data.value.shape", [10**12, 10**12]),
    "image shape 3-d": _set("image.data.value.shape", [1, 1, 1]),
    "image datatype complex": _set("image.data.value.datatype", "complex64"),
    "image datatype unknown": _set("image.data.value.datatype", "float17"),
    "image source unknown HDU": _set("image.data.value.source", "fits:NO_SUCH_HDU"),
    "image source EXTVER 2": _set("image.data.value.source", "fits:IMAGE,2"),
    "image source malformed": _set("image.data.value.source", "fits:IMAGE;rm"),
    "image source another scheme": _set("image.data.value.source", "ndf:IMAGE"),
    "image source a table": _set("image.data.value.source", "fits:PROVENANCE/INPUTS"),
    "image source a column": _set("image.data.value.source", "fits:IMAGE[1]"),
    "image source a number": _set("image.data.value.source", 5),
    "image yx0 a string": _set("image.yx0", "abc"),
    "image yx0 of floats": _set("image.yx0", [0.5, 1e300]),
    "image yx0 one element": _set("image.yx0", [0]),
    "image unit unparsable": _set("image.data.unit", "not a unit at all"),
    "image without unit": lambda tree: tree["image"].__setitem__("data", tree["image"]["data"]["value"]),
    "variance bbox off by one": lambda tree: tree["variance"].__setitem__(
        "yx0", [tree["variance"]["yx0"][0] + 1, tree["variance"]["yx0"][1]]),
    "mask dtype float": _set("mask.dtype", "float32"),
    "mask dtype unknown": _set("mask.dtype", "uint7"),
    "mask planes duplicated": lambda tree: tree["mask"]["planes"].__setitem__(
        1, tree["mask"]["planes"][0]),
    "mask planes not a list": _set("mask.planes", {"NO_DATA": 0}),
    "mask data empty": _set("mask.data", []),
    "mask data two arrays": lambda tree: tree["mask"]["data"].append(dict(tree["mask"]["data"][0])),
    "mask plane without a name": _set("mask.planes.0", {"description": "x"}),
    "cell shape zero": _set("psf.bounds.grid.cell_shape", {"y": 0, "x": 1}),
    "cell shape negative": _set("psf.bounds.grid.cell_shape", {"y": -6, "x": -6}),
    "cell shape of strings": _set("psf.bounds.grid.cell_shape", {"y": "a", "x": "b"}),
    "grid bbox reversed": lambda tree: tree["psf"]["bounds"]["grid"]["bbox"].__setitem__(
        "y", {"start": 10, "stop": 5}),
    "psf bbox outside the image": lambda tree: tree["psf"]["bounds"].__setitem__(
        "bbox", {"y": {"start": -10**6, "stop": -10**6 + 6}, "x": {"start": -10**6, "stop": -10**6 + 6}}),
    "missing cell malformed": _set("psf.bounds.missing", [{"i": "a"}]),
    "missing cells a number": _set("psf.bounds.missing", 3),
    "psf array shape wrong": _set("psf.array.shape", [1, 1, 5, 5]),
    "psf kernel even": lambda tree: tree["psf"]["array"].__setitem__(
        "shape", [*tree["psf"]["array"]["shape"][:2], 4, 4]),
    "pixel frame not a tract": _set("sky_projection.pixel_to_sky.frames.0.frame_type", "DETECTOR"),
    "AST WcsMap not terminated": lambda tree: _edit_ast(tree, lambda lines: [
        line for line in lines if line.strip() != "End WcsMap"]),
    "AST WcsMap without a projection type": lambda tree: _edit_ast(tree, lambda lines: [
        "x" + line if line.strip().startswith("Type =") else line for line in lines]),
    "AST CmpMap without Nin": lambda tree: _edit_ast(tree, _break_cmpmap),
    "AST text garbage": _set("sky_projection.pixel_to_sky.mappings.0", {"ast": "Begin Nonsense\nEnd Nonsense"}),
    "AST text empty": _set("sky_projection.pixel_to_sky.mappings.0", {"ast": ""}),
    "AST a number": _set("sky_projection.pixel_to_sky.mappings.0", {"ast": 3}),
    "tract a string": _set("sky_projection.pixel_to_sky.frames.0.tract", "x"),
    "provenance inputs column missing": lambda tree: tree["provenance"]["inputs"]["columns"].pop(0),
    "provenance column source out of range": _set(
        "provenance.inputs.columns.0.data.source", "fits:PROVENANCE/INPUTS[99]"),
    "provenance column datatype wrong": _set("provenance.inputs.columns.0.data.datatype", "float32"),
    "provenance column of an image HDU": _set("provenance.inputs.columns.0.data.source", "fits:IMAGE[1]"),
    "aperture corrections column source wrong": _set(
        "aperture_corrections.table.columns.2.data.source", "fits:APERTURE_CORRECTIONS/TABLE[77]"),
    "aperture corrections bounds garbage": _set("aperture_corrections.bounds", "x"),
}
"""Edits of the JSON tree that leave the file unreadable."""

EITHER_EDITS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "schema_version 2.0.0": _set("schema_version", "2.0.0"),
    "min_read_version 1 written as 0": _set("min_read_version", 0),
    "min_read_version a string": _set("min_read_version", "1"),
    "band a number": _set("band", 5),
    "band missing": _drop("band"),
    "band null": _set("band", None),
    "patch missing": _drop("patch"),
    "patch null": _set("patch", None),
    "patch garbage": _set("patch", {"id": "x"}),
    "provenance missing": _drop("provenance"),
    "provenance null": _set("provenance", None),
    "provenance garbage": _set("provenance", [1, 2]),
    "aperture corrections null": _set("aperture_corrections", None),
    "aperture corrections garbage": _set("aperture_corrections", 7),
    "backgrounds garbage": _set("backgrounds", "x"),
    "mask_fractions missing": _drop("mask_fractions"),
    "noise_realizations missing": _drop("noise_realizations"),
    "noise_realizations garbage": _set("noise_realizations", {"a": 1}),
    "metadata garbage": _set("metadata", [1, 2, 3]),
    "metadata of objects": _set("metadata", {"a": {"b": 1}}),
    "image datatype float64": _set("image.data.value.datatype", "float64"),
    "image reads the variance HDU": _set("image.data.value.source", "fits:VARIANCE"),
    "yx0 as an object": lambda tree: tree["image"].__setitem__(
        "yx0", {"y": tree["image"]["yx0"][0], "x": tree["image"]["yx0"][1]}),
    "unknown extra keys": lambda tree: tree.__setitem__("zz_future", {"x": [1, 2]}),
    "missing cells out of bounds": _set("psf.bounds.missing", [{"i": 10**6, "j": -5}]),
    "mask plane descriptions empty": lambda tree: [p.__setitem__("description", "")
                                                   for p in tree["mask"]["planes"] if p],
    "variance without unit": lambda tree: tree["variance"].__setitem__(
        "data", tree["variance"]["data"]["value"]),
}
"""Edits after which reading may succeed (values then follow the edited tree) or fail."""


def test_json_tree_edits(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    cases = [Case("schema_url keys removed", with_json(baseline, _strip_schema_urls(json_tree(baseline))))]
    for name, edit in MUST_FAIL_EDITS.items():
        try:
            data = edit_tree(baseline, edit)
        except (KeyError, IndexError, TypeError):
            continue  # the file has no such field (e.g. no aperture corrections)
        cases.append(Case(f"JSON: {name}", data, must_fail=True))
    for name, edit in EITHER_EDITS.items():
        cases.append(Case(f"JSON: {name}", edit_tree(baseline, edit), any_values=True))
    run_cases(cases, baseline, tmp_path, worker, minimum=len(MUST_FAIL_EDITS) + len(EITHER_EDITS) - 5)


def test_random_json_byte_flips(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    start, count = json_location(baseline)
    rng = np.random.default_rng(20261102)
    cases = []
    for n in range(40):
        positions = [int(p) for p in rng.integers(start, start + count, size=1 + n % 3)]
        masks = [1 << int(b) for b in rng.integers(0, 8, size=len(positions))]
        cases.append(Case(f"JSON bytes {positions} ^ {masks}", flip_bits(baseline.data, positions, masks),
                          any_values=True))
    hdu = baseline.hdu("JSON")
    cases += [
        Case("JSON row count beyond the heap", put(baseline.data, hdu.table[0], (1 << 30).to_bytes(4, "big")),
             must_fail=True),
        Case("JSON row offset beyond the heap",
             put(baseline.data, hdu.table[0] + 4, (1 << 30).to_bytes(4, "big")), must_fail=True),
        Case("JSON row negative", put(baseline.data, hdu.table[0], b"\xff\xff\xff\xff"), must_fail=True),
        Case("JSON header TFORM1 wide", set_card(baseline.data, hdu.header, "TFORM1", "1QB"), must_fail=True),
        Case("JSON header NAXIS2 0", set_card(baseline.data, hdu.header, "NAXIS2", 0), must_fail=True),
        Case("JSON EXTNAME other", set_card(baseline.data, hdu.header, "EXTNAME", "JSOX"), must_fail=True),
    ]
    run_cases(cases, baseline, tmp_path, worker)


# ----------------------------------------------------------------------------- INDEX


def test_index_edits(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    start, row_bytes, offsets, labels = index_rows(baseline)
    size = len(baseline.data)
    data = baseline.data

    def field(label: str, name: str, value: int, width: int = 8) -> bytes:
        offset = start + labels.index(label) * row_bytes + offsets[name]
        return put(data, offset, value.to_bytes(width, "big", signed=True))

    variance_row = labels.index("VARIANCE")
    variance = data[start + variance_row * row_bytes + offsets["HDRADDR"]:
                    start + variance_row * row_bytes + offsets["HDRADDR"] + 24]
    cases = []
    for label in ("IMAGE", "MASK", "PSF", "VARIANCE"):
        hdu = baseline.hdu(label)
        cases += [
            Case(f"INDEX {label} HDRADDR beyond the end", field(label, "HDRADDR", size + 2880), must_fail=True),
            Case(f"INDEX {label} HDRADDR negative", field(label, "HDRADDR", -2880), must_fail=True),
            Case(f"INDEX {label} HDRADDR 0", field(label, "HDRADDR", 0), must_fail=True),
            Case(f"INDEX {label} HDRADDR at the JSON HDU", field(label, "HDRADDR", baseline.hdu("JSON").header[0]),
                 must_fail=True),
            Case(f"INDEX {label} HDRADDR off a block", field(label, "HDRADDR", hdu.header[0] + 80),
                 must_fail=True),
            Case(f"INDEX {label} DATADDR beyond the end", field(label, "DATADDR", size + 2880), must_fail=True),
            Case(f"INDEX {label} DATADDR negative", field(label, "DATADDR", -1), must_fail=True),
            Case(f"INDEX {label} DATADDR = HDRADDR", field(label, "DATADDR", hdu.header[0]), must_fail=True),
            Case(f"INDEX {label} DATSIZE huge", field(label, "DATSIZE", 1 << 62), must_fail=True),
            Case(f"INDEX {label} DATSIZE negative", field(label, "DATSIZE", -2880), must_fail=True),
            Case(f"INDEX {label} DATSIZE 0", field(label, "DATSIZE", 0), must_fail=True),
            Case(f"INDEX {label} EXTVER 2", field(label, "EXTVER", 2, 4), must_fail=True),
            Case(f"INDEX {label} ZIMAGE F", put(data, start + labels.index(label) * row_bytes + offsets["ZIMAGE"],
                                                 b"F"), must_fail=True),
            Case(f"INDEX {label} EXTNAME renamed",
                 put(data, start + labels.index(label) * row_bytes + offsets["EXTNAME"], b"Q"), must_fail=True),
        ]
    image_row = start + labels.index("IMAGE") * row_bytes + offsets["HDRADDR"]
    cases.append(Case("INDEX IMAGE row points at the VARIANCE HDU", put(data, image_row, variance),
                      must_fail=True))
    rng = np.random.default_rng(20261103)
    index = baseline.hdu("INDEX")
    for _ in range(40):
        position = int(rng.integers(index.header[0], index.table[0] + row_bytes * len(labels)))
        mask = 1 << int(rng.integers(0, 8))
        cases.append(Case(f"INDEX byte {position} ^ {mask}", flip_bits(data, [position], [mask])))
    run_cases(cases, baseline, tmp_path, worker)


# ----------------------------------------------------------------------------- tiles


def test_tile_descriptor_edits(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    data = baseline.data
    cases = []
    for hdu in image_hdus(baseline):
        plane = plane_of(hdu.label)
        last = len(hdu.tiles) - 1
        for tile in (0, last):
            at = descriptor_offset(hdu, tile)
            count, offset = (int(v) for v in np.frombuffer(data, ">i4", 2, at))
            neighbour = descriptor_offset(hdu, 1 if tile == 0 else tile - 1)
            other = tuple(int(v) for v in np.frombuffer(data, ">i4", 2, neighbour))
            region = ((plane, hdu.tile_region(tile)),)

            def desc(c: int, o: int, at: int = at) -> bytes:
                return put(data, at, c.to_bytes(4, "big", signed=c < 0) + o.to_bytes(4, "big", signed=o < 0))

            label = f"{hdu.label} tile {tile}"
            cases += [
                Case(f"{label} offset beyond the heap", desc(count, len(data)), must_fail=True),
                Case(f"{label} offset 2**31 - 1", desc(count, 2**31 - 1), must_fail=True),
                Case(f"{label} count beyond the heap", desc(len(data), offset), must_fail=True),
                Case(f"{label} count -1", desc(-1, offset), must_fail=True),
                Case(f"{label} offset -1", desc(count, -1), must_fail=True),
                Case(f"{label} empty", desc(0, 0), must_fail=True),
                Case(f"{label} one byte short", desc(count - 1, offset), must_fail=True),
                Case(f"{label} one byte long", desc(count + 1, offset), region),
                Case(f"{label} shifted by one byte", desc(count, offset + 1), region, must_fail=True),
                Case(f"{label} pointing at another tile's bytes", desc(*other), region),
            ]
        if len(hdu.tiles) > 1:
            a, b = descriptor_offset(hdu, 0), descriptor_offset(hdu, 1)
            swapped = put(put(data, a, data[b : b + 8]), b, data[a : a + 8])
            cases.append(Case(f"{hdu.label} tiles 0 and 1 swapped", swapped,
                              ((plane, hdu.tile_region(0)), (plane, hdu.tile_region(1)))))
    rng = np.random.default_rng(20261104)
    hdus = image_hdus(baseline)
    for _ in range(40):
        hdu = hdus[int(rng.integers(len(hdus)))]
        position = int(rng.integers(hdu.table[0], hdu.table[1]))
        tile = (position - hdu.table[0]) // hdu.row_bytes
        mask = 1 << int(rng.integers(0, 8))
        cases.append(Case(f"{hdu.label} descriptor byte {position} ^ {mask}", flip_bits(data, [position], [mask]),
                          ((plane_of(hdu.label), hdu.tile_region(tile)),)))
    run_cases(cases, baseline, tmp_path, worker)


def test_tile_byte_edits(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    data = baseline.data
    cases = []
    for hdu in image_hdus(baseline):
        plane = plane_of(hdu.label)
        for tile in {0, len(hdu.tiles) // 2}:
            span = hdu.tiles[tile]
            if span is None:
                continue
            a, b = span
            region = ((plane, hdu.tile_region(tile)),)
            label = f"{hdu.label} tile {tile}"
            cases += [
                Case(f"{label} gzip magic broken", flip_bits(data, [a], [0xFF]), region, must_fail=True),
                Case(f"{label} gzip time stamp changed", flip_bits(data, [a + 4], [0x55]), region),
                Case(f"{label} deflate stream byte flipped", flip_bits(data, [(a + b) // 2], [0x10]), region,
                     must_fail=True),
                Case(f"{label} CRC flipped", flip_bits(data, [b - 6], [0x01]), region, must_fail=True),
                Case(f"{label} length trailer flipped", flip_bits(data, [b - 2], [0x01]), region, must_fail=True),
                Case(f"{label} zeroed", put(data, a, bytes(b - a)), region, must_fail=True),
            ]
    rng = np.random.default_rng(20261105)
    tiles = [(hdu, t, span) for hdu in image_hdus(baseline) for t, span in enumerate(hdu.tiles) if span]
    for _ in range(40):
        hdu, tile, (a, b) = tiles[int(rng.integers(len(tiles)))]
        position = int(rng.integers(a, b))
        mask = 1 << int(rng.integers(0, 8))
        cases.append(Case(f"{hdu.label} tile {tile} byte {position} ^ {mask}", flip_bits(data, [position], [mask]),
                          ((plane_of(hdu.label), hdu.tile_region(tile)),)))
    run_cases(cases, baseline, tmp_path, worker)


# ----------------------------------------------------------------------------- HDU headers


def test_image_header_edits(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    data = baseline.data
    cases = []
    for label in ("IMAGE", "MASK", "PSF"):
        hdu = baseline.hdu(label)
        header = hdu.header
        whole = ((plane_of(label), None),)
        cases += [
            Case(f"{label} ZCMPTYPE HCOMPRESS_1", set_card(data, header, "ZCMPTYPE", "HCOMPRESS_1"), must_fail=True),
            Case(f"{label} ZCMPTYPE PLIO_1", set_card(data, header, "ZCMPTYPE", "PLIO_1"), must_fail=True),
            # RICE_1 without quantization on a float HDU decodes integers (as astropy does):
            # garbage from gzip bytes, possibly without an error.
            Case(f"{label} ZCMPTYPE RICE_1", set_card(data, header, "ZCMPTYPE", "RICE_1"), whole),
            Case(f"{label} ZCMPTYPE NOCOMPRESS", set_card(data, header, "ZCMPTYPE", "NOCOMPRESS"), must_fail=True),
            Case(f"{label} ZCMPTYPE unknown", set_card(data, header, "ZCMPTYPE", "ZSTD_9"), must_fail=True),
            Case(f"{label} ZCMPTYPE GZIP_1", set_card(data, header, "ZCMPTYPE", "GZIP_1"), whole),
            Case(f"{label} no ZCMPTYPE", set_card(data, header, "ZCMPTYPE"), must_fail=True),
            Case(f"{label} ZBITPIX 16", set_card(data, header, "ZBITPIX", 16), must_fail=True),
            Case(f"{label} ZBITPIX 7", set_card(data, header, "ZBITPIX", 7), must_fail=True),
            Case(f"{label} ZNAXIS1 + 1", set_card(data, header, "ZNAXIS1", hdu.shape[-1] + 1), must_fail=True),
            Case(f"{label} ZNAXIS1 0", set_card(data, header, "ZNAXIS1", 0), must_fail=True),
            Case(f"{label} ZNAXIS1 huge", set_card(data, header, "ZNAXIS1", 2**40), must_fail=True),
            Case(f"{label} ZNAXIS 9", set_card(data, header, "ZNAXIS", 9), must_fail=True),
            Case(f"{label} ZTILE1 - 1", set_card(data, header, "ZTILE1", hdu.tile_shape[-1] - 1), must_fail=True),
            Case(f"{label} ZTILE1 0", set_card(data, header, "ZTILE1", 0), must_fail=True),
            Case(f"{label} ZTILE1 a string", set_card(data, header, "ZTILE1", "x"), must_fail=True),
            Case(f"{label} NAXIS2 + 1", set_card(data, header, "NAXIS2", len(hdu.tiles) + 1), must_fail=True),
            Case(f"{label} NAXIS1 16", set_card(data, header, "NAXIS1", 16), must_fail=True),
            Case(f"{label} PCOUNT 0", set_card(data, header, "PCOUNT", 0), must_fail=True),
            Case(f"{label} PCOUNT huge", set_card(data, header, "PCOUNT", 2**40)),
            Case(f"{label} THEAP huge", set_card(data, header, "DATE", new_key="THEAP", value=2**40),
                 must_fail=True),
            Case(f"{label} TFORM1 wide", set_card(data, header, "TFORM1", "1QB"), must_fail=True),
            Case(f"{label} TFORM1 garbage", set_card(data, header, "TFORM1", "ZZZ"), must_fail=True),
            Case(f"{label} TTYPE1 renamed", set_card(data, header, "TTYPE1", "SOMETHING_ELSE"), must_fail=True),
            Case(f"{label} ZIMAGE F", set_card(data, header, "ZIMAGE", False), must_fail=True),
            Case(f"{label} no END card", set_card(data, header, "END"), must_fail=True),
            Case(f"{label} ZQUANTIZ on a lossless HDU", set_card(data, header, "DATE", new_key="ZQUANTIZ",
                                                                 value="SUBTRACTIVE_DITHER_9")),
            Case(f"{label} BSCALE 2", set_card(data, header, "DATE", new_key="BSCALE", value=2.0), must_fail=True),
            Case(f"{label} ZZERO keyword without ZSCALE", set_card(data, header, "DATE", new_key="ZZERO", value=3.0)),
            Case(f"{label} ZSCALE keyword", set_card(data, header, "DATE", new_key="ZSCALE", value=2.0), whole),
        ]
    rng = np.random.default_rng(20261106)
    hdus = image_hdus(baseline)
    for _ in range(40):
        hdu = hdus[int(rng.integers(len(hdus)))]
        position = int(rng.integers(hdu.header[0], hdu.header[1]))
        mask = 1 << int(rng.integers(0, 7))
        cases.append(Case(f"{hdu.label} header byte {position} ^ {mask}", flip_bits(data, [position], [mask]),
                          ((plane_of(hdu.label), None),)))
    run_cases(cases, baseline, tmp_path, worker)


def test_table_hdu_byte_flips(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    rng = np.random.default_rng(20261107)
    tables = [h for h in baseline.hdus.values()
              if h.extname.startswith(("PROVENANCE", "APERTURE_CORRECTIONS"))]
    cases = []
    for _ in range(30):
        hdu = tables[int(rng.integers(len(tables)))]
        position = int(rng.integers(hdu.header[0], hdu.table[1]))
        mask = 1 << int(rng.integers(0, 8))
        data = flip_bits(baseline.data, [position], [mask])
        # Pixels must not change; the tables may.
        cases.append(Case(f"{hdu.label} byte {position} ^ {mask}", data,
                          (("aperture_corrections", None), ("provenance_rows", None))))
    run_cases(cases, baseline, tmp_path, worker)


# ----------------------------------------------------------------------------- foreign files


def test_foreign_files(baseline: Baseline, tmp_path: Path, worker: CaseWorker) -> None:
    rng = np.random.default_rng(20261108)
    plain = fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4), np.float32))])
    plain_path = tmp_path / "plain.fits"
    plain.writeto(plain_path)
    cases = [
        Case("empty file", b"", must_fail=True),
        Case("one byte", b"S", must_fail=True),
        Case("text", b"hello world\n" * 1000, must_fail=True),
        Case("random bytes", rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes(), must_fail=True),
        Case("zeros", bytes(2880 * 4), must_fail=True),
        Case("plain FITS image written by astropy", plain_path.read_bytes(), must_fail=True),
        Case("a JSON document named .fits", b'{"schema_version": "1.0.0"}', must_fail=True),
        Case("primary header repeated", baseline.data[:2880] * 40, must_fail=True),
        Case("random bytes without a suffix", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
             must_fail=True, suffix=""),
        Case("text with another suffix", b"not a coadd\n" * 100, must_fail=True, suffix=".dat"),
        Case("empty file without a suffix", b"", must_fail=True, suffix=""),
    ]
    run_cases(cases, baseline, tmp_path, worker)


def test_a_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.fits"
    with pytest.raises(ccd.CellCoaddError) as info:
        ccd.open_coadd(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("where", ["left", "above", "overlapping", "enclosing", "far away"])
def test_a_box_outside_the_coadd_is_a_bounds_error(baseline: Baseline, where: str) -> None:
    coadd = ccd.open_coadd(baseline.path)
    (y0, y1), (x0, x1) = (coadd.bbox.y.start, coadd.bbox.y.stop), (coadd.bbox.x.start, coadd.bbox.x.stop)
    box = {
        "left": ccd.Box.factory[y0:y1, x0 - 10 : x0],
        "above": ccd.Box.factory[y1 : y1 + 3, x0:x1],
        "overlapping": ccd.Box.factory[y0 - 1 : y0 + 2, x0 + 1 : x0 + 2],
        "enclosing": ccd.Box.factory[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1],
        "far away": ccd.Box.factory[10**9 : 10**9 + 1, -(10**9) : -(10**9) + 5],
    }[where]
    with pytest.raises(ccd.BoundsError):
        ccd.open_coadd(baseline.path, bbox=box)
    with pytest.raises(ccd.BoundsError):
        _ = coadd[box]
    with pytest.raises(ccd.BoundsError):
        _ = coadd.absolute[box.y.start : box.y.stop, box.x.start : box.x.stop]
