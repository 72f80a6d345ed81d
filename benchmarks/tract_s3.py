"""A tract of 100 distinct full-size patches on a local S3 server: cellcoadd_dask against lsst-images.

    python benchmarks/tract_s3.py [--side 10] [--threads 16] [--repeats 3] [--only NAME...]
                                  [--worker-env NAME=VALUE...]

The tract is ``benchmarks/tract_files.py``'s: ``side`` x ``side`` distinct lossy patches written by
lsst-images (22x22 cells of 150 px, every plane; image and variance RICE_1-quantized), each at
its place in one tract, neighbours overlapping by a cell; about 55 MB each, cached after the
first run.  SeaweedFS is started on loopback as the test suite starts it and the patches are put
in its bucket.  Then every measurement runs in its own fresh process (imports done before any
timing), so that nothing is cached from one to the next and each peak memory is its own; those
that read pixels start with the stored bytes (the server's volumes, the local files) in the page
cache, so that none of them measures the disk:

- open without an index: ``open_tract(urls)`` (first open in the process, then the median of
  ``--repeats`` more), requests and CPU time;
- the index: ``write_tract_index(urls, index)`` once (in the driver's setup), then
  ``open_tract(index)``: requests and seconds;
- lsst-images' opening, for the ratio: ``open_archive(s3://...)`` and the JSON tree of every
  patch from ``--threads`` threads (its partial reads through s3fs);
- a whole-tract overview PNG (1024 px, asinh, patch grid) from the full resolution:
  ``open_tract(index)`` then ``ds.cellcoadd.plot(...).savefig``, on the threaded scheduler;
- the pyramid: ``write_pyramid(ds, s3://.../tract.zarr)`` once, then the same PNG from it, from a
  fresh process that knows only the pyramid's URL (``open_pyramid`` + plot + savefig);
- the tract statistic: float64 per-cell means of image and variance over the tract's inner cells
  (every patch's 20x20 inner cells, the tract mosaic) on a 2-process ``LocalCluster`` (one thread
  each): cellcoadd_dask through the index and ``cell_statistics(..., exclude=(), statistics=["mean"])``
  (every finite pixel, as the others count them; quantized tiles summed from their integers), and
  the same means with xarray (``astype``, ``coarsen``, ``mean``); lsst-images with one task per
  patch reading the ``image`` and ``variance`` components of the patch's inner box
  (``get_component(..., bbox=inner)``); and the decode limit: the same tiles read from the local
  files and decoded by ``benchmarks/lossy_limit.py`` on 2 processes (Rice + dequantization and
  the means, nothing else, no network).

Requests and bytes are ``fetch_stats`` for cellcoadd_dask (summed over the workers) and s3fs's
calls for lsst-images (``benchmarks/s3_counter.py``, in the client and each worker).  The
statistics are compared before the table is printed: to float32 precision (1e-6 of the plane's
largest cell mean), and non-finite where the others are (a missing cell's infinite variance is
NaN here: no finite pixel).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3_counter import install_s3_counter, peak_rss_mib, s3_counts

CELL = 150
PLANES = ("image", "variance")
MIB = 1024 * 1024
ENV = "CELLCOADD_BENCH"
PNG_PIXELS = 1024


def _setup() -> dict[str, Any]:
    return json.loads(os.environ[ENV])


def _options() -> dict[str, Any]:
    s = _setup()
    return {"key": s["key"], "secret": s["secret"], "client_kwargs": {"endpoint_url": s["endpoint"]}}


def warm_imports() -> None:
    """Import what any measurement needs, so that no timing includes imports."""
    import importlib

    for module in (
        "dask.array",
        "distributed",  # dask imports it on a process's first compute when it is installed
        "xarray",
        "zarr",  # the pyramid's store (imported on the first open_pyramid)
        "s3fs",
        "astropy.io.fits",
        "cellcoadd_dask",
        "cellcoadd_dask.tract",
        "cellcoadd_dask.tract_index",
        "cellcoadd_dask.dataset_plot",
        "cellcoadd_dask.pyramid",
        # Imported by the first open (the package keeps them out of its import time).
        "cellcoadd_dask.archives.fits.reader",
        "cellcoadd_dask.archives.input",
        "cellcoadd_dask.fields",
        "cellcoadd_dask.backgrounds",
        "cellcoadd_dask.projection",
        "cellcoadd_dask.streaming",
        "cellcoadd_dask.fetch_backends.s3",
        "cellcoadd_dask.fetch_backends.http",
        "fsspec.implementations.http",
        "matplotlib.pyplot",
        "astropy.visualization.wcsaxes",
        "lsst.images.cells",
        "lsst.images.serialization",
        "lsst.resources.s3",
    ):
        importlib.import_module(module)


@contextlib.contextmanager
def _cluster() -> Iterator[Any]:
    """Two worker processes of one thread each on loopback, counters installed on both."""
    import dask
    from dask.distributed import Client, LocalCluster

    # --worker-env: variables set in (or, empty, removed from) the environment distributed gives
    # its worker processes before they start (``distributed.nanny.pre-spawn-environ``).
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    for name, value in _setup().get("worker_env", {}).items():
        if value == "":
            environ.pop(name, None)
        else:
            environ[name] = value
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(warm_imports)
        client.run(install_s3_counter)
        client.run(s3_counts, True)
        yield client


def _counted(fn: Any) -> dict[str, Any]:
    """``fn()`` timed (wall and CPU) with this process's ``fetch_stats``."""
    import cellcoadd_dask as ccd

    _PNG_SECONDS.clear()
    with ccd.fetch_stats() as stats:
        cpu, t = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"s": wall, "cpu_s": cpu, "requests": stats.requests, "bytes": stats.nbytes, **_PNG_SECONDS}


