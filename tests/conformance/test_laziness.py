"""Reads are lazy: what opening, one cell and a cut-out cost, counted by ``ccd.fetch_stats``.

Opening a FITS or Zarr (layout 2) archive reads its metadata in at most two requests, one
cell of the image at most two more; a cut-out reads a small part of the archive.  A JSON
archive is read whole when opened, and nothing after.  Over nginx, what ``fetch_stats``
counts is exactly what nginx's access log shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import dask

import cellcoadd_dask as ccd

from .archives import CELLS, Archive
from .library import Library
from .sources import HttpSource, Published, Source


def _cell_box(coadd: ccd.CellCoadd) -> ccd.Box:
    """The box of the first cell with data (clipped to the coadd)."""
    cell = coadd.grid.bbox_of(next(iter(coadd.bounds.cell_indices())))
    box = cell.intersection(coadd.bbox)
    assert box is not None
    return box


def _cutout_box(coadd: ccd.CellCoadd) -> ccd.Box:
    """A box of one cell's size around the middle of the coadd (it meets up to four cells), clipped to it."""
    cy, cx = coadd.grid.cell_shape.y, coadd.grid.cell_shape.x
    y0 = coadd.bbox.y.start + (coadd.bbox.y.stop - coadd.bbox.y.start - cy) // 2
    x0 = coadd.bbox.x.start + (coadd.bbox.x.stop - coadd.bbox.x.start - cx) // 2
    box = ccd.Box.factory[y0 : y0 + cy, x0 : x0 + cx].intersection(coadd.bbox)
    assert box is not None
    return box


def _of(url: str, published: Published) -> bool:
    """Whether a fetched URL is the published archive or one of its objects."""
    from cellcoadd_dask.fetch import normalize_url

    root = normalize_url(published.url).rstrip("/")
    fetched = normalize_url(url)
    return fetched == root or fetched.startswith(root + "/")


@contextlib.contextmanager
def counted(source: Source, published: Published) -> Iterator[ccd.FetchStats]:
    """Count the requests of the block for the published archive with ``fetch_stats``.

    Only reads of this archive are counted (a read another test left running in the
    background is not this block's).  Over nginx, they are checked against its access log.
    """
    http = source if isinstance(source, HttpSource) else None
    mark = http.mark() if http else 0
    own = ccd.FetchStats()
    with ccd.fetch_stats() as stats:
        yield own
    own.calls, own.failures = stats.calls, stats.failures
    own.ranges.extend(r for r in stats.ranges if _of(r[0], published))
    if http is None:
        return
    log = http.requests_since(mark, published)
    assert all(r.status in (200, 206) for r in log), log
    assert len(log) == own.requests, (log, own.ranges)
    assert sum(r.body_bytes for r in log) == own.nbytes, (log, own.ranges)


def test_open_one_cell_and_cutout_read_little(archive: Archive, source: Source, library: Library,
                                              record_property: Callable[[str, object], None]) -> None:
    name = CELLS if CELLS in archive.files else archive.files[0]
    published = library.published(archive, source, name)
    with counted(source, published) as opening:
        coadd = ccd.open_coadd(published.url, **published.open_kwargs())
    with counted(source, published) as cell:
        coadd[_cell_box(coadd)].image.array.compute()
    with counted(source, published) as cutout:
        cut = coadd[_cutout_box(coadd)]
        dask.compute(cut.image.array, cut.mask.array, cut.variance.array)
    retried = opening.failures + cell.failures + cutout.failures
    counts = {"open": (opening.requests, opening.nbytes), "cell": (cell.requests, cell.nbytes),
              "cutout": (cutout.requests, cutout.nbytes), "size": published.nbytes, "retried": retried}
    record_property("counts", counts)
    if source.name == "faulty":
        assert retried >= 1, "the proxy reset requests and the fetch layer retried them"
    if archive.reads_whole_at_open:
        assert opening.requests <= 2 and opening.nbytes >= published.nbytes, counts
        assert (cell.requests, cutout.requests) == (0, 0), counts
        return
    assert archive.open_requests is not None
    assert opening.requests <= archive.open_requests, counts
    assert cell.requests <= archive.cell_requests, counts
    assert 0 < cutout.nbytes < published.nbytes // 4, counts
