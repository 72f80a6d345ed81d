"""A 100-patch tract on a local S3 server: cellcoadd_dask against lsst-images.

    python benchmarks/tract_s3.py [--patches N] [--threads T] [--full-read K] [PATCH.fits]

Starts SeaweedFS on loopback the way the test suite does
(``cellcoadd_dask.testing.servers.run_seaweedfs``), puts one lossy full-size patch in the bucket
(by default the corpus's: 22x22 cells of 150 px, every plane, image, noise realizations and variance
RICE_1-quantized, ``cellcoadd_dask.testing.corpus_path("patch/patch_lossy.fits")``, built on
first use) and copies it server-side under ``tract/patch-000.fits`` ... so that the tract holds N
objects (100 by default; ``--patches 4`` for a quick check).  Then, each reader in its own
subprocess (so its peak memory is its own):

- cellcoadd_dask: open every patch with ``open_coadd(..., preload=True)`` from a pool of T
  threads; then, on a 2-process ``LocalCluster`` (one thread each), the per-cell float64
  means of the image and variance planes of every patch in one ``dask.compute``;
- lsst-images, component reads: ``open_archive(s3://...)`` + the JSON tree from T threads
  (its partial reads go through s3fs); then the same statistic on the same cluster layout,
  one task per patch reading only the ``image`` and ``variance`` components;
- lsst-images, whole-file reads: ``CellCoadd.read`` of a local download of the object, the
  way it reads a file its S3 layer cannot stream without boto3; timed on K patches and
  extrapolated linearly to N (labelled so).

Bytes and requests are counted in every process that talks to the server (the client and
each worker) by wrapping s3fs's one entry point for S3 calls, so both tools are measured
the same way; cellcoadd_dask's own counters (``fetch_stats``) give its batched round trips
(lsst-images' requests to open a file are made one after the other: each is a round trip).
"open all CPU s" is the CPU time of the opening process: near the wall time, opening is
bound by Python work under the GIL rather than by the network.
The per-cell results of the readers are compared before the table is printed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

CELL = 150
PLANES = ("image", "variance")
ENV_BUCKET = "CELLCOADD_BENCH_BUCKET"
MIB = 1024 * 1024


# --------------------------------------------------------------------------- S3 traffic counter


class _CountedBody:
    """A ``GetObject`` body that adds the bytes actually read from it to ``counts["bytes"]``."""

    def __init__(self, body: Any, counts: dict[str, int], lock: threading.Lock) -> None:
        self._body = body
        self._counts = counts
        self._lock = lock

    async def read(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = await self._body.read(*args, **kwargs)
        with self._lock:
            self._counts["bytes"] += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


def install_s3_counter() -> None:
    """Count every S3 call s3fs makes in this process, and the body bytes read from ``GetObject`` answers.

    The counts live on the s3fs class itself so that they survive between separate
    ``client.run`` calls on a worker.  Installing twice is harmless.
    """
    from s3fs import S3FileSystem

    if getattr(S3FileSystem, "_bench_counts", None) is not None:
        return
    original = S3FileSystem._call_s3
    lock = threading.Lock()
    counts = {"calls": 0, "get_object": 0, "bytes": 0}

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        out = await original(self, method, *args, **kwargs)
        with lock:
            counts["calls"] += 1
            if method == "get_object":
                counts["get_object"] += 1
        if method == "get_object" and "Body" in out:
            out["Body"] = _CountedBody(out["Body"], counts, lock)
        return out

    S3FileSystem._call_s3 = counted
    S3FileSystem._bench_counts = counts
    S3FileSystem._bench_lock = lock


def s3_counts(reset: bool = False) -> dict[str, int]:
    """This process's S3 counts since the last reset (installing the counter if needed)."""
    from s3fs import S3FileSystem

    install_s3_counter()
    counts: dict[str, int] = S3FileSystem._bench_counts
    with S3FileSystem._bench_lock:
        snapshot = dict(counts)
        if reset:
            for key in counts:
                counts[key] = 0
    return snapshot


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- per-cell statistic


def warm_imports() -> None:
    """Import what either reader needs, so that no timing includes imports and peak memories compare."""
    import importlib

    for module in (
        "dask.array",
        "s3fs",
        "astropy.io.fits",
        "cellcoadd_dask",
        "lsst.images.cells",
        "lsst.images.serialization",
        "lsst.resources.s3",
    ):
        importlib.import_module(module)


