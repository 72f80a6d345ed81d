"""Our FITS writer against lsst-images.

Every reference file and every lsst-images variant is read by us, written by us, and
read back by lsst-images: everything it holds must equal lsst-images' read of the
original.  Lossy writes must reproduce lsst-images' quantization bit for bit; cut-outs
must equal lsst-images' own cut-outs of the same box; re-writing quantized data must not
drift; what this version does not interpret (unknown JSON fields, HDUs only they
reference) must be passed through.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from lsst_files import VARIANTS, make_coadd
from oracle import (
    assert_identical,
    assert_mask_schema_match,
    assert_patch_match,
    assert_planes_match,
    assert_psf_match,
    assert_table_match,
    bounds_of,
    cells_with_data,
    fits_layout,
    intervals,
    lsst_planes,
    lsst_read,
    to_lsst_box,
)
from paths import REFERENCE_FITS

import cellcoadd_dask as ccd
from cellcoadd_dask.archives.fits.layout import read_container
from cellcoadd_dask.fetch import fetch_stats

REFERENCE_JSON = ("cell_coadd_min_as_shipped.json", "synthetic_3x3_cutout.json")
VARIANT_FILES = tuple(VARIANTS)
CASES = (
    [("reference", name) for name in (*REFERENCE_FITS, *REFERENCE_JSON)]
    + [("variant", name) for name in VARIANT_FILES]
)
LOSSY_VARIANTS = ("rice_dither1.fits", "rice_no_dither.fits", "gzip2_quantized.fits", "lossy_nan.fits")


def _source(request: pytest.FixtureRequest, reference_dir: Path, kind: str, name: str) -> Path:
    if kind == "reference":
        return reference_dir / name
    return request.getfixturevalue("lsst_variants")[name]


def _lsst_sky(coadd: Any, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sky = coadd.sky_projection.pixel_to_sky(x=x, y=y)
    return np.asarray(sky.ra.deg), np.asarray(sky.dec.deg)


def assert_lsst_coadds_equal(written: Any, original: Any, what: str, *, provenance: bool = True) -> None:
    """Two coadds read by lsst-images hold the same data model (pixels bit for bit)."""
    assert intervals(written.bbox) == intervals(original.bbox), what
    got, expected = lsst_planes(written), lsst_planes(original)
    assert sorted(got) == sorted(expected), what
    for key, array in expected.items():
        assert_identical(got[key], array, f"{what}: {key}")
    assert_mask_schema_match(written.mask.schema, original.mask.schema, what)
    assert bounds_of(written.psf.bounds) == bounds_of(original.psf.bounds), f"{what}: PSF bounds"
    from lsst.images.cells import CellIJ

    for i, j in cells_with_data(original.psf.bounds):
        assert_identical(written.psf[CellIJ(i=i, j=j)].array, original.psf[CellIJ(i=i, j=j)].array,
                         f"{what}: PSF of cell {(i, j)}")
    assert written.unit == original.unit and written.band == original.band, what
    assert dict(written.metadata.native) == dict(original.metadata.native), what
    ys = np.array([original.bbox.y.start, original.bbox.y.stop - 1], dtype=float)
    xs = np.array([original.bbox.x.start, original.bbox.x.stop - 1], dtype=float)
    for a, b in zip(_lsst_sky(written, ys, xs), _lsst_sky(original, ys, xs), strict=True):
        assert np.all(np.abs(a - b) < 1e-12), f"{what}: sky"
    if original._patch is None:
        assert written._patch is None, what
    else:
        assert_patch_match(ccd_patch(written.patch), original.patch)
    expected_ap = original.aperture_corrections
    assert sorted(written.aperture_corrections) == sorted(expected_ap), what
    for name, field in expected_ap.items():
        assert bounds_of(written.aperture_corrections[name].bounds) == bounds_of(field.bounds), name
        for i, j in cells_with_data(field.bounds):
            assert written.aperture_corrections[name].value_in_cell(CellIJ(i=i, j=j)) == field.value_in_cell(
                CellIJ(i=i, j=j)
            ), f"{what}: {name} {(i, j)}"
    if provenance:
        if getattr(original, "_provenance", None) is None:
            with pytest.raises(AttributeError):
                _ = written.provenance
        else:
            assert_table_match(written.provenance.inputs, original.provenance.inputs, f"{what} inputs")
            assert_table_match(written.provenance.contributions, original.provenance.contributions,
                               f"{what} contributions")
    assert list(written.backgrounds.keys()) == list(original.backgrounds.keys()), what
    for name in original.backgrounds.keys():
        a, b = written.backgrounds[name], original.backgrounds[name]
        assert a.description == b.description
        assert type(a.field) is type(b.field)
        if hasattr(b.field, "data"):
            assert_identical(np.asarray(a.field.data), np.asarray(b.field.data), f"{what}: background {name}")


def ccd_patch(patch: Any) -> ccd.PatchDefinition:
    """An lsst-images patch as ours, to reuse `assert_patch_match`."""
    return ccd.PatchDefinition(
        id=patch.id,
        index=ccd.YX(y=patch.index.y, x=patch.index.x),
        inner_bbox=ccd.Box.factory[patch.inner_bbox.y.start : patch.inner_bbox.y.stop,
                                   patch.inner_bbox.x.start : patch.inner_bbox.x.stop],
        cells=ccd.CellGrid(
            bbox=ccd.Box.factory[patch.cells.bbox.y.start : patch.cells.bbox.y.stop,
                                 patch.cells.bbox.x.start : patch.cells.bbox.x.stop],
            cell_shape=ccd.YX(y=patch.cells.cell_shape.y, x=patch.cells.cell_shape.x),
        ),
    )


def _tree_without_sources(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _tree_without_sources(v) for k, v in tree.items() if k != "source"}
    if isinstance(tree, list):
        return [_tree_without_sources(v) for v in tree]
    return tree


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}:{n}" for k, n in CASES])
def test_round_trip_through_lsst_images(
    request: pytest.FixtureRequest, reference_dir: Path, tmp_path: Path, kind: str, name: str
) -> None:
    source = _source(request, reference_dir, kind, name)
    out = tmp_path / "written.fits"
    ccd.open_coadd(source).write_fits(out)
    original = lsst_read(str(source))
    assert_lsst_coadds_equal(lsst_read(str(out)), original, f"{name} rewritten")
    # And our own reader reads what we wrote as lsst-images reads the original.
    ours = ccd.open_coadd(out)
    assert_planes_match(ours, original, f"{name} rewritten, read by us")
    assert_psf_match(ours, original, f"{name} rewritten, read by us")


@pytest.mark.parametrize("name", REFERENCE_FITS)
def test_round_trip_keeps_the_tree(reference_dir: Path, tmp_path: Path, name: str) -> None:
    """Our tree of a rewritten lsst-images file equals the original tree (same keys, order, values)."""
    out = tmp_path / "written.fits"
    ccd.open_coadd(reference_dir / name).write_fits(out)
    assert read_container(str(out)).tree == read_container(str(reference_dir / name)).tree


def test_layout_follows_the_format(reference_dir: Path, tmp_path: Path) -> None:
    """HDU order, names, tiles = cells, INDEX rows and primary addresses, as astropy sees the file."""
    from astropy.io import fits

    source = reference_dir / "synthetic_3x3.fits"
    out = tmp_path / "written.fits"
    ccd.open_coadd(source).write_fits(out)
    with fits.open(source, disable_image_compression=True) as ref, fits.open(out, disable_image_compression=True) as hl:
        assert [(h.name, h.header.get("EXTVER", 1)) for h in hl] == [(h.name, h.header.get("EXTVER", 1)) for h in ref]
        primary = hl[0].header
        assert primary["FMTVER"] == 1
        assert primary["DATAMODL"] == "https://images.lsst.io/schemas/cell_coadd-1.0.0"
        size = out.stat().st_size
        assert primary["INDXADDR"] + primary["INDXSIZE"] == size
        assert primary["JSONADDR"] + primary["JSONSIZE"] == primary["INDXADDR"]
        for hdu in hl[1:]:
            assert "DATE" in hdu.header
        image = hl["IMAGE"].header
        assert (image["ZTILE1"], image["ZTILE2"]) == (150, 150)
        assert image["ZCMPTYPE"] == "GZIP_2"
        assert image["BUNIT"] == "nJy" and hl["VARIANCE"].header["BUNIT"] == "nJy2"
        assert (image["CRVAL1A"], image["CRVAL2A"]) == (1650.0, 1200.0)
        assert image["CTYPE1"] == "RA---TAN"
        assert hl["MASK"].header["MSKN0000"] == "NO_DATA"
        index = hl["INDEX"].data
        layout = {(h.extname, h.extver): h for h in fits_layout(out)}
        for row in index:
            name = row["EXTNAME"].strip()
            if name:
                assert layout[(name, int(row["EXTVER"]))].header[0] == row["HDRADDR"], name


def test_json_tree_is_valid_for_lsst_images_schema(reference_dir: Path, tmp_path: Path) -> None:
    """The tree we write validates against lsst-images' own pydantic model of cell_coadd."""
    from lsst.images.cells._coadd import CellCoaddSerializationModel

    out = tmp_path / "written.fits"
    ccd.open_coadd(reference_dir / "synthetic_3x3.fits").write_fits(out)
    tree = read_container(str(out)).tree
    CellCoaddSerializationModel.model_validate_json(json.dumps(tree))


