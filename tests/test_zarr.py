"""Zarr archives: FITS -> Zarr -> our reader, and Zarr -> FITS -> lsst-images, against lsst-images' reads.

lsst-images has no Zarr backend, so the oracle is its read of the original FITS reference
file: a coadd opened from FITS, written with ``write_zarr`` and opened again must give the
same pixels (every plane and mask plane), PSF kernels, bounds, patch, provenance, aperture
corrections and sky coordinates; written back to FITS, lsst-images must read it equal to the
original.  Coordinates are absolute (tract) pixels, ``(y, x)`` order, half-open boxes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from oracle import (
    assert_aperture_corrections_match,
    assert_identical,
    assert_patch_match,
    assert_planes_match,
    assert_provenance_match,
    assert_psf_match,
    assert_sky_match,
    assert_table_match,
    bounds_of,
    cells_with_data,
    intervals,
    lsst_planes,
    lsst_read,
)

import cellcoadd_dask as ccd

NAMES = ["synthetic_3x3.fits", "min_default.fits", "many_planes.fits", "synthetic_3x3_offset_cutout.fits"]


def _to_zarr(reference_dir: Path, tmp_path: Path, name: str) -> tuple[Path, ccd.CellCoadd]:
    path = tmp_path / f"{name}.zarr"
    url = ccd.open_coadd(reference_dir / name).write_zarr(path)
    assert url == str(path)
    return path, ccd.open_coadd(path)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_matches_lsst_images(reference_dir: Path, tmp_path: Path, name: str) -> None:
    path, ours = _to_zarr(reference_dir, tmp_path, name)
    ref = lsst_read(str(reference_dir / name))
    assert intervals(ours.bbox) == intervals(ref.bbox)
    assert bounds_of(ours.bounds) == bounds_of(ref.bounds)
    assert_planes_match(ours, ref, name)
    assert_psf_match(ours, ref, name)
    assert_provenance_match(ours, ref, name)
    if ref.aperture_corrections is None:
        assert not ours.aperture_corrections
    else:
        assert_aperture_corrections_match(ours, ref)
    if ref._patch is None:
        with pytest.raises(AttributeError):
            _ = ours.patch
    else:
        assert_patch_match(ours.patch, ref.patch)
    ys = np.array([ref.bbox.y.start, ref.bbox.y.stop - 1], dtype=float)
    xs = np.array([ref.bbox.x.start, ref.bbox.x.stop - 1], dtype=float)
    assert_sky_match(ours, ref, y=ys, x=xs)
    assert ours.band == ref.band
    # Layout 2: the tree in /lsst_json, lsst-images' root attributes, chunk = cell in shards,
    # the mask one packed array with CF flag attributes (int32 arrays past 64 planes).
    group = zarr.open_group(str(path), mode="r")
    assert group.attrs["cellcoadd"] == {"layout": 2}
    lsst = group.attrs["lsst"]
    assert lsst["archive_class"] == "CellCoadd" and lsst["json"] == "lsst_json" and lsst["version"] == 1
    tree = json.loads(np.asarray(group["lsst_json"][...]).tobytes())
    assert tree["image"]["data"]["value"]["source"] == "zarr:/image"
    cell = (ref.bounds.grid.cell_shape.y, ref.bounds.grid.cell_shape.x)
    assert group["image"].chunks == tuple(min(c, n) for c, n in zip(cell, ref.image.array.shape, strict=True))
    assert all(s % c == 0 for s, c in zip(group["image"].shards, group["image"].chunks, strict=True))
    assert group["psf"].chunks[:2] == (1, 1)
    schema = ref.mask.schema
    if len(schema) <= 64:
        mask = group["mask"]
        assert mask.ndim == 2 and mask.dtype.kind == "u"
        assert mask.attrs["flag_meanings"].split() == list(schema.names)
        positions = [n for n, p in enumerate(schema) if p is not None]
        assert mask.attrs["flag_masks"] == [1 << n for n in positions]
        assert tree["mask"]["data"][0]["source"] == "zarr:/mask"
    else:
        n_nonnull = len(schema.names)
        assert sorted(k for k, _ in group["mask"].arrays()) == [str(k) for k in range(-(-n_nonnull // 31))]


@pytest.mark.parametrize("name", NAMES)
def test_layout_1_still_opens(reference_dir: Path, tmp_path: Path, name: str) -> None:
    from cellcoadd_dask.archives.zarr.writer import write_zarr

    path = tmp_path / "old.zarr"
    original = ccd.open_coadd(reference_dir / name)
    write_zarr(original, path, layout=1)
    group = zarr.open_group(str(path), mode="r")
    attribute = group.attrs["cellcoadd"]
    assert attribute["container_version"] == 1
    assert attribute["tree"]["image"]["data"]["value"]["source"] == "zarr:image"
    n_nonnull = len(original.mask.schema.names)
    assert sorted(k for k, _ in group["mask"].arrays()) == [str(k) for k in range(max(1, -(-n_nonnull // 31)))]
    ours = ccd.open_coadd(path)
    ref = lsst_read(str(reference_dir / name))
    assert_planes_match(ours, ref, name)
    assert_psf_match(ours, ref, name)
    assert_provenance_match(ours, ref, name)


def _lsst_backgrounds(coadd: object) -> dict[str, np.ndarray]:
    out = {}
    for name in coadd.backgrounds.keys():  # type: ignore[attr-defined]
        field = coadd.backgrounds[name].field  # type: ignore[attr-defined]
        out[name] = np.asarray(field.data if hasattr(field, "data") else field.coefficients)
    return out


@pytest.mark.parametrize("name", ["synthetic_3x3_offset_cutout.fits", "min_default.fits"])
def test_zarr_to_fits_is_read_by_lsst_images(reference_dir: Path, tmp_path: Path, name: str) -> None:
    _, ours = _to_zarr(reference_dir, tmp_path, name)
    fits_path = tmp_path / "back.fits"
    ours.write_fits(fits_path)
    original = lsst_read(str(reference_dir / name))
    written = lsst_read(str(fits_path))
    assert intervals(written.bbox) == intervals(original.bbox)
    got, expected = lsst_planes(written), lsst_planes(original)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert_identical(got[key], expected[key], f"{name}: {key}")
    assert bounds_of(written.psf.bounds) == bounds_of(original.psf.bounds)
    for i, j in cells_with_data(original.psf.bounds):
        from lsst.images.cells import CellIJ

        assert_identical(written.psf[CellIJ(i=i, j=j)].array, original.psf[CellIJ(i=i, j=j)].array, f"PSF {(i, j)}")
    assert_table_match(written.provenance.inputs, original.provenance.inputs, "inputs")
    assert_table_match(written.provenance.contributions, original.provenance.contributions, "contributions")
    assert sorted(written.aperture_corrections) == sorted(original.aperture_corrections)
    backgrounds = _lsst_backgrounds(written)
    for key, values in _lsst_backgrounds(original).items():
        assert_identical(backgrounds[key], values, f"background {key}")


def test_one_cell_reads_only_its_chunk(reference_dir: Path, tmp_path: Path) -> None:
    source = ccd.open_coadd(reference_dir / "synthetic_3x3.fits")
    path = tmp_path / "cells.zarr"
    from cellcoadd_dask.archives.zarr.writer import write_zarr

    write_zarr(source, path, layout=1)  # one object per chunk (layout 2 shards them)
    # Break every image chunk but cell (1, 1)'s: reading any of them must fail.
    chunk_dir = path / "image" / "c"
    chunks = sorted(p for p in chunk_dir.rglob("*") if p.is_file())
    keep = chunk_dir / "1" / "1"
    # One file per cell (a missing cell's all-zero chunk is left unwritten, read as the fill value).
    assert keep in chunks and len(chunks) >= 8 and all(p.parent.parent == chunk_dir for p in chunks)
    for chunk in chunks:
        if chunk != keep:
            chunk.write_bytes(b"not a zstd frame")
    coadd = ccd.open_coadd(path, chunks="cell")
    assert coadd.image.array.chunks == ((150, 150, 150), (150, 150, 150))
    box = ccd.Box.factory[1350:1500, 1800:1950]  # exactly cell (1, 1) of the coadd
    cell = coadd[box].image.array
    assert cell.npartitions == 1
    assert_identical(cell.compute(), source[box].image.array.compute(), "cell (1, 1)")
    with pytest.raises(ccd.ArchiveFormatError, match="cannot be decoded"):  # any chunk but (1, 1)
        coadd.image.array.compute()


def test_bbox_read(reference_dir: Path, tmp_path: Path) -> None:
    path, _ = _to_zarr(reference_dir, tmp_path, "synthetic_3x3.fits")
    box = ccd.Box.factory[1290:1410, 1700:1980]
    ours = ccd.CellCoadd.read_zarr(path, bbox=box)
    ref = lsst_read(str(reference_dir / "synthetic_3x3.fits"), ((1290, 1410), (1700, 1980)))
    assert intervals(ours.bbox) == intervals(ref.bbox)
    assert_planes_match(ours, ref, "bbox")
    with pytest.raises(ccd.BoundsError):
        ccd.CellCoadd.read_zarr(path, bbox=ccd.Box.factory[0:10, 0:10])


def test_memory_store_round_trip(reference_dir: Path) -> None:
    url = "memory://cellcoadd-tests/min.zarr"
    ccd.open_coadd(reference_dir / "min_default.fits").write_zarr(url)
    ours = ccd.open_coadd(url)
    ref = lsst_read(str(reference_dir / "min_default.fits"))
    assert_planes_match(ours, ref, "memory")
    assert_psf_match(ours, ref, "memory")
    assert_provenance_match(ours, ref, "memory")
    with pytest.raises(ccd.CellCoaddError, match="exists"):
        ours.write_zarr(url, overwrite=False)


def test_missing_or_newer_attribute(tmp_path: Path) -> None:
    path = tmp_path / "empty.zarr"
    group = zarr.open_group(str(path), mode="w")
    with pytest.raises(ccd.ArchiveFormatError, match="cellcoadd") as info:
        ccd.open_coadd(path)
    assert str(path) in str(info.value)
    group.attrs["cellcoadd"] = {"container_version": 2, "tree": {}}
    with pytest.raises(ccd.ArchiveFormatError, match="container_version 2") as info:
        ccd.open_coadd(path)
    assert str(path) in str(info.value)
    with pytest.raises(ccd.ArchiveFormatError):
        ccd.open_coadd(tmp_path / "absent.zarr")


def test_overwrite_is_atomic_and_leaves_nothing_behind(reference_dir: Path, tmp_path: Path) -> None:
    path, _ = _to_zarr(reference_dir, tmp_path, "many_planes.fits")
    with pytest.raises(ccd.CellCoaddError, match="exists"):
        ccd.open_coadd(reference_dir / "min_default.fits").write_zarr(path, overwrite=False)
    ccd.open_coadd(reference_dir / "min_default.fits").write_zarr(path)
    assert sorted(os.listdir(tmp_path)) == [path.name]
    ours = ccd.open_coadd(path)
    assert_planes_match(ours, lsst_read(str(reference_dir / "min_default.fits")), "overwritten")
    tree = json.loads(np.asarray(zarr.open_group(str(path), mode="r")["lsst_json"][...]).tobytes())
    source = tree["provenance"]["inputs"]["columns"][0]["data"]["source"]
    assert source.startswith("zarr:/lsst/tables/provenance/inputs/")


def _corpus_fits(reference_dir: Path) -> list[Path]:
    return sorted([*reference_dir.glob("*.fits"), *(reference_dir / "variants").glob("*.fits")])


def test_every_corpus_fits_file_survives_zarr_and_back(reference_dir: Path, tmp_path: Path) -> None:
    """FITS -> Zarr 2 -> FITS, read by lsst-images: equal to its read of the original, every field."""
    from lsst.images.cells import CellIJ

    files = _corpus_fits(reference_dir)
    assert files, reference_dir
    for path in files:
        what = path.name
        zarr_path = tmp_path / f"{what}.zarr"
        back = tmp_path / f"{what}.back.fits"
        ccd.open_coadd(path).write_zarr(zarr_path)
        ccd.open_coadd(zarr_path).write_fits(back)
        original, written = lsst_read(str(path)), lsst_read(str(back))
        assert intervals(written.bbox) == intervals(original.bbox), what
        got, expected = lsst_planes(written), lsst_planes(original)
        assert sorted(got) == sorted(expected), what
        for key in expected:
            # Quantized planes are decoded once and stored again losslessly: the values are kept exactly.
            assert_identical(got[key], expected[key], f"{what}: {key}")
        assert list(written.mask.schema.names) == list(original.mask.schema.names), what
        for i, j in cells_with_data(original.psf.bounds):
            ij = CellIJ(i=i, j=j)
            assert_identical(written.psf[ij].array, original.psf[ij].array, f"{what}: PSF {(i, j)}")
        if original._provenance is not None:
            assert_table_match(written.provenance.inputs, original.provenance.inputs, f"{what}: inputs")
            assert_table_match(written.provenance.contributions, original.provenance.contributions, what)
        assert sorted(written.aperture_corrections or {}) == sorted(original.aperture_corrections or {}), what
        if original.backgrounds is not None:
            backgrounds = _lsst_backgrounds(written)
            for key, values in _lsst_backgrounds(original).items():
                assert_identical(backgrounds[key], values, f"{what}: background {key}")
        ours_tree = json.loads(np.asarray(zarr.open_group(str(zarr_path), mode="r")["lsst_json"][...]).tobytes())
        assert all(s.startswith("zarr:/") for s in _sources(ours_tree)), what


def _sources(tree: object) -> list[str]:
    if isinstance(tree, dict):
        if isinstance(tree.get("source"), str):
            return [tree["source"]]
        return [s for value in tree.values() for s in _sources(value)]
    if isinstance(tree, list):
        return [s for value in tree for s in _sources(value)]
    return []


@pytest.mark.parametrize("keep_bits", [4, 12])
def test_lossy_mode_keeps_its_documented_error_bound(reference_dir: Path, tmp_path: Path, keep_bits: int) -> None:
    source = ccd.open_coadd(reference_dir / "synthetic_3x3.fits")
    lossless = tmp_path / "lossless.zarr"
    lossy = tmp_path / f"lossy{keep_bits}.zarr"
    source.write_zarr(lossless)
    source.write_zarr(lossy, keep_bits=keep_bits)
    ours = ccd.open_coadd(lossy)
    bound = 2.0 ** -(keep_bits + 1)
    for name in ("image", "variance", "noise_realizations/0", "mask_fractions/rejected"):
        plane = source.image if name == "image" else source.variance if name == "variance" else None
        if plane is None:
            kind, _, key = name.partition("/")
            plane = source.noise_realizations[int(key)] if kind == "noise_realizations" else source.mask_fractions[key]
        got_plane = {"image": ours.image, "variance": ours.variance}.get(name)
        if got_plane is None:
            kind, _, key = name.partition("/")
            got_plane = ours.noise_realizations[int(key)] if kind == "noise_realizations" else ours.mask_fractions[key]
        expected, got = np.asarray(plane.array.compute()), np.asarray(got_plane.array.compute())
        assert got.dtype == expected.dtype
        exact = ~np.isfinite(expected) | (expected == 0)
        assert_identical(got[exact], expected[exact], f"{name}: non-finite and zero values")
        finite = ~exact
        assert np.all(np.abs(got[finite] - expected[finite]) <= bound * np.abs(expected[finite])), name
    # Mask and PSF stay lossless.
    assert_identical(ours.mask.array.compute(), source.mask.array.compute(), "mask")
    assert_identical(ours.psf.array.compute(), source.psf.array.compute(), "psf")

    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    if keep_bits <= 8:
        assert size(lossy) < 0.8 * size(lossless)
    with pytest.raises(ccd.ValidationError, match="keep_bits"):
        source.write_zarr(tmp_path / "bad.zarr", keep_bits=0)
