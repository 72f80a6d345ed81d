"""FITS and Zarr layout 2 side by side on the full patch: conversion, size, full read, one cold cell.

    python benchmarks/archives.py [PATCH.fits] [--repeats 3] [--keep DIR]

The patch defaults to the corpus's full-size lossless patch (22x22 cells of 150 px, every plane,
GZIP_2: ``cellcoadd_dask.testing.corpus_path("patch/patch_lossless.fits")``, built on first use).
Three archives are compared: the source FITS file, the FITS file ``write_fits`` makes of it and the
Zarr layout 2 group ``write_zarr`` makes of it (both from ``ccd.open_coadd(source)``, default
options, written once into a temporary directory; ``--keep DIR`` keeps them).  Printed per archive:

- conversion seconds (the ``write_*`` call alone, after a lazy open of the source);
- bytes on disk, number of objects (files) and, for Zarr, objects per node (files over arrays and
  groups, i.e. ``zarr.json`` documents; goal at most 3);
- full read: ``ccd.open_coadd(path)`` then one ``dask.compute`` of image, variance and mask on the
  threaded scheduler (2 workers), best of ``--repeats`` runs interleaved over the archives, and its
  ratio to the source FITS file's (goal: Zarr at most 1.25x);
- one cold cell over HTTP: nginx (``cellcoadd_dask.testing.servers.run_nginx``) serves the
  directory; each archive is opened over HTTP and one interior cell of the image is read, with the
  requests and bytes counted by ``ccd.fetch_stats()`` and by nginx's access log (requests, body
  bytes, HEAD requests and distinct objects touched).

The load average is printed before and after, as other processes may share the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask

import cellcoadd_dask as ccd

SOURCE, FITS, ZARR = "FITS (source)", "FITS (write_fits)", "Zarr 2 (write_zarr)"
NAMES = {SOURCE: "source.fits", FITS: "patch.fits", ZARR: "patch.zarr"}
"""Column titles and the archive's name in the working directory."""


def _source(path: Path | None) -> Path:
    """The patch to convert: ``path``, or the corpus's lossless patch (built on first use)."""
    if path is None:
        from cellcoadd_dask.testing import corpus_path

        return corpus_path("patch/patch_lossless.fits", progress=True)
    path = path.expanduser().resolve()
    if not path.exists():
        sys.exit(f"{path} does not exist")
    return path


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- conversion and size


def _convert(src: Path, workdir: Path) -> dict[str, float]:
    """Write the FITS and Zarr copies of ``src`` into ``workdir``; seconds of each write."""
    seconds = {}
    writers: dict[str, Callable[[Any, str], Any]] = {
        ZARR: lambda coadd, dst: coadd.write_zarr(dst),
        FITS: lambda coadd, dst: coadd.write_fits(dst),
    }
    for name, write in writers.items():
        coadd = ccd.open_coadd(str(src))
        t = time.perf_counter()
        write(coadd, str(workdir / NAMES[name]))
        seconds[name] = time.perf_counter() - t
    return seconds


def _footprint(path: Path) -> tuple[int, int, int]:
    """Bytes, objects (files) and Zarr nodes (``zarr.json`` documents) of an archive."""
    if path.is_file():
        return path.stat().st_size, 1, 0
    files = [p for p in path.rglob("*") if p.is_file()]
    nodes = sum(1 for p in files if p.name == "zarr.json")
    return sum(p.stat().st_size for p in files), len(files), nodes


# ----------------------------------------------------------------------------- full read


def _full_read(url: str) -> float:
    t = time.perf_counter()
    coadd = ccd.open_coadd(url)
    dask.compute(coadd.image.array, coadd.variance.array, coadd.mask.array, scheduler="threads", num_workers=2)
    return time.perf_counter() - t


def _full_reads(paths: dict[str, Path], repeats: int) -> dict[str, float]:
    """Best full-read seconds of each archive, runs interleaved so that a slow spell hits all alike."""
    for path in paths.values():  # one untimed read each: page cache and imports
        _full_read(str(path))
    best = {name: float("inf") for name in paths}
    for _ in range(repeats):
        for name, path in paths.items():
            best[name] = min(best[name], _full_read(str(path)))
    return best


# ----------------------------------------------------------------------------- one cold cell over HTTP


