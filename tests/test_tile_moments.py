"""Per-cell statistics reduced tile by tile as the tiles are decoded, against plain numpy.

``cell_statistics`` of a plane read straight from tile-compressed FITS reduces each tile (a
cell) while it is decoded; any other array is read in blocks and reduced with ``reduceat``.
Both must give the statistics numpy gives over the decoded pixels, read the same bytes, and
the tile path must really be the one taken.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import cellcoadd_dask as ccd
from cellcoadd_dask import cellstats
from cellcoadd_dask.lazy import array_source
from cellcoadd_dask.mask import MaskPlane, MaskSchema, combine_packed, packed_dtype
from cellcoadd_dask.moments import empty_moments, merge_moments, moments_of
from cellcoadd_dask.testing._tracts import TEST_TRACT_COVERAGE as COVERAGE

FILES = ("synthetic_3x3.fits", "synthetic_3x3_lossy.fits")


def _numpy_moments(values: np.ndarray) -> np.ndarray:
    out = empty_moments()
    if values.size:
        v = values.astype(np.float64)
        out[1:] = v.size, v.sum(), ((v - v.mean()) ** 2).sum(), v.min(), v.max()
    return out


@pytest.mark.parametrize("case", ["finite", "nan", "inf", "masked", "all-masked", "all-nan"])
def test_moments_of_a_tile_are_numpy_s(case: str) -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(3.0, 2.0, size=(150, 150)).astype(np.float32)
    valid = None
    if case == "nan":
        values[rng.random(values.shape) < 0.1] = np.nan
    elif case == "inf":
        values[3, 4], values[7, 7] = np.inf, -np.inf
    elif case == "masked":
        valid = rng.random(values.shape) > 0.3
    elif case == "all-masked":
        valid = np.zeros(values.shape, bool)
    elif case == "all-nan":
        values[...] = np.nan
    got = moments_of(values, valid)
    keep = np.isfinite(values) & (True if valid is None else valid)
    expected = _numpy_moments(values[keep])
    assert got[0] == values.size
    np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-12)


def test_merged_moments_are_those_of_the_union() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=1000), rng.normal(5.0, 3.0, size=333)
    merged = merge_moments(moments_of(a), moments_of(b))
    expected = _numpy_moments(np.concatenate([a, b]))
    expected[0] = a.size + b.size
    np.testing.assert_allclose(merged, expected, rtol=1e-12)
    nothing = empty_moments()
    np.testing.assert_array_equal(merge_moments(moments_of(a), nothing)[1:], moments_of(a)[1:])


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("region", [(slice(0, 450), slice(0, 450)), (slice(37, 401), slice(5, 333))])
def test_tile_moments_of_a_stored_plane(reference_dir: Path, name: str, region: tuple[slice, slice]) -> None:
    ds = ccd.open_coadd(reference_dir / name).to_xarray()
    source = array_source(ds["image"].data)
    assert source is not None
    found = source.tile_moments(region)
    assert found is not None
    moments, y_edges, x_edges = found
    pixels = ds["image"].values[region]
    assert y_edges[0] == 0 and y_edges[-1] == pixels.shape[0] and x_edges[-1] == pixels.shape[1]
    for i in range(len(y_edges) - 1):
        for j in range(len(x_edges) - 1):
            part = pixels[y_edges[i] : y_edges[i + 1], x_edges[j] : x_edges[j + 1]]
            expected = _numpy_moments(part[np.isfinite(part)])
            assert moments[0, i, j] == part.size
            np.testing.assert_allclose(moments[1:, i, j], expected[1:], rtol=1e-12)
    # Tiles start on multiples of the tile size (the region's own start aside).
    assert all((region[0].start + e) % 150 == 0 for e in y_edges[1:-1])


def _unregistered(ds: xr.Dataset) -> xr.Dataset:
    """The same Dataset whose planes are computations, not stored planes: read by blocks."""
    out = ds.copy()
    for name in ("image", "variance"):
        out[name] = ds[name] + 0
    return out


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("exclude", [(), ("NO_DATA",), ("NO_DATA", "DETECTED")])
def test_tile_and_block_statistics_agree(reference_dir: Path, name: str, exclude: tuple[str, ...]) -> None:
    ds = ccd.open_coadd(reference_dir / name).to_xarray()
    for variable in ("image", "variance"):
        tiles = ccd.cell_statistics(ds, variable, exclude=exclude)
        blocks = ccd.cell_statistics(_unregistered(ds), variable, exclude=exclude)
        for key in ("pixels", "count", "min", "max"):
            xr.testing.assert_equal(tiles[key], blocks[key])
        for key in ("sum", "mean", "std"):
            xr.testing.assert_allclose(tiles[key], blocks[key], rtol=1e-12)


def test_statistics_of_stored_planes_reduce_tiles_not_blocks(
    reference_dir: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = reference_dir / "synthetic_3x3_lossy.fits"
    block_moments = cellstats._block_moments
    with ccd.fetch_stats() as read:
        ccd.open_coadd(path).to_xarray()["image"].compute()

    def refuse(*args: object) -> None:
        raise AssertionError("a block of a stored plane was read and reduced whole")

    monkeypatch.setattr(cellstats, "_block_moments", refuse)
    with ccd.fetch_stats() as reduced:
        stats = ccd.cell_statistics(ccd.open_coadd(path).to_xarray(), "image", exclude=())
    assert reduced.nbytes == read.nbytes  # the same tiles, nothing more
    assert int(stats["count"].sum()) > 0
    tract = ccd.open_tract([str(corpus / "tract" / f"patch_{i}_{j}.fits") for i, j in sorted(COVERAGE)])
    # A tract's chunks each lie in one patch: every chunk a patch's file covers is reduced by
    # tiles; only chunks holding fill (the missing patch, a file covering part of its inner box)
    # are read whole.
    monkeypatch.setattr(cellstats, "_block_moments", _fill_only(block_moments))
    stats = tract.cellcoadd.cell_statistics("variance")
    assert (stats["count"] == 0).any() and (stats["count"] > 0).any()


def _fill_only(original: object) -> object:
    def check(values: np.ndarray, *args: object) -> np.ndarray:
        assert not np.isfinite(values).all(), "a block of stored pixels only was read and reduced whole"
        return original(values, *args)  # type: ignore[operator]

    return check


def test_packed_masks_move_bits_by_groups() -> None:
    names = [f"P{k}" for k in range(40)]  # two int32 arrays on disk, the sign bit used
    schema = MaskSchema([MaskPlane(n, "") for n in names])
    rng = np.random.default_rng(9)
    arrays = [rng.integers(-(2**31), 2**31, size=(64, 48), dtype=np.int64).astype(np.int32) for _ in range(2)]
    got = combine_packed(schema, arrays, (slice(0, 64), slice(0, 48)))
    dtype = packed_dtype(schema)
    expected = np.zeros((64, 48), dtype=dtype)
    for k, (d_arr, d_bit, _, _) in enumerate(schema.disk_positions()):
        plane = ((arrays[d_arr].astype(np.int64) >> d_bit) & 1).astype(dtype)
        expected |= plane << dtype.type(schema.index(schema.names[k]))
    np.testing.assert_array_equal(got, expected)



@pytest.mark.parametrize("method", ["SUBTRACTIVE_DITHER_1", "SUBTRACTIVE_DITHER_2"])
@pytest.mark.parametrize(("zdither0", "tile"), [(1, 0), (4242, 17), (9999, 1), (10000, 9999)])
def test_dither_offsets_are_cfitsio_s(method: str, zdither0: int, tile: int) -> None:
    """Values restored with our dither sequence are astropy's (CFITSIO's) bit for bit."""
    from cellcoadd_dask.archives.fits._astropy_codecs import unquantize_dithered
    from cellcoadd_dask.archives.fits.dither import dither_offsets

    q = np.random.default_rng(zdither0 + tile).integers(-40_000, 40_000, size=22_500).astype(np.int32)
    scale, zero = 0.0371, -2.5
    expected = unquantize_dithered(q, method=method, zdither0=zdither0, tile_index=tile, zscale=scale, zzero=zero,
                                   zblank=None, dtype=np.dtype(np.float32))
    restored = (((q - dither_offsets(zdither0 + tile, q.size)) + 0.5) * scale + zero).astype(np.float32)
    np.testing.assert_array_equal(restored, expected)


def test_quantized_sums_are_those_of_the_restored_values() -> None:
    from cellcoadd_dask.archives.fits._astropy_codecs import unquantize_dithered
    from cellcoadd_dask.archives.fits.dither import ZERO_VALUE, quantized_sum

    q = np.random.default_rng(3).integers(-9_000, 9_000, size=150 * 150).astype(np.int32)
    kwargs = {"zscale": 0.013, "zzero": 7.0, "zblank": -2_147_483_647}
    restored = unquantize_dithered(q, method="SUBTRACTIVE_DITHER_1", zdither0=77, tile_index=5,
                                   dtype=np.dtype(np.float32), **kwargs)
    count, total = quantized_sum(q, dithered=True, keeps_zeros=False, dither_seed=82, **kwargs)
    assert count == q.size
    np.testing.assert_allclose(total, restored.astype(np.float64).sum(), rtol=1e-7)
    count, plain = quantized_sum(q, dithered=False, keeps_zeros=False, dither_seed=0, **kwargs)
    assert plain == pytest.approx(0.013 * q.astype(np.float64).sum() + q.size * 7.0)
    # Undefined pixels are left out, exact zeros add nothing (quantized integers start near the
    # bottom of int32, where the integers of these two are).
    for method, keeps_zeros in (("SUBTRACTIVE_DITHER_1", False), ("SUBTRACTIVE_DITHER_2", True)):
        low = q.astype(np.int64) - 2_147_483_637 - q.min()
        marked = low.astype(np.int32)
        marked[[100, 7000]] = -2_147_483_647
        marked[[5, 22_499]] = ZERO_VALUE if keeps_zeros else marked[[5, 22_499]]
        restored = unquantize_dithered(marked, method=method, zdither0=77, tile_index=5,
                                       dtype=np.dtype(np.float32), **kwargs)
        count, total = quantized_sum(marked, dithered=True, keeps_zeros=keeps_zeros, dither_seed=82, **kwargs)
        assert count == np.isfinite(restored).sum() == q.size - 2
        if keeps_zeros:
            assert (restored[[5, 22_499]] == 0).all()
        np.testing.assert_allclose(total, np.nansum(restored.astype(np.float64)), rtol=1e-7)


@pytest.mark.parametrize("exclude", [(), ("NO_DATA",)])
def test_means_alone_of_a_lossy_plane_are_summed_from_its_integers(
    reference_dir: Path, monkeypatch: pytest.MonkeyPatch, exclude: tuple[str, ...]
) -> None:
    from cellcoadd_dask.archives.fits import tiles

    ds = ccd.open_coadd(reference_dir / "synthetic_3x3_lossy.fits").to_xarray()
    every = ccd.cell_statistics(ds, "image", exclude=exclude)
    restored = []
    original = tiles.TiledArray.decode_tile

    def counting(self: tiles.TiledArray, number: int, parts: object) -> np.ndarray:
        restored.append(number)
        return original(self, number, parts)  # type: ignore[arg-type]

    monkeypatch.setattr(tiles.TiledArray, "decode_tile", counting)
    means = ds.cellcoadd.cell_statistics("image", exclude=exclude, statistics=["mean", "count"])
    assert list(means.data_vars) == ["mean", "count"]
    xr.testing.assert_equal(means["count"], every["count"])
    scale = float(np.abs(every["max"]).max())
    np.testing.assert_allclose(means["mean"], every["mean"], rtol=0, atol=1e-6 * scale)
    # Only tiles with pixels left out by the mask, or stored losslessly (a missing cell), are
    # restored pixel by pixel.
    source = array_source(ds["image"].data)
    assert source is not None
    lossless = int((source.layouts()[0].data[:, 1] == 0).sum())
    left_out = int(((every["count"] < every["pixels"]) & (every["count"] > 0)).sum()) if exclude else 0
    assert 0 < len(restored) <= lossless + left_out < every.sizes["cell_i"] * every.sizes["cell_j"]


def test_unknown_statistics_are_refused(reference_dir: Path) -> None:
    ds = ccd.open_coadd(reference_dir / "synthetic_3x3.fits").to_xarray()
    assert list(ccd.cell_statistics(ds, "image", statistics="mean").data_vars) == ["mean"]
    with pytest.raises(ccd.ValidationError, match="'median'"):
        ccd.cell_statistics(ds, "image", statistics=["mean", "median"])


@pytest.mark.parametrize("share", [0.0, 0.125, 1.0])
def test_a_reduction_reads_rows_of_tiles_in_one_request_within_its_share(reference_dir: Path, share: float) -> None:
    import dask

    path = reference_dir / "synthetic_3x3.fits"
    source = array_source(ccd.open_coadd(path, preload=True).to_xarray()["variance"].data)
    assert source is not None
    region = (slice(0, 450), slice(0, 300))  # two of each row's three cells: rows are apart by one tile
    with dask.config.set({"cellcoadd.fetch.reduction_share": share}), ccd.fetch_stats() as stats:
        moments, _, _ = source.tile_moments(region)
    exact = sum(b - a for a, b in source.layouts()[0].byte_ranges(region))
    assert exact <= stats.nbytes <= exact * (1 + share)
    if share == 0.0:
        assert (stats.requests, stats.nbytes) == (3, exact)  # one per row, not a byte more
    if share == 1.0:
        assert stats.requests == 1  # the two tiles between the rows are read and dropped
    np.testing.assert_array_equal(moments[1], 150 * 150)  # every tile reduced, the gaps left out
