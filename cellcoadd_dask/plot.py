"""Quick-look plots of a coadd plane with matplotlib (an optional dependency, imported on use).

The image is drawn in absolute (tract) pixel coordinates with y increasing upwards, pixel
centres on integers; the cell grid is overlaid and missing cells are hatched.  Planes
larger than ``max_pixels`` on a side are block-averaged before they are read into memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from .dataset_plot import asinh_norm
from .geom import Box
from .summary import plane_image

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .coadd import CellCoadd

__all__ = ["DEFAULT_DPI", "DEFAULT_FIGSIZE", "asinh_norm", "draw_quicklook", "quicklook_figure", "save_quicklook"]

DEFAULT_FIGSIZE = (8.0, 7.0)
"""Figure size in inches: 800x700 pixels at :data:`DEFAULT_DPI`."""

DEFAULT_DPI = 100

INSTALL_HINT = "plotting needs matplotlib: pip install 'cellcoadd-dask[plot]'"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


def _display_array(array: da.Array, max_pixels: int) -> tuple[np.ndarray, int]:
    """Read the plane, block-averaged by an integer factor so no side exceeds ``max_pixels``."""
    factor = max(1, math.ceil(max(array.shape) / max_pixels))
    if factor > 1:
        array = da.coarsen(np.mean, array.astype(np.float64), {0: factor, 1: factor}, trim_excess=True)
    return np.asarray(array.compute(), dtype=np.float64), factor


def _blank_missing_cells(values: np.ndarray, coadd: CellCoadd, shown: Box, factor: int) -> list[Box]:
    """Set the display pixels of missing cells to NaN; return the missing cells' boxes within ``shown``."""
    boxes = []
    for cell in sorted(coadd.bounds.missing):
        part = coadd.grid.bbox_of(cell).intersection(shown)
        if part is None:
            continue
        boxes.append(part)
        y0 = (part.y.start - shown.y.start) // factor
        y1 = -(-(part.y.stop - shown.y.start) // factor)
        x0 = (part.x.start - shown.x.start) // factor
        x1 = -(-(part.x.stop - shown.x.start) // factor)
        values[y0:y1, x0:x1] = np.nan
    return boxes


def _title(coadd: CellCoadd, plane: str, unit: Any) -> str:
    parts = [f"{coadd.skymap} tract {coadd.tract}"]
    try:
        parts.append(f"patch {coadd.patch.id}")
    except AttributeError:
        pass
    if coadd.band:
        parts.append(f"band {coadd.band}")
    label = plane if unit is None else f"{plane} [{unit.to_string()}]"
    return f"{' '.join(parts)}: {label}"


def _draw_grid(ax: Axes, coadd: CellCoadd, shown: Box, missing: list[Box]) -> None:
    from matplotlib.patches import Rectangle

    grid = coadd.grid
    cy, cx = grid.cell_shape
    style: dict[str, Any] = {"color": "tab:cyan", "linewidth": 0.6, "alpha": 0.7}
    first_y = grid.bbox.y.start + math.ceil((shown.y.start - grid.bbox.y.start) / cy) * cy
    first_x = grid.bbox.x.start + math.ceil((shown.x.start - grid.bbox.x.start) / cx) * cx
    for y in range(first_y, shown.y.stop + 1, cy):
        ax.axhline(y - 0.5, **style)
    for x in range(first_x, shown.x.stop + 1, cx):
        ax.axvline(x - 0.5, **style)
    for box in missing:
        ax.add_patch(Rectangle((box.x.start - 0.5, box.y.start - 0.5), box.x.size, box.y.size,
                               fill=False, hatch="///", edgecolor="tab:red", linewidth=0.8))
    cells = list(coadd.bounds.all_cell_indices())
    if len(cells) <= 64:
        for cell in cells:
            part = grid.bbox_of(cell).intersection(shown)
            if part is None:
                continue
            note = "\nmissing" if cell in coadd.bounds.missing else ""
            ax.text((part.x.start + part.x.stop - 1) / 2, (part.y.start + part.y.stop - 1) / 2,
                    f"({cell.i},{cell.j}){note}", color="tab:cyan", fontsize=8, ha="center", va="center",
                    bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 1.5})


def draw_quicklook(ax: Axes, coadd: CellCoadd, *, plane: str = "image", max_pixels: int = 2048) -> Any:
    """Draw one plane of ``coadd`` on ``ax`` (computes the plane, block-averaged if large).

    Parameters
    ----------
    ax
        Matplotlib axes to draw on.
    coadd
        The coadd, or a subset of it (``coadd.absolute[y0:y1, x0:x1]``).
    plane
        A name from :func:`cellcoadd_dask.summary.plane_names`.
    max_pixels
        Largest number of display pixels along a side.

    Returns
    -------
    matplotlib.image.AxesImage
        The image artist (for a colour bar).
    """
    _require_matplotlib()
    image = plane_image(coadd, plane)
    values, factor = _display_array(image.array, max_pixels)
    bbox = coadd.bbox
    shown = Box.from_shape((values.shape[0] * factor, values.shape[1] * factor), bbox.start)
    missing = _blank_missing_cells(values, coadd, shown, factor)
    cmap = _colormap()
    artist = ax.imshow(
        values,
        origin="lower",
        extent=(shown.x.start - 0.5, shown.x.stop - 0.5, shown.y.start - 0.5, shown.y.stop - 0.5),
        cmap=cmap,
        norm=asinh_norm(values),
        interpolation="nearest",
    )
    _draw_grid(ax, coadd, shown, missing)
    ax.set_xlim(shown.x.start - 0.5, shown.x.stop - 0.5)
    ax.set_ylim(shown.y.start - 0.5, shown.y.stop - 0.5)
    ax.set_xlabel("x (tract pixels)")
    ax.set_ylabel("y (tract pixels)")
    ax.set_title(_title(coadd, plane, image.unit), fontsize=10)
    return artist


def _colormap() -> Any:
    import matplotlib

    return matplotlib.colormaps["gray"].with_extremes(bad="0.35")


def quicklook_figure(
    coadd: CellCoadd,
    *,
    plane: str = "image",
    figsize: tuple[float, float] = DEFAULT_FIGSIZE,
    dpi: int = DEFAULT_DPI,
    max_pixels: int = 2048,
) -> Figure:
    """Make a new figure holding the quick look of one plane with a colour bar (no pyplot state)."""
    _require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    artist = draw_quicklook(ax, coadd, plane=plane, max_pixels=max_pixels)
    bar = fig.colorbar(artist, ax=ax, shrink=0.85)
    # Ticks evenly spaced in the stretched scale, so the sky range is labelled too.
    ticks = np.asarray(artist.norm.inverse(np.linspace(0.0, 1.0, 8)), dtype=float).ravel()
    bar.set_ticks(ticks.tolist(), labels=[f"{t:.3g}" for t in ticks])
    unit = plane_image(coadd, plane).unit
    if unit is not None:
        bar.set_label(unit.to_string())
    return fig


def save_quicklook(
    coadd: CellCoadd,
    path: str | Path,
    *,
    plane: str = "image",
    figsize: tuple[float, float] = DEFAULT_FIGSIZE,
    dpi: int = DEFAULT_DPI,
    max_pixels: int = 2048,
) -> Path:
    """Write the quick look of one plane as a PNG of ``figsize * dpi`` pixels; return its path.

    Raises
    ------
    ImportError
        If matplotlib is not installed (the message says how to install it).
    """
    fig = quicklook_figure(coadd, plane=plane, figsize=figsize, dpi=dpi, max_pixels=max_pixels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path
