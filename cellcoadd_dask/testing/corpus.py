"""A reference corpus of cell coadds written by lsst-images, built on first use and cached.

The corpus is the project's own test and tutorial data.  Every file is written through the public
API of ``lsst-images`` (the reference implementation of the data model) from seeded random numbers,
so its pixels, trees and layouts are reproducible; ``expected_values.json`` records what
``lsst-images`` itself reads back from each file (sums, pixels, mask planes, sky positions, HDU
layouts), the values a conforming reader must reproduce.

It comes in two parts:

``base``
    Small files covering every layout the readers handle: lossless and lossy compression, missing
    cells, cut-outs whose tiles are not cells, more than 31 mask planes, JSON archives (one in the
    old array spelling of shipped files), uncompressed HDUs, background models with their own HDU,
    provenance and aperture corrections, compression variants (``variants/``), a small tract of
    overlapping patches (``tract/``) and a 3x3-patch demonstration tract (``demo_tract/``).
``patch``
    A full-size patch, 22x22 cells of 150x150 px with every plane, lossless and lossy
    (``patch/patch_lossless.fits``, ``patch/patch_lossy.fits``), for benchmarks and tutorials.

A part is cached under ``<root>/<part>/<key>``, where the key joins the versions of lsst-images,
astropy and numpy with a hash of the generator's own source, so a new version of either rebuilds it
(and older entries are removed).  ``$CELLCOADD_CORPUS_CACHE`` sets the root (default
``$XDG_CACHE_HOME/cellcoadd-dask/corpus``, i.e. ``~/.cache/cellcoadd-dask/corpus``).  Builds are
serialized by a lock file and land by renaming a complete directory, so concurrent users never see a
half-built corpus.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import importlib
import importlib.metadata
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import CellCoaddError

__all__ = [
    "CORPUS_CACHE_ENV",
    "PARTS",
    "CorpusError",
    "build_corpus",
    "corpus_cache_root",
    "corpus_dir",
    "corpus_key",
    "corpus_path",
]

CORPUS_CACHE_ENV = "CELLCOADD_CORPUS_CACHE"
"""Environment variable naming the root directory of the corpus cache."""

MANIFEST = "MANIFEST.json"
EXPECTED = "expected_values.json"

PARTS: dict[str, tuple[tuple[str, str], ...]] = {
    "base": (
        ("_variants", "write_variants"),
        ("_reference", "write_synthetic"),
        ("_tracts", "write_demo_tract"),
        ("_reference", "write_minimal"),
        ("_tracts", "write_test_tract"),
        ("_reference", "write_many_planes"),
    ),
    "patch": (("_patch", "write_patch"),),
}
"""The corpus parts and the writers (``(module, function)`` in this package) that make them.

Each writer takes the part's directory and returns the expected values of the files it wrote,
keyed by their path relative to that directory.
"""

_GENERATOR_MODULES = ("corpus", "_common", "_expected", "_reference", "_synthetic", "_variants", "_tracts", "_patch")


class CorpusError(CellCoaddError):
    """The corpus could not be built (lsst-images missing, or a writer failed)."""


def corpus_cache_root() -> Path:
    """Return the root directory of the corpus cache.

    ``$CELLCOADD_CORPUS_CACHE`` when set, else ``$XDG_CACHE_HOME/cellcoadd-dask/corpus`` (with
    ``~/.cache`` when ``XDG_CACHE_HOME`` is unset).
    """
    explicit = os.environ.get(CORPUS_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "cellcoadd-dask" / "corpus"


def _versions() -> str:
    try:
        lsst = importlib.metadata.version("lsst-images")
    except importlib.metadata.PackageNotFoundError as error:
        raise CorpusError(
            "the reference corpus is written by lsst-images, which is not installed: "
            "pip install 'cellcoadd-dask[test]' (or 'lsst-images')"
        ) from error
    return "-".join(
        [f"lsst-images{lsst}"] + [f"{name}{importlib.metadata.version(name)}" for name in ("astropy", "numpy")]
    )


def corpus_key() -> str:
    """Return the cache key: library versions plus a hash of the generator's source code."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _GENERATOR_MODULES:
        digest.update(name.encode())
        digest.update((here / f"{name}.py").read_bytes())
    return f"{_versions()}-{digest.hexdigest()[:12]}"


def _part_of(name: str) -> str:
    first = Path(name).parts[0] if Path(name).parts else ""
    return "patch" if first == "patch" else "base"


