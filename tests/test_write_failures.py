"""Failing storage on write: typed errors naming the destination, nothing partial left, the previous archive kept.

Local failures are real: each write runs in a child interpreter, inside a private user and mount
namespace (``unshare``) for a tmpfs that is full (``ENOSPC``) or read-only (``EROFS``), or with
``RLIMIT_FSIZE`` lowered and ``SIGXFSZ`` ignored (``EFBIG``).  Object-store failures use the
SeaweedFS server and a fault proxy in front of it that resets every request once it has
forwarded ``N`` PUTs (:class:`ResetAfterPuts`), or stalls them so that a writing process can
be killed mid-write.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faultproxy import RESET, STALL, Fault, S3FaultProxy
from servers import S3Server

import cellcoadd_dask as ccd
from cellcoadd_dask.archives.json.writer import write_json
from cellcoadd_dask.archives.zarr.writer import write_zarr
from cellcoadd_dask.errors import DestinationNotFoundError, WriteError

FORMATS = ("fits", "json", "zarr")
NAMES = {"fits": "coadd.fits", "json": "coadd.json", "zarr": "coadd.zarr"}
PLANES = ("image", "variance", "mask", "psf")
NO_RETRIES = {"config_kwargs": {"retries": {"max_attempts": 1}}}
"""botocore makes one attempt per s3fs try (s3fs still retries a few times)."""


def _write(fmt: str, coadd: ccd.CellCoadd, url: str | Path, **kwargs: Any) -> str:
    if fmt == "fits":
        return str(coadd.write_fits(url, **kwargs))
    if fmt == "json":
        return write_json(coadd, url, **kwargs)
    return write_zarr(coadd, url, **kwargs)


def _planes(coadd: ccd.CellCoadd) -> dict[str, np.ndarray]:
    return {name: np.asarray(getattr(coadd, name).array.compute()) for name in PLANES}


def _assert_same(got: ccd.CellCoadd, expected: dict[str, np.ndarray]) -> None:
    for name, values in _planes(got).items():
        assert values.shape == expected[name].shape, name
        assert np.array_equal(values, expected[name], equal_nan=True), name


@pytest.fixture(scope="module")
def sources(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Private copies of the corpus files written here (other tests may link the shared ones, changing their ctime)."""
    directory = tmp_path_factory.mktemp("sources")
    for name in ("synthetic_3x3.fits", "min_default.fits"):
        shutil.copyfile(reference_dir / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def new(sources: Path) -> ccd.CellCoadd:
    """The coadd being written (lsst-images' synthetic 3x3-cell coadd)."""
    return ccd.open_coadd(sources / "synthetic_3x3.fits")


@pytest.fixture(scope="module")
def old(sources: Path) -> ccd.CellCoadd:
    """The coadd of the previous archive (another shape and other pixels than `new`)."""
    return ccd.open_coadd(sources / "min_default.fits")


# --------------------------------------------------------------------------- local failures

_CHILD = r"""
import json, os, resource, signal, subprocess, sys
args = json.loads(sys.argv[1])
import cellcoadd_dask as ccd
from cellcoadd_dask.archives.json.writer import write_json
from cellcoadd_dask.archives.zarr.writer import write_zarr

directory = args["directory"]
if args.get("mount"):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + args["mount"], "tmpfs", directory], check=True)
for name, text in args.get("previous", {}).items():
    os.makedirs(os.path.dirname(os.path.join(directory, name)), exist_ok=True)
    with open(os.path.join(directory, name), "w") as stream:
        stream.write(text)
if args.get("read_only"):
    subprocess.run(["mount", "-o", "remount,ro", directory], check=True)
if args.get("no_write_permission"):
    os.chmod(directory, 0o555)  # the owner may not write: without CAP_DAC_OVERRIDE, EACCES
coadd = ccd.open_coadd(args["source"])
if args.get("fsize"):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (args["fsize"], hard))
destination = os.path.join(directory, args["name"])
write = {"fits": lambda: coadd.write_fits(destination), "json": lambda: write_json(coadd, destination),
         "zarr": lambda: write_zarr(coadd, destination)}[args["format"]]
result = {}
try:
    write()
except BaseException as exc:
    result = {"types": [k.__name__ for k in type(exc).__mro__], "message": str(exc),
              "errno": getattr(exc, "errno", None)}
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.getrlimit(resource.RLIMIT_FSIZE)[1],) * 2)
result["listing"] = sorted(os.path.relpath(os.path.join(d, f), directory)
                           for d, _, files in os.walk(directory) for f in files)
result["previous"] = {name: open(os.path.join(directory, name)).read() for name in args.get("previous", {})}
print(json.dumps(result))
"""


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def namespaces() -> None:
    """User and mount namespaces (``unshare``) for tmpfs mounts: required, never skipped."""
    if not _unshare_works():
        pytest.fail("these tests need unprivileged user and mount namespaces (util-linux 'unshare')")


def _child_write(
    fmt: str, directory: Path, source: Path, *, namespace: bool | str = False, **settings: Any
) -> dict[str, Any]:
    """Run a write in a child interpreter; its outcome: error types, message, errno, files left."""
    previous = {NAMES[fmt] if fmt != "zarr" else f"{NAMES[fmt]}/zarr.json": "previous archive"}
    args = {"format": fmt, "directory": str(directory), "source": str(source), "name": NAMES[fmt],
            "previous": previous, **settings}
    command = [sys.executable, "-c", _CHILD, json.dumps(args)]
    if namespace == "user":  # a user namespace without a mapping: no capabilities over the files
        command = ["unshare", "--user", *command]
    elif namespace:
        command = ["unshare", "--user", "--map-root-user", "--mount", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["previous"] == previous, "the previous archive was changed"
    assert result["listing"] == sorted(previous), f"files left behind: {result['listing']}"
    return result


def _assert_write_error(result: dict[str, Any], code: int, destination: Path) -> None:
    assert "types" in result, "the write did not fail"
    assert result["types"][:2] == ["WriteError", "CellCoaddError"], result
    assert "OSError" in result["types"]
    assert result["errno"] == code, result
    assert str(destination) in result["message"], result["message"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_destination_directory(fmt: str, new: ccd.CellCoadd, tmp_path: Path) -> None:
    destination = tmp_path / "missing" / NAMES[fmt]
    with pytest.raises(DestinationNotFoundError) as info:
        _write(fmt, new, destination)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ccd.CellCoaddError)
    assert str(destination) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize("fmt", FORMATS)
def test_read_only_directory(fmt: str, sources: Path, tmp_path: Path) -> None:
    directory = tmp_path / "mounted"
    directory.mkdir()
    result = _child_write(fmt, directory, sources / "synthetic_3x3.fits", namespace=True, mount="4m",
                          read_only=True)
    _assert_write_error(result, errno.EROFS, directory / NAMES[fmt])


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_full(fmt: str, sources: Path, tmp_path: Path) -> None:
    directory = tmp_path / "mounted"
    directory.mkdir()
    result = _child_write(fmt, directory, sources / "synthetic_3x3.fits", namespace=True, mount="64k")
    _assert_write_error(result, errno.ENOSPC, directory / NAMES[fmt])


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize("fmt", FORMATS)
def test_permission_denied(fmt: str, sources: Path, tmp_path: Path) -> None:
    """EACCES, even for root: the writer runs in a user namespace, without capabilities over the directory."""
    directory = tmp_path / "locked"
    directory.mkdir()
    result = _child_write(fmt, directory, sources / "synthetic_3x3.fits", namespace="user", no_write_permission=True)
    _assert_write_error(result, errno.EACCES, directory / NAMES[fmt])


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_size_limit(fmt: str, sources: Path, tmp_path: Path) -> None:
    result = _child_write(fmt, tmp_path, sources / "synthetic_3x3.fits", fsize=16384)
    _assert_write_error(result, errno.EFBIG, tmp_path / NAMES[fmt])


# --------------------------------------------------------------------------- object stores


class ResetAfterPuts(S3FaultProxy):
    """A fault proxy that forwards ``puts`` PUT requests, then faults every request (of any method).

    Parameters
    ----------
    server
        The S3 server.
    puts
        PUTs forwarded before the fault.
    kind
        :data:`~faultproxy.RESET` (default) or :data:`~faultproxy.STALL` (``seconds`` long).
    """

    def __init__(self, server: S3Server, puts: int, kind: str = RESET, seconds: float = 0.0) -> None:
        super().__init__(server)
        self.puts = puts
        self.seen = 0
        self.tripped = False
        self._fault = Fault(kind, None, None, False, None, seconds=seconds)

    def _claim(self, method: str, target: str, range_header: str | None) -> Fault | None:
        with self._lock:
            if not self.tripped and method == "PUT":
                self.seen += 1
                self.tripped = self.seen > self.puts
            if self.tripped:
                self._fault.fired += 1
                return self._fault
        return super()._claim(method, target, range_header)


def _keys(server: S3Server, key: str) -> list[str]:
    fs = server.filesystem()
    prefix = f"{server.bucket}/{key}"
    return sorted(p[len(prefix) + 1 :] for p in fs.find(prefix))


def _versions(keys: list[str]) -> set[str]:
    return {k.split("/", 1)[0] for k in keys if "/" in k}


@pytest.fixture
def previous(s3_server: S3Server, old: ccd.CellCoadd, request: pytest.FixtureRequest) -> tuple[str, bytes]:
    """A Zarr archive of `old` written to S3 (straight to the server); its key and root document."""
    key = f"failures/{request.node.name.replace('[', '-').replace(']', '')}-{os.getpid()}.zarr"
    write_zarr(old, f"s3://{s3_server.bucket}/{key}", storage_options=s3_server.storage_options)
    return key, s3_server.filesystem().cat_file(f"{s3_server.bucket}/{key}/zarr.json")


def _assert_previous_kept(server: S3Server, key: str, root: bytes, expected: dict[str, np.ndarray]) -> None:
    assert server.filesystem().cat_file(f"{server.bucket}/{key}/zarr.json") == root
    _assert_same(ccd.open_coadd(f"s3://{server.bucket}/{key}", storage_options=server.storage_options), expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_endpoint_that_resets(fmt: str, new: ccd.CellCoadd, s3_server: S3Server) -> None:
    key = f"failures/resets-{os.getpid()}/{NAMES[fmt]}"
    url = f"s3://{s3_server.bucket}/{key}"
    with ResetAfterPuts(s3_server, 0) as proxy, pytest.raises(WriteError) as info:
        _write(fmt, new, url, storage_options={**proxy.storage_options, **NO_RETRIES})
    message = str(info.value)
    assert url in message and isinstance(info.value, OSError)
    assert s3_server.secret not in message and s3_server.key not in message
    assert _keys(s3_server, key) == []


@pytest.mark.parametrize("puts", [1, 5, 12, 30])
def test_zarr_reset_after_n_puts_keeps_the_previous_archive(
    puts: int, new: ccd.CellCoadd, old: ccd.CellCoadd, s3_server: S3Server, previous: tuple[str, bytes]
) -> None:
    key, root = previous
    url = f"s3://{s3_server.bucket}/{key}"
    old_version = _versions(_keys(s3_server, key))
    with ResetAfterPuts(s3_server, puts) as proxy:
        with pytest.raises(WriteError, match="previous archive"):
            write_zarr(new, url, storage_options={**proxy.storage_options, **NO_RETRIES})
        assert proxy.tripped, "the write ended before the fault"
    _assert_previous_kept(s3_server, key, root, _planes(old))
    # The next write through a healthy connection removes the failed write's objects too.
    write_zarr(new, url, storage_options=s3_server.storage_options)
    _assert_same(ccd.open_coadd(url, storage_options=s3_server.storage_options), _planes(new))
    versions = _versions(_keys(s3_server, key))
    assert len(versions) == 1 and not versions & old_version


def test_zarr_reset_at_the_commit_keeps_the_previous_archive(
    new: ccd.CellCoadd, old: ccd.CellCoadd, s3_server: S3Server, previous: tuple[str, bytes]
) -> None:
    key, root = previous
    url = f"s3://{s3_server.bucket}/{key}"
    # Count the PUTs of a whole write (the last one is the root document) ...
    with ResetAfterPuts(s3_server, 10**9) as counter:
        write_zarr(new, f"s3://{s3_server.bucket}/{key}-count", storage_options=counter.storage_options)
        puts = counter.seen
    # ... and reset from the root document's PUT on: the write fails at its commit.
    with ResetAfterPuts(s3_server, puts - 1) as proxy:
        with pytest.raises(WriteError, match="previous archive or the new one"):
            write_zarr(new, url, storage_options={**proxy.storage_options, **NO_RETRIES})
        assert proxy.seen == puts
    _assert_previous_kept(s3_server, key, root, _planes(old))


_KILLED = r"""
import json, sys
import cellcoadd_dask as ccd
from cellcoadd_dask.archives.zarr.writer import write_zarr
source, url, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
write_zarr(ccd.open_coadd(source), url, storage_options=options)
"""


@pytest.mark.parametrize("puts", [3, 20])
def test_killed_zarr_writer_keeps_the_previous_archive(
    puts: int, old: ccd.CellCoadd, sources: Path, s3_server: S3Server, previous: tuple[str, bytes]
) -> None:
    key, root = previous
    url = f"s3://{s3_server.bucket}/{key}"
    old_keys = _keys(s3_server, key)
    with ResetAfterPuts(s3_server, puts, STALL, seconds=120) as proxy:
        options = {**proxy.storage_options, **NO_RETRIES}
        child = subprocess.Popen([sys.executable, "-c", _KILLED, str(sources / "synthetic_3x3.fits"), url,
                                  json.dumps(options)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not proxy.tripped and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.tripped, f"the writer did not reach PUT {puts + 1}"
            assert child.poll() is None, "the writer ended before it was killed"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            assert child.stderr is not None
            child.stderr.close()
    # The killed writer stored objects under a new version prefix, and nothing else.
    stored = _keys(s3_server, key)
    added = [k for k in stored if k not in old_keys]
    assert added and _versions(added).isdisjoint(_versions(old_keys))
    _assert_previous_kept(s3_server, key, root, _planes(old))


def test_zarr_overwrite_leaves_no_objects_of_the_previous_version(
    new: ccd.CellCoadd, s3_server: S3Server, previous: tuple[str, bytes]
) -> None:
    key, _ = previous
    url = f"s3://{s3_server.bucket}/{key}"
    fs = s3_server.filesystem()
    before = _keys(s3_server, key)
    # A version a killed writer left behind, and an array of a layout written without versions.
    fs.pipe_file(f"{s3_server.bucket}/{key}/v20000101T000000Z-dead/image/zarr.json", b"{}")
    fs.pipe_file(f"{s3_server.bucket}/{key}/image/zarr.json", b"{}")
    write_zarr(new, url, storage_options=s3_server.storage_options)
    after = _keys(s3_server, key)
    assert not set(after) & set(before) - {"zarr.json"}
    versions = _versions(after)
    assert len(versions) == 1
    (version,) = versions
    assert all(k == "zarr.json" or k.startswith(f"{version}/") for k in after)
    root = json.loads(fs.cat_file(f"{s3_server.bucket}/{key}/zarr.json"))
    assert root["attributes"]["lsst"]["json"] == f"{version}/lsst_json"
    assert root["attributes"]["ome"]["multiscales"][0]["datasets"][0]["path"] == f"{version}/image"
    assert all(k.startswith(f"{version}/") or k == version for k in root["consolidated_metadata"]["metadata"])
    reread = ccd.open_coadd(url, storage_options=s3_server.storage_options)
    _assert_same(reread, _planes(new))


def test_zarr_overwrite_false_refuses_an_existing_archive(
    new: ccd.CellCoadd, s3_server: S3Server, previous: tuple[str, bytes]
) -> None:
    key, root = previous
    before = _keys(s3_server, key)
    with pytest.raises(ccd.CellCoaddError, match="already exists"):
        write_zarr(new, f"s3://{s3_server.bucket}/{key}", storage_options=s3_server.storage_options,
                   overwrite=False)
    assert _keys(s3_server, key) == before
    assert s3_server.filesystem().cat_file(f"{s3_server.bucket}/{key}/zarr.json") == root