# ----------------------------------------------------------------------------- lossy


def _lsst_lossy_kwargs(name: str) -> dict[str, Any]:
    return dict(VARIANTS[name].write_kwargs)


@pytest.mark.parametrize("name", LOSSY_VARIANTS)
def test_lossy_matches_lsst_images_bit_for_bit(
    name: str, lsst_variants: dict[str, Path], tmp_path: Path
) -> None:
    """For the same in-memory coadd and seed, our lossy file decodes to lsst-images' lossy pixels."""
    variant = VARIANTS[name]
    exact = tmp_path / "exact.fits"
    variant.build().write(str(exact))  # lossless: our reader then holds exactly the in-memory coadd
    kwargs = _lsst_lossy_kwargs(name)
    options = kwargs["compression_options"]
    ours = tmp_path / "ours.fits"
    ccd.open_coadd(exact).write_fits(
        ours,
        image_compression=options["image"],
        variance_compression=options["variance"],
        compression_seed=kwargs["compression_seed"],
    )
    assert_lsst_coadds_equal(lsst_read(str(ours)), lsst_read(str(lsst_variants[name])), f"{name} lossy")
    from astropy.io import fits

    with fits.open(ours, disable_image_compression=True) as hl, fits.open(
        lsst_variants[name], disable_image_compression=True
    ) as ref:
        for extname in ("IMAGE", "VARIANCE", "NOISE_REALIZATIONS/0"):
            for key in ("ZCMPTYPE", "ZQUANTIZ", "ZDITHER0", "ZTILE1", "ZTILE2"):
                assert hl[extname].header.get(key) == ref[extname].header.get(key), (extname, key)


