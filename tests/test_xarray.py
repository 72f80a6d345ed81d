"""The xarray view: ``coadd.to_xarray()``, the ``cellcoadd`` engine and the ``ds.cellcoadd`` accessor.

Three ways to get the Dataset must agree (``open_coadd(...).to_xarray()``,
``xr.open_dataset(path, engine="cellcoadd", chunks={})`` and the same without ``chunks``),
stay lazy (opening reads metadata only; a small selection reads only the tiles it
touches, located with astropy), and hold what lsst-images reads from the same file:
planes, mask planes, PSF kernels, units, identity, sky coordinates.

Coordinates are absolute (tract) pixel indices, ``(y, x)`` order, half-open boxes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pytest
import xarray as xr
from oracle import (
    HduBytes,
    assert_identical,
    assert_planes_match,
    assert_psf_match,
    assert_table_match,
    bounds_of,
    cells_with_data,
    fits_layout,
    hdu_bytes,
    intervals,
    lsst_read,
)

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import FetchStats, fetch_stats
from cellcoadd_dask.xarray_backend import CellCoaddBackendEntrypoint

FILES = (
    "synthetic_3x3.fits",
    "synthetic_3x3_offset_cutout.fits",
    "many_planes.fits",
    "min_default.fits",
)
VIEWS = ("to_xarray", "engine_dask", "engine_lazy")
PLANES_2D = ("image", "mask", "variance")


def open_view(view: str, path: Path, **kwargs: Any) -> xr.Dataset:
    """The Dataset of ``path`` made one of the three public ways."""
    if view == "to_xarray":
        return ccd.open_coadd(path, **kwargs).to_xarray()
    backend_kwargs = {"cell_chunks": kwargs["chunks"]} if "chunks" in kwargs else {}
    if view == "engine_dask":
        return xr.open_dataset(path, engine="cellcoadd", chunks={}, **backend_kwargs)
    assert view == "engine_lazy"
    return xr.open_dataset(path, engine="cellcoadd", **backend_kwargs)


@pytest.fixture(params=FILES)
def path(request: pytest.FixtureRequest, reference_dir: Path) -> Path:
    return reference_dir / request.param


@pytest.fixture(params=VIEWS)
def view(request: pytest.FixtureRequest) -> str:
    return request.param


def _values(ds: xr.Dataset) -> dict[str, np.ndarray]:
    computed = ds.compute()
    return {name: np.asarray(var.values) for name, var in computed.data_vars.items()}


# ----------------------------------------------------------------------------- one Dataset, three ways


def test_to_xarray_and_engine_give_the_same_dataset(path: Path) -> None:
    ref = lsst_read(str(path))
    (y0, y1), (x0, x1) = intervals(ref.bbox)
    datasets = {view: open_view(view, path) for view in VIEWS}
    expected = datasets["to_xarray"]
    assert set(expected.data_vars) >= {"image", "mask", "variance", "psf"}
    expected_values = _values(expected)
    for view, ds in datasets.items():
        assert set(ds.data_vars) == set(expected.data_vars), view
        assert dict(ds.sizes) == dict(expected.sizes), view
        for name, var in ds.data_vars.items():
            assert var.dims == expected[name].dims, f"{view}: {name}"
            assert var.dtype == expected[name].dtype, f"{view}: {name}"
        for name in ("y", "x"):
            assert ds[name].dtype == np.int64, f"{view}: {name}"
        np.testing.assert_array_equal(ds["y"].values, np.arange(y0, y1, dtype=np.int64))
        np.testing.assert_array_equal(ds["x"].values, np.arange(x0, x1, dtype=np.int64))
        for name in expected.coords:
            np.testing.assert_array_equal(ds[name].values, expected[name].values, err_msg=f"{view}: {name}")
        for name, values in _values(ds).items():
            assert_identical(values, expected_values[name], f"{view}: {name}")
        for name in expected.attrs:
            assert ds.attrs[name] == expected.attrs[name], f"{view}: attr {name}"


def test_engine_is_lazy_with_and_without_chunks(reference_dir: Path) -> None:
    path = reference_dir / "synthetic_3x3.fits"
    dask_ds = xr.open_dataset(path, engine="cellcoadd", chunks={})
    lazy_ds = xr.open_dataset(path, engine="cellcoadd")
    for name in dask_ds.data_vars:
        assert dask_ds[name].chunks is not None, name
        assert lazy_ds[name].chunks is None, name
        assert not isinstance(lazy_ds[name].variable._data, np.ndarray), name


# ----------------------------------------------------------------------------- chunks on cell edges


def _edges(start: int, sizes: tuple[int, ...]) -> list[int]:
    return [start, *(start + int(v) for v in np.cumsum(sizes))]


@pytest.mark.parametrize("chunks", ["auto", "cell", (2, 1)], ids=["auto", "cell", "2x1"])
@pytest.mark.parametrize("view", ["to_xarray", "engine_dask"])
def test_chunks_of_every_variable_fall_on_cell_edges(path: Path, view: str, chunks: Any) -> None:
    ref = lsst_read(str(path))
    ds = open_view(view, path, chunks=chunks)
    (gy, _), (gx, _) = intervals(ref.grid.bbox)
    cy, cx = int(ref.grid.cell_shape.y), int(ref.grid.cell_shape.x)
    per_chunk = {"cell": (1, 1), "auto": None}.get(chunks) if isinstance(chunks, str) else chunks
    for name, var in ds.data_vars.items():
        assert var.chunks is not None, name
        sizes = dict(zip(var.dims, var.chunks, strict=True))
        if name == "psf":
            assert sizes["psf_y"] == (var.sizes["psf_y"],) and sizes["psf_x"] == (var.sizes["psf_x"],)
            continue
        for axis, origin, cell in (("y", gy, cy), ("x", gx, cx)):
            coords = ds[axis].values
            edges = _edges(int(coords[0]), sizes[axis])
            assert edges[-1] == int(coords[-1]) + 1
            inner = edges[1:-1]
            assert all((e - origin) % cell == 0 for e in inner), f"{name}.{axis}: edges {edges} off the cells"
            if per_chunk is not None:
                n = per_chunk[0] if axis == "y" else per_chunk[1]
                for a, b in itertools.pairwise(edges):
                    assert (b - 1 - origin) // cell - (a - origin) // cell < n, f"{name}.{axis}: [{a}, {b})"
                if n == 1:
                    cell_edges = [e for e in range(origin, edges[-1], cell) if edges[0] < e]
                    assert inner == cell_edges, f"{name}.{axis}: one chunk per cell expected, got {edges}"


# ----------------------------------------------------------------------------- what is read


def _tile_bytes(path: Path) -> list[tuple[int, int]]:
    return [t for hdu in fits_layout(path) for t in hdu.tiles if t is not None]


def _overlap(ranges: list[tuple[int, int]], other: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in ranges for c, d in other if a < d and c < b]


def _ranges(stats: FetchStats, path: Path) -> list[tuple[int, int]]:
    assert {url for url, _, _ in stats.ranges} <= {str(path)}
    return [(a, b) for _, a, b in stats.ranges]


def test_opening_and_building_the_dataset_read_no_pixel_tiles(path: Path, view: str) -> None:
    with fetch_stats() as opening:
        coadd = ccd.open_coadd(path)
    with fetch_stats() as building:
        coadd.to_xarray()
    assert building.requests == 0
    open_ranges = sorted(_ranges(opening, path))
    assert open_ranges
    assert not _overlap(open_ranges, _tile_bytes(path))
    with fetch_stats() as stats:
        ds = open_view(view, path)
        ds.cellcoadd.bbox  # noqa: B018 (the accessor must not read either)
        ds.cellcoadd.wcs  # noqa: B018
    assert sorted(_ranges(stats, path)) == open_ranges


def _byte_mask(ranges: list[tuple[int, int]], size: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    for a, b in ranges:
        mask[a:b] = True
    return mask


def assert_read_exactly(stats: FetchStats, path: Path, hdu: HduBytes, tiles: set[int]) -> None:
    """Only ``hdu``'s header and tile table, and exactly the bytes of ``tiles``, were fetched."""
    size = path.stat().st_size
    fetched = _byte_mask(_ranges(stats, path), size)
    metadata = _byte_mask([(hdu.header[0], hdu.table[1])], size)
    wanted = [hdu.tiles[t] for t in tiles]
    assert all(t is not None for t in wanted)
    expected = _byte_mask([t for t in wanted if t is not None], size)
    extra = np.flatnonzero(fetched & ~metadata & ~expected)
    missing = np.flatnonzero(expected & ~fetched)
    assert extra.size == 0, f"{hdu.label}: read {extra.size} bytes outside tiles {sorted(tiles)}"
    assert missing.size == 0, f"{hdu.label}: tiles {sorted(tiles)} not read"


