"""Shared comparison helpers: our reads against lsst-images, astropy and ``expected_values.json``.

Nothing here uses the code under test to produce expected values: byte layouts of
FITS HDUs come from astropy (``disable_image_compression=True``), pixel values and
metadata from ``lsst.images``' own reader, and sums from the reference JSON.

Coordinates follow both packages: ``(y, x)`` order, absolute (tract) pixel
coordinates, half-open boxes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest

import cellcoadd_dask as ccd
from cellcoadd_dask.archives.fits.tables import split_column_source

# ----------------------------------------------------------------------------- geometry


def to_lsst_box(box: ccd.Box) -> Any:
    """The `lsst.images.Box` with the same absolute intervals as ``box``."""
    from lsst.images import Box

    return Box.factory[box.y.start : box.y.stop, box.x.start : box.x.stop]


def intervals(box: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((y0, y1), (x0, x1))`` of a ccd or lsst-images box, for comparisons across packages."""
    return ((int(box.y.start), int(box.y.stop)), (int(box.x.start), int(box.x.stop)))


def cells_of(cells: Iterable[Any]) -> set[tuple[int, int]]:
    """``{(i, j)}`` of ccd or lsst-images ``CellIJ`` objects."""
    return {(int(c.i), int(c.j)) for c in cells}


def grid_of(grid: Any) -> tuple[Any, ...]:
    """A comparable summary of a ccd or lsst-images ``CellGrid``."""
    return (intervals(grid.bbox), (int(grid.cell_shape.y), int(grid.cell_shape.x)))


def bounds_of(bounds: Any) -> tuple[Any, ...]:
    """A comparable summary of a ccd or lsst-images ``CellGridBounds``."""
    return (grid_of(bounds.grid), intervals(bounds.bbox), cells_of(bounds.missing))


def cells_with_data(bounds: Any) -> list[tuple[int, int]]:
    """Cells of lsst-images ``bounds`` that have data, row-major."""
    return [(int(c.i), int(c.j)) for c in bounds.cell_indices()]


# ----------------------------------------------------------------------------- arrays


def assert_identical(actual: Any, expected: Any, what: str) -> None:
    """Assert two arrays are bit-identical: same dtype and shape, NaN at the same places,
    every other element with the same bits (so ``-0.0`` differs from ``0.0``)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.dtype.kind == "f":
        nan_a, nan_e = np.isnan(actual), np.isnan(expected)
        assert np.array_equal(nan_a, nan_e), (
            f"{what}: NaN at {np.count_nonzero(nan_a)} pixels, expected {np.count_nonzero(nan_e)} "
            f"(first difference at {np.argwhere(nan_a != nan_e)[:1].tolist()})"
        )
        bits = np.dtype(f"u{actual.dtype.itemsize}")
        a = np.ascontiguousarray(actual).view(bits)[~nan_a]
        e = np.ascontiguousarray(expected).view(bits)[~nan_e]
    else:
        a, e = actual, expected
    differ = a != e
    assert not np.any(differ), f"{what}: {np.count_nonzero(differ)} elements differ"


def coadd_planes(coadd: ccd.CellCoadd) -> dict[str, Any]:
    """Every pixel plane of one of our coadds as a lazy array, keyed like the tree's paths."""
    planes: dict[str, Any] = {"image": coadd.image.array, "variance": coadd.variance.array, "mask": coadd.mask.array}
    for name, plane in coadd.mask_fractions.items():
        planes[f"mask_fractions/{name}"] = plane.array
    for n, plane in enumerate(coadd.noise_realizations):
        planes[f"noise_realizations/{n}"] = plane.array
    return planes


def lsst_planes(coadd: Any) -> dict[str, np.ndarray]:
    """The same planes of an `lsst.images.cells.CellCoadd`, as numpy arrays."""
    planes = {"image": coadd.image.array, "variance": coadd.variance.array, "mask": coadd.mask.array}
    for name, plane in coadd.mask_fractions.items():
        planes[f"mask_fractions/{name}"] = plane.array
    for n, plane in enumerate(coadd.noise_realizations):
        planes[f"noise_realizations/{n}"] = plane.array
    return planes