def test_lossy_rewrite_does_not_drift(reference_dir: Path, tmp_path: Path) -> None:
    """A quantized plane written lossy again is copied, not quantized a second time."""
    source = reference_dir / "synthetic_3x3_lossy.fits"
    lossy = ccd.FitsCompressionOptions.LOSSY
    first = tmp_path / "first.fits"
    second = tmp_path / "second.fits"
    ccd.open_coadd(source).write_fits(first, image_compression=lossy, variance_compression=lossy,
                                      compression_seed=17)
    ccd.open_coadd(first).write_fits(second, image_compression=lossy, variance_compression=lossy,
                                     compression_seed=99)
    original = lsst_read(str(source))
    assert_lsst_coadds_equal(lsst_read(str(second)), original, "lossy twice")
    # Re-quantizing would change the pixels: check that the test can tell.
    requantized = tmp_path / "requantized.fits"
    lossless = tmp_path / "lossless.fits"
    ccd.open_coadd(source).write_fits(lossless)
    ccd.open_coadd(lossless).write_fits(requantized, image_compression=lossy, compression_seed=99)
    assert not np.array_equal(lsst_planes(lsst_read(str(requantized)))["image"], lsst_planes(original)["image"])


def test_reordered_quantized_planes_are_not_copied_under_wrong_names(reference_dir: Path, tmp_path: Path) -> None:
    """Only a plane stored under the very name it is written as is copied as stored."""
    c = ccd.open_coadd(reference_dir / "synthetic_3x3_lossy.fits")
    assert len(c.noise_realizations) == 2
    swapped = ccd.CellCoadd(
        c.image, mask=c.mask, variance=c.variance, mask_fractions=c.mask_fractions,
        noise_realizations=list(reversed(c.noise_realizations)), projection=c.projection, band=c.band,
        psf=c.psf, patch=c.patch, provenance=c._provenance, aperture_corrections=c._aperture_corrections,
        backgrounds=c.backgrounds, metadata=c.metadata, stored=c._stored,
    )
    out = tmp_path / "swapped.fits"
    lossy = ccd.FitsCompressionOptions.LOSSY
    swapped.write_fits(out, image_compression=lossy, compression_seed=3)
    written = lsst_read(str(out))
    original = lsst_read(str(reference_dir / "synthetic_3x3_lossy.fits"))
    # The image is copied as stored; the swapped noise realizations are quantized again.
    assert_identical(written.image.array, original.image.array, "image")
    for n in (0, 1):
        got = written.noise_realizations[n].array
        expected = original.noise_realizations[1 - n].array
        other = original.noise_realizations[n].array
        assert np.nanmax(np.abs(got - expected)) < 0.1 * np.nanmax(np.abs(got - other)), n


