"""Shared fixtures: the generated corpus, reference files, HTTP and S3 servers, a dask cluster.

The corpus is written by lsst-images (`cellcoadd_dask.testing`) and cached between runs; it is
built once when the session starts.  Servers and the cluster are session-scoped, bound to
127.0.0.1 only, and stopped at the end of the session (or when the test process dies).  A missing
tool fails the tests that need it with an install hint.  An audit hook (`guard`) refuses any read
beside the repository, so the suite passes from a bare clone.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lsst_files import lsst_variants
from servers import LOOPBACK, HttpServer, S3Server, run_nginx, run_seaweedfs

# botocore otherwise probes the EC2 metadata service when credentials are
# missing; set before any dask worker is spawned so that workers inherit it.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

from guard import OutsideReadGuard, default_allowed
from paths import CORPUS_DIR, EXTRA_REFERENCE_DIR, REFERENCE_DIR, REFERENCE_ENV, REPO

from cellcoadd_dask.testing import corpus_cache_root

__all__ = ["lsst_variants"]

GUARD = OutsideReadGuard(REPO.parent, default_allowed(REPO, corpus_cache_root(), EXTRA_REFERENCE_DIR)).install()

REFERENCE_FIXTURES = frozenset({"reference_dir", "expected_values"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that read the reference files ``reference`` (``-m reference`` runs only those)."""
    for item in items:
        module = getattr(item, "module", None)
        if REFERENCE_FIXTURES & set(getattr(item, "fixturenames", ())) or "REFERENCE_DIR" in vars(module or object):
            item.add_marker(pytest.mark.reference)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers and say which corpus the session reads."""
    config.addinivalue_line("markers", "reference: reads the reference files (the corpus or the extra one)")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the corpus in the session header."""
    lines = [f"corpus: {CORPUS_DIR}"]
    if EXTRA_REFERENCE_DIR is not None:
        lines.append(f"reference files: {EXTRA_REFERENCE_DIR} (from ${REFERENCE_ENV})")
    return lines


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if anything beside the repository was opened (even if a test caught the error)."""
    if GUARD.violations:
        for message in dict.fromkeys(GUARD.violations):
            print(f"\nERROR: {message}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Directory of the generated corpus (`cellcoadd_dask.testing`), built once and cached."""
    return CORPUS_DIR



@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Directory of the reference files written by lsst-images.

    The generated corpus, or the extra corpus named by ``$CELLCOADD_REFERENCE_DIR``.
    """
    path = REFERENCE_DIR
    if not (path / "expected_values.json").is_file():
        pytest.fail(f"reference files not found in {path} (${REFERENCE_ENV})", pytrace=False)
    return path


@pytest.fixture(scope="session")
def expected_values(reference_dir: Path) -> dict[str, Any]:
    """The parsed ``expected_values.json`` of the reference files, keyed by file name."""
    with (reference_dir / "expected_values.json").open() as stream:
        return json.load(stream)


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """nginx serving a per-session docroot with byte ranges and a per-request access log."""
    with run_nginx(tmp_path_factory.mktemp("nginx"), tmp_path_factory.mktemp("htdocs")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS S3 server with one bucket and static credentials."""
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A `distributed.LocalCluster` of two single-threaded worker processes on loopback."""
    import dask
    from distributed import LocalCluster

    scratch = str(tmp_path_factory.mktemp("dask"))
    with dask.config.set({"temporary-directory": scratch}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host=LOOPBACK,
            scheduler_port=0,
            dashboard_address=f"{LOOPBACK}:0",
            memory_limit="2GiB",
            local_directory=scratch,
        )
        try:
            yield cluster
        finally:
            cluster.close(timeout=30)


@pytest.fixture
def dask_client(dask_cluster: Any) -> Iterator[Any]:
    """A client of `dask_cluster`, the default scheduler for the duration of one test."""
    from distributed import Client

    with Client(dask_cluster) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


from faultproxy import HttpFaultProxy, S3FaultProxy  # noqa: E402


@pytest.fixture
def http_proxy(http_server: HttpServer) -> Iterator[HttpFaultProxy]:
    """A fault-injecting, request-counting proxy in front of the session nginx, for one test.

    Publish files with ``http_proxy.publish(path)`` to get URLs that go through it.
    """
    with HttpFaultProxy(http_server) as proxy:
        yield proxy


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[S3FaultProxy]:
    """A fault-injecting, request-counting proxy in front of the session S3 server, for one test.

    ``s3_proxy.storage_options`` make s3fs talk to the server through it.
    """
    with S3FaultProxy(s3_server) as proxy:
        yield proxy
