"""Plots of tract and patch Datasets: ``ds.cellcoadd.plot`` and ``cellcoadd-dask plot URL...``.

The rendered pixels are checked: the PNG has the size asked for, overlay colour lies exactly where
the mask plane is set (at the shown resolution) and nowhere else, and a figure from a pyramid reads
only that pyramid level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from PIL import Image as PILImage

import cellcoadd_dask as ccd
from cellcoadd_dask.dataset_plot import block_mean, patch_boxes
from cellcoadd_dask.geom import Box, Interval


@pytest.fixture(scope="module")
def demo(corpus: Path) -> xr.Dataset:
    return ccd.open_tract(sorted(str(p) for p in (corpus / "demo_tract").glob("*.fits")))


def _render(fig: Any) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(int)


def _pixel(fig: Any, rgb: np.ndarray, i: int, j: int) -> np.ndarray:
    """The rendered colour at the centre of shown data pixel (row i, column j)."""
    ax = fig.axes[0]
    x, y = ax.transData.transform((j, i))
    return rgb[rgb.shape[0] - 1 - round(y), round(x)]


def test_the_overlay_is_where_the_mask_is(demo: xr.Dataset) -> None:
    fig = demo.cellcoadd.plot(overlay="DETECTED", pixels=150, grid=False, figsize=(6.0, 6.0), dpi=100)
    rgb = _render(fig)
    assert rgb.shape[:2] == (600, 600)
    shown = demo.cellcoadd.coarsen(12).compute()  # 1800 px over 150 display pixels
    detected = shown.cellcoadd.mask_plane("DETECTED").values
    valid = np.isfinite(shown["image"].values)
    legend = fig.axes[0].get_legend().get_window_extent()
    checked = 0
    for i in range(2, detected.shape[0] - 2, 3):
        for j in range(2, detected.shape[1] - 2, 3):
            if not valid[i, j] or detected[i - 1 : i + 2, j - 1 : j + 2].any() != detected[i, j]:
                continue  # edges of overlaid areas blend with their neighbours
            if legend.contains(*fig.axes[0].transData.transform((j, i))):
                continue
            r, g, b = _pixel(fig, rgb, i, j)
            reddish = r - max(g, b) > 60
            assert reddish == bool(detected[i, j]), (i, j, (r, g, b))
            checked += 1
    assert checked > 500 and detected.any()


def test_data_finer_than_the_display_is_drawn_as_block_means(demo: xr.Dataset) -> None:
    fig = demo.cellcoadd.plot(overlay="DETECTED", pixels=900, grid=False, figsize=(5.0, 5.0), dpi=100)
    shown = demo.cellcoadd.coarsen(2).compute()  # 900 x 900 data pixels on about 270 display pixels
    values = shown["image"].values
    detected = shown.cellcoadd.mask_plane("DETECTED").values > 0
    image, overlay = fig.axes[0].get_images()
    drawn = np.ma.getdata(image.get_array())
    step = -(-values.shape[0] // drawn.shape[0])
    assert step >= 2 and drawn.shape == tuple(-(-n // step) for n in values.shape)
    np.testing.assert_allclose(drawn, block_mean(values, step), rtol=1e-6, equal_nan=True)
    block = values[:step, :step]
    np.testing.assert_allclose(drawn[0, 0], np.nanmean(block), rtol=1e-5)
    # Every set mask pixel colours its block: a feature narrower than a display pixel still shows.
    marked = np.isfinite(np.ma.getdata(overlay.get_array()))
    assert marked.shape == drawn.shape and detected.any()
    for i, j in zip(*np.nonzero(detected), strict=True):
        assert marked[i // step, j // step]
    assert marked.sum() <= detected.sum()
    # The drawn blocks cover exactly the data's pixel coordinates (padding beyond is cut off).
    left, right, bottom, top = image.get_extent()
    assert (left, bottom) == (-0.5, -0.5) and (right, top) == (drawn.shape[1] * step - 0.5, drawn.shape[0] * step - 0.5)
    assert fig.axes[0].get_xlim() == (-0.5, values.shape[1] - 0.5)
    # The stretch is the one of every pixel read, not of the blocks.
    assert image.norm.vmax == pytest.approx(float(np.nanmax(values)))


def test_png_size_and_sky_axes(demo: xr.Dataset, tmp_path: Path) -> None:
    fig = demo.cellcoadd.plot(stretch="zscale", figsize=(5.0, 4.0), dpi=120)
    path = tmp_path / "tract.png"
    fig.savefig(path, dpi=fig.dpi)
    with PILImage.open(path) as png:
        assert png.size == (600, 480)
    ax = fig.axes[0]
    assert ax.coords[0].get_axislabel() == "RA" and ax.coords[1].get_axislabel() == "Dec"


def test_missing_patches_are_found_and_hatched(demo: xr.Dataset) -> None:
    present, missing = patch_boxes(demo)
    assert len(present) == 8
    assert missing == [Box(Interval(1200, 1800), Interval(0, 600))]  # patch (2, 0) is not written
    fig = demo.cellcoadd.plot(pixels=300)
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatched) == 1


def test_a_figure_from_a_pyramid_reads_only_its_level(demo: xr.Dataset, tmp_path: Path) -> None:
    pyramid = ccd.write_pyramid(demo, tmp_path / "p.zarr", levels=4)
    with ccd.fetch_stats() as stats:
        fig = demo.cellcoadd.plot(pixels=200, pyramid=pyramid)
    levels = {url.split("p.zarr/", 1)[1].split("/")[0] for url, _, _ in stats.ranges if "p.zarr/" in url}
    assert levels == {"zarr.json", "3"}  # the root, then level 3 (1800 / 8 = 225 >= 200 pixels)
    assert all("p.zarr" in url for url, _, _ in stats.ranges)  # no tile of a patch file
    assert "(1:8)" in fig.axes[0].get_title()
    zoom = demo.sel(y=slice(600, 1199), x=slice(600, 1199))  # a patch: 600 px, a finer level serves it
    with ccd.fetch_stats() as stats:
        zoom.cellcoadd.plot(pixels=200, pyramid=pyramid)
    assert {url.split("p.zarr/", 1)[1].split("/")[0] for url, _, _ in stats.ranges} == {"zarr.json", "1"}


def test_mask_planes_plot_and_bad_names_are_refused(demo: xr.Dataset) -> None:
    fig = demo.cellcoadd.plot("NO_DATA", pixels=100)
    assert "NO_DATA" in fig.axes[0].get_title()
    with pytest.raises(ccd.ValidationError, match="mask planes are"):
        demo.cellcoadd.plot("NOT_A_PLANE")
    with pytest.raises(ccd.ValidationError, match="stretch"):
        demo.cellcoadd.plot(stretch="log")


def test_the_command_line_plots_a_tract(corpus: Path, tmp_path: Path) -> None:
    from cellcoadd_dask.cli import main

    files = sorted(str(p) for p in (corpus / "demo_tract").glob("*.fits"))
    out = tmp_path / "tract.png"
    assert main(["plot", *files, "-o", str(out), "--overlay", "DETECTED", "--max-pixels", "300"]) == 0
    with PILImage.open(out) as png:
        assert png.size == (800, 700)
    out2 = tmp_path / "mask.png"
    assert main(["plot", files[0], "-o", str(out2), "--plane", "DETECTED"]) == 0  # a mask plane of one file
    assert out2.stat().st_size > 0
