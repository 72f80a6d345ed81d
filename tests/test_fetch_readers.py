"""Readers run one at a time and many at once: on fsspec's event loop for HTTP and S3, on threads otherwise.

Run against the real nginx and SeaweedFS servers (and the fault proxy): the containers many
readers open at once equal those opened one by one, with the same requests; a failing reader
keeps its error to itself; transient faults are retried on the loop; the caller's served cache
and recording apply to readers on the loop; no reader waits on a thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest

import cellcoadd_dask as ccd
from cellcoadd_dask import fetch_cache
from cellcoadd_dask.archives.fits.layout import FitsContainer, container_reader, read_container
from cellcoadd_dask.fetch import fetch_stats
from cellcoadd_dask.fetch_readers import Read, Reader, run_reader, run_readers

SYNTHETIC = "synthetic_3x3.fits"


@pytest.fixture(autouse=True)
def quick_policy() -> Iterator[None]:
    with dask.config.set({"cellcoadd.fetch.timeout": 2.0, "cellcoadd.fetch.backoff": 0.02,
                          "cellcoadd.fetch.max_backoff": 0.1}):
        yield


def _patches(corpus: Path) -> list[Path]:
    """The generated demo tract's patch files (the extra reference files need not hold a tract)."""
    paths = sorted((corpus / "demo_tract").glob("patch_*.fits"))
    assert len(paths) >= 4, f"the generated corpus has no demo tract in {corpus}"
    return paths


def _same(a: FitsContainer, b: FitsContainer) -> None:
    assert a.url == b.url
    assert a.tree == b.tree
    assert a.hdus == b.hdus
    assert (a.file_size, a.schema_version, a.pin) == (b.file_size, b.schema_version, b.pin)
    assert dict(a.primary.items()) == dict(b.primary.items())


def _where(url: str, seen: list[str]) -> Reader[None]:
    """A reader that notes the thread each of its steps runs on."""
    seen.append(threading.current_thread().name)
    yield Read(url, [(0, 2880)])
    seen.append(threading.current_thread().name)


@pytest.mark.parametrize("store", ["s3", "http", "local"])
def test_many_readers_open_what_one_reader_opens_with_the_same_requests(store: str, corpus: Path,
                                                                       s3_server: Any, http_server: Any) -> None:
    paths = _patches(corpus)
    if store == "s3":
        urls, options = [s3_server.upload(p) for p in paths], s3_server.storage_options
    elif store == "http":
        urls, options = [http_server.publish(p) for p in paths], None
    else:
        urls, options = [str(p) for p in paths], None
    with fetch_stats() as one:
        alone = [read_container(url, options) for url in urls]
    with fetch_stats() as many:
        together = run_readers([(url, container_reader(url)) for url in urls], options)
    for a, b in zip(alone, together, strict=True):
        assert isinstance(b, FitsContainer)
        _same(a, b)
    assert many.requests == one.requests == 2 * len(urls)
    assert sorted(many.ranges) == sorted(one.ranges)
    # Remote readers step on fsspec's event loop (no thread each); local ones on a pool's threads.
    seen: list[str] = []
    run_readers([(url, _where(url, seen)) for url in urls], options)
    assert len(seen) == 2 * len(urls)
    if store == "local":
        assert all(name != "fsspecIO" for name in seen)
    else:
        assert set(seen) == {"fsspecIO"}


def test_a_failing_reader_keeps_its_error_to_itself(reference_dir: Path, s3_server: Any) -> None:
    good = s3_server.upload(reference_dir / SYNTHETIC)
    missing = good.replace(".fits", "-missing.fits")
    not_fits = s3_server.upload(reference_dir / "expected_values.json", key="not-a-coadd.fits")
    urls = [missing, good, not_fits, good]
    results = run_readers([(url, container_reader(url)) for url in urls], s3_server.storage_options)
    assert isinstance(results[0], ccd.ObjectNotFoundError) and missing in str(results[0])
    assert isinstance(results[2], ccd.ArchiveFormatError) and "not-a-coadd.fits" in str(results[2])
    for k in (1, 3):
        assert isinstance(results[k], FitsContainer)
        _same(results[k], read_container(good, s3_server.storage_options))  # type: ignore[arg-type]
    # The same errors as one reader at a time.
    with pytest.raises(ccd.ObjectNotFoundError):
        run_reader(container_reader(missing), s3_server.storage_options)


@pytest.mark.parametrize("proxy", ["http", "s3"])
def test_transient_faults_are_retried_on_the_event_loop(proxy: str, reference_dir: Path, http_proxy: Any,
                                                        s3_proxy: Any, s3_server: Any) -> None:
    if proxy == "http":
        url, options, fault = http_proxy.publish(reference_dir / SYNTHETIC), None, http_proxy
    else:
        url, options, fault = s3_server.upload(reference_dir / SYNTHETIC), s3_proxy.storage_options, s3_proxy
    expected = read_container(url, options)
    fault.status(503, times=3, ranged_only=True)
    with fetch_stats() as stats:
        (got, again) = run_readers([(url, container_reader(url)), (url, container_reader(url))], options)
    assert isinstance(got, FitsContainer) and isinstance(again, FitsContainer)
    _same(got, expected)
    _same(again, expected)
    assert stats.failures >= 1 and not fault.faults
    # A fault that lasts ends in a typed error naming the object, not a hang.
    fault.status(503, times=None, ranged_only=True)
    with dask.config.set({"cellcoadd.fetch.retries": 1}):
        (error,) = run_readers([(url, container_reader(url))], options)
    assert isinstance(error, ccd.FetchError) and "503" in str(error)


def test_readers_on_the_loop_see_the_callers_served_cache_and_recording(corpus: Path, s3_server: Any) -> None:
    options = s3_server.storage_options
    urls = [s3_server.upload(p) for p in _patches(corpus)[:3]]
    with fetch_cache.recording() as recorder, fetch_stats() as first:
        opened = run_readers([(url, container_reader(url)) for url in urls], options)
    assert first.requests == 2 * len(urls)
    known = {url: recorder.cached(url) for url in urls}
    assert all(known[url].spans for url in urls), "reads made on the loop were recorded"
    with fetch_cache.served_from(known), fetch_stats() as served:
        again = run_readers([(url, container_reader(url)) for url in urls], options)
    assert served.requests == 0, "every read was answered from the caller's served cache"
    for a, b in zip(opened, again, strict=True):
        _same(a, b)  # type: ignore[arg-type]


def test_a_tract_of_remote_patches_raises_the_first_failure_in_order(corpus: Path, s3_server: Any) -> None:
    paths = _patches(corpus)
    urls = [s3_server.upload(p) for p in paths]
    broken = [urls[0], urls[1].replace(".fits", "-gone.fits"), s3_server.upload(corpus / "expected_values.json",
                                                                                key="late-not-fits.fits")]
    with pytest.raises(ccd.ObjectNotFoundError, match=r"-gone\.fits"):
        ccd.open_tract(broken, storage_options=s3_server.storage_options)
    with fetch_stats() as stats:
        ds = ccd.open_tract(urls, storage_options=s3_server.storage_options)
    assert stats.requests == 2 * len(urls)
    assert sorted(ds.attrs["urls"]) == sorted(urls)
