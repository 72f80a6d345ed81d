"""Full-patch write: cellcoadd_dask against lsst-images, lossless and lossy, in one run.

    python benchmarks/write_patch.py [PATCH.fits] [--repeats N] [--keep DIR]

The patch defaults to the corpus's full-size lossless patch (22x22 cells of 150 px, every plane,
GZIP_2: ``cellcoadd_dask.testing.corpus_path("patch/patch_lossless.fits")``, built on first use).
The outputs go to a temporary directory (``--keep DIR`` to keep them).

Four writers, each run ``N`` times (default 3), every run in its own subprocess so that its
memory is its own:

- cellcoadd_dask: ``ccd.open_coadd(src)`` (lazy: metadata only), then the timed
  ``write_fits(dst)``, which reads and compresses the pixels as it streams them; lossless
  (default options) and lossy (``image_compression = variance_compression =
  FitsCompressionOptions.LOSSY``, ``compression_seed``);
- lsst-images: ``read_archive(src, CellCoadd)`` (every plane in memory), then the timed
  ``coadd.write(dst)`` or ``lsst.images.fits.write(coadd, dst, compression_options=...,
  compression_seed=...)`` with the same options.

Printed per writer (medians over the runs): read/open seconds, write seconds, write CPU seconds,
RSS just before the write, peak RSS during the write and its growth over the RSS before it (the
write's own memory), peak RSS of the whole process (imports, read and write), output size, and
the ratios cellcoadd_dask / lsst-images.  The same modules are
imported by every child before anything is measured.  Every output is then checked with
lsst-images: its image plane equals the source's (lossless), or the other writer's (lossy, same
seed), and stays within the quantization noise of the source.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 1234
"""``compression_seed`` of the lossy writes (the one of the corpus's lossy patch)."""

MODULES = ("dask.array", "cellcoadd_dask", "imagecodecs", "astropy.io.fits", "lsst.images.cells", "lsst.images.fits")
"""Imported by every child before any measurement, so that baselines are comparable."""


# ----------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` value of this process from ``/proc/self/status``, in KiB."""
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------- writers


def _ours_open(src: str) -> Any:
    import cellcoadd_dask as ccd

    return ccd.open_coadd(src)


def _ours_lossless(coadd: Any, dst: str) -> None:
    coadd.write_fits(dst)


def _ours_lossy(coadd: Any, dst: str) -> None:
    from cellcoadd_dask.compression import FitsCompressionOptions

    lossy = FitsCompressionOptions.LOSSY
    coadd.write_fits(dst, image_compression=lossy, variance_compression=lossy, compression_seed=SEED)


def _lsst_read(src: str) -> Any:
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import read_archive

    return read_archive(src, CellCoadd)


def _lsst_lossless(coadd: Any, dst: str) -> None:
    coadd.write(dst)


def _lsst_lossy(coadd: Any, dst: str) -> None:
    from lsst.images import fits

    lossy = fits.FitsCompressionOptions(
        algorithm=fits.FitsCompressionAlgorithm.RICE_1,
        quantization=fits.FitsQuantizationOptions(dither=fits.FitsDitherAlgorithm.SUBTRACTIVE_DITHER_2, level=16.0),
    )
    fits.write(coadd, dst, compression_options={"image": lossy, "variance": lossy}, compression_seed=SEED)


WRITERS: dict[str, tuple[Callable[[str], Any], Callable[[Any, str], None]]] = {
    "cellcoadd_dask lossless": (_ours_open, _ours_lossless),
    "lsst-images lossless": (_lsst_read, _lsst_lossless),
    "cellcoadd_dask lossy": (_ours_open, _ours_lossy),
    "lsst-images lossy": (_lsst_read, _lsst_lossy),
}
PAIRS = (("cellcoadd_dask lossless", "lsst-images lossless"), ("cellcoadd_dask lossy", "lsst-images lossy"))


def _child(name: str, src: str, dst: str) -> None:
    """One run of one writer in this process; print its measurements as one JSON line."""
    import importlib

    for module in MODULES:
        importlib.import_module(module)
    read, write = WRITERS[name]
    t = time.perf_counter()
    coadd = read(src)
    read_s = time.perf_counter() - t
    rss_before = _status_kib("VmRSS")
    peak_before = _status_kib("VmHWM")
    reset = _reset_peak()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    write(coadd, dst)
    write_s = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak_write = _status_kib("VmHWM")
    cpu_s = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    print(
        json.dumps(
            {
                "read_s": read_s,
                "write_s": write_s,
                "cpu_s": cpu_s,
                "rss_before_mib": rss_before / 1024,
                # Without clear_refs the peak of the write cannot be told from the read's.
                "peak_write_mib": peak_write / 1024 if reset else float("nan"),
                "write_growth_mib": (peak_write - rss_before) / 1024 if reset else float("nan"),
                "peak_total_mib": max(peak_before, peak_write) / 1024,
                "size": Path(dst).stat().st_size,
            }
        )
    )


def _run(name: str, src: Path, dst: Path) -> dict[str, float]:
    dst.unlink(missing_ok=True)  # lsst-images refuses to overwrite
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, str(src), str(dst)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- source and checks


def _source(path: Path | None) -> Path:
    """The patch to copy: ``path``, or the corpus's lossless patch (built on first use)."""
    if path is None:
        from cellcoadd_dask.testing import corpus_path

        return corpus_path("patch/patch_lossless.fits", progress=True)
    path = path.expanduser().resolve()
    if not path.exists():
        sys.exit(f"{path} does not exist")
    return path


def _image(path: Path) -> Any:
    """The image plane of an archive, read by lsst-images alone."""
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import open_archive

    with open_archive(str(path), CellCoadd) as reader:
        return reader.get_component("image").array


def _check_outputs(src: Path, outputs: dict[str, Path]) -> list[str]:
    """Sanity checks of every output with lsst-images; one line per check."""
    import numpy as np

    source = _image(src)
    images = {name: _image(path) for name, path in outputs.items()}
    lines = []
    for name, image in images.items():
        if "lossless" in name:
            same = image.shape == source.shape and np.array_equal(image, source, equal_nan=True)
            lines.append(f"{name}: image plane {'equals' if same else 'DIFFERS FROM'} the source's")
            continue
        finite = np.isfinite(source)
        error = np.abs(image[finite].astype(np.float64) - source[finite])
        rms = np.sqrt(np.mean(error**2))
        lines.append(f"{name}: image plane max |lossy - source| = {error.max():.3g}, rms {rms:.3g}")
    for ours, theirs in PAIRS:
        if "lossy" in ours:
            same = np.array_equal(images[ours], images[theirs], equal_nan=True)
            differ = 0 if same else int(np.count_nonzero(images[ours] != images[theirs]))
            verdict = "bit-identical" if same else f"DIFFERENT at {differ:,} pixels"
            lines.append(f"lossy image planes of both writers (seed {SEED}): {verdict}")
    return lines


# ----------------------------------------------------------------------------- report


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _table(results: dict[str, list[dict[str, float]]]) -> str:
    columns = [
        ("read s", "read_s", "{:.2f}"),
        ("write s", "write_s", "{:.2f}"),
        ("write CPU s", "cpu_s", "{:.2f}"),
        ("RSS before MiB", "rss_before_mib", "{:.0f}"),
        ("peak write MiB", "peak_write_mib", "{:.0f}"),
        ("write +MiB", "write_growth_mib", "{:.0f}"),
        ("peak total MiB", "peak_total_mib", "{:.0f}"),
        ("output MB", "size", "{:.1f}"),
    ]
    head = f"| {'writer':24s} | " + " | ".join(f"{title:>14s}" for title, _, _ in columns) + " |"
    rule = "|" + "-" * 26 + "|" + "|".join("-" * 15 + ":" for _ in columns) + "|"
    rows = [head, rule]
    medians = {name: {key: _median(runs, key) for _, key, _ in columns} for name, runs in results.items()}
    for name, values in medians.items():
        cells = [fmt.format(values[key] / 1e6 if key == "size" else values[key]) for _, key, fmt in columns]
        rows.append(f"| {name:24s} | " + " | ".join(f"{cell:>14s}" for cell in cells) + " |")
    for ours, theirs in PAIRS:
        label = "ratio " + ours.split()[-1]
        cells = [f"{medians[ours][key] / medians[theirs][key]:.2f}" for _, key, _ in columns]
        rows.append(f"| {label:24s} | " + " | ".join(f"{cell:>14s}" for cell in cells) + " |")
    return "\n".join(rows)


def main() -> None:
    """Run every writer, print the table and the output checks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch", nargs="?", type=Path, help="source patch (FITS; default: the corpus's)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per writer (median reported; at least 3)")
    parser.add_argument("--keep", type=Path, help="write the outputs into this directory and keep them")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    src = _source(args.patch)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="write-patch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    print(f"{src}: {src.stat().st_size:,} bytes; {cpus} CPUs; {args.repeats} runs per writer, medians")
    try:
        outputs = {name: workdir / (name.replace(" ", "_").replace("-", "_") + ".fits") for name in WRITERS}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in WRITERS}
        for _ in range(args.repeats):  # interleaved, so that a slow spell hits every writer alike
            for name in WRITERS:
                results[name].append(_run(name, src, outputs[name]))
        print(_table(results))
        print("read s: cellcoadd_dask opens lazily (metadata only) and reads pixels inside the write;")
        print("lsst-images reads every plane first.  peak write: highest RSS during the write alone;")
        print("write +MiB: that peak minus the RSS just before the write.")
        for line in _check_outputs(src, outputs):
            print(line)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