def assert_planes_match(ours: ccd.CellCoadd, ref: Any, what: str) -> None:
    """Image, variance, mask (array and every plane), fractions and noise are bit-identical."""
    lazy = coadd_planes(ours)
    expected = lsst_planes(ref)
    assert sorted(lazy) == sorted(expected), f"{what}: planes {sorted(lazy)} != {sorted(expected)}"
    names = ref.mask.schema.names
    computed = dask.compute(lazy, {name: ours.mask.get(name) for name in names})
    for key, array in computed[0].items():
        assert_identical(array, expected[key], f"{what}: {key}")
    for name, array in computed[1].items():
        assert_identical(array, ref.mask.get(name), f"{what}: mask plane {name}")


def assert_mask_schema_match(ours: ccd.MaskSchema, ref: Any, what: str) -> None:
    """Same planes (names, descriptions, placeholders, order), dtype and mask size."""
    ours_planes = [None if p is None else (p.name, p.description) for p in ours]
    ref_planes = [None if p is None else (p.name, p.description) for p in ref]
    assert ours_planes == ref_planes, f"{what}: mask planes differ"
    assert ours.dtype == ref.dtype, f"{what}: mask dtype {ours.dtype} != {ref.dtype}"
    assert ours.mask_size == ref.mask_size, f"{what}: mask size {ours.mask_size} != {ref.mask_size}"
    assert list(ours.names) == list(ref.names)


def assert_psf_match(ours: ccd.CellCoadd, ref: Any, what: str) -> None:
    """Same PSF bounds, kernel bbox, and bit-identical kernels for every cell with data."""
    assert bounds_of(ours.psf.bounds) == bounds_of(ref.psf.bounds), f"{what}: PSF bounds differ"
    assert intervals(ours.psf.kernel_bbox) == intervals(ref.psf.kernel_bbox), f"{what}: kernel bbox"
    for i, j in cells_with_data(ref.psf.bounds):
        from lsst.images.cells import CellIJ

        kernel = ours.psf[ccd.CellIJ(i=i, j=j)]
        expected = ref.psf[CellIJ(i=i, j=j)]
        assert intervals(kernel.bbox) == intervals(expected.bbox), f"{what}: kernel bbox of cell {(i, j)}"
        assert_identical(np.asarray(kernel.array), expected.array, f"{what}: PSF kernel of cell {(i, j)}")


@functools.cache
def lsst_read(path: str, box: tuple[tuple[int, int], tuple[int, int]] | None = None) -> Any:
    """lsst-images' read of a FITS or JSON archive (whole, or ``bbox=`` a box given as intervals), cached."""
    from lsst.images import Box
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import read_archive

    if box is None:
        return read_archive(path, CellCoadd)
    (y0, y1), (x0, x1) = box
    return read_archive(path, CellCoadd, bbox=Box.factory[y0:y1, x0:x1], provenance=False)


def assert_patch_match(patch: ccd.PatchDefinition, expected: Any) -> None:
    """A patch definition equals lsst-images' (id, index, inner bbox, cell grid)."""
    assert patch.id == expected.id
    assert (patch.index.y, patch.index.x) == (expected.index.y, expected.index.x)
    assert intervals(patch.inner_bbox) == intervals(expected.inner_bbox)
    assert grid_of(patch.cells) == grid_of(expected.cells)


def assert_provenance_match(ours: ccd.CellCoadd, ref: Any, what: str) -> None:
    """Provenance tables equal lsst-images' (or both coadds have none)."""
    try:
        expected = ref.provenance
    except AttributeError:
        expected = None
    if expected is None:
        with pytest.raises(AttributeError):
            _ = ours.provenance
        return
    assert_table_match(ours.provenance.inputs, expected.inputs, f"{what} inputs")
    assert_table_match(ours.provenance.contributions, expected.contributions, f"{what} contributions")


def assert_aperture_corrections_match(ours: ccd.CellCoadd, ref: Any) -> None:
    """Per-cell aperture corrections equal lsst-images', cell by cell, with the same bounds."""
    from lsst.images.cells import CellIJ

    expected = ref.aperture_corrections
    got = ours.aperture_corrections
    assert sorted(got) == sorted(expected)
    for name, field in expected.items():
        assert bounds_of(got[name].bounds) == bounds_of(field.bounds), name
        for i, j in cells_with_data(field.bounds):
            value = got[name].value_in_cell(ccd.CellIJ(i=i, j=j))
            assert_identical(
                np.float64(value), np.float64(field.value_in_cell(CellIJ(i=i, j=j))), f"{name} in cell {(i, j)}"
            )


