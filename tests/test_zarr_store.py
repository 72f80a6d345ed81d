"""Zarr archives read through the fetch layer (`FetchStore`): every protocol, counted, pinned, typed errors.

A small coadd is written with ``write_zarr`` to a local directory, copied byte for byte to
``memory://``, to the nginx docroot and to the S3 bucket, and read back through each; every
read must equal the FITS file the archive was written from.  Request counts come from
``ccd.fetch_stats()`` and are checked against nginx's access log.
"""

from __future__ import annotations

import os
import pickle
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import fsspec
import numpy as np
import pytest
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import cellcoadd_dask as ccd
from cellcoadd_dask.archives.zarr.reader import zarr_store
from cellcoadd_dask.archives.zarr.store import FetchStore
from cellcoadd_dask.fetch import ObjectNotFoundError, fetch_object, fetch_suffix

SOURCE = "synthetic_3x3.fits"
CELL = ccd.Box.factory[1350:1500, 1800:1950]  # exactly cell (1, 1)
PLANES = ("image", "variance", "mask")


@pytest.fixture(scope="module")
def archive(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The coadd written as a Zarr archive in a local directory."""
    path = tmp_path_factory.mktemp("zarr_store") / "coadd.zarr"
    ccd.open_coadd(reference_dir / SOURCE).write_zarr(path)
    return path


@pytest.fixture(scope="module")
def expected(reference_dir: Path) -> dict[str, np.ndarray]:
    """The planes of the FITS file the archive was written from."""
    coadd = ccd.open_coadd(reference_dir / SOURCE)
    out = {name: np.asarray(getattr(coadd, name).array.compute()) for name in PLANES}
    out["cell"] = np.asarray(coadd[CELL].image.array.compute())
    return out


@pytest.fixture(autouse=True)
def quick_policy() -> Iterator[None]:
    """Short timeouts and backoff so that injected faults resolve quickly."""
    with dask.config.set({"cellcoadd.fetch.timeout": 2.0, "cellcoadd.fetch.backoff": 0.02,
                          "cellcoadd.fetch.max_backoff": 0.1}):
        yield


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _publish(archive: Path, http_server: Any) -> tuple[str, Path]:
    """Copy the archive into the nginx docroot; its URL and its copy."""
    name = f"coadd-{uuid.uuid4().hex[:8]}.zarr"
    shutil.copytree(archive, http_server.root / name)
    return f"{http_server.url}/{name}", http_server.root / name


def _to_memory(archive: Path) -> str:
    fs = fsspec.filesystem("memory")
    root = f"/zarr-store-{uuid.uuid4().hex[:8]}.zarr"
    for path in _files(archive):
        fs.pipe_file(f"{root}/{path.relative_to(archive).as_posix()}", path.read_bytes())
    return f"memory://{root}"


def _to_s3(archive: Path, s3_server: Any) -> str:
    fs = s3_server.filesystem()
    root = f"{s3_server.bucket}/coadd-{uuid.uuid4().hex[:8]}.zarr"
    for path in _files(archive):
        fs.pipe_file(f"{root}/{path.relative_to(archive).as_posix()}", path.read_bytes())
    return f"s3://{root}"


def _data_bytes(log: Any) -> int:
    """Body bytes of the answers that carried data (not of error pages)."""
    return sum(r.body_bytes for r in log if r.status in (200, 206))


def _read(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    coadd = ccd.open_coadd(url, storage_options=storage_options)
    (out,) = dask.compute({name: getattr(coadd, name).array for name in PLANES}, scheduler="sync")
    out["cell"] = np.asarray(coadd[CELL].image.array.compute(scheduler="sync"))
    return out


def _assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# ----------------------------------------------------------------------------- the store is used


def test_read_only_stores_are_fetch_stores_and_writes_keep_zarrs_stores(tmp_path: Path) -> None:
    assert isinstance(zarr_store(str(tmp_path)), FetchStore)
    assert isinstance(zarr_store("memory://x.zarr"), FetchStore)
    assert isinstance(zarr_store(str(tmp_path), read_only=False), zarr.storage.LocalStore)
    assert isinstance(zarr_store("memory://x.zarr", read_only=False), zarr.storage.FsspecStore)
    store = FetchStore(str(tmp_path))
    assert store.read_only and not store.supports_writes and not store.supports_deletes
    with pytest.raises(ccd.ValidationError):
        store.with_read_only(False)
    assert store.with_read_only(True) == store


# ----------------------------------------------------------------------------- every protocol


def test_local_read_goes_through_the_fetch_layer(archive: Path, expected: dict[str, np.ndarray]) -> None:
    with ccd.fetch_stats() as stats:
        got = _read(str(archive))
    _assert_same(got, expected)
    assert stats.requests > 0 and all(url.startswith(str(archive)) for url, _, _ in stats.ranges)


def test_memory_read_equals_the_local_read(archive: Path, expected: dict[str, np.ndarray]) -> None:
    url = _to_memory(archive)
    with ccd.fetch_stats() as stats:
        _assert_same(_read(url), expected)
    assert stats.requests > 0 and all(u.startswith(url) for u, _, _ in stats.ranges)


# Reads over HTTP and S3 equal lsst-images': tests/conformance (test_values, zarr-2 x http, s3).


# ----------------------------------------------------------------------------- counting


def test_fetch_stats_equal_the_nginx_log_for_open_and_one_cell(archive: Path, http_server: Any,
                                                                expected: dict[str, np.ndarray]) -> None:
    url, _ = _publish(archive, http_server)
    counts = {}
    mark = http_server.mark()
    with ccd.fetch_stats() as opened:
        coadd = ccd.open_coadd(url)
    log = http_server.requests_since(mark)
    assert (opened.requests, opened.nbytes) == (len(log), _data_bytes(log))
    assert all(r.method == "GET" for r in log)
    # Layout 2: the root zarr.json (consolidated metadata) and the tree, nothing else.
    assert opened.requests <= 2, log.requests
    counts["open"] = (opened.requests, opened.nbytes)

    mark = http_server.mark()
    with ccd.fetch_stats() as cell:
        got = coadd[CELL].image.array.compute(scheduler="sync")
    log = http_server.requests_since(mark)
    np.testing.assert_array_equal(got, expected["cell"])
    assert (cell.requests, cell.nbytes) == (len(log), _data_bytes(log))
    # Only the image's objects are read for one cell of the image.
    assert all(r.name.split("/", 1)[1].startswith("image/") for r in log), log.requests
    assert cell.requests <= 2, log.requests  # the shard index and the chunk
    counts["cell"] = (cell.requests, cell.nbytes)
    print(f"\nnginx requests (count, bytes): {counts}")
    # A second cell of the same array needs no metadata again.
    mark = http_server.mark()
    with ccd.fetch_stats() as again:
        coadd[ccd.Box.factory[1200:1350, 1650:1800]].image.array.compute(scheduler="sync")
    assert again.requests == len(http_server.requests_since(mark)) <= cell.requests


def test_whole_objects_and_suffixes_are_counted_once(http_server: Any, s3_server: Any, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    http = http_server.publish(local)
    s3 = s3_server.upload(local)
    for url, options in ((str(local), None), (http, None), (s3, s3_server.storage_options)):
        mark = http_server.mark()
        with ccd.fetch_stats() as stats:
            whole, pin = fetch_object(url, storage_options=options)
            tail, _ = fetch_suffix(url, 10, storage_options=options, pin=pin)
            rest, _ = fetch_object(url, offset=1000, storage_options=options, pin=pin)
            longer, _ = fetch_suffix(url, 5000, storage_options=options, pin=pin)
        assert (whole, tail, rest, longer) == (data, data[-10:], data[1000:], data)
        assert pin.size == len(data)
        assert stats.requests == 4 and stats.nbytes == 2 * len(data) + 10 + 24
        assert sorted(stats.ranges)[0][1:] == (0, len(data))
        if url == http:
            log = http_server.requests_since(mark, name=http)
            assert log.ranges == [None, "bytes=-10", "bytes=1000-", "bytes=-5000"]
            assert log.body_bytes == stats.nbytes
        with pytest.raises(ObjectNotFoundError) as missing:
            fetch_object(url + ".absent", storage_options=options)
        assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, ccd.FetchError)
        with pytest.raises(ObjectNotFoundError):
            fetch_suffix(url + ".absent", 4, storage_options=options)


def test_store_byte_requests(archive: Path, http_server: Any) -> None:
    url, _ = _publish(archive, http_server)
    key = "zarr.json"
    data = (archive / key).read_bytes()
    proto = default_buffer_prototype()
    for store in (FetchStore(str(archive)), FetchStore(url)):
        def get(request: Any, store: FetchStore = store) -> bytes | None:
            buffer = sync(store.get(key, proto, request))
            return None if buffer is None else buffer.to_bytes()

        assert get(None) == data
        assert get(RangeByteRequest(3, 10)) == data[3:10]
        assert get(OffsetByteRequest(5)) == data[5:]
        assert get(SuffixByteRequest(7)) == data[-7:]
        assert sync(store.get("no/such/key", proto)) is None
        assert sync(store.exists(key)) and not sync(store.exists("no/such/key"))
        assert sync(store.getsize(key)) == len(data)
        parts = sync(store.get_partial_values(proto, [(key, RangeByteRequest(0, 2)), ("absent", None)]))
        assert parts[0] is not None and parts[0].to_bytes() == data[:2] and parts[1] is None


def test_listing_local_memory_and_s3(archive: Path, s3_server: Any) -> None:
    async def collect(iterator: Any) -> list[str]:
        return [k async for k in iterator]

    want = sorted(p.relative_to(archive).as_posix() for p in _files(archive))
    s3 = (_to_s3(archive, s3_server), s3_server.storage_options)
    for url, options in ((str(archive), None), (_to_memory(archive), None), s3):
        store = FetchStore(url, options)
        assert sorted(sync(collect(store.list()))) == want
        assert sorted(sync(collect(store.list_prefix("image/")))) == [k for k in want if k.startswith("image/")]
        top = sorted(sync(collect(store.list_dir(""))))
        assert "zarr.json" in top and "image" in top


# ----------------------------------------------------------------------------- pins and errors


def _cell_objects(coadd: ccd.CellCoadd) -> list[str]:
    with ccd.fetch_stats() as stats:
        coadd[CELL].image.array.compute(scheduler="sync")
    return sorted({url for url, _, _ in stats.ranges})


def _replace(path: Path) -> None:
    """Rewrite a file with the same bytes but another identity (modification time: nginx's ETag)."""
    data = path.read_bytes()
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    st = path.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    os.replace(tmp, path)


def test_a_chunk_replaced_after_opening_is_an_error_locally(archive: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.zarr"
    shutil.copytree(archive, path)
    coadd = ccd.open_coadd(path)
    objects = _cell_objects(coadd)
    assert objects and all(o.startswith(str(path / "image")) for o in objects)
    for name in objects:
        _replace(Path(name))
    with pytest.raises(ccd.ObjectChangedError, match="changed since it was opened"):
        coadd[CELL].image.array.compute(scheduler="sync")


def test_a_chunk_replaced_after_opening_is_an_error_over_http(archive: Path, http_server: Any) -> None:
    url, copy = _publish(archive, http_server)
    coadd = ccd.open_coadd(url)
    objects = _cell_objects(coadd)
    assert objects and all(o.startswith(url + "/image/") for o in objects)
    for name in objects:
        _replace(copy / name[len(url) + 1 :])
    mark = http_server.mark()
    with pytest.raises(ccd.ObjectChangedError) as err:
        coadd[CELL].image.array.compute(scheduler="sync")
    assert url in str(err.value)
    assert 412 in [r.status for r in http_server.requests_since(mark)]  # If-Match refused by nginx


def test_a_corrupt_chunk_is_an_error_naming_the_array(archive: Path, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.zarr"
    shutil.copytree(archive, path)
    coadd = ccd.open_coadd(path)
    with ccd.fetch_stats() as stats:
        coadd[CELL].image.array.compute(scheduler="sync")
    # Overwrite the largest byte range the cell read (the compressed chunk) with garbage, same length.
    url, start, stop = max(stats.ranges, key=lambda r: r[2] - r[1])
    blob = bytearray(Path(url).read_bytes())
    blob[start:stop] = b"\x5a" * (stop - start)
    Path(url).write_bytes(bytes(blob))
    fresh = ccd.open_coadd(path)
    with pytest.raises(ccd.CellCoaddError, match="image") as err:
        fresh[CELL].image.array.compute(scheduler="sync")
    assert str(path) in str(err.value)


def test_a_deleted_chunk_after_reading_is_not_a_fill_value(archive: Path, tmp_path: Path) -> None:
    path = tmp_path / "deleted.zarr"
    shutil.copytree(archive, path)
    coadd = ccd.open_coadd(path)
    for name in _cell_objects(coadd):
        Path(name).unlink()
    with pytest.raises(ccd.ObjectChangedError, match="deleted"):
        coadd[CELL].image.array.compute(scheduler="sync")


def test_transient_resets_are_retried(archive: Path, http_server: Any, http_proxy: Any,
                                      expected: dict[str, np.ndarray]) -> None:
    url, _ = _publish(archive, http_server)
    proxied = http_proxy.url_for(url)
    resets = http_proxy.reset(times=3)  # the first three requests
    busy = http_proxy.status(503, times=2)  # the next two
    with ccd.fetch_stats() as stats:
        got = _read(proxied)
    _assert_same(got, expected)
    assert resets.exhausted and busy.exhausted
    assert stats.failures >= 2  # each 503 at least (aiohttp itself may retry a reset on a reused connection)


def test_missing_archive_and_secrets(s3_server: Any) -> None:
    options = s3_server.storage_options
    url = f"s3://{s3_server.bucket}/absent-{uuid.uuid4().hex[:8]}.zarr"
    store = FetchStore(url, options)
    assert s3_server.secret not in repr(store) and s3_server.secret not in str(store)
    with pytest.raises(ccd.CellCoaddError) as err:
        ccd.open_coadd(url, storage_options=options)
    assert s3_server.secret not in str(err.value)
    wrong = {**options, "secret": "wrong-" + s3_server.secret}
    with pytest.raises(ccd.FetchError) as denied:
        fetch_object(f"s3://{s3_server.bucket}/anything", storage_options=wrong)
    assert wrong["secret"] not in str(denied.value)


# ----------------------------------------------------------------------------- pickling


def test_the_store_pickles_with_its_pins(archive: Path, s3_server: Any, expected: dict[str, np.ndarray]) -> None:
    url = _to_s3(archive, s3_server)
    store = FetchStore(url, s3_server.storage_options)
    group = zarr.open_group(store, mode="r", zarr_format=3)
    assert "cellcoadd" in group.attrs or "lsst" in group.attrs
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and clone is not store
    assert clone._pins == store._pins and clone._pins  # what was pinned travels along
    again = zarr.open_group(clone, mode="r", zarr_format=3)
    assert dict(again.attrs) == dict(group.attrs)


def test_a_distributed_compute_reads_through_the_store(archive: Path, s3_server: Any, dask_client: Any,
                                                       expected: dict[str, np.ndarray]) -> None:
    url = _to_s3(archive, s3_server)
    coadd = ccd.open_coadd(url, storage_options=s3_server.storage_options)
    with ccd.fetch_stats(dask_client) as stats:
        got = coadd.image.array.compute()
    np.testing.assert_array_equal(got, expected["image"])
    assert stats.requests > 0
