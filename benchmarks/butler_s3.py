"""One cell of a full-size patch in a butler repository on S3: ``open_butler`` against ``butler.get``.

    python benchmarks/butler_s3.py [PATCH.fits] [--repeats 3]

Starts SeaweedFS on loopback, makes a butler repository (sqlite registry in a temporary directory,
datastore an S3 prefix of the bucket) and ``put``s the corpus's full-size lossy patch as a
``deep_coadd`` with lsst-images' formatter.  Then, each in a fresh process (imports done first):

- cellcoadd_dask: ``open_butler(butler, ref, bbox=cell)`` and the image of that cell computed;
- lsst-images: ``butler.get(ref, parameters={"bbox": cell})`` (the whole coadd over the cell:
  image, mask, variance, ...), and the same with ``component="image"``.

Each prints its first run and the median of ``--repeats`` more (a new ``Butler`` each time is not
made: the butler and its registry are warm after the first).  Requests and bytes: ``fetch_stats``
for cellcoadd_dask; for lsst-images every S3 call of botocore (boto3, used by ``lsst.resources``)
and of s3fs, with the body bytes they receive.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

ENV = "CELLCOADD_BUTLER_BENCH"
RUN = "bench/coadds"

_counts = {"calls": 0, "bytes": 0}
_lock = threading.Lock()


def _count_botocore() -> None:
    """Count botocore's synchronous requests (boto3) and the bytes of their answers."""
    from botocore.endpoint import Endpoint

    original = Endpoint._send

    def send(self: Any, request: Any) -> Any:
        response = original(self, request)
        with _lock:
            _counts["calls"] += 1
            _counts["bytes"] += int(response.headers.get("content-length") or 0)
        return response

    Endpoint._send = send  # type: ignore[method-assign]


def _measure(fn: Any, repeats: int, counted: Any) -> dict[str, Any]:
    def one() -> dict[str, Any]:
        t = time.perf_counter()
        requests, nbytes = counted(fn)
        return {"s": time.perf_counter() - t, "requests": requests, "bytes": nbytes}

    first = one()
    warm = [one() for _ in range(repeats)]
    return {**first, "warm_s": statistics.median(w["s"] for w in warm) if warm else None,
            "warm_requests": warm[-1]["requests"] if warm else None}


