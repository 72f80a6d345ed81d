"""Fixtures of the archive conformance suite: every archive (`archive`) over every byte source (`source`).

Tests that take both ``archive`` and ``source`` are run for every pair of `archives.ARCHIVES`
and `sources.SOURCE_NAMES`, except stores over presigned URLs (a presigned URL signs one
object).  Tests that also take ``name`` run over each reference file of ``archive.files``,
tests taking ``damage`` over each of ``archive.damage``, tests taking ``target`` over
`round_trip_targets`.
Markers narrow the matrix for one test:

- ``@pytest.mark.sources("local", ...)``: only these sources;
- ``@pytest.mark.writable``: only the archives our package writes;
- ``@pytest.mark.cross_process``: not the memory filesystem (it lives in one process only).

Archives are produced once per session, and published once per source; servers (nginx,
SeaweedFS, the fault proxy) are the session's.
"""

from __future__ import annotations

import functools
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


KNOWN_BUGS: tuple[tuple[str, str, str | None, str | None, str], ...] = (
    # (test function, archive, source or None for any, extra parameter or None for any, the bug).
    # Each is reported with a minimal reproduction; the cases are strict xfails (they must fail).
    # Layout 1 omits chunks that hold only the fill value, so a deleted one cannot be told from them
    # (layout 2 stores every chunk and refuses a missing one).
    ("test_damaged_archive_gives_a_typed_error_naming_its_url", "zarr-1", None, "deleted chunk",
     "a deleted chunk of layout 1 is read as the fill value: layout 1 omits chunks of fill values"),
)


def _known_bug(test: str, archive: str, source: str, extra: str | None) -> str | None:
    for name, bug_archive, bug_source, bug_extra, reason in KNOWN_BUGS:
        if (name, bug_archive) == (test, archive) and bug_source in (None, source) and bug_extra in (None, extra):
            return reason
    return None


@functools.cache
def _round_trip_plan() -> dict[tuple[str, str], Archive]:
    """One target per (archive, source) case, chosen so that every (archive, target) and every
    (source, target) pair is written at least once (greedy: the target covering most new pairs)."""
    plan: dict[tuple[str, str], Archive] = {}
    seen: set[tuple[str, str]] = set()
    for archive in ARCHIVES:
        targets = [a for a in ARCHIVES if a.write is not None and a is not archive]
        for source in SOURCE_NAMES:
            if applicable(archive, source):
                new = [((archive.name, t.name) not in seen) + ((source, t.name) not in seen) for t in targets]
                target = targets[new.index(max(new))]
                seen |= {(archive.name, target.name), (source, target.name)}
                plan[archive.name, source] = target
    return plan


def round_trip_targets(archive: Archive, source: str) -> tuple[Archive, ...]:
    """The archive a round-trip test writes ``archive`` read from ``source`` to: one per case.

    Over the matrix every archive goes to every other writable archive and every source feeds
    every writable archive (`_round_trip_plan`), which keeps the suite short.
    """
    return (_round_trip_plan()[archive.name, source],)


def _extras(axis: str, archive: Archive, source: str) -> tuple[Any, ...]:
    """Values of the extra axis ``axis`` of a test for one archive and source."""
    if axis == "name":  # tests over several reference files: those each archive is made from
        return archive.files
    if axis == "damage":
        return tuple(archive.damage)
    if axis == "target":
        return round_trip_targets(archive, source)
    raise ValueError(f"unknown axis {axis!r}")


def _ident(value: Any) -> str:
    return str(value).removesuffix(".fits").replace(" ", "-")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``archive`` x ``source`` (x one extra axis) over the matrix, narrowed by the test's markers."""
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
    axis = next((a for a in ("name", "damage", "target") if a in names), None)
    test = metafunc.function.__name__
    params = []
    for archive in archives:
        for source in sources:
            if not applicable(archive, source):
                continue
            for extra in _extras(axis, archive, source) if axis else (None,):
                values = (archive, source) if axis is None else (archive, source, extra)
                ident = "-".join(_ident(v) for v in values)
                bug = _known_bug(test, archive.name, source, None if extra is None else str(extra))
                marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
                params.append(pytest.param(*values, id=ident, marks=marks))
    argnames = ("archive", "source") if axis is None else ("archive", "source", axis)
    metafunc.parametrize(argnames, params, indirect=["source"])


@pytest.fixture(scope="session")
def fault_proxy(http_server: Any) -> Iterator[Any]:
    """The fault proxy in front of the session nginx, for the whole session."""
    from faultproxy import HttpFaultProxy

    with HttpFaultProxy(http_server) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def source_objects() -> dict[str, Source]:
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
