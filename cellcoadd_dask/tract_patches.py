"""The patch files of a tract, opened and checked: :func:`open_all` and :func:`check_patches`.

FITS patches are opened to their container only (primary header, JSON tree and INDEX: two
requests each, and the tree parsed into its model); their coadds are built when a read first
touches them.  The patches' fields are compared on their models, so opening a tract of many
patches costs their metadata requests and little else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ValidationError, shown_url
from .lazy import Chunks
from .tract_source import PatchHandle

if TYPE_CHECKING:
    from .coadd import CellCoadd
    from .fetch_readers import Reader
    from .model import CellCoaddModel

__all__ = ["OPEN_THREADS", "Opened", "build_from_container", "check_patches", "open_all", "opened_coadd"]

OPEN_THREADS = 16
"""Number of files opened at once."""


@dataclass(frozen=True)
class Opened:
    """One patch file opened for a tract: its model (the parsed tree), and how to build its coadd.

    FITS patches are opened to their container only (primary header, tree and INDEX: two
    requests); the coadd is built when a read first touches the patch, from the container,
    without another request.  Other archives are opened whole (``coadd`` set).
    """

    url: str
    model: CellCoaddModel
    opener: Callable[[], CellCoadd]
    token: str
    coadd: CellCoadd | None = None
    opened_key: str | None = None  # besides ``token``, what the built coadd depends on (options, chunks)


def build_from_container(container: Any, storage_options: Mapping[str, Any] | None, chunks: Chunks) -> CellCoadd:
    """Build a FITS patch's coadd from its already read container (no request)."""
    from .archives.fits.reader import FitsInputArchive
    from .archives.input import coadd_from_archive
    from .streaming import distributed_client

    archive = FitsInputArchive(container, storage_options, preload=distributed_client() is not None)
    return coadd_from_archive(archive, chunks=chunks)


def opened_coadd(url: str, coadd: CellCoadd) -> Opened:
    """An :class:`Opened` of a coadd already built (its model parsed again from its stored tree)."""
    from .model import parse_cell_coadd

    stored = coadd.stored
    if stored is None:
        raise ValidationError(f"{shown_url(url)}: the coadd was not read from an archive")
    model = parse_cell_coadd(stored.tree, url=url)
    return Opened(url, model, functools.partial(_the, coadd), coadd.image.array.name, coadd)


def _the(coadd: CellCoadd) -> CellCoadd:
    return coadd


def _fits_reader(url: str, storage_options: Mapping[str, Any] | None, chunks: Chunks,
                 opened_key: str) -> Reader[Opened]:
    """Open a FITS patch to its container and model (a reader: its reads are answered by the caller)."""
    from .archives.fits.layout import container_reader
    from .model import parse_cell_coadd

    container = yield from container_reader(url)
    model = parse_cell_coadd(container.tree, url=url)
    pin = container.pin
    token = f"{url}|{getattr(pin, 'size', None)}|{getattr(pin, 'etag', None)}|{getattr(pin, 'mtime_ns', None)}"
    return Opened(url, model, functools.partial(build_from_container, container, storage_options, chunks), token,
                  opened_key=opened_key)


def _open_one(url: str, storage_options: Mapping[str, Any] | None, chunks: Chunks, opened_key: str) -> Opened:
    from .archives.registry import format_of
    from .fetch_readers import run_reader
    from .open import open_coadd

    if format_of(url, storage_options).name == "fits":
        return run_reader(_fits_reader(url, storage_options, chunks, opened_key), storage_options)
    return opened_coadd(url, open_coadd(url, chunks=chunks, storage_options=storage_options))


