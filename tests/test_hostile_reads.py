"""Hostile files on the read side: sizes bounded before they are fetched, stores not left, errors typed, pins strict.

Each case crafts a small file (sparse where it claims gigabytes) from a reference archive and
checks that opening or reading it raises a :class:`cellcoadd_dask.CellCoaddError` naming the
file (and the field or cap where one is at fault), quickly, having read little
(``ccd.fetch_stats()``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest

import cellcoadd_dask as ccd
from cellcoadd_dask.errors import ArchiveFormatError, CellCoaddError
from cellcoadd_dask.fetch import ObjectChangedError, fetch_head, fetch_ranges
from cellcoadd_dask.fetch_backends.local import OutsideStoreError
from cellcoadd_dask.limits import DEFAULTS, LimitExceededError, limit

BLOCK = 2880


@contextmanager
def _reads(max_bytes: int, max_seconds: float = 5.0) -> Iterator[ccd.FetchStats]:
    """Count what the block reads; fail if it reads more than ``max_bytes`` or takes too long."""
    start = time.monotonic()
    with ccd.fetch_stats() as stats:
        yield stats
    assert stats.nbytes <= max_bytes, f"read {stats.nbytes} bytes"
    assert time.monotonic() - start < max_seconds


def _open_and_read(path: Path, what: str = "image") -> None:
    coadd = ccd.open_coadd(path)
    if what == "image":
        coadd.image.array.compute()
    elif what == "mask":
        coadd.mask.array.compute()
    else:
        coadd.psf.array.compute()


# ------------------------------------------------------------------ FITS


def _cards(path: Path) -> dict[str, int]:
    head = path.read_bytes()[: BLOCK * 4]
    out = {}
    for n in range(0, len(head), 80):
        card = head[n : n + 80].decode("latin-1")
        if card.startswith("END     "):
            break
        if card[8:10] == "= " and card[:8].strip() in ("JSONADDR", "JSONSIZE", "INDXADDR", "INDXSIZE"):
            out[card[:8].strip()] = int(card[10:].split("/")[0])
    return out


def _set_cards(path: Path, **cards: int) -> None:
    data = bytearray(path.read_bytes()[: BLOCK * 4])
    for n in range(0, len(data), 80):
        key = data[n : n + 8].decode("latin-1").strip()
        if key == "END":
            break
        if key in cards:
            data[n : n + 80] = f"{key:<8}= {cards[key]:>20}".ljust(80).encode("ascii")
    with open(path, "r+b") as f:
        f.write(bytes(data))


@pytest.fixture
def fits_copy(reference_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "hostile.fits"
    shutil.copyfile(reference_dir / "synthetic_3x3.fits", path)
    return path


def test_fits_claimed_2gb_json_tree_on_sparse_file(fits_copy: Path) -> None:
    cards = _cards(fits_copy)
    jsize = -(-2_100_000_000 // BLOCK) * BLOCK
    iaddr = cards["JSONADDR"] + jsize
    _set_cards(fits_copy, JSONSIZE=jsize, INDXADDR=iaddr)
    os.truncate(fits_copy, iaddr + cards["INDXSIZE"])  # sparse: the file really is that large
    with _reads(2 * BLOCK, 2.0), pytest.raises(LimitExceededError) as info:
        ccd.open_coadd(fits_copy)
    assert info.value.field == "primary card JSONSIZE" and info.value.cap == "tree_bytes"
    assert "JSONSIZE" in str(info.value) and "cellcoadd.limits.tree_bytes" in str(info.value)
    assert str(fits_copy) in str(info.value)


def test_fits_jsonsize_beyond_the_file(fits_copy: Path) -> None:
    cards = _cards(fits_copy)
    jsize = cards["JSONSIZE"] + 100 * BLOCK
    _set_cards(fits_copy, JSONSIZE=jsize, INDXADDR=cards["JSONADDR"] + jsize)
    with _reads(2 * BLOCK), pytest.raises(LimitExceededError, match="JSONSIZE") as info:
        ccd.open_coadd(fits_copy)
    assert info.value.cap is None  # the object, not a cap, is exceeded


def test_fits_index_over_its_cap(fits_copy: Path) -> None:
    with dask.config.set({"cellcoadd.limits.index_bytes": BLOCK}), _reads(2 * BLOCK):
        with pytest.raises(LimitExceededError, match="INDXSIZE") as info:
            ccd.open_coadd(fits_copy)
    assert info.value.cap == "index_bytes"


def test_caps_come_from_dask_config() -> None:
    assert limit("tree_bytes") == DEFAULTS["tree_bytes"]
    with dask.config.set({"cellcoadd.limits.tree_bytes": 123}):
        assert limit("tree_bytes") == 123


# ------------------------------------------------------------------ JSON


@pytest.fixture
def json_copy(reference_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "hostile.json"
    shutil.copyfile(reference_dir / "synthetic_3x3_cutout.json", path)
    return path


def test_json_archive_over_its_cap(json_copy: Path) -> None:
    with dask.config.set({"cellcoadd.limits.json_bytes": 1000}), _reads(1):
        with pytest.raises(LimitExceededError, match="json_bytes") as info:
            ccd.open_coadd(json_copy)
    assert str(json_copy) in str(info.value)


def test_json_gzip_bomb_over_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(gzip.compress(b'{"a": "' + b" " * 50_000_000 + b'"}'))
    with dask.config.set({"cellcoadd.limits.json_bytes": 1_000_000}), pytest.raises(LimitExceededError):
        ccd.open_coadd(path)


def test_json_float_mask_is_refused_not_truncated(json_copy: Path) -> None:
    tree = json.loads(json_copy.read_text())
    rows = tree["mask"]["data"][0]["data"]
    rows[0][0] = 1.5
    json_copy.write_text(json.dumps(tree))
    with pytest.raises(ArchiveFormatError, match="mask"):
        ccd.open_coadd(json_copy).mask.array.compute()


def test_json_pixel_beyond_float32_is_refused_not_made_infinite(json_copy: Path) -> None:
    tree = json.loads(json_copy.read_text())
    tree["image"]["data"]["value"]["data"][0][0] = 3e175  # a finite float64 no float32 holds
    json_copy.write_text(json.dumps(tree))
    with pytest.raises(ArchiveFormatError, match="float32") as info:
        ccd.open_coadd(json_copy).image.array.compute()
    assert str(json_copy) in str(info.value)


def test_json_integer_column_holding_floats_is_refused_not_truncated(json_copy: Path) -> None:
    tree = json.loads(json_copy.read_text())
    columns = tree["provenance"]["contributions"]["columns"]
    visit = next(c for c in columns if c["name"] == "visit")
    visit["data"]["data"][0] = 1.5
    json_copy.write_text(json.dumps(tree))
    with pytest.raises(ArchiveFormatError, match="uint64"):
        ccd.open_coadd(json_copy).provenance  # noqa: B018 (read on first access)


# ------------------------------------------------------------------ Zarr


@pytest.fixture(scope="module")
def stores(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    from cellcoadd_dask.archives.zarr.writer import write_zarr

    root = tmp_path_factory.mktemp("hostile-zarr")
    coadd = ccd.open_coadd(reference_dir / "synthetic_3x3.fits")
    out = {}
    for layout in (1, 2):
        out[layout] = root / f"layout{layout}.zarr"
        write_zarr(coadd, out[layout], layout=layout)
    return out


@pytest.fixture
def layout1(stores: dict[int, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(stores[1], tmp_path / "store" / "l1.zarr", symlinks=True))


@pytest.fixture
def layout2(stores: dict[int, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(stores[2], tmp_path / "store" / "l2.zarr", symlinks=True))


def _edit(store: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit an array's ``zarr.json`` and its entry in the root's consolidated metadata (if any)."""
    path = store / name / "zarr.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    root = json.loads((store / "zarr.json").read_text())
    consolidated = root.get("consolidated_metadata")
    if consolidated:
        edit(consolidated["metadata"][name])
        (store / "zarr.json").write_text(json.dumps(root))


