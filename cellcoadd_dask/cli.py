"""The ``cellcoadd-dask`` command line: info, stats, cutout, plot, convert and demo.

Commands are thin: the work is done by :mod:`.summary`, :mod:`.plot` and :mod:`.demo`.
Any :class:`~cellcoadd_dask.errors.CellCoaddError` ends the command with a one-line
message on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .errors import CellCoaddError, shown_url
from .geom import Box, Interval

__all__ = ["main", "parse_box", "parse_chunks", "parse_compression", "parse_storage_options"]

_BOX = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*,\s*(-?\d+)\s*:\s*(-?\d+)\s*$")


def parse_box(text: str) -> Box:
    """Parse ``"y0:y1,x0:x1"`` (absolute tract pixels, half-open) into a :class:`Box`.

    Raises
    ------
    ValueError
        If the text is not four integers in that form, or an interval is empty.
    """
    match = _BOX.match(text)
    if match is None:
        raise ValueError(f"expected y0:y1,x0:x1 (absolute pixels), got {text!r}")
    y0, y1, x0, x1 = (int(v) for v in match.groups())
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"empty box {text!r}: each stop must be greater than its start")
    return Box(Interval(y0, y1), Interval(x0, x1))


def parse_chunks(text: str) -> str | int | tuple[int, int]:
    """Parse ``auto``, ``cell``, ``N`` or ``NY,NX`` (cells per chunk side)."""
    if text in ("auto", "cell"):
        return text
    parts = text.split(",")
    if len(parts) in (1, 2) and all(p.strip().isdigit() and int(p) > 0 for p in parts):
        values = [int(p) for p in parts]
        return values[0] if len(values) == 1 else (values[0], values[1])
    raise ValueError(f"expected auto, cell, N or NY,NX, got {text!r}")


def parse_storage_options(items: tuple[str, ...]) -> dict[str, Any]:
    """Turn ``key=value`` pairs into fsspec storage options.

    Values are read as JSON when they parse (``true``, ``3``, ``{"a": 1}``), else kept as
    strings; a dotted key (``client_kwargs.endpoint_url=...``) makes a nested dict.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        target = options
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ValueError(f"storage option {parent!r} is both a value and a group")
        target[leaf] = value
    return options