def child(name: str, repeats: int) -> None:
    setup = json.loads(os.environ[ENV])
    from lsst.daf.butler import Butler
    from lsst.images import Box as LsstBox
    from s3_counter import install_s3_counter, s3_counts

    import cellcoadd_dask as ccd

    try:  # dask imports it on a process's first compute when it is installed: an import, not a read
        import distributed  # noqa: F401
    except ImportError:
        pass
    butler = Butler.from_config(setup["repo"], run=RUN)
    ref = butler.get_dataset(uuid.UUID(setup["ref"]))
    y0, y1, x0, x1 = setup["cell"]
    if name == "ours":
        box = ccd.Box.factory[y0:y1, x0:x1]

        def ours() -> None:
            ccd.open_butler(butler, ref, bbox=box).image.array.compute()

        def counted(fn: Any) -> tuple[int, int]:
            with ccd.fetch_stats() as stats:
                fn()
            return stats.requests, stats.nbytes

        result = _measure(ours, repeats, counted)
    else:
        install_s3_counter()
        _count_botocore()
        lbox = LsstBox.factory[y0:y1, x0:x1]
        component = "image" if name == "lsst-image" else None

        def theirs() -> None:
            if component is None:
                butler.get(ref, parameters={"bbox": lbox})
            else:
                butler.get(ref.makeComponentRef(component), parameters={"bbox": lbox})

        def counted(fn: Any) -> tuple[int, int]:
            s3_counts(reset=True)
            with _lock:
                _counts.update(calls=0, bytes=0)
            fn()
            s3 = s3_counts()
            return s3["calls"] + _counts["calls"], s3["bytes"] + _counts["bytes"]

        result = _measure(theirs, repeats, counted)
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch", nargs="?", help="a full-size patch (default: the corpus's lossy patch)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from lsst.daf.butler import Butler, Config, DatasetType
    from lsst.images.cells import CellCoadd

    import cellcoadd_dask as ccd
    from cellcoadd_dask.testing import corpus_path
    from cellcoadd_dask.testing.servers import run_seaweedfs

    patch = Path(args.patch) if args.patch else corpus_path("patch/patch_lossy.fits")
    with tempfile.TemporaryDirectory(prefix="butler-s3-") as tmp, run_seaweedfs(Path(tmp)) as server:
        env = {**os.environ, "S3_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": server.key,
               "AWS_SECRET_ACCESS_KEY": server.secret, "AWS_EC2_METADATA_DISABLED": "true"}
        os.environ.update(env)
        repo = str(Path(tmp) / "repo")
        Butler.makeRepo(repo, config=Config({"datastore": {"root": f"s3://{server.bucket}/repo/"}}),
                        forceConfigRoot=False)
        butler = Butler.from_config(repo, writeable=True, run=RUN)
        coadd = ccd.open_coadd(patch)
        definition = coadd.patch_definition
        assert definition is not None
        registry = butler.registry
        registry.insertDimensionData("skymap", {"name": coadd.skymap, "hash": b"x", "tract_max": 100000,
                                                "patch_nx_max": 100, "patch_ny_max": 100})
        registry.insertDimensionData("instrument", {"name": "Cam", "visit_max": 1, "exposure_max": 1,
                                                    "detector_max": 1, "class_name": "x"})
        registry.insertDimensionData("physical_filter", {"instrument": "Cam", "name": "Cam-b", "band": coadd.band})
        registry.insertDimensionData("tract", {"skymap": coadd.skymap, "id": coadd.tract})
        registry.insertDimensionData("patch", {"skymap": coadd.skymap, "tract": coadd.tract, "id": definition.id,
                                               "cell_x": definition.index.x, "cell_y": definition.index.y})
        registry.registerDatasetType(DatasetType("deep_coadd", ("skymap", "tract", "patch", "band"), "CellCoadd",
                                                 universe=butler.dimensions))
        t = time.perf_counter()
        ref = butler.put(CellCoadd.read(str(patch)), "deep_coadd", skymap=coadd.skymap, tract=coadd.tract,
                         patch=definition.id, band=coadd.band)
        print(f"put {patch.name} ({patch.stat().st_size:,} bytes) to {butler.getURI(ref)} in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        inner = definition.inner_bbox
        cell = [inner.y.start + 300, inner.y.start + 450, inner.x.start + 600, inner.x.start + 750]
        env[ENV] = json.dumps({"repo": repo, "ref": str(ref.id), "cell": cell})
        rows = {}
        for name in ("ours", "lsst", "lsst-image"):
            proc = subprocess.run([sys.executable, __file__, "--child", name, str(args.repeats)],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
            rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {name}: {rows[name]}", flush=True)
    print("\n| one 150x150 cell of a full-size patch on S3 | first | warm (median) | requests | bytes |")
    print("|---|---|---|---|---|")
    labels = {"ours": "cellcoadd_dask `open_butler(ref, bbox=cell)` + image",
              "lsst": "lsst-images `butler.get(ref, parameters={'bbox': cell})`",
              "lsst-image": "lsst-images `butler.get(ref.makeComponentRef('image'), bbox)`"}
    for name, row in rows.items():
        print(f"| {labels[name]} | {row['s']:.3f} s | {row['warm_s']:.3f} s | {row['requests']} | {row['bytes']:,} |")
    ratio = rows["ours"]["warm_s"] / rows["lsst"]["warm_s"]
    print(f"\nratio (warm): {ratio:.2f}x lsst-images' bbox get")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
