"""Tract indexes: ``write_tract_index`` then ``open_tract(index_url)``.

The corpus' two tracts (the 2x2 test tract with a missing patch, and the 3x3 demonstration tract
of overlapping 4x4-cell patches) are indexed locally, over nginx and on SeaweedFS.  Opening
through the index must take at most 2 requests (the servers' own logs), give the same Dataset as
opening the files, and leave every later read to tiles only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from oracle import hdu_bytes

import cellcoadd_dask as ccd
from cellcoadd_dask.errors import ArchiveFormatError

TRACTS = ("tract", "demo_tract")


def _copy_tract(corpus: Path, name: str, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for path in sorted((corpus / name).glob("*.fits")):
        shutil.copyfile(path, directory / path.name)
        out.append(directory / path.name)
    return out


def _assert_same(got: xr.Dataset, expected: xr.Dataset) -> None:
    assert set(got.data_vars) == set(expected.data_vars)
    for name in expected.data_vars:
        np.testing.assert_array_equal(got[name].values, expected[name].values, err_msg=name)
        assert got[name].attrs == expected[name].attrs, name
    for name in ("y", "x", "cell_i", "cell_j"):
        np.testing.assert_array_equal(got[name].values, expected[name].values)
    assert {k: v for k, v in got.attrs.items() if k != "urls"} == {k: v for k, v in expected.attrs.items()
                                                                   if k != "urls"}


@pytest.mark.parametrize("name", TRACTS)
def test_local_index_opens_in_two_requests_with_the_same_values(corpus: Path, tmp_path: Path, name: str) -> None:
    files = _copy_tract(corpus, name, tmp_path / name)
    index = ccd.write_tract_index(files, tmp_path / name / "tract.idx")
    with ccd.fetch_stats() as stats:
        ds = ccd.open_tract(index)
    assert stats.requests <= 2, stats.ranges
    assert ds.attrs["urls"] == [str(p) for p in files]
    _assert_same(ds, ccd.open_tract([str(p) for p in files]))


@pytest.mark.parametrize("name", TRACTS)
def test_over_http_open_is_two_requests_and_a_cell_reads_only_its_tiles(
    corpus: Path, http_server: Any, name: str
) -> None:
    files = sorted((corpus / name).glob("*.fits"))
    urls = [http_server.publish(p) for p in files]
    index_path = Path(http_server.root) / f"{name}-index.idx"
    ccd.write_tract_index(urls, index_path)  # a local index of HTTP patches, then served beside them
    index_url = f"{http_server.url}/{index_path.name}"
    mark = http_server.mark()
    ds = ccd.open_tract(index_url)
    log = http_server.requests_since(mark)
    assert len(log) <= 2, log
    assert {r.name for r in log} == {index_path.name}
    # one cell of the first patch's inner box: only that patch's image tiles are read
    y0, x0 = int(ds["y"][0]), int(ds["x"][0])
    cell = int(ds.attrs["cell_shape"][0])
    mark = http_server.mark()
    values = ds["image"].sel(y=slice(y0 + cell, y0 + 2 * cell - 1), x=slice(x0 + cell, x0 + 2 * cell - 1)).values
    log = http_server.requests_since(mark)
    reached = {r.name for r in log}
    assert len(reached) == 1, reached
    source = files[[u.rsplit("/", 1)[1] for u in urls].index(reached.pop())]
    tiles = [t for t in hdu_bytes(source, "IMAGE").tiles if t is not None]
    for request in log:
        start, stop = (int(v) for v in request.range.removeprefix("bytes=").split("-"))
        assert any(a <= start and stop < b for a, b in tiles), request  # tile bytes, no header or table
    expected = ccd.open_tract(urls)["image"].sel(y=slice(y0 + cell, y0 + 2 * cell - 1),
                                                 x=slice(x0 + cell, x0 + 2 * cell - 1)).values
    np.testing.assert_array_equal(values, expected)


def test_on_s3_the_index_sits_beside_its_patches(corpus: Path, s3_server: Any) -> None:
    files = sorted((corpus / "demo_tract").glob("*.fits"))
    prefix = f"index-{os.getpid()}"
    urls = [s3_server.upload(p, f"{prefix}/{p.name}") for p in files]
    options = s3_server.storage_options
    index = ccd.write_tract_index(urls, f"s3://{s3_server.bucket}/{prefix}/tract.idx", storage_options=options)
    with ccd.fetch_stats() as stats:
        ds = ccd.open_tract(index, storage_options=options)
    assert stats.requests <= 2
    assert ds.attrs["urls"] == urls
    expected = ccd.open_tract(urls, storage_options=options)
    np.testing.assert_array_equal(ds["image"].values, expected["image"].values)


def test_a_directory_moved_with_its_index_still_opens(corpus: Path, tmp_path: Path) -> None:
    files = _copy_tract(corpus, "tract", tmp_path / "before")
    ccd.write_tract_index(files, tmp_path / "before" / "tract.idx")
    shutil.move(tmp_path / "before", tmp_path / "after")
    ds = ccd.open_tract(tmp_path / "after" / "tract.idx")
    assert all(u.startswith(str(tmp_path / "after")) for u in ds.attrs["urls"])
    ds["image"].values  # noqa: B018 (reads every patch from its new place)


def test_a_patch_changed_since_indexing_is_refused_on_read(corpus: Path, tmp_path: Path) -> None:
    files = _copy_tract(corpus, "tract", tmp_path / "t")
    index = ccd.write_tract_index(files, tmp_path / "t" / "tract.idx")
    shutil.copyfile(files[1], files[0])  # another patch's bytes under the first patch's name
    ds = ccd.open_tract(index)  # the first patch opens from the index's bytes
    with pytest.raises(ccd.ObjectChangedError, match=r"patch_0_0\.fits"):
        ds["image"].values  # noqa: B018


def test_a_graph_through_the_index_computes_on_a_cluster(corpus: Path, tmp_path: Path, dask_client: Any) -> None:
    files = _copy_tract(corpus, "demo_tract", tmp_path / "d")
    index = ccd.write_tract_index(files, tmp_path / "d" / "tract.idx")
    ds = ccd.open_tract(index)
    got = ds["image"].sum().compute()  # workers open each patch from the bytes the graph carries
    expected = ccd.open_tract([str(p) for p in files])["image"].sum().compute(scheduler="sync")
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6)


def test_presigned_urls_are_not_indexed(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ccd.ValidationError, match="query string"):
        ccd.write_tract_index(["https://example.invalid/p.fits?X-Amz-Signature=abc"], tmp_path / "t.idx")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b"NOTANIDX" + b[8:], "bad magic"),
    (lambda b: b[:5], "shorter than its header"),
    (lambda b: b[:20], "manifest runs past the end"),
    (lambda b: b[:16] + bytes(len(b) - 16), "manifest of the tract index does not read"),
])
def test_damaged_indexes_give_typed_errors(corpus: Path, tmp_path: Path, damage: Any, message: str) -> None:
    files = _copy_tract(corpus, "tract", tmp_path / "t")
    path = Path(ccd.write_tract_index(files, tmp_path / "t" / "tract.idx"))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ArchiveFormatError, match=message) as info:
        ccd.open_tract(path)
    assert str(path) in str(info.value)


def test_a_damaged_patch_blob_is_a_typed_error_on_first_use(corpus: Path, tmp_path: Path) -> None:
    files = _copy_tract(corpus, "tract", tmp_path / "t")
    path = Path(ccd.write_tract_index(files, tmp_path / "t" / "tract.idx"))
    data = bytearray(path.read_bytes())
    data[-40:] = bytes(40)  # the end of the last patch's blob
    path.write_bytes(bytes(data))
    ds = ccd.open_tract(path)
    with pytest.raises(ArchiveFormatError):
        ds["image"].values  # noqa: B018


def test_the_command_line_writes_the_index(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cellcoadd_dask.cli import main

    files = _copy_tract(corpus, "demo_tract", tmp_path / "d")
    index = tmp_path / "d" / "tract.idx"
    assert main(["index", *map(str, files), "-o", str(index), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["index"] == str(index) and report["patches"] == len(files)
    with ccd.fetch_stats() as stats:
        ds = ccd.open_tract(index)
    assert stats.requests <= 2 and len(ds.attrs["urls"]) == len(files)
    assert main(["index", str(files[0]), str(files[0]), "-o", str(index)]) == 1  # typed error, one line
    assert "same file" in capsys.readouterr().err


def test_a_process_opens_each_indexed_patch_once_for_every_plane(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each plane's source travels to a worker with its own copies of the patch handles."""
    import pickle

    from cellcoadd_dask import open as opening
    from cellcoadd_dask import tract_source
    from cellcoadd_dask.lazy import array_source

    files = _copy_tract(corpus, "tract", tmp_path / "t")
    index = ccd.write_tract_index(files, tmp_path / "t" / "tract.idx")
    ds = ccd.open_tract(index)
    opened: list[str] = []
    original = opening.open_coadd

    def counting(url: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(url))
        return original(url, *args, **kwargs)

    monkeypatch.setattr(opening, "open_coadd", counting)
    monkeypatch.setattr(tract_source, "_opened_patches", type(tract_source._opened_patches)())
    copies = [pickle.loads(pickle.dumps(array_source(ds[name].data))) for name in ("image", "variance", "image")]
    with ccd.fetch_stats() as stats:
        for source in copies:
            source[...]  # reads every patch, as a worker would
    # A patch opened from the index bytes loads each plane's header and tile table from them:
    # the store is asked for tile bytes only.
    heaps = {str(p): [_span(hdu_bytes(p, hdu).tiles) for hdu in ("IMAGE", "VARIANCE")] for p in files}
    assert stats.ranges
    for url, start, stop in stats.ranges:
        assert any(a <= start and stop <= b for a, b in heaps[url]), (url, start, stop)
    assert sorted(opened) == sorted({str(p) for p in files if any(str(p) == h.url for h in copies[0].patches)})
    np.testing.assert_array_equal(copies[2][...], ds["image"].values)


def _span(tiles: list[tuple[int, int] | None]) -> tuple[int, int]:
    """The bytes from a plane's first tile to its last (its compressed data, no header or table)."""
    stored = [t for t in tiles if t is not None]
    return min(a for a, _ in stored), max(b for _, b in stored)