def _first_and_warm(fn: Any, repeats: int) -> dict[str, Any]:
    first = _counted(fn)
    warm = [_counted(fn) for _ in range(repeats)]
    medians = {f"warm_{k}": statistics.median(r[k] for r in warm) for k in ("s", "render_s") if warm and k in warm[0]}
    return {**first, **medians}


# --------------------------------------------------------------------------- measurements (subprocesses)


def m_open_files(repeats: int) -> dict[str, Any]:
    import cellcoadd_dask as ccd

    s = _setup()
    return _first_and_warm(lambda: ccd.open_tract(s["urls"], storage_options=_options()), repeats)


def m_open_index(repeats: int) -> dict[str, Any]:
    import cellcoadd_dask as ccd

    s = _setup()
    return _first_and_warm(lambda: ccd.open_tract(s["index"], storage_options=_options()), repeats)


def _lsst_tree(url: str) -> Any:
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import open_archive

    with open_archive(url, CellCoadd) as reader:
        return reader.get_tree()


def m_lsst_open(repeats: int) -> dict[str, Any]:
    s = _setup()
    install_s3_counter()

    def run() -> dict[str, Any]:
        s3_counts(reset=True)
        cpu, t = time.process_time(), time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(s["threads"]) as pool:
            list(pool.map(_lsst_tree, s["urls"]))
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        counts = s3_counts()
        return {"s": wall, "cpu_s": cpu, "requests": counts["calls"], "bytes": counts["bytes"]}

    first = run()
    warm = [run()["s"] for _ in range(repeats)]
    return {**first, "warm_s": statistics.median(warm) if warm else None}


_PNG_SECONDS: dict[str, float] = {}
"""Of the last :func:`_png`: ``render_s``, the seconds matplotlib took to draw the figure and encode the PNG."""


