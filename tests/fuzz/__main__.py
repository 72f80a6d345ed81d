"""``python -m fuzz -n N``: N cases over the archives; prints the outcome table and the distinct failures."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from fuzz.run import ARCHIVES, Report, fuzz


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("-n", type=int, default=600, help="cases in all, split evenly over the archives")
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--archives", default=",".join(ARCHIVES), help="comma-separated: fits,json,zarr")
    args = parser.parse_args()
    from paths import REFERENCE_DIR

    archives = tuple(a for a in args.archives.split(",") if a)
    per_archive = max(1, args.n // len(archives))
    last = [time.perf_counter(), 0]

    def progress(report: Report) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"... {report.cases} cases, failures so far: {sorted(report.failing()) or 'none'}", flush=True)
            if report.cases // 2000 > last[1]:
                last[1] = report.cases // 2000
                print(report.table(), flush=True)

    with tempfile.TemporaryDirectory(prefix="cellcoadd-fuzz-") as directory:
        report = fuzz(REFERENCE_DIR, Path(directory), per_archive, args.seed, args.workers, archives, progress)
    wall = getattr(report, "wall", 0.0)
    print(f"\n{report.cases} cases in {wall:.0f} s ({args.workers} workers; "
          f"{report.seconds / max(1, report.cases) * 1000:.0f} ms per case in a child), seed {args.seed}\n")
    print(report.table())
    print("\nDistinct failures (one example each):" if report.examples else "\nNo failures.")
    print(report.failures())
    return 1 if report.failing() else 0


if __name__ == "__main__":
    sys.exit(main())
