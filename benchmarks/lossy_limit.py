"""The decode limit of quantized (lossy) planes: Rice decoding and dithered dequantization, nothing else.

    python benchmarks/lossy_limit.py [PATCH.fits ...] [--planes IMAGE VARIANCE] [--processes 2]

For every tile of the named planes (RICE_1 with SUBTRACTIVE_DITHER_1/2, as lsst-images writes
lossy planes), one process per worker: ``os.pread`` the tile, ``imagecodecs.rcomp_decode`` it and
undo the quantization (or inflate the few tiles stored losslessly beside, such as the infinite variance of a
missing cell) with astropy's compiled copy of CFITSIO's routine (the one every FITS reader
here uses, so the random dither sequence is CFITSIO's), straight into a preallocated plane; then
the float64 mean of every 150x150 cell.  No framework, no graph, no validation: the floor of the
per-cell statistic that ``tract_s3.py`` times.  Locating the tiles (the package's own tile-table
parsing, a few small reads per plane) is not timed.  Files are read from the local disk (page
cache), so the network is not part of the floor either.

With no argument it runs on the corpus's lossy patch.  ``--verify`` compares the decoded planes
with astropy's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CELL = 150
PLANES = ("IMAGE", "VARIANCE")


@dataclass(frozen=True)
class QuantizedPlane:
    """Where the tiles of one quantized plane are and how to undo their quantization."""

    label: str
    shape: tuple[int, int]
    tile_shape: tuple[int, int]
    dtype: np.dtype
    blocksize: int
    method: int
    zdither0: int
    zblank: int | None
    data: np.ndarray
    fallback: np.ndarray | None
    zscale: np.ndarray
    zzero: np.ndarray


def locate(path: Path, planes: tuple[str, ...] = PLANES) -> list[QuantizedPlane]:
    """The tile tables of ``planes`` (HDU names) of ``path``."""
    from cellcoadd_dask.archives.fits._astropy_codecs import DITHER_METHODS
    from cellcoadd_dask.archives.fits.cards import parse_header
    from cellcoadd_dask.archives.fits.layout import read_container
    from cellcoadd_dask.archives.fits.tile_tables import compressed_layout, table_nbytes

    url = str(path)
    container = read_container(url)
    out = []
    with open(path, "rb") as f:
        fd = f.fileno()
        for name in planes:
            entry = container.hdus[(name, 1)]
            header = parse_header(os.pread(fd, entry.dataddr - entry.hdraddr, entry.hdraddr), 0, url=url, hdu=name)
            table = os.pread(fd, table_nbytes(header, url=url, hdu=name), entry.dataddr)
            layout = compressed_layout(
                header, table, data_start=entry.dataddr, data_size=entry.datsize, url=url, hdu=name
            )
            codec = layout.codec
            if codec.algorithm != "RICE_1" or codec.quantize not in DITHER_METHODS:
                raise ValueError(f"{name} is {codec.algorithm}/{codec.quantize}: the lossy limit needs dithered RICE_1")
            assert layout.zscale is not None and layout.zzero is not None
            out.append(
                QuantizedPlane(
                    name,
                    (layout.shape[0], layout.shape[1]),
                    (layout.tile_shape[0], layout.tile_shape[1]),
                    codec.dtype,
                    codec.blocksize,
                    DITHER_METHODS[codec.quantize],
                    codec.zdither0,
                    codec.zblank,
                    layout.data,
                    layout.fallback,
                    layout.zscale,
                    layout.zzero,
                )
            )
    return out


def decode_plane(fd: int, plane: QuantizedPlane, border: int = 0) -> np.ndarray:
    """The tiles of ``plane`` read, Rice-decoded and dequantized into a new array.

    ``border`` rows and columns of tiles on each side are left out (1: a patch's inner cells).
    """
    import imagecodecs
    from astropy.io.fits.hdu.compressed._compression import unquantize_double_c, unquantize_float_c

    unquantize = unquantize_float_c if plane.dtype == np.float32 else unquantize_double_c
    (ny, nx), (ty, tx) = plane.shape, plane.tile_shape
    rows, columns = -(-ny // ty), -(-nx // tx)
    y0, x0 = border * ty, border * tx
    out = np.empty((ny - 2 * y0, nx - 2 * x0), plane.dtype)
    for number, (offset, count) in enumerate(plane.data.tolist()):
        row, column = divmod(number, columns)
        if not (border <= row < rows - border and border <= column < columns - border):
            continue
        y, x = row * ty, column * tx
        h, w = min(ty, ny - y), min(tx, nx - x)
        y, x = y - y0, x - x0
        if count == 0:  # a tile that could not be quantized (inf, say) is stored losslessly beside
            assert plane.fallback is not None
            start, size = plane.fallback[number].tolist()
            raw = zlib.decompress(os.pread(fd, size, start), 32 + zlib.MAX_WBITS)
            out[y : y + h, x : x + w] = np.frombuffer(raw, plane.dtype.newbyteorder(">")).reshape(h, w)
            continue
        q = imagecodecs.rcomp_decode(
            os.pread(fd, count, offset), shape=(h * w,), dtype=np.int32, nblock=plane.blocksize
        )
        raw = unquantize(
            q.tobytes(),
            plane.zdither0 + number,
            h * w,
            float(plane.zscale[number]),
            float(plane.zzero[number]),
            plane.method,
            0 if plane.zblank is None else 1,
            0 if plane.zblank is None else plane.zblank,
            np.nan,
            4,
        )
        out[y : y + h, x : x + w] = np.frombuffer(raw, plane.dtype).reshape(h, w)
    return out


def cell_means(array: np.ndarray) -> np.ndarray:
    """Float64 mean of every 150x150 cell."""
    ny, nx = array.shape[0] // CELL, array.shape[1] // CELL
    return array.astype(np.float64).reshape(ny, CELL, nx, CELL).mean(axis=(1, 3))


def patch_statistic(path: str, planes: tuple[str, ...] = PLANES, border: int = 0) -> np.ndarray:
    """Per-cell means of ``planes`` of one patch, ``(len(planes), ny, nx)``: decode, then reduce.

    ``border=1`` leaves out the outer ring of cells (a patch's inner cells only).
    """
    located = locate(Path(path), planes)
    fd = os.open(path, os.O_RDONLY)
    try:
        return np.stack([cell_means(decode_plane(fd, plane, border)) for plane in located])
    finally:
        os.close(fd)


def tract_statistic(
    paths: list[Path], processes: int = 2, border: int = 0, planes: tuple[str, ...] = PLANES
) -> tuple[np.ndarray, float]:
    """:func:`patch_statistic` of every path on ``processes`` worker processes, and the wall seconds."""
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        pool.submit(int).result()  # workers started before timing
        list(pool.map(_warm, range(processes)))
        t = time.perf_counter()
        results = list(
            pool.map(functools.partial(patch_statistic, planes=planes, border=border), [str(p) for p in paths])
        )
        return np.stack(results), time.perf_counter() - t


def _warm(_: int) -> None:
    import imagecodecs  # noqa: F401
    from astropy.io.fits.hdu.compressed import _compression  # noqa: F401

    import cellcoadd_dask.archives.fits.layout  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patches", nargs="*", type=Path, help="lossy patches (default: the corpus's)")
    parser.add_argument("--planes", nargs="+", default=list(PLANES), help="HDU names (default IMAGE VARIANCE)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--border", type=int, default=0, help="rings of cells left out (1: inner cells)")
    parser.add_argument("--verify", action="store_true", help="compare the decoded planes with astropy's")
    args = parser.parse_args()
    paths = args.patches
    if not paths:
        from cellcoadd_dask.testing import corpus_path

        paths = [corpus_path("patch/patch_lossy.fits", progress=True)]
    _, seconds = tract_statistic(paths, args.processes, args.border, tuple(args.planes))
    print(
        f"{len(paths)} patch(es), planes {' '.join(args.planes)}: read + decode + per-cell means {seconds:.3f} s "
        f"on {args.processes} processes"
    )
    if args.verify:
        from astropy.io import fits

        fd = os.open(paths[0], os.O_RDONLY)
        with fits.open(paths[0]) as hdus:
            for plane in locate(paths[0], tuple(args.planes)):
                same = np.array_equal(decode_plane(fd, plane), hdus[plane.label].data, equal_nan=True)
                print(f"{plane.label}: {'equal to' if same else 'DIFFERENT FROM'} astropy's pixels")
        os.close(fd)


if __name__ == "__main__":
    main()
