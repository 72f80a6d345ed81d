"""An uncompressed ``IMAGE`` extension as a stored array: :class:`PlainArray`.

Its pixels are one contiguous big-endian block after the header, so a region is the byte
ranges of its rows (merged where they touch).  See :mod:`.tiles` for the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from ...errors import ArchiveFormatError
from .tiles import Region, check_region

__all__ = ["PlainArray"]


@dataclass(frozen=True, eq=False)
class PlainArray:
    """An uncompressed ``IMAGE`` HDU: big-endian pixels in C order at ``data_start``.

    Attributes
    ----------
    shape
        Image shape, numpy order (``NAXISn`` reversed).
    dtype
        Native-byte-order logical dtype (from ``BITPIX``).
    data_start
        Absolute file offset of the first pixel.
    url, hdu
        Where the HDU lives, for error messages.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    data_start: int
    url: str | None = None
    hdu: str | None = None

    def byte_ranges(self, region: Region) -> list[tuple[int, int]]:
        """One range per contiguous run of ``region`` (runs over full trailing axes merged).

        Raises
        ------
        BoundsError
            If ``region`` is not a tuple of non-empty step-1 slices inside ``shape``.
        """
        bounds = check_region(region, self.shape)
        # Axis k is the outermost axis of each contiguous run: every axis after it is whole.
        k = len(bounds) - 1
        while k > 0 and bounds[k] == (0, self.shape[k]):
            k -= 1
        itemsize = self.dtype.itemsize
        strides = [itemsize * math.prod(self.shape[i + 1 :]) for i in range(len(self.shape))]
        run = (bounds[k][1] - bounds[k][0]) * strides[k]
        ranges: list[tuple[int, int]] = []
        for index in product(*(range(a, b) for a, b in bounds[:k])):
            start = self.data_start + sum(i * s for i, s in zip(index, strides, strict=False))
            start += bounds[k][0] * strides[k]
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], start + run)
            else:
                ranges.append((start, start + run))
        return ranges

    def assemble(self, region: Region, blobs: Sequence[bytes | memoryview]) -> np.ndarray:
        """Pixels of ``region`` from the bytes of :meth:`byte_ranges`, native byte order.

        Raises
        ------
        ArchiveFormatError
            If the blobs do not have the lengths of the ranges.
        """
        ranges = self.byte_ranges(region)
        bounds = check_region(region, self.shape)
        if len(blobs) != len(ranges):
            raise ArchiveFormatError(f"got {len(blobs)} byte blobs for {len(ranges)} byte ranges",
                                     url=self.url, hdu=self.hdu)
        for blob, r in zip(blobs, ranges, strict=True):
            if len(blob) != r[1] - r[0]:
                raise ArchiveFormatError(f"got {len(blob)} bytes, expected {r[1] - r[0]}",
                                         url=self.url, hdu=self.hdu, byte_range=r)
        raw = blobs[0] if len(blobs) == 1 else b"".join(blobs)
        pixels = np.frombuffer(raw, dtype=self.dtype.newbyteorder(">"))
        return pixels.astype(self.dtype).reshape(tuple(b - a for a, b in bounds))
