"""Reads through a fault-injecting proxy in front of the real HTTP and S3 servers.

Every fault (503/500/429 answers, a connection dropped mid-body, a stall past the timeout, a
reset, a truncated body, a server ignoring ``Range``) must end in one of two ways: the read
succeeds after retries with values identical to a local read, or it raises a typed
``CellCoaddError`` quickly.  Never wrong pixels, never a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from oracle import lsst_read

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import fetch_stats

SYNTHETIC = "synthetic_3x3.fits"
TIMEOUT = 1.0
# A cut-out of four cells: a few tiles per plane, several requests.
BOX = ccd.Box.factory[1200:1500, 1650:1950]


@pytest.fixture(autouse=True)
def quick_policy() -> Iterator[None]:
    """Short timeout and backoff so that faults resolve in well under a second each."""
    with dask.config.set({"cellcoadd.fetch.timeout": TIMEOUT, "cellcoadd.fetch.backoff": 0.02,
                          "cellcoadd.fetch.max_backoff": 0.1}):
        yield


@pytest.fixture(scope="module")
def expected(reference_dir: Path) -> dict[str, np.ndarray]:
    ref = lsst_read(str(reference_dir / SYNTHETIC))
    sy, sx = slice(0, 300), slice(0, 300)
    return {"image": ref.image.array[sy, sx], "variance": ref.variance.array[sy, sx], "mask": ref.mask.array[sy, sx]}


def _read(coadd: ccd.CellCoadd) -> dict[str, np.ndarray]:
    cut = coadd[BOX]
    (out,) = dask.compute({"image": cut.image.array, "variance": cut.variance.array, "mask": cut.mask.array},
                          scheduler="sync")
    return out


def _assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


Arm = Callable[[Any], Any]

# fault name -> (arm on the proxy, can a retry fix it)
TRANSIENT: dict[str, Arm] = {
    "503": lambda p: p.status(503, times=2, ranged_only=True),
    "500": lambda p: p.status(500, times=1, ranged_only=True),
    "429": lambda p: p.status(429, times=2, ranged_only=True, retry_after=0),
    "drop_mid_body": lambda p: p.drop_mid_body(100, times=2, ranged_only=True),
    "stall": lambda p: p.stall(TIMEOUT + 2, times=1, ranged_only=True),
    "reset": lambda p: p.reset(times=2, ranged_only=True),
    "truncated_body": lambda p: p.truncate_content(times=2, missing_bytes=50, ranged_only=True),
}


# ----------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_http_transient_faults_are_retried(fault: str, reference_dir: Path, http_proxy: Any,
                                           expected: dict[str, np.ndarray]) -> None:
    url = http_proxy.publish(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url)
    TRANSIENT[fault](http_proxy)
    start = time.monotonic()
    with fetch_stats() as stats:
        got = _read(coadd)
    _assert_same(got, expected)
    assert stats.failures >= 1, "the fault fired and was retried"
    assert time.monotonic() - start < 10
    assert not http_proxy.faults


def test_http_persistent_503_gives_a_typed_error(reference_dir: Path, http_proxy: Any) -> None:
    url = http_proxy.publish(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url)
    http_proxy.status(503, times=None, ranged_only=True)
    start = time.monotonic()
    with pytest.raises(ccd.FetchError) as info:
        _read(coadd)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert url in message and "5 attempts" in message and "503" in message


def test_http_persistent_stall_gives_a_typed_error_not_a_hang(reference_dir: Path, http_proxy: Any) -> None:
    url = http_proxy.publish(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url)
    http_proxy.stall(TIMEOUT + 2, times=None, ranged_only=True)
    start = time.monotonic()
    with dask.config.set({"cellcoadd.fetch.retries": 1}), pytest.raises(ccd.FetchError):
        _read(coadd)
    assert time.monotonic() - start < 4 * TIMEOUT + 2


def test_http_server_ignoring_range_is_an_error_not_data(reference_dir: Path, http_proxy: Any) -> None:
    url = http_proxy.publish(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url)
    http_proxy.ignore_range(times=None)
    with pytest.raises(ccd.FetchError) as info:
        _read(coadd)
    assert "ignores Range" in str(info.value)


def test_http_open_survives_faults(reference_dir: Path, http_proxy: Any, expected: dict[str, np.ndarray]) -> None:
    """The two metadata reads of opening are retried like any other."""
    url = http_proxy.publish(reference_dir / SYNTHETIC)
    http_proxy.status(503, times=1, ranged_only=True)
    http_proxy.drop_mid_body(1000, times=1, ranged_only=True)
    coadd = ccd.open_coadd(url)
    _assert_same(_read(coadd), expected)


def test_http_missing_file_is_not_retried(http_proxy: Any) -> None:
    url = http_proxy.url_for(f"{http_proxy.server.url}/no-such-file.fits")
    mark = http_proxy.mark()
    with pytest.raises(ccd.FetchError) as info:
        ccd.open_coadd(url)
    assert "no such file" in str(info.value)
    assert len(http_proxy.requests_since(mark)) == 1


# ----------------------------------------------------------------------------- S3


@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_s3_transient_faults_are_retried(fault: str, reference_dir: Path, s3_server: Any, s3_proxy: Any,
                                         expected: dict[str, np.ndarray]) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url, storage_options=s3_proxy.storage_options)
    TRANSIENT[fault](s3_proxy)
    start = time.monotonic()
    got = _read(coadd)
    _assert_same(got, expected)
    assert time.monotonic() - start < 15
    assert not s3_proxy.faults, "the fault fired"


def test_s3_slowdown_storm_gives_a_typed_error(reference_dir: Path, s3_server: Any, s3_proxy: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url, storage_options=s3_proxy.storage_options)
    s3_proxy.status(503, times=None, ranged_only=True)
    start = time.monotonic()
    with dask.config.set({"cellcoadd.fetch.retries": 1}), pytest.raises(ccd.FetchError) as info:
        _read(coadd)
    assert time.monotonic() - start < 30
    assert url in str(info.value)
    assert s3_proxy.storage_options["secret"] not in str(info.value)


def test_s3_ignoring_range_is_an_error_not_data(reference_dir: Path, s3_server: Any, s3_proxy: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url, storage_options=s3_proxy.storage_options)
    s3_proxy.ignore_range(times=None)
    with pytest.raises(ccd.CellCoaddError):
        _read(coadd)