def _set_chunk(meta: dict[str, Any], chunk: list[int], *, inner: bool = False) -> None:
    if inner:
        meta["codecs"][0]["configuration"]["chunk_shape"] = chunk
    else:
        meta["chunk_grid"]["configuration"]["chunk_shape"] = chunk


def test_zarr_tree_array_claiming_3gb(layout2: Path) -> None:
    def huge(meta: dict[str, Any]) -> None:
        meta["shape"] = [3_000_000_000]
        _set_chunk(meta, [3_000_000_000])

    _edit(layout2, "lsst_json", huge)
    with _reads(1_000_000), pytest.raises(LimitExceededError, match="lsst_json") as info:
        ccd.open_coadd(layout2)
    assert info.value.cap == "tree_bytes"


def test_zarr_100mb_group_attribute_is_refused_unread(layout2: Path) -> None:
    root = layout2 / "zarr.json"
    os.truncate(root, 100 * 1024 * 1024)  # sparse; refused by size, never read or parsed
    with _reads(limit("metadata_bytes") + 1, 2.0), pytest.raises(LimitExceededError) as info:
        ccd.open_coadd(layout2)
    assert info.value.cap == "metadata_bytes" and "zarr.json" in str(info.value)


def test_zarr_array_metadata_over_its_cap_layout_1(layout1: Path) -> None:
    os.truncate(layout1 / "image" / "zarr.json", 100 * 1024 * 1024)
    coadd = ccd.open_coadd(layout1)
    with _reads(limit("metadata_bytes") + 1, 2.0), pytest.raises(LimitExceededError, match="metadata_bytes"):
        coadd.image.array.compute()


