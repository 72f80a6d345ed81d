"""Bit masks: :class:`MaskPlane`, :class:`MaskSchema` and the lazy :class:`Mask`.

In memory (as in lsst-images) a mask is a 3-d array ``(y, x, mask_size)`` of the schema's
integer dtype; plane ``n`` of the schema (placeholders count) is element ``n // bits`` bit
``n % bits``.  On disk the non-placeholder planes are re-packed into int32 arrays of 31
planes each; :func:`disk_to_memory` and :func:`memory_to_disk` convert between the two.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from .errors import ValidationError
from .geom import Box, SlicedByBox
from .lazy import ArraySource, PlaneOrigin

__all__ = [
    "DISK_PLANES_PER_ARRAY",
    "Mask",
    "MaskPlane",
    "MaskSchema",
    "disk_to_memory",
    "memory_to_disk",
]

DISK_PLANES_PER_ARRAY = 31


@dataclass(frozen=True, slots=True)
class MaskPlane:
    """A named mask plane and what it means."""

    name: str
    description: str = ""


class MaskSchema:
    """Ordered mask planes (``None`` = reserved bit) and the in-memory element dtype.

    Parameters
    ----------
    planes
        The planes in bit order; ``None`` entries are reserved, unused bits.
    dtype
        Integer dtype of the in-memory mask elements (``uint8`` by default).
    """

    def __init__(self, planes: Sequence[MaskPlane | None], dtype: np.dtype | str = "uint8") -> None:
        self._planes = tuple(planes)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "ui":
            raise TypeError(f"Mask schema dtype must be an integer type, not {self.dtype}.")
        names = [p.name for p in self._planes if p is not None]
        if len(set(names)) != len(names):
            raise ValidationError(f"Mask plane names must be unique: {names}.")
        self._index = {p.name: n for n, p in enumerate(self._planes) if p is not None}
        if not self._planes:
            self._planes = (None,)

    @property
    def bits_per_element(self) -> int:
        """Usable bits per element (one less for signed dtypes)."""
        return self.dtype.itemsize * 8 - (1 if self.dtype.kind == "i" else 0)

    @property
    def mask_size(self) -> int:
        """Number of elements per pixel."""
        return max(1, -(-len(self._planes) // self.bits_per_element))

    @property
    def names(self) -> list[str]:
        """Plane names in bit order (placeholders skipped)."""
        return list(self._index)

    def __iter__(self) -> Iterator[MaskPlane | None]:
        return iter(self._planes)

    def __len__(self) -> int:
        return len(self._planes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaskSchema) and self._planes == other._planes and self.dtype == other.dtype

    def __hash__(self) -> int:
        return hash((self._planes, self.dtype.str))

    def __repr__(self) -> str:
        return f"MaskSchema({list(self._planes)!r}, dtype={self.dtype})"

    def index(self, name: str) -> int:
        """Schema position (bit number, placeholders counted) of a plane."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"Unknown mask plane {name!r}; the schema has {self.names}.") from None

    def bit(self, name: str) -> tuple[int, int]:
        """``(element index, bit mask)`` of a plane in the in-memory layout."""
        n = self.index(name)
        return n // self.bits_per_element, 1 << (n % self.bits_per_element)

    def descriptions(self) -> dict[str, str]:
        """Plane name -> description."""
        return {p.name: p.description for p in self._planes if p is not None}

    def interpret(self, pixel: np.ndarray) -> list[str]:
        """Names of the planes set in one pixel's ``(mask_size,)`` elements."""
        pixel = np.asarray(pixel)
        return [name for name in self._index if pixel[self.bit(name)[0]] & self.bit(name)[1]]

    def disk_positions(self) -> list[tuple[int, int, int, int]]:
        """For each non-placeholder plane: (disk array, disk bit, memory element, memory bit)."""
        out = []
        for k, name in enumerate(self._index):
            n = self._index[name]
            out.append(
                (
                    k // DISK_PLANES_PER_ARRAY,
                    k % DISK_PLANES_PER_ARRAY,
                    n // self.bits_per_element,
                    n % self.bits_per_element,
                )
            )
        return out

    @property
    def packed_dtype(self) -> np.dtype:
        """Smallest unsigned dtype of a 2-d packed mask of this schema (see :func:`packed_dtype`)."""
        return packed_dtype(self)

    @property
    def n_disk_arrays(self) -> int:
        """Number of int32 arrays the mask takes on disk."""
        return max(1, -(-len(self._index) // DISK_PLANES_PER_ARRAY))


def _bit_runs(schema: MaskSchema) -> list[tuple[int, int, int, int, int]]:
    """Group planes whose disk and memory bits both advance by one.

    Each run is ``(disk array, disk bit, memory element, memory bit, number of bits)`` and
    moves with one shift and mask.
    """
    runs: list[list[int]] = []
    for d_arr, d_bit, m_elem, m_bit in schema.disk_positions():
        last = runs[-1] if runs else None
        if (
            last is not None
            and last[0] == d_arr
            and last[2] == m_elem
            and last[1] + last[4] == d_bit
            and last[3] + last[4] == m_bit
        ):
            last[4] += 1
        else:
            runs.append([d_arr, d_bit, m_elem, m_bit, 1])
    return [(a, b, c, d, e) for a, b, c, d, e in runs]


_BLOCK_PIXELS = 1 << 18
"""Pixels converted at a time by :func:`disk_to_memory` (its temporaries stay in the CPU caches)."""


def disk_to_memory(disk: Sequence[np.ndarray], schema: MaskSchema) -> np.ndarray:
    """Unpack on-disk int32 arrays (31 planes each) into the in-memory ``(y, x, mask_size)`` layout."""
    shape = np.shape(disk[0])
    out = np.empty((*shape, schema.mask_size), dtype=schema.dtype)
    bits = [np.asarray(d).astype(np.int32, copy=False).view(np.uint32) for d in disk]
    runs = _bit_runs(schema)
    per_element = [[r for r in runs if r[2] == element] for element in range(schema.mask_size)]
    # Block by block along the first axis, each memory element written once: a few passes
    # over cached temporaries instead of several over whole planes.
    rows = max(1, _BLOCK_PIXELS // max(1, math.prod(shape[1:]))) if shape else 1
    for y in range(0, shape[0], rows) if shape else [None]:
        block: Any = Ellipsis if y is None else slice(y, y + rows)
        for element, element_runs in enumerate(per_element):
            value: np.ndarray | None = None
            for d_arr, d_bit, _, m_bit, n in element_runs:
                run = bits[d_arr][block] >> np.uint32(d_bit)
                run &= np.uint32((1 << n) - 1)
                if m_bit + n > 32:  # wider in-memory elements: shift in their own type
                    run = run.astype(schema.dtype)
                if m_bit:
                    run <<= run.dtype.type(m_bit)
                if value is None:
                    value = run
                else:
                    value |= run
            target = out[block][..., element]
            if value is None:
                target[...] = 0
            else:
                target[...] = value.astype(schema.dtype, copy=False)
    return out


def memory_to_disk(mask: np.ndarray, schema: MaskSchema) -> list[np.ndarray]:
    """Pack an in-memory ``(y, x, mask_size)`` mask into int32 disk arrays of 31 planes each."""
    out = [np.zeros(mask.shape[:2], dtype=np.int32) for _ in range(schema.n_disk_arrays)]
    for d_arr, d_bit, m_elem, m_bit in schema.disk_positions():
        plane = (mask[..., m_elem].astype(np.int64) >> m_bit) & 1
        out[d_arr] |= (plane << d_bit).astype(np.int32)
    return out


def combine_disk_arrays(schema: MaskSchema, arrays: list[np.ndarray], region: tuple[slice, ...]) -> np.ndarray:
    """Source combiner: disk arrays of a region -> in-memory mask, sliced along the element axis."""
    out = disk_to_memory(arrays, schema)
    return out[..., region[2]] if len(region) > 2 else out


def combine_bit_plane(schema: MaskSchema, name: str, arrays: list[np.ndarray], region: tuple[slice, ...]) -> np.ndarray:
    """Source combiner: disk arrays of a region -> boolean array of one plane."""
    position = list(schema.names).index(name)
    d_arr, d_bit, _, _ = schema.disk_positions()[position]
    return (np.asarray(arrays[d_arr]) >> d_bit) & 1 == 1


def packed_dtype(schema: MaskSchema) -> np.dtype:
    """Smallest unsigned dtype holding every schema bit (placeholders counted), for a 2-d packed mask."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if len(schema) <= np.dtype(dtype).itemsize * 8:
            return np.dtype(dtype)
    raise ValueError(f"A mask of {len(schema)} planes does not fit in 64 bits.")


def combine_packed(schema: MaskSchema, arrays: list[np.ndarray], region: tuple[slice, ...]) -> np.ndarray:
    """Source combiner: disk arrays of a region -> 2-d mask with schema bit ``n`` at bit ``n``."""
    dtype = packed_dtype(schema)
    out = np.zeros(np.shape(arrays[0]), dtype=dtype)
    names = schema.names
    # Planes whose disk bit and packed bit differ by the same shift move together: a schema
    # read as written is one group per disk array (three passes), not several per plane.
    groups: dict[tuple[int, int], int] = {}
    for k, (d_arr, d_bit, _, _) in enumerate(schema.disk_positions()):
        key = (d_arr, schema.index(names[k]) - d_bit)
        groups[key] = groups.get(key, 0) | (1 << d_bit)
    for (d_arr, shift), bits in groups.items():
        disk = np.asarray(arrays[d_arr])
        if disk.dtype.kind == "i":  # the sign bit is plane 31: look at the bits, not the number
            disk = disk.view(disk.dtype.str.replace("i", "u"))
        part = np.bitwise_and(disk, np.array(bits, dtype=disk.dtype))
        if shift < 0:
            part >>= disk.dtype.type(-shift)
        part = part.astype(dtype, copy=False)
        if shift > 0:
            part <<= dtype.type(shift)
        out |= part
    return out


def packed_to_memory(packed: np.ndarray, schema: MaskSchema) -> np.ndarray:
    """Unpack a 2-d packed mask (schema bit ``n`` at bit ``n``) into the ``(y, x, mask_size)`` layout."""
    packed = np.asarray(packed)
    if schema.dtype.kind == "u" and packed.dtype.kind == "u":
        # Unsigned elements hold schema bits [8k * itemsize, 8(k+1) * itemsize) of the packed
        # integer: a little-endian byte view of it (after clearing bits no named plane owns).
        named = sum(1 << schema.index(name) for name in schema.names)
        nbytes = schema.mask_size * schema.dtype.itemsize
        wide = np.dtype("<u8") if packed.dtype.itemsize < nbytes else packed.dtype.newbyteorder("<")
        bits = np.bitwise_and(packed, np.array(named, dtype=packed.dtype), dtype=wide)
        raw = bits.view(np.uint8).reshape(*packed.shape, wide.itemsize)[..., :nbytes]
        elements = np.ascontiguousarray(raw).view(schema.dtype.newbyteorder("<"))
        return elements.reshape(*packed.shape, schema.mask_size).astype(schema.dtype, copy=False)
    out = np.zeros((*packed.shape, schema.mask_size), dtype=schema.dtype)
    for name in schema.names:
        n = schema.index(name)
        element, bit = schema.bit(name)
        plane = ((packed >> packed.dtype.type(n)) & 1).astype(bool)
        out[..., element] |= np.where(plane, schema.dtype.type(bit), schema.dtype.type(0))
    return out


def combine_packed_array(schema: MaskSchema, arrays: list[np.ndarray], region: tuple[slice, ...]) -> np.ndarray:
    """Source combiner: the one packed array of a region -> in-memory mask, sliced along the element axis."""
    out = packed_to_memory(arrays[0], schema)
    return out[..., region[2]] if len(region) > 2 else out


def combine_packed_bit_plane(
    schema: MaskSchema, name: str, arrays: list[np.ndarray], region: tuple[slice, ...]
) -> np.ndarray:
    """Source combiner: the one packed array of a region -> boolean array of one plane."""
    packed = np.asarray(arrays[0])
    return (packed >> packed.dtype.type(schema.index(name))) & 1 == 1


def combine_stored_packed(schema: MaskSchema, arrays: list[np.ndarray], region: tuple[slice, ...]) -> np.ndarray:
    """Source combiner: the one packed array of a region, as :meth:`Mask.packed` gives it."""
    return np.asarray(arrays[0]).astype(packed_dtype(schema), copy=False)


class Mask(SlicedByBox):
    """A lazy bit mask over an absolute bbox.

    Attributes
    ----------
    array
        dask array ``(y, x, mask_size)`` in the in-memory layout of ``schema``.
    schema
        The planes.
    bbox
        Absolute (tract) bbox of the array.
    """

    def __init__(
        self,
        array: Any,
        *,
        schema: MaskSchema,
        bbox: Box,
        base: tuple[da.Array, Box] | None = None,
        origin: PlaneOrigin | None = None,
        packed_origin: bool = False,
    ) -> None:
        if not isinstance(array, da.Array):
            array = da.asarray(array)
        if array.ndim != 3 or array.shape[2] != schema.mask_size or tuple(array.shape[:2]) != tuple(bbox.shape):
            raise ValidationError(
                f"Mask array of shape {array.shape} does not fit bbox {bbox} and mask_size {schema.mask_size}."
            )
        self.array = array
        self.schema = schema
        self.bbox = bbox
        self._base = base if base is not None else (array, bbox)
        self._origin = origin
        self._packed_origin = packed_origin

    @property
    def origin(self) -> PlaneOrigin | None:
        """Where the pixels are read from, or ``None`` when they do not come from an archive.

        The stored array's source and bbox: a cut-out keeps its parent's origin and reads
        through its own window of it.
        """
        return self._origin

    @property
    def stored_packed(self) -> bool:
        """Whether the archive it was read from stores it as one packed array (Zarr), not int32 arrays (FITS)."""
        return self._packed_origin

    def get(self, name: str) -> da.Array:
        """Lazy boolean array of one plane (a later slice still reads only the tiles it needs)."""
        element, bit = self.schema.bit(name)
        if self._origin is not None:
            plane = combine_packed_bit_plane if self._packed_origin else combine_bit_plane
            combine = functools.partial(plane, self.schema, name)
            return self._origin.derive(combine, bool, f"plane-{name}").cut(self.bbox)
        return (self.array[:, :, element] & bit) != 0

    def _packed_origin_of(self) -> PlaneOrigin | None:
        """The origin of the packed plane, derived from the stored arrays (``None`` without an origin)."""
        if self._origin is None:
            return None
        combine = functools.partial(combine_stored_packed if self._packed_origin else combine_packed, self.schema)
        return self._origin.derive(combine, packed_dtype(self.schema), "packed")

    def packed_source(self, box: Box | None = None) -> ArraySource | None:
        """A source of :meth:`packed` over ``box`` (default ``bbox``) reading without a dask graph.

        ``None`` unless the mask is read from an archive.  ``box`` must lie inside ``bbox``.
        """
        origin = self._packed_origin_of()
        if origin is None:
            return None
        if box is not None:
            box.slice_within(self.bbox)
        return origin.window(self.bbox if box is None else box)

    def packed(self) -> da.Array:
        """Lazy 2-d array with schema plane ``n`` (placeholders counted) at bit ``n``."""
        origin = self._packed_origin_of()
        if origin is not None:
            return origin.cut(self.bbox)
        dtype = packed_dtype(self.schema)
        out = da.zeros(self.array.shape[:2], dtype=dtype, chunks=self.array.chunks[:2])
        for name in self.schema.names:
            out = out | (self.get(name).astype(dtype) << dtype.type(self.schema.index(name)))
        return out

    def __getitem__(self, box: Any) -> Mask:
        if box is Ellipsis:
            return self
        if not isinstance(box, Box):
            raise TypeError(f"Masks are sliced with a Box (absolute coordinates), not {box!r}.")
        box.slice_within(self.bbox)
        if self._origin is not None:
            return Mask(self._origin.cut(box), schema=self.schema, bbox=box, origin=self._origin,
                        packed_origin=self._packed_origin)
        base, base_bbox = self._base
        sy, sx = box.slice_within(base_bbox)
        return Mask(base[sy, sx, :], schema=self.schema, bbox=box, base=self._base)

    def __repr__(self) -> str:
        return f"Mask({self.bbox}, planes={self.schema.names})"

    def describe(self) -> str:
        """A plain-text summary: bbox, dtype, layout and the mask-plane table (name, bit, description); no I/O."""
        from .display.render import to_text
        from .display.reports import mask_report

        return to_text(mask_report(self))

    def _repr_html_(self) -> str:
        """The summary of :meth:`describe` as HTML, for notebooks (no I/O)."""
        from .display.render import to_html
        from .display.reports import mask_report

        return to_html(mask_report(self))
