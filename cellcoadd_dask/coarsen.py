"""Exact, lazy block reductions of a patch or tract Dataset: :func:`coarsen_dataset`.

Blocks are ``factor`` x ``factor`` pixels aligned on multiples of ``factor`` in absolute
(tract) pixel coordinates, so that overviews of neighbouring patches, of a patch and of its
tract, and of any selection line up.  A block at the edge of the data keeps the pixels it
has.  Per block:

- ``image`` (and every noise realization and mask fraction): mean of the *valid* pixels,
  those whose image value is finite and whose mask lacks ``NO_DATA``; NaN where there is none;
- ``variance``: the sum of the valid pixels' variances divided by their number squared (the
  variance of that mean); NaN where there is none;
- ``mask``: the bitwise OR of every pixel of the block (so ``NO_DATA`` is set on a block that
  has any pixel without data; ``count`` tells how many were averaged);
- ``count``: the number of valid pixels (int32).

Coordinates ``y`` and ``x`` are the centres of the full blocks in absolute pixels
(``k * factor + (factor - 1) / 2``: a uniform grid, so the sky projection scales exactly).
The reduction is one ``map_blocks`` over the planes rechunked onto block edges: every
source chunk (and so every tile) is read once.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ValidationError
from .geom import Box, Interval

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

__all__ = ["COARSEN_ATTR", "SOURCE_BOX_ATTR", "coarse_grid", "coarsen_dataset", "covered_box"]

COARSEN_ATTR = "coarsen_factor"
"""Dataset attribute holding the factor of a coarsened Dataset (absent at full resolution)."""

SOURCE_BOX_ATTR = "coarsened_bbox"
"""Dataset attribute (JSON box) of the full-resolution box a coarsened Dataset was reduced from."""

_TARGET_CHUNK = 2048
"""Side, in full-resolution pixels, that rechunked blocks are rounded up from (to a multiple of the factor)."""


def coarse_grid(ds: xr.Dataset) -> tuple[int, float, float, int, int]:
    """``(factor, y0, x0, ny, nx)`` of a Dataset: its step in full-resolution pixels and first centre.

    Raises
    ------
    ValidationError
        If the ``y``/``x`` coordinates are empty or not uniformly spaced by the factor.
    """
    factor = int(ds.attrs.get(COARSEN_ATTR, 1))
    y, x = np.asarray(ds["y"].values, dtype=np.float64), np.asarray(ds["x"].values, dtype=np.float64)
    if y.size == 0 or x.size == 0:
        raise ValidationError("The Dataset selection is empty.")
    for name, values in (("y", y), ("x", x)):
        if values.size > 1 and not np.allclose(np.diff(values), factor, rtol=0, atol=1e-9):
            raise ValidationError(
                f"The Dataset's {name} coordinates are not spaced by its factor ({factor} pixel): "
                "select with contiguous slices (isel/sel), not with a step."
            )
    return factor, float(y[0]), float(x[0]), y.size, x.size


def aligned(start: int, stop: int, factor: int) -> tuple[int, int, int]:
    """Padding before, padding after and number of blocks for the absolute range ``[start, stop)``."""
    first = math.floor(start / factor)
    last = math.ceil(stop / factor)
    return start - first * factor, last * factor - stop, last - first


def _block_chunks(n_blocks: int, factor: int) -> tuple[int, ...]:
    per = max(1, -(-_TARGET_CHUNK // factor))  # blocks per chunk
    full, rest = divmod(n_blocks, per)
    return tuple([per * factor] * full + ([rest * factor] if rest else []))


def halve(block: np.ndarray, how: str) -> np.ndarray:
    """Sum (``"sum"``) or OR (``"or"``) over 2 x 2 blocks of the first two axes (both even).

    The four terms are combined in one fixed order, so that a power-of-two reduction done in
    one go (:func:`_reduce`) and level by level (a pyramid) give the same bits.
    """
    op = np.bitwise_or if how == "or" else np.add
    top = op(block[0::2, 0::2], block[1::2, 0::2])
    return op(top, op(block[0::2, 1::2], block[1::2, 1::2]), out=top)


def _reduce(block: np.ndarray, factor: int, how: str) -> np.ndarray:
    """Sum (``"sum"``) or OR (``"or"``) over ``factor`` x ``factor`` blocks of the first two axes.

    A power-of-two factor is reduced by repeated :func:`halve` (strided adds, faster than a
    reduction over two strided axes); other factors by one reshaped reduction.
    """
    if factor & (factor - 1) == 0:
        while factor > 1:
            block = halve(block, how)
            factor //= 2
        return block
    ny, nx = block.shape[0] // factor, block.shape[1] // factor
    shaped = block.reshape(ny, factor, nx, factor, *block.shape[2:])
    if how == "or":
        return np.bitwise_or.reduce(np.bitwise_or.reduce(shaped, axis=3), axis=1)
    return shaped.sum(axis=(1, 3))


def valid_pixels(image: np.ndarray, mask: np.ndarray, no_data: tuple[int, int] | None) -> np.ndarray:
    good = np.isfinite(image)
    if no_data is not None:
        element, bit = no_data
        plane = mask if mask.ndim == 2 else mask[..., element]
        good &= (plane & bit) == 0
    return good


def _mean_kernel(values: np.ndarray, image: np.ndarray, mask: np.ndarray, *, factor: int,
                 no_data: tuple[int, int] | None, squared: bool) -> np.ndarray:
    """Mean of the valid pixels of each block (``squared``: sum / n**2, for variances)."""
    good = valid_pixels(image, mask, no_data)
    total = _reduce(valid_values(values, good), factor, "sum")
    count = _reduce(good.astype(np.int64), factor, "sum")
    return block_mean(total, count, squared=squared, dtype=values.dtype)


def valid_values(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """float64 ``values`` where ``good``, else 0: what block sums add."""
    return np.where(good, values, 0).astype(np.float64, copy=False)


def block_mean(total: np.ndarray, count: np.ndarray, *, squared: bool, dtype: np.dtype) -> np.ndarray:
    """``total / count`` (``squared``: ``/ count**2``) as ``dtype``; NaN where ``count`` is 0."""
    denominator = count.astype(np.float64) ** (2 if squared else 1)
    out = np.divide(total, denominator, out=np.full(total.shape, np.nan), where=count > 0)
    return out.astype(dtype, copy=False)


def _count_kernel(image: np.ndarray, mask: np.ndarray, *, factor: int,
                  no_data: tuple[int, int] | None) -> np.ndarray:
    return _reduce(valid_pixels(image, mask, no_data).astype(np.int32), factor, "sum").astype(np.int32)


def _or_kernel(mask: np.ndarray, *, factor: int) -> np.ndarray:
    return _reduce(mask, factor, "or")


def no_data_bit(mask_var: xr.DataArray) -> tuple[int, int] | None:
    """``(element, bit)`` of ``NO_DATA`` in the mask's layout, or ``None`` without such a plane."""
    from .xarray_dataset import schema_from_attrs

    names = str(mask_var.attrs.get("flag_meanings", "")).split()
    if "NO_DATA" not in names:
        return None
    if "mask_element" in mask_var.dims:
        element, bit = schema_from_attrs(mask_var.attrs).bit("NO_DATA")
        return int(element), int(bit)
    return 0, int(mask_var.attrs["flag_masks"][names.index("NO_DATA")])


