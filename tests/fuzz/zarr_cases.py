"""Mutations of a Zarr layout-2 store (a directory: metadata documents, the tree array, sharded chunks).

Every chunk and every shard index of layout 2 carries a CRC-32C, so no mutation may change a
value silently: the only allowed change is an edit of a ``source`` string of the tree to another
array's source (which legitimately reads that array instead).  Families:

- root ``zarr.json`` (group attributes and consolidated metadata): byte flips, hypothesis edits;
- an array's ``zarr.json`` (shape, chunk shape, data type, codecs, fill value): hypothesis edits of
  the array document, of its consolidated entry, or of both alike;
- the ``lsst_json`` tree: hypothesis edits re-encoded as valid chunks, raw chunk byte flips;
- chunk bytes and shard-index bytes: bit flips;
- objects truncated or deleted.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fuzz.pool import Case
from fuzz.strategies import apply_edit, describe, draw_examples, dumps, tree_edits, tree_paths

__all__ = ["zarr_cases"]

TREE = "lsst_json"


def _copy(base: Path, edit: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        shutil.copytree(base, path)
        edit(path)

    return make


def _flip(relative: str, positions: list[int], masks: list[int]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        target = path / relative
        data = bytearray(target.read_bytes())
        for p, m in zip(positions, masks, strict=True):
            data[p] ^= m
        target.write_bytes(bytes(data))

    return edit


def _write_doc(relative: str, document: Any) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        (path / relative).write_bytes(dumps(document))

    return edit


def write_tree(store: Path, text: bytes) -> None:
    """Replace the tree array of ``store`` by ``text``, encoded as the writer does, with matching metadata."""
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec
    from zarr.storage import LocalStore

    data = np.frombuffer(text, np.uint8) if text else np.zeros(1, np.uint8)
    array = zarr.create_array(LocalStore(store), name=TREE, shape=data.shape, chunks=data.shape, dtype=np.uint8,
                              compressors=[BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle", typesize=1),
                                           Crc32cCodec()], fill_value=0, overwrite=True)
    array[:] = data
    root = json.loads((store / "zarr.json").read_bytes())
    root["consolidated_metadata"]["metadata"][TREE] = json.loads((store / TREE / "zarr.json").read_bytes())
    (store / "zarr.json").write_text(json.dumps(root))


def read_tree(store: Path) -> Any:
    import zarr
    from zarr.storage import LocalStore

    return json.loads(np.asarray(zarr.open_array(LocalStore(store, read_only=True), path=TREE)[:]).tobytes())


class ZarrStore:
    """What the mutations need to know of the unmutated store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = json.loads((path / "zarr.json").read_bytes())
        self.tree = read_tree(path)
        self.files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        self.arrays: dict[str, Any] = {}
        for name in self.files:
            if name.endswith("zarr.json") and name != "zarr.json":
                document = json.loads((path / name).read_bytes())
                if document.get("node_type") == "array":
                    self.arrays[name.removesuffix("/zarr.json")] = document
        self.chunks = [f for f in self.files if "/c/" in f and not f.startswith(TREE + "/")]
        self.sources = {v for v in _strings(self.tree) if v.startswith("zarr:")}

    def index_bytes(self, chunk: str) -> int:
        """Size of the shard index at the end of ``chunk`` (0: not a shard)."""
        array = self.arrays[chunk.split("/c/")[0]]
        codec = array["codecs"][0]
        if codec["name"] != "sharding_indexed":
            return 0
        outer = array["chunk_grid"]["configuration"]["chunk_shape"]
        inner = codec["configuration"]["chunk_shape"]
        return math.prod(o // i for o, i in zip(outer, inner, strict=True)) * 16 + 4


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def root_flips(store: ZarrStore, n: int, at: int) -> Iterator[Case]:
    rng = np.random.default_rng(at)
    size = (store.path / "zarr.json").stat().st_size
    for k in range(n):
        positions = sorted(int(p) for p in rng.integers(0, size, size=1 + k % 2))
        masks = [1 << int(b) for b in rng.integers(0, 8, size=len(positions))]
        yield Case("zarr", f"zarr root zarr.json bytes {positions} ^ {masks}",
                   _copy(store.path, _flip("zarr.json", positions, masks)))


def root_edits(store: ZarrStore, n: int, at: int) -> Iterator[Case]:
    document = store.root
    paths = [p for p in tree_paths(document) if p[:1] != ("consolidated_metadata",) or len(p) > 3]
    for k, edit in enumerate(draw_examples(tree_edits(document, paths), n, at)):
        yield Case("zarr", f"zarr root edit #{k} (seed {at}): {describe(edit)}",
                   _copy(store.path, _write_doc("zarr.json", apply_edit(document, edit))))


def _edit_array(store: ZarrStore, name: str, edited: Any, where: str) -> Callable[[Path], None]:
    """Write ``edited`` as the metadata of array ``name``: in its document, its consolidated entry, or both."""
    root = json.loads(json.dumps(store.root))
    root["consolidated_metadata"]["metadata"][name] = edited

    def change(path: Path) -> None:
        if where != "consolidated":
            (path / name / "zarr.json").write_bytes(dumps(edited))
        if where != "array":
            (path / "zarr.json").write_bytes(dumps(root))

    return change


def _pixel_arrays(store: ZarrStore) -> list[str]:
    return sorted(name for name in store.arrays if not name.startswith(("lsst/", TREE)))


def metadata_fixed(store: ZarrStore) -> Iterator[tuple[str, str, Any]]:
    """Plausible-but-wrong metadata of the pixel arrays: ``(array, what, edited document)``."""
    for name in _pixel_arrays(store):
        document = store.arrays[name]
        for what, edit in _metadata_edits(document):
            edited = json.loads(json.dumps(document))
            edit(edited)
            yield name, what, edited


def _metadata_edits(document: Any) -> list[tuple[str, Callable[[Any], None]]]:
    shape = document["shape"]
    outer = document["chunk_grid"]["configuration"]["chunk_shape"]
    edits: list[tuple[str, Callable[[Any], None]]] = [
        *[(f"data_type {t}", lambda d, t=t: d.__setitem__("data_type", t))
          for t in ("float64", "float32", "int32", "uint32", "int8", "uint8", "bool", "float16", "uint64")
          if t != document["data_type"]],
        ("shape doubled", lambda d: d.__setitem__("shape", [2 * n for n in shape])),
        ("shape - 1", lambda d: d.__setitem__("shape", [n - 1 for n in shape])),
        ("shape 10**9", lambda d: d.__setitem__("shape", [10**9 for _ in shape])),
        ("one more dimension", lambda d: d.__setitem__("shape", [1, *shape])),
        ("chunk shape 30000", lambda d: d["chunk_grid"]["configuration"].__setitem__(
            "chunk_shape", [30000 for _ in outer])),
        ("chunk shape halved", lambda d: d["chunk_grid"]["configuration"].__setitem__(
            "chunk_shape", [max(1, n // 2) for n in outer])),
        ("fill value 1", lambda d: d.__setitem__("fill_value", 1)),
        ("fill value NaN", lambda d: d.__setitem__("fill_value", "NaN")),
        ("codecs dropped", lambda d: d.__setitem__("codecs", d["codecs"][:1])),
    ]
    if document["codecs"][0]["name"] == "sharding_indexed":
        config = document["codecs"][0]["configuration"]
        edits += [
            ("inner chunk shape halved", lambda d: d["codecs"][0]["configuration"].__setitem__(
                "chunk_shape", [max(1, n // 2) for n in config["chunk_shape"]])),
            ("inner chunk shape = outer", lambda d: d["codecs"][0]["configuration"].__setitem__(
                "chunk_shape", list(outer))),
            ("index at the start", lambda d: d["codecs"][0]["configuration"].__setitem__(
                "index_location", "start")),
            ("no index crc32c", lambda d: d["codecs"][0]["configuration"].__setitem__(
                "index_codecs", config["index_codecs"][:1])),
            ("no chunk crc32c", lambda d: d["codecs"][0]["configuration"].__setitem__(
                "codecs", [c for c in config["codecs"] if c["name"] != "crc32c"])),
            ("blosc typesize 8", lambda d: [c["configuration"].__setitem__("typesize", 8)
                                            for c in d["codecs"][0]["configuration"]["codecs"]
                                            if c["name"] == "blosc"]),
            ("gzip instead of blosc", lambda d: d["codecs"][0]["configuration"].__setitem__(
                "codecs", [c if c["name"] != "blosc" else {"name": "gzip", "configuration": {"level": 5}}
                           for c in config["codecs"]])),
            ("big endian", lambda d: d["codecs"][0]["configuration"]["codecs"][0].__setitem__(
                "configuration", {"endian": "big"})),
        ]
    return edits


def array_edits(store: ZarrStore, n: int, at: int) -> Iterator[Case]:
    """Edits of array metadata: in the array's document, its consolidated entry, or both.

    First the hand-picked `metadata_fixed` edits, then hypothesis edits, half of them of pixel arrays.
    """
    count = 0
    for k, (name, what, edited) in enumerate(metadata_fixed(store)):
        if count >= n // 2:
            break
        where = ("both", "consolidated", "array")[k % 3]
        count += 1
        yield Case("zarr", f"zarr {name} metadata ({where}): {what}", _copy(store.path, _edit_array(
            store, name, edited, where)))
    pixels = _pixel_arrays(store)
    others = sorted(set(store.arrays) - set(pixels))
    rng = np.random.default_rng(at)
    left = n - count
    picks = [pixels[int(rng.integers(len(pixels)))] if rng.integers(2) else others[int(rng.integers(len(others)))]
             for _ in range(left)]
    for k, name in enumerate(sorted(set(picks))):
        wanted = picks.count(name)
        for m, edit in enumerate(draw_examples(tree_edits(store.arrays[name]), wanted, at + k)):
            where = ("array", "consolidated", "both")[(count + m) % 3]
            yield Case("zarr", f"zarr {name} metadata ({where}) edit #{m} (seed {at + k}): {describe(edit)}",
                       _copy(store.path, _edit_array(store, name, apply_edit(store.arrays[name], edit), where)))


def tree_edit_cases(store: ZarrStore, n: int, at: int) -> Iterator[Case]:
    for k, edit in enumerate(draw_examples(tree_edits(store.tree), n, at)):
        path, operation, value = edit
        redirect = operation == "set" and path[-1:] == ("source",) and isinstance(value, str) \
            and value in store.sources
        text = dumps(apply_edit(store.tree, edit))
        yield Case("zarr", f"zarr tree edit #{k} (seed {at}): {describe(edit)}",
                   _copy(store.path, lambda p, text=text: write_tree(p, text)), (("*", None),) if redirect else ())


def byte_flips(store: ZarrStore, n: int, at: int, *, index: bool) -> Iterator[Case]:
    rng = np.random.default_rng(at)
    shards = [f for f in store.chunks if store.index_bytes(f)]
    tables = [f for f in store.chunks if not store.index_bytes(f)]
    for _ in range(n):
        group = shards if index else (shards, shards, tables, [f"{TREE}/c/0"])[int(rng.integers(4))]
        name = group[int(rng.integers(len(group)))]
        size = (store.path / name).stat().st_size
        low = size - store.index_bytes(name) if index else 0
        position = int(rng.integers(low, size))
        mask = 1 << int(rng.integers(0, 8))
        what = "shard index" if index else "chunk"
        yield Case("zarr", f"zarr {what} {name} byte {position} ^ {mask}",
                   _copy(store.path, _flip(name, [position], [mask])))


def truncations(store: ZarrStore, n: int, at: int) -> Iterator[Case]:
    rng = np.random.default_rng(at)
    for _ in range(n):
        name = store.files[int(rng.integers(len(store.files)))]
        size = (store.path / name).stat().st_size
        cut = -1 if rng.integers(4) == 0 else int(rng.integers(0, size))

        def edit(path: Path, name: str = name, cut: int = cut) -> None:
            target = path / name
            if cut < 0:
                target.unlink()
            else:
                target.write_bytes(target.read_bytes()[:cut])

        yield Case("zarr", f"zarr {name} {'deleted' if cut < 0 else f'truncated to {cut} bytes'}",
                   _copy(store.path, edit))


def zarr_cases(path: Path, n: int, at: int) -> Iterator[Case]:
    """``n`` cases of the layout-2 store at ``path``, seeded by ``at``."""
    store = ZarrStore(path)
    shares = {"root flips": 1, "root edits": 2, "array edits": 3, "tree edits": 3, "chunk flips": 2,
              "index flips": 1, "truncations": 1}
    total = sum(shares.values())
    counts = {key: n * share // total for key, share in shares.items()}
    counts["array edits"] += n - sum(counts.values())
    yield from root_flips(store, counts["root flips"], at)
    yield from root_edits(store, counts["root edits"], at + 1)
    yield from array_edits(store, counts["array edits"], at + 2)
    yield from tree_edit_cases(store, counts["tree edits"], at + 1000)
    yield from byte_flips(store, counts["chunk flips"], at + 1001, index=False)
    yield from byte_flips(store, counts["index flips"], at + 1002, index=True)
    yield from truncations(store, counts["truncations"], at + 1003)
