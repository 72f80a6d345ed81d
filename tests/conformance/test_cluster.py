"""A `distributed.LocalCluster` (two single-threaded worker processes) computes what a local compute does.

The coadd is opened in the test process; the workers read its pixels from the source.  The
memory filesystem lives in one process only, so it is not a source here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dask.array as da
import numpy as np
import pytest

import cellcoadd_dask as ccd

from .archives import Archive
from .library import Library
from .sources import Source


@pytest.fixture(scope="module")
def client(dask_cluster: Any) -> Iterator[Any]:
    """One client of the session cluster for the module (not the default scheduler)."""
    from distributed import Client

    with Client(dask_cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.mark.cross_process
def test_cluster_sum_equals_the_local_sum(archive: Archive, source: Source, library: Library, client: Any) -> None:
    published = library.published(archive, source)
    coadd = ccd.open_coadd(published.url, **published.open_kwargs())
    total = da.nansum(coadd.image.array.astype(np.float64))
    local = total.compute(scheduler="sync")
    with ccd.fetch_stats() as here:
        remote = client.compute(total).result()
    assert remote == local
    assert here.requests == 0, "the workers read the pixels, not this process"
