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


def test_a_share_reads_the_smallest_gaps_within_its_budget() -> None:
    # Four rows of four 10-byte tiles separated by two unwanted tiles (20 bytes).
    rows = [(start + 10 * k, start + 10 * (k + 1)) for start in (0, 60, 120, 180) for k in range(4)]
    assert merge_ranges(rows)[0] == [(0, 40), (60, 100), (120, 160), (180, 220)]
    assert merge_ranges(rows, max_share=0.1)[0] == [(0, 40), (60, 100), (120, 160), (180, 220)]  # 16 < 20
    assert merge_ranges(rows, max_share=0.125)[0] == [(0, 100), (120, 160), (180, 220)]  # one 20-byte gap
    merged, placement = merge_ranges(rows, max_share=0.4)  # 60 gap bytes for 160 wanted
    assert merged == [(0, 220)]
    assert placement[5] == (0, 70, 10)
    # The budget goes to the smallest gaps first.
    mixed = [(0, 100), (101, 200), (1000, 1100), (1110, 1200)]
    assert merge_ranges(mixed, max_share=0.02)[0] == [(0, 200), (1000, 1100), (1110, 1200)]
    assert merge_ranges(mixed, max_share=0.06)[0] == [(0, 200), (1000, 1200)]
    assert merge_ranges(mixed, max_share=10.0)[0] == [(0, 1200)]
    assert merge_ranges([], max_share=1.0) == ([], [])


def test_a_share_reads_the_gaps_and_gives_back_only_the_ranges(tmp_path: Path) -> None:
    path = tmp_path / "bytes.bin"
    path.write_bytes(bytes(range(256)))
    wanted = [(0, 40), (50, 90), (100, 140)]
    with fetch_stats() as exact:
        plain = fetch_ranges(str(path), wanted)
    with fetch_stats() as shared:
        merged = fetch_ranges(str(path), wanted, max_share=0.25)
    assert merged == plain == [bytes(range(a, b)) for a, b in wanted]
    assert (exact.requests, exact.nbytes) == (3, 120)
    assert (shared.requests, shared.nbytes) == (1, 140)


def test_the_policy_s_share_applies_to_every_call(tmp_path: Path) -> None:
    import dask

    path = tmp_path / "bytes.bin"
    path.write_bytes(bytes(range(256)))
    wanted = [(0, 40), (50, 90), (100, 140)]
    with dask.config.set({"cellcoadd.fetch.coalesce_share": 0.25}), fetch_stats() as stats:
        assert fetch_ranges(str(path), wanted) == [bytes(range(a, b)) for a, b in wanted]
    assert (stats.requests, stats.nbytes) == (1, 140)