def test_compression_options_of_lsst_images_are_accepted(reference_dir: Path, tmp_path: Path) -> None:
    from lsst.images.fits import FitsCompressionAlgorithm, FitsCompressionOptions

    out = tmp_path / "gzip1.fits"
    ccd.open_coadd(reference_dir / "min_default.fits").write_fits(
        out, mask_compression=FitsCompressionOptions(algorithm=FitsCompressionAlgorithm.RICE_1),
        psf_compression=FitsCompressionOptions(algorithm=FitsCompressionAlgorithm.GZIP_1),
        variance_compression=None,
    )
    from astropy.io import fits

    with fits.open(out, disable_image_compression=True) as hl:
        assert hl["MASK"].header["ZCMPTYPE"] == "RICE_1"
        assert hl["PSF"].header["ZCMPTYPE"] == "GZIP_1"
        assert hl["VARIANCE"].header["XTENSION"] == "IMAGE"
    assert_lsst_coadds_equal(lsst_read(str(out)), lsst_read(str(reference_dir / "min_default.fits")), "options")


# ----------------------------------------------------------------------------- cut-outs


CUTOUTS = {
    "one_cell": ((1350, 1500), (1800, 1950)),
    "cell_aligned_2x2": ((1200, 1500), (1800, 2100)),
    "off_grid": ((1275, 1530), (1700, 1999)),
    "over_missing_cell": ((1500, 1650), (2000, 2100)),
    "one_pixel": ((1333, 1334), (1777, 1778)),
}


@pytest.mark.parametrize("box", list(CUTOUTS), ids=list(CUTOUTS))
def test_cutouts_equal_lsst_images_cutouts(reference_dir: Path, tmp_path: Path, box: str) -> None:
    source = reference_dir / "synthetic_3x3.fits"
    (y0, y1), (x0, x1) = CUTOUTS[box]
    out = tmp_path / "cutout.fits"
    ccd.open_coadd(source).absolute[y0:y1, x0:x1].write_fits(out)
    from lsst.images import Box

    expected = lsst_read(str(source))[Box.factory[y0:y1, x0:x1]]
    written = lsst_read(str(out))
    assert_lsst_coadds_equal(written, expected, f"cutout {box}", provenance=False)
    # Provenance: the same contributions; inputs once each (lsst-images repeats them per contribution).
    if expected.provenance is not None and len(expected.provenance.contributions):
        keys = ["cell_i", "cell_j", "visit", "detector"]
        got_rows = written.provenance.contributions.copy()
        expected_rows = expected.provenance.contributions.copy()
        got_rows.sort(keys)
        expected_rows.sort(keys)
        assert_table_match(got_rows, expected_rows, box)
        got = {tuple(r) for r in written.provenance.inputs["visit", "detector"]}
        assert got == {tuple(r) for r in expected.provenance.inputs["visit", "detector"]}
        assert len(written.provenance.inputs) == len(got)


