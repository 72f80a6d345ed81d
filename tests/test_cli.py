"""The ``cellcoadd-dask`` command line, checked against lsst-images' reads and expected_values.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import astropy.units as u
import dask.array as da
import fsspec
import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image as PILImage

import cellcoadd_dask as ccd
from cellcoadd_dask.cli import cli, parse_box, parse_chunks, parse_storage_options
from cellcoadd_dask.summary import cell_statistics

matplotlib.use("Agg")

NAME = "synthetic_3x3.fits"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The documented default quick-look size: 8 x 7 inches at 100 dpi.
PNG_SIZE = (800, 700)


@pytest.fixture(scope="module")
def synthetic(reference_dir: Path) -> Path:
    return reference_dir / NAME


@pytest.fixture(scope="module")
def expected(expected_values: dict[str, Any]) -> dict[str, Any]:
    return expected_values[NAME]


@pytest.fixture(scope="module")
def oracle(synthetic: Path) -> Any:
    from lsst.images.cells import CellCoadd

    return CellCoadd.read(str(synthetic))


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    assert head[12:16] == b"IHDR"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def assert_valid_png(path: Path, size: tuple[int, int]) -> None:
    assert png_size(path) == size
    with PILImage.open(path) as img:
        img.verify()
    with PILImage.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert pixels.std() > 10, "the quick look is blank"


def box_str(pair: dict[str, list[int]]) -> str:
    return f"[y={pair['y'][0]}:{pair['y'][1]}, x={pair['x'][0]}:{pair['x'][1]}]"


def numpy_cell_stats(values: np.ndarray) -> dict[str, Any]:
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    return {
        "pixels": values.size,
        "finite_count": finite.size,
        "sum": finite.sum(),
        "mean": finite.mean(),
        "std": finite.std(),
        "min": finite.min(),
        "max": finite.max(),
    }


def assert_stats_equal(row: dict[str, Any], want: dict[str, Any]) -> None:
    assert row["pixels"] == want["pixels"]
    assert row["finite_count"] == want["finite_count"]
    for key in ("sum", "mean", "std", "min", "max"):
        assert row[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key


def oracle_cell_stats(oracle: Any, plane: str, box: ccd.Box) -> dict[str, Any]:
    image = oracle.image if plane == "image" else oracle.variance
    bbox = image.bbox
    y0, x0 = box.y.start - bbox.y.start, box.x.start - bbox.x.start
    return numpy_cell_stats(image.array[y0 : y0 + box.y.size, x0 : x0 + box.x.size])


# ----------------------------------------------------------------- info


def test_info_json_reports_the_expected_geometry_and_identity(synthetic: Path, expected: dict[str, Any]) -> None:
    info = run_json("info", synthetic)
    assert info["bbox"] == expected["bbox"]
    assert info["grid_bbox"] == expected["grid_bbox"]
    assert info["cell_shape"] == expected["cell_shape"]
    assert info["bounds_bbox"] == expected["bounds_bbox"]
    assert info["missing_cells"] == expected["missing_cells"]
    assert info["cells_with_data"] == expected["cells_with_data"]
    assert u.Unit(info["unit"]) == u.Unit(expected["unit"])
    assert u.Unit(info["variance_unit"]) == u.Unit(expected["variance_unit"])
    assert info["band"] == expected["band"]
    assert info["skymap"] == expected["skymap"]
    assert info["tract"] == expected["tract"]
    assert info["patch"]["id"] == expected["patch"]["id"]
    assert info["patch"]["index"] == expected["patch"]["index"]
    assert box_str(info["patch"]["inner_bbox"]) == expected["patch"]["inner_bbox"]
    assert info["mask_dtype"] == expected["mask_dtype"]
    assert info["mask_size"] == expected["mask_size"]
    assert info["mask_fraction_names"] == expected["mask_fraction_names"]
    assert info["n_noise_realizations"] == expected["n_noise_realizations"]


def test_info_json_lists_mask_planes_with_their_memory_bits(synthetic: Path, expected: dict[str, Any]) -> None:
    info = run_json("info", synthetic)
    want = [(p["name"], p["memory_bit"]) for p in expected["mask_planes"] if p is not None]
    assert [(p["name"], p["memory_bit"]) for p in info["mask_planes"]] == want


def test_info_json_gives_sky_positions_of_the_corners(synthetic: Path, expected: dict[str, Any]) -> None:
    corners = {(c["y"], c["x"]): c for c in run_json("info", synthetic)["corners_sky"]}
    for point in expected["pixel_to_sky"]:
        got = corners[(point["y"], point["x"])]
        assert got["ra_deg"] == pytest.approx(point["ra_deg"], abs=1e-9)
        assert got["dec_deg"] == pytest.approx(point["dec_deg"], abs=1e-9)


def test_info_reads_metadata_only(synthetic: Path) -> None:
    fetched = run_json("info", synthetic)["fetched"]
    assert fetched["requests"] >= 1
    # The nine 150x150 tiles of one float32 plane alone take far more than this.
    assert 0 < fetched["bytes"] < synthetic.stat().st_size // 10


def test_info_json_planes_and_chunks_follow_cell_edges(synthetic: Path, expected: dict[str, Any]) -> None:
    info = run_json("info", synthetic, "--chunks", "cell")
    (y0, y1), (x0, x1) = expected["bbox"]["y"], expected["bbox"]["x"]
    step = expected["cell_shape"]["y"]
    assert info["chunks"]["y"] == list(range(y0, y1 + 1, step))
    assert info["chunks"]["x"] == list(range(x0, x1 + 1, step))
    planes = {p["name"]: p for p in info["planes"]}
    assert set(planes) == {"image", "variance", "mask", "mask_fractions/rejected", "mask_fractions/clipped",
                           "noise_realizations/0", "noise_realizations/1"}
    assert planes["image"]["shape"] == [y1 - y0, x1 - x0]
    assert planes["mask"]["shape"] == [y1 - y0, x1 - x0, expected["mask_size"]]


def test_info_text_names_bbox_band_and_missing_cell(synthetic: Path) -> None:
    result = run("info", synthetic)
    assert result.exit_code == 0
    assert "[y=1200:1650, x=1650:2100]" in result.stdout
    lines = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    assert lines["missing cells"].endswith("1: (2,3)")
    assert "synthetic_cells_v1 / 42" in result.stdout
    assert "read to open" in result.stdout


def test_info_passes_storage_options_to_fsspec(synthetic: Path, expected: dict[str, Any]) -> None:
    url = "memory://cli-test/synthetic_3x3.fits"
    fs = fsspec.filesystem("memory")
    fs.pipe(url, synthetic.read_bytes())
    try:
        info = run_json("info", url, "--storage-option", "skip_instance_cache=true")
    finally:
        fs.rm(url)
    assert info["bbox"] == expected["bbox"]
    assert info["url"] == url


# ----------------------------------------------------------------- stats


@pytest.mark.parametrize("plane", ["image", "variance"])
def test_stats_json_equals_numpy_on_the_lsst_images_read(synthetic: Path, oracle: Any, plane: str) -> None:
    report = run_json("stats", synthetic, "--plane", plane, "--no-progress")
    assert report["plane"] == plane
    grid = oracle.bounds.grid
    cells = list(oracle.bounds.cell_indices())
    assert [(r["i"], r["j"]) for r in report["cells"]] == [(c.i, c.j) for c in cells]
    for row, cell in zip(report["cells"], cells, strict=True):
        box = grid.bbox_of(cell)
        assert box_str(row["bbox"]) == str(box)
        assert_stats_equal(row, oracle_cell_stats(oracle, plane, box))


def test_stats_json_cell_sums_match_expected_values(synthetic: Path, expected: dict[str, Any]) -> None:
    report = run_json("stats", synthetic)
    sums = {f"{r['i']},{r['j']}": r["sum"] for r in report["cells"]}
    assert sums == pytest.approx(expected["image_finite_sum_per_cell_float64"], rel=1e-12)
    assert report["missing_cells"] == expected["missing_cells"]


def test_stats_of_a_box_summarise_the_parts_of_cells_inside_it(synthetic: Path, oracle: Any) -> None:
    box = ccd.Box.factory[1275:1575, 1725:2025]
    report = run_json("stats", synthetic, "--box", "1275:1575,1725:2025")
    assert len(report["cells"]) == 8
    for row in report["cells"]:
        cell = oracle.bounds.grid.bbox_of(ccd.CellIJ(row["i"], row["j"]))
        inside = ccd.Box.factory[cell.y.start : cell.y.stop, cell.x.start : cell.x.stop].intersection(box)
        assert inside is not None
        assert box_str(row["bbox"]) == str(inside)
        assert_stats_equal(row, oracle_cell_stats(oracle, "image", inside))
    by_cell = {(r["i"], r["j"]): r for r in report["cells"]}
    # Documented in the reference README: cell (3,2) summed over the part inside this box.
    assert by_cell[(3, 2)]["sum"] == 90140.8125


def test_cell_statistics_merge_cells_split_across_chunks(synthetic: Path, oracle: Any) -> None:
    coadd = ccd.open_coadd(synthetic)
    # Chunks of 70 px cut every 150 px cell into several pieces.
    image = ccd.Image(coadd.image.array.rechunk(70), bbox=coadd.bbox, unit=coadd.unit)
    split = ccd.CellCoadd(image, mask=coadd.mask, variance=coadd.variance, projection=coadd.projection,
                          psf=coadd.psf, band=coadd.band)
    rows = cell_statistics(split, "image")
    for row in rows:
        box = oracle.bounds.grid.bbox_of(ccd.CellIJ(row["i"], row["j"]))
        want = oracle_cell_stats(oracle, "image", box)
        assert row["finite_count"] == want["finite_count"]
        for key in ("sum", "mean", "std", "min", "max"):
            assert row[key] == pytest.approx(want[key], rel=1e-9), key


def test_cell_statistics_of_a_cell_without_finite_pixels_are_null(synthetic: Path) -> None:
    coadd = ccd.open_coadd(synthetic)
    # Variance is +inf over the missing cell only; make a plane that is +inf over cell (1,1) too.
    values = coadd.variance.array.compute()
    values[:150, :150] = np.inf
    image = ccd.Image(da.from_array(values, chunks=150), bbox=coadd.bbox, unit=coadd.unit)
    fake = ccd.CellCoadd(image, mask=coadd.mask, projection=coadd.projection, psf=coadd.psf)
    first = cell_statistics(fake, "image")[0]
    assert (first["i"], first["j"], first["finite_count"], first["pixels"]) == (1, 1, 0, 22500)
    assert first["mean"] is first["std"] is first["min"] is first["max"] is None
    assert json.loads(json.dumps(first, allow_nan=False)) == first


def test_stats_with_progress_draws_a_bar_on_stderr(synthetic: Path) -> None:
    result = run("stats", synthetic, "--progress", "--json")
    assert result.exit_code == 0
    assert "100% Completed" in result.stderr
    json.loads(result.stdout)


def test_stats_text_lists_every_cell_with_data(synthetic: Path) -> None:
    result = run("stats", synthetic, "--plane", "noise_realizations/1")
    assert result.exit_code == 0
    for cell in ("(1,1)", "(2,2)", "(3,3)"):
        assert cell in result.stdout
    assert "missing cells: (2,3)" in result.stdout


def test_unknown_plane_is_a_usage_error(synthetic: Path) -> None:
    result = run("stats", synthetic, "--plane", "nope")
    assert result.exit_code == 2
    assert "no plane 'nope'" in result.stderr


# ----------------------------------------------------------------- cutout


def test_cutout_npz_holds_the_lsst_images_pixels(synthetic: Path, oracle: Any, tmp_path: Path) -> None:
    out = tmp_path / "cut.npz"
    result = run("cutout", synthetic, "--box", "1275:1575,1725:2025", "-o", out)
    assert result.exit_code == 0, result.output
    sy, sx = slice(75, 375), slice(75, 375)
    with np.load(out) as saved:
        np.testing.assert_array_equal(saved["image"], oracle.image.array[sy, sx])
        np.testing.assert_array_equal(saved["variance"], oracle.variance.array[sy, sx])
        np.testing.assert_array_equal(saved["mask"], oracle.mask.array[sy, sx])
        assert saved["bbox"].tolist() == [1275, 1575, 1725, 2025]
        names = [p.name if p is not None else "" for p in oracle.mask.schema]
        assert saved["mask_planes"].tolist() == names
        assert u.Unit(str(saved["unit"])) == u.nJy
    assert not list(tmp_path.glob("*.partial"))


def test_cutout_fits_is_a_coadd_lsst_images_reads(synthetic: Path, oracle: Any, tmp_path: Path) -> None:
    from lsst.images.cells import CellCoadd as LsstCellCoadd
    from lsst.images.serialization import read_archive

    out = tmp_path / "cut.fits"
    result = run("cutout", synthetic, "--box", "1275:1575,1725:2025", "-o", out)
    assert result.exit_code == 0, result.output
    ref = read_archive(str(out), LsstCellCoadd)
    sy, sx = slice(75, 375), slice(75, 375)
    np.testing.assert_array_equal(ref.image.array, oracle.image.array[sy, sx])
    np.testing.assert_array_equal(ref.mask.array, oracle.mask.array[sy, sx])
    np.testing.assert_array_equal(ref.variance.array, oracle.variance.array[sy, sx])
    assert ref.psf.bounds.bbox.contains(ref.bbox)  # the PSF of the cells the box touches came along


def test_cutout_by_a_sky_circle(synthetic: Path, tmp_path: Path) -> None:
    coadd = ccd.open_coadd(synthetic)
    centre = coadd.projection.pixel_to_sky(x=1900.0, y=1400.0)
    out = tmp_path / "sky.npz"
    ra, dec = repr(float(centre.ra.deg)), repr(float(centre.dec.deg))
    result = run("cutout", synthetic, "--sky", ra, dec, "3arcsec", "-o", out)
    assert result.exit_code == 0, result.output
    expected = coadd.to_xarray().cellcoadd.sel_sky(centre.ra, centre.dec, 3 * u.arcsec).cellcoadd.bbox
    with np.load(out) as saved:
        assert saved["bbox"].tolist() == [expected.y.start, expected.y.stop, expected.x.start, expected.x.stop]
        assert 1400 in range(*saved["bbox"][:2]) and 1900 in range(*saved["bbox"][2:])
    for bad in (["1", "2", "5"], ["1", "2", "5pix"], ["a", "2", "1arcsec"]):
        result = run("cutout", synthetic, "--sky", *bad, "-o", tmp_path / "x.npz")
        assert result.exit_code == 2 and "--sky" in result.stderr, bad
    result = run("cutout", synthetic, "-o", tmp_path / "x.npz")
    assert result.exit_code == 2 and "--box or --sky" in result.stderr


def test_cutout_outside_the_coadd_fails_with_one_line(synthetic: Path, tmp_path: Path) -> None:
    result = run("cutout", synthetic, "--box", "0:10,0:10", "-o", tmp_path / "x.npz")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("text", ["1:2", "a:b,c:d", "5:5,0:10", "0:10,9:3"])
def test_malformed_box_is_a_usage_error(synthetic: Path, tmp_path: Path, text: str) -> None:
    result = run("cutout", synthetic, "--box", text, "-o", tmp_path / "x.npz")
    assert result.exit_code == 2
    assert "--box" in result.stderr


def test_parse_box_reads_absolute_half_open_pixels() -> None:
    assert parse_box("-16:0, 104:120") == ccd.Box.factory[-16:0, 104:120]


def test_parse_chunks_and_storage_options() -> None:
    assert parse_chunks("auto") == "auto"
    assert parse_chunks("cell") == "cell"
    assert parse_chunks("4") == 4
    assert parse_chunks("2,3") == (2, 3)
    with pytest.raises(ValueError, match="auto, cell"):
        parse_chunks("0")
    options = parse_storage_options(("anon=true", "client_kwargs.endpoint_url=http://127.0.0.1:9000", "n=3"))
    assert options == {"anon": True, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}, "n": 3}


# ----------------------------------------------------------------- plot


def test_plot_writes_a_png_of_the_default_size(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.png"
    result = run("plot", synthetic, "-o", out, "--box", "1275:1575,1725:2025")
    assert result.exit_code == 0, result.output
    assert_valid_png(out, PNG_SIZE)


def test_plot_block_averages_large_planes(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.png"
    result = run("plot", synthetic, "-o", out, "--plane", "variance", "--max-pixels", "64")
    assert result.exit_code == 0, result.output
    assert_valid_png(out, PNG_SIZE)


# ----------------------------------------------------------------- convert and errors


def test_convert_writes_what_lsst_images_reads(synthetic: Path, oracle: Any, tmp_path: Path) -> None:
    from lsst.images.cells import CellCoadd

    out = tmp_path / "converted.fits"
    result = run("convert", synthetic, out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out}:")
    written = CellCoadd.read(str(out))
    assert np.array_equal(written.image.array, oracle.image.array)
    assert np.array_equal(written.mask.array, oracle.mask.array)
    assert np.array_equal(written.variance.array, oracle.variance.array)


def test_convert_box_lossy_json(synthetic: Path, oracle: Any, tmp_path: Path) -> None:
    from astropy.io import fits
    from lsst.images import Box
    from lsst.images.cells import CellCoadd

    out = tmp_path / "cut.fits"
    report = run_json("convert", synthetic, out, "--box", "1200:1500,1650:1950", "--lossy", "--seed", "77",
                      "--compress", "psf=NONE", "--no-progress")
    assert report["destination"] == str(out)
    assert report["bbox"] == {"y": [1200, 1500], "x": [1650, 1950]}
    assert report["fetched"]["open"]["requests"] == 2
    written = CellCoadd.read(str(out))
    expected = oracle[Box.factory[1200:1500, 1650:1950]]
    assert np.array_equal(written.mask.array, expected.mask.array)
    # Lossy: close to the original (level 16 keeps errors far below the noise), not equal.
    diff = np.abs(written.image.array - expected.image.array)
    assert 0 < np.nanmax(diff) < 0.5 * np.nanstd(expected.image.array)
    with fits.open(out, disable_image_compression=True) as hl:
        assert hl["IMAGE"].header["ZDITHER0"] == 77 and hl["VARIANCE"].header["ZDITHER0"] == 78
        assert hl["IMAGE"].header["ZCMPTYPE"] == "RICE_1"
        assert hl["PSF"].header["XTENSION"] == "IMAGE"


def test_convert_writes_json_and_lossy_zarr(synthetic: Path, tmp_path: Path) -> None:
    cut = ["--box", "1350:1500,1800:1950"]
    as_json = run("convert", synthetic, tmp_path / "cell.json", *cut)
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads((tmp_path / "cell.json").read_text())["image"]["data"]["value"]["datatype"] == "float32"
    original = ccd.open_coadd(synthetic).absolute[1350:1500, 1800:1950]
    np.testing.assert_array_equal(ccd.open_coadd(tmp_path / "cell.json").image.array.compute(),
                                  original.image.array.compute())
    lossy = run("convert", synthetic, tmp_path / "cell.zarr", *cut, "--keep-bits", "6")
    assert lossy.exit_code == 0, lossy.stderr
    got = ccd.open_coadd(tmp_path / "cell.zarr").image.array.compute()
    expected = original.image.array.compute()
    finite = np.isfinite(expected)
    assert np.all(np.abs(got[finite] - expected[finite]) <= 2.0**-7 * np.abs(expected[finite]))
    assert not np.array_equal(got, expected)


def test_convert_refuses_bad_requests(synthetic: Path, tmp_path: Path) -> None:
    other = run("convert", synthetic, tmp_path / "b.h5")
    assert other.exit_code == 1
    assert "destinations are FITS (.fits), JSON (.json) or Zarr (.zarr)" in other.stderr
    assert not (tmp_path / "b.h5").exists()
    lossy_zarr = run("convert", synthetic, tmp_path / "c.zarr", "--lossy")
    assert lossy_zarr.exit_code == 1 and "FITS compression options" in lossy_zarr.stderr
    assert "--keep-bits" in lossy_zarr.stderr
    assert not (tmp_path / "c.zarr").exists()
    bits_fits = run("convert", synthetic, tmp_path / "d.fits", "--keep-bits", "8")
    assert bits_fits.exit_code == 1 and "Zarr archives only" in bits_fits.stderr
    assert not (tmp_path / "d.fits").exists()
    quantized_mask = run("convert", synthetic, tmp_path / "m.fits", "--compress", "mask=LOSSY")
    assert quantized_mask.exit_code == 1
    assert quantized_mask.stderr.strip().splitlines() == [
        "Error: MASK: quantization applies to float arrays only, not dtype int32"
    ]
    assert not (tmp_path / "m.fits").exists()
    bad_spec = run("convert", synthetic, tmp_path / "s.fits", "--compress", "image=ZSTD")
    assert bad_spec.exit_code == 2 and "GZIP_1, GZIP_2, RICE_1, NONE or LOSSY" in bad_spec.stderr
    existing = tmp_path / "exists.fits"
    existing.write_bytes(b"previous")
    kept = run("convert", synthetic, existing, "--no-overwrite")
    assert kept.exit_code == 1 and "already exists" in kept.stderr
    assert existing.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.fits"]


def test_convert_to_zarr_and_back(synthetic: Path, oracle: Any, tmp_path: Path) -> None:
    from lsst.images.cells import CellCoadd

    store = tmp_path / "patch.zarr"
    result = run("convert", synthetic, store, "--no-progress")
    assert result.exit_code == 0, result.output
    back = tmp_path / "back.fits"
    result = run("convert", store, back, "--no-progress")
    assert result.exit_code == 0, result.output
    written = CellCoadd.read(str(back))
    assert np.array_equal(written.image.array, oracle.image.array)
    assert np.array_equal(written.mask.array, oracle.mask.array)
    assert np.array_equal(written.variance.array, oracle.variance.array)


def _bad_files(tmp_path: Path, synthetic: Path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"this is not a FITS file\n" * 200)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(synthetic.read_bytes()[:10000])
    return {"garbage": garbage, "truncated": truncated, "absent": tmp_path / "absent.fits"}


@pytest.mark.parametrize("kind", ["garbage", "truncated", "absent"])
@pytest.mark.parametrize("command", ["info", "stats"])
def test_a_bad_file_exits_1_with_a_one_line_error(tmp_path: Path, synthetic: Path, kind: str, command: str) -> None:
    path = _bad_files(tmp_path, synthetic)[kind]
    result = run(command, path)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert path.name in lines[0]
    assert result.stdout == ""


# ----------------------------------------------------------------- the installed command


def _command() -> str:
    exe = Path(sys.executable).with_name("cellcoadd-dask")
    found = str(exe) if exe.exists() else shutil.which("cellcoadd-dask")
    assert found, "the cellcoadd-dask entry point is not installed: pip install -e ."
    return found


def test_installed_demo_writes_the_quicklook_png(tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([_command(), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / "demo-output" / "quicklook.png"
    assert_valid_png(png, PNG_SIZE)
    assert str(png.resolve()) in proc.stdout
    assert "Opened lazily" in proc.stdout
    assert "Read after the statistics" in proc.stdout
    assert "(2,3)" in proc.stdout


def test_installed_command_reports_a_bad_file_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =" + b" " * 100)
    proc = subprocess.run([_command(), "info", str(bad)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


@pytest.mark.parametrize("module", ["cellcoadd_dask", "cellcoadd_dask.cli"])
def test_python_dash_m_runs_the_command_line(synthetic: Path, module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "info", "--json", str(synthetic)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bbox"]
    command = [sys.executable, "-m", module, "info", "/no/such/file.fits"]
    failed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert failed.returncode != 0
    assert "no such file" in failed.stderr