def assert_sky_match(ours: ccd.CellCoadd, ref: Any, *, y: np.ndarray, x: np.ndarray) -> None:
    """Sky coordinates of absolute pixels equal lsst-images' within 1e-9 deg."""
    got = ours.projection.pixel_to_sky(x=x, y=y)
    expected = ref.sky_projection.pixel_to_sky(x=x, y=y)
    d_ra = (got.ra.deg - expected.ra.deg + 180.0) % 360.0 - 180.0
    assert np.all(np.abs(d_ra) < 1e-9), d_ra
    assert np.all(np.abs(got.dec.deg - expected.dec.deg) < 1e-9), got.dec.deg - expected.dec.deg


def assert_table_match(ours: Any, ref: Any, what: str) -> None:
    """astropy tables with the same column names (in order), units and values (object columns by
    their elements; polygons by their vertices)."""
    assert list(ours.colnames) == list(ref.colnames), f"{what}: columns {ours.colnames} != {ref.colnames}"
    assert len(ours) == len(ref), f"{what}: {len(ours)} rows, expected {len(ref)}"
    for name in ref.colnames:
        a, e = ours[name], ref[name]
        assert a.unit == e.unit, f"{what}.{name}: unit {a.unit} != {e.unit}"
        if e.dtype.kind == "O" and len(e) and hasattr(e[0], "x_vertices"):
            for row, (pa, pe) in enumerate(zip(a, e, strict=True)):
                assert_identical(
                    np.asarray(pa.x_vertices, float),
                    np.asarray(pe.x_vertices, float),
                    f"{what}.{name}[{row}].x_vertices",
                )
                assert_identical(
                    np.asarray(pa.y_vertices, float),
                    np.asarray(pe.y_vertices, float),
                    f"{what}.{name}[{row}].y_vertices",
                )
        elif e.dtype.kind == "O":
            assert [str(v) for v in a] == [str(v) for v in e], f"{what}.{name}: values differ"
        else:
            assert_identical(np.asarray(a), np.asarray(e), f"{what}.{name}")


# ----------------------------------------------------------------------------- FITS layout (astropy)


@dataclasses.dataclass(frozen=True)
class HduBytes:
    """Where one HDU's bytes are, as astropy sees the file.

    Attributes
    ----------
    extname, extver
        The HDU's name and version.
    header
        ``[start, stop)`` of the header.
    table
        ``[start, stop)`` of the main table (tile descriptors) of a compressed image, or
        of the whole data of anything else.
    tiles
        For a tile-compressed image: ``[start, stop)`` of every tile's ``COMPRESSED_DATA``
        bytes, in tile order (``None`` for an empty cell); else empty.
    tile_shape, shape
        Tile and image shapes (numpy order) of a tile-compressed image; else ``()``.
    row_bytes
        ``NAXIS1`` of a binary table (bytes per descriptor row), else 0.
    """

    extname: str
    extver: int
    header: tuple[int, int]
    table: tuple[int, int]
    tiles: tuple[tuple[int, int] | None, ...] = ()
    tile_shape: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()
    row_bytes: int = 0

    @property
    def label(self) -> str:
        """``EXTNAME`` or ``EXTNAME,EXTVER``."""
        return self.extname if self.extver == 1 else f"{self.extname},{self.extver}"

    def tile_of(self, local: tuple[int, ...]) -> int:
        """The tile number holding a local (array-index) pixel position."""
        grid = [math.ceil(n / t) for n, t in zip(self.shape, self.tile_shape, strict=True)]
        index = 0
        for p, t, g in zip(local, self.tile_shape, grid, strict=True):
            index = index * g + p // t
        return index

    def tile_region(self, tile: int) -> tuple[slice, ...]:
        """Local slices covered by one tile."""
        grid = [math.ceil(n / t) for n, t in zip(self.shape, self.tile_shape, strict=True)]
        out = []
        for n, t, g in zip(reversed(self.shape), reversed(self.tile_shape), reversed(grid), strict=True):
            tile, k = divmod(tile, g)
            out.append(slice(k * t, min((k + 1) * t, n)))
        return tuple(reversed(out))


