"""A full-patch reduction over S3 survives a worker killed twice in the middle of it.

A coadd of 8 x 8 cells is written by lsst-images and uploaded to the session SeaweedFS server,
then opened with one chunk per cell.  A `distributed.LocalCluster` of its own (two
single-threaded worker processes, each under a nanny) computes the mean of every cell of the
image and the variance; while it runs, one worker process is killed (``SIGKILL``), its nanny
starts a new one, and that one is killed too.  The scheduler gives the lost tasks to the
living workers and the result equals, bit for bit, the same reduction computed by the local
threaded scheduler.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from lsst_files import make_coadd
from servers import LOOPBACK, S3Server

import cellcoadd_dask as ccd
from cellcoadd_dask.testing._common import write

CELL = 50
CELLS = (8, 8)
TASK_SECONDS = 0.07
"""Time each cell's reduction sleeps on the cluster, so that the compute lasts long enough to be killed twice."""


def _cell_means(array: da.Array, pause: float = 0.0) -> da.Array:
    """Mean of the finite values of every chunk (one chunk per cell), one value per cell; ``pause`` s per cell."""

    def mean(block: np.ndarray) -> np.ndarray:
        time.sleep(pause)
        values = block.astype(np.float64)
        finite = np.isfinite(values)
        total = np.where(finite, values, 0.0).sum()
        count = finite.sum()
        return np.full((1, 1), total / count if count else np.nan)

    chunks = ((1,) * len(array.chunks[0]), (1,) * len(array.chunks[1]))
    return da.map_blocks(mean, array, chunks=chunks, dtype=np.float64)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """Two single-threaded worker processes under nannies, which restart a killed worker."""
    from distributed import LocalCluster

    # A task running on a worker that dies counts as a failure; two deaths must not fail it.
    settings = {"temporary-directory": str(tmp_path), "distributed.scheduler.allowed-failures": 10}
    with dask.config.set(settings):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host=LOOPBACK,
                               scheduler_port=0, dashboard_address=None, memory_limit="1GiB",
                               local_directory=str(tmp_path))
        try:
            yield cluster
        finally:
            cluster.close(timeout=30)


def _workers(client: Any) -> set[str]:
    """Addresses of the workers the scheduler knows."""
    return set(client.scheduler_info(n_workers=-1)["workers"])


def _replaced(client: Any, victim: str) -> bool:
    """Whether ``victim`` is gone and a new worker took its place."""
    workers = _workers(client)
    return victim not in workers and len(workers) == 2


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def test_reduction_survives_a_worker_killed_twice(cluster: Any, s3_server: S3Server, tmp_path: Path) -> None:
    from distributed import Client

    path = write(make_coadd(cell=CELL, n_cells=CELLS, n_fractions=0, n_noise=0), tmp_path / "patch.fits")
    url = s3_server.upload(path)
    coadd = ccd.open_coadd(url, storage_options=s3_server.storage_options, chunks="cell")
    planes = {"image": coadd.image.array, "variance": coadd.variance.array}
    (expected,) = dask.compute({k: _cell_means(v) for k, v in planes.items()}, scheduler="threads")
    assert all(v.shape == CELLS for v in expected.values())

    with Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        done = client.compute({k: _cell_means(v, TASK_SECONDS) for k, v in planes.items()})
        killed: list[int] = []
        for _ in range(2):
            # Kill the busiest worker, once the compute is under way.
            _wait(lambda: any(client.processing().values()), 30, "no worker started the compute")
            assert not done.done(), "the compute ended before a worker could be killed"
            processing = client.processing()
            victim = max(processing, key=lambda a: len(processing[a]))
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            # Its nanny starts a new process, which joins the scheduler under a new address.
            _wait(functools.partial(_replaced, client, victim), 30, "the killed worker was not replaced")
        got = done.result(timeout=60)
        assert len(set(killed)) == 2
        assert not set(killed) & set(client.run(os.getpid).values())
    for name, values in expected.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name, strict=True)
