"""Mutation fuzzing of every archive: FITS, JSON and Zarr layout 2 (the harness is `fuzz`).

At least 600 seeded cases (`PER_ARCHIVE` of each archive: byte flips, truncations, deleted
objects, and hypothesis edits of trees, metadata documents and header cards) are read in two
reused child processes, each capped at 2 GiB of address space and 5 s per case.  Every case must
end as ``ok`` (reads; values equal the unmutated archive's except where the mutated bytes allow,
or, for FITS and JSON, equal lsst-images' read of the mutated file where a tree edit changed what
stored values mean) or ``typed`` (a `cellcoadd_dask.CellCoaddError`); one test per archive and failure class checks
there is none of it.  Classes still seen are strict xfails naming one reproducing case each
(``PYTHONPATH=tests python -m fuzz`` reproduces the run and prints every distinct failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz.pool import FAILURES, Case
from fuzz.run import ARCHIVES, Report, baselines, fuzz

PER_ARCHIVE = 210
"""Cases per archive in one run (3 archives: 630 cases)."""
SEED = 20261204

KNOWN: dict[tuple[str, str], str] = {}
"""``(archive, outcome)`` pairs still seen, with one reproducing case each (strict xfails)."""


@pytest.fixture(scope="module")
def report(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    directory = tmp_path_factory.mktemp("fuzz")
    yield fuzz(reference_dir, directory, PER_ARCHIVE, SEED)


def _params() -> Iterator[object]:
    for archive in ARCHIVES:
        for outcome in FAILURES:
            marks = []
            if (archive, outcome) in KNOWN:
                marks.append(pytest.mark.xfail(strict=True, reason=f"{outcome}: {KNOWN[archive, outcome]}"))
            yield pytest.param(archive, outcome, id=f"{archive}-{outcome}", marks=marks)


@pytest.mark.timeout(900)
def test_enough_cases_ran(report: Report) -> None:
    assert report.cases >= 600, report.table()
    for archive in ARCHIVES:
        assert sum(report.counts[archive, o] for o in ("ok", "typed", *FAILURES)) >= PER_ARCHIVE * 9 // 10
        assert report.counts[archive, "ok"] > 0 and report.counts[archive, "typed"] > 0, report.table()


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("archive", "outcome"), list(_params()))
def test_no_failures_of_a_class(report: Report, archive: str, outcome: str) -> None:
    seen = [f"{result.case.name} -> {result.detail}" for (a, o, _), result in report.examples.items()
            if a == archive and o == outcome]
    assert report.counts[archive, outcome] == 0, (
        f"{report.counts[archive, outcome]} {outcome} cases of {archive} ({len(seen)} distinct):\n"
        + "\n".join(seen) + "\n" + report.table())


def test_the_unmutated_archives_read_ok(reference_dir: Path, tmp_path: Path) -> None:
    """The classifier itself: an untouched copy of each archive is ``ok``, a missing one ``typed``."""
    import shutil

    paths = baselines(reference_dir, tmp_path)

    def copy(source: Path) -> Case:
        def make(path: Path) -> None:
            if source.is_dir():
                shutil.copytree(source, path)
            else:
                shutil.copy(source, path)

        return Case(source.suffix.lstrip("."), f"copy of {source.name}", make)

    from fuzz.pool import FuzzPool

    cases = [copy(paths[name]) for name in ARCHIVES]
    cases += [Case(name, f"no {name} archive", lambda path: None) for name in ARCHIVES]
    work = tmp_path / "cases"
    work.mkdir()
    with FuzzPool(paths, work, workers=1) as pool:
        outcomes = [(r.case.name, r.outcome) for r in pool.run(cases)]
    assert outcomes == [(case.name, "ok" if case.name.startswith("copy") else "typed") for case in cases]
