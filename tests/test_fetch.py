"""Byte-range fetching: merging, ordering, short reads and the in-process counters."""

from __future__ import annotations

from pathlib import Path

import pytest

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import fetch_ranges, fetch_stats, merge_ranges


def test_merge_ranges_keeps_callers_order() -> None:
    merged, placement = merge_ranges([(20, 30), (0, 10), (10, 20), (50, 60)])
    assert merged == [(0, 30), (50, 60)]
    assert placement == [(0, 20, 10), (0, 0, 10), (0, 10, 10), (1, 0, 10)]


def test_fetch_returns_each_range_in_order(tmp_path: Path) -> None:
    path = tmp_path / "bytes.bin"
    path.write_bytes(bytes(range(256)))
    out = fetch_ranges(str(path), [(100, 104), (0, 2), (2, 5), (100, 101)])
    assert out == [bytes([100, 101, 102, 103]), b"\x00\x01", b"\x02\x03\x04", b"\x64"]


def test_short_read_is_a_truncation_error(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 10)
    with pytest.raises(ccd.ArchiveFormatError, match="truncated"):
        fetch_ranges(str(path), [(5, 20)])


def test_missing_file_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(ccd.FetchError, match="no such file"):
        fetch_ranges(str(tmp_path / "absent.fits"), [(0, 10)])


def test_nested_counters_each_count_their_own_block(tmp_path: Path) -> None:
    path = tmp_path / "bytes.bin"
    path.write_bytes(b"y" * 100)
    with fetch_stats() as outer:
        with fetch_stats() as inner:
            pass
        fetch_ranges(str(path), [(0, 10)])
    assert inner.requests == 0
    assert (outer.requests, outer.nbytes) == (1, 10)