def _manifest_ok(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    files = manifest.get("files", {})
    for name, size in files.items():
        try:
            if (directory / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return bool(files)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def corpus_dir(part: str = "base", *, progress: bool = False) -> Path:
    """Return the directory of one part of the corpus, building it if it is missing or stale.

    Parameters
    ----------
    part
        ``"base"`` (small files, the test corpus) or ``"patch"`` (a full-size patch).
    progress
        Print what is being built, and how long it took, to standard error.

    Returns
    -------
    directory
        A local directory; treat it as read-only.

    Raises
    ------
    CorpusError
        If lsst-images is not installed or a writer fails.
    """
    if part not in PARTS:
        raise ValueError(f"unknown corpus part {part!r}; choose one of {sorted(PARTS)}")
    root = corpus_cache_root() / part
    directory = root / corpus_key()
    if _manifest_ok(directory):
        return directory
    with _locked(root.parent / f"{part}.lock"):
        if _manifest_ok(directory):
            return directory
        staging = Path(tempfile.mkdtemp(prefix=f".build-{directory.name}-", dir=root.parent))
        try:
            build_corpus(staging, parts=(part,), progress=progress)
            shutil.rmtree(directory, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
            staging.rename(directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for stale in root.iterdir():
            if stale != directory:
                shutil.rmtree(stale, ignore_errors=True)
    return directory


def corpus_path(name: str, *, progress: bool = False) -> Path:
    """Return the local path of one corpus file or directory, building its part if needed.

    Parameters
    ----------
    name
        A path relative to the corpus, e.g. ``"synthetic_3x3.fits"``, ``"variants/cutout.json"``,
        ``"tract/patch_0_0.fits"``, ``"demo_tract"`` or ``"patch/patch_lossless.fits"`` (the last
        builds the full-size ``patch`` part, about a minute the first time).
    progress
        Print build progress to standard error.

    Returns
    -------
    path
        The local path.

    Raises
    ------
    FileNotFoundError
        If the corpus has no such file.
    """
    part = _part_of(name)
    path = corpus_dir(part, progress=progress) / name
    if not path.exists():
        raise FileNotFoundError(f"the {part!r} corpus has no {name!r} (it holds {_listing(path.parent)})")
    return path


def _listing(directory: Path) -> str:
    names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    return ", ".join(names) or "nothing there"


def _run_writer(module: str, function: str, directory: str) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    writer = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    expected = writer(Path(directory))
    return expected, time.perf_counter() - start


def build_corpus(
    directory: str | os.PathLike[str], *, parts: Sequence[str] = ("base",), progress: bool = False
) -> Path:
    """Write corpus parts into ``directory`` (no cache), with one worker process per core.

    Parameters
    ----------
    directory
        An empty or new directory.
    parts
        Names of the parts to write (see `PARTS`).
    progress
        Print each writer's time to standard error.

    Returns
    -------
    directory
        The directory, holding the files, ``expected_values.json`` and a ``MANIFEST.json``.

    Raises
    ------
    CorpusError
        If lsst-images is not installed or a writer fails.
    """
    _versions()  # fail early, with an install hint, when lsst-images is missing
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [job for part in parts for job in PARTS[part]]
    expected: dict[str, Any] = {}
    start = time.perf_counter()
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    # Spawned workers: no inherited threads, locks or event loops from the caller.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {
            pool.submit(_run_writer, module, function, str(out)): f"{module}.{function}" for module, function in jobs
        }
        for future in concurrent.futures.as_completed(futures):
            try:
                values, seconds = future.result()
            except Exception as error:
                raise CorpusError(f"corpus writer {futures[future]} failed: {error!r}") from error
            expected.update(values)
            if progress:
                print(f"corpus: {futures[future]} {seconds:.1f} s", flush=True, file=_stderr())
    (out / EXPECTED).write_text(json.dumps(dict(sorted(expected.items())), indent=1, allow_nan=False))
    files = {
        str(path.relative_to(out)): path.stat().st_size
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {
        "key": corpus_key(),
        "parts": list(parts),
        "seconds": round(time.perf_counter() - start, 2),
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


def _stderr() -> Any:
    import sys

    return sys.stderr


def main(argv: Sequence[str] | None = None) -> int:
    """Write the corpus into a directory: ``python -m cellcoadd_dask.testing.corpus OUTDIR [PART ...]``."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m cellcoadd_dask.testing.corpus OUTDIR [base] [patch]", file=sys.stderr)
        return 2
    parts = args[1:] or ["base"]
    build_corpus(args[0], parts=parts, progress=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