def test_zarr_chunk_shape_30000_layout_1(layout1: Path) -> None:
    _edit(layout1, "image", lambda m: _set_chunk(m, [30000, 30000]))
    with _reads(1_000_000), pytest.raises(LimitExceededError, match="chunk_shape") as info:
        _open_and_read(layout1)
    assert info.value.cap == "chunk_bytes"


def test_zarr_chunk_shape_other_than_the_cell(layout1: Path, layout2: Path) -> None:
    _edit(layout1, "variance", lambda m: _set_chunk(m, [450, 450]))
    with pytest.raises(ArchiveFormatError, match=r"chunk_shape \[450, 450\] is not the \[150, 150\]"):
        ccd.open_coadd(layout1).variance.array.compute()
    _edit(layout2, "image", lambda m: _set_chunk(m, [75, 75], inner=True))
    with pytest.raises(ArchiveFormatError, match=r"chunk_shape \[75, 75\]"):
        _open_and_read(layout2)


def test_zarr_psf_chunk_other_than_one_kernel(layout1: Path) -> None:
    _edit(layout1, "psf", lambda m: _set_chunk(m, [3, 3, 25, 25]))
    with pytest.raises(ArchiveFormatError, match="psf"):
        _open_and_read(layout1, "psf")


def test_zarr_shard_index_count_bounded(layout2: Path) -> None:
    _edit(layout2, "image", lambda m: _set_chunk(m, [450_000, 450_000]))
    with _reads(1_000_000), pytest.raises(LimitExceededError, match="chunks per shard") as info:
        _open_and_read(layout2)
    assert info.value.cap == "shard_chunks"


def test_zarr_chunk_decoding_to_the_wrong_size_layout_1(layout1: Path) -> None:
    import numcodecs

    (layout1 / "image" / "c" / "0" / "0").write_bytes(numcodecs.Zstd().encode(np.zeros(100, "<f4").tobytes()))
    with pytest.raises(ArchiveFormatError, match="image") as info:
        _open_and_read(layout1)
    assert str(layout1) in str(info.value)


def test_zarr_corrupt_zstd_chunk_layout_1(layout1: Path) -> None:
    (layout1 / "image" / "c" / "1" / "1").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 4)
    with pytest.raises(ArchiveFormatError, match="cannot be decoded") as info:
        _open_and_read(layout1)
    assert str(layout1) in str(info.value)


