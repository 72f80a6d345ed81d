"""A 10x10 tract of distinct full-size lossy patches, written by lsst-images and cached.

    python benchmarks/tract_files.py [--side 10] [--processes 2]

Patch ``(y, x)`` is ``cellcoadd_dask.testing._patch.write_tract_patch``: the corpus's full-size
patch (22x22 cells of 150 px, every plane, image and variance RICE_1-quantized) with its grid at
``3000 * (y, x)`` in one tract, patch id ``10 * y + x`` and pixels seeded by its index, so
neighbours overlap by one cell as a skymap's patches do.  Writing one takes about 8 s; the files
(about 55 MB each) are kept under ``$CELLCOADD_CORPUS_CACHE/../bench-tract-<key>/`` (the key
hashes lsst-images' version and the generator's source), so later runs reuse them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import importlib.metadata
import sys
import time
from pathlib import Path


def tract_directory() -> Path:
    """Cache directory of the benchmark tract for this generator and lsst-images version."""
    from cellcoadd_dask.testing import _patch
    from cellcoadd_dask.testing.corpus import corpus_cache_root

    digest = hashlib.sha256(Path(_patch.__file__).read_bytes())
    digest.update(importlib.metadata.version("lsst-images").encode())
    return corpus_cache_root().parent / f"bench-tract-{digest.hexdigest()[:12]}"


def patch_path(directory: Path, index: tuple[int, int]) -> Path:
    """Path of patch ``index`` in ``directory``."""
    return directory / f"patch_{index[0]}_{index[1]}.fits"


def _write_one(directory: str, index: tuple[int, int]) -> float:
    from cellcoadd_dask.testing._patch import write_tract_patch

    final = patch_path(Path(directory), index)
    partial = final.with_suffix(".part.fits")
    t = time.perf_counter()
    write_tract_patch(partial, index)
    partial.replace(final)
    return time.perf_counter() - t


def tract_files(side: int = 10, processes: int = 2, *, progress: bool = True) -> list[Path]:
    """The ``side`` x ``side`` patches' paths (row-major), writing those not cached yet."""
    directory = tract_directory()
    directory.mkdir(parents=True, exist_ok=True)
    indexes = [(y, x) for y in range(side) for x in range(side)]
    todo = [index for index in indexes if not patch_path(directory, index).exists()]
    if todo:
        if progress:
            print(f"writing {len(todo)} patches into {directory} ({processes} processes) ...", flush=True)
        t = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(processes) as pool:
            futures = [pool.submit(_write_one, str(directory), index) for index in todo]
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                future.result()
                if progress and (done % 10 == 0 or done == len(todo)):
                    print(f"  {done}/{len(todo)} in {time.perf_counter() - t:.0f} s", flush=True)
    return [patch_path(directory, index) for index in indexes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=10, help="patches per side (default 10)")
    parser.add_argument("--processes", type=int, default=2, help="writer processes (default 2)")
    args = parser.parse_args()
    paths = tract_files(args.side, args.processes)
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} patches, {total / 1e9:.2f} GB in {paths[0].parent}", file=sys.stderr)


if __name__ == "__main__":
    main()