def _tiles_of(hdu: HduBytes, ys: slice, xs: slice) -> set[int]:
    return {hdu.tile_of((y, x)) for y in (ys.start, ys.stop - 1) for x in (xs.start, xs.stop - 1)}


SELECTIONS: dict[str, tuple[str, dict[str, Any], Callable[[xr.Dataset, dict[str, Any]], Any]]] = {
    "image": ("IMAGE", {}, lambda ds, sel: ds["image"].isel(**sel).mean()),
    "variance": ("VARIANCE", {}, lambda ds, sel: ds["variance"].isel(**sel).mean()),
    "mask": ("MASK", {}, lambda ds, sel: ds["mask"].isel(**sel).max()),
    "mask_plane": ("MASK", {}, lambda ds, sel: ds.isel(**sel).cellcoadd.mask_plane("DETECTED").sum()),
    "mask_fraction": (
        "MASK_FRACTIONS/CLIPPED",
        {"fraction": 1},
        lambda ds, sel: ds["mask_fractions"].isel(**sel).mean(),
    ),
    "noise_realization": (
        "NOISE_REALIZATIONS/1",
        {"realization": 1},
        lambda ds, sel: ds["noise_realizations"].isel(**sel).mean(),
    ),
}
# Local (array-index) regions: inside one 150x150 tile, and across the boundary of two.
REGIONS = {"one_tile": (slice(10, 20), slice(160, 170)), "two_tiles": (slice(200, 212), slice(145, 155))}


