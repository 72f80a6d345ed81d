"""Our FITS reader against lsst-images, the arbiter of interoperability.

Every FITS file of the reference directory and every FITS variant written by
lsst-images in this session is read twice, by ``cellcoadd_dask.open_coadd`` and by
``lsst.images.cells.CellCoadd.read``, and everything the data model holds is compared:
pixels bit for bit, mask schema, PSF kernels, cell bounds, patch, identity, metadata,
provenance tables, aperture corrections and sky coordinates; then the same for
``bbox=`` reads and for other chunkings.  The reference files are also checked
against ``expected_values.json``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lsst_files import VARIANTS
from oracle import (
    assert_aperture_corrections_match,
    assert_identical,
    assert_mask_schema_match,
    assert_patch_match,
    assert_planes_match,
    assert_provenance_match,
    assert_psf_match,
    assert_sky_match,
    bounds_of,
    cells_of,
    cells_with_data,
    check_expected_values,
    coadd_planes,
    grid_of,
    intervals,
    lsst_planes,
    lsst_read,
    to_lsst_box,
)
from paths import REFERENCE_FITS

import cellcoadd_dask as ccd

VARIANT_FITS = tuple(name for name in VARIANTS if name.endswith(".fits"))
CASES = [("reference", name) for name in REFERENCE_FITS] + [("variant", name) for name in VARIANT_FITS]
BOX_KINDS = ("cell_aligned", "straddling_four_cells", "one_pixel", "full")


@pytest.fixture(params=CASES, ids=[f"{kind}:{name}" for kind, name in CASES])
def fits_path(request: pytest.FixtureRequest, reference_dir: Path) -> Path:
    kind, name = request.param
    if kind == "reference":
        return reference_dir / name
    return request.getfixturevalue("lsst_variants")[name]


def test_every_reference_fits_file_is_covered(reference_dir: Path) -> None:
    assert sorted(p.name for p in reference_dir.glob("*.fits")) == sorted(REFERENCE_FITS)


# ----------------------------------------------------------------------------- whole files


def test_planes_are_bit_identical_to_lsst_images(fits_path: Path) -> None:
    ref = lsst_read(str(fits_path))
    ours = ccd.open_coadd(fits_path)
    assert_planes_match(ours, ref, fits_path.name)


def test_mask_schema_equals_lsst_images(fits_path: Path) -> None:
    ref = lsst_read(str(fits_path))
    assert_mask_schema_match(ccd.open_coadd(fits_path).mask.schema, ref.mask.schema, fits_path.name)


def test_psf_kernels_of_every_cell_with_data_equal_lsst_images(fits_path: Path) -> None:
    ref = lsst_read(str(fits_path))
    assert_psf_match(ccd.open_coadd(fits_path), ref, fits_path.name)


def test_geometry_and_identity_equal_lsst_images(fits_path: Path) -> None:
    ref = lsst_read(str(fits_path))
    ours = ccd.open_coadd(fits_path)
    assert intervals(ours.bbox) == intervals(ref.bbox)
    assert grid_of(ours.grid) == grid_of(ref.grid)
    assert bounds_of(ours.bounds) == bounds_of(ref.bounds)
    assert ours.unit == ref.unit
    assert ours.variance.unit == ref.variance.unit
    for key in ours.mask_fractions:
        assert ours.mask_fractions[key].unit == ref.mask_fractions[key].unit
    assert ours.band == ref.band
    assert ours.skymap == ref.skymap
    assert ours.tract == ref.tract
    assert dict(ours.metadata) == dict(ref.metadata)


def test_patch_equals_lsst_images(fits_path: Path) -> None:
    ref = lsst_read(str(fits_path))
    ours = ccd.open_coadd(fits_path)
    try:
        expected = ref.patch
    except AttributeError:
        with pytest.raises(AttributeError):
            _ = ours.patch
        return
    assert_patch_match(ours.patch, expected)


def test_provenance_tables_equal_lsst_images(fits_path: Path) -> None:
    assert_provenance_match(ccd.open_coadd(fits_path), lsst_read(str(fits_path)), fits_path.name)


def test_aperture_corrections_equal_lsst_images(fits_path: Path) -> None:
    assert_aperture_corrections_match(ccd.open_coadd(fits_path), lsst_read(str(fits_path)))


def test_sky_coordinates_equal_lsst_images(fits_path: Path) -> None:
    ref = lsst_read(str(fits_path))
    ours = ccd.open_coadd(fits_path)
    (y0, y1), (x0, x1) = intervals(ref.bbox)
    y = np.array([y0, y0, y1 - 1, y1 - 1, (y0 + y1) / 2, y0 + 0.25, y1 + 10.5, y0 - 3.75])
    x = np.array([x0, x1 - 1, x0, x1 - 1, (x0 + x1) / 2, x1 - 0.5, x0 - 7.25, x1 + 2.0])
    assert_sky_match(ours, ref, y=y, x=x)
    expected = ref.sky_projection.pixel_to_sky(x=x, y=y)
    one = ours.projection.pixel_to_sky(x=float(x[4]), y=float(y[4]))
    assert abs(one.dec.deg - expected.dec.deg[4]) < 1e-9


# ----------------------------------------------------------------------------- bbox reads


def pick_box(ref: Any, kind: str) -> ccd.Box:
    """A box of the given kind, chosen from lsst-images' view of the file's cells."""
    (y0, y1), (x0, x1) = intervals(ref.bbox)
    (gy, _), (gx, _) = intervals(ref.grid.bbox)
    cy, cx = int(ref.grid.cell_shape.y), int(ref.grid.cell_shape.x)
    with_data = cells_with_data(ref.bounds)
    if kind == "full":
        return ccd.Box.factory[y0:y1, x0:x1]
    if kind == "cell_aligned":
        for i, j in with_data:
            by, bx = gy + i * cy, gx + j * cx
            if y0 <= by and by + cy <= y1 and x0 <= bx and bx + cx <= x1:
                return ccd.Box.factory[by : by + cy, bx : bx + cx]
        raise AssertionError("no cell with data lies wholly inside the bbox")
    if kind == "one_pixel":
        i, j = with_data[len(with_data) // 2]
        py = min(max(gy + i * cy + cy // 2, y0), y1 - 1)
        px = min(max(gx + j * cx + cx // 2, x0), x1 - 1)
        return ccd.Box.factory[py : py + 1, px : px + 1]
    assert kind == "straddling_four_cells"
    missing = cells_of(ref.bounds.missing)
    corners = [(y, x) for y in range(gy, y1, cy) if y0 < y < y1 for x in range(gx, x1, cx) if x0 < x < x1]
    assert corners, "no cell corner strictly inside the bbox"

    def touches_missing(corner: tuple[int, int]) -> bool:
        i, j = (corner[0] - gy) // cy, (corner[1] - gx) // cx
        return bool({(i - 1, j - 1), (i - 1, j), (i, j - 1), (i, j)} & missing)

    y, x = next((c for c in corners if touches_missing(c)), corners[0])
    assert touches_missing((y, x)) or not missing
    h = max(1, min(cy, cx) // 3)
    return ccd.Box.factory[max(y0, y - h) : min(y1, y + h + 1), max(x0, x - h + 1) : min(x1, x + h)]


def assert_subset_matches(ours: ccd.CellCoadd, ref: Any, what: str) -> None:
    assert intervals(ours.bbox) == intervals(ref.bbox), what
    assert bounds_of(ours.bounds) == bounds_of(ref.bounds), what
    assert_planes_match(ours, ref, what)
    assert_psf_match(ours, ref, what)


@pytest.mark.parametrize("kind", BOX_KINDS)
def test_bbox_reads_equal_lsst_images(fits_path: Path, kind: str) -> None:
    box = pick_box(lsst_read(str(fits_path)), kind)
    ref = lsst_read(str(fits_path), intervals(box))
    assert intervals(ref.bbox) == intervals(to_lsst_box(box))
    if kind == "straddling_four_cells":
        assert ref.psf.bounds.bbox.y.size == 2 * ref.grid.cell_shape.y
        assert ref.psf.bounds.bbox.x.size == 2 * ref.grid.cell_shape.x
    opened = ccd.open_coadd(fits_path, bbox=box)
    assert_subset_matches(opened, ref, f"{fits_path.name} open_coadd(bbox={box})")
    sliced = ccd.open_coadd(fits_path).absolute[box.y.start : box.y.stop, box.x.start : box.x.stop]
    assert_subset_matches(sliced, ref, f"{fits_path.name} .absolute[{box}]")
    indexed = ccd.open_coadd(fits_path)[box]
    assert_subset_matches(indexed, ref, f"{fits_path.name} [{box}]")


# ----------------------------------------------------------------------------- chunks


def chunk_edges(start: int, sizes: tuple[int, ...]) -> list[int]:
    return [start, *(start + int(v) for v in np.cumsum(sizes))]


def check_axis_chunks(sizes: tuple[int, ...], start: int, stop: int, origin: int, cell: int,
                      per_chunk: int | None, what: str) -> None:
    """Chunk edges fall on cell edges of the grid (or on the bbox edges), at most ``per_chunk`` cells
    per chunk, and exactly one chunk per cell when ``per_chunk`` is 1."""
    edges = chunk_edges(start, sizes)
    assert edges[0] == start and edges[-1] == stop, what
    assert all((e - origin) % cell == 0 for e in edges[1:-1]), f"{what}: edges {edges} off cell edges"
    if per_chunk is None:
        return
    for a, b in itertools.pairwise(edges):
        assert (b - 1 - origin) // cell - (a - origin) // cell < per_chunk, f"{what}: chunk [{a}, {b})"
    if per_chunk == 1:
        cell_edges = [e for e in range(origin, stop, cell) if e > start]
        assert edges == [start, *cell_edges, stop], f"{what}: one chunk per cell expected, got {edges}"


@pytest.mark.parametrize("chunks", ["cell", (2, 2), "auto"], ids=["cell", "2x2", "auto"])
def test_chunkings_give_identical_values_with_edges_on_cells(fits_path: Path, chunks: Any) -> None:
    import dask

    ref = lsst_read(str(fits_path))
    ours = ccd.open_coadd(fits_path, chunks=chunks)
    (y0, y1), (x0, x1) = intervals(ref.bbox)
    (gy, _), (gx, _) = intervals(ref.grid.bbox)
    cy, cx = int(ref.grid.cell_shape.y), int(ref.grid.cell_shape.x)
    per_chunk = {"cell": (1, 1), "auto": (None, None)}[chunks] if isinstance(chunks, str) else chunks
    planes = coadd_planes(ours)
    for name, array in planes.items():
        check_axis_chunks(array.chunks[0], y0, y1, gy, cy, per_chunk[0], f"{name} y")
        check_axis_chunks(array.chunks[1], x0, x1, gx, cx, per_chunk[1], f"{name} x")
    expected = lsst_planes(ref)
    (computed,) = dask.compute(planes)
    for key, array in computed.items():
        assert_identical(array, expected[key], f"{fits_path.name} chunks={chunks!r}: {key}")


# ----------------------------------------------------------------------------- expected_values.json


@pytest.mark.parametrize("name", REFERENCE_FITS)
def test_reference_files_reproduce_expected_values(reference_dir: Path, expected_values: dict[str, Any],
                                                   name: str) -> None:
    check_expected_values(ccd.open_coadd(reference_dir / name), expected_values[name], name)
