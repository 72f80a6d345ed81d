"""The decode limit of a lossless patch: a full read with nothing but zlib and numpy.

    python benchmarks/decode_limit.py [PATCH.fits] [--threads 1 2] [--repeats 3] [--verify]

The patch defaults to the corpus's full-size lossless patch
(``cellcoadd_dask.testing.corpus_path("patch/patch_lossless.fits")``, built on first use).

Every tile of every 2-d plane (image, mask, variance, mask fractions, noise realizations; the
PSF cube is not a plane) is read with ``os.pread``, inflated with ``zlib``, unshuffled (GZIP_2)
and byte-swapped from big-endian straight into its place in a preallocated output plane.  The
tiles are handed out to T threads, each taking the next tile as soon as it is done with one.
There is no framework, no scheduling graph, no validation beyond what zlib does, and no libdeflate:
this is the floor a reader built on the standard library can hope for, and the unit of the
"x decode limit" columns of ``read_patch.py``.

Finding the tiles is not part of what is measured, but it is done with this package's own FITS
parsing (the INDEX HDU, the headers and the tile-descriptor tables): it is a few small reads.
Printed per thread count: the median seconds to locate the tiles and to decode them.  ``--verify``
compares every decoded plane with astropy's decoding of the same HDU.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GZIP = ("GZIP_1", "GZIP_2")
INFLATE_ANY_HEADER = 32 + zlib.MAX_WBITS
"""``wbits`` that accepts both gzip and zlib streams (FITS writers use either)."""
LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass(frozen=True)
class Plane:
    """One tile-compressed 2-d HDU: its name, output shape, dtype and whether its tiles are shuffled."""

    label: str
    shape: tuple[int, int]
    dtype: np.dtype
    shuffled: bool


@dataclass(frozen=True)
class Tile:
    """Where one tile's compressed bytes are and where its pixels go."""

    plane: int
    offset: int
    nbytes: int
    y: int
    x: int
    height: int
    width: int