def _png(ds: Any, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    figure = ds.cellcoadd.plot("image", pixels=PNG_PIXELS, figsize=(10.24, 10.24), dpi=100)
    t = time.perf_counter()
    figure.savefig(path)  # the plot read its pixels; this draws and encodes
    _PNG_SECONDS["render_s"] = time.perf_counter() - t


def m_overview_full(repeats: int) -> dict[str, Any]:
    import cellcoadd_dask as ccd

    s = _setup()
    return _counted(lambda: _png(ccd.open_tract(s["index"], storage_options=_options()), s["png_full"]))


def m_pyramid(repeats: int) -> dict[str, Any]:
    import cellcoadd_dask as ccd

    s = _setup()
    return _counted(
        lambda: ccd.write_pyramid(
            ccd.open_tract(s["index"], storage_options=_options()), s["pyramid"], storage_options=_options()
        )
    )


def m_overview_pyramid(repeats: int) -> dict[str, Any]:
    import cellcoadd_dask as ccd

    s = _setup()
    return _first_and_warm(
        lambda: _png(ccd.open_pyramid(s["pyramid"], pixels=PNG_PIXELS, storage_options=_options()), s["png_pyramid"]),
        repeats,
    )


def m_stat_ours(repeats: int) -> dict[str, Any]:
    import dask

    import cellcoadd_dask as ccd

    s = _setup()
    with _cluster() as client:
        t = time.perf_counter()
        ds = ccd.open_tract(s["index"], storage_options=_options())
        per_cell = [ccd.cell_statistics(ds, plane, exclude=(), statistics=["mean"], compute=False) for plane in PLANES]
        with ccd.fetch_stats(client) as stats:
            result = dask.compute(*per_cell)
        wall = time.perf_counter() - t
        peaks = client.run(peak_rss_mib)
    np.save(s["out"], np.stack([r["mean"].values for r in result]))
    return {"s": wall, "requests": stats.requests, "bytes": stats.nbytes, "worker_peak_mib": max(peaks.values())}


def m_stat_xarray(repeats: int) -> dict[str, Any]:
    import dask

    import cellcoadd_dask as ccd

    s = _setup()
    with _cluster() as client:
        t = time.perf_counter()
        ds = ccd.open_tract(s["index"], storage_options=_options())
        means = ds[list(PLANES)].astype(np.float64).coarsen(y=CELL, x=CELL).mean()
        with ccd.fetch_stats(client) as stats:
            (result,) = dask.compute(means)
        wall = time.perf_counter() - t
        peaks = client.run(peak_rss_mib)
    np.save(s["out"], np.stack([result[p].values for p in PLANES]))
    return {"s": wall, "requests": stats.requests, "bytes": stats.nbytes, "worker_peak_mib": max(peaks.values())}


def _lsst_inner_means(url: str) -> np.ndarray:
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import open_archive

    with open_archive(url, CellCoadd) as reader:
        inner = reader.get_tree().patch.inner_bbox
        planes = [reader.get_component(plane, bbox=inner).array for plane in PLANES]
    ny, nx = planes[0].shape[0] // CELL, planes[0].shape[1] // CELL
    return np.stack([p.astype(np.float64).reshape(ny, CELL, nx, CELL).mean(axis=(1, 3)) for p in planes])


def _mosaic(per_patch: list[np.ndarray], side: int) -> np.ndarray:
    """Per-patch ``(planes, 20, 20)`` arrays, row-major by patch index -> ``(planes, 20 side, 20 side)``."""
    rows = [np.concatenate(per_patch[r * side : (r + 1) * side], axis=2) for r in range(side)]
    return np.concatenate(rows, axis=1)


def m_stat_lsst(repeats: int) -> dict[str, Any]:
    s = _setup()
    with _cluster() as client:
        t = time.perf_counter()
        results = client.gather(client.map(_lsst_inner_means, s["urls"], pure=False))
        wall = time.perf_counter() - t
        counts = client.run(s3_counts)
        peaks = client.run(peak_rss_mib)
    np.save(s["out"], _mosaic(results, s["side"]))
    return {
        "s": wall,
        "requests": sum(c["calls"] for c in counts.values()),
        "bytes": sum(c["bytes"] for c in counts.values()),
        "worker_peak_mib": max(peaks.values()),
    }


def m_stat_limit(repeats: int) -> dict[str, Any]:
    from lossy_limit import tract_statistic

    s = _setup()
    results, wall = tract_statistic([Path(p) for p in s["paths"]], processes=2, border=1)
    np.save(s["out"], _mosaic(list(results), s["side"]))
    return {"s": wall, "requests": None, "bytes": None}


MEASUREMENTS = {
    "open-files": m_open_files,
    "open-index": m_open_index,
    "lsst-open": m_lsst_open,
    "overview-full": m_overview_full,
    "pyramid": m_pyramid,
    "overview-pyramid": m_overview_pyramid,
    "stat-ours": m_stat_ours,
    "stat-xarray": m_stat_xarray,
    "stat-lsst": m_stat_lsst,
    "stat-limit": m_stat_limit,
}


def child(name: str, repeats: int) -> None:
    """Entry point of a measurement subprocess; prints one JSON line."""
    warm_imports()
    result = MEASUREMENTS[name](repeats)
    result["client_peak_mib"] = peak_rss_mib()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- driver


READS_PIXELS = ("overview-full", "pyramid", "stat-ours", "stat-xarray", "stat-lsst", "stat-limit")
"""Measurements that read the tract's tiles: they start with its bytes in the page cache."""


def _warm_cache(roots: list[Path]) -> float:
    """Read every file under ``roots`` once (the server's volumes, the local tract); returns the seconds.

    The kernel may drop cold pages between measurements (this machine runs proactive reclaim),
    and a measurement that then reads from disk measures the disk: every measurement that reads
    pixels, the decode limit included, starts with the stored bytes in memory.
    """
    t = time.perf_counter()
    buffer = bytearray(8 * MIB)
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file():
                with path.open("rb", buffering=0) as stream:
                    while stream.readinto(buffer):
                        pass
    return time.perf_counter() - t


def _measure(name: str, setup: dict[str, Any], repeats: int) -> dict[str, Any]:
    env = {
        **os.environ,
        ENV: json.dumps(setup),
        # lsst-images reaches S3 through lsst.resources, which reads its credentials and endpoint from here.
        "AWS_ACCESS_KEY_ID": setup["key"],
        "AWS_SECRET_ACCESS_KEY": setup["secret"],
        "S3_ENDPOINT_URL": setup["endpoint"],
    }
    cmd = [sys.executable, __file__, "--child", name, str(repeats)]
    # What earlier steps wrote (the tract, the pyramid: gigabytes) is written out to disk first,
    # so no measurement pays for another's write-back.
    os.sync()
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {name}: {result['s']:.2f} s (process done in {time.perf_counter() - t:.0f} s)", flush=True)
    return result


def _fill(server: Any, paths: list[Path]) -> list[str]:
    fs = server.filesystem()
    keys = [f"{server.bucket}/tract/{p.name}" for p in paths]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda pk: fs.put_file(str(pk[0]), pk[1]), zip(paths, keys, strict=True)))
    return [f"s3://{key}" for key in keys]