@pytest.mark.parametrize("region", sorted(REGIONS))
@pytest.mark.parametrize("selection", sorted(SELECTIONS))
@pytest.mark.parametrize("name", ["synthetic_3x3.fits", "synthetic_3x3_offset_cutout.fits"])
def test_small_isel_reads_only_the_touched_tiles(
    reference_dir: Path, name: str, selection: str, region: str, view: str
) -> None:
    path = reference_dir / name
    extname, extra, reduce = SELECTIONS[selection]
    hdu = hdu_bytes(path, extname)
    ys, xs = REGIONS[region]
    tiles = _tiles_of(hdu, ys, xs)
    assert len(tiles) == (1 if region == "one_tile" else 2)
    ds = open_view(view, path)
    with fetch_stats() as stats:
        value = reduce(ds, {**extra, "y": ys, "x": xs}).values
    assert np.isfinite(value)
    assert_read_exactly(stats, path, hdu, tiles)


@pytest.mark.parametrize("view", ["engine_dask", "engine_lazy"])
def test_small_sel_by_absolute_coordinates_reads_one_tile(reference_dir: Path, view: str) -> None:
    path = reference_dir / "synthetic_3x3.fits"
    ref = lsst_read(str(path))
    hdu = hdu_bytes(path, "IMAGE")
    ds = open_view(view, path)
    # Cell (3, 2) = [y=1500:1650, x=1800:1950]: local tile (2, 1), inclusive label slices.
    with fetch_stats() as stats:
        mean = ds["image"].sel(y=slice(1510, 1519), x=slice(1820, 1829)).mean().values
    assert_read_exactly(stats, path, hdu, {hdu.tile_of((310, 170))})
    assert mean == np.float32(ref.image.array[310:320, 170:180].mean(dtype=np.float32))