def _interior_cell(coadd: Any) -> tuple[Any, slice, slice]:
    middle = next(c for c in coadd.bounds.cell_indices() if c.i >= 10 and c.j >= 10)
    sy, sx = coadd.grid.bbox_of(middle).slice_within(coadd.bbox)
    return middle, sy, sx


def _counts(stats: Any, log: Any) -> dict[str, Any]:
    return {
        "requests": stats.requests,
        "bytes": stats.nbytes,
        "log requests": len(log),
        "log bytes": log.body_bytes,
        "log HEAD": log.methods.count("HEAD"),
        "log objects": len({r.name for r in log}),
    }


def _cold_cells(server: Any, names: dict[str, str]) -> tuple[dict[str, dict[str, dict[str, Any]]], Any]:
    """Open each archive over HTTP and read one interior image cell; counts of both steps."""
    opened: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, Any]] = {}
    index = None
    for title, name in names.items():
        url = f"{server.url}/{name}"
        mark = server.mark()
        with ccd.fetch_stats() as stats:
            coadd = ccd.open_coadd(url)
        opened[title] = _counts(stats, server.requests_since(mark))
        index, sy, sx = _interior_cell(coadd)
        mark = server.mark()
        with ccd.fetch_stats() as stats:
            coadd.image.array[sy, sx].compute(scheduler="threads")
        cells[title] = _counts(stats, server.requests_since(mark))
    return {"open": opened, "cell": cells}, index


# ----------------------------------------------------------------------------- report


def _row(label: str, values: dict[str, Any], fmt: str = "{:,}") -> str:
    cells = [fmt.format(values[t]) if t in values else "-" for t in NAMES]
    return f"| {label:40s} | " + " | ".join(f"{c:>19s}" for c in cells) + " |"


def main() -> None:
    """Convert the patch, measure every archive, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch", nargs="?", type=Path, help="source patch (FITS; default: the corpus's)")
    parser.add_argument("--repeats", type=int, default=3, help="full reads per archive (best reported)")
    parser.add_argument("--keep", type=Path, help="write the archives into this directory and keep them")
    args = parser.parse_args()
    src = _source(args.patch)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="archives-"))
    docroot = workdir / "htdocs"
    docroot.mkdir(parents=True, exist_ok=True)
    print(f"{src}: {src.stat().st_size:,} bytes; {len(os.sched_getaffinity(0))} CPUs; {_load()}")
    try:
        target = docroot / NAMES[SOURCE]
        target.unlink(missing_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
        convert = _convert(src, docroot)
        paths = {title: docroot / name for title, name in NAMES.items()}
        footprint = {title: _footprint(path) for title, path in paths.items()}
        reads = _full_reads(paths, args.repeats)
        from cellcoadd_dask.testing.servers import run_nginx

        (workdir / "nginx").mkdir(exist_ok=True)
        with run_nginx(workdir / "nginx", docroot) as server:
            http, index = _cold_cells(server, NAMES)
        rows = [
            f"| {'':40s} | " + " | ".join(f"{t:>19s}" for t in NAMES) + " |",
            "|" + "-" * 42 + "|" + "|".join("-" * 20 + ":" for _ in NAMES) + "|",
            _row("conversion s (write_*)", convert, "{:.2f}"),
            _row("size on disk, bytes", {t: f[0] for t, f in footprint.items()}),
            _row("objects (files)", {t: f[1] for t, f in footprint.items()}),
            _row("Zarr nodes (arrays + groups)", {t: f[2] for t, f in footprint.items() if f[2]}),
            _row("objects per node (goal <= 3)", {t: f[1] / f[2] for t, f in footprint.items() if f[2]}, "{:.2f}"),
            _row(f"full read s (best of {args.repeats})", reads, "{:.3f}"),
            _row("full read / source FITS (Zarr <= 1.25)", {t: s / reads[SOURCE] for t, s in reads.items()}, "{:.2f}"),
        ]
        for step in ("open", "cell"):
            for key in ("requests", "bytes", "log requests", "log bytes", "log HEAD", "log objects"):
                rows.append(_row(f"HTTP {step}: {key}", {t: c[key] for t, c in http[step].items()}))
        print("\n".join(rows))
        print(f"HTTP cell: image cell {index}, read cold right after opening over nginx.")
        print("requests/bytes: ccd.fetch_stats(); log *: nginx's access log (body bytes, HEAD requests, objects).")
        print(f"done; {_load()}")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