def _agree(ours: np.ndarray, other: np.ndarray) -> bool:
    """Per-cell means ``(planes, ny, nx)`` equal to float32 precision, non-finite in the same cells."""
    finite = np.isfinite(other)
    if ours.shape != other.shape or not np.array_equal(np.isfinite(ours), finite):
        return False
    scale = np.array([np.abs(p[f]).max() if f.any() else 0.0 for p, f in zip(other, finite, strict=True)])
    return bool((np.abs(np.where(finite, ours - other, 0.0)) <= 1e-6 * scale[:, None, None]).all())


def _report(r: dict[str, dict[str, Any]], tract_bytes: int, index_s: float, agree: str) -> None:
    def row(label: str, value: str, goal: str = "") -> None:
        print(f"| {label} | {value} | {goal} |")

    o, i, lo = r["open-files"], r["open-index"], r["lsst-open"]
    full, pyr, build = r["overview-full"], r["overview-pyramid"], r["pyramid"]
    so, sl, sd = r["stat-ours"], r["stat-lsst"], r["stat-limit"]
    peak = max(max(x["client_peak_mib"], x.get("worker_peak_mib", 0)) for x in r.values())
    print("\n| measurement | result | goal |\n|---|---|---|")
    row(
        "open through the index",
        f"{i['requests']} requests, {i['s']:.3f} s first / {i['warm_s']:.3f} s warm; "
        f"{i['s'] / lo['s']:.3f}x lsst-images' opening ({lo['s']:.2f} s, {lo['requests']} requests)",
        f"<= 2 requests, <= 0.1x: {'met' if i['requests'] <= 2 and i['s'] <= 0.1 * lo['s'] else 'missed'}",
    )
    row(
        "open without an index",
        f"{o['s']:.3f} s first / {o['warm_s']:.3f} s warm ({o['cpu_s']:.2f} s CPU), {o['requests']} requests",
        f"<= 0.5 s: {'met' if o['s'] <= 0.5 else 'missed'}",
    )
    row("writing the index (once)", f"{index_s:.2f} s")
    row(
        "overview PNG from full resolution",
        f"{full['s']:.2f} s (drawing and PNG encoding {full['render_s']:.2f} s), {full['bytes']:,} bytes in "
        f"{full['requests']} "
        f"requests ({full['bytes'] / tract_bytes:.1%} of the tract)",
    )
    row("writing the pyramid (once)", f"{build['s']:.1f} s")
    row(
        "overview PNG from the pyramid",
        f"{pyr['s']:.3f} s first / {pyr['warm_s']:.3f} s warm (of which drawing and PNG encoding "
        f"{pyr['render_s']:.3f} / {pyr['warm_render_s']:.3f} s), {pyr['bytes']:,} "
        f"bytes in {pyr['requests']} requests ({pyr['bytes'] / tract_bytes:.2%} of the tract)",
        f"<= 1 s, <= 1 %: {'met' if pyr['s'] <= 1 and pyr['bytes'] <= 0.01 * tract_bytes else 'missed'}",
    )
    row(
        "tract statistic, cellcoadd_dask",
        f"{so['s']:.1f} s, {so['bytes']:,} bytes, {so['requests']} requests; "
        f"{so['s'] / sl['s']:.2f}x lsst-images, {so['s'] / sd['s']:.2f}x the decode limit",
        f"<= 0.5x: {'met' if so['s'] <= 0.5 * sl['s'] else 'missed'}",
    )
    if "stat-xarray" in r:
        sx = r["stat-xarray"]
        row(
            "the same with xarray (astype, coarsen, mean)",
            f"{sx['s']:.1f} s, {sx['bytes']:,} bytes, {sx['requests']} requests; {sx['s'] / sl['s']:.2f}x lsst-images",
        )
    row("tract statistic, lsst-images", f"{sl['s']:.1f} s, {sl['bytes']:,} bytes, {sl['requests']} requests")
    row("tract statistic, decode limit", f"{sd['s']:.1f} s (local files, 2 processes, no network)")
    row("peak memory (any process)", f"{peak:.0f} MiB", f"<= 2 GiB: {'met' if peak <= 2048 else 'missed'}")
    print(f"\nper-cell statistics agree: {agree}; tract: {tract_bytes:,} bytes")