# ----------------------------------------------------------------------------- values against lsst-images


def test_values_equal_lsst_images(path: Path, view: str) -> None:
    ref = lsst_read(str(path))
    ds = open_view(view, path)
    assert_identical(ds["image"].values, ref.image.array, "image")
    assert_identical(ds["variance"].values, ref.variance.array, "variance")
    names = list(ref.mask.schema.names)
    mask = ds["mask"]
    assert mask.attrs["flag_meanings"].split() == names
    flags = [int(f) for f in mask.attrs["flag_masks"]]
    assert len(flags) == len(names) == len(set(flags))
    assert all(f > 0 and f & (f - 1) == 0 for f in flags), flags
    for name, flag in zip(names, flags, strict=True):
        plane = ds.cellcoadd.mask_plane(name)
        assert plane.dims == ("y", "x") and plane.dtype == bool
        assert_identical(plane.values, ref.mask.get(name), f"mask plane {name}")
        assert_identical((mask.values & flag) != 0, ref.mask.get(name), f"flag {flag} of {name}")
    fractions = list(ref.mask_fractions)
    if fractions:
        assert list(ds["fraction"].values) == fractions
        for name in fractions:
            sel = ds["mask_fractions"].sel(fraction=name).values
            assert_identical(sel, ref.mask_fractions[name].array, f"mask fraction {name}")
    else:
        assert "mask_fractions" not in ds
    if ref.noise_realizations:
        assert ds.sizes["realization"] == len(ref.noise_realizations)
        for n, plane in enumerate(ref.noise_realizations):
            assert_identical(ds["noise_realizations"].isel(realization=n).values, plane.array, f"noise {n}")
    else:
        assert "noise_realizations" not in ds
    from lsst.images.cells import CellIJ

    psf = ds["psf"]
    for i, j in cells_with_data(ref.psf.bounds):
        kernel = ref.psf[CellIJ(i=i, j=j)]
        got = psf.sel(psf_cell_i=i, psf_cell_j=j)
        (ky0, ky1), (kx0, kx1) = intervals(kernel.bbox)
        np.testing.assert_array_equal(got["psf_y"].values, np.arange(ky0, ky1))
        np.testing.assert_array_equal(got["psf_x"].values, np.arange(kx0, kx1))
        assert_identical(got.values, kernel.array, f"PSF kernel of cell {(i, j)}")
    for cell in ref.psf.bounds.missing:
        assert np.isnan(psf.sel(psf_cell_i=cell.i, psf_cell_j=cell.j).values).all()


def test_attrs_carry_units_identity_and_patch(path: Path) -> None:
    ref = lsst_read(str(path))
    ds = xr.open_dataset(path, engine="cellcoadd", chunks={})
    assert u.Unit(ds["image"].attrs["units"]) == u.nJy == ref.unit
    assert u.Unit(ds["variance"].attrs["units"]) == u.nJy**2 == ref.variance.unit
    assert ds.attrs["band"] == (ref.band or "")
    assert ds.attrs["skymap"] == ref.skymap
    assert ds.attrs["tract"] == ref.tract
    assert list(ds.attrs["cell_shape"]) == [ref.grid.cell_shape.y, ref.grid.cell_shape.x]
    try:
        patch = ref.patch
    except AttributeError:
        patch = None
    if patch is None:
        assert "patch" not in ds.attrs
    else:
        assert ds.attrs["patch"] == patch.id
        assert list(ds.attrs["patch_index"]) == [patch.index.y, patch.index.x]
    assert ds.cellcoadd.bbox == ccd.Box.factory[ref.bbox.y.start : ref.bbox.y.stop, ref.bbox.x.start : ref.bbox.x.stop]


# ----------------------------------------------------------------------------- round trip to a CellCoadd


def _provenance(coadd: Any) -> Any:
    try:
        return coadd.provenance
    except AttributeError:
        return None


