"""The pieces of a tract Dataset: patch handles (opened on first use) and the per-plane tract source.

A :class:`PatchHandle` is one patch file of a tract: where its inner box lies, what part of it
the file covers, and how to open it.  Patches given by URL are opened when the tract is (their
metadata decides the layout); patches of a tract index are opened the first time a read
touches them, from the bytes the index holds (no request), in whatever process runs the read.

A :class:`TractSource` is one plane over the tract box: indexing it hands each region to the
patches it overlaps, as exactly the part they provide, so that a selection reads only the tiles
it touches however large the chunks are.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from .geom import Box
from .lazy import ArraySource, apply_rest, normalize_key

if TYPE_CHECKING:
    from .coadd import CellCoadd
    from .image import Image
    from .mask import Mask

__all__ = ["PatchHandle", "TractSource", "plane_of", "source_of"]


def _plane(coadd: CellCoadd, spec: str) -> Image | Mask:
    """The image or mask object behind plane ``spec`` (see :func:`plane_of`)."""
    if spec == "mask-elements":
        return coadd.mask
    if spec == "image":
        return coadd.image
    if spec == "variance":
        return coadd.variance
    kind, _, name = spec.partition(":")
    if kind == "fraction":
        return coadd.mask_fractions[name]
    if kind == "noise":
        return coadd.noise_realizations[int(name)]
    raise ValueError(f"unknown plane {spec!r}")


def plane_of(coadd: CellCoadd, spec: str) -> da.Array:
    """One plane of a coadd by name.

    ``image``, ``variance``, ``mask`` (packed when it fits one integer), ``mask-elements`` (the
    in-memory layout), ``fraction:<name>`` or ``noise:<k>``.
    """
    return coadd.mask.packed() if spec == "mask" else _plane(coadd, spec).array


def source_of(coadd: CellCoadd, spec: str, box: Box | None = None) -> ArraySource | None:
    """A source of plane ``spec`` of ``coadd`` over ``box`` (default: the whole plane) reading without a dask graph.

    ``None`` when the plane does not come straight from an archive (then only its dask array,
    :func:`plane_of`, can read it).  ``box`` (absolute) must lie inside the plane's bbox; the
    coadd is not sliced, so nothing but the source is built.
    """
    if spec == "mask":
        return coadd.mask.packed_source(box)
    plane = _plane(coadd, spec)
    if plane.origin is None:
        return None
    if box is not None:
        box.slice_within(plane.bbox)
    return plane.origin.window(plane.bbox if box is None else box)


OPENED_PATCHES = 256
"""Patches a process keeps opened for the handles unpickled there (see :func:`_opened`)."""

_opened_lock = threading.Lock()
_opened_patches: OrderedDict[tuple[str, str], CellCoadd] = OrderedDict()


def _opened(token: str, opener: Callable[[], CellCoadd], opened_key: str | None = None) -> CellCoadd:
    """The patch ``opener`` opens, opened once per process however many handles stand for it.

    Each plane's source of a tract carries its own copies of the patch handles to the workers;
    without this, a worker reading image and variance would open every patch once per plane.
    The key is the handle's token (URL and pin) and what else the opened patch depends on (its
    index bytes, storage options and chunks): ``opened_key`` when the handle's maker knows it,
    else the opener's token (tokenizing an opener holding index bytes costs milliseconds).
    """
    from dask.base import tokenize

    key = (token, opened_key if opened_key is not None else tokenize(opener))
    with _opened_lock:
        found = _opened_patches.get(key)
        if found is not None:
            _opened_patches.move_to_end(key)
            return found
    coadd = opener()
    with _opened_lock:
        coadd = _opened_patches.setdefault(key, coadd)
        _opened_patches.move_to_end(key)
        while len(_opened_patches) > OPENED_PATCHES:
            _opened_patches.popitem(last=False)
    return coadd


class PatchHandle:
    """One patch of a tract, opened on first use (then cached in this process).

    Parameters
    ----------
    url
        The patch file (for messages and tokens).
    index
        Patch index ``(y, x)``.
    patch_id
        The patch's id in its skymap.
    inner
        The patch's inner box (absolute).
    covered
        The part of ``inner`` the file covers, or ``None``.
    opener
        A picklable callable returning the opened :class:`CellCoadd`.
    token
        What identifies the patch's content (URL and pin) in dask keys.
    coadd
        The coadd when it is already open.
    keep_opened
        Pickle the opened coadd with the handle (patches opened with the tract), instead of
        opening it again where the handle is unpickled (patches of a tract index).
    opened_key
        What the opened patch depends on besides ``token`` (e.g. a checksum of its index bytes
        and a token of the options): with ``token``, the key under which a process keeps it
        opened; ``None`` tokenizes ``opener`` instead.
    """

    def __init__(self, url: str, index: tuple[int, int], patch_id: int, inner: Box, covered: Box | None,
                 opener: Callable[[], CellCoadd], token: str, coadd: CellCoadd | None = None,
                 keep_opened: bool = False, opened_key: str | None = None) -> None:
        self.url = url
        self.index = index
        self.patch_id = patch_id
        self.inner = inner
        self.covered = covered
        self.opener = opener
        self.token = token
        self._coadd = coadd
        self.keep_opened = keep_opened
        self.opened_key = opened_key
        self._planes: dict[str, da.Array] = {}
        self._sources: dict[str, ArraySource | None] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        dropped = ("_lock", "_planes", "_sources") if self.keep_opened else ("_lock", "_planes", "_sources", "_coadd")
        return {k: v for k, v in self.__dict__.items() if k not in dropped}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_coadd", None)
        self._planes = {}
        self._sources = {}
        self._lock = threading.Lock()

    @property
    def coadd(self) -> CellCoadd:
        """The patch, opened now if it is not yet (once per process for handles that open from an index)."""
        if self._coadd is None:
            with self._lock:
                if self._coadd is None:
                    self._coadd = (self.opener() if self.keep_opened
                                   else _opened(self.token, self.opener, self.opened_key))
        return self._coadd

    def plane(self, spec: str) -> da.Array:
        """The lazy plane ``spec`` (see :func:`plane_of`) over the covered box."""
        with self._lock:
            found = self._planes.get(spec)
        if found is None:
            assert self.covered is not None
            found = plane_of(self.coadd[self.covered], spec)
            with self._lock:
                self._planes[spec] = found
        return found

    def source(self, spec: str) -> ArraySource | None:
        """A source of plane ``spec`` over the covered box reading without a dask graph (see :func:`source_of`)."""
        with self._lock:
            if spec in self._sources:
                return self._sources[spec]
        assert self.covered is not None
        found = source_of(self.coadd, spec, self.covered)
        with self._lock:
            self._sources[spec] = found
        return found


class TractSource:
    """Lazily indexed plane over the tract box, assembled from the patches' planes.

    Parameters
    ----------
    bbox
        Absolute box of the tract plane (its first two axes are y, x).
    patches
        The patches providing pixels (those whose file covers part of their inner box).
    spec
        The plane (see :func:`plane_of`).
    fill
        Value (broadcast over trailing axes) where no patch provides pixels.
    trailing
        Sizes of the axes after y, x.
    """

    def __init__(self, bbox: Box, patches: Sequence[PatchHandle], spec: str, fill: np.ndarray,
                 trailing: tuple[int, ...]) -> None:
        self.bbox = bbox
        self.patches = tuple(p for p in patches if p.covered is not None)
        self.spec = spec
        self.fill = np.asarray(fill)
        self.dtype = self.fill.dtype
        self.shape = (*bbox.shape, *trailing)
        self.ndim = len(self.shape)

    def _read_alone(self, want: Box, trail: tuple[slice, ...]) -> np.ndarray | None:
        """The pixels of ``want`` when one patch's source covers all of it (no fill, no copy), else ``None``."""
        for patch in self.patches:
            assert patch.covered is not None
            if patch.covered.intersection(want) == want:
                source = patch.source(self.spec)
                if source is None or source.dtype != self.dtype:
                    return None
                return np.asarray(source[(*want.slice_within(patch.covered), *trail)])
        return None

    def tile_moments(
        self, region: tuple[slice, ...], valid: np.ndarray | None = None, full: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Per-tile moments of a 2-d ``region`` that one patch's stored plane covers, else ``None``.

        See :meth:`~cellcoadd_dask.archives.fits.source.FitsArraySource.tile_moments`.
        """
        from .geom import Interval

        if self.ndim != 2 or len(region) != 2 or any(r.stop <= r.start for r in region):
            return None
        (sy, sx), (y0, x0) = region, (self.bbox.y.start, self.bbox.x.start)
        want = Box(Interval(y0 + sy.start, y0 + sy.stop), Interval(x0 + sx.start, x0 + sx.stop))
        for patch in self.patches:
            assert patch.covered is not None
            if patch.covered.intersection(want) == want:
                source = patch.source(self.spec)
                moments = getattr(source, "tile_moments", None)
                if moments is None or source is None or source.dtype != self.dtype:
                    return None
                return moments(want.slice_within(patch.covered), valid, full)
        return None

    def __dask_tokenize__(self) -> Any:
        return ("cellcoadd-tract-plane", str(self.bbox), tuple((str(p.covered), p.token) for p in self.patches),
                self.spec, self.fill.dtype.str, self.fill.tobytes(), self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        from .geom import Interval

        region, rest = normalize_key(key, self.shape)
        sy, sx = region[:2]
        trail = region[2:]
        y0, x0 = self.bbox.y.start, self.bbox.x.start
        if any(r.stop <= r.start for r in region[:2]):
            # An empty selection reads nothing (a Box cannot be empty).
            empty = np.empty(tuple(max(r.stop - r.start, 0) for r in region), dtype=self.dtype)
            return apply_rest(empty, rest)
        want = Box(Interval(y0 + sy.start, y0 + sy.stop), Interval(x0 + sx.start, x0 + sx.stop))
        alone = self._read_alone(want, trail)
        if alone is not None:
            return apply_rest(alone, rest)
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=self.dtype)
        out[...] = self.fill[trail] if self.fill.ndim else self.fill
        targets: list[tuple[slice, slice]] = []
        parts: list[da.Array] = []
        for patch in self.patches:
            assert patch.covered is not None
            overlap = patch.covered.intersection(want)
            if overlap is None:
                continue
            within = (*overlap.slice_within(patch.covered), *trail)
            source = patch.source(self.spec)
            if source is not None:
                # Straight from the archive: no graph to build, optimize and schedule per chunk.
                ty, tx = overlap.slice_within(want)
                out[ty, tx] = source[within]
                continue
            targets.append(overlap.slice_within(want))
            parts.append(patch.plane(self.spec)[within])
        for (ty, tx), values in zip(targets, da.compute(*parts, scheduler="sync"), strict=True):
            out[ty, tx] = values
        return apply_rest(out, rest)