def fits_layout(path: Path | str) -> list[HduBytes]:
    """Every HDU of a FITS file with its header, table and tile byte ranges, read by astropy."""
    from astropy.io import fits

    out = []
    with fits.open(path, disable_image_compression=True, memmap=False) as hdus:
        for hdu in hdus:
            info = hdu.fileinfo()
            header = (int(info["hdrLoc"]), int(info["datLoc"]))
            name = str(hdu.header.get("EXTNAME", "")).strip()
            extver = int(hdu.header.get("EXTVER", 1))
            if hdu.header.get("ZIMAGE") is True:
                naxis1, naxis2 = int(hdu.header["NAXIS1"]), int(hdu.header["NAXIS2"])
                heap = header[1] + int(hdu.header.get("THEAP", naxis1 * naxis2))
                descriptors = np.asarray(hdu.data)["COMPRESSED_DATA"]
                tiles = tuple(
                    None if count == 0 else (heap + int(offset), heap + int(offset) + int(count))
                    for count, offset in descriptors
                )
                ndim = int(hdu.header["ZNAXIS"])
                shape = tuple(int(hdu.header[f"ZNAXIS{n}"]) for n in range(ndim, 0, -1))
                tile_shape = tuple(int(hdu.header.get(f"ZTILE{n}", 1)) for n in range(ndim, 0, -1))
                out.append(
                    HduBytes(
                        name, extver, header, (header[1], header[1] + naxis1 * naxis2), tiles, tile_shape, shape, naxis1
                    )
                )
            else:
                size = int(info["datSpan"])
                row_bytes = int(hdu.header["NAXIS1"]) if hdu.header.get("XTENSION") == "BINTABLE" else 0
                out.append(HduBytes(name, extver, header, (header[1], header[1] + size), row_bytes=row_bytes))
    return out


def hdu_bytes(path: Path | str, extname: str, extver: int = 1) -> HduBytes:
    """`fits_layout` entry of one HDU."""
    for hdu in fits_layout(path):
        if hdu.extname == extname and hdu.extver == extver:
            return hdu
    raise KeyError(f"{path} has no HDU {extname},{extver}")


def table_field_offsets(path: Path | str, extname: str) -> tuple[int, int, dict[str, int]]:
    """``(data start, row size, {column: byte offset in a row})`` of a binary table, by astropy."""
    from astropy.io import fits

    with fits.open(path, disable_image_compression=True, memmap=False) as hdus:
        hdu = hdus[extname]
        fields = np.asarray(hdu.data).dtype.fields
        assert fields is not None
        offsets = {name: int(spec[1]) for name, spec in fields.items()}
        return int(hdu.fileinfo()["datLoc"]), int(hdu.header["NAXIS1"]), offsets


# ----------------------------------------------------------------------------- expected_values.json