def test_to_coadd_round_trip_equals_the_coadd(path: Path, view: str) -> None:
    ref = lsst_read(str(path))
    ds = open_view(view, path)
    back = ds.cellcoadd.to_coadd()
    assert intervals(back.bbox) == intervals(ref.bbox)
    assert bounds_of(back.bounds) == bounds_of(ref.bounds)
    assert_planes_match(back, ref, f"{path.name} {view} to_coadd()")
    assert_psf_match(back, ref, f"{path.name} {view} to_coadd()")
    assert back.unit == ref.unit and back.variance.unit == ref.variance.unit
    assert (back.band, back.skymap, back.tract) == (ref.band, ref.skymap, ref.tract)
    assert dict(back.metadata) == dict(ref.metadata)
    x, y = np.array([ref.bbox.x.start, ref.bbox.x.stop - 1]), np.array([ref.bbox.y.start, ref.bbox.y.stop - 1])
    sky, expected = back.projection.pixel_to_sky(x=x, y=y), ref.sky_projection.pixel_to_sky(x=x, y=y)
    assert np.all(sky.separation(expected).deg < 1e-9)
    expected_prov = _provenance(ref)
    if expected_prov is not None:
        assert back.patch.id == ref.patch.id
        if view != "to_xarray":  # the engine knows the file and re-reads provenance from it
            assert_table_match(back.provenance.inputs, expected_prov.inputs, "inputs")
            assert_table_match(back.provenance.contributions, expected_prov.contributions, "contributions")


