"""Laziness over HTTP, counted at the server: which byte ranges a read really asks for.

Files are served by the session's nginx (``http_server``), whose access log records every
request with its ``Range`` header and the body bytes sent.  Expected byte ranges come from
astropy's view of the same file (`oracle.fits_layout`), never from the code under test.
Two files: the 3x3-cell reference coadd and a full-size 22x22-cell patch (3300x3300 px)
written once per session by lsst-images.

The measured numbers are attached to each test as user properties (written by
``--junitxml`` with ``junit_family=legacy``, printed with ``-rP``) and repeated in
assertion messages.
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from oracle import HduBytes, fits_layout, write_full_patch
from servers import LOOPBACK, HttpServer, RequestLog

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import ObjectChangedError, fetch_stats

ByteRange = tuple[int, int]
SLACK = 16 * 1024
"""Bytes a one-cell read may fetch beyond the cell's tile (the plane's header and tile table)."""


@pytest.fixture(scope="session")
def full_patch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3300x3300 px patch of 22x22 cells of 150 px, written by lsst-images (about 15 MB)."""
    path = write_full_patch(tmp_path_factory.mktemp("full-patch") / "full_patch.fits")
    assert path.stat().st_size < 60_000_000
    return path


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """Attach a measured number to the test (``record_property`` warns under xunit2 reports)."""

    def add(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))
        print(f"{request.node.name}: {name} = {value}")

    return add


@dataclass(frozen=True)
class Served:
    """A file published on the HTTP server, with its layout as astropy sees it."""

    url: str
    path: Path
    hdus: dict[str, HduBytes]

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def metadata_ranges(self) -> list[ByteRange]:
        """The primary header and the JSON + INDEX tail: everything opening may read."""
        return [self.hdus[""].header, (self.hdus["JSON"].header[0], self.size)]


@pytest.fixture(params=["synthetic_3x3", "full_patch"])
def served(request: pytest.FixtureRequest, http_server: HttpServer, reference_dir: Path) -> Served:
    if request.param == "full_patch":
        path = request.getfixturevalue("full_patch")
    else:
        path = reference_dir / "synthetic_3x3.fits"
    hdus = {h.label: h for h in fits_layout(path)}
    return Served(http_server.publish(path), path, hdus)


def ranges_of(log: RequestLog) -> list[ByteRange]:
    """Byte ranges ``[start, stop)`` of the logged requests (each must be one ``bytes=a-b`` range)."""
    out = []
    for request in log:
        assert request.method == "GET" and request.status == 206, request
        assert request.range is not None and request.range.startswith("bytes="), request
        first, last = request.range.removeprefix("bytes=").split("-")
        out.append((int(first), int(last) + 1))
        assert request.body_bytes == int(last) + 1 - int(first), request
    return out


def inside(r: ByteRange, allowed: list[ByteRange]) -> bool:
    return any(a <= r[0] and r[1] <= b for a, b in allowed)


def union(ranges: list[ByteRange]) -> list[ByteRange]:
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def clip(ranges: list[ByteRange], window: ByteRange) -> list[ByteRange]:
    return union([(max(a, window[0]), min(b, window[1])) for a, b in ranges
                  if max(a, window[0]) < min(b, window[1])])