def cell_means(array: np.ndarray) -> np.ndarray:
    """Float64 mean of every 150x150 cell of a patch-sized plane."""
    ny, nx = array.shape[0] // CELL, array.shape[1] // CELL
    return array.astype(np.float64).reshape(ny, CELL, nx, CELL).mean(axis=(1, 3))


def _urls(n: int) -> list[str]:
    bucket = os.environ[ENV_BUCKET]
    return [f"s3://{bucket}/tract/patch-{k:03d}.fits" for k in range(n)]


def _storage_options() -> dict[str, Any]:
    return {
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": os.environ["S3_ENDPOINT_URL"]},
    }


@contextlib.contextmanager
def _cluster() -> Iterator[Any]:
    """Two worker processes of one thread each on loopback, counters installed on both."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(warm_imports)
        client.run(install_s3_counter)
        client.run(s3_counts, True)
        yield client


def _worker_report(client: Any) -> dict[str, Any]:
    counts = client.run(s3_counts)
    peaks = client.run(peak_rss_mib)
    return {
        "worker_bytes": sum(c["bytes"] for c in counts.values()),
        "worker_calls": sum(c["calls"] for c in counts.values()),
        "worker_peak_mib": max(peaks.values()),
    }


def _timed_pool(fn: Callable[[str], Any], urls: list[str], threads: int) -> tuple[list[Any], float, float]:
    """``fn`` of every URL from a pool of ``threads``: the results, wall seconds and this process's CPU seconds."""
    cpu, t = time.process_time(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        out = list(pool.map(fn, urls))
    return out, time.perf_counter() - t, time.process_time() - cpu


# --------------------------------------------------------------------------- the readers (subprocesses)


def run_ours(n: int, threads: int, out: Path) -> dict[str, Any]:
    """cellcoadd_dask: open all patches with preloaded metadata, then the tract statistic on 2 workers."""
    import dask
    import dask.array as da

    import cellcoadd_dask as ccd
    from cellcoadd_dask.fetch import fetch_stats

    urls = _urls(n)
    options = _storage_options()
    install_s3_counter()
    s3_counts(reset=True)
    with fetch_stats() as opened:
        coadds, open_s, open_cpu = _timed_pool(
            lambda u: ccd.open_coadd(u, storage_options=options, preload=True), urls, threads
        )
    at_open = s3_counts(reset=True)
    client_after_open = peak_rss_mib()

    def per_cell(array: Any) -> Any:
        return da.coarsen(np.mean, array.astype(np.float64), {0: CELL, 1: CELL})

    with _cluster() as client:
        stacks = [da.stack([per_cell(getattr(c, plane).array) for c in coadds]) for plane in PLANES]
        with fetch_stats(client) as computed:
            t = time.perf_counter()
            results = dask.compute(*stacks)
            stat_s = time.perf_counter() - t
        report = _worker_report(client)
    client_during = s3_counts()
    np.save(out, np.stack(results, axis=1))
    return {
        "open_s": open_s,
        "open_cpu_s": open_cpu,
        "open_round_trips": opened.calls / n,
        # cellcoadd_dask reads S3 through presigned ranged GETs, not s3fs calls: its own counters
        # (the same ones the tests use) give its requests and bytes.
        "open_requests": opened.requests / n,
        "open_bytes": opened.nbytes / n,
        "open_s3fs_calls": at_open["calls"] / n,
        "open_fetch_stats_bytes": opened.nbytes / n,
        "stat_s": stat_s,
        "stat_bytes": computed.nbytes,
        "stat_requests": computed.requests,
        "stat_round_trips": computed.calls,
        "stat_fetch_stats_bytes": computed.nbytes,
        "client_stat_bytes": client_during["bytes"],
        "worker_peak_mib": report["worker_peak_mib"],
        "client_peak_mib": peak_rss_mib(),
        "client_after_open_mib": client_after_open,
        "patches_timed": n,
    }


def _lsst_open(url: str) -> Any:
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import open_archive

    with open_archive(url, CellCoadd) as reader:
        return reader.get_tree()


def _lsst_components(url: str) -> np.ndarray:
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import open_archive

    with open_archive(url, CellCoadd) as reader:
        return np.stack([cell_means(reader.get_component(plane).array) for plane in PLANES])


def _lsst_whole(url: str) -> np.ndarray:
    import s3fs
    from lsst.images.cells import CellCoadd

    fs = s3fs.S3FileSystem(**_storage_options())
    with tempfile.TemporaryDirectory(dir=os.environ.get("CELLCOADD_BENCH_TMP")) as tmp:
        local = Path(tmp) / "patch.fits"
        fs.get_file(url, str(local))
        coadd = CellCoadd.read(str(local))
        return np.stack([cell_means(getattr(coadd, plane).array) for plane in PLANES])


def run_lsst(n: int, threads: int, out: Path, whole: bool) -> dict[str, Any]:
    """lsst-images: open all (tree only), then per-patch reads on 2 workers (components, or whole files)."""
    urls = _urls(n)
    install_s3_counter()
    s3_counts(reset=True)
    opened_at = open_s = open_cpu = None
    if not whole:
        _, open_s, open_cpu = _timed_pool(_lsst_open, urls, threads)
        opened_at = s3_counts(reset=True)
    client_after_open = peak_rss_mib()
    with _cluster() as client:
        t = time.perf_counter()
        results = client.gather(client.map(_lsst_whole if whole else _lsst_components, urls, pure=False))
        stat_s = time.perf_counter() - t
        report = _worker_report(client)
    np.save(out, np.stack(results))
    return {
        "open_s": open_s,
        "open_cpu_s": open_cpu,
        "open_round_trips": None if opened_at is None else opened_at["calls"] / n,
        "open_requests": None if opened_at is None else opened_at["calls"] / n,
        "open_bytes": None if opened_at is None else opened_at["bytes"] / n,
        "stat_s": stat_s,
        "stat_bytes": report["worker_bytes"],
        "stat_requests": report["worker_calls"],
        "worker_peak_mib": report["worker_peak_mib"],
        "client_peak_mib": peak_rss_mib(),
        "client_after_open_mib": client_after_open,
        "patches_timed": n,
    }


def child(argv: list[str]) -> None:
    """Entry point of a reader subprocess: ``--child NAME N THREADS OUT.npy``; prints one JSON line."""
    name, n, threads, out = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    warm_imports()
    if name == "ours":
        result = run_ours(n, threads, out)
    else:
        result = run_lsst(n, threads, out, whole=name == "lsst-whole")
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- driver


def _patch(path: Path | None) -> Path:
    """The patch to copy: ``path``, or the corpus's lossy patch (built on first use)."""
    if path is None:
        from cellcoadd_dask.testing import corpus_path

        return corpus_path("patch/patch_lossy.fits", progress=True)
    if not path.exists():
        sys.exit(f"{path} does not exist")
    return path


@contextlib.contextmanager
def _s3_server(workdir: Path, capacity: int) -> Iterator[Any]:
    """The test suite's SeaweedFS server, with room for ``capacity`` bytes."""
    from cellcoadd_dask.testing.servers import VOLUME_SIZE_MB, run_seaweedfs

    with run_seaweedfs(workdir, max_volumes=capacity // (VOLUME_SIZE_MB * MIB) + 16) as server:
        yield server


def _fill(server: Any, patch: Path, n: int) -> float:
    fs = server.filesystem()
    keys = [f"{server.bucket}/tract/patch-{k:03d}.fits" for k in range(n)]
    t = time.perf_counter()
    fs.put_file(str(patch), keys[0])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda key: fs.copy(keys[0], key), keys[1:]))
    sizes = {fs.info(key)["size"] for key in keys}
    if sizes != {patch.stat().st_size}:
        raise RuntimeError(f"objects in the bucket have sizes {sizes}, not {patch.stat().st_size}")
    return time.perf_counter() - t


