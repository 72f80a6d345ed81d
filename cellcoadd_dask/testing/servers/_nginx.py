"""nginx on loopback: a byte-range HTTP server with a per-request access log."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from ._process import LOOPBACK, find_executable, free_ports, spawn, stop, wait_for_http

__all__ = ["HttpServer", "LoggedRequest", "RequestLog", "run_nginx"]


class LoggedRequest(NamedTuple):
    """One request as recorded in the nginx access log."""

    method: str
    """HTTP method."""
    name: str
    """Path of the file in the docroot, without the leading slash."""
    range: str | None
    """The raw ``Range`` header, `None` when absent."""
    status: int
    """HTTP status of the response."""
    body_bytes: int
    """Body bytes sent (0 for ``HEAD``)."""
    connection: int
    """nginx's connection serial number (equal numbers: a reused connection)."""


@dataclasses.dataclass(frozen=True)
class RequestLog:
    """The requests recorded between a mark and now, in the order nginx completed them."""

    requests: tuple[LoggedRequest, ...]
    """The requests."""

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
    """A running nginx serving ``root`` at ``url`` with an unbuffered access log.

    Use `publish` to make a file available, and `mark` / `requests_since` to see exactly which
    requests reached the server::

        url = server.publish(path)
        mark = server.mark()
        ...  # read from url
        log = server.requests_since(mark, name=url)
        print(len(log), log.body_bytes)

    Parameters
    ----------
    url
        Base URL, ``http://127.0.0.1:<port>``.
    root
        The docroot.
    access_log
        nginx's access log (one tab-separated line per request).
    """

    def __init__(self, url: str, root: Path, access_log: Path) -> None:
        self.url = url
        self.root = root
        self.access_log = access_log

    def publish(self, path: Path | str, name: str | None = None) -> str:
        """Hard-link (or copy) a file into the docroot under a unique name.

        Parameters
        ----------
        path
            The local file.
        name
            File name to derive the published name from; default the name of ``path``.

        Returns
        -------
        str
            Its URL.
        """
        path = Path(path)
        target = self.root / self._unique_name(name or path.name)
        # A copy, not a hard link: a new link changes the file's ctime, which readers that
        # pinned the original (size, mtime, ctime, inode) rightly take for a change.
        shutil.copyfile(path, target)
        return f"{self.url}/{target.name}"

    def publish_bytes(self, data: bytes, name: str = "blob.bin") -> str:
        """Write ``data`` into the docroot under a unique name derived from ``name``; return its URL."""
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
        """Return a position in the access log; requests completed later come after it."""
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

        Returns
        -------
        RequestLog
            The requests, in the order nginx completed them.
        """
        self._sync()
        with self.access_log.open("rb") as stream:
            stream.seek(mark)
            text = stream.read().decode()
        # A request still being logged (after our sentinel) may have left a partial last line.
        lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
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
def run_nginx(workdir: str | os.PathLike[str], root: str | os.PathLike[str]) -> Iterator[HttpServer]:
    """Run nginx on a free loopback port, serving ``root`` with byte ranges.

    Parameters
    ----------
    workdir
        An existing directory for the configuration, logs and temporary files.
    root
        The directory served.

    Yields
    ------
    HttpServer
        The running server; it stops when the context ends.

    Raises
    ------
    ServerError
        If nginx is not installed or does not start within 20 s.
    """
    workdir, root = Path(workdir), Path(root)
    nginx = find_executable(
        "nginx", "install it, e.g. `apt-get install -y nginx-light` on Debian or Ubuntu", Path("/usr/sbin")
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