def main() -> None:
    from tract_files import tract_files

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=10, help="patches per side (default 10: 100 patches)")
    parser.add_argument("--threads", type=int, default=16, help="lsst-images' opening threads (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats of the opening measurements")
    parser.add_argument("--only", nargs="+", choices=list(MEASUREMENTS), help="run only these (results as JSON)")
    parser.add_argument("--worker-env", nargs="+", default=[], metavar="NAME=VALUE",
                        help="set (or, with no value, remove) a variable of the cluster's worker processes, "
                             "e.g. MALLOC_MMAP_THRESHOLD_=33554432 (default: distributed's pre-spawn environment)")
    args = parser.parse_args()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    paths = tract_files(args.side)
    tract_bytes = sum(p.stat().st_size for p in paths)
    with tempfile.TemporaryDirectory(prefix="tract-s3-", dir="/tmp") as tmp:
        work = Path(tmp)
        # The server holds the tract and its pyramid (whose full-resolution level is about as big).
        if shutil.disk_usage(work).free < 4 * tract_bytes:
            sys.exit(f"{work}: less than {4 * tract_bytes / 2**30:.1f} GiB free")
        (work / "s3").mkdir()
        from cellcoadd_dask.testing.servers import VOLUME_SIZE_MB, run_seaweedfs

        with run_seaweedfs(work / "s3", max_volumes=4 * tract_bytes // (VOLUME_SIZE_MB * MIB) + 16) as server:
            t = time.perf_counter()
            urls = _fill(server, paths)
            print(f"{len(urls)} patches ({tract_bytes:,} bytes) put in {time.perf_counter() - t:.0f} s", flush=True)
            setup = {
                "urls": urls,
                "paths": [str(p) for p in paths],
                "side": args.side,
                "threads": args.threads,
                "worker_env": dict(item.partition("=")[::2] for item in args.worker_env),
                "endpoint": server.endpoint_url,
                "key": server.key,
                "secret": server.secret,
                "index": f"s3://{server.bucket}/tract.ccdtidx",
                "pyramid": f"s3://{server.bucket}/tract.zarr",
                "png_full": str(work / "full.png"),
                "png_pyramid": str(work / "pyramid.png"),
            }
            import cellcoadd_dask as ccd

            t = time.perf_counter()
            ccd.write_tract_index(
                urls,
                setup["index"],
                storage_options={
                    "key": server.key,
                    "secret": server.secret,
                    "client_kwargs": {"endpoint_url": server.endpoint_url},
                },
            )
            index_s = time.perf_counter() - t
            results = {}
            for name in args.only or MEASUREMENTS:
                if name in READS_PIXELS:
                    warm = _warm_cache([work / "s3", *paths])
                    print(f"  (page cache warmed in {warm:.0f} s)", flush=True)
                results[name] = _measure(name, {**setup, "out": str(work / f"{name}.npy")}, args.repeats)
        stats = {name: np.load(work / f"{name}.npy") for name in MEASUREMENTS if name.startswith("stat-")
                 and name in results}
        agree = ", ".join(
            f"{name} {_agree(stats['stat-ours'], value)}" for name, value in stats.items() if name != "stat-ours"
        ) if "stat-ours" in stats else "not measured"
        if args.only:
            print(json.dumps(results, indent=1))
            print("per-cell statistics agree:", agree)
            return
    _report(results, tract_bytes, index_s, agree)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
