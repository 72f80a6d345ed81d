"""Full-patch read: cellcoadd_dask against lsst-images, astropy and the decode limit, in one run.

    python benchmarks/read_patch.py [PATCH.fits]

The patch defaults to the corpus's full-size lossless patch (22x22 cells of 150 px, every plane,
GZIP_2: ``cellcoadd_dask.testing.corpus_path("patch/patch_lossless.fits")``, built on first use).
Each reader runs in its own subprocess (so peak memory is its own), four times; wall times and the
peak RSS are printed, with ratios to the decode limit (``decode_limit.py``: every tile of every 2-d
plane read, inflated, unshuffled and byte-swapped on 2 threads in plain numpy/zlib).  Imports happen
before timing; the first run in a process is reported as "first", the median of the later ones as
"warm" (the file is in the page cache either way).  Also printed: the requests and bytes read to open
the patch and to read one cell of one plane.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

LIMIT = "decode limit (2 threads)"
MODULES = (
    "dask.array",
    "cellcoadd_dask",
    "cellcoadd_dask.archives.fits.layout",
    "cellcoadd_dask.archives.fits.tile_tables",
    "imagecodecs",
    "astropy.io.fits",
    "lsst.images.cells",
    "decode_limit",
)
"""Imported by every reader's process before any timing (and so in every peak RSS)."""


def _ours(path: str) -> None:
    import dask

    import cellcoadd_dask as ccd

    coadd = ccd.open_coadd(path)
    arrays = [coadd.image.array, coadd.variance.array, coadd.mask.array]
    arrays += [v.array for v in coadd.mask_fractions.values()]
    arrays += [v.array for v in coadd.noise_realizations]
    dask.compute(*arrays, scheduler="threads", num_workers=2)


def _lsst(path: str) -> None:
    from lsst.images.cells import CellCoadd

    CellCoadd.read(path)


def _astropy(path: str) -> None:
    from astropy.io import fits

    with fits.open(path) as hdus:
        for hdu in hdus[1:]:
            if hdu.is_image and hdu.header.get("NAXIS", 0) == 2 and hdu.name not in ("JSON", "INDEX"):
                _ = hdu.data


def _limit(path: str) -> None:
    from decode_limit import run  # benchmarks/decode_limit.py, next to this script

    run(Path(path), 2)


READERS = {LIMIT: _limit, "cellcoadd_dask": _ours, "lsst-images": _lsst, "astropy": _astropy}


def _child(name: str, path: str, repeats: int) -> None:
    """Run one reader ``repeats`` times in this process: the first run, then the warm ones."""
    import importlib

    # The same modules for every reader, imported before any timing (and in every peak RSS).
    for module in MODULES:
        importlib.import_module(module)
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        READERS[name](path)
        seconds.append(time.perf_counter() - t)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"first": seconds[0], "warm": statistics.median(seconds[1:]), "maxrss_mib": maxrss}))


def _measure(name: str, path: str, repeats: int = 4) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, path, str(repeats)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _laziness(path: str) -> None:
    import cellcoadd_dask as ccd
    from cellcoadd_dask.fetch import fetch_stats

    with fetch_stats() as opened:
        coadd = ccd.open_coadd(path)
    middle = next(c for c in coadd.bounds.cell_indices() if c.i >= 10 and c.j >= 10)
    cell = coadd.grid.bbox_of(middle)
    sy, sx = cell.slice_within(coadd.bbox)
    with fetch_stats() as one:
        coadd.image.array[sy, sx].compute()
    print(
        f"open: {opened.requests} requests, {opened.nbytes:,} bytes; one image cell {middle}: "
        f"{one.requests} requests, {one.nbytes:,} bytes (tile table included)"
    )


def main() -> None:
    if len(sys.argv) > 1:
        path = sys.argv[1]
        if not Path(path).exists():
            sys.exit(f"{path} does not exist")
    else:
        from cellcoadd_dask.testing import corpus_path

        path = str(corpus_path("patch/patch_lossless.fits", progress=True))
    print(f"{path}: {Path(path).stat().st_size:,} bytes")
    results = {name: _measure(name, path) for name in READERS}
    limit = results[LIMIT]
    print(f"{'reader':26s} {'warm s':>7s} {'x limit':>8s} {'first s':>7s} {'x limit':>8s} {'peak RSS MiB':>13s}")
    for name, r in results.items():
        print(
            f"{name:26s} {r['warm']:7.3f} {r['warm'] / limit['warm']:8.2f} {r['first']:7.3f} "
            f"{r['first'] / limit['first']:8.2f} {r['maxrss_mib']:13.0f}"
        )
    _laziness(path)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
