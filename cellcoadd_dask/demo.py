"""A guided tour on the coadd shipped with the package: open lazily, summarise, compute, plot.

It prints what was actually read from storage at each step, to show that opening
reads metadata only and that pixels are fetched when statistics are computed.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .fetch import FetchStats, fetch_stats
from .open import open_coadd
from .summary import cell_statistics, coadd_summary, fetched_json

__all__ = ["DEMO_FILE", "demo_file", "run_demo"]

DEMO_FILE = "synthetic_3x3.fits"
"""The coadd shipped in ``cellcoadd_dask/data``: 3x3 cells of 150x150 px, one missing."""


@contextlib.contextmanager
def demo_file() -> Iterator[Path]:
    """Yield a filesystem path of the shipped demo coadd (extracted if the package is zipped)."""
    resource = importlib.resources.files("cellcoadd_dask").joinpath("data", DEMO_FILE)
    with importlib.resources.as_file(resource) as path:
        yield Path(path)


def _fmt_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _read_line(stats: FetchStats, size: int) -> str:
    share = 100.0 * stats.nbytes / size if size else 0.0
    return f"{stats.requests} requests, {_fmt_bytes(stats.nbytes)} ({share:.1f}% of the {_fmt_bytes(size)} file)"


def _stats_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"  {'cell':>6} {'finite':>7} {'mean':>10} {'std':>9} {'min':>9} {'max':>10}"]
    for r in rows:
        if r["finite_count"] == 0:
            lines.append(f"  ({r['i']},{r['j']}) {0:>7} {'-':>10} {'-':>9} {'-':>9} {'-':>10}")
            continue
        lines.append(f"  ({r['i']},{r['j']}) {r['finite_count']:>7} {r['mean']:>10.3f} {r['std']:>9.3f} "
                     f"{r['min']:>9.3f} {r['max']:>10.3f}")
    return lines


def run_demo(
    output_dir: str | os.PathLike[str] = "demo-output",
    *,
    echo: Callable[[str], None] = print,
    plot: bool = True,
) -> dict[str, Any]:
    """Open the shipped coadd lazily, print a summary, compute per-cell statistics and plot it.

    Parameters
    ----------
    output_dir
        Directory for ``quicklook.png`` (created if needed).
    echo
        Where each printed line goes.
    plot
        Whether to write the quick-look PNG (needs matplotlib).

    Returns
    -------
    dict
        ``file``, ``summary`` (:func:`~cellcoadd_dask.summary.coadd_summary`), ``statistics``
        (:func:`~cellcoadd_dask.summary.cell_statistics` of the image), ``fetched_at_open``,
        ``fetched_total`` (requests and bytes) and ``png`` (path or ``None``).
    """
    with demo_file() as path, fetch_stats() as total:
        size = path.stat().st_size
        echo(f"Demo coadd: {path}")
        with fetch_stats() as at_open:
            coadd = open_coadd(path)
        summary = coadd_summary(coadd, url=str(path), fetched=at_open)
        echo(f"Opened lazily: {_read_line(at_open, size)} - primary header, JSON tree and HDU index only.")
        missing = ", ".join(f"({c['i']},{c['j']})" for c in summary["missing_cells"]) or "none"
        echo(f"  bbox {coadd.bbox} ({coadd.bbox.shape.y} x {coadd.bbox.shape.x} px), "
             f"band {coadd.band}, {coadd.skymap} tract {coadd.tract}")
        echo(f"  cells of {coadd.grid.cell_shape.y} x {coadd.grid.cell_shape.x} px: "
             f"{len(summary['cells_with_data'])} with data, missing {missing}")
        echo(f"  planes: {', '.join(p['name'] for p in summary['planes'])}")
        echo(f"  mask planes: {', '.join(p['name'] for p in summary['mask_planes'])}")
        echo(f"  image: {coadd.image.array!r}")
        echo(f"Per-cell statistics of the image (finite pixels, {coadd.unit.to_string()}):")
        # Read the image once for both the statistics and the plot.
        coadd = coadd.persist("image")
        statistics = cell_statistics(coadd, "image")
        for line in _stats_table(statistics):
            echo(line)
        echo(f"Read after the statistics: {_read_line(total, size)}.")
        png = None
        if plot:
            from .plot import save_quicklook

            png = save_quicklook(coadd, Path(output_dir) / "quicklook.png")
            echo(f"Wrote quick-look PNG: {png.resolve()}")
        echo(f"Read in total: {_read_line(total, size)}.")
        return {
            "file": str(path),
            "summary": summary,
            "statistics": statistics,
            "fetched_at_open": fetched_json(at_open),
            "fetched_total": fetched_json(total),
            "png": None if png is None else str(png),
        }
