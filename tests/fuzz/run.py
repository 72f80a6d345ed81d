"""Runs of the fuzzer: baselines, cases of every archive, the outcome table and the distinct failures."""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fuzz.fits_cases import fits_cases
from fuzz.json_cases import json_cases
from fuzz.pool import FAILURES, OUTCOMES, Case, FuzzPool, Result
from fuzz.zarr_cases import zarr_cases

__all__ = ["ARCHIVES", "Report", "baselines", "fuzz"]

ARCHIVES: dict[str, Callable[[Path, int, int], Iterator[Case]]] = {
    "fits": fits_cases, "json": json_cases, "zarr": zarr_cases}
"""Case generators by archive: ``generate(baseline path, n, seed)``."""
SOURCE = "min_default.fits"
JSON_SOURCE = "cell_coadd_min_as_shipped.json"


def baselines(reference_dir: Path, directory: Path) -> dict[str, Path]:
    """The unmutated archives: the corpus FITS and JSON files, a Zarr layout-2 store written from the FITS file."""
    import cellcoadd_dask as ccd

    store = directory / "baseline.zarr"
    if not store.exists():
        ccd.open_coadd(reference_dir / SOURCE).write_zarr(str(store))
    return {"fits": reference_dir / SOURCE, "json": reference_dir / JSON_SOURCE, "zarr": store}


class Report:
    """Outcomes counted by archive, and one example of each distinct failure."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.examples: dict[tuple[str, str, str], Result] = {}
        self.seconds = 0.0
        self.cases = 0

    def add(self, result: Result) -> None:
        archive = result.case.archive
        self.counts[archive, result.outcome] += 1
        self.seconds += result.seconds
        self.cases += 1
        if result.outcome in FAILURES:
            self.examples.setdefault((archive, result.outcome, signature(result.detail)), result)

    def failing(self, archive: str | None = None) -> set[str]:
        """The failure classes seen (for one archive, or any)."""
        return {outcome for (a, outcome), count in self.counts.items()
                if count and outcome in FAILURES and archive in (None, a)}

    def table(self) -> str:
        archives = sorted({a for a, _ in self.counts})
        rows = [f"{'archive':8}" + "".join(f"{o:>9}" for o in OUTCOMES) + f"{'total':>9}"]
        for archive in archives:
            counts = [self.counts[archive, o] for o in OUTCOMES]
            rows.append(f"{archive:8}" + "".join(f"{c:>9}" for c in counts) + f"{sum(counts):>9}")
        totals = [sum(self.counts[a, o] for a in archives) for o in OUTCOMES]
        rows.append(f"{'all':8}" + "".join(f"{c:>9}" for c in totals) + f"{sum(totals):>9}")
        return "\n".join(rows)

    def failures(self) -> str:
        lines = []
        for (archive, outcome, _), result in sorted(self.examples.items(), key=lambda item: item[0][:2]):
            lines.append(f"[{archive} {outcome}] {result.case.name}\n    -> {result.detail}")
        return "\n".join(lines)


def signature(detail: str) -> str:
    """A failure's message without the parts that vary between cases (paths, numbers, quoted values)."""
    text = re.sub(r"(/[\w.+-]+)+", "<path>", detail)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "<str>", text)
    text = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "<n>", text)
    return text[:120]


def fuzz(reference_dir: Path, directory: Path, per_archive: int, seed: int = 20261204, workers: int = 2,
         archives: tuple[str, ...] = tuple(ARCHIVES), progress: Callable[[Report], None] | None = None) -> Report:
    """``per_archive`` cases of each archive, judged by ``workers`` children; the report."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = baselines(reference_dir, directory)
    report = Report()

    def cases() -> Iterator[Case]:
        generators = [ARCHIVES[name](paths[name], per_archive, seed + 10_000 * n) for n, name in enumerate(archives)]
        while generators:  # interleave the archives
            for generator in list(generators):
                case = next(generator, None)
                if case is None:
                    generators.remove(generator)
                else:
                    yield case

    work = directory / "cases"
    work.mkdir(exist_ok=True)
    start = time.perf_counter()
    with FuzzPool({name: paths[name] for name in archives}, work, workers) as pool:
        for result in pool.run(cases()):
            report.add(result)
            if progress is not None:
                progress(report)
    report.wall = time.perf_counter() - start  # type: ignore[attr-defined]
    return report
