"""Lazily indexed sources over FITS HDUs: what the FITS reader hands to the dask layer.

A :class:`FitsArraySource` knows the URL and the INDEX entries of the HDUs it reads.
The first read loads their headers (one batched request, which also brings the first
descriptor rows of their tile tables); a read then fetches the descriptor rows it still
lacks, then, in one ``cat_ranges`` call, only the tiles the requested region touches, and
decodes them.  What is loaded is cached on the instance, so a worker reads it once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ArchiveFormatError, shown_url
from ...fetch import FetchPolicy, ObjectPin, fetch_ranges
from ...fetch_cache import CachedObject, served, served_from
from ...lazy import apply_rest, normalize_key
from .cards import parse_header
from .layout import HduEntry
from .tile_tables import compressed_layout_from_header, load_rows, plain_layout
from .tiles import StoredArray, TiledArray

__all__ = ["FitsArraySource", "HduRef", "load_layouts", "parse_layouts", "preload"]


@dataclass(frozen=True, slots=True)
class HduRef:
    """One HDU to read.

    Holds its INDEX entry, the logical shape and dtype the tree promises, and a guess of
    its tile-table size (so that header and table usually come in one read).
    """

    entry: HduEntry
    shape: tuple[int, ...]
    dtype: str
    table_guess: int = 0


def load_layouts(
    url: str, refs: Sequence[HduRef], storage_options: Mapping[str, Any] | None = None, pin: ObjectPin | None = None
) -> list[StoredArray]:
    """Read the headers of ``refs`` (and the descriptor rows that fit the guess) in one batch.

    Raises
    ------
    ArchiveFormatError
        When a header disagrees with the INDEX or the JSON tree, or a tile table is corrupt.
    """
    first = []
    for ref in refs:
        e = ref.entry
        stop = e.dataddr + (min(ref.table_guess, e.datsize) if e.compressed else 0)
        first.append((e.hdraddr, stop))
    blobs = fetch_ranges(url, first, storage_options=storage_options, pin=pin)
    return parse_layouts(url, refs, blobs)


def parse_layouts(url: str, refs: Sequence[HduRef], blobs: Sequence[bytes | memoryview]) -> list[StoredArray]:
    """The layouts of ``refs`` from their stored bytes: each HDU's header, then any descriptor rows.

    Each blob starts at the HDU's header (``entry.hdraddr``); the tile-table rows that follow
    the header in it are loaded (all of them when the blob reaches the table's end), the rest
    on demand.  Used by :func:`load_layouts` and by tract indexes, which store these bytes.

    Raises
    ------
    ArchiveFormatError
        When a header disagrees with the INDEX or the JSON tree, or a tile table is corrupt.
    """
    layouts: list[StoredArray] = []
    for ref, blob in zip(refs, blobs, strict=True):
        e = ref.entry
        header = parse_header(blob, 0, url=url, hdu=e.label)
        if header.size != e.dataddr - e.hdraddr:
            raise ArchiveFormatError(
                f"header size {header.size} does not match the INDEX (data at {e.dataddr})",
                url=url,
                hdu=e.label,
                byte_range=(e.hdraddr, e.dataddr),
            )
        extname, extver = header.get("EXTNAME"), header.get("EXTVER", 1)
        if not isinstance(extname, str) or extname.strip() != e.extname or extver != e.extver:
            raise ArchiveFormatError(
                f"the INDEX points at an HDU named {extname!r} (EXTVER {extver!r})",
                url=url,
                hdu=e.label,
                byte_range=(e.hdraddr, e.dataddr),
            )
        layout: StoredArray
        if e.compressed:
            tiled = compressed_layout_from_header(
                header, data_start=e.dataddr, data_size=e.datsize, url=url, hdu=e.label
            )
            # The rows that came with the header (all of them when the guess covered the table).
            load_rows(tiled, 0, blob[header.size :])
            layout = tiled
        else:
            layout = plain_layout(header, data_start=e.dataddr, data_size=e.datsize, url=url, hdu=e.label)
        if tuple(layout.shape) != tuple(ref.shape):
            raise ArchiveFormatError(
                f"array shape {tuple(layout.shape)} in the header does not match the JSON tree {tuple(ref.shape)}",
                url=url,
                hdu=e.label,
            )
        if np.dtype(layout.dtype).kind != np.dtype(ref.dtype).kind and not (
            np.dtype(ref.dtype).kind in "ui" and np.dtype(layout.dtype).kind in "ui"
        ):
            raise ArchiveFormatError(
                f"array type {layout.dtype} in the header does not match the JSON tree ({ref.dtype})",
                url=url,
                hdu=e.label,
            )
        layouts.append(layout)
    return layouts


class _LayoutCache:
    """Tile tables loaded once and shared by the sources derived from one another.

    Also the file's known bytes (a tract index's copy of its headers and tile tables) when
    the source was made while they were served: headers and tables loaded later come from
    them, without a request.  Pickled with what it holds (tile tables are byte ranges: small),
    without its lock.
    """

    def __init__(self, known: CachedObject | None = None) -> None:
        self.layouts: list[StoredArray] | None = None
        self.known = known
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"layouts": self.layouts, "known": self.known}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.layouts = state["layouts"]
        self.known = state.get("known")
        self.lock = threading.Lock()

    def serving(self, url: str) -> contextlib.AbstractContextManager[None]:
        """Serve the known bytes of ``url`` (if any) to the reads of the block."""
        return contextlib.nullcontext() if self.known is None else served_from({url: self.known})


class FitsArraySource:
    """A lazily indexed array read from one or more HDUs of a FITS archive.

    Parameters
    ----------
    url
        The file.
    refs
        The HDUs whose arrays are read together (several for a split mask).
    shape, dtype
        Shape and dtype of what ``__getitem__`` returns for the full region.
    combine
        Maps the arrays read from ``refs`` (one per HDU, over the leading axes of the
        region) and the full region to the result; ``None`` means the single HDU's
        array, cast to ``dtype``.
    storage_options
        Passed to fsspec.
    pin
        The object's identity when it was opened (reads of a changed object fail).
    """

    def __init__(
        self,
        url: str,
        refs: Sequence[HduRef],
        *,
        shape: tuple[int, ...],
        dtype: np.dtype | str,
        combine: Callable[[list[np.ndarray], tuple[slice, ...]], np.ndarray] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        pin: ObjectPin | None = None,
    ) -> None:
        self.url = url
        self.pin = pin
        self.refs = tuple(refs)
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.combine = combine
        self.storage_options = dict(storage_options or {})
        self._cache = _LayoutCache(served(url))

    @property
    def loaded_layouts(self) -> list[StoredArray] | None:
        """The stored arrays' layouts (tile tables), or ``None`` while they are not loaded.

        Loaded by the first read or :meth:`load_metadata`; looking never triggers a read.
        """
        return self._cache.layouts

    def set_layouts(self, layouts: list[StoredArray]) -> None:
        """Give the source its layouts (from :func:`parse_layouts` over stored bytes); no read is made."""
        if len(layouts) != len(self.refs):
            raise ValueError(f"{len(layouts)} layouts for {len(self.refs)} HDUs")
        with self._cache.lock:
            self._cache.layouts = list(layouts)

    @staticmethod
    def load_metadata(sources: Sequence[FitsArraySource]) -> None:
        """Load the headers and tile tables of ``sources`` in at most two batched reads (see :func:`preload`)."""
        preload(sources)

    def __repr__(self) -> str:
        hdus = ", ".join(r.entry.label for r in self.refs)
        return f"FitsArraySource({shown_url(self.url)!r}, [{hdus}], shape={self.shape}, dtype={self.dtype})"

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return (
            self.url,
            tuple((r.entry, r.shape, r.dtype) for r in self.refs),
            self.shape,
            str(self.dtype),
            tokenize(self.combine),
            self.pin,
        )

    def derive(
        self,
        combine: Callable[[list[np.ndarray], tuple[slice, ...]], np.ndarray],
        shape: tuple[int, ...],
        dtype: np.dtype | str,
    ) -> FitsArraySource:
        """A source over the same HDUs with another combiner (sharing loaded tile tables)."""
        out = FitsArraySource(
            self.url, self.refs, shape=shape, dtype=dtype, combine=combine, storage_options=self.storage_options,
            pin=self.pin,
        )
        out._cache = self._cache
        return out

    def layouts(self) -> list[StoredArray]:
        """The decoded-array descriptions of the HDUs (loaded on first use, then cached)."""
        cache = self._cache
        if cache.layouts is None:
            with cache.lock:
                if cache.layouts is None:
                    with cache.serving(self.url):
                        layouts = load_layouts(self.url, self.refs, self.storage_options, self.pin)
                    if cache.known is not None:
                        # Known bytes hold whole tile tables: each is parsed at once (no
                        # request), not row by row as reads reach them.
                        wanted = [(layout, a, b) for layout in layouts if isinstance(layout, TiledArray)
                                  for a, b in layout.missing_rows(_whole(layout.shape))]
                        for (layout, a, _), blob in zip(wanted, self._row_blobs(wanted), strict=True):
                            load_rows(layout, a, blob)
                    cache.layouts = layouts
        return cache.layouts

    def _load_rows(self, layouts: list[StoredArray], region: tuple[slice, ...]) -> None:
        """Read the tile-descriptor rows ``region`` needs that are not loaded yet (one batched fetch)."""
        wanted: list[tuple[TiledArray, int, int]] = []
        for layout in layouts:
            if isinstance(layout, TiledArray):
                wanted += [(layout, a, b) for a, b in layout.missing_rows(region[: len(layout.shape)])]
        if not wanted:
            return
        blobs = self._row_blobs(wanted)
        with self._cache.lock:
            for (layout, a, _), blob in zip(wanted, blobs, strict=True):
                load_rows(layout, a, blob)

    def _row_blobs(self, wanted: list[tuple[TiledArray, int, int]]) -> list[bytes]:
        """The bytes of descriptor rows ``[a, b)`` of each layout: one batched fetch (or the known bytes)."""
        if not wanted:
            return []
        with self._cache.serving(self.url):
            return fetch_ranges(
                self.url, [layout.row_range(a, b) for layout, a, b in wanted], storage_options=self.storage_options,
                pin=self.pin,
            )

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """Read exactly ``region`` (unit-step slices, one per axis)."""
        if any(s.stop <= s.start for s in region):
            return np.empty(tuple(max(0, s.stop - s.start) for s in region), dtype=self.dtype)
        layouts = self.layouts()
        self._load_rows(layouts, region)
        per_layout = [layout.byte_ranges(region[: len(layout.shape)]) for layout in layouts]
        blobs = fetch_ranges(
            self.url, [r for rs in per_layout for r in rs], storage_options=self.storage_options, copy=False,
            pin=self.pin,
        )
        arrays = []
        k = 0
        for layout, rs in zip(layouts, per_layout, strict=True):
            arrays.append(layout.assemble(region[: len(layout.shape)], blobs[k : k + len(rs)]))
            k += len(rs)
        if self.combine is not None:
            return self.combine(arrays, region)
        return arrays[0].astype(self.dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        region, rest = normalize_key(key, self.shape)
        return apply_rest(self.read(region), rest)

    def tile_moments(
        self, region: tuple[slice, ...], valid: np.ndarray | None = None, full: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Per-tile moments of a 2-d ``region`` of a single tiled HDU (see :meth:`TiledArray.tile_moments`).

        ``None`` when the source is not one tiled 2-d HDU read as stored (a split mask, a
        cast, a plain HDU): then only :meth:`read` gives its pixels.
        """
        if self.combine is not None or len(self.refs) != 1 or self.ndim != 2 or len(region) != 2:
            return None
        if any(s.stop <= s.start for s in region):
            return None
        layouts = self.layouts()
        layout = layouts[0]
        if not isinstance(layout, TiledArray) or layout.dtype != self.dtype:
            return None
        self._load_rows(layouts, region)
        # The whole region is reduced: rows of tiles separated by a few unwanted ones are one
        # request (FetchPolicy.reduction_share bounds the bytes read and dropped).
        blobs = fetch_ranges(self.url, layout.byte_ranges(region), storage_options=self.storage_options, copy=False,
                             pin=self.pin, max_share=FetchPolicy.current().reduction_share)
        return layout.tile_moments(region, blobs, valid, full)


