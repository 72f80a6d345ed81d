"""``open_tract``: the patch files of a tract as one lazy Dataset on the tract grid.

A small tract written with lsst-images (the corpus' ``tract/``): 2x2 patches whose inner boxes are 3x3 cells of
20 px, each with a one-cell border that overlaps its neighbours, sharing one tract frame.
Patch (0, 0) is written over its whole outer grid (so the tract must cut it to its inner
box) with one missing cell; (0, 1) over its inner box; (1, 0) over only part of its inner
box; (1, 1) is not written.  Values are compared with lsst-images' own read of each file,
byte ranges with astropy's view of each file.

Coordinates are absolute (tract) pixel indices, ``(y, x)`` order, half-open boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from oracle import assert_identical, fits_layout, hdu_bytes, lsst_read

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import FetchStats, fetch_stats
from cellcoadd_dask.testing._tracts import TEST_CELL as CELL
from cellcoadd_dask.testing._tracts import TEST_PLANES as PLANES
from cellcoadd_dask.testing._tracts import TEST_TRACT_COVERAGE as COVERAGE
from cellcoadd_dask.testing._tracts import make_test_tract_patch as make_patch
from cellcoadd_dask.testing._tracts import tract_inner_box as _inner

TRACT = ((0, 120), (0, 120))


@pytest.fixture(scope="module")
def tract_files(corpus: Path) -> dict[tuple[int, int], Path]:
    """The written patches of the test tract (from the generated corpus), by patch index ((1, 1) is missing)."""
    return {index: corpus / "tract" / f"patch_{index[0]}_{index[1]}.fits" for index in sorted(COVERAGE)}


def _write(path: Path, coadd: Any) -> str:
    coadd.write(str(path))
    return str(path)


def _box(intervals: tuple[tuple[int, int], ...]) -> Any:
    from lsst.images import Box

    (y0, y1), (x0, x1) = intervals
    return Box.factory[y0:y1, x0:x1]


def _overlap(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...] | None:
    out = tuple((max(p[0], q[0]), min(p[1], q[1])) for p, q in zip(a, b, strict=True))
    return None if any(lo >= hi for lo, hi in out) else out


def _region(ds: xr.Dataset, intervals: tuple[tuple[int, int], ...]) -> xr.Dataset:
    (y0, y1), (x0, x1) = intervals
    return ds.sel(y=slice(y0, y1 - 1), x=slice(x0, x1 - 1))


# ----------------------------------------------------------------------------- layout and values


def test_dims_coords_and_attrs_cover_the_inner_boxes(tract_files: dict[tuple[int, int], Path]) -> None:
    ds = ccd.open_tract([str(p) for p in tract_files.values()])
    (y0, y1), (x0, x1) = TRACT
    np.testing.assert_array_equal(ds["y"].values, np.arange(y0, y1, dtype=np.int64))
    np.testing.assert_array_equal(ds["x"].values, np.arange(x0, x1, dtype=np.int64))
    assert ds["y"].dtype == np.int64 and ds["x"].dtype == np.int64
    assert ds["image"].dims == ("y", "x") and ds["mask"].dims == ("y", "x")
    assert ds["mask_fractions"].dims == ("fraction", "y", "x")
    assert list(ds["fraction"].values) == ["frac0"]
    assert ds.sizes["realization"] == 1
    ref = lsst_read(str(tract_files[(0, 0)]))
    assert (ds.attrs["skymap"], ds.attrs["tract"], ds.attrs["band"]) == ("tiny_tract_v1", 7, "i")
    assert ds.attrs["cell_shape"] == [CELL, CELL]
    assert ds.attrs["patches"] == [0, 1, 2]
    assert ds.attrs["urls"] == [str(tract_files[k]) for k in sorted(tract_files)]
    assert ds["mask"].attrs["flag_meanings"].split() == list(ref.mask.schema.names)
    assert ds["image"].attrs["units"] == "nJy"
    # Chunks fall on cell edges.
    for axis, start in ((0, y0), (1, x0)):
        edges = start + np.cumsum(ds["image"].data.chunks[axis])
        assert np.all((edges - start) % CELL == 0)
    # The tract frame's projection gives the sky positions of tract pixels, as lsst-images does.
    ys, xs = np.array([0.0, 70.0, 119.0]), np.array([5.0, 64.0, 110.0])
    ours = ds.cellcoadd.pixel_to_sky(y=ys, x=xs)
    expected = ref.sky_projection.pixel_to_sky(x=xs, y=ys)
    assert np.allclose(ours.ra.deg, expected.ra.deg, rtol=0, atol=1e-12)
    assert np.allclose(ours.dec.deg, expected.dec.deg, rtol=0, atol=1e-12)
    # The WCS is that of the Dataset's array grid, which starts at tract pixel (0, 0).
    local = ds.cellcoadd.wcs.pixel_to_world(xs - x0, ys - y0)
    assert np.allclose(local.ra.deg, expected.ra.deg, rtol=0, atol=1e-12)
    assert np.allclose(local.dec.deg, expected.dec.deg, rtol=0, atol=1e-12)


def test_each_patch_region_equals_lsst_images(tract_files: dict[tuple[int, int], Path]) -> None:
    ds = ccd.open_tract([str(p) for p in tract_files.values()], chunks="cell")
    for index, path in tract_files.items():
        whole = lsst_read(str(path))
        b = whole.bbox
        covered = _overlap(_inner(index), ((b.y.start, b.y.stop), (b.x.start, b.x.stop)))
        assert covered is not None
        ref = whole[_box(covered)]
        part = _region(ds, covered).compute()
        what = f"patch {index}"
        assert_identical(part["image"].values, ref.image.array, f"{what}: image")
        assert_identical(part["variance"].values, ref.variance.array, f"{what}: variance")
        assert_identical(part["mask_fractions"].values[0], ref.mask_fractions["frac0"].array, f"{what}: frac0")
        assert_identical(part["noise_realizations"].values[0], ref.noise_realizations[0].array, f"{what}: noise")
        for name in PLANES:
            assert_identical(part.cellcoadd.mask_plane(name).values, ref.mask.get(name), f"{what}: mask {name}")


def test_tract_chunks_read_the_patch_archives_directly(
    tract_files: dict[tuple[int, int], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tract chunk reads each patch's tiles straight from its archive: no graph is built inside the task."""
    import cellcoadd_dask.tract_source as tract_source

    urls = [str(p) for p in tract_files.values()]
    expected = ccd.open_tract(urls).compute()

    def no_nested_graph(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a tract chunk built a dask graph of a patch plane")

    monkeypatch.setattr(tract_source.PatchHandle, "plane", no_nested_graph)
    ds = ccd.open_tract(urls)
    for name in ("image", "variance", "mask", "mask_fractions", "noise_realizations"):
        assert_identical(ds[name].values, expected[name].values, name)
    coadd = ccd.open_coadd(urls[0])
    for spec in ("image", "variance", "mask", "mask-elements", "fraction:frac0", "noise:0"):
        source = tract_source.source_of(coadd, spec)
        assert source is not None, spec
        assert source.shape == tract_source.plane_of(coadd, spec).shape, spec
    # A window of the opened patch (the coadd is not sliced) reads what the sliced coadd does.
    y0, x0 = coadd.bbox.y.start, coadd.bbox.x.start
    box = ccd.Box.factory[y0 + 10:y0 + 60, x0 + 7:x0 + 49]
    for spec in ("image", "variance", "mask", "mask-elements", "fraction:frac0", "noise:0"):
        window = tract_source.source_of(coadd, spec, box)
        assert window is not None, spec
        assert_identical(np.asarray(window[...]), tract_source.plane_of(coadd[box], spec).compute(), spec)
    outside = ccd.Box.factory[coadd.bbox.y.stop - 10:coadd.bbox.y.stop + 10, x0:x0 + 5]
    for spec in ("image", "mask"):
        with pytest.raises(ccd.BoundsError):
            tract_source.source_of(coadd, spec, outside)


def _assert_fill(part: xr.Dataset, what: str) -> None:
    assert part.sizes["y"] > 0 and part.sizes["x"] > 0
    assert np.all(np.isnan(part["image"].values)), what
    assert np.all(np.isposinf(part["variance"].values)), what
    assert np.all(np.isnan(part["noise_realizations"].values)), what
    assert np.all(part["mask_fractions"].values == 0.0), what
    assert np.all(part["mask"].values == 1), what  # NO_DATA is schema bit 0
    assert part.cellcoadd.mask_plane("NO_DATA").values.all(), what
    for name in PLANES[1:]:
        assert not part.cellcoadd.mask_plane(name).values.any(), f"{what}: {name}"


def test_missing_patch_and_uncovered_cells_hold_the_fill(tract_files: dict[tuple[int, int], Path]) -> None:
    ds = ccd.open_tract([str(p) for p in tract_files.values()])
    _assert_fill(_region(ds, _inner((1, 1))).compute(), "missing patch (1, 1)")
    # Patch (1, 0) covers only the first two of its three inner cell columns.
    (y0, y1), (_, x1) = _inner((1, 0))
    _assert_fill(_region(ds, ((y0, y1), (x1 - CELL, x1))).compute(), "uncovered column of patch (1, 0)")
    # The whole tract in one compute: data where covered, fill elsewhere.
    image = ds["image"].values
    assert np.isnan(image).sum() == 60 * 60 + 60 * 20


def test_an_empty_selection_is_empty_and_reads_nothing(tract_files: dict[tuple[int, int], Path]) -> None:
    ds = ccd.open_tract([str(p) for p in tract_files.values()])
    with ccd.fetch_stats() as stats:
        assert ds.image.isel(y=slice(0, 0)).compute().shape == (0, ds.sizes["x"])
        assert ds.mask_fractions.isel(x=slice(5, 5)).compute().shape == (ds.sizes["fraction"], ds.sizes["y"], 0)
    assert stats.requests == 0


# ----------------------------------------------------------------------------- what is read


def _tile_bytes(path: Path) -> list[tuple[int, int]]:
    return [t for hdu in fits_layout(path) for t in hdu.tiles if t is not None]


def test_opening_reads_metadata_only(tract_files: dict[tuple[int, int], Path]) -> None:
    urls = [str(p) for p in tract_files.values()]
    with fetch_stats() as stats:
        ds = ccd.open_tract(urls)
        ds.cellcoadd.wcs  # noqa: B018 (the accessor reads nothing either)
    assert {url for url, _, _ in stats.ranges} == set(urls)
    assert stats.calls <= 2 * len(urls)
    for url in urls:
        tiles = _tile_bytes(Path(url))
        for u_, a, b in stats.ranges:
            if u_ == url:
                assert not [t for t in tiles if a < t[1] and t[0] < b], f"{url}: tile bytes read at open"


def _byte_mask(stats: FetchStats, url: str, size: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    for u_, a, b in stats.ranges:
        if u_ == url:
            mask[a:b] = True
    return mask


READS: dict[str, tuple[str, Any]] = {
    "image": ("IMAGE", lambda part: part["image"].values),
    "mask": ("MASK", lambda part: part.cellcoadd.mask_plane("DETECTED").values),
    "variance": ("VARIANCE", lambda part: part["variance"].values),
    "mask_fractions": ("MASK_FRACTIONS/FRAC0", lambda part: part["mask_fractions"].isel(fraction=0).values),
    "noise_realizations": ("NOISE_REALIZATIONS/0", lambda part: part["noise_realizations"].isel(realization=0).values),
}


def _lsst_plane(ref: Any, name: str) -> np.ndarray:
    if name == "mask":
        return np.asarray(ref.mask.get("DETECTED"))
    if name == "mask_fractions":
        return np.asarray(ref.mask_fractions["frac0"].array)
    if name == "noise_realizations":
        return np.asarray(ref.noise_realizations[0].array)
    return np.asarray(getattr(ref, name).array)


@pytest.mark.parametrize("name", sorted(READS))
@pytest.mark.parametrize("chunks", ["auto", "cell"])
def test_one_cell_slice_reads_only_that_cells_tile(
    tract_files: dict[tuple[int, int], Path], chunks: str, name: str
) -> None:
    urls = [str(p) for p in tract_files.values()]
    ds = ccd.open_tract(urls, chunks=chunks)
    # Patch (0, 1): file bbox = inner box [0:60, 60:120]; its middle cell is [20:40, 80:100].
    path = tract_files[(0, 1)]
    extname, select = READS[name]
    hdu = hdu_bytes(path, extname)
    tile = hdu.tile_of((25, 25))
    assert hdu.tile_of((22, 21)) == tile and hdu.tile_of((38, 38)) == tile
    ref = _lsst_plane(lsst_read(str(path)), name)[22:39, 21:39]
    with fetch_stats() as stats:
        values = select(ds.sel(y=slice(22, 38), x=slice(81, 98)))
    assert_identical(values, ref, f"one-cell slice of {name}")
    assert {u_ for u_, _, _ in stats.ranges} == {str(path)}
    size = path.stat().st_size
    fetched = _byte_mask(stats, str(path), size)
    allowed = np.zeros(size, dtype=bool)
    allowed[hdu.header[0] : hdu.table[1]] = True
    start, stop = hdu.tiles[tile]  # type: ignore[misc]
    allowed[start:stop] = True
    assert fetched[start:stop].all(), f"{extname}: the cell's tile was not read"
    assert not (fetched & ~allowed).any(), f"{extname}: bytes outside the cell's tile and the HDU's metadata were read"


# ----------------------------------------------------------------------------- inconsistent inputs


def test_mismatched_band_names_the_file(tract_files: dict[tuple[int, int], Path], tmp_path: Path) -> None:
    odd = _write(tmp_path / "r_band.fits", make_patch((1, 1), seed=9, band="r"))
    with pytest.raises(ccd.ValidationError, match=r"r_band\.fits.*'band'"):
        ccd.open_tract([*map(str, tract_files.values()), odd])


def test_mismatched_cell_shape_names_the_file(tract_files: dict[tuple[int, int], Path], tmp_path: Path) -> None:
    odd = _write(tmp_path / "small_cells.fits", make_patch((1, 1), seed=9, cell=10))
    with pytest.raises(ccd.ValidationError, match=r"small_cells\.fits.*'cell shape'"):
        ccd.open_tract([*map(str, tract_files.values()), odd])


def test_mismatched_fractions_name_the_file(tract_files: dict[tuple[int, int], Path], tmp_path: Path) -> None:
    odd = _write(tmp_path / "two_fractions.fits", make_patch((1, 1), seed=9, fractions=2))
    with pytest.raises(ccd.ValidationError, match=r"two_fractions\.fits.*'mask fractions'"):
        ccd.open_tract([*map(str, tract_files.values()), odd])


def test_two_files_of_one_patch_name_both(tract_files: dict[tuple[int, int], Path], tmp_path: Path) -> None:
    twin = _write(tmp_path / "twin.fits", make_patch((0, 1), seed=11))
    with pytest.raises(ccd.ValidationError) as info:
        ccd.open_tract([*map(str, tract_files.values()), twin])
    assert str(tract_files[(0, 1)]) in str(info.value) and "twin.fits" in str(info.value)


def test_same_file_twice_is_refused(tract_files: dict[tuple[int, int], Path]) -> None:
    path = str(tract_files[(0, 0)])
    with pytest.raises(ccd.ValidationError, match="same file"):
        ccd.open_tract([path, str(tract_files[(0, 1)]), path])


def test_no_urls_is_refused() -> None:
    with pytest.raises(ccd.ValidationError):
        ccd.open_tract([])


def test_a_tract_opened_from_files_computes_on_a_cluster(corpus: Path, dask_client: Any) -> None:
    """Patches are built from their containers where a read first touches them (here: the workers)."""
    files = sorted(str(p) for p in (corpus / "demo_tract").glob("*.fits"))
    ds = ccd.open_tract(files)
    got = ds["image"].sum().compute()
    expected = ds["image"].sum().compute(scheduler="sync")
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    assert np.isfinite(float(got))


def test_a_process_builds_each_patch_of_a_tract_from_files_once_for_every_plane(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each plane's source carries its own copies of the patch handles, as on a worker."""
    import pickle

    from cellcoadd_dask import tract_patches, tract_source
    from cellcoadd_dask.lazy import array_source

    ds = ccd.open_tract([str(corpus / "tract" / f"patch_{i}_{j}.fits") for i, j in sorted(COVERAGE)])
    blobs = [pickle.dumps(array_source(ds[name].data)) for name in ("image", "variance", "image")]
    built: list[str] = []
    original = tract_patches.build_from_container

    def counting(container: Any, *args: Any) -> Any:
        built.append(container.url)
        return original(container, *args)

    monkeypatch.setattr(tract_patches, "build_from_container", counting)  # what the copies' openers call
    monkeypatch.setattr(tract_source, "_opened_patches", type(tract_source._opened_patches)())
    copies = [pickle.loads(blob) for blob in blobs]
    assert all(h.opened_key for h in copies[0].patches)  # a key made once at opening, not the opener's token
    for source in copies:
        source[...]
    assert built and sorted(built) == sorted({h.url for h in copies[0].patches if h.covered is not None})
    np.testing.assert_array_equal(copies[2][...], ds["image"].values)


def test_the_overlap_sweep_finds_the_pair_every_pair_check_finds() -> None:
    import itertools
    import random

    from cellcoadd_dask.tract import _first_overlap

    rng = random.Random(7)
    for _ in range(300):
        boxes = []
        for _ in range(rng.randint(0, 12)):
            y0, x0 = rng.randint(0, 60), rng.randint(0, 60)
            boxes.append(ccd.Box.factory[y0:y0 + rng.randint(1, 25), x0:x0 + rng.randint(1, 25)])
        expected = next(((i, j) for i, j in itertools.combinations(range(len(boxes)), 2)
                         if boxes[i].intersection(boxes[j]) is not None), None)
        assert _first_overlap(boxes) == expected