def check_expected_values(coadd: ccd.CellCoadd, expected: Mapping[str, Any], what: str) -> None:
    """Compare a coadd with one file's entry of ``expected_values.json``."""
    assert intervals(coadd.bbox) == (tuple(expected["bbox"]["y"]), tuple(expected["bbox"]["x"])), what
    assert intervals(coadd.grid.bbox) == (tuple(expected["grid_bbox"]["y"]), tuple(expected["grid_bbox"]["x"]))
    assert (coadd.grid.cell_shape.y, coadd.grid.cell_shape.x) == (
        expected["cell_shape"]["y"],
        expected["cell_shape"]["x"],
    )
    assert intervals(coadd.bounds.bbox) == (tuple(expected["bounds_bbox"]["y"]), tuple(expected["bounds_bbox"]["x"]))
    assert cells_of(coadd.bounds.missing) == {(c["i"], c["j"]) for c in expected["missing_cells"]}
    assert [(c.i, c.j) for c in coadd.bounds.cell_indices()] == [(c["i"], c["j"]) for c in expected["cells_with_data"]]
    import astropy.units as u

    assert coadd.unit == u.Unit(expected["unit"])
    assert coadd.variance.unit == u.Unit(expected["variance_unit"])
    assert coadd.band == expected["band"]
    assert coadd.skymap == expected["skymap"]
    assert coadd.tract == expected["tract"]
    assert dict(coadd.metadata) == expected["metadata"]
    if expected.get("patch") is not None:
        patch = coadd.patch
        assert patch.id == expected["patch"]["id"]
        assert (patch.index.y, patch.index.x) == (expected["patch"]["index"]["y"], expected["patch"]["index"]["x"])
        assert str(patch.inner_bbox) == expected["patch"]["inner_bbox"]
    schema = coadd.mask.schema
    assert schema.dtype == np.dtype(expected["mask_dtype"])
    assert schema.mask_size == expected["mask_size"]
    for plane in expected["mask_planes"]:
        if plane is not None:
            assert schema.bit(plane["name"]) == (plane["memory_byte_index"], plane["memory_bitmask"]), plane
    assert list(coadd.mask_fractions) == expected["mask_fraction_names"]
    assert len(coadd.noise_realizations) == expected["n_noise_realizations"]
    assert list(coadd.psf.array.shape) == expected["psf_array_shape"]
    assert str(coadd.psf.kernel_bbox) == expected["psf_kernel_bbox"]
    assert sorted(coadd.aperture_corrections) == sorted(expected["aperture_correction_names"])
    if expected.get("provenance") is not None:
        assert len(coadd.provenance.inputs) == expected["provenance"]["n_inputs"]
        assert len(coadd.provenance.contributions) == expected["provenance"]["n_contributions"]

    planes, counts = dask.compute(
        coadd_planes(coadd), {name: coadd.mask.get(name).sum() for name in expected["mask_plane_counts"]}
    )
    for key, total in expected["finite_sums_float64"].items():
        values = planes[key].astype(np.float64)
        finite = np.isfinite(values)
        assert float(np.sum(values[finite])) == total, f"{what}: sum of {key}"
        assert np.count_nonzero(~finite) == expected["nonfinite_counts"][key], f"{what}: non-finite {key}"
    assert {k: int(v) for k, v in counts.items()} == expected["mask_plane_counts"], f"{what}: mask counts"
    kernels = np.stack([np.asarray(coadd.psf[c].array, dtype=np.float64) for c in coadd.bounds.cell_indices()])
    psf_sum = float(np.sum(kernels[np.isfinite(kernels)]))
    assert psf_sum == expected["psf_sum_over_cells_with_data_float64"], f"{what}: PSF sum"
    image = planes["image"].astype(np.float64)
    for key, total in expected["image_finite_sum_per_cell_float64"].items():
        i, j = (int(v) for v in key.split(","))
        cell = coadd.grid.bbox_of(ccd.CellIJ(i=i, j=j)).intersection(coadd.bbox)
        assert cell is not None
        sy, sx = cell.slice_within(coadd.bbox)
        values = image[sy, sx]
        assert values[np.isfinite(values)].sum() == total, f"{what}: image sum of cell {key}"
    y0, x0 = coadd.bbox.y.start, coadd.bbox.x.start
    for pixel in expected["pixels"]:
        local = (pixel["y"] - y0, pixel["x"] - x0)
        for key, value in pixel.items():
            if key in ("y", "x"):
                continue
            if key == "mask_planes_set":
                assert sorted(schema.interpret(planes["mask"][local])) == sorted(value), f"{what}: {pixel}"
            else:
                assert_identical(np.float64(planes[key][local]), np.float64(value), f"{what}: {key} at {local}")
    for point in expected["pixel_to_sky"]:
        sky = coadd.projection.pixel_to_sky(x=point["x"], y=point["y"])
        assert abs(sky.ra.deg - point["ra_deg"]) < 1e-9, f"{what}: RA at {point}"
        assert abs(sky.dec.deg - point["dec_deg"]) < 1e-9, f"{what}: Dec at {point}"


# ----------------------------------------------------------------------------- full-size patch


FULL_PATCH_CELLS = 22
FULL_PATCH_CELL = 150
FULL_PATCH_MISSING = (5, 7)
"""Grid index ``(i, j)`` of the one missing cell of `make_full_patch`."""


