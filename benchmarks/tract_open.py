"""Opening a tract of N distinct patches on a local S3 server: from the files, and through a tract index.

    python benchmarks/tract_open.py [--side 10] [--repeat 3]

Writes a ``side`` x ``side`` tract of small test patches (lsst-images' writer, through
``cellcoadd_dask.testing``: 3x3 inner cells of 20 px, every plane) into a SeaweedFS bucket
started on loopback as the test suite starts it, then times in this process:

- ``open_tract(urls)``: each FITS patch opened to its container (2 requests), checked on its
  tree, the coadds built on first read;
- ``write_tract_index(urls, index)`` once, then ``open_tract(index)``;
- a one-cell read after each open (requests and bytes).

Requests are ``fetch_stats`` round trips (every byte goes through the fetch layer).  Opening
costs per-patch metadata requests and tree parsing, not pixel bytes, so small patches give the
same request counts as full-size ones; trees and tile tables of full patches are larger, so
parsing takes somewhat longer per patch (see ``benchmarks/tract_s3.py`` for full-size patches).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _write_patches(directory: Path, side: int) -> list[Path]:
    from cellcoadd_dask.testing._tracts import make_test_tract_patch

    paths = []
    for y in range(side):
        for x in range(side):
            path = directory / f"patch_{y}_{x}.fits"
            make_test_tract_patch((y, x), seed=1000 + y * side + x).write(str(path))
            paths.append(path)
    return paths


def _timed(fn: Any, repeat: int) -> tuple[float, Any, Any]:
    import cellcoadd_dask as ccd

    times: list[float] = []
    runs = []
    for _ in range(repeat):
        with ccd.fetch_stats() as counted:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        runs.append((result, counted))
    return statistics.median(times), runs[-1][0], runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=10, help="patches per side (default 10: 100 patches)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (median shown)")
    args = parser.parse_args()

    import cellcoadd_dask as ccd
    from cellcoadd_dask.testing.servers import run_seaweedfs

    with tempfile.TemporaryDirectory(prefix="tract-open-") as scratch:
        work = Path(scratch)
        (work / "files").mkdir()
        start = time.perf_counter()
        paths = _write_patches(work / "files", args.side)
        print(f"wrote {len(paths)} patches in {time.perf_counter() - start:.1f} s")
        (work / "s3").mkdir()
        with run_seaweedfs(work / "s3") as server:
            options = server.storage_options
            urls = [server.upload(p, f"tract/{p.name}") for p in paths]
            index = f"s3://{server.bucket}/tract/tract.idx"
            start = time.perf_counter()
            ccd.write_tract_index(urls, index, storage_options=options)
            print(f"index written in {time.perf_counter() - start:.2f} s")
            rows = []
            for label, target in (("files", urls), ("index", index)):
                seconds, ds, stats = _timed(lambda t=target: ccd.open_tract(t, storage_options=options), args.repeat)
                y0, x0 = int(ds["y"][0]), int(ds["x"][0])
                with ccd.fetch_stats() as cell:
                    ds["image"].sel(y=slice(y0, y0 + 19), x=slice(x0, x0 + 19)).values  # noqa: B018
                rows.append((label, seconds, stats.requests, stats.nbytes, cell.requests, cell.nbytes))
    print(f"\n{len(paths)} patches on loopback S3 (median of {args.repeat})")
    print(f"{'open from':<8} {'seconds':>8} {'requests':>9} {'bytes':>12} {'cell req':>9} {'cell bytes':>11}")
    for label, seconds, requests, nbytes, cell_requests, cell_bytes in rows:
        print(f"{label:<8} {seconds:>8.3f} {requests:>9} {nbytes:>12,} {cell_requests:>9} {cell_bytes:>11,}")


if __name__ == "__main__":
    main()