def test_zarr_corrupt_blosc_chunk_layout_2(layout2: Path) -> None:
    shard = layout2 / "image" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100:4100] = bytes(4000)
    shard.write_bytes(bytes(data))
    with pytest.raises(ArchiveFormatError, match="image"):
        _open_and_read(layout2)


def _outside(store: Path, relative: str) -> Path:
    """Move ``store/relative`` out of the store and leave a symbolic link to it in its place."""
    target = store.parent.parent / "outside" / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(store / relative, target)
    (store / relative).symlink_to(target, target_is_directory=target.is_dir())
    return target


@pytest.mark.parametrize("layout", [1, 2])
def test_zarr_symlinked_chunk_outside_store(layout: int, layout1: Path, layout2: Path) -> None:
    store = layout1 if layout == 1 else layout2
    _outside(store, "image/c/0/0")
    with pytest.raises(OutsideStoreError, match="outside the store") as info:
        _open_and_read(store)
    assert isinstance(info.value, CellCoaddError)


@pytest.mark.parametrize("layout", [1, 2])
def test_zarr_symlinked_array_directory_outside_store(layout: int, layout1: Path, layout2: Path) -> None:
    store = layout1 if layout == 1 else layout2
    _outside(store, "image")
    with pytest.raises(OutsideStoreError):
        _open_and_read(store)


def test_zarr_symlink_inside_store_is_followed(layout1: Path, stores: dict[int, Path]) -> None:
    chunk = layout1 / "image" / "c" / "0" / "0"
    shutil.move(chunk, layout1 / "moved-chunk")
    chunk.symlink_to(Path("..", "..", "..", "moved-chunk"))
    np.testing.assert_array_equal(ccd.open_coadd(layout1).image.array.compute(),
                                  ccd.open_coadd(stores[1]).image.array.compute())


def test_zarr_symlink_swapped_during_a_read_is_caught_after_it(tmp_path: Path) -> None:
    """The check after a read: the file read must be the one the key resolves to inside the store."""
    from cellcoadd_dask.fetch import fetch_object
    from cellcoadd_dask.fetch_backends.local import check_contained

    store = tmp_path / "store.zarr"
    store.mkdir()
    (store / "inside").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    _, read = fetch_object(str(outside))  # what a read through a link swapped after the first check returns
    check_contained(str(store), str(store / "inside"), str(store / "inside"))
    with pytest.raises(OutsideStoreError, match="changed during the read"):
        check_contained(str(store), str(store / "inside"), str(store / "inside"), read)


def test_zarr_symlink_flipping_during_reads_never_yields_outside_bytes(tmp_path: Path) -> None:
    """A link flipped between a file in the store and one outside it, by another process, while keys are read."""
    import multiprocessing

    from cellcoadd_dask.archives.zarr.store import FetchStore

    store = tmp_path / "store.zarr"
    store.mkdir()
    (store / "real").write_bytes(b"inside")
    (tmp_path / "outside").write_bytes(b"secret")
    (store / "key").symlink_to("real")
    flipper = multiprocessing.get_context("spawn").Process(
        target=_flip_link, args=(str(store / "key"), "real", str(tmp_path / "outside"), 4.0), daemon=True)
    flipper.start()
    reads = refused = 0
    try:
        deadline = time.monotonic() + 3.0
        fetch_store = FetchStore(str(store))
        while time.monotonic() < deadline:
            try:
                data = fetch_store.read_whole("key")
            except OutsideStoreError:
                refused += 1
            else:
                assert data == b"inside"
                reads += 1
            fetch_store = FetchStore(str(store))  # unpinned: every read resolves afresh
    finally:
        flipper.kill()
        flipper.join()
    assert reads > 0 and refused > 0


