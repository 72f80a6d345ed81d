"""The direct reader of layout-2 sharded arrays: equal to zarr-python's reads, strict on damaged shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import cellcoadd_dask as ccd
from cellcoadd_dask.archives.zarr.shards import ShardedArray, plan


@pytest.fixture(scope="module")
def archive(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shards") / "small-shards.zarr"
    coadd = ccd.open_coadd(reference_dir / "synthetic_3x3.fits")
    # Small shards (2 x 2 cells) so that regions cross shard edges and a cell-less shard exists.
    from cellcoadd_dask.archives.zarr.writer import write_zarr

    write_zarr(coadd, path, keep_bits=None)
    small = path.with_name("two-by-two.zarr")
    from cellcoadd_dask.archives.output import write_with
    from cellcoadd_dask.archives.zarr.writer import ZarrOutputArchive

    write_with(ZarrOutputArchive(str(small), shard_bytes=4 * 150 * 150 * 4), coadd)
    return small


def _sharded(path: Path, name: str) -> tuple[ShardedArray, zarr.Array]:
    group = zarr.open_group(str(path), mode="r")
    array = group[name]
    shard_plan = plan(array.metadata.to_dict())
    assert shard_plan is not None, name
    return ShardedArray(str(path), name, shard_plan, None), array


@pytest.mark.parametrize("name", ["image", "variance", "mask", "psf", "mask_fractions/rejected"])
def test_regions_equal_zarr_python(archive: Path, name: str) -> None:
    fast, array = _sharded(archive, name)
    assert fast.plan.shard[0] < array.shape[0] or name not in ("image", "variance")
    rng = np.random.default_rng(5)
    regions = [tuple(slice(0, n) for n in array.shape)]
    for _ in range(12):
        region = []
        for n in array.shape:
            a, b = sorted(rng.integers(0, n + 1, size=2))
            region.append(slice(int(a), int(max(b, a + 1)) if a < n else n))
        regions.append(tuple(region))
    for region in regions:
        np.testing.assert_array_equal(fast.read(region), array[region], err_msg=f"{name} {region}")


def test_plan_refuses_what_it_does_not_read(archive: Path, tmp_path: Path) -> None:
    group = zarr.open_group(str(archive), mode="r")
    metadata = group["image"].metadata.to_dict()
    assert plan(metadata) is not None
    assert plan({**metadata, "codecs": [{"name": "bytes"}]}) is None
    assert plan({**metadata, "data_type": "complex64"}) is None
    assert plan(None) is None
    old = tmp_path / "layout1.zarr"
    from cellcoadd_dask.archives.zarr.writer import write_zarr

    write_zarr(ccd.open_coadd(archive), old, layout=1)
    assert plan(zarr.open_group(str(old), mode="r")["image"].metadata.to_dict()) is None


def _damage(archive: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    copy = tmp_path / f"{how}.zarr"
    shutil.copytree(archive, copy)
    shard = copy / "image" / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    if how == "chunk":
        raw[10] ^= 0xFF
    elif how == "index":
        raw[-10] ^= 0xFF
    elif how == "truncated":
        raw = raw[: len(raw) // 2]
    shard.write_bytes(bytes(raw))
    return copy


@pytest.mark.parametrize("how", ["chunk", "index", "truncated"])
def test_damaged_shards_are_typed_errors_naming_the_array(archive: Path, tmp_path: Path, how: str) -> None:
    copy = _damage(archive, tmp_path, how)
    coadd = ccd.open_coadd(copy)
    with pytest.raises(ccd.ArchiveFormatError) as info:
        coadd.image.array.compute(scheduler="sync")
    assert "'image'" in str(info.value) and str(copy) in str(info.value)
    # Other planes are untouched.
    coadd.variance.array.compute(scheduler="sync")
