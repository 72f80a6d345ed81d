"""Computing on a real ``distributed`` cluster (two worker processes) over HTTP and local files.

The coadd is opened in the test process (metadata only) and computed by the workers:
the nginx access log must show the workers fetching the tiles, while the test process
fetches nothing during the compute.  Results are compared with lsst-images' read of
the same file.  Task graphs must stay small and hold no pixel arrays, before and after
a compute.

Coordinates are absolute (tract) pixel indices, ``(y, x)`` order, half-open boxes.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
from oracle import (
    HduBytes,
    assert_identical,
    cells_with_data,
    coadd_planes,
    fits_layout,
    hdu_bytes,
    intervals,
    lsst_planes,
)
from servers import HttpServer

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import fetch_stats

FILES = ("synthetic_3x3.fits", "synthetic_3x3_lossy.fits")
PIXEL_HDUS = ("IMAGE", "MASK", "VARIANCE", "MASK_FRACTIONS/", "NOISE_REALIZATIONS/")
MAX_GRAPH_BYTES = 200_000
# A cutout straddling four cells, one of them the missing cell (2, 3) = [y=1350:1500, x=1950:2100].
CUTOUT = ((1420, 1530), (1890, 2010))


@functools.cache
def lsst_read(path: str) -> Any:
    """lsst-images' read of a file, cached."""
    from lsst.images.cells import CellCoadd

    return CellCoadd.read(path)


@pytest.fixture(scope="module")
def published(http_server: HttpServer, reference_dir: Path) -> dict[str, str]:
    """The files on the nginx server: ``{name: url}``."""
    return {name: http_server.publish(reference_dir / name) for name in FILES}


def _finite_sums(planes: dict[str, Any]) -> dict[str, Any]:
    """Float64 sums over finite pixels of every plane (lazy for dask arrays)."""
    out = {}
    for key, array in planes.items():
        values = array.astype(np.float64)
        out[key] = (da if isinstance(values, da.Array) else np).where(np.isfinite(values), values, 0.0).sum()
    return out


def _parse_range(header: str | None) -> tuple[int, int]:
    assert header is not None and header.startswith("bytes="), header
    start, stop = header[len("bytes=") :].split("-")
    return int(start), int(stop) + 1


def _pixel_tiles(path: Path, outside: tuple[slice, slice] | None = None) -> list[tuple[int, int]]:
    """Byte ranges of the pixel-plane tiles, astropy's view (only those not meeting ``outside``, if given)."""

    def wanted(hdu: HduBytes, tile: int) -> bool:
        if outside is None:
            return True
        region = hdu.tile_region(tile)
        return not all(r.start < o.stop and o.start < r.stop for r, o in zip(region, outside, strict=True))

    return [
        t
        for hdu in fits_layout(path)
        if hdu.extname.startswith(PIXEL_HDUS)
        for n, t in enumerate(hdu.tiles)
        if t is not None and wanted(hdu, n)
    ]


def _uncovered(needed: list[tuple[int, int]], fetched: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in needed if not any(c <= a and b <= d for c, d in fetched)]


def _worker_addresses(client: Any) -> set[str]:
    return set(client.scheduler_info()["workers"])


def _assert_small_graph(graph: Any, what: str, max_elements: int = 0) -> None:
    """The pickled graph is small and holds no array of more than ``max_elements`` elements."""
    arrays: list[tuple[tuple[int, ...], int]] = []

    class Recorder(cloudpickle.CloudPickler):
        def persistent_id(self, obj: Any) -> None:
            if isinstance(obj, np.ndarray):
                arrays.append((obj.shape, obj.nbytes))
            return None

    buffer = io.BytesIO()
    Recorder(buffer).dump(graph)
    assert len(buffer.getvalue()) == len(cloudpickle.dumps(graph))
    assert len(buffer.getvalue()) < MAX_GRAPH_BYTES, f"{what}: graph pickles to {len(buffer.getvalue())} bytes"
    assert all(np.prod(shape) <= max_elements for shape, _ in arrays), f"{what}: graph holds arrays {arrays}"


# ----------------------------------------------------------------------------- over HTTP


@pytest.mark.parametrize("name", FILES)
def test_plane_sums_computed_by_http_workers_equal_lsst_images(
    dask_client: Any, http_server: HttpServer, published: dict[str, str], reference_dir: Path, name: str
) -> None:
    from distributed import get_task_stream

    url = published[name]
    ref = lsst_read(str(reference_dir / name))
    coadd = ccd.open_coadd(url)
    sums = _finite_sums(coadd_planes(coadd))
    mark = http_server.mark()
    with fetch_stats() as stats, get_task_stream(dask_client) as tasks:
        (got,) = dask.compute(sums)
    assert stats.requests == 0, f"the test process fetched {stats.ranges}"
    assert tasks.data and {t["worker"] for t in tasks.data} <= _worker_addresses(dask_client)
    log = http_server.requests_since(mark, name=url)
    assert log and all(r.status == 206 for r in log), log
    missing = _uncovered(_pixel_tiles(reference_dir / name), [_parse_range(r.range) for r in log])
    assert not missing, f"tiles not fetched by the workers: {missing}"
    expected = _finite_sums(lsst_planes(ref))
    assert sorted(got) == sorted(expected)
    for key, value in got.items():
        assert value == pytest.approx(expected[key], rel=1e-12, abs=1e-9), key