def _padded(array: da.Array, pads: tuple[tuple[int, int], tuple[int, int]], fill: Any,
            chunks: tuple[tuple[int, ...], tuple[int, ...]]) -> da.Array:
    import dask.array as da

    width = (*pads, *((0, 0),) * (array.ndim - 2))
    if any(a or b for a, b in pads):
        array = da.pad(array, width, mode="constant", constant_values=fill)
    return array.rechunk((*chunks, *((-1,) * (array.ndim - 2))))


def coarsen_dataset(ds: xr.Dataset, factor: int) -> xr.Dataset:
    """The exact block reduction of a patch or tract Dataset by ``factor`` (see the module docstring).

    Parameters
    ----------
    ds
        A Dataset of :meth:`~cellcoadd_dask.CellCoadd.to_xarray`, the xarray engine or
        :func:`~cellcoadd_dask.open_tract`, at full resolution, or a contiguous selection of one.
    factor
        Block side in pixels (1 returns the Dataset unchanged).

    Returns
    -------
    xarray.Dataset
        Lazy: ``image``, ``variance``, ``mask``, ``count`` and, when present,
        ``mask_fractions`` and ``noise_realizations`` on the coarse grid; the per-cell
        ``psf`` and the ``cell_i``/``cell_j`` coordinates are dropped (a block may straddle
        cells).  Attributes are kept, with ``coarsen_factor`` added; the accessor's ``bbox``,
        ``wcs``, ``pixel_to_sky``, ``sky_to_pixel``, ``sel_sky`` and ``mask_plane`` work on it.

    Raises
    ------
    ValidationError
        If ``factor`` is not a positive integer, the Dataset is already coarsened, or its
        ``y``/``x`` coordinates are not contiguous.
    """
    import dask.array as da
    import xarray as xr

    from .xarray_dataset import box_of

    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValidationError(f"coarsen: factor must be a positive integer, not {factor!r}")
    factor = int(factor)
    if COARSEN_ATTR in ds.attrs:
        raise ValidationError(
            f"coarsen: this Dataset is already coarsened by {ds.attrs[COARSEN_ATTR]}; coarsen the "
            "full-resolution Dataset by the product of the factors instead (blocks stay exact)."
        )
    if factor == 1:
        return ds
    bbox = box_of(ds)
    (py0, py1, ny), (px0, px1, nx) = (aligned(bbox.y.start, bbox.y.stop, factor),
                                      aligned(bbox.x.start, bbox.x.stop, factor))
    chunks = (_block_chunks(ny, factor), _block_chunks(nx, factor))
    pads = ((py0, py1), (px0, px1))

    def data(name: str) -> da.Array:
        var = ds[name]
        return var.data if var.chunks is not None else var.chunk().data

    no_data = no_data_bit(ds["mask"])
    image = _padded(data("image"), pads, np.nan, chunks)
    mask = _padded(data("mask"), pads, 0, chunks)
    out_chunks = tuple(tuple(c // factor for c in axis) for axis in chunks)

    def mean(values: da.Array, *, squared: bool = False) -> da.Array:
        return da.map_blocks(_mean_kernel, values, image, mask, factor=factor, no_data=no_data, squared=squared,
                             dtype=values.dtype, chunks=out_chunks, meta=np.empty((0, 0), values.dtype))

    dims = ("y", "x")
    data_vars: dict[str, Any] = {
        "image": (dims, mean(image), ds["image"].attrs),
        "variance": (dims, mean(_padded(data("variance"), pads, np.nan, chunks), squared=True),
                     ds["variance"].attrs),
        "mask": (ds["mask"].dims,
                 da.map_blocks(_or_kernel, mask, factor=factor, dtype=mask.dtype,
                               chunks=(*out_chunks, *mask.chunks[2:]), meta=np.empty((0,) * mask.ndim, mask.dtype)),
                 ds["mask"].attrs),
        "count": (dims, da.map_blocks(_count_kernel, image, mask, factor=factor, no_data=no_data, dtype=np.int32,
                                      chunks=out_chunks, meta=np.empty((0, 0), np.int32)),
                  {"long_name": "valid pixels averaged (finite image, no NO_DATA)"}),
    }
    for name, axis in (("mask_fractions", "fraction"), ("noise_realizations", "realization")):
        if name in ds:
            planes = [mean(_padded(data(name)[k], pads, np.nan, chunks)) for k in range(ds.sizes[axis])]
            data_vars[name] = ((axis, *dims), da.stack(planes), ds[name].attrs)
    coords: dict[str, Any] = {
        "y": ("y", _centres(bbox.y, factor)),
        "x": ("x", _centres(bbox.x, factor)),
    }
    for name in ("fraction", "realization"):
        if name in ds.coords:
            coords[name] = ds.coords[name]
    attrs = dict(ds.attrs)
    attrs[COARSEN_ATTR] = factor
    attrs[SOURCE_BOX_ATTR] = json.dumps(bbox.to_json())
    attrs["bbox"] = str(bbox)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _centres(interval: Interval, factor: int) -> np.ndarray:
    first = math.floor(interval.start / factor)
    last = math.ceil(interval.stop / factor)
    return np.arange(first, last, dtype=np.float64) * factor + (factor - 1) / 2


def covered_box(ds: xr.Dataset) -> Box:
    """The full-resolution box a (possibly coarsened) Dataset covers (clipped to its ``bbox`` attribute)."""
    factor, y0, x0, ny, nx = coarse_grid(ds)
    half = (factor - 1) / 2
    ys, xs = round(y0 - half), round(x0 - half)
    box = Box(Interval(ys, ys + ny * factor), Interval(xs, xs + nx * factor))
    stored = ds.attrs.get(SOURCE_BOX_ATTR)
    if factor > 1 and isinstance(stored, str):
        j = json.loads(stored)
        source = Box(Interval(j["y"]["start"], j["y"]["stop"]), Interval(j["x"]["start"], j["x"]["stop"]))
        clipped = box.intersection(source)
        if clipped is not None:
            return clipped
    return box


def grid_wcs(projection: Any, ds: xr.Dataset) -> Any:
    """Astropy WCS of a (possibly coarsened) Dataset's array grid: array index ``[0, 0]`` is its first centre.

    At full resolution this is ``projection.astropy_wcs(bbox)``.  Coarsened, the FITS WCS of the
    full-resolution pixels under the grid is rescaled (``CRPIX`` moved, ``CD`` multiplied by the
    factor) and checked against the exact projection at the grid's corners and centre.

    Raises
    ------
    FitsWcsError
        If the projection has no FITS WCS over the grid, or the rescaled one disagrees with it
        by more than ``FITS_WCS_TOLERANCE`` full-resolution pixels.
    """
    from .projection import FITS_WCS_TOLERANCE, FitsWcsError, make_wcs

    factor, y0, x0, ny, nx = coarse_grid(ds)
    if factor == 1:
        return projection.astropy_wcs(Box(Interval(int(y0), int(y0) + ny), Interval(int(x0), int(x0) + nx)))
    half = (factor - 1) / 2
    full = Box(Interval(round(y0 - half), round(y0 - half) + ny * factor),
               Interval(round(x0 - half), round(x0 - half) + nx * factor))
    header = projection.fits_wcs(full).copy()
    if any(str(k).startswith(("A_", "B_", "AP_", "BP_")) for k in header):
        raise FitsWcsError("The FITS WCS of this projection has SIP terms, which do not rescale to a coarse grid.")
    for axis in (1, 2):
        header[f"CRPIX{axis}"] = (header[f"CRPIX{axis}"] - 1 - half) / factor + 1
        has_cd = any(f"CD{r}_{axis}" in header for r in (1, 2))
        for row in (1, 2):
            if f"CD{row}_{axis}" in header:
                header[f"CD{row}_{axis}"] = header[f"CD{row}_{axis}"] * factor
        if not has_cd:
            header[f"CDELT{axis}"] = header.get(f"CDELT{axis}", 1.0) * factor
    wcs = make_wcs(header)
    ly = np.array([0.0, 0.0, ny - 1.0, ny - 1.0, (ny - 1) / 2])
    lx = np.array([0.0, nx - 1.0, 0.0, nx - 1.0, (nx - 1) / 2])
    sky = projection.pixel_to_sky(x=x0 + lx * factor, y=y0 + ly * factor)
    px, py = wcs.world_to_pixel(sky)
    error = float(np.max(np.hypot(np.asarray(px) - lx, np.asarray(py) - ly))) * factor
    if not error <= FITS_WCS_TOLERANCE * factor:
        raise FitsWcsError(f"The rescaled FITS WCS of the coarse grid is off by {error:.3g} pixel.")
    return wcs
