"""Child processes that read mutated archives, one case at a time, under a memory cap and a wall limit.

A `FuzzPool` keeps ``workers`` spawned children alive between cases (as ``CaseWorker`` of
``test_bad_input`` does): each child caps its address space (``RLIMIT_AS``, 2 GiB) once its
imports are done and the baselines are read, then judges the cases it is sent.  A child that
dies (a signal, an abort in native code) is a *crash*, one that does not answer within
`WALL_LIMIT` seconds is a *hang*; either is replaced by a fresh child.  Everything else is
classified inside the child (`judge`).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.process
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from fuzz.compare import compare, read_everything, reference_agrees

ADDRESS_SPACE = 2 << 30
"""Address-space cap of a child (``RLIMIT_AS``), bytes."""
WALL_LIMIT = 5.0
"""Seconds one case (open and compute everything) may take before it counts as a hang."""
START_LIMIT = 120.0
"""Seconds a fresh child may take to import the package and read the baselines."""

OUTCOMES = ("ok", "typed", "untyped", "crash", "hang", "memory", "wrong")
"""Outcome classes: read and equal (or differing only where allowed), a `CellCoaddError`, another
exception, abnormal exit, over the wall limit, `MemoryError` (or over the cap), silently wrong."""
FAILURES = ("untyped", "crash", "hang", "memory", "wrong")
"""The outcomes that break the rule."""

Allowed = tuple[tuple[str, Any], ...]
"""``(plane, region)`` pairs that may differ if the case reads (region ``None``: whole plane;
plane ``"*"``: every value may change)."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One mutated archive.

    Attributes
    ----------
    archive
        ``fits``, ``json`` or ``zarr``.
    name
        What was done, enough to reproduce it (seeded).
    make
        ``make(path)``: write the mutated archive at ``path`` (a file, or a store directory).
    allowed
        What may differ from the unmutated archive's values if the case reads.
    """

    archive: str
    name: str
    make: Callable[[Path], None]
    allowed: Allowed = ()


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of one case: its class, what happened (exception type and message), seconds."""

    case: Case
    outcome: str
    detail: str
    seconds: float


def _memory_in(exc: BaseException) -> bool:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        if isinstance(node, MemoryError):
            return True
        seen.add(id(node))
        node = node.__cause__ or node.__context__
    return False


def judge(path: Path, base: dict[str, Any], allowed: Allowed) -> tuple[str, str]:
    """Open and compute one mutated archive; return ``(outcome, detail)``."""
    import cellcoadd_dask as ccd

    try:
        values = read_everything(path)
    except ccd.CellCoaddError as exc:
        if _memory_in(exc):
            return "memory", f"{type(exc).__name__} from MemoryError: {exc}"
        return "typed", f"{type(exc).__name__}: {exc}"
    except MemoryError as exc:
        return "memory", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # any other type is what is looked for
        if _memory_in(exc):
            return "memory", f"{type(exc).__name__} from MemoryError: {exc}"
        return "untyped", f"{type(exc).__name__}: {str(exc)[:300]}"
    problems = compare(values, base, allowed)
    if problems and not reference_agrees(path, values, problems):
        return "wrong", "; ".join(problems)[:400]
    return "ok", ""


def _serve(conn: Connection, baselines: dict[str, str]) -> None:
    """Child loop: read the baselines, cap the address space, then judge cases until ``None``."""
    warnings.simplefilter("error")  # as pytest's filterwarnings = error
    try:
        base = {key: read_everything(Path(path)) for key, path in baselines.items()}
    except Exception as exc:
        conn.send(f"the unmutated archives do not read: {type(exc).__name__}: {exc}")
        return
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, resource.getrlimit(resource.RLIMIT_AS)[1]))
    conn.send("ready")
    while True:
        message = conn.recv()
        if message is None:
            return
        key, path, allowed = message
        conn.send(judge(Path(path), base[key], allowed))


class _Child:
    def __init__(self, baselines: dict[str, str]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        # Few malloc arenas: each thread's 64 MiB arena reservation would count against the cap.
        previous = os.environ.get("MALLOC_ARENA_MAX")
        os.environ["MALLOC_ARENA_MAX"] = "2"
        try:
            self.process: multiprocessing.process.BaseProcess = context.Process(
                target=_serve, args=(child, baselines), daemon=True)
            self.process.start()
        finally:
            if previous is None:
                os.environ.pop("MALLOC_ARENA_MAX", None)
            else:
                os.environ["MALLOC_ARENA_MAX"] = previous
        child.close()
        answer = self.conn.recv() if self.conn.poll(START_LIMIT) else "no answer"
        if answer != "ready":
            self.kill()
            raise RuntimeError(f"a fuzzing child did not start: {answer}")
        self.job: tuple[Case, Path, float] | None = None

    def kill(self) -> None:
        self.process.kill()
        self.process.join(10)
        self.conn.close()

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.process.join(10)
        except OSError:
            pass
        self.kill()


class FuzzPool:
    """``workers`` reusable children judging cases against the baselines ``{archive: path}``."""

    def __init__(self, baselines: dict[str, Path], directory: Path, workers: int = 2) -> None:
        self._baselines = {key: str(path) for key, path in baselines.items()}
        self._directory = directory
        self._children = [_Child(self._baselines) for _ in range(workers)]
        self._serial = 0

    def close(self) -> None:
        for child in self._children:
            child.close()

    def __enter__(self) -> FuzzPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, child: _Child, case: Case) -> None:
        self._serial += 1
        suffix = {"fits": ".fits", "json": ".json", "zarr": ".zarr"}[case.archive]
        path = self._directory / f"case{self._serial}{suffix}"
        case.make(path)
        child.job = (case, path, time.perf_counter())
        child.conn.send((case.archive, str(path), case.allowed))

    def _finish(self, n: int, outcome: str, detail: str) -> Result:
        child = self._children[n]
        assert child.job is not None
        case, path, start = child.job
        child.job = None
        _remove(path)
        return Result(case, outcome, detail, time.perf_counter() - start)

    def _replace(self, n: int) -> None:
        self._children[n].kill()
        self._children[n] = _Child(self._baselines)

    def run(self, cases: Iterable[Case]) -> Iterator[Result]:
        """Judge every case, ``workers`` at a time; yield results as they come."""
        pending = iter(cases)
        exhausted = False
        while True:
            for child in self._children:
                if child.job is None and not exhausted:
                    case = next(pending, None)
                    if case is None:
                        exhausted = True
                    else:
                        self._send(child, case)
            busy = [n for n, child in enumerate(self._children) if child.job is not None]
            if not busy:
                return
            now = time.perf_counter()
            deadline = min(self._children[n].job[2] for n in busy) + WALL_LIMIT  # type: ignore[index]
            ready = wait([self._children[n].conn for n in busy], timeout=max(0.0, deadline - now))
            for n in busy:
                child = self._children[n]
                assert child.job is not None
                if child.conn in ready:
                    try:
                        outcome, detail = child.conn.recv()
                    except (EOFError, OSError):
                        child.process.join(10)
                        code = child.process.exitcode
                        result = self._finish(n, "crash", f"exit code {code}")
                        self._replace(n)
                        yield result
                        continue
                    yield self._finish(n, outcome, detail)
                elif time.perf_counter() - child.job[2] > WALL_LIMIT:
                    result = self._finish(n, "hang", f"no answer within {WALL_LIMIT} s")
                    self._replace(n)
                    yield result


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