def open_all(urls: Sequence[str], storage_options: Mapping[str, Any] | None, chunks: Chunks) -> list[Opened]:
    """Open the patch files (metadata only), in the order given.

    Files named as FITS are opened by :func:`~cellcoadd_dask.fetch_readers.run_readers` (on
    the event loop when remote: no thread per file); others from :data:`OPEN_THREADS` threads.
    The first failure in the order given is raised (the others are dropped).
    """
    from dask.base import tokenize

    from .archives.registry import suffix_format
    from .fetch_readers import run_readers
    from .starlink_sandbox import prestart

    prestart()
    # A FITS patch's coadd is built from its container (fixed by the file's pin, in its token)
    # with these options: a process builds it once for every handle copy (see PatchHandle).
    opened_key = tokenize(storage_options, chunks)
    fits = [k for k, url in enumerate(urls) if getattr(suffix_format(url), "name", None) == "fits"]
    others = sorted(set(range(len(urls))) - set(fits))
    results: dict[int, Opened | Exception] = {}
    if fits:
        readers = [(urls[k], _fits_reader(urls[k], storage_options, chunks, opened_key)) for k in fits]
        results.update(zip(fits, run_readers(readers, storage_options, threads=OPEN_THREADS), strict=True))
    if others:
        with ThreadPoolExecutor(max_workers=min(OPEN_THREADS, len(others))) as pool:
            futures = {k: pool.submit(_open_one, urls[k], storage_options, chunks, opened_key) for k in others}
            for k, future in futures.items():
                try:
                    results[k] = future.result()
                except Exception as exc:
                    results[k] = exc
    opened = [results[k] for k in range(len(urls))]
    for result in opened:
        if isinstance(result, Exception):
            raise result
    return opened  # type: ignore[return-value]


def _skymap_tract(model: CellCoaddModel) -> tuple[Any, Any]:
    transform = model.sky_projection.get("pixel_to_sky") if isinstance(model.sky_projection, Mapping) else None
    frames = transform.get("frames") if isinstance(transform, Mapping) else None
    frame = frames[0] if isinstance(frames, list) and frames and isinstance(frames[0], Mapping) else {}
    return frame.get("skymap"), frame.get("tract")


_FIELDS: tuple[tuple[str, Callable[[CellCoaddModel], Any]], ...] = (
    ("skymap", lambda m: _skymap_tract(m)[0]),
    ("tract", lambda m: _skymap_tract(m)[1]),
    ("band", lambda m: m.band),
    ("units", lambda m: (m.image.unit, m.variance.unit)),
    ("dtypes", lambda m: (m.image.array.datatype, m.variance.array.datatype)),
    ("cell shape", lambda m: tuple(m.psf.bounds.grid.cell_shape)),
    ("mask schema", lambda m: (tuple(None if p is None else p.name for p in m.mask.planes), m.mask.dtype)),
    ("mask fractions",
     lambda m: (tuple(m.mask_fractions), tuple(v.array.datatype for v in m.mask_fractions.values()))),
    ("noise realizations",
     lambda m: (len(m.noise_realizations), tuple(v.array.datatype for v in m.noise_realizations))),
)


def check_patches(urls: Sequence[str], opened: Sequence[Opened]) -> list[PatchHandle]:
    """Handles of the opened patches, checked to form one tract (:class:`ValidationError` naming file and field)."""
    for url, o in zip(urls, opened, strict=True):
        if o.model.patch is None:
            raise ValidationError(f"{shown_url(url)}: field 'patch': the coadd has no patch definition.")
    first_url, first = urls[0], opened[0].model
    for name, get in _FIELDS:
        expected = get(first)
        for url, o in zip(urls[1:], opened[1:], strict=True):
            if get(o.model) != expected:
                raise ValidationError(
                    f"{shown_url(url)}: field {name!r} is {get(o.model)!r}, but {shown_url(first_url)} has "
                    f"{expected!r}; every patch of a tract must agree."
                )
    assert first.patch is not None
    cy, cx = first.psf.bounds.grid.cell_shape
    origin = first.patch.cells.bbox.start
    by_index: dict[tuple[int, int], str] = {}
    handles = []
    for url, o in zip(urls, opened, strict=True):
        patch = o.model.patch
        assert patch is not None
        start = patch.cells.bbox.start
        if (start.y - origin.y) % cy or (start.x - origin.x) % cx:
            raise ValidationError(
                f"{shown_url(url)}: field 'patch.cells': its cell grid starts at {start}, off the cell edges of "
                f"{shown_url(first_url)}'s grid."
            )
        index = (patch.index.y, patch.index.x)
        if index in by_index:
            raise ValidationError(
                f"{shown_url(by_index[index])} and {shown_url(url)} are both patch index {index} "
                f"(field 'patch.index'): give one file per patch."
            )
        by_index[index] = url
        covered = patch.inner_bbox.intersection(o.model.image.bbox)
        handles.append(PatchHandle(url, index, patch.id, patch.inner_bbox, covered, o.opener, o.token,
                                   coadd=o.coadd, keep_opened=o.coadd is not None, opened_key=o.opened_key))
    return handles