def _measure(name: str, n: int, threads: int, out: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, str(n), str(threads), str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {name}: done in {time.perf_counter() - t:.1f} s (subprocess)", flush=True)
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.3g}"


def _table(rows: dict[str, dict[str, Any]], n: int) -> None:
    columns = [
        ("open all s", "open_s", ".2f"),
        ("open all CPU s", "open_cpu_s", ".2f"),
        ("round trips/file", "open_round_trips", ".2f"),
        ("requests/file", "open_requests", ".2f"),
        ("bytes/file at open", "open_bytes", ",.0f"),
        ("statistic s", "stat_s", ".1f"),
        ("statistic bytes", "stat_bytes", ",.0f"),
        ("statistic requests", "stat_requests", ",.0f"),
        ("worker peak MiB", "worker_peak_mib", ".0f"),
        ("client peak MiB", "client_peak_mib", ".0f"),
    ]
    names = list(rows)
    width = max(len(c[0]) for c in columns) + 2
    cell = max(22, *(len(x) for x in names))
    print("\n" + "".ljust(width) + "".join(x.rjust(cell) for x in names))
    for label, key, spec in columns:
        print(label.ljust(width) + "".join(_fmt(rows[x].get(key), spec).rjust(cell) for x in names))
    ours = rows[names[0]]
    print(f"\nratios {names[0]} / lsst-images (below 1: {names[0]} is faster / smaller)")
    print("".ljust(width) + "".join(x.rjust(cell) for x in names[1:]))
    for label, key, _ in columns:
        if key in ("client_peak_mib",):
            continue
        print(label.ljust(width) + "".join(_ratio(ours.get(key), rows[x].get(key)).rjust(cell) for x in names[1:]))
    print(f"\n{n} patches; statistic = float64 per-cell means of {' and '.join(PLANES)} ({n} x 484 cells each).")