def _whole(shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def preload(sources: Sequence[FitsArraySource]) -> None:
    """Load the headers and every tile-descriptor row of ``sources`` in at most two batched reads.

    Afterwards the sources hold all the metadata their reads need (byte ranges and decode
    parameters of every tile), so a pickled source (a task of a distributed graph) never
    reads a header or a table row again.  Sources of one file share one request batch.
    """
    by_url: dict[str, list[FitsArraySource]] = {}
    for source in sources:
        if source._cache.layouts is None:
            by_url.setdefault(source.url, []).append(source)
    for url, group in by_url.items():
        unique = list({id(s._cache): s for s in group}.values())
        # Quantized tables have 32-byte rows (4 columns), lossless ones 8: ask for enough for
        # either, so the whole table usually comes with the header in this one batch.
        # PSF-like arrays (no guess at open) have one row tile per kernel row: 8 bytes each.
        refs = [
            dataclasses.replace(ref, table_guess=4 * ref.table_guess or 8 * math.prod(ref.shape[:-1]))
            for s in unique
            for ref in s.refs
        ]
        with unique[0]._cache.serving(url):
            layouts = load_layouts(url, refs, unique[0].storage_options, unique[0].pin)
        k = 0
        for source in unique:
            with source._cache.lock:
                if source._cache.layouts is None:
                    source._cache.layouts = layouts[k : k + len(source.refs)]
            k += len(source.refs)
    wanted: dict[str, list[tuple[FitsArraySource, TiledArray, int, int]]] = {}
    for source in {id(s._cache): s for s in sources}.values():
        for layout in source.layouts():
            if isinstance(layout, TiledArray) and layout.loaded is not None:
                wanted.setdefault(source.url, []).extend(
                    (source, layout, a, b) for a, b in layout.missing_rows(_whole(layout.shape))
                )
    for url, rows in wanted.items():
        if not rows:
            continue
        with rows[0][0]._cache.serving(url):
            blobs = fetch_ranges(url, [layout.row_range(a, b) for _, layout, a, b in rows],
                                 storage_options=rows[0][0].storage_options, pin=rows[0][0].pin)
        for (source, layout, a, _), blob in zip(rows, blobs, strict=True):
            with source._cache.lock:
                load_rows(layout, a, blob)
