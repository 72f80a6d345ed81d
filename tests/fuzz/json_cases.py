"""Mutations of a JSON archive (the whole coadd, pixels inline, in one JSON document).

Byte flips and truncations of the text, and hypothesis tree edits (`strategies.tree_edits`).
JSON has no checksum: a change of numbers inside a plane's ``data`` lists may change that plane
(only); any other change must leave every value as it was, or fail with a typed error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fuzz.compare import allowed_for_tree
from fuzz.pool import Case
from fuzz.strategies import apply_edit, describe, draw_examples, dumps, tree_edits

__all__ = ["json_cases"]


def _writer(data: bytes) -> Any:
    def make(path: Path) -> None:
        path.write_bytes(data)

    return make


def byte_flips(text: bytes, tree: Any, n: int, at: int) -> Iterator[Case]:
    rng = np.random.default_rng(at)
    for k in range(n):
        positions = sorted(int(p) for p in rng.integers(0, len(text), size=1 + k % 3))
        masks = [1 << int(b) for b in rng.integers(0, 8, size=len(positions))]
        out = bytearray(text)
        for p, m in zip(positions, masks, strict=True):
            out[p] ^= m
        data = bytes(out)
        yield Case("json", f"json bytes {positions} ^ {masks} (seed {at})", _writer(data), allowed_for_tree(tree, data))


def truncations(text: bytes, tree: Any, n: int, at: int) -> Iterator[Case]:
    rng = np.random.default_rng(at)
    for _ in range(n):
        cut = int(rng.integers(0, len(text)))
        data = text[:cut]
        yield Case("json", f"json truncated to {cut} bytes", _writer(data), allowed_for_tree(tree, data))


def edits(tree: Any, n: int, at: int) -> Iterator[Case]:
    for k, edit in enumerate(draw_examples(tree_edits(tree), n, at)):
        data = dumps(apply_edit(tree, edit))
        yield Case("json", f"json tree edit #{k} (seed {at}): {describe(edit)}", _writer(data),
                   allowed_for_tree(tree, data))


def fixed(tree: Any) -> Iterator[Case]:
    """Hand-picked cases: huge documents, deep nesting, huge numbers."""
    text = json.dumps(tree).encode()
    for name, data in [
        ("empty", b""),
        ("null", b"null"),
        ("deep nesting of the whole document", b"[" * 200_000 + b"]" * 200_000),
        ("deep nesting in an object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        ("100 MB of whitespace before the tree", b" " * 100_000_000 + text),
        ("a 50 MB string field", text[:-1] + b',"zz":"' + b"x" * 50_000_000 + b'"}'),
        ("a 10**100000 number field", text[:-1] + b',"zz":1' + b"0" * 100_000 + b"}"),
        ("duplicated tree", text + text),
        ("BOM", b"\xef\xbb\xbf" + text),
        ("UTF-16", json.dumps(tree).encode("utf-16")),
    ]:
        yield Case("json", f"json {name}", _writer(data), allowed_for_tree(tree, data))


def json_cases(path: Path, n: int, at: int) -> Iterator[Case]:
    """``n`` cases of the JSON archive at ``path``, seeded by ``at``."""
    text = path.read_bytes()
    tree = json.loads(text)
    fixed_cases = list(fixed(tree))
    share = max(0, n - len(fixed_cases))
    yield from fixed_cases[:n]
    yield from byte_flips(text, tree, share * 4 // 10, at)
    yield from truncations(text, tree, share // 10, at + 1)
    yield from edits(tree, share - share * 4 // 10 - share // 10, at + 2)
