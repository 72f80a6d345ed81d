"""Mutations of a FITS archive, built on ``test_bad_input``'s byte editing helpers.

Random families: byte flips of the primary header, the INDEX, the JSON tree, the tile
descriptors, the tile bytes and the table HDUs; truncations; hypothesis edits of the tree (the
edited text must fit in the JSON HDU) and of header cards.  Allowed changes follow
``test_bad_input``: the tile whose bytes or descriptor changed, the whole plane of an image HDU
whose header changed, the tables of a table HDU, the planes whose inline numbers changed in the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from oracle import fits_layout
from test_bad_input import (
    Baseline,
    flip_bits,
    image_hdus,
    json_location,
    json_tree,
    plane_of,
    put,
    set_card,
)

from fuzz.compare import allowed_for_tree
from fuzz.pool import Allowed, Case
from fuzz.strategies import apply_edit, card_edits, describe, draw_examples, dumps, tree_edits

__all__ = ["fits_cases"]


def _writer(data: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(data)

    return make


def _flips(base: Baseline, name: str, spans: list[tuple[int, int, Allowed]], n: int, at: int,
           bits: int = 8) -> Iterator[Case]:
    rng = np.random.default_rng(at)
    for _ in range(n):
        start, stop, allowed = spans[int(rng.integers(len(spans)))]
        position = int(rng.integers(start, stop))
        mask = 1 << int(rng.integers(0, bits))
        yield Case("fits", f"fits {name} byte {position} ^ {mask}", _writer(flip_bits(base.data, [position], [mask])),
                   allowed)


def tree_flips(base: Baseline, tree: Any, n: int, at: int) -> Iterator[Case]:
    start, count = json_location(base)
    rng = np.random.default_rng(at)
    for k in range(n):
        positions = sorted(int(p) for p in rng.integers(start, start + count, size=1 + k % 3))
        masks = [1 << int(b) for b in rng.integers(0, 8, size=len(positions))]
        data = flip_bits(base.data, positions, masks)
        yield Case("fits", f"fits tree bytes {positions} ^ {masks}", _writer(data),
                   allowed_for_tree(tree, data[start : start + count]))


def tree_edit_cases(base: Baseline, tree: Any, n: int, at: int) -> Iterator[Case]:
    start, count = json_location(base)
    sources = {v for v in _strings(tree) if v.startswith("fits:")}
    made = 0
    for k, edit in enumerate(draw_examples(tree_edits(tree), 2 * n, at)):
        text = dumps(apply_edit(tree, edit))
        if len(text) > count or made >= n:
            continue
        made += 1
        path, operation, value = edit
        redirect = operation == "set" and path and path[-1] == "source" and isinstance(value, str) and value in sources
        allowed: Allowed = (("*", None),) if redirect else allowed_for_tree(tree, text)
        yield Case("fits", f"fits tree edit #{k} (seed {at}): {describe(edit)}",
                   _writer(put(base.data, start, text.ljust(count))), allowed)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def card_edit_cases(base: Baseline, n: int, at: int) -> Iterator[Case]:
    headers = [("", ())] + [(hdu.label, ((plane_of(hdu.label), None),)) for hdu in image_hdus(base)]
    with fits.open(base.path, disable_image_compression=True) as hdus:
        cards = {label: [(c.keyword, c.value) for c in hdus[label or 0].header.cards
                         if c.keyword not in ("", "COMMENT", "HISTORY", "END")] for label, _ in headers}
    made = 0
    for k, (key, value) in enumerate(draw_examples(
            _labelled(card_edits, [(label, cards[label]) for label, _ in headers]), 2 * n, at)):
        label, (keyword, new) = key, value
        hdu = base.hdu(label)
        try:
            data = set_card(base.data, hdu.header, keyword, new) if new is not None else \
                set_card(base.data, hdu.header, keyword)
        except (AssertionError, ValueError, KeyError, UnicodeEncodeError):
            continue  # does not fit in one card
        if made >= n:
            return
        made += 1
        allowed = dict(headers)[label]
        yield Case("fits", f"fits card edit #{k} (seed {at}): HDU {label or 'PRIMARY'} {keyword} = {new!r}",
                   _writer(data), allowed)


def _labelled(make: Callable[[list[tuple[str, Any]]], Any], headers: list[tuple[str, list[tuple[str, Any]]]]) -> Any:
    from hypothesis import strategies as st

    return st.one_of(*[st.tuples(st.just(label), make(cards)) for label, cards in headers])


def truncations(base: Baseline, n: int, at: int) -> Iterator[Case]:
    rng = np.random.default_rng(at)
    for _ in range(n):
        cut = int(rng.integers(0, len(base.data)))
        yield Case("fits", f"fits truncated to {cut} bytes", _writer(base.data[:cut]))


def fits_cases(path: Path, n: int, at: int) -> Iterator[Case]:
    """``n`` cases of the FITS archive at ``path``, seeded by ``at``."""
    base = Baseline(path, path.read_bytes(), {h.label: h for h in fits_layout(path)})
    tree = json_tree(base)
    primary = base.hdu("").header
    index = base.hdu("INDEX")
    tiles = [(a, b, ((plane_of(h.label), h.tile_region(t)),)) for h in image_hdus(base)
             for t, span in enumerate(h.tiles) if span for a, b in [span]]
    descriptors = [(h.table[0] + t * h.row_bytes, h.table[0] + (t + 1) * h.row_bytes,
                    ((plane_of(h.label), h.tile_region(t)),)) for h in image_hdus(base) for t in range(len(h.tiles))]
    headers = [(h.header[0], h.header[1], ((plane_of(h.label), None),)) for h in image_hdus(base)]
    tables = [(h.header[0], h.table[1], (("aperture_corrections", None), ("provenance_rows", None)))
              for h in base.hdus.values() if h.extname.startswith(("PROVENANCE", "APERTURE_CORRECTIONS"))]
    shares: list[tuple[int, Callable[[int, int], Iterator[Case]]]] = [
        (1, lambda k, s: _flips(base, "primary header", [(*primary, ())], k, s)),
        (1, lambda k, s: _flips(base, "INDEX", [(index.header[0], index.table[1], ())], k, s)),
        (2, lambda k, s: tree_flips(base, tree, k, s)),
        (3, lambda k, s: tree_edit_cases(base, tree, k, s)),
        (2, lambda k, s: card_edit_cases(base, k, s)),
        (1, lambda k, s: _flips(base, "tile", tiles, k, s)),
        (1, lambda k, s: _flips(base, "tile descriptor", descriptors, k, s)),
        (1, lambda k, s: _flips(base, "image header", headers, k, s, bits=7)),
        (1, lambda k, s: _flips(base, "table HDU", tables, k, s)),
        (1, lambda k, s: truncations(base, k, s)),
    ]
    total = sum(share for share, _ in shares)
    counts = [n * share // total for share, _ in shares]
    counts[3] += n - sum(counts)
    for k, ((_, family), count) in enumerate(zip(shares, counts, strict=True)):
        yield from family(count, at + k)
