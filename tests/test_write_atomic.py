"""Writes are atomic: a killed or failing writer leaves the previous archive or a complete new one.

The coadd written by the kill tests is a band of 10x22 cells of 150 px (1500x3300 px) of a
full-size patch, written once per module by lsst-images.  A child interpreter opens it once and
forks one process per write (`ForkingWriter`), so each write can be killed with ``SIGKILL`` at a
chosen moment without paying for an interpreter start-up every time.  Kill delays are drawn from
a seeded generator, spread over the median duration of three complete writes measured first.
After every kill the destination is checked against independent references: the previous file's
bytes, or lsst-images' reading of the new file compared plane by plane with lsst-images' reading
of the source (and our reader's, likewise).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import pytest
from oracle import (
    FULL_PATCH_CELL,
    assert_identical,
    assert_planes_match,
    intervals,
    lsst_planes,
    lsst_read,
    make_full_patch,
)
from servers import S3Server

import cellcoadd_dask as ccd
from cellcoadd_dask.compression import (
    FitsCompressionAlgorithm,
    FitsCompressionOptions,
    FitsDitherAlgorithm,
    FitsQuantizationOptions,
)

KILLS_OVER_PREVIOUS = 24
KILLS_WITHOUT_PREVIOUS = 6
KILLS_ON_S3 = 6
SPREAD = 1.1
"""Kill delays are uniform over ``[0, SPREAD * duration of a write]`` (of an upload, on S3)."""

# The child interpreter: opens the source coadd, warms the writer up with a
# one-cell write, then serves JSON commands on stdin.  "write" forks a process that writes the
# coadd and exits (its pid is the reply); "reap" waits for that process and replies its wait
# status.  A process is only reaped when asked, so its pid cannot be reused before the parent
# has sent its signal.  Forking is refused once the interpreter runs a second thread.
_CHILD = r"""
import json, os, sys, threading, traceback
import cellcoadd_dask as ccd

