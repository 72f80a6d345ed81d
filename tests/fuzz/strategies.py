"""Structure-aware mutations drawn with hypothesis: plausible-but-wrong values for JSON trees and FITS cards.

The strategies are drawn outside any test, deterministically (`draw_examples`: a fixed seed, no
example database), so that a case name plus its seed reproduces it.  A tree edit is
``(path, operation, value)``: replace the value at ``path`` by a wrong one (another type, an
off-by-one or huge number, a long or empty string, a value taken from elsewhere in the tree,
a deeply nested list), delete a key, or add an unknown one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

__all__ = ["DEEP", "apply_edit", "card_edits", "draw_examples", "dumps", "tree_edits", "tree_paths"]

DEEP = "\x00deep-nesting\x00"
"""A string value `dumps` replaces by 100 000 nested lists."""
Path = tuple[str | int, ...]

TEXTS = ["a", "0", "-1", "1e999", "NaN", "fits:IMAGE", "zarr:/image", "\u0000", "é", "../x",
         "https://x", " " * 20]
HUGE = [2**31, 2**31 - 1, -(2**31) - 1, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), 10**400,
        1e308, -1e308, 1e-320, float("inf"), float("-inf"), float("nan")]


def draw_examples(strategy: st.SearchStrategy[Any], n: int, at: int) -> list[Any]:
    """``n`` examples of ``strategy``, the same ones for the same ``at`` (a seed)."""
    out: list[Any] = []
    if n <= 0:
        return out

    @seed(at)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out[:n]


def tree_paths(tree: Any, path: Path = (), data_items: int = 2) -> list[Path]:
    """Paths of every node of ``tree`` (only the first ``data_items`` items of lists of numbers)."""
    out = [path] if path else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += tree_paths(value, (*path, key), data_items)
    elif isinstance(tree, list):
        numbers = tree and all(isinstance(v, int | float | list) for v in tree)
        for n, value in enumerate(tree[:data_items] if numbers else tree):
            out += tree_paths(value, (*path, n), data_items)
    return out


def _get(tree: Any, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _leaves_of_type(tree: Any, kind: type) -> list[Any]:
    out = []
    for path in tree_paths(tree):
        value = _get(tree, path)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            out.append(value)
    return out


def wrong_values(old: Any, tree: Any) -> st.SearchStrategy[Any]:
    """Plausible-but-wrong replacements of ``old`` in ``tree``."""
    # Only sampled_from/just: hypothesis seeds text, float and integer draws with constants found in the
    # modules loaded at the time, which would make the cases depend on how the run was started.
    other_types = st.one_of(st.none(), st.booleans(), st.sampled_from([-3, -1, 0, 1, 2, 3]), st.just("x"),
                            st.just([]), st.just({}), st.lists(st.sampled_from([-2, -1, 0, 1, 2]), max_size=3),
                            st.just(DEEP), st.just("é" * 100_000))
    if isinstance(old, bool):
        return st.one_of(st.just(not old), st.just(int(old)), other_types)
    if isinstance(old, int):
        near = st.sampled_from([old + 1, old - 1, -old, 0, old * 2, old * 1000, float(old) + 0.5])
        return st.one_of(near, st.sampled_from(HUGE), st.sampled_from(_leaves_of_type(tree, int) or [0]),
                         other_types)
    if isinstance(old, float):
        return st.one_of(st.sampled_from([-old, old * 2, 0.0, old + 1]), st.sampled_from(HUGE),
                         st.sampled_from([0.5, -0.0, 5e-324, 1.7976931348623157e308, 3.4e38, 1e-45]), other_types)
    if isinstance(old, str):
        strings = sorted(set(_leaves_of_type(tree, str)), key=lambda s: (len(s), s))[:200] or [""]
        return st.one_of(st.sampled_from(["", old + "x", old[:-1], old.upper(), old * 1000]),
                         st.sampled_from(strings), st.sampled_from(TEXTS), other_types)
    if isinstance(old, list):
        lists = st.sampled_from([old[:-1], [*old, *old[-1:]], old[::-1], [old], [None] * len(old)])
        return st.one_of(lists, other_types) if old else other_types
    if isinstance(old, dict):
        return st.one_of(st.just({k: v for k, v in list(old.items())[1:]}), st.just([old]), other_types)
    return other_types


def tree_edits(tree: Any, paths: list[Path] | None = None) -> st.SearchStrategy[tuple[Path, str, Any]]:
    """Edits ``(path, operation, value)`` of ``tree``: ``set``, ``delete`` or ``insert``."""
    candidates = paths if paths is not None else tree_paths(tree)

    @st.composite
    def edit(draw: Callable[[st.SearchStrategy[Any]], Any]) -> tuple[Path, str, Any]:
        path = draw(st.sampled_from(candidates))
        operation = draw(st.sampled_from(["set", "set", "set", "delete", "insert"]))
        if operation == "delete" and not isinstance(path[-1], str):
            operation = "set"
        if operation == "insert":
            return path, "insert", draw(st.sampled_from(["zz_unknown", "schema_version", "data", "$ref", ""]))
        if operation == "delete":
            return path, "delete", None
        return path, "set", draw(wrong_values(_get(tree, path), tree))

    return edit()


def apply_edit(tree: Any, edit: tuple[Path, str, Any]) -> Any:
    """A copy of ``tree`` with ``edit`` made."""
    path, operation, value = edit
    out = copy.deepcopy(tree)
    parent = _get(out, path[:-1])
    if operation == "delete":
        del parent[path[-1]]
    elif operation == "insert":
        node = parent[path[-1]]
        if isinstance(node, dict):
            node[value] = {"x": 1}
        else:
            parent[path[-1]] = {value: node}
    else:
        parent[path[-1]] = value
    return out


def dumps(tree: Any) -> bytes:
    """JSON text of an edited tree (`DEEP` strings become deeply nested lists)."""
    text = json.dumps(tree, separators=(",", ":"), ensure_ascii=False)
    marker = json.dumps(DEEP)
    text = text.replace(marker, "[" * 100_000 + "]" * 100_000)
    return text.encode()


def describe(edit: tuple[Path, str, Any]) -> str:
    """Short readable form of an edit."""
    path, operation, value = edit
    where = ".".join(str(p) for p in path)
    if operation == "delete":
        return f"delete {where}"
    if operation == "insert":
        return f"insert key {value!r} at {where}"
    text = "<100000-deep list>" if value == DEEP else repr(value)
    return f"set {where} = {text if len(text) < 60 else text[:40] + f'...({len(text)} chars)'}"


# ----------------------------------------------------------------------------- FITS cards


def card_values(old: Any) -> st.SearchStrategy[Any]:
    """Plausible-but-wrong values of a FITS card whose value is ``old`` (`None`: delete the card)."""
    common = st.one_of(st.none(), st.sampled_from(["", "x", "T", "NaN"]), st.booleans(), st.sampled_from(HUGE[:9]))
    if isinstance(old, bool):
        return st.one_of(st.just(not old), st.just(1), common)
    if isinstance(old, int):
        return st.one_of(st.sampled_from([old + 1, old - 1, -old, 0, old * 2, old + 2880, old - 2880, float(old)]),
                         common)
    if isinstance(old, float):
        return st.one_of(st.sampled_from([-old, old * 2, 0.0, old + 1]), common)
    if isinstance(old, str):
        return st.one_of(st.sampled_from([old + "X", old[:-1], old.lower(), "GZIP_2", "RICE_1", "float64"]),
                         st.sampled_from(TEXTS[:6]), common)
    return common


def card_edits(cards: list[tuple[str, Any]]) -> st.SearchStrategy[tuple[str, Any]]:
    """``(keyword, value)`` edits of a header given as its ``(keyword, value)`` cards."""
    @st.composite
    def edit(draw: Callable[[st.SearchStrategy[Any]], Any]) -> tuple[str, Any]:
        key, old = draw(st.sampled_from(cards))
        return key, draw(card_values(old))

    return edit()