def locate(path: Path) -> tuple[list[Plane], list[Tile]]:
    """Find every tile of every 2-d plane of an lsst-images FITS archive.

    Raises
    ------
    ValueError
        If a plane is not GZIP_1 or GZIP_2 compressed (the limit is defined for lossless files).
    """
    from cellcoadd_dask.archives.fits.cards import parse_header
    from cellcoadd_dask.archives.fits.layout import read_container
    from cellcoadd_dask.archives.fits.tile_tables import compressed_layout, table_nbytes

    url = str(path)
    container = read_container(url)
    planes: list[Plane] = []
    tiles: list[Tile] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for entry in container.hdus.values():
            if not entry.compressed:
                continue
            head = os.pread(fd, entry.dataddr - entry.hdraddr, entry.hdraddr)
            header = parse_header(head, 0, url=url, hdu=entry.label)
            if header.get("ZNAXIS") != 2:
                continue
            algorithm = str(header.get("ZCMPTYPE", "")).strip()
            if algorithm not in GZIP:
                raise ValueError(f"{entry.label} is {algorithm}-compressed: the decode limit needs GZIP_1/GZIP_2 tiles")
            nbytes = table_nbytes(header, url=url, hdu=entry.label)
            table = os.pread(fd, nbytes, entry.dataddr)
            layout = compressed_layout(
                header, table, data_start=entry.dataddr, data_size=entry.datsize, url=url, hdu=entry.label
            )
            (ny, nx), (ty, tx) = layout.shape, layout.tile_shape
            plane = len(planes)
            planes.append(Plane(entry.label, (ny, nx), layout.dtype, algorithm == "GZIP_2"))
            columns = -(-nx // tx)
            for number, (offset, count) in enumerate(layout.data.tolist()):
                y, x = (number // columns) * ty, (number % columns) * tx
                tiles.append(Tile(plane, offset, count, y, x, min(ty, ny - y), min(tx, nx - x)))
    finally:
        os.close(fd)
    return planes, tiles


def _decode_into(target: np.ndarray, raw: bytes, shuffled: bool) -> None:
    """Big-endian (and, when ``shuffled``, byte-plane-separated) pixels -> ``target``, one pass."""
    height, width = target.shape
    size = target.dtype.itemsize
    if size == 1:
        target[...] = np.frombuffer(raw, np.uint8).reshape(height, width)
    elif shuffled:
        # Byte plane k holds byte k, most significant first, of every pixel: write it where a
        # native-order pixel keeps that byte.
        pixel_bytes = target.view(np.uint8).reshape(height, width, size)
        planes = np.frombuffer(raw, np.uint8).reshape(size, height, width)
        for k in range(size):
            pixel_bytes[:, :, size - 1 - k if LITTLE_ENDIAN else k] = planes[k]
    else:
        target[...] = np.frombuffer(raw, target.dtype.newbyteorder(">")).reshape(height, width)


def decode(path: Path, planes: list[Plane], tiles: list[Tile], threads: int) -> list[np.ndarray]:
    """Read and decode ``tiles`` into new planes on ``threads`` threads."""
    outputs = [np.empty(plane.shape, plane.dtype) for plane in planes]
    following = itertools.count()
    lock = threading.Lock()
    fd = os.open(path, os.O_RDONLY)

    def work() -> None:
        while True:
            with lock:
                k = next(following)
            if k >= len(tiles):
                return
            tile = tiles[k]
            target = outputs[tile.plane][tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
            if tile.nbytes == 0:
                target[...] = 0
                continue
            expected = tile.height * tile.width * target.dtype.itemsize
            raw = zlib.decompress(os.pread(fd, tile.nbytes, tile.offset), INFLATE_ANY_HEADER, expected)
            if len(raw) != expected:
                raise ValueError(f"tile of {planes[tile.plane].label} at ({tile.y}, {tile.x}) holds {len(raw)} bytes")
            _decode_into(target, raw, planes[tile.plane].shuffled)

    try:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(work) for _ in range(threads)]:
                future.result()
    finally:
        os.close(fd)
    return outputs


def run(path: Path, threads: int) -> list[np.ndarray]:
    """Locate and decode every tile of every 2-d plane of ``path``: the operation ``read_patch.py`` times."""
    planes, tiles = locate(path)
    return decode(path, planes, tiles, threads)


def verify(path: Path, planes: list[Plane], outputs: list[np.ndarray]) -> list[str]:
    """Compare each decoded plane with astropy's decoding; one line per plane."""
    from astropy.io import fits

    lines = []
    with fits.open(path) as hdus:
        for plane, ours in zip(planes, outputs, strict=True):
            name, _, version = plane.label.partition(",")
            theirs = hdus[name, int(version or 1)].data
            same = theirs.shape == ours.shape and np.array_equal(theirs, ours, equal_nan=True)
            lines.append(f"{plane.label}: {'equal to' if same else 'DIFFERENT FROM'} astropy's pixels")
    return lines


def main() -> None:
    """Time the decode limit of a patch on each thread count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch", nargs="?", type=Path, help="lossless patch (default: the corpus's)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per thread count (median printed)")
    parser.add_argument("--verify", action="store_true", help="compare the decoded planes with astropy's")
    args = parser.parse_args()
    path = args.patch
    if path is None:
        from cellcoadd_dask.testing import corpus_path

        path = corpus_path("patch/patch_lossless.fits", progress=True)
    planes, tiles = locate(path)
    total = sum(t.nbytes for t in tiles)
    decoded = sum(int(np.prod(p.shape)) * p.dtype.itemsize for p in planes)
    print(f"{path}: {len(planes)} planes, {len(tiles)} tiles, {total:,} bytes inflated to {decoded:,}")
    for threads in args.threads:
        located, decoding = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            planes, tiles = locate(path)
            located.append(time.perf_counter() - t)
            t = time.perf_counter()
            outputs = decode(path, planes, tiles, threads)
            decoding.append(time.perf_counter() - t)
        print(
            f"{threads} thread(s): locate {statistics.median(located):.3f} s, "
            f"read + inflate + unshuffle + swap {statistics.median(decoding):.3f} s (medians of {args.repeats})"
        )
    if args.verify:
        for line in verify(path, planes, outputs):
            print(line)


if __name__ == "__main__":
    main()