@pytest.mark.parametrize("name", FILES)
def test_cutout_computed_by_http_workers_is_bit_identical(
    dask_client: Any, http_server: HttpServer, published: dict[str, str], reference_dir: Path, name: str
) -> None:
    url = published[name]
    ref = lsst_read(str(reference_dir / name))
    (y0, y1), (x0, x1) = CUTOUT
    cutout = ccd.open_coadd(url).absolute[y0:y1, x0:x1]
    ds = ccd.open_coadd(url).to_xarray().sel(y=slice(y0, y1 - 1), x=slice(x0, x1 - 1))
    (ry0, _), (rx0, _) = intervals(ref.bbox)
    local = (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0))
    names = list(ref.mask.schema.names)
    mark = http_server.mark()
    # Two selections of one chunk computed together make dask read the whole chunk once
    # (a shared key is not fused into each slice), so the xarray view is a compute of its own.
    with fetch_stats() as stats:
        planes, mask_planes = dask.compute(coadd_planes(cutout), {n: cutout.mask.get(n) for n in names})
        view = ds[["image", "noise_realizations"]].compute()
    assert stats.requests == 0, f"the test process fetched {stats.ranges}"
    log = http_server.requests_since(mark, name=url)
    assert log and all(r.status == 206 for r in log)
    expected = lsst_planes(ref)
    for key, array in planes.items():
        assert_identical(array, expected[key][local], f"{name} cutout {key}")
    for plane, array in mask_planes.items():
        assert_identical(array, ref.mask.get(plane)[local], f"{name} cutout mask plane {plane}")
    assert_identical(view["image"].values, ref.image.array[local], f"{name} xarray cutout image")
    for n, noise in enumerate(ref.noise_realizations):
        assert_identical(view["noise_realizations"].values[n], noise.array[local], f"{name} xarray noise {n}")
    # Only the tiles of the cells the cutout touches were fetched.
    fetched = [_parse_range(r.range) for r in log]
    untouched = _pixel_tiles(reference_dir / name, outside=local)
    assert untouched
    assert not [t for t in untouched if any(a < t[1] and t[0] < b for a, b in fetched)]


# ----------------------------------------------------------------------------- graphs


@pytest.mark.parametrize("name", FILES)
def test_graphs_are_small_and_hold_no_pixels(published: dict[str, str], reference_dir: Path, name: str) -> None:
    for where, coadd in (
        ("http", ccd.open_coadd(published[name])),
        ("local", ccd.open_coadd(reference_dir / name)),
    ):
        graphs = {
            "image": coadd.image.array.__dask_graph__(),
            "mask": coadd.mask.array.__dask_graph__(),
            "dataset": coadd.to_xarray().__dask_graph__(),
        }
        for key, graph in graphs.items():
            _assert_small_graph(graph, f"{where} {name} {key}")
        # A read loads the small tile tables (a few numbers per tile) into the sources; no pixels.
        coadd.image.array[:10, :10].compute(scheduler="sync")
        n_tiles = len(hdu_bytes(reference_dir / name, "IMAGE").tiles)
        _assert_small_graph(coadd.image.array.__dask_graph__(), f"{where} {name} image after a read", 2 * n_tiles)


# ----------------------------------------------------------------------------- local files


def test_local_file_computed_by_workers_equals_lsst_images(dask_client: Any, reference_dir: Path) -> None:
    from distributed import get_task_stream

    path = reference_dir / "synthetic_3x3.fits"
    ref = lsst_read(str(path))
    coadd = ccd.open_coadd(path)
    sums = _finite_sums(coadd_planes(coadd))
    psf = coadd.psf.array
    with fetch_stats() as stats, get_task_stream(dask_client) as tasks:
        got, kernels = dask.compute(sums, psf)
    assert stats.requests == 0, f"the test process fetched {stats.ranges}"
    assert tasks.data and {t["worker"] for t in tasks.data} <= _worker_addresses(dask_client)
    expected = _finite_sums(lsst_planes(ref))
    for key, value in got.items():
        assert value == expected[key], key
    from lsst.images.cells import CellIJ

    start = coadd.bounds.subgrid_start
    for i, j in cells_with_data(ref.psf.bounds):
        expected_kernel = ref.psf[CellIJ(i=i, j=j)].array
        assert_identical(kernels[i - start.i, j - start.j], expected_kernel, f"PSF kernel of cell {(i, j)}")