def test_cutout_reads_only_its_tiles(tmp_path: Path) -> None:
    """Writing a one-cell cut-out of a big file reads that cell's tiles and metadata, nothing else."""
    coadd = make_coadd(cell=64, n_cells=(8, 8), n_fractions=1, n_noise=1, seed=3)
    big = tmp_path / "big.fits"
    coadd.write(str(big))
    total = big.stat().st_size
    opened = ccd.open_coadd(big)
    cell = opened.grid.bbox_of(ccd.CellIJ(i=4, j=4))
    with fetch_stats() as stats:
        opened[cell].write_fits(tmp_path / "cell.fits")
    layout = fits_layout(big)
    tile_bytes = 0
    for hdu in layout:
        if hdu.tiles and hdu.extname != "PSF":
            local = (cell.y.start - coadd.bbox.y.start, cell.x.start - coadd.bbox.x.start)
            start, stop = hdu.tiles[hdu.tile_of(local)] or (0, 0)
            tile_bytes += stop - start
    assert stats.nbytes < tile_bytes + 0.1 * total, (stats.nbytes, tile_bytes, total)
    assert stats.nbytes < 0.25 * total


# ----------------------------------------------------------------------------- pass-through


def _hdu_bytes(hdu: Any) -> tuple[bytes, bytes]:
    """Header and data bytes of one astropy HDU as it would be written (not primary)."""
    from astropy.io import fits

    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    raw = buffer.getvalue()[2880:]
    header_size = len(hdu.header.tostring())
    return raw[:header_size], raw[header_size:]


def _with_extras(source: Path, out: Path) -> None:
    """``source`` plus an unknown top-level field, an unknown nested field and an extra HDU it references.

    Built with astropy: everything before the JSON HDU is kept byte for byte; the JSON,
    an extra image HDU before it, and the INDEX are written anew, and the primary
    addresses patched.
    """
    from astropy.io import fits

    raw = source.read_bytes()
    with fits.open(source) as hl:
        primary = hl[0].header.copy()
    json_addr = primary["JSONADDR"]
    tree = read_container(str(source)).tree
    tree = json.loads(json.dumps(tree))
    tree["future_thing"] = {"note": "kept", "data": {"source": "fits:FUTURE/THING", "shape": [3, 4],
                                                     "datatype": "int32", "byteorder": "big"}}
    tree["image"]["future_nested"] = [1, 2, 3]
    extra = fits.ImageHDU(np.arange(12, dtype=np.int32).reshape(3, 4), name="FUTURE/THING")
    extra_header, extra_data = _hdu_bytes(extra)
    body = raw[:json_addr] + extra_header + extra_data
    text = json.dumps(tree, separators=(",", ":")).encode()
    json_hdu = fits.BinTableHDU.from_columns([fits.Column("JSON", "PB", array=[np.frombuffer(text, np.uint8)])],
                                             name="JSON")
    json_header, json_data = _hdu_bytes(json_hdu)
    new_json_addr = len(body)
    body += json_header + json_data
    with fits.open(io.BytesIO(body), disable_image_compression=True) as hl:
        rows = []
        for hdu in hl:
            info = hdu.fileinfo()
            rows.append((hdu.header.get("EXTNAME", ""), hdu.header.get("EXTVER", 1),
                         hdu.header.get("XTENSION", "IMAGE"), bool(hdu.header.get("ZIMAGE", False)),
                         info["hdrLoc"], info["datLoc"], info["datSpan"]))
    width = max(len(r[0]) for r in rows)
    index = fits.BinTableHDU.from_columns([
        fits.Column("EXTNAME", f"A{width}", array=[r[0] for r in rows]),
        fits.Column("EXTVER", "J", array=[r[1] for r in rows]),
        fits.Column("XTENSION", "A8", array=[r[2] for r in rows]),
        fits.Column("ZIMAGE", "L", array=np.array([r[3] for r in rows])),
        fits.Column("HDRADDR", "K", array=[r[4] for r in rows]),
        fits.Column("DATADDR", "K", array=[r[5] for r in rows]),
        fits.Column("DATSIZE", "K", array=[r[6] for r in rows]),
    ], name="INDEX")
    index_header, index_data = _hdu_bytes(index)
    index_addr = len(body)
    body += index_header + index_data
    primary["INDXADDR"] = index_addr
    primary["INDXSIZE"] = len(index_header) + len(index_data)
    primary["JSONADDR"] = new_json_addr
    primary["JSONSIZE"] = index_addr - new_json_addr
    head = primary.tostring().encode()
    out.write_bytes(head + body[len(head):])


