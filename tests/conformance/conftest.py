"""Fixtures of the archive conformance suite: every archive (`archive`) over every byte source (`source`).

Tests that take both ``archive`` and ``source`` are run for every pair of `archives.ARCHIVES`
and `sources.SOURCE_NAMES`, except stores over presigned URLs (a presigned URL signs one
object); tests that also take ``name`` run over each reference file of ``archive.files``.
Markers narrow the matrix for one test:

- ``@pytest.mark.sources("local", ...)``: only these sources;
- ``@pytest.mark.writable``: only the archives our package writes;
- ``@pytest.mark.cross_process``: not the memory filesystem (it lives in one process only).

Archives are produced once per session, and published once per source; servers (nginx,
SeaweedFS, the fault proxy) are the session's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest

from .archives import ARCHIVES, Archive
from .library import Library
from .sources import (
    SOURCE_NAMES,
    FaultySource,
    HttpSource,
    LocalSource,
    MemorySource,
    PresignedSource,
    Published,
    S3Source,
    Source,
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers of the suite."""
    config.addinivalue_line("markers", "sources(*names): run the test over these byte sources only")
    config.addinivalue_line("markers", "writable: run the test over the archives our package writes only")
    config.addinivalue_line("markers", "cross_process: the test reads in other processes (no memory://)")


def applicable(archive: Archive, source: str) -> bool:
    """Whether ``archive`` can be read from ``source`` at all."""
    # A presigned URL signs one object: a store cannot be read through presigned URLs
    # (cellcoadd_dask/archives/zarr/store.py reads a Zarr archive through its s3:// URL instead).
    return not (archive.store and source == "presigned")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``archive`` x ``source`` over the matrix, narrowed by the test's markers."""
    names = set(metafunc.fixturenames)
    if "archive" not in names:
        return
    archives = ARCHIVES
    if metafunc.definition.get_closest_marker("writable"):
        archives = tuple(a for a in archives if a.write is not None)
    if "source" not in names:
        metafunc.parametrize("archive", archives, ids=str)
        return
    marker = metafunc.definition.get_closest_marker("sources")
    sources = tuple(marker.args) if marker else SOURCE_NAMES
    if metafunc.definition.get_closest_marker("cross_process"):
        sources = tuple(s for s in sources if s != "memory")
    pairs = [(a, s) for a in archives for s in sources if applicable(a, s)]
    if "name" not in names:
        params = [pytest.param(a, s, id=f"{a.name}-{s}") for a, s in pairs]
        metafunc.parametrize(("archive", "source"), params, indirect=["source"])
        return
    # Tests over several reference files: the files each archive is made from.
    params = [pytest.param(a, s, n, id=f"{a.name}-{s}-{n.removesuffix('.fits')}") for a, s in pairs for n in a.files]
    metafunc.parametrize(("archive", "source", "name"), params, indirect=["source"])


@pytest.fixture(scope="session")
def fault_proxy(http_server: Any) -> Iterator[Any]:
    """The fault proxy in front of the session nginx, for the whole session."""
    from faultproxy import HttpFaultProxy

    with HttpFaultProxy(http_server) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def source_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Source]:
    """The sources made so far, by name (each made on first use: servers start only when needed)."""
    return {}


def _make_source(name: str, request: pytest.FixtureRequest, root: Path) -> Source:
    if name == "local":
        return LocalSource(root)
    if name == "memory":
        return MemorySource()
    if name == "http":
        return HttpSource(request.getfixturevalue("http_server"))
    if name == "s3":
        return S3Source(request.getfixturevalue("s3_server"))
    if name == "presigned":
        return PresignedSource(request.getfixturevalue("s3_server"))
    if name == "faulty":
        return FaultySource(request.getfixturevalue("fault_proxy"))
    raise ValueError(f"unknown source {name!r}")


@pytest.fixture
def source(request: pytest.FixtureRequest, source_objects: dict[str, Source],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """One byte source (indirect parameter: its name).  Behind the fault proxy, the first two
    requests of the test are reset and retried, with a short backoff."""
    name = request.param
    if name not in source_objects:
        source_objects[name] = _make_source(name, request, tmp_path_factory.mktemp("local-source"))
    made = source_objects[name]
    if not isinstance(made, FaultySource):
        yield made
        return
    with dask.config.set({"cellcoadd.fetch.backoff": 0.01, "cellcoadd.fetch.max_backoff": 0.05}):
        made.arm()
        try:
            yield made
        finally:
            made.disarm()


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    """The session's `Library` of archives."""
    return Library(tmp_path_factory.mktemp("archives"))


@pytest.fixture
def case(archive: Archive, source: Source, library: Library) -> Published:
    """The archive made from `SMALL`, published on the source."""
    return library.published(archive, source)