def make_full_patch(seed: int = 11) -> Any:
    """A full-size `lsst.images.cells.CellCoadd`: 22x22 cells of 150x150 px (3300x3300).

    The image is Gaussian noise (sigma 4 nJy, quantized to 1/16 nJy so it compresses to
    about 1.5 bytes per pixel); the variance is constant, the mask holds ``NO_DATA`` on
    one missing cell only, there are no mask fractions, noise realizations, aperture
    corrections or provenance.  Written with default options, each plane is a GZIP_2
    image whose tiles are the cells.
    """
    import astropy.units as u
    import astropy.wcs
    from lsst.images import YX, Box, Image, Mask, MaskPlane, MaskSchema, SkyProjection, TractFrame
    from lsst.images.cells import (
        CellCoadd,
        CellGrid,
        CellGridBounds,
        CellIJ,
        CellPointSpreadFunction,
        PatchDefinition,
    )

    rng = np.random.default_rng(seed)
    n, c = FULL_PATCH_CELLS, FULL_PATCH_CELL
    size = n * c
    y0, x0 = 2 * size - 2 * c, size - c  # patch (y=2, x=1) of a tract with one-cell overlaps
    bbox = Box.factory[y0 : y0 + size, x0 : x0 + size]
    tract_bbox = Box.factory[0 : 6 * size, 0 : 6 * size]
    frame = TractFrame(skymap="full_patch_v1", tract=1234, bbox=tract_bbox)
    scale = (0.2 * u.arcsec).to_value(u.deg)
    wcs = astropy.wcs.WCS(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRPIX1": 3 * size + 0.5,
            "CRPIX2": 3 * size + 0.5,
            "CRVAL1": 60.0,
            "CRVAL2": -30.0,
            "CD1_1": -scale,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": scale,
        }
    )
    projection = SkyProjection.from_fits_wcs(wcs, frame, x0=0, y0=0)
    grid = CellGrid(bbox=bbox, cell_shape=YX(y=c, x=c))
    missing = CellIJ(i=FULL_PATCH_MISSING[0], j=FULL_PATCH_MISSING[1])
    bounds = CellGridBounds(grid=grid, bbox=bbox, missing=frozenset({missing}))

    image = (np.round(rng.normal(0.0, 4.0, size=(size, size)) * 16.0) / 16.0).astype(np.float32)
    variance = np.full((size, size), 16.0, dtype=np.float32)
    schema = MaskSchema(
        [
            MaskPlane("NO_DATA", "No data was available for this pixel."),
            MaskPlane("DETECTED", "Pixel was part of a detected source."),
        ]
    )
    mask = Mask(0, schema=schema, bbox=bbox)
    hole = grid.bbox_of(missing)
    image[hole.slice_within(bbox)] = 0.0
    variance[hole.slice_within(bbox)] = np.inf
    mask[hole].set("NO_DATA")

    half = 4
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    psf = np.empty((n, n, 2 * half + 1, 2 * half + 1))
    for i in range(n):
        for j in range(n):
            kernel = np.exp(-0.5 * (xx**2 + yy**2) / (1.6 + 0.01 * (i + j)) ** 2)
            psf[i, j] = kernel / kernel.sum()
    psf[missing.i, missing.j] = np.nan

    return CellCoadd(
        Image(image, bbox=bbox, unit=u.nJy),
        mask=mask,
        variance=Image(variance, bbox=bbox, unit=u.nJy**2),
        sky_projection=projection,
        band="r",
        psf=CellPointSpreadFunction(psf, bounds),
        patch=PatchDefinition(id=3 * 2 + 1, index=YX(y=2, x=1), inner_bbox=bbox, cells=grid),
    )


def write_full_patch(path: Path) -> Path:
    """Write `make_full_patch` to ``path`` with lsst-images' default (lossless) options."""
    make_full_patch().write(str(path))
    return path


def _native(array: np.ndarray) -> np.ndarray:
    return array.astype(array.dtype.newbyteorder("="))


def tree_and_columns(path: Path) -> tuple[dict[str, Any], Any]:
    """The JSON tree of a file and a get_column callback reading columns with astropy."""
    if path.suffix == ".json":
        with path.open() as stream:
            tree = json.load(stream)

        def no_columns(source: str) -> np.ndarray:
            raise AssertionError(f"inline table asked for {source}")

        return tree, no_columns
    from astropy.io import fits

    with fits.open(path) as hdus:
        tree = json.loads(bytes(hdus["JSON"].data["JSON"][0]).decode())
        columns = {
            (f"fits:{hdu.name}", number): _native(np.asarray(hdu.data[column]))
            for hdu in hdus
            if isinstance(hdu, fits.BinTableHDU) and hdu.name not in ("JSON", "INDEX")
            for number, column in enumerate(hdu.data.names, start=1)
        }
    return tree, lambda source: columns[split_column_source(source)]