def _flip_link(link: str, inside: str, outside: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        temporary = f"{link}.{n % 2}"
        os.symlink(outside if n % 2 else inside, temporary)
        os.replace(temporary, link)


@pytest.mark.parametrize("dtype", ["float64", "int8", "bool"])
def test_zarr_mask_dtype_edited(dtype: str, layout2: Path) -> None:
    def edit(meta: dict[str, Any]) -> None:
        meta["data_type"] = dtype
        meta["fill_value"] = False if dtype == "bool" else 0

    _edit(layout2, "mask", edit)
    with pytest.raises(ArchiveFormatError, match=f"holds {dtype}"):
        _open_and_read(layout2, "mask")


def test_zarr_mask_dtype_edited_layout_1(layout1: Path) -> None:
    def edit(meta: dict[str, Any]) -> None:
        meta["data_type"] = "float64"
        meta["fill_value"] = 0.0

    _edit(layout1, "mask/0", edit)
    with pytest.raises(ArchiveFormatError, match="holds float64"):
        _open_and_read(layout1, "mask")


def test_zarr_json_200k_deep_nesting(layout2: Path) -> None:
    root = json.loads((layout2 / "zarr.json").read_text())
    root["attributes"]["deep"] = "@DEEP@"
    depth = 200_000
    (layout2 / "zarr.json").write_text(json.dumps(root).replace('"@DEEP@"', "[" * depth + "]" * depth))
    with pytest.raises(ArchiveFormatError, match="nested too deeply"):
        ccd.open_coadd(layout2)


@pytest.mark.parametrize("name", ["plain", "named.json", "named.fits", "named.zarr"])
def test_open_coadd_directory_that_is_not_a_store(name: str, tmp_path: Path) -> None:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "something").write_text("x")
    with pytest.raises(CellCoaddError) as info:
        ccd.open_coadd(directory)
    assert str(directory) in str(info.value)


# ------------------------------------------------------------------ local pins


def test_local_pin_sees_rewrite_with_same_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "object.bin"
    path.write_bytes(b"a" * 4096)
    st = os.stat(path)
    (_,), pin = fetch_head(str(path), [(0, 16)])
    time.sleep(0.05)  # the kernel stamps files with a clock of a few milliseconds' resolution
    with open(path, "r+b") as f:
        f.write(b"b" * 4096)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    with pytest.raises(ObjectChangedError, match="status-change time"):
        fetch_ranges(str(path), [(0, 16)], pin=pin)


def test_local_pin_sees_file_replaced_by_rename(tmp_path: Path) -> None:
    path = tmp_path / "object.bin"
    path.write_bytes(b"a" * 4096)
    st = os.stat(path)
    (_,), pin = fetch_head(str(path), [(0, 16)])
    other = tmp_path / "new.bin"
    other.write_bytes(b"b" * 4096)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)
    with pytest.raises(ObjectChangedError, match="inode"):
        fetch_ranges(str(path), [(0, 16)], pin=pin)


def test_local_pin_unchanged_file_reads(tmp_path: Path) -> None:
    path = tmp_path / "object.bin"
    path.write_bytes(b"a" * 4096)
    (_,), pin = fetch_head(str(path), [(0, 16)])
    assert pin.inode is not None and pin.ctime_ns is not None
    assert fetch_ranges(str(path), [(16, 32)], pin=pin) == [b"a" * 16]


# ------------------------------------------------------------------ remote stores


def test_zarr_100mb_group_attribute_over_http(layout2: Path, http_server: Any) -> None:
    name = f"hostile-{os.getpid()}-{time.monotonic_ns()}.zarr"
    shutil.copytree(layout2, http_server.root / name)
    os.truncate(http_server.root / name / "zarr.json", 100 * 1024 * 1024)
    url = f"{http_server.url}/{name}"
    mark = http_server.mark()
    start = time.monotonic()
    with pytest.raises(LimitExceededError, match="metadata_bytes"):
        ccd.open_coadd(url)
    assert time.monotonic() - start < 5
    # refused on its Content-Range, before the body is read: what the server managed to send
    # into the socket before the connection closed, not the object
    assert http_server.requests_since(mark, name=f"{name}/zarr.json").body_bytes < 16 * 1024 * 1024