class BoxType(click.ParamType):
    name = "y0:y1,x0:x1"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Box:
        if isinstance(value, Box):
            return value
        try:
            return parse_box(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _ChunksType(click.ParamType):
    name = "auto|cell|N|NY,NX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return parse_chunks(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


_GIVEN_OPTIONS = "cellcoadd_dask.storage_options"
"""``ctx.meta`` key (shared by nested contexts) of the storage options given on the command line."""


class _Group(click.Group):
    """Turns the package's errors into a one-line message and exit status 1.

    Secret-looking storage options given on the command line are replaced by ``***`` in
    the message (the package's errors never hold them; this is a second line of defence).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CellCoaddError as exc:
            from .fetch import redact

            message = redact(one_line(exc), {"given": ctx.meta.get(_GIVEN_OPTIONS, [])})
            raise click.ClickException(message) from None


def storage_options_of(ctx: click.Context, items: tuple[str, ...],
                       hint: str = "--storage-option") -> dict[str, Any] | None:
    """The storage options given on the command line (remembered for redacting messages)."""
    try:
        options = parse_storage_options(items) or None
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint=hint) from None
    ctx.meta.setdefault(_GIVEN_OPTIONS, []).append(options)
    return options


def open_counted(url: str, *, storage_options: dict[str, Any] | None, bbox: Box | None = None,
          chunks: Any = "auto") -> tuple[Any, Any]:
    """Open a coadd and count what opening read."""
    from .fetch import fetch_stats
    from .open import open_coadd

    with fetch_stats() as stats:
        coadd = open_coadd(url, bbox=bbox, chunks=chunks, storage_options=storage_options)
    return coadd, stats


@contextlib.contextmanager
def progress_bar(enabled: bool | None) -> Iterator[None]:
    """Show a dask progress bar on stderr while computing (by default when stderr is a terminal)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        yield


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON."""
    click.echo(json.dumps(obj, indent=2, allow_nan=False))


def check_plane(coadd: Any, name: str) -> None:
    from .summary import plane_image

    try:
        plane_image(coadd, name)
    except KeyError as exc:
        raise click.BadParameter(exc.args[0], param_hint="--plane") from None


def _fmt_box(b: dict[str, list[int]]) -> str:
    return f"[y={b['y'][0]}:{b['y'][1]}, x={b['x'][0]}:{b['x'][1]}]"


def _fmt_cells(cells: list[dict[str, int]]) -> str:
    return " ".join(f"({c['i']},{c['j']})" for c in cells) or "none"


def _info_lines(s: dict[str, Any]) -> list[str]:
    ny, nx = s["bbox"]["y"], s["bbox"]["x"]
    cell = s["cell_shape"]
    lines = [
        ("url", s["url"]),
        ("bbox", f"{_fmt_box(s['bbox'])} ({ny[1] - ny[0]} x {nx[1] - nx[0]} px)"),
        ("grid", f"{_fmt_box(s['grid_bbox'])}, cells of {cell['y']} x {cell['x']} px "
                 f"({s['grid_shape']['y']} x {s['grid_shape']['x']} cells)"),
        ("cells with data", f"{len(s['cells_with_data'])}: {_fmt_cells(s['cells_with_data'])}"),
        ("missing cells", f"{len(s['missing_cells'])}: {_fmt_cells(s['missing_cells'])}"),
        ("band", s["band"] or "(none)"),
        ("skymap / tract", f"{s['skymap']} / {s['tract']}"),
    ]
    patch = s["patch"]
    if patch is not None:
        lines.append(("patch", f"{patch['id']}, index (y={patch['index']['y']}, x={patch['index']['x']}), "
                               f"inner bbox {_fmt_box(patch['inner_bbox'])}"))
    lines.append(("units", f"image {s['unit']}, variance {s['variance_unit']}"))
    for p in s["planes"]:
        unit = f" [{p['unit']}]" if p["unit"] else ""
        shape = " x ".join(str(n) for n in p["shape"])
        lines.append((f"plane {p['name']}", f"{p['dtype']} {shape}{unit}, {p['nchunks']} chunk(s) of "
                                            f"{' x '.join(str(n) for n in p['chunksize'])}"))
    planes = " ".join(f"{p['name']}({p['memory_bit']})" for p in s["mask_planes"])
    lines.append(("mask planes", f"{planes} ({s['mask_dtype']} x {s['mask_size']} per pixel)"))
    lines.append(("chunk edges y", " ".join(str(v) for v in s["chunks"]["y"])))
    lines.append(("chunk edges x", " ".join(str(v) for v in s["chunks"]["x"])))
    for c in s["corners_sky"]:
        lines.append((f"sky (y={c['y']}, x={c['x']})", f"RA {c['ra_deg']:.6f} deg, Dec {c['dec_deg']:.6f} deg"))
    f = s["fetched"]
    lines.append(("read to open", f"{f['requests']} requests, {f['bytes']:,} bytes"))
    width = max(len(k) for k, _ in lines)
    return [f"{k:<{width}}  {v}" for k, v in lines]


storage_option_flag = click.option(
    "--storage-option", "-s", "storage_option", multiple=True, metavar="KEY=VALUE",
    help="fsspec storage option (repeatable; values parsed as JSON when possible, dotted keys nest).",
)
_chunks = click.option("--chunks", type=_ChunksType(), default="auto", show_default=True,
                       help="Cells per chunk: auto, cell, N or NY,NX.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
progress_flag = click.option("--progress/--no-progress", default=None,
                              help="Show a progress bar on stderr (default: when stderr is a terminal).")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cellcoadd-dask")
def cli() -> None:
    """Read Rubin cell-based coadds (lsst-images format) lazily with dask."""


@cli.command()
@click.argument("url")
@json_option
@storage_option_flag
@_chunks
@click.pass_context
def info(ctx: click.Context, url: str, as_json: bool, storage_option: tuple[str, ...], chunks: Any) -> None:
    """Summarise a coadd from its metadata (reads no pixels)."""
    from .summary import coadd_summary

    coadd, stats = open_counted(url, storage_options=storage_options_of(ctx, storage_option), chunks=chunks)
    summary = coadd_summary(coadd, url=url, fetched=stats)
    if as_json:
        echo_json(summary)
    else:
        for line in _info_lines(summary):
            click.echo(line)


@cli.command()
@click.argument("url")
@click.option("--plane", default="image", show_default=True,
              help="image, variance, mask_fractions/NAME or noise_realizations/N.")
@click.option("--box", type=BoxType(), default=None, help="Only this absolute box: y0:y1,x0:x1.")
@json_option
@progress_flag
@storage_option_flag
@_chunks
@click.pass_context
def stats(ctx: click.Context, url: str, plane: str, box: Box | None, as_json: bool, progress: bool | None,
          storage_option: tuple[str, ...], chunks: Any) -> None:
    """Per-cell statistics (finite pixels: count, mean, std, min, max) of one plane."""
    from .fetch import fetch_stats
    from .summary import box_json, cell_statistics, fetched_json

    coadd, at_open = open_counted(url, storage_options=storage_options_of(ctx, storage_option), bbox=box, chunks=chunks)
    if box is not None:
        coadd = coadd[box]
    check_plane(coadd, plane)
    with fetch_stats() as computing, progress_bar(progress):
        rows = cell_statistics(coadd, plane)
    if as_json:
        from .summary import plane_image

        unit = plane_image(coadd, plane).unit
        echo_json({
            "url": shown_url(url),
            "plane": plane,
            "unit": None if unit is None else unit.to_string(),
            "bbox": box_json(coadd.bbox),
            "missing_cells": [{"i": c.i, "j": c.j} for c in sorted(coadd.bounds.missing)],
            "cells": rows,
            "fetched": {"open": fetched_json(at_open), "statistics": fetched_json(computing)},
        })
        return
    click.echo(f"{plane} of {shown_url(url)} {coadd.bbox}: finite pixels per cell")
    click.echo(f"{'cell':>8} {'finite':>8} {'mean':>12} {'std':>12} {'min':>12} {'max':>12}")
    for r in rows:
        values = [r[k] for k in ("mean", "std", "min", "max")]
        text = " ".join(f"{'-':>12}" if v is None else f"{v:>12.5g}" for v in values)
        click.echo(f"{'(' + str(r['i']) + ',' + str(r['j']) + ')':>8} {r['finite_count']:>8} {text}")
    if coadd.bounds.missing:
        click.echo(f"missing cells: {' '.join(f'({c.i},{c.j})' for c in sorted(coadd.bounds.missing))}")
    click.echo(f"read: {at_open.requests + computing.requests} requests, "
               f"{at_open.nbytes + computing.nbytes:,} bytes")


def parse_compression(text: str) -> Any:
    """Parse a compression spec: ``GZIP_1``, ``GZIP_2``, ``RICE_1``, ``NONE`` or ``LOSSY[:LEVEL]``.

    ``LOSSY`` is ``RICE_1`` with ``SUBTRACTIVE_DITHER_2`` quantization at level 16 (or ``LEVEL``).
    Raises ``ValueError`` for anything else.
    """
    from .compression import FitsCompressionAlgorithm, FitsCompressionOptions, FitsQuantizationOptions

    name, _, level = text.strip().upper().partition(":")
    if name == "NONE" and not level:
        return None
    if name == "LOSSY":
        try:
            value = float(level) if level else 16.0
        except ValueError:
            raise ValueError(f"bad quantization level in {text!r}") from None
        return FitsCompressionOptions(
            algorithm=FitsCompressionAlgorithm.RICE_1, quantization=FitsQuantizationOptions(level=value)
        )
    if name in FitsCompressionAlgorithm.__members__ and not level:
        return FitsCompressionOptions(algorithm=FitsCompressionAlgorithm(name))
    raise ValueError(f"expected GZIP_1, GZIP_2, RICE_1, NONE or LOSSY[:LEVEL], got {text!r}")


@cli.command()
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Where to write quicklook.png.")
@progress_flag
def demo(output_dir: Path, progress: bool | None) -> None:
    """Open the coadd shipped with the package, summarise it, compute cell statistics, plot it."""
    from .demo import run_demo

    with progress_bar(progress):
        run_demo(output_dir, echo=click.echo)


from . import cli_convert, cli_cutout, cli_tract  # noqa: E402,F401  (register their commands on cli)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        cli.main(args=argv, prog_name="cellcoadd-dask", standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
