"""Remote reads: pinned objects, credentials, presigned URLs, preloaded metadata, counters.

Everything runs against the real loopback servers of the fixtures (nginx, SeaweedFS).
"""

from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from oracle import fits_layout, lsst_read
from servers import HttpServer

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import FetchPolicy, ObjectChangedError, fetch_ranges, fetch_stats, redact

SYNTHETIC = "synthetic_3x3.fits"


def _other_content(path: Path, tmp_path: Path) -> Path:
    """A file of exactly the same size as ``path`` with different bytes in a tile."""
    data = bytearray(path.read_bytes())
    tile = fits_layout(path)[1].tiles[0]
    assert tile is not None
    data[tile[0] : tile[0] + 16] = bytes(16)
    out = tmp_path / "other.fits"
    out.write_bytes(bytes(data))
    return out


# ----------------------------------------------------------------------------- changed objects


def test_local_file_replaced_after_opening_is_refused(reference_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / SYNTHETIC
    shutil.copy(reference_dir / SYNTHETIC, path)
    coadd = ccd.open_coadd(path)
    other = _other_content(path, tmp_path)
    time.sleep(0.01)
    os.replace(other, path)
    with pytest.raises(ObjectChangedError) as info:
        coadd.image.array.compute()
    assert isinstance(info.value, ccd.FetchError)
    assert str(path) in str(info.value) and "changed since it was opened" in str(info.value)


def test_http_object_replaced_after_opening_is_refused(
    reference_dir: Path, tmp_path: Path, http_server: HttpServer
) -> None:
    url = http_server.publish(reference_dir / SYNTHETIC)
    served = http_server.root / url.rsplit("/", 1)[1]
    coadd = ccd.open_coadd(url)
    coadd.image.array[:10, :10].compute()  # reads fine before the change
    other = _other_content(reference_dir / SYNTHETIC, tmp_path)
    time.sleep(1.1)  # nginx's ETag holds the modification time in seconds
    served.unlink()
    shutil.copy(other, served)
    mark = http_server.mark()
    with pytest.raises(ObjectChangedError):
        coadd.variance.array.compute()
    statuses = {r.status for r in http_server.requests_since(mark)}
    assert statuses == {412}, statuses


def test_s3_object_replaced_after_opening_is_refused(reference_dir: Path, tmp_path: Path, s3_server: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url, storage_options=s3_server.storage_options)
    expected = lsst_read(str(reference_dir / SYNTHETIC)).image.array
    np.testing.assert_array_equal(coadd.image.array.compute(), expected)
    s3_server.filesystem().put_file(str(_other_content(reference_dir / SYNTHETIC, tmp_path)),
                                    url.removeprefix("s3://"))
    with pytest.raises(ObjectChangedError) as info:
        coadd.variance.array.compute()
    assert url in str(info.value)


def test_reopening_a_changed_object_reads_the_new_version(
    reference_dir: Path, tmp_path: Path, s3_server: Any
) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    first = ccd.open_coadd(url, storage_options=s3_server.storage_options)
    s3_server.filesystem().put_file(str(_other_content(reference_dir / SYNTHETIC, tmp_path)),
                                    url.removeprefix("s3://"))
    second = ccd.open_coadd(url, storage_options=s3_server.storage_options)
    assert first.image.array.name != second.image.array.name  # the pin is part of the graph keys
    second.variance.array.compute()


# ----------------------------------------------------------------------------- credentials


def test_wrong_credentials_give_a_clear_error_without_the_secret(reference_dir: Path, s3_server: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    bad = dict(s3_server.storage_options, secret="not-the-secret-0123456789")
    with pytest.raises(ccd.FetchError) as info:
        ccd.open_coadd(url, storage_options=bad)
    message = str(info.value)
    assert url in message and "access denied" in message
    assert "not-the-secret-0123456789" not in message
    assert s3_server.storage_options["secret"] not in message


def test_redact_hides_every_secret_of_the_storage_options() -> None:
    options = {"key": "AKIA-EXAMPLE", "secret": "s3cr3t-value", "client_kwargs": {"endpoint_url": "http://h:1"},
               "headers": {"Authorization": "Bearer tok-123456"}}
    text = "failed with AKIA-EXAMPLE / s3cr3t-value / Bearer tok-123456 at http://h:1"
    assert redact(text, options) == "failed with *** / *** / *** at http://h:1"


def test_presigned_url_reads_and_hides_its_signature(reference_dir: Path, s3_server: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    presigned = s3_server.filesystem().url(url.removeprefix("s3://"), expires=600)
    assert "?" in presigned and presigned.startswith("http://127.0.0.1")
    with fetch_stats() as stats:
        coadd = ccd.open_coadd(presigned)
    assert stats.requests == 2  # no HEAD, no listing: the primary header, then JSON + INDEX
    np.testing.assert_array_equal(coadd.image.array[:150, :150].compute(),
                                  lsst_read(str(reference_dir / SYNTHETIC)).image.array[:150, :150])
    missing = presigned.replace(url.rsplit("/", 1)[1], "missing.fits")
    with pytest.raises(ccd.CellCoaddError) as info:
        ccd.open_coadd(missing)
    signature = presigned.split("?", 1)[1]
    assert signature not in str(info.value) and "?***" in str(info.value)


def test_graphs_carry_no_credentials_when_workers_use_their_environment(
    reference_dir: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With credentials in the environment, storage options hold only the endpoint: graphs hold no secret."""
    url = s3_server.upload(reference_dir / SYNTHETIC)
    options = s3_server.storage_options
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    public = {"client_kwargs": options["client_kwargs"]}
    coadd = ccd.open_coadd(url, storage_options=public, preload=True)
    graph = pickle.dumps(dict(coadd.image.array.__dask_graph__()))
    assert options["secret"].encode() not in graph and options["key"].encode() not in graph
    np.testing.assert_array_equal(coadd.image.array.compute(), lsst_read(str(reference_dir / SYNTHETIC)).image.array)


# ----------------------------------------------------------------------------- metadata once


def test_preload_reads_all_metadata_in_three_round_trips_then_only_tiles(reference_dir: Path, s3_server: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    with fetch_stats() as opening:
        coadd = ccd.open_coadd(url, storage_options=s3_server.storage_options, preload=True)
    assert opening.calls == 3, opening.calls
    layout = {h.label: h for h in fits_layout(reference_dir / SYNTHETIC)}
    with fetch_stats() as reading:
        coadd.variance.array[150:300, 300:450].compute()
        coadd.psf[ccd.CellIJ(i=1, j=2)]
    tile = layout["VARIANCE"].tiles[layout["VARIANCE"].tile_of((150, 300))]
    assert tile is not None
    ranges = [(a, b) for _, a, b in reading.ranges]
    assert tile in ranges
    heaps = [(h.table[1], max((t[1] for t in h.tiles if t), default=h.table[1])) for h in layout.values() if h.tiles]
    for a, b in ranges:  # every byte read is tile data: no header, no table row
        assert any(lo <= a and b <= hi for lo, hi in heaps), (a, b)


def test_graph_keys_are_deterministic_and_small(reference_dir: Path, s3_server: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    a = ccd.open_coadd(url, storage_options=s3_server.storage_options, preload=True)
    b = ccd.open_coadd(url, storage_options=s3_server.storage_options, preload=True)
    assert a.image.array.name == b.image.array.name
    assert sorted(a.image.array.__dask_keys__()) == sorted(b.image.array.__dask_keys__())
    assert len(pickle.dumps(dict(a.image.array.__dask_graph__()))) < 1_000_000


def test_full_patch_plane_graph_is_well_under_a_megabyte(tmp_path: Path) -> None:
    from oracle import write_full_patch

    path = write_full_patch(tmp_path / "patch.fits")
    coadd = ccd.open_coadd(path, preload=True, chunks="cell")
    for plane in (coadd.image, coadd.variance):
        size = len(pickle.dumps(dict(plane.array.__dask_graph__())))
        assert size < 1_000_000, size
    size = len(pickle.dumps(dict(coadd.mask.array.__dask_graph__())))
    assert size < 1_000_000, size


# ----------------------------------------------------------------------------- policy


def test_policy_comes_from_dask_config() -> None:
    assert FetchPolicy.current() == FetchPolicy()
    with dask.config.set({"cellcoadd.fetch.retries": 1, "cellcoadd.fetch.timeout": 2.5}):
        policy = FetchPolicy.current()
    assert (policy.retries, policy.timeout) == (1, 2.5)


def test_a_range_past_the_end_is_a_truncation_error(reference_dir: Path, s3_server: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    size = (reference_dir / SYNTHETIC).stat().st_size
    with pytest.raises(ccd.ArchiveFormatError) as info:
        fetch_ranges(url, [(size - 10, size + 10)], storage_options=s3_server.storage_options)
    assert "truncated" in str(info.value)


def test_json_archives_over_http_and_s3_without_head(reference_dir: Path, http_server: HttpServer,
                                                     s3_server: Any) -> None:
    name = "synthetic_3x3_cutout.json"
    expected = lsst_read(str(reference_dir / name)).image.array
    url = http_server.publish(reference_dir / name)
    mark = http_server.mark()
    coadd = ccd.open_coadd(url)
    log = http_server.requests_since(mark, name=url)
    assert [r.method for r in log] == ["GET", "GET"], log  # the size from the first byte's Content-Range
    np.testing.assert_array_equal(coadd.image.array.compute(), expected)
    s3_url = s3_server.upload(reference_dir / name)
    with fetch_stats() as stats:
        coadd = ccd.open_coadd(s3_url, storage_options=s3_server.storage_options)
    assert stats.requests == 2
    np.testing.assert_array_equal(coadd.image.array.compute(), expected)