def test_to_coadd_after_isel_equals_the_sliced_coadd(path: Path, view: str) -> None:
    ref = lsst_read(str(path))
    ny, nx = ref.image.array.shape
    ys, xs = slice(ny // 5, (4 * ny) // 5 + 1), slice(nx // 3, nx - 2)
    (y0, _), (x0, _) = intervals(ref.bbox)
    box = ((y0 + ys.start, y0 + ys.stop), (x0 + xs.start, x0 + xs.stop))
    sub = open_view(view, path).isel(y=ys, x=xs).cellcoadd.to_coadd()
    sliced = ccd.open_coadd(path).absolute[box[0][0] : box[0][1], box[1][0] : box[1][1]]
    expected = lsst_read(str(path), box)
    assert intervals(sub.bbox) == intervals(sliced.bbox) == box
    assert bounds_of(sub.bounds) == bounds_of(sliced.bounds) == bounds_of(expected.bounds)
    assert_planes_match(sub, expected, f"{path.name} {view} isel().to_coadd()")
    assert_psf_match(sub, expected, f"{path.name} {view} isel().to_coadd()")
    sliced_prov = _provenance(sliced)
    if sliced_prov is not None and view != "to_xarray":
        assert_table_match(sub.provenance.inputs, sliced_prov.inputs, "inputs")
        assert_table_match(sub.provenance.contributions, sliced_prov.contributions, "contributions")


# ----------------------------------------------------------------------------- sky


def test_pixel_to_sky_and_back_equal_lsst_images(path: Path) -> None:
    ref = lsst_read(str(path))
    ds = xr.open_dataset(path, engine="cellcoadd", chunks={})
    (y0, y1), (x0, x1) = intervals(ref.bbox)
    y = np.array([y0, y0, y1 - 1, y1 - 1, (y0 + y1) / 2, y0 + 0.25, y1 + 10.5])
    x = np.array([x0, x1 - 1, x0, x1 - 1, (x0 + x1) / 2, x1 - 0.5, x0 - 7.25])
    got = ds.cellcoadd.pixel_to_sky(y=y, x=x)
    expected = ref.sky_projection.pixel_to_sky(x=x, y=y)
    assert np.all(got.separation(expected).deg < 1e-9)
    d_ra = (got.ra.deg - expected.ra.deg + 180.0) % 360.0 - 180.0
    assert np.all(np.abs(d_ra) < 1e-9) and np.all(np.abs(got.dec.deg - expected.dec.deg) < 1e-9)
    px, py = ds.cellcoadd.sky_to_pixel(expected)
    ex = ref.sky_projection.sky_to_pixel(expected)
    np.testing.assert_allclose(px, ex.x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(py, ex.y, rtol=0, atol=1e-6)
    np.testing.assert_allclose(px, x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(py, y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("subset", [False, True], ids=["whole", "isel"])
def test_wcs_agrees_with_pixel_to_sky_on_the_local_grid(path: Path, subset: bool) -> None:
    ref = lsst_read(str(path))
    ds = xr.open_dataset(path, engine="cellcoadd", chunks={})
    if subset:
        ds = ds.isel(y=slice(3, -2), x=slice(5, None))
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    yl = np.array([0, 0, ny - 1, ny - 1, ny // 2])
    xl = np.array([0, nx - 1, 0, nx - 1, nx // 2])
    y0, x0 = int(ds["y"][0]), int(ds["x"][0])
    world = ds.cellcoadd.wcs.pixel_to_world(xl, yl)
    expected = ref.sky_projection.pixel_to_sky(x=xl + x0, y=yl + y0)
    assert np.all(world.separation(expected).deg < 1e-9)


def _pixels_in_circle(ref: Any, ds: xr.Dataset, center: Any, radius: u.Quantity) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.meshgrid(ds["y"].values, ds["x"].values, indexing="ij")
    sky = ref.sky_projection.pixel_to_sky(x=xx.ravel(), y=yy.ravel())
    inside = (sky.separation(center) <= radius).reshape(yy.shape)
    return yy[inside], xx[inside]


@pytest.mark.parametrize(
    ("pixel", "radius_arcsec"),
    [((1400.7, 1900.3), 4.0), ((1200.0, 1650.0), 2.0), ((1649.2, 2020.9), 3.3)],
    ids=["inside", "corner", "edge"],
)
def test_sel_sky_returns_the_bounding_box_of_the_circle(
    reference_dir: Path, pixel: tuple[float, float], radius_arcsec: float
) -> None:
    path = reference_dir / "synthetic_3x3.fits"
    ref = lsst_read(str(path))
    ds = xr.open_dataset(path, engine="cellcoadd", chunks={})
    center = ref.sky_projection.pixel_to_sky(x=pixel[1], y=pixel[0])
    radius = radius_arcsec * u.arcsec
    out = ds.cellcoadd.sel_sky(center.ra.deg, center.dec.deg, radius)
    same = ds.cellcoadd.sel_sky(center.ra, center.dec, radius.to(u.deg))
    np.testing.assert_array_equal(same["y"].values, out["y"].values)
    np.testing.assert_array_equal(same["x"].values, out["x"].values)
    ys, xs = out["y"].values, out["x"].values
    assert np.all(np.diff(ys) == 1) and np.all(np.diff(xs) == 1)
    in_y, in_x = _pixels_in_circle(ref, ds, center, radius)
    assert in_y.size > 0
    # Every pixel whose centre is in the circle is returned; nothing beyond one pixel past it.
    assert ys[0] <= in_y.min() and in_y.max() <= ys[-1]
    assert xs[0] <= in_x.min() and in_x.max() <= xs[-1]
    (by0, by1), (bx0, bx1) = intervals(ref.bbox)
    assert max(by0, in_y.min() - 1) <= ys[0] and ys[-1] <= min(by1 - 1, in_y.max() + 1)
    assert max(bx0, in_x.min() - 1) <= xs[0] and xs[-1] <= min(bx1 - 1, in_x.max() + 1)
    local = (slice(ys[0] - by0, ys[-1] + 1 - by0), slice(xs[0] - bx0, xs[-1] + 1 - bx0))
    assert_identical(out["image"].values, ref.image.array[local], "image in the circle's box")


def test_sel_sky_outside_the_dataset_raises_bounds_error(reference_dir: Path) -> None:
    path = reference_dir / "synthetic_3x3.fits"
    ref = lsst_read(str(path))
    ds = xr.open_dataset(path, engine="cellcoadd", chunks={})
    far = ref.sky_projection.pixel_to_sky(x=1000.0, y=1000.0)
    with pytest.raises(ccd.BoundsError):
        ds.cellcoadd.sel_sky(far.ra.deg, far.dec.deg, 1.0 * u.arcsec)


@pytest.mark.parametrize("radius", [5, 5.0, 5 * u.pix, "5 arcsec"])
def test_sel_sky_refuses_a_radius_that_is_not_an_angle(reference_dir: Path, radius: object) -> None:
    ds = xr.open_dataset(reference_dir / "synthetic_3x3.fits", engine="cellcoadd", chunks={})
    centre = ds.cellcoadd.pixel_to_sky(y=1400.0, x=1900.0)
    with pytest.raises(ccd.ValidationError, match="angle Quantity"):
        ds.cellcoadd.sel_sky(centre.ra, centre.dec, radius)


def test_sel_sky_keeps_only_the_psf_cells_it_covers(reference_dir: Path) -> None:
    ds = xr.open_dataset(reference_dir / "synthetic_3x3.fits", engine="cellcoadd", chunks={})
    centre = ds.cellcoadd.pixel_to_sky(y=1410.0, x=1910.0)  # inside cell (2, 2), 60 px from its edges
    out = ds.cellcoadd.sel_sky(centre.ra, centre.dec, 2 * u.arcsec)
    assert set(np.unique(out["cell_i"].values)) == {2} and set(np.unique(out["cell_j"].values)) == {2}
    assert out["psf"].sizes["psf_cell_i"] == 1 and out["psf"].sizes["psf_cell_j"] == 1
    assert_identical(out["psf"].isel(psf_cell_i=0, psf_cell_j=0).values,
                     ds["psf"].sel(psf_cell_i=2, psf_cell_j=2).values, "PSF of the covered cell")
    back = out.cellcoadd.to_coadd()
    assert_identical(back.psf.array.compute()[0, 0], ds["psf"].sel(psf_cell_i=2, psf_cell_j=2).values, "to_coadd")


# ----------------------------------------------------------------------------- engine discovery


def test_guess_can_open_recognises_coadds_only(reference_dir: Path, tmp_path: Path) -> None:
    from astropy.io import fits

    entrypoint = CellCoaddBackendEntrypoint()
    for name in (*FILES, "synthetic_3x3_cutout.json", "cell_coadd_min_as_shipped.json"):
        assert entrypoint.guess_can_open(reference_dir / name), name
        assert entrypoint.guess_can_open(str(reference_dir / name)), name
    plain = tmp_path / "plain.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4), np.float32)), fits.ImageHDU(np.ones((3, 3)))]).writeto(plain)
    assert not entrypoint.guess_can_open(plain)
    assert not entrypoint.guess_can_open(tmp_path / "absent.fits")
    text = tmp_path / "notes.txt"
    text.write_text("cell_coadd")
    assert not entrypoint.guess_can_open(text)


def test_open_dataset_without_engine_picks_cellcoadd(reference_dir: Path) -> None:
    path = reference_dir / "synthetic_3x3.fits"
    guessed = xr.open_dataset(path, chunks={})
    explicit = xr.open_dataset(path, engine="cellcoadd", chunks={})
    assert guessed.attrs == explicit.attrs
    assert set(guessed.data_vars) == set(explicit.data_vars)
    assert_identical(guessed["image"].values, explicit["image"].values, "image")


def test_mask_of_more_than_64_planes_keeps_its_element_axis(lsst_variants: dict[str, Path]) -> None:
    path = lsst_variants["mask_70_planes.fits"]
    ref = lsst_read(str(path))
    for view in VIEWS:
        ds = open_view(view, path)
        assert ds["mask"].dims == ("y", "x", "mask_element"), view
        assert_identical(ds["mask"].values, ref.mask.array, f"{view}: mask")
        for name in ref.mask.schema.names:
            assert_identical(ds.cellcoadd.mask_plane(name).values, ref.mask.get(name), f"{view}: plane {name}")
        assert_planes_match(ds.cellcoadd.to_coadd(), ref, f"{view}: to_coadd()")