def tile_ranges(hdu: HduBytes, region: tuple[slice, slice]) -> list[ByteRange]:
    """The tiles of ``hdu`` a local region touches (tile-compressed HDUs only)."""
    (ys, xs), (ty, tx) = region, hdu.tile_shape
    ny = -(-hdu.shape[1] // tx)
    tiles = [hdu.tiles[a * ny + b] for a in range(ys.start // ty, (ys.stop - 1) // ty + 1)
             for b in range(xs.start // tx, (xs.stop - 1) // tx + 1)]
    assert all(t is not None for t in tiles)
    return [t for t in tiles if t is not None]


def measure(server: HttpServer, url: str, action: Callable[[], object]) -> RequestLog:
    mark = server.mark()
    action()
    return server.requests_since(mark, name=url)


def local_cell(coadd: ccd.CellCoadd, di: int, dj: int) -> tuple[slice, slice]:
    """Local slices of the cell ``(di, dj)`` cells from the first cell of the coadd's bounds."""
    start = coadd.bounds.subgrid_start
    box = coadd.grid.bbox_of(ccd.CellIJ(i=start.i + di, j=start.j + dj))
    sy, sx = box.slice_within(coadd.bbox)
    return sy, sx


# ----------------------------------------------------------------------------- opening


def test_opening_reads_only_the_primary_header_and_the_json_index_tail(
    served: Served, http_server: HttpServer, report: Callable[[str, object], None]
) -> None:
    with fetch_stats() as stats:
        log = measure(http_server, served.url, lambda: ccd.open_coadd(served.url))
    ranges = ranges_of(log)
    report("open_requests", len(log))
    report("open_bytes", log.body_bytes)
    message = f"open: {len(log)} requests, {log.body_bytes} bytes: {ranges}"
    assert 1 <= len(log) <= 4, message
    assert all(inside(r, served.metadata_ranges) for r in ranges), message
    assert stats.requests == len(log), f"fetch_stats counted {stats.requests} requests, the server {len(log)}"


# ----------------------------------------------------------------------------- reading cells


@pytest.mark.parametrize("plane", ["image", "variance"])
def test_reading_one_cell_fetches_its_tile_and_little_more(
    served: Served, http_server: HttpServer, plane: str, report: Callable[[str, object], None]
) -> None:
    coadd = ccd.open_coadd(served.url)
    region = local_cell(coadd, 1, 1)
    hdu = served.hdus[plane.upper()]
    (tile,) = tile_ranges(hdu, region)
    array = getattr(coadd, plane).array
    log = measure(http_server, served.url, lambda: array[region].compute())
    ranges = ranges_of(log)
    tile_bytes = tile[1] - tile[0]
    report(f"{plane}_cell_requests", len(log))
    report(f"{plane}_cell_bytes", log.body_bytes)
    report(f"{plane}_cell_tile_bytes", tile_bytes)
    message = (f"one {plane} cell: {len(log)} requests, {log.body_bytes} bytes for a {tile_bytes}-byte tile: "
               f"{ranges}")
    assert log.body_bytes <= tile_bytes + SLACK, message
    assert clip(ranges, tile) == [tile], message
    assert all(inside(r, [(hdu.header[0], hdu.table[1]), tile]) for r in ranges), message


@pytest.mark.parametrize("chunks", ["cell", "auto"])
def test_a_two_by_two_cell_cutout_fetches_exactly_its_four_tiles_per_plane(
    served: Served, http_server: HttpServer, chunks: str
) -> None:
    coadd = ccd.open_coadd(served.url, chunks=chunks)
    top, bottom = local_cell(coadd, 1, 1), local_cell(coadd, 2, 2)
    region = (slice(top[0].start, bottom[0].stop), slice(top[1].start, bottom[1].stop))
    box = ccd.Box.factory[coadd.bbox.y.start + region[0].start : coadd.bbox.y.start + region[0].stop,
                          coadd.bbox.x.start + region[1].start : coadd.bbox.x.start + region[1].stop]
    cutout = coadd[box]
    log = measure(http_server, served.url,
                  lambda: [cutout.image.array.compute(), cutout.variance.array.compute()])
    ranges = ranges_of(log)
    message = f"2x2 cells of image and variance: {len(log)} requests, {log.body_bytes} bytes: {ranges}"
    for name in ("IMAGE", "VARIANCE"):
        hdu = served.hdus[name]
        tiles = tile_ranges(hdu, region)
        assert len(tiles) == 4
        heap = (hdu.table[1], max(t[1] for t in hdu.tiles if t is not None))
        assert clip(ranges, heap) == union(tiles), f"{name}: {message}"
        metadata = [r for r in ranges if r[0] < hdu.table[1] and hdu.header[0] < r[1]]
        assert len(metadata) == 1, f"{name} header and tile table read {len(metadata)} times: {message}"
        assert metadata[0][0] == hdu.header[0] and metadata[0][1] >= hdu.table[1], message
    allowed = [(served.hdus[n].header[0], served.hdus[n].table[1]) for n in ("IMAGE", "VARIANCE")]
    allowed += [t for n in ("IMAGE", "VARIANCE") for t in tile_ranges(served.hdus[n], region)]
    assert all(inside(r, union(allowed)) for r in ranges), message


def test_a_small_region_inside_one_big_chunk_fetches_only_the_touched_tiles(
    served: Served, http_server: HttpServer
) -> None:
    coadd = ccd.open_coadd(served.url, chunks="auto")
    cy, cx = coadd.grid.cell_shape
    assert coadd.image.array.chunks[0][0] >= 2 * cy and coadd.image.array.chunks[1][0] >= 2 * cx
    hdu = served.hdus["IMAGE"]
    heap = (hdu.table[1], max(t[1] for t in hdu.tiles if t is not None))
    array = coadd.image.array
    array[:1, :1].compute()  # load the tile table once
    cell = local_cell(coadd, 1, 1)
    regions = {
        "10x10 inside one cell": (slice(cell[0].start + 20, cell[0].start + 30),
                                  slice(cell[1].start + 40, cell[1].start + 50)),
        "20x20 across a column boundary": (slice(cell[0].start + 5, cell[0].start + 25),
                                           slice(cell[1].stop - 10, cell[1].stop + 10)),
        "one pixel at a four-cell corner": (slice(cell[0].stop - 1, cell[0].stop + 1),
                                            slice(cell[1].stop - 1, cell[1].stop + 1)),
    }
    for what, region in regions.items():
        expected = union(tile_ranges(hdu, region))
        log = measure(http_server, served.url, lambda region=region: (array[region] + 1).sum().compute())
        ranges = ranges_of(log)
        assert clip(ranges, heap) == expected, f"{what}: fetched {ranges}, expected the tiles {expected}"
        assert all(inside(r, expected) for r in ranges), f"{what}: fetched {ranges} beyond the tiles"


def test_one_cell_of_a_full_patch_costs_about_one_tile(
    full_patch: Path, http_server: HttpServer, report: Callable[[str, object], None]
) -> None:
    url = http_server.publish(full_patch)
    hdus = {h.label: h for h in fits_layout(full_patch)}
    open_log = measure(http_server, url, lambda: ccd.open_coadd(url))
    coadd = ccd.open_coadd(url)
    region = local_cell(coadd, 11, 11)
    (tile,) = tile_ranges(hdus["IMAGE"], region)
    cell_log = measure(http_server, url, lambda: coadd.image.array[region].compute())
    summary = {
        "file_bytes": full_patch.stat().st_size,
        "open_requests": len(open_log),
        "open_bytes": open_log.body_bytes,
        "cell_requests": len(cell_log),
        "cell_bytes": cell_log.body_bytes,
        "tile_bytes": tile[1] - tile[0],
        "header_and_table_bytes": hdus["IMAGE"].table[1] - hdus["IMAGE"].header[0],
    }
    for key, value in summary.items():
        report(key, value)
    assert summary["open_requests"] <= 4, summary
    assert summary["cell_requests"] <= 2, summary
    assert summary["cell_bytes"] <= summary["tile_bytes"] + SLACK, summary
    assert summary["open_bytes"] + summary["cell_bytes"] < summary["file_bytes"] // 100, summary


# ----------------------------------------------------------------------------- servers that misbehave


class _NoRangeHandler(http.server.SimpleHTTPRequestHandler):
    """The standard library's file handler: it answers every GET with the whole file (200)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def range_ignoring_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback that ignores ``Range`` headers, serving ``tmp_path``."""
    handler = lambda *args: _NoRangeHandler(*args, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_server_that_ignores_range_gives_a_typed_error(
    range_ignoring_server: tuple[str, Path], reference_dir: Path
) -> None:
    base, root = range_ignoring_server
    shutil.copyfile(reference_dir / "min_default.fits", root / "min_default.fits")
    url = f"{base}/min_default.fits"
    with pytest.raises(ccd.CellCoaddError) as info:
        ccd.open_coadd(url).image.array.compute()
    assert url in str(info.value)
    assert "Range" in str(info.value) or "range" in str(info.value)


def truncated_copy(source: Path, tmp_path: Path, http_server: HttpServer) -> tuple[str, Path]:
    """Publish a private copy of ``source`` (so that it can be truncated in place later)."""
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    url = http_server.publish(copy)
    return url, http_server.root / url.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    "where", ["inside_a_tile", "at_the_end_of_the_tile_table", "inside_the_tile_table", "inside_the_image_header"])
def test_a_file_truncated_after_opening_gives_a_typed_error(
    reference_dir: Path, tmp_path: Path, http_server: HttpServer, where: str
) -> None:
    source = reference_dir / "synthetic_3x3.fits"
    image = {h.label: h for h in fits_layout(source)}["IMAGE"]
    first_tile = image.tiles[0]
    assert first_tile is not None
    size = {"inside_a_tile": first_tile[0] + 1000, "at_the_end_of_the_tile_table": image.table[1],
            "inside_the_tile_table": image.table[1] - 10, "inside_the_image_header": image.header[1] - 2880}[where]
    url, served_path = truncated_copy(source, tmp_path, http_server)
    coadd = ccd.open_coadd(url)
    os.truncate(served_path, size)
    with pytest.raises(ccd.CellCoaddError) as info:
        coadd.image.array.compute()
    assert url in str(info.value)
    # nginx's ETag changes with the size: the pinned ETag refuses the changed file outright.
    assert isinstance(info.value, ObjectChangedError), info.value
    assert "changed since it was opened" in str(info.value)


def test_a_file_truncated_before_opening_gives_a_format_error(
    reference_dir: Path, tmp_path: Path, http_server: HttpServer
) -> None:
    source = reference_dir / "synthetic_3x3.fits"
    url, served_path = truncated_copy(source, tmp_path, http_server)
    os.truncate(served_path, source.stat().st_size - 2880)
    with pytest.raises(ccd.ArchiveFormatError) as info:
        ccd.open_coadd(url)
    assert url in str(info.value)


def test_a_missing_file_gives_a_typed_error(http_server: HttpServer) -> None:
    url = f"{http_server.url}/no-such-coadd.fits"
    with pytest.raises(ccd.CellCoaddError) as info:
        ccd.open_coadd(url)
    assert url in str(info.value)


def test_the_cell_read_over_http_equals_the_local_read(served: Served) -> None:
    remote = ccd.open_coadd(served.url)
    local = ccd.open_coadd(served.path)
    region = local_cell(remote, 1, 2)
    np.testing.assert_array_equal(remote.image.array[region].compute(), local.image.array[region].compute())