source, scratch = sys.argv[1], sys.argv[2]
coadd = ccd.open_coadd(source)
first = coadd.grid.bbox_of(next(iter(coadd.bounds.cell_indices())))
coadd[first].write_fits(os.path.join(scratch, "warm-up.fits"))
print("ready", flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "write":
        if threading.active_count() != 1:
            print("error: threads running, refusing to fork", flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                coadd.write_fits(command["url"], storage_options=command.get("storage_options"))
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        print(pid, flush=True)
    elif command["op"] == "reap":
        print(os.waitpid(command["pid"], 0)[1], flush=True)
"""


class ForkingWriter:
    """A child interpreter holding the opened coadd; each write runs in a process forked from it.

    Parameters
    ----------
    source
        The archive to open and write.
    scratch
        A directory for the child's own files; also its ``TMPDIR`` (where object-store
        uploads are spooled).
    """

    def __init__(self, source: Path, scratch: Path) -> None:
        self.scratch = scratch
        self._stderr = (scratch / "child.err").open("wb")
        env = {**os.environ, "TMPDIR": str(scratch), "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(source), str(scratch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )
        line = self._reply()
        assert line == "ready", f"child did not start: {line!r}\n{self.errors()}"

    def _reply(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line:
            raise AssertionError(f"child exited with {self._proc.wait(5)}:\n{self.errors()}")
        return line

    def _send(self, command: Mapping[str, Any]) -> str:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        return self._reply()

    def errors(self) -> str:
        """The child's standard error so far (tracebacks of failed writes)."""
        self._stderr.flush()
        return (self.scratch / "child.err").read_text(errors="replace")[-4000:]

    def start(self, url: str, storage_options: Mapping[str, Any] | None = None) -> int:
        """Fork a process writing the coadd to ``url``; return its pid."""
        reply = self._send({"op": "write", "url": url, "storage_options": storage_options})
        assert reply.isdigit(), reply
        return int(reply)

    def reap(self, pid: int) -> int:
        """Wait for a writing process to end; return its wait status."""
        return int(self._send({"op": "reap", "pid": pid}))

    def kill(self, pid: int) -> bool:
        """SIGKILL a writing process and reap it; whether the signal ended it (else it had exited 0)."""
        os.kill(pid, signal.SIGKILL)  # a process that already exited is a zombie until reaped
        status = self.reap(pid)
        if os.WIFSIGNALED(status):
            assert os.WTERMSIG(status) == signal.SIGKILL, status
            return True
        assert os.WEXITSTATUS(status) == 0, f"the write failed:\n{self.errors()}"
        return False

    def close(self) -> None:
        """End the child interpreter."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        self._proc.stdout.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._stderr.close()


@dataclass(frozen=True)
class Source:
    """The coadd the kill tests write: its file and lsst-images' reading of it."""

    path: Path
    expected: Any


@dataclass(frozen=True)
class Measured:
    """Complete, unkilled writes: their median duration (fork to exit) and the output."""

    seconds: float
    output: Path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    from lsst.images import Box

    patch = make_full_patch()
    bbox = patch.bbox
    band = patch[Box.factory[bbox.y.start : bbox.y.start + 10 * FULL_PATCH_CELL, bbox.x.start : bbox.x.stop]]
    path = tmp_path_factory.mktemp("atomic-source") / "patch_band.fits"
    band.write(str(path))
    return Source(path, lsst_read(str(path)))


@pytest.fixture(scope="module")
def writer(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkingWriter]:
    child = ForkingWriter(source.path, tmp_path_factory.mktemp("atomic-child"))
    try:
        yield child
    finally:
        child.close()


@pytest.fixture(scope="module")
def measured(writer: ForkingWriter, source: Source, tmp_path_factory: pytest.TempPathFactory) -> Measured:
    output = tmp_path_factory.mktemp("atomic-measured") / "complete.fits"
    seconds = []
    for _ in range(3):
        pid = writer.start(str(output))
        start = time.perf_counter()
        assert os.WIFEXITED(status := writer.reap(pid)) and os.WEXITSTATUS(status) == 0, writer.errors()
        seconds.append(time.perf_counter() - start)
    check_new_archive(output, source)
    return Measured(statistics.median(seconds), output)


@pytest.fixture(scope="module")
def previous(reference_dir: Path) -> bytes:
    """The previous archive at the destination: lsst-images' synthetic 3x3-cell coadd."""
    return (reference_dir / "synthetic_3x3.fits").read_bytes()


def check_new_archive(path: Path, source: Source) -> None:
    """A complete archive of the source's box: lsst-images and our reader both read the right planes."""
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import read_archive

    theirs = read_archive(str(path), CellCoadd)
    expected = lsst_planes(source.expected)
    got = lsst_planes(theirs)
    assert sorted(got) == sorted(expected), f"{path}: planes {sorted(got)}"
    for key, array in expected.items():
        assert_identical(got[key], array, f"lsst-images reading {path.name}: {key}")
    assert_planes_match(ccd.open_coadd(path), source.expected, f"reading {path.name}")


def partials(directory: Path, name: str) -> list[Path]:
    """Hidden temporary siblings of ``name`` left in ``directory``."""
    return sorted(directory.glob(f".{name}.*.partial"))


def check_directory(directory: Path, name: str) -> list[Path]:
    """Assert that the directory holds nothing but ``name`` and its temporary siblings; return those."""
    left = partials(directory, name)
    others = sorted(set(directory.iterdir()) - set(left) - {directory / name})
    assert not others, f"unexpected files next to the destination: {others}"
    return left


def kill_during_write(writer: ForkingWriter, dst: Path, delay: float, previous: bytes | None, source: Source) -> str:
    """Start a write to ``dst``, kill it after ``delay`` seconds and classify what is left.

    Returns ``"before"`` (killed before any output: nothing changed, no temporary file),
    ``"during"`` (killed while writing the temporary file: nothing changed) or ``"after"``
    (the new archive was complete); anything else fails the test.
    """
    if previous is not None:
        dst.write_bytes(previous)
    pid = writer.start(str(dst))
    time.sleep(delay)
    writer.kill(pid)
    left = check_directory(dst.parent, dst.name)
    for path in left:
        path.unlink()
    if previous is None and not dst.exists():
        return "during" if left else "before"
    assert dst.exists(), f"the previous archive vanished (kill after {delay:.3f} s)"
    data = dst.read_bytes()
    if previous is not None and data == previous:
        return "during" if left else "before"
    assert not left, f"a complete archive and a temporary file after one write: {left}"
    try:
        check_new_archive(dst, source)
    except Exception as exc:
        raise AssertionError(
            f"after a kill at {delay:.3f} s the destination ({len(data):,} bytes) is neither the previous "
            f"archive nor a complete new one: {exc!r}"
        ) from exc
    dst.unlink()
    return "after"


def run_kills(
    writer: ForkingWriter, dst: Path, previous: bytes | None, source: Source, seconds: float, kills: int, seed: int
) -> dict[str, int]:
    rng = random.Random(seed)
    counts = {"before": 0, "during": 0, "after": 0}
    for _ in range(kills):
        counts[kill_during_write(writer, dst, rng.uniform(0.0, SPREAD * seconds), previous, source)] += 1
    return counts


def test_killed_writes_leave_the_previous_archive_or_a_complete_one(
    writer: ForkingWriter, source: Source, measured: Measured, previous: bytes, tmp_path: Path
) -> None:
    dst = tmp_path / "coadd.fits"
    counts = run_kills(writer, dst, previous, source, measured.seconds, KILLS_OVER_PREVIOUS, seed=20261125)
    print(f"one write {measured.seconds:.3f} s (median); kills: {counts}")
    assert sum(counts.values()) == KILLS_OVER_PREVIOUS
    assert counts["during"] > KILLS_OVER_PREVIOUS // 2, f"too few kills hit the write itself: {counts}"


def test_killed_writes_without_previous_leave_nothing_or_a_complete_archive(
    writer: ForkingWriter, source: Source, measured: Measured, tmp_path: Path
) -> None:
    dst = tmp_path / "coadd.fits"
    counts = run_kills(writer, dst, None, source, measured.seconds, KILLS_WITHOUT_PREVIOUS, seed=7)
    print(f"kills without a previous file: {counts}")
    assert counts["during"] >= 1, counts


# ----------------------------------------------------------------------------- object store


def _wait_for_spool(directory: Path, size: int, timeout: float = 30.0) -> bool:
    """Wait until an upload spool in ``directory`` holds ``size`` bytes (True) or is gone (False)."""
    seen = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spools = list(directory.glob("cellcoadd-*.partial"))
        if spools:
            seen = True
            with contextlib.suppress(FileNotFoundError):
                if spools[0].stat().st_size >= size:
                    return True
        elif seen:
            return False
        time.sleep(0.0005)
    raise AssertionError(f"no upload spool of {size} bytes appeared in {directory}")


def _without_dates(data: bytes) -> bytes:
    """The bytes with every ``DATE`` card blanked (the only cards that differ between two writes)."""
    cards = bytearray(data)
    start = 0
    while (found := data.find(b"DATE    = ", start)) != -1:
        if found % 80 == 0:
            cards[found : found + 80] = b" " * 80
        start = found + 1
    return bytes(cards)


def _object(s3_server: S3Server, key: str) -> bytes | None:
    fs = s3_server.filesystem()
    return fs.cat_file(key) if fs.exists(key) else None


def _s3_write(writer: ForkingWriter, s3_server: S3Server, key: str, size: int) -> tuple[int, bool]:
    """Start a write to ``key``; return its pid once the upload spool is complete (and whether it was seen so)."""
    pid = writer.start(f"s3://{key}", s3_server.storage_options)
    return pid, _wait_for_spool(writer.scratch, size)


def _spools(writer: ForkingWriter) -> list[Path]:
    return sorted(writer.scratch.glob("cellcoadd-*.partial"))


def test_killed_uploads_leave_the_previous_object_or_a_complete_one(
    writer: ForkingWriter, source: Source, measured: Measured, previous: bytes, s3_server: S3Server
) -> None:
    size = measured.output.stat().st_size
    complete = _without_dates(measured.output.read_bytes())
    fs = s3_server.filesystem()
    # Uploads left alone: how long the upload phase lasts (spool complete to process exit).
    key = f"{s3_server.bucket}/atomic/timed.fits"
    seconds = []
    for _ in range(2):
        pid, seen = _s3_write(writer, s3_server, key, size)
        start = time.perf_counter()
        assert seen and os.WIFEXITED(status := writer.reap(pid)) and os.WEXITSTATUS(status) == 0, writer.errors()
        seconds.append(time.perf_counter() - start)
        assert _spools(writer) == []
        assert _without_dates(fs.cat_file(key)) == complete
    upload = statistics.mean(seconds)

    rng = random.Random(99)
    counts = {"mid-upload": 0, "complete": 0}
    for n in range(KILLS_ON_S3):
        key = f"{s3_server.bucket}/atomic/kill-{n}.fits"
        before = previous if n % 2 == 0 else None
        if before is not None:
            fs.pipe_file(key, before)
        pid, seen = _s3_write(writer, s3_server, key, size)
        if seen:
            time.sleep(rng.uniform(0.0, SPREAD * upload))
        writer.kill(pid)
        spools = _spools(writer)
        for spool in spools:
            spool.unlink()
        data = _object(s3_server, key)
        if data == before:
            # The spool is removed when the upload returns: killed before that, with nothing published.
            assert spools, f"{key}: the upload ended but the object is unchanged"
            counts["mid-upload"] += 1
            continue
        # Complete: the bytes of the verified local write (but for the dates), and it opens from S3.
        assert data is not None and _without_dates(data) == complete, key
        opened = ccd.open_coadd(f"s3://{key}", storage_options=s3_server.storage_options)
        assert intervals(opened.bbox) == intervals(source.expected.bbox), key
        counts["complete"] += 1
    print(f"upload phase of {size:,} bytes {seconds} s; kills: {counts}")
    assert counts["mid-upload"] > KILLS_ON_S3 // 2, counts


def test_write_to_s3_equals_the_local_write(source: Source, measured: Measured, s3_server: S3Server) -> None:
    coadd = ccd.open_coadd(source.path)
    url = f"s3://{s3_server.bucket}/atomic/complete.fits"
    assert coadd.write_fits(url, storage_options=s3_server.storage_options) == url
    stored = ccd.open_coadd(url, storage_options=s3_server.storage_options)
    assert_planes_match(stored, lsst_read(str(measured.output)), "written to S3")
    data = s3_server.filesystem().cat_file(url)
    local = measured.output.read_bytes()
    assert len(data) == len(local)
    assert _without_dates(data) == _without_dates(local)


# ----------------------------------------------------------------------------- failures in-process


class PixelsRead(RuntimeError):
    """Raised by the pixels of a coadd that must not (or cannot) be read."""


def _rebuild(coadd: ccd.CellCoadd, image: ccd.Image, **changes: Any) -> ccd.CellCoadd:
    fields: dict[str, Any] = {
        "mask": coadd.mask,
        "variance": coadd.variance,
        "mask_fractions": coadd.mask_fractions,
        "noise_realizations": coadd.noise_realizations,
        "projection": coadd.projection,
        "band": coadd.band,
        "psf": coadd.psf,
        "patch": coadd.patch,
        "aperture_corrections": coadd.aperture_corrections or None,
        "metadata": coadd.metadata,
    }
    return ccd.CellCoadd(image, **{**fields, **changes})


def _poisoned(coadd: ccd.CellCoadd, bad: Callable[[tuple[int, ...]], bool]) -> ccd.CellCoadd:
    """``coadd`` whose image, chunked by cell, raises `PixelsRead` when a block with ``bad(location)`` is read."""
    cell = (coadd.grid.cell_shape.y, coadd.grid.cell_shape.x)

    def pixels(block: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        if block_info is not None and bad(tuple(block_info[None]["chunk-location"])):
            raise PixelsRead(f"block {block_info[None]['chunk-location']}")
        return block

    array = da.map_blocks(pixels, coadd.image.array.rechunk(cell), dtype=coadd.image.dtype)
    return _rebuild(coadd, ccd.Image(array, bbox=coadd.bbox, unit=coadd.unit))


@pytest.fixture
def small(reference_dir: Path) -> ccd.CellCoadd:
    """lsst-images' synthetic 3x3-cell coadd, opened with our reader."""
    return ccd.open_coadd(reference_dir / "synthetic_3x3.fits")


def test_a_failing_write_keeps_the_previous_file_and_removes_its_temporary(
    small: ccd.CellCoadd, reference_dir: Path, tmp_path: Path
) -> None:
    previous = (reference_dir / "min_default.fits").read_bytes()
    dst = tmp_path / "coadd.fits"
    dst.write_bytes(previous)
    seen: list[int] = []

    def last_block(location: tuple[int, ...]) -> bool:
        if location != (2, 2):
            return False
        seen.extend(p.stat().st_size for p in partials(tmp_path, dst.name))
        return True

    with pytest.raises(PixelsRead, match=r"block \(2, 2\)"):
        _poisoned(small, last_block).write_fits(dst)
    assert seen and seen[0] >= 2880, f"the failure did not happen while the temporary file was written: {seen}"
    assert dst.read_bytes() == previous
    assert check_directory(tmp_path, dst.name) == []


def test_a_failing_write_to_an_object_store_leaves_no_object_and_no_spool(
    small: ccd.CellCoadd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    fs = fsspec.filesystem("memory")
    kept = f"memory://atomic-{os.getpid()}/kept.fits"
    fs.pipe_file(kept, b"previous bytes")
    fresh = f"memory://atomic-{os.getpid()}/fresh.fits"
    try:
        for url in (kept, fresh):
            with pytest.raises(PixelsRead):
                _poisoned(small, lambda location: location == (1, 1)).write_fits(url)
        assert fs.cat_file(kept) == b"previous bytes"
        assert not fs.exists(fresh)
        assert list(spool.iterdir()) == []
    finally:
        fs.rm(f"memory://atomic-{os.getpid()}", recursive=True)


def _lookalike(algorithm: str) -> Any:
    return types.SimpleNamespace(algorithm=algorithm, tile_shape=None, quantization=None)


_QUANTIZED = FitsQuantizationOptions(level=16.0, dither=FitsDitherAlgorithm.SUBTRACTIVE_DITHER_2, seed=5)

BAD_ARGUMENTS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown algorithm": ({"image_compression": _lookalike("HCOMPRESS_1")}, "image_compression"),
    "algorithm as a bare string": ({"variance_compression": "GZIP_2"}, "variance_compression"),
    "quantized mask": ({"mask_compression": FitsCompressionOptions(quantization=_QUANTIZED)}, "MASK"),
    "RICE_1 image without quantization": (
        {"image_compression": FitsCompressionOptions(algorithm=FitsCompressionAlgorithm.RICE_1)},
        "IMAGE",
    ),
    "tile shape of rank 3 on an image": (
        {"image_compression": FitsCompressionOptions(tile_shape=(10, 10, 1))},
        "tile_shape",
    ),
    "tile shape of rank 2 on the PSF": ({"psf_compression": FitsCompressionOptions(tile_shape=(9, 9))}, "PSF"),
    "quantization without any seed": ({"image_compression": FitsCompressionOptions.LOSSY}, "seed"),
    "compression_seed 0": ({"compression_seed": 0}, "compression_seed"),
    "compression_seed 10001": ({"compression_seed": 10001}, "compression_seed"),
    "compression_seed -1": ({"compression_seed": -1}, "compression_seed"),
    "compression_seed 2.0": ({"compression_seed": 2.0}, "compression_seed"),
    "compression_seed True": ({"compression_seed": True}, "compression_seed"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_fail_before_any_byte(case: str, small: ccd.CellCoadd, tmp_path: Path) -> None:
    kwargs, named = BAD_ARGUMENTS[case]
    dst = tmp_path / "coadd.fits"
    # Every pixel raises when read: a validation error proves that nothing was read first.
    coadd = _poisoned(small, lambda location: True)
    with pytest.raises(ccd.ValidationError, match=named):
        coadd.write_fits(dst, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("names", "message"),
    [(("rejected", "REJECTED"), "differ only in case"), (("clipped pixels",), "clipped pixels")],
    ids=["case", "space"],
)
def test_bad_mask_fraction_names_fail_before_any_byte(
    names: tuple[str, ...], message: str, small: ccd.CellCoadd, tmp_path: Path
) -> None:
    poisoned = _poisoned(small, lambda location: True)
    fractions = {name: ccd.Image(da.zeros(small.image.array.shape, np.float32), bbox=small.bbox) for name in names}
    coadd = _rebuild(poisoned, poisoned.image, mask_fractions=fractions)
    dst = tmp_path / "coadd.fits"
    with pytest.raises(ccd.ValidationError, match=message):
        coadd.write_fits(dst)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_false_refuses_an_existing_file(small: ccd.CellCoadd, previous: bytes, tmp_path: Path) -> None:
    dst = tmp_path / "coadd.fits"
    dst.write_bytes(previous)
    with pytest.raises(FileExistsError, match="already exists") as error:
        small.write_fits(dst, overwrite=False)
    assert isinstance(error.value, ccd.CellCoaddError)
    assert dst.read_bytes() == previous
    assert list(tmp_path.iterdir()) == [dst]


def test_overwrite_false_refuses_an_existing_object(small: ccd.CellCoadd, s3_server: S3Server) -> None:
    key = f"{s3_server.bucket}/atomic/existing.fits"
    s3_server.filesystem().pipe_file(key, b"previous object")
    with pytest.raises(FileExistsError, match="already exists"):
        small.write_fits(f"s3://{key}", storage_options=s3_server.storage_options, overwrite=False)
    assert _object(s3_server, key) == b"previous object"
