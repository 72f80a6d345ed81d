"""Per-cell statistics of every plane, read from a real S3 server by a real two-process cluster.

The coadd is opened in the test process with a client active, so its metadata (headers and
tile tables) is read there once and travels in the graph; the workers then fetch tiles and
nothing else, each tile exactly once.  Results equal lsst-images' read of the same file.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from oracle import fits_layout, lsst_planes, lsst_read

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import fetch_stats

FILES = ("synthetic_3x3.fits", "synthetic_3x3_lossy.fits", "many_planes.fits")
PIXEL_HDUS = ("IMAGE", "MASK", "VARIANCE", "MASK_FRACTIONS/", "NOISE_REALIZATIONS/")


def _cell_means(array: da.Array) -> da.Array:
    """Mean of the finite values of every chunk (one chunk per cell), trailing axes kept."""

    def mean(block: np.ndarray) -> np.ndarray:
        values = block.astype(np.float64).reshape(-1, *block.shape[2:])
        finite = np.isfinite(values)
        count = finite.sum(axis=0)
        total = np.where(finite, values, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return out.reshape(1, 1, *block.shape[2:])

    chunks = ((1,) * len(array.chunks[0]), (1,) * len(array.chunks[1]), *array.chunks[2:])
    return array.map_blocks(mean, chunks=chunks, dtype=np.float64)


def _numpy_cell_means(array: np.ndarray, chunks: tuple[tuple[int, ...], ...]) -> np.ndarray:
    return _cell_means(da.from_array(array, chunks=chunks)).compute(scheduler="sync")


def _fallback_bytes(path: Path) -> int:
    """Bytes of the ``GZIP_COMPRESSED_DATA`` tiles of the pixel HDUs, as astropy reads the tables."""
    from astropy.io import fits

    total = 0
    with fits.open(path, disable_image_compression=True) as hdus:
        for hdu in hdus[1:]:
            name = hdu.name
            if not (name in PIXEL_HDUS or name.startswith(PIXEL_HDUS[3:])):
                continue
            if isinstance(hdu, fits.BinTableHDU) and "GZIP_COMPRESSED_DATA" in hdu.columns.names:
                total += sum(len(cell) for cell in hdu.data["GZIP_COMPRESSED_DATA"])
    return total


@pytest.mark.parametrize("name", FILES)
def test_cell_means_of_every_plane_from_s3_on_a_cluster(
    name: str, reference_dir: Path, s3_server: Any, dask_client: Any
) -> None:
    path = reference_dir / name
    url = s3_server.upload(path)
    with fetch_stats() as opening:
        coadd = ccd.open_coadd(url, storage_options=s3_server.storage_options, chunks="cell")
    assert opening.calls == 3, "opening with a client preloads all metadata in three round trips"
    planes: dict[str, da.Array] = {"image": coadd.image.array, "variance": coadd.variance.array,
                                   "mask": coadd.mask.array}
    planes |= {f"mask_fractions/{k}": v.array for k, v in coadd.mask_fractions.items()}
    planes |= {f"noise_realizations/{n}": v.array for n, v in enumerate(coadd.noise_realizations)}
    lazy = {key: _cell_means(array) for key, array in planes.items()}
    with fetch_stats(client=dask_client) as stats:
        (got,) = dask.compute(lazy)
    local = [r for r in stats.ranges if r[0] == url]
    assert len(local) == len(stats.ranges)
    # Every pixel tile of every plane was fetched exactly once, and nothing else was.
    layout = fits_layout(path)
    tiles = sorted(
        t
        for h in layout
        if h.tiles and (h.extname in PIXEL_HDUS or h.extname.startswith(PIXEL_HDUS[3:]))
        for t in h.tiles
        if t is not None and t[1] > t[0]
    )
    fetched = sorted((a, b) for _, a, b in local)
    for (_, b0), (a1, _) in itertools.pairwise(fetched):
        assert b0 <= a1, f"bytes [{a1}, {b0}) fetched twice"
    covered = 0
    for a, b in tiles:
        assert any(lo <= a and b <= hi for lo, hi in fetched), f"tile [{a}, {b}) not fetched"
        covered += b - a
    # Tiles that could not be quantized are stored in the GZIP_COMPRESSED_DATA column instead.
    covered += _fallback_bytes(path)
    assert sum(b - a for a, b in fetched) == covered, "bytes other than tiles were fetched"
    expected = lsst_planes(lsst_read(str(path)))
    for key, means in got.items():
        want = _numpy_cell_means(expected[key], planes[key].chunks)
        np.testing.assert_array_equal(means, want, err_msg=key)