def test_unknown_fields_and_hdus_are_passed_through(reference_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "extras.fits"
    _with_extras(reference_dir / "synthetic_3x3.fits", source)
    lsst_read(str(source))  # lsst-images reads the file (ignoring what it does not know)
    out = tmp_path / "written.fits"
    ccd.open_coadd(source).write_fits(out)
    tree = read_container(str(out)).tree
    assert tree["future_thing"]["note"] == "kept"
    assert tree["image"]["future_nested"] == [1, 2, 3]
    assert list(tree)[-1] == "schema_url"
    from astropy.io import fits

    with fits.open(out) as hl:
        assert np.array_equal(hl["FUTURE/THING"].data, np.arange(12).reshape(3, 4))
    assert_lsst_coadds_equal(lsst_read(str(out)), lsst_read(str(reference_dir / "synthetic_3x3.fits")), "extras")
    # The background data HDU (referenced by a field we keep verbatim) is carried too.
    with fits.open(out) as hl:
        assert "BACKGROUND/FIELDS/SKY_SPLINE/DATA" in [h.name for h in hl]


def test_unknown_fields_and_their_arrays_survive_every_archive(reference_dir: Path, tmp_path: Path) -> None:
    """FITS with extras -> Zarr -> JSON -> FITS: the unknown fields, the array only they reference and
    the background data all arrive, and lsst-images reads the result as the original."""
    source = tmp_path / "extras.fits"
    _with_extras(reference_dir / "synthetic_3x3_offset_cutout.fits", source)
    zarr_url = ccd.open_coadd(source).write(tmp_path / "extras.zarr")
    json_url = ccd.open_coadd(zarr_url).write(tmp_path / "extras.json")
    out = tmp_path / "back.fits"
    ccd.open_coadd(json_url).write(out)
    for url in (zarr_url, json_url, str(out)):
        tree = ccd.open_coadd(url).stored.tree
        assert tree["future_thing"]["note"] == "kept", url
        assert tree["image"]["future_nested"] == [1, 2, 3], url
    json_tree = json.loads((tmp_path / "extras.json").read_text())
    assert json_tree["future_thing"]["data"] == {"data": np.arange(12).reshape(3, 4).tolist(), "datatype": "int32"}
    # Inline values stay inline (a FITS tree may hold them); an array read from Zarr became an array.
    assert read_container(str(out)).tree["future_thing"]["data"] == json_tree["future_thing"]["data"]
    zarr_tree = json.loads(np.asarray(zarr.open_group(zarr_url, mode="r")["lsst_json"][...]).tobytes())
    path = zarr_tree["future_thing"]["data"]["source"].removeprefix("zarr:")
    assert np.array_equal(zarr.open_group(zarr_url, mode="r")[path.lstrip("/")][...], np.arange(12).reshape(3, 4))
    assert_lsst_coadds_equal(lsst_read(str(out)), lsst_read(str(reference_dir / "synthetic_3x3_offset_cutout.fits")),
                             "extras through every archive")


def test_tree_without_sources_is_stable_for_cutout(reference_dir: Path, tmp_path: Path) -> None:
    """A cut-out's tree differs from the original's only where the geometry says it must."""
    source = reference_dir / "synthetic_3x3.fits"
    out = tmp_path / "cut.fits"
    ccd.open_coadd(source).absolute[1200:1500, 1650:1950].write_fits(out)
    a = _tree_without_sources(read_container(str(out)).tree)
    b = _tree_without_sources(read_container(str(source)).tree)
    assert a["image"]["yx0"] == [1200, 1650] and a["image"]["data"]["value"]["shape"] == [300, 300]
    assert a["sky_projection"] == b["sky_projection"]
    assert a["patch"] == b["patch"] and a["band"] == b["band"] and a["metadata"] == b["metadata"]
    assert a["psf"]["bounds"]["bbox"] == {"y": {"start": 1200, "stop": 1500}, "x": {"start": 1650, "stop": 1950}}


# ----------------------------------------------------------------------------- in-memory and distributed


def test_write_from_memory_coadd(reference_dir: Path, tmp_path: Path) -> None:
    """A coadd whose planes are plain numpy arrays (no archive behind them) writes the same file."""
    read = ccd.open_coadd(reference_dir / "synthetic_3x3.fits")
    persisted = read.persist()
    out = tmp_path / "persisted.fits"
    persisted.write_fits(out)
    assert_lsst_coadds_equal(lsst_read(str(out)), lsst_read(str(reference_dir / "synthetic_3x3.fits")), "persisted")


def test_write_on_a_distributed_cluster(reference_dir: Path, tmp_path: Path, dask_client: Any) -> None:
    """With a distributed client, tiles are read and compressed on the workers; same result."""
    out = tmp_path / "distributed.fits"
    ccd.open_coadd(reference_dir / "synthetic_3x3.fits").write_fits(out)
    assert_lsst_coadds_equal(lsst_read(str(out)), lsst_read(str(reference_dir / "synthetic_3x3.fits")),
                             "distributed")


def test_memory_filesystem_destination(reference_dir: Path, tmp_path: Path) -> None:
    import fsspec

    url = "memory://cellcoadd-tests/out.fits"
    ccd.open_coadd(reference_dir / "min_default.fits").write_fits(url)
    local = tmp_path / "copy.fits"
    with fsspec.open(url, "rb") as f:
        local.write_bytes(f.read())
    assert_lsst_coadds_equal(lsst_read(str(local)), lsst_read(str(reference_dir / "min_default.fits")), "memory")
    fsspec.filesystem("memory").rm(url)


def test_source_file_is_not_touched(reference_dir: Path, tmp_path: Path) -> None:
    """Writing over the file being read is refused by neither side of the atomic rename: it works."""
    copy = tmp_path / "self.fits"
    shutil.copy(reference_dir / "min_default.fits", copy)
    coadd = ccd.open_coadd(copy).persist()
    coadd.write_fits(copy)
    assert_lsst_coadds_equal(lsst_read(str(copy)), lsst_read(str(reference_dir / "min_default.fits")), "self")


def test_returned_url_and_to_lsst_box(reference_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.fits"
    url = ccd.open_coadd(reference_dir / "min_default.fits").write_fits(str(out))
    assert url == str(out)
    assert to_lsst_box(ccd.Box.factory[0:1, 0:1]) is not None


def test_write_a_cutout_read_from_s3_to_s3(reference_dir: Path, tmp_path: Path, s3_server: Any) -> None:
    """A coadd read from an object store, cut and written back to it, equals lsst-images' cut-out."""
    from lsst.images import Box

    source = s3_server.upload(reference_dir / "synthetic_3x3.fits")
    options = s3_server.storage_options
    coadd = ccd.open_coadd(source, storage_options=options)
    destination = f"s3://{s3_server.bucket}/written/cut.fits"
    with fetch_stats() as stats:
        coadd.absolute[1350:1650, 1800:2100].write_fits(destination, storage_options=options)
    local = tmp_path / "cut.fits"
    s3_server.filesystem().get_file(destination.removeprefix("s3://"), str(local))
    expected = lsst_read(str(reference_dir / "synthetic_3x3.fits"))[Box.factory[1350:1650, 1800:2100]]
    assert_lsst_coadds_equal(lsst_read(str(local)), expected, "s3 cutout", provenance=False)
    # Four of nine cells: well under the whole file was read.
    assert stats.nbytes < 0.6 * (reference_dir / "synthetic_3x3.fits").stat().st_size