def _extrapolate(result: dict[str, Any], n: int) -> dict[str, Any]:
    k = result["patches_timed"]
    scaled = dict(result)
    for key in ("stat_s", "stat_bytes", "stat_requests"):
        scaled[key] = result[key] * n / k
    return scaled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch", nargs="?", type=Path, help="lossy patch to copy (default: the corpus's)")
    parser.add_argument("--patches", type=int, default=100, help="objects in the tract (default 100)")
    parser.add_argument("--threads", type=int, default=16, help="threads opening patches (default 16)")
    parser.add_argument("--full-read", type=int, default=4, help="patches read whole by lsst-images (default 4)")
    args = parser.parse_args()
    n = args.patches
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    with tempfile.TemporaryDirectory(prefix="tract-s3-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        patch = _patch(args.patch)
        size = patch.stat().st_size
        free = shutil.disk_usage(workdir).free
        if free < 1.5 * n * size:
            sys.exit(f"{workdir}: {free / 2**30:.1f} GiB free, {1.5 * n * size / 2**30:.1f} GiB wanted")
        print(f"{patch}: {size:,} bytes; {free / 2**30:.0f} GiB free in {workdir}", flush=True)
        (workdir / "s3").mkdir()
        with _s3_server(workdir / "s3", 2 * n * size) as server:
            print(f"S3 server at {server.endpoint_url}; filling {n} objects ...", flush=True)
            print(f"  filled in {_fill(server, patch, n):.1f} s", flush=True)
            env = {
                **os.environ,
                ENV_BUCKET: server.bucket,
                "S3_ENDPOINT_URL": server.endpoint_url,
                "AWS_ACCESS_KEY_ID": server.key,
                "AWS_SECRET_ACCESS_KEY": server.secret,
                "CELLCOADD_BENCH_TMP": str(workdir),
            }
            outs = {name: workdir / f"{name}.npy" for name in ("ours", "lsst-components", "lsst-whole")}
            k = min(args.full_read, n)
            results = {
                "cellcoadd_dask": _measure("ours", n, args.threads, outs["ours"], env),
                "lsst-images comps": _measure("lsst-components", n, args.threads, outs["lsst-components"], env),
                f"lsst whole (x{n}/{k})": _extrapolate(_measure("lsst-whole", k, 1, outs["lsst-whole"], env), n),
            }
        ours, comps, whole = (np.load(p) for p in outs.values())
        same = np.array_equal(ours, comps) or np.allclose(ours, comps, rtol=1e-12, atol=0)
        same_whole = np.allclose(ours[:k], whole, rtol=1e-12, atol=0)
        print(f"per-cell results agree: components {same}, whole-file reads {same_whole}")
    _table(results, n)
    o = results["cellcoadd_dask"]
    print(
        f"goals for cellcoadd_dask: open all <= 3 s: {o['open_s']:.2f} s "
        f"({'met' if o['open_s'] <= 3 else 'missed'}); round trips per file <= 3: "
        f"{o['open_round_trips']:.2f} ({'met' if o['open_round_trips'] <= 3 else 'missed'}); "
        f"client peak < 2 GiB: {o['client_peak_mib']:.0f} MiB"
    )
    print(
        f"cellcoadd_dask: fetch_stats {o['open_fetch_stats_bytes']:,.0f} bytes/file at open, "
        f"{o['stat_fetch_stats_bytes']:,} bytes in {o['stat_round_trips']} batched calls on the workers "
        f"for the statistic; the client fetched {o['client_stat_bytes']:,} bytes during it; "
        f"client peak {o['client_after_open_mib']:.0f} MiB after opening all."
    )
    print(
        f"lsst whole: {k} patches timed on the same 2 workers (download + CellCoadd.read), "
        f"statistic columns extrapolated x{n / k:g}."
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
