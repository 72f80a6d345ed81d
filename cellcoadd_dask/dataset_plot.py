"""Plots of a patch or tract Dataset on sky axes: ``ds.cellcoadd.plot`` and ``cellcoadd-dask plot URL...``.

The figure reads only the resolution it shows: a pyramid level (:func:`~cellcoadd_dask.open_pyramid`)
when one is given or the Dataset is one, else the exact block reduction
(:func:`~cellcoadd_dask.coarsen.coarsen_dataset`) by the factor that fits ``pixels``.  Axes are
astropy WCSAxes of the shown grid (right ascension and declination ticks), falling back to tract
pixels when the projection has no FITS form.  The stretch is asinh (zscale floor, brightest pixel
ceiling), zscale or linear; mask planes can be overlaid in colour; patch inner boxes (solid) and
cells (dotted, when at least 6 display pixels apart) are drawn; patches missing from the tract are
hatched.  matplotlib is an optional dependency, imported on use.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .coarsen import coarse_grid
from .errors import ValidationError
from .geom import Box, Interval

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

__all__ = ["OVERLAY_COLOURS", "STRETCHES", "asinh_norm", "patch_boxes", "plot_dataset", "shown_dataset"]

STRETCHES = ("asinh", "zscale", "linear")
OVERLAY_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55")
"""Colours of overlaid mask planes, in the order given."""


def _box(value: Mapping[str, Any]) -> Box:
    return Box(Interval(value["y"]["start"], value["y"]["stop"]), Interval(value["x"]["start"], value["x"]["stop"]))


def patch_boxes(ds: xr.Dataset) -> tuple[list[Box], list[Box]]:
    """``(present, missing)`` inner boxes of the patches of a tract (or the one patch) a Dataset shows.

    Missing patches are the cells of the grid the present inner boxes span (distinct row and
    column intervals) that no present patch fills.
    """
    if "patch_inner_bboxes" in ds.attrs:
        present = [_box(b) for b in json.loads(ds.attrs["patch_inner_bboxes"])]
    elif "patch_definition" in ds.attrs:
        present = [_box(json.loads(ds.attrs["patch_definition"])["inner_bbox"])]
    else:
        return [], []
    ys = sorted({(b.y.start, b.y.stop) for b in present})
    xs = sorted({(b.x.start, b.x.stop) for b in present})
    taken = {(b.y.start, b.y.stop, b.x.start, b.x.stop) for b in present}
    missing = [Box(Interval(*y), Interval(*x)) for y, x in itertools.product(ys, xs) if (*y, *x) not in taken]
    return present, missing


def shown_dataset(ds: xr.Dataset, pixels: int | None, pyramid: str | None,
                  storage_options: Mapping[str, Any] | None) -> xr.Dataset:
    """The Dataset at the resolution ``pixels`` along a side needs (from ``pyramid`` when given).

    ``None`` pixels: the Dataset's own resolution (a pyramid's finest level).
    """
    pixels = pixels or max(ds.sizes["y"], ds.sizes["x"])
    if pyramid is not None:
        from .pyramid import open_pyramid

        box = ds.cellcoadd.bbox
        level = open_pyramid(pyramid, pixels=pixels, bbox=box, storage_options=storage_options)
        half = (level.cellcoadd.factor - 1) / 2
        return level.sel(y=slice(box.y.start - half, box.y.stop - 1 + half),
                         x=slice(box.x.start - half, box.x.stop - 1 + half))
    if ds.cellcoadd.factor > 1:
        return ds
    factor = max(1, math.ceil(max(ds.sizes["y"], ds.sizes["x"]) / pixels))
    return ds.cellcoadd.coarsen(factor) if factor > 1 else ds


def _values(shown: xr.Dataset, variable: str) -> tuple[np.ndarray, str | None]:
    names = str(shown["mask"].attrs.get("flag_meanings", "")).split() if "mask" in shown else []
    if variable in shown.data_vars and shown[variable].dims == ("y", "x"):
        values = np.asarray(shown[variable].values)
        # Floats as they are (float32 images resample and stretch in half the memory traffic).
        dtype = values.dtype if values.dtype in (np.float32, np.float64) else np.float64
        return values.astype(dtype, copy=False), shown[variable].attrs.get("units")
    if variable in names:
        return np.asarray(shown.cellcoadd.mask_plane(variable).values, dtype=np.float64), None
    raise ValidationError(f"plot: no (y, x) variable or mask plane {variable!r}; mask planes are {names}")


def _blocks(values: np.ndarray, step: int, fill: Any) -> np.ndarray:
    """``values`` padded with ``fill`` to whole ``step`` x ``step`` blocks, as ``(ny, step, nx, step)``."""
    ny, nx = values.shape
    cy, cx = -(-ny // step), -(-nx // step)
    if (cy * step, cx * step) != (ny, nx):
        padded = np.full((cy * step, cx * step), fill, dtype=values.dtype)
        padded[:ny, :nx] = values
        values = padded
    return values.reshape(cy, step, cx, step)


def block_mean(values: np.ndarray, step: int) -> np.ndarray:
    """Means of the finite values of ``step`` x ``step`` blocks (NaN where none); ``values`` itself for step 1.

    Partial blocks at the top and right edges average the pixels they have.
    """
    if step <= 1:
        return values
    blocks = _blocks(values, step, np.nan)
    finite = np.isfinite(blocks)
    total = np.where(finite, blocks, 0).sum(axis=(1, 3), dtype=np.float64)
    count = finite.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(values.dtype)


def block_any(hit: np.ndarray, step: int) -> np.ndarray:
    """Whether any pixel of each ``step`` x ``step`` block is set (a mask feature never vanishes)."""
    return hit if step <= 1 else _blocks(hit, step, False).any(axis=(1, 3))


def asinh_norm(values: np.ndarray) -> Any:
    """Zscale lower limit, brightest pixel as upper limit, asinh stretch in between.

    The asinh softening is a tenth of the zscale range, so sky noise spans about the
    lower 40% of the grey levels and bright sources are shown without being clipped.
    """
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ImageNormalize(vmin=0.0, vmax=1.0)
    vmin, zmax = (float(v) for v in ZScaleInterval().get_limits(finite))
    vmax = max(float(finite.max()), zmax)
    if vmax <= vmin:
        return ImageNormalize(vmin=vmin - 0.5, vmax=vmin + 0.5)
    softening = min(1.0, max(1e-5, 0.1 * (zmax - vmin) / (vmax - vmin)))
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(a=softening))


def _norm(values: np.ndarray, stretch: str) -> Any:
    from astropy.visualization import ImageNormalize, ZScaleInterval

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ImageNormalize(vmin=0.0, vmax=1.0)
    if stretch == "asinh":
        return asinh_norm(values)
    if stretch == "zscale":
        vmin, vmax = (float(v) for v in ZScaleInterval().get_limits(finite))
    else:
        vmin, vmax = float(finite.min()), float(finite.max())
    return ImageNormalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0)


def plot_dataset(
    ds: xr.Dataset,
    variable: str = "image",
    *,
    stretch: str = "asinh",
    overlay: str | Sequence[str] | None = None,
    grid: bool = True,
    pixels: int = 1024,
    pyramid: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    figsize: tuple[float, float] = (8.0, 7.0),
    dpi: int = 100,
) -> Figure:
    """A new figure of ``variable`` (a variable on ``(y, x)`` or a mask plane) of a patch or tract Dataset.

    Parameters
    ----------
    ds
        A patch or tract Dataset, full resolution, coarsened or a pyramid level.
    variable
        ``image``, ``variance``, ``count`` ... or a mask plane name.
    stretch
        ``"asinh"`` (zscale floor, brightest pixel ceiling), ``"zscale"`` or ``"linear"``.
    overlay
        Mask plane(s) drawn in colour over the image (red, green, blue, yellow ... in the order given).
    grid
        Draw patch inner boxes and (when at least 6 display pixels apart) cells.
    pixels
        Largest number of data pixels along a side: the resolution read.  Data with at least
        twice the axes' display pixels is drawn as block means of about the display's
        resolution (mask overlays: a block is marked when any of its pixels is), with the
        stretch set from every pixel read.
    pyramid
        A pyramid of the Dataset (:func:`~cellcoadd_dask.write_pyramid`): read the coarsest level
        that serves ``pixels`` instead of reducing the full resolution.
    storage_options
        For ``pyramid``.
    figsize, dpi
        The PNG is ``figsize * dpi`` pixels.

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot (``fig.savefig(...)``; notebooks show it when it is the cell's value).

    Raises
    ------
    ValidationError
        For an unknown variable, mask plane or stretch.
    """
    from matplotlib.colors import ListedColormap, to_rgba
    from matplotlib.figure import Figure

    from .projection import FitsWcsError

    if stretch not in STRETCHES:
        raise ValidationError(f"plot: stretch must be one of {STRETCHES}, not {stretch!r}")
    planes = [overlay] if isinstance(overlay, str) else list(overlay or [])
    shown = shown_dataset(ds, pixels, pyramid, storage_options)
    values, unit = _values(shown, variable)
    masks = [(name, _values(shown, name)[0] > 0) for name in planes]
    fig = Figure(figsize=figsize, dpi=dpi)
    factor, y0, x0, ny, nx = coarse_grid(shown)
    image_rect, bar_rect = _layout(figsize, ny, nx)
    ax: Any
    try:
        ax = fig.add_axes(image_rect, projection=shown.cellcoadd.wcs)
        sky = True
    except FitsWcsError:
        ax = fig.add_axes(image_rect)
        sky = False
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="0.35")
    # The stretch is set from every pixel read; what is drawn is reduced to about the axes' own
    # resolution first (a screen pixel cannot show more): matplotlib resamples and colours
    # a quarter of the pixels or fewer when the data has twice the display's or more.
    norm: Any = _norm(values, stretch)
    step = max(1, int(min(nx / (image_rect[2] * figsize[0] * dpi), ny / (image_rect[3] * figsize[1] * dpi))))
    extent = (-0.5, -(-nx // step) * step - 0.5, -0.5, -(-ny // step) * step - 0.5)
    artist = ax.imshow(block_mean(values, step), origin="lower", cmap=cmap, norm=norm, interpolation="nearest",
                       extent=extent)
    for k, (name, hit) in enumerate(masks):
        colour = OVERLAY_COLOURS[k % len(OVERLAY_COLOURS)]
        ax.imshow(np.where(block_any(hit, step), 1.0, np.nan), origin="lower", interpolation="nearest", alpha=0.6,
                  cmap=ListedColormap([to_rgba(colour)]), vmin=0, vmax=1, extent=extent)
        ax.plot([], [], "s", color=colour, label=name)
    if masks:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.7)
    if grid:
        _draw_boxes(ax, shown, factor, y0, x0, ny, nx, min(figsize) * dpi / max(ny, nx))
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    if sky:
        # Decimal degrees: sexagesimal tick labels need mathtext (its parser costs ~0.5 s per process).
        ax.coords[0].set_format_unit("deg", decimal=True)
        for coord in ax.coords:
            coord.set_major_formatter("d.dd")
        ax.coords[0].set_axislabel("RA")
        ax.coords[1].set_axislabel("Dec")
    else:
        ax.set_xlabel(f"x (tract pixels / {factor})" if factor > 1 else "x (tract pixels)")
        ax.set_ylabel(f"y (tract pixels / {factor})" if factor > 1 else "y (tract pixels)")
    title = f"{ds.attrs.get('skymap', '')} tract {ds.attrs.get('tract', '')}"
    if ds.attrs.get("band"):
        title += f" band {ds.attrs['band']}"
    label = variable if not unit else f"{variable} [{unit}]"
    ax.set_title(f"{title}: {label}" + (f" (1:{factor})" if factor > 1 else ""), fontsize=10)
    bar = fig.colorbar(artist, cax=fig.add_axes(bar_rect))
    if stretch != "linear":
        # Ticks evenly spaced in the stretched scale, so the faint end is labelled too.
        ticks = np.unique(np.asarray(norm.inverse(np.linspace(0.0, 1.0, 8)), dtype=np.float64).ravel())
        bar.set_ticks(ticks.tolist(), labels=[f"{t:.3g}" for t in ticks])
    return fig


# Margins of a plot, in inches: tick labels and axis label left and below, the title above, the
# colour bar (gap, bar, its tick labels) on the right.
_LEFT, _BOTTOM, _TOP, _BAR_GAP, _BAR, _BAR_LABELS = 0.95, 0.75, 0.45, 0.15, 0.2, 0.85


_Rect = tuple[float, float, float, float]


def _layout(figsize: tuple[float, float], ny: int, nx: int) -> tuple[_Rect, _Rect]:
    """Figure-fraction rectangles of the image axes (the data's aspect, as large as fits) and the colour bar.

    Computed, not solved for: matplotlib's constrained layout measures every tick label of the
    sky axes in extra drawing passes, which doubles the time a figure takes to render.
    """
    width, height = figsize
    room_x = max(width - _LEFT - _BAR_GAP - _BAR - _BAR_LABELS, 0.2 * width)
    room_y = max(height - _BOTTOM - _TOP, 0.2 * height)
    scale = min(room_x / max(nx, 1), room_y / max(ny, 1))
    w, h = nx * scale, ny * scale
    left = _LEFT + (room_x - w) / 2
    bottom = _BOTTOM + (room_y - h) / 2
    image = (left / width, bottom / height, w / width, h / height)
    bar = ((left + w + _BAR_GAP) / width, bottom / height, _BAR / width, h / height)
    return image, bar


def _draw_boxes(ax: Any, shown: xr.Dataset, factor: int, y0: float, x0: float, ny: int, nx: int,
                scale: float) -> None:
    """Patch boxes, the cell grid (if not too dense) and hatched missing patches, in display pixels.

    ``scale`` is about how many figure pixels a shown pixel takes: cells are drawn when at
    least 6 figure pixels apart.
    """
    from matplotlib.patches import Rectangle

    def display(box: Box) -> tuple[float, float, float, float]:
        return ((box.x.start - 0.5 - x0) / factor, (box.y.start - 0.5 - y0) / factor,
                box.x.size / factor, box.y.size / factor)

    present, missing = patch_boxes(shown)
    cell = shown.attrs.get("cell_shape")
    if isinstance(cell, (list, tuple)) and len(cell) == 2 and min(cell) / factor * scale >= 6:
        shape = (int(cell[0]), int(cell[1]))
        if "cell_grid" in shown.attrs:
            _cell_lines(ax, _box(json.loads(shown.attrs["cell_grid"])["bbox"]), shape, factor, y0, x0, ny, nx)
        elif "cell_bounds" in shown.attrs:
            origin = _box(json.loads(shown.attrs["cell_bounds"])["grid"]["bbox"])
            _cell_lines(ax, origin, shape, factor, y0, x0, ny, nx)
    for box in present:
        x, y, w, h = display(box)
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="tab:orange", linewidth=1.0))
    for box in missing:
        x, y, w, h = display(box)
        ax.add_patch(Rectangle((x, y), w, h, fill=False, hatch="///", edgecolor="0.6", linewidth=0.8))


def _cell_lines(ax: Any, origin: Box, cell: tuple[int, int], factor: int, y0: float, x0: float,
                ny: int, nx: int) -> None:
    from matplotlib.collections import LineCollection

    top_y, top_x = y0 + factor * (ny - 0.5), x0 + factor * (nx - 0.5)
    low_y, low_x = y0 - factor / 2, x0 - factor / 2
    first_y = origin.y.start + math.ceil((low_y + 0.5 - origin.y.start) / cell[0]) * cell[0]
    first_x = origin.x.start + math.ceil((low_x + 0.5 - origin.x.start) / cell[1]) * cell[1]
    rows = (np.arange(first_y, top_y + 0.5, cell[0]) - 0.5 - y0) / factor
    columns = (np.arange(first_x, top_x + 0.5, cell[1]) - 0.5 - x0) / factor
    lo_y, hi_y, lo_x, hi_x = -0.5, ny - 0.5, -0.5, nx - 0.5
    segments = [((lo_x, r), (hi_x, r)) for r in rows] + [((c, lo_y), (c, hi_y)) for c in columns]
    ax.add_collection(LineCollection(segments, colors="tab:cyan", linewidths=0.4, linestyles=":", alpha=0.7),
                      autolim=False)