def test_zarr_group_metadata_over_its_cap_on_s3(layout2: Path, s3_server: Any) -> None:
    fs = s3_server.filesystem()
    root = f"{s3_server.bucket}/hostile-{os.getpid()}-{time.monotonic_ns()}.zarr"
    for path in sorted(p for p in layout2.rglob("*") if p.is_file()):
        fs.pipe_file(f"{root}/{path.relative_to(layout2).as_posix()}", path.read_bytes())
    size = (layout2 / "zarr.json").stat().st_size
    with dask.config.set({"cellcoadd.limits.metadata_bytes": size // 2}), _reads(0):
        with pytest.raises(LimitExceededError, match="metadata_bytes"):
            ccd.open_coadd(f"s3://{root}", storage_options=s3_server.storage_options)
    ccd.open_coadd(f"s3://{root}", storage_options=s3_server.storage_options)  # under the default cap: opens


def test_zarr_table_column_claiming_80gb(layout1: Path) -> None:
    def huge(meta: dict[str, Any]) -> None:
        meta["shape"] = [10_000_000_000]
        _set_chunk(meta, [1000])

    _edit(layout1, "provenance/contributions/visit", huge)
    coadd = ccd.open_coadd(layout1)
    with _reads(1_000_000), pytest.raises(LimitExceededError, match="visit") as info:
        coadd.provenance  # noqa: B018 (read on first access)
    assert info.value.cap == "chunk_bytes"


def test_zarr_array_shape_at_odds_with_the_tree_fails_on_open(layout2: Path) -> None:
    def huge(meta: dict[str, Any]) -> None:
        meta["shape"] = [1_000_000_000, 1_000_000_000]

    _edit(layout2, "variance", huge)
    with _reads(1_000_000), pytest.raises(ArchiveFormatError, match="'/variance' has shape"):
        ccd.open_coadd(layout2)  # layout 2: the consolidated metadata is checked on open


def test_zarr_300mb_chunk_file_layout_1(layout1: Path) -> None:
    os.truncate(layout1 / "image" / "c" / "0" / "0", 300 * 1024 * 1024)  # sparse
    with _reads(1_000_000, 3.0), pytest.raises(LimitExceededError, match="chunk_bytes"):
        _open_and_read(layout1)


def test_zarr_shard_index_giving_a_300mb_chunk(layout2: Path) -> None:
    import google_crc32c

    shard = layout2 / "image" / "c" / "0" / "0"
    raw = shard.read_bytes()
    per_shard = 9  # a 3 x 3 grid of cells, one shard
    index_bytes = 16 * per_shard + 4
    rows = np.frombuffer(raw[-index_bytes:-4], "<u8").reshape(per_shard, 2).copy()
    huge = 300 * 1024 * 1024
    rows[0] = (0, huge)
    index = rows.tobytes()
    with open(shard, "r+b") as f:
        f.truncate(huge)  # sparse: the shard really holds that many bytes before its index
        f.seek(huge)
        f.write(index + google_crc32c.value(index).to_bytes(4, "little"))
    with _reads(1_000_000, 3.0), pytest.raises(LimitExceededError, match="its index gives a chunk") as info:
        _open_and_read(layout2)
    assert info.value.field == "shard index" and info.value.cap == "chunk_bytes"


@pytest.mark.parametrize("layout", [1, 2])
def test_zarr_zero_chunk_shape(layout: int, layout1: Path, layout2: Path) -> None:
    store = layout1 if layout == 1 else layout2
    _edit(store, "image", lambda meta: _set_chunk(meta, [0, 0]))
    with _reads(1_000_000), pytest.raises(ArchiveFormatError, match="image") as info:
        _open_and_read(store)
    assert str(store) in str(info.value)


@pytest.mark.parametrize("layout", [1, 2])
def test_zarr_fill_value_out_of_range_of_a_table_column(layout: int, layout1: Path, layout2: Path) -> None:
    store, name = ((layout1, "provenance/contributions/visit") if layout == 1
                   else (layout2, "lsst/tables/provenance/contributions/visit"))

    def overflow(meta: dict[str, Any]) -> None:
        meta["fill_value"] = 2**70  # beyond uint64

    _edit(store, name, overflow)
    with _reads(1_000_000), pytest.raises(ArchiveFormatError, match="visit"):
        ccd.open_coadd(store).provenance  # noqa: B018 (read on first access)


@pytest.mark.parametrize(("field", "value"), [
    ("data_type", {"name": "int64"}), ("codecs", 5), ("dimension_names", 7), ("attributes", [1]),
    ("chunk_key_encoding", "default"), ("node_type", "group"), ("zarr_format", 2), ("shape", "24"),
])
def test_zarr_table_column_metadata_edited(field: str, value: Any, layout2: Path) -> None:
    def edit(meta: dict[str, Any]) -> None:
        meta[field] = value

    _edit(layout2, "lsst/tables/provenance/contributions/visit", edit)
    with _reads(1_000_000), pytest.raises(CellCoaddError, match="visit"):
        ccd.open_coadd(layout2).provenance  # noqa: B018 (read on first access)


def test_json_projection_leaving_the_sphere_gives_nan_not_an_astropy_error(reference_dir: Path, tmp_path: Path) -> None:
    """A node of the AST text no longer inverted maps pixels to declinations beyond 90 degrees."""
    text = (reference_dir / "cell_coadd_min_as_shipped.json").read_text()
    assert "Inv2 = 1 " in text
    path = tmp_path / "flipped.json"
    path.write_text(text.replace("Inv2 = 1 ", "Inv2 = 0 ", 1))
    coadd = ccd.open_coadd(path)
    sky = coadd.projection.pixel_to_sky(x=[coadd.bbox.x.start, coadd.bbox.x.start + 1], y=coadd.bbox.y.start)
    assert np.isnan(sky.ra.deg).all() and np.isnan(sky.dec.deg).all()


@pytest.mark.parametrize("value", [[], {"schema_version": "1"}, 5])
def test_backgrounds_subtracted_not_a_name(reference_dir: Path, tmp_path: Path, value: Any) -> None:
    tree = json.loads((reference_dir / "cell_coadd_min_as_shipped.json").read_text())
    tree.setdefault("backgrounds", {"fields": {}, "subtracted": None})["subtracted"] = value
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(tree))
    with pytest.raises(ArchiveFormatError, match="subtracted background must be a name"):
        ccd.open_coadd(path).backgrounds  # noqa: B018


def test_aperture_corrections_on_another_grid_than_the_psf(reference_dir: Path, tmp_path: Path) -> None:
    tree = json.loads((reference_dir / "cell_coadd_min_as_shipped.json").read_text())
    tree["psf"]["bounds"]["grid"]["bbox"]["x"]["start"] = 6  # lsst-images refuses this file too
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(tree))
    with pytest.raises(ArchiveFormatError, match="share one cell grid"):
        ccd.open_coadd(path)


@pytest.mark.parametrize("edit", ["drop a plane", "rename a plane", "move a plane", "an object as a mask"])
def test_zarr_mask_planes_named_differently_by_the_tree_and_the_flags(edit: str, layout2: Path) -> None:
    """Layout 2 names the planes twice (tree and the packed mask's CF flags): if they disagree, which the
    stored bits mean is unknown, so the archive is refused (whichever of the two was edited)."""

    def change(meta: dict[str, Any]) -> None:
        attributes = meta["attributes"]
        names = attributes["flag_meanings"].split()
        masks = attributes["flag_masks"]
        if edit == "drop a plane":
            names, masks = names[:-1], masks[:-1]
        elif edit == "rename a plane":
            names[1] = "RENAMED"
        elif edit == "an object as a mask":
            masks[1] = {"zz_unknown": None}
        else:
            masks[0], masks[1] = masks[1], masks[0]
        attributes["flag_meanings"] = " ".join(names)
        attributes["flag_masks"] = masks

    _edit(layout2, "mask", change)
    message = "list of integers" if edit == "an object as a mask" else r"disagree with the tree's mask\.planes"
    with _reads(1_000_000), pytest.raises(ArchiveFormatError, match=message):
        ccd.open_coadd(layout2)
