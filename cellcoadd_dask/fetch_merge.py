"""Which byte ranges of one call become one request: merging touching, near and (within a budget) far ranges."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ByteRange", "merge_ranges"]

ByteRange = tuple[int, int]
"""A half-open byte range ``(start, stop)`` from the start of a file."""


def merge_ranges(
    ranges: Sequence[ByteRange], max_gap: int = 0, max_share: float = 0.0
) -> tuple[list[ByteRange], list[tuple[int, int, int]]]:
    """Merge overlapping or nearly adjacent ranges.

    Ranges that overlap, touch or are at most ``max_gap`` bytes apart are merged first.  Then,
    when ``max_share`` is positive, the smallest remaining gaps are read too, as long as all the
    gap bytes read stay within ``max_share`` times the bytes of the merged ranges: a read of a
    whole block of tiles whose rows are separated by a few unwanted tiles becomes one request,
    while a sparse read (gaps larger than what it wants) keeps one request per range.

    Parameters
    ----------
    ranges
        Half-open ``(start, stop)`` ranges, in any order.
    max_gap
        Ranges at most this many bytes apart are always merged.
    max_share
        Most gap bytes read, as a share of the bytes the merged ranges hold.

    Returns
    -------
    merged
        The ranges to fetch, sorted.
    placement
        For each input range, ``(index into merged, offset within it, length)``.
    """
    order = sorted(range(len(ranges)), key=lambda k: ranges[k])
    runs: list[list[int]] = []
    run_of = [0] * len(ranges)
    for k in order:
        start, stop = ranges[k]
        if runs and start <= runs[-1][1] + max_gap:
            runs[-1][1] = max(runs[-1][1], stop)
        else:
            runs.append([start, stop])
        run_of[k] = len(runs) - 1
    joined = _joined_gaps(runs, max_share) if max_share > 0 and len(runs) > 1 else set()
    merged: list[list[int]] = []
    final = [0] * len(runs)
    for i, (start, stop) in enumerate(runs):
        if merged and i - 1 in joined:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
        final[i] = len(merged) - 1
    placement: list[tuple[int, int, int]] = []
    for k, (start, stop) in enumerate(ranges):
        m = final[run_of[k]]
        placement.append((m, start - merged[m][0], stop - start))
    return [(a, b) for a, b in merged], placement


def _joined_gaps(runs: list[list[int]], max_share: float) -> set[int]:
    """Indexes ``i`` of the gaps (between run ``i`` and ``i + 1``) to read: smallest first, within the budget."""
    budget = max_share * sum(stop - start for start, stop in runs)
    gaps = sorted((runs[i + 1][0] - runs[i][1], i) for i in range(len(runs) - 1))
    joined: set[int] = set()
    spent = 0
    for size, i in gaps:
        if spent + size > budget:
            break
        spent += size
        joined.add(i)
    return joined
