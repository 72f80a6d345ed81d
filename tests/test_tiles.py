"""Stored-array layouts read every image HDU exactly as astropy does, and reject bad tables."""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from paths import REFERENCE_DIR

from cellcoadd_dask.archives.fits.cards import Header, parse_header
from cellcoadd_dask.archives.fits.plain import PlainArray
from cellcoadd_dask.archives.fits.tile_tables import compressed_layout, plain_layout, table_nbytes
from cellcoadd_dask.archives.fits.tiles import StoredArray, TiledArray
from cellcoadd_dask.errors import ArchiveFormatError, BoundsError

REF = REFERENCE_DIR
REF_FILES = sorted(REF.glob("*.fits"))


@dataclass
class Hdu:
    path: Path
    index: int
    name: str
    header: Header
    data_start: int
    data_size: int

    @property
    def compressed(self) -> bool:
        return self.header.get("ZIMAGE") is True

    def table(self) -> bytes:
        return _read(self.path, [(self.data_start, self.data_start + table_nbytes(self.header))])[0]

    def layout(self) -> StoredArray:
        if self.compressed:
            return compressed_layout(self.header, self.table(), data_start=self.data_start,
                                     data_size=self.data_size, url=str(self.path), hdu=self.name)
        return plain_layout(self.header, data_start=self.data_start, data_size=self.data_size,
                            url=str(self.path), hdu=self.name)

    def expected(self) -> np.ndarray:
        with fits.open(self.path) as hdus:
            return np.array(hdus[self.index].data)


def _read(path: Path, ranges: list[tuple[int, int]]) -> list[bytes]:
    with open(path, "rb") as stream:
        out = []
        for start, stop in ranges:
            stream.seek(start)
            out.append(stream.read(stop - start))
        return out


def image_hdus(path: Path) -> list[Hdu]:
    """Every image HDU (compressed or plain) of a file, located with astropy, parsed by us."""
    with fits.open(path, disable_image_compression=True) as hdus:
        infos = [(n, hdus.fileinfo(n), hdu.header) for n, hdu in enumerate(hdus)]
    hdus_out = []
    with open(path, "rb") as stream:
        for n, info, header in infos:
            if n == 0 or (header["XTENSION"] == "BINTABLE" and not header.get("ZIMAGE")):
                continue
            stream.seek(info["hdrLoc"])
            ours = parse_header(stream.read(info["datLoc"] - info["hdrLoc"]))
            name = f"{header.get('EXTNAME')},{header.get('EXTVER', 1)}"
            hdus_out.append(Hdu(path, n, name, ours, info["datLoc"], info["datSpan"]))
    return hdus_out


def read_region(layout: StoredArray, path: Path, region: tuple[slice, ...]) -> np.ndarray:
    return layout.assemble(region, _read(path, layout.byte_ranges(region)))


def regions(shape: tuple[int, ...], tile_shape: tuple[int, ...] | None, seed: int) -> Iterator[tuple[slice, ...]]:
    """The full array, single pixels at the corners, tile-straddling boxes and random boxes."""
    yield tuple(slice(0, n) for n in shape)
    yield tuple(slice(0, 1) for _ in shape)
    yield tuple(slice(n - 1, n) for n in shape)
    if tile_shape is not None:
        yield tuple(slice(max(t - 2, 0), min(t + 3, n)) for t, n in zip(tile_shape, shape, strict=True))
    rng = np.random.default_rng(seed)
    for _ in range(4):
        starts = [int(rng.integers(0, n)) for n in shape]
        yield tuple(slice(a, int(rng.integers(a + 1, n + 1))) for a, n in zip(starts, shape, strict=True))


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype.newbyteorder("=")
    assert got.dtype.isnative
    assert got.shape == expected.shape
    assert np.array_equal(got, expected, equal_nan=True)
    if got.dtype.kind == "f":
        assert np.array_equal(np.isnan(got), np.isnan(expected))


def check_file(path: Path) -> int:
    """Compare every image HDU of ``path`` with astropy over several regions; return the HDU count."""
    hdus = image_hdus(path)
    for n, hdu in enumerate(hdus):
        layout = hdu.layout()
        expected = hdu.expected()
        assert tuple(layout.shape) == expected.shape
        tile_shape = layout.tile_shape if isinstance(layout, TiledArray) else None
        for region in regions(expected.shape, tile_shape, seed=n):
            assert_same(read_region(layout, path, region), expected[region])
    return len(hdus)


# ----------------------------------------------------------------------------------------------
# Reference files written by lsst-images
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", REF_FILES, ids=[p.name for p in REF_FILES])
def test_every_image_hdu_of_the_reference_files_reads_like_astropy(path: Path) -> None:
    assert check_file(path) >= 5


def test_one_cell_reads_only_its_tile() -> None:
    hdu = next(h for h in image_hdus(REF / "synthetic_3x3.fits") if h.name == "IMAGE,1")
    layout = hdu.layout()
    assert isinstance(layout, TiledArray)
    # Cell (3, 2) = tile 7 at bytes [239648, 278299) (spec 3.3).
    assert layout.byte_ranges((slice(300, 450), slice(150, 300))) == [(239648, 278299)]
    # A 60x60 box over four cells touches four tiles.
    assert len(layout.byte_ranges((slice(270, 330), slice(270, 330)))) == 4


def test_psf_kernel_rows_are_tiles() -> None:
    hdu = next(h for h in image_hdus(REF / "synthetic_3x3.fits") if h.name == "PSF,1")
    layout = hdu.layout()
    assert isinstance(layout, TiledArray)
    assert layout.shape == (3, 3, 25, 25) and layout.tile_shape == (1, 1, 1, 25)
    expected = hdu.expected()
    # One kernel of local cell (2, 1) = 25 tiles; one pixel = one tile.
    assert len(layout.byte_ranges((slice(2, 3), slice(1, 2), slice(0, 25), slice(0, 25)))) == 25
    assert len(layout.byte_ranges((slice(2, 3), slice(1, 2), slice(4, 5), slice(3, 4)))) == 1
    region = (slice(1, 3), slice(0, 2), slice(10, 15), slice(7, 20))
    assert_same(read_region(layout, hdu.path, region), expected[region])


def test_plain_rows_are_merged_when_the_region_spans_full_rows() -> None:
    hdu = next(h for h in image_hdus(REF / "min_uncompressed.fits") if h.name == "IMAGE,1")
    layout = hdu.layout()
    assert isinstance(layout, PlainArray)
    start = hdu.data_start
    assert layout.byte_ranges((slice(2, 5), slice(0, 12))) == [(start + 2 * 48, start + 5 * 48)]
    assert layout.byte_ranges((slice(2, 4), slice(3, 5))) == [
        (start + 2 * 48 + 12, start + 2 * 48 + 20), (start + 3 * 48 + 12, start + 3 * 48 + 20)]
    psf = next(h for h in image_hdus(REF / "min_uncompressed.fits") if h.name == "PSF,1").layout()
    assert len(psf.byte_ranges((slice(0, 2), slice(0, 2), slice(0, 5), slice(0, 5)))) == 1
    assert len(psf.byte_ranges((slice(0, 2), slice(1, 2), slice(0, 5), slice(0, 5)))) == 2


def test_layouts_pickle_small() -> None:
    for hdu in image_hdus(REF / "synthetic_3x3_lossy.fits"):
        layout = hdu.layout()
        payload = pickle.dumps(layout)
        assert len(payload) < 8000
        again = pickle.loads(payload)
        region = tuple(slice(0, min(n, 7)) for n in layout.shape)
        assert_same(read_region(again, hdu.path, region), hdu.expected()[region])


def test_bad_regions_raise_bounds_error() -> None:
    layout = next(h for h in image_hdus(REF / "min_default.fits") if h.name == "IMAGE,1").layout()
    for region in [(slice(0, 13), slice(0, 3)), (slice(0, 0), slice(0, 3)), (slice(None, 3), slice(0, 3)),
                   (slice(0, 3, 2), slice(0, 3)), (slice(0, 3),), (slice(-1, 3), slice(0, 3)), (1, 2)]:
        with pytest.raises(BoundsError):
            layout.byte_ranges(region)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Files generated here: astropy CompImageHDU variants and lsst-images coadds
# ----------------------------------------------------------------------------------------------


def _float_image(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    rng = np.random.default_rng(11)
    image = rng.normal(10.0, 3.0, size=shape).astype(dtype)
    image[..., 1, 2] = np.nan  # NaN inside a quantized tile -> ZBLANK
    image[..., 4, :] = 0.0  # exact zeros (kept exactly by SUBTRACTIVE_DITHER_2)
    image[..., -5:, -6:] = -2.5  # constant corner -> lossless fallback tiles
    return image


ASTROPY_VARIANTS: dict[str, tuple[np.ndarray, dict[str, object]]] = {}
for _alg in ("RICE_1", "GZIP_1", "GZIP_2"):
    for _method, _dither in ((-1, "nodither"), (1, "sd1"), (2, "sd2")):
        ASTROPY_VARIANTS[f"{_alg}_{_dither}"] = (
            _float_image((23, 31)),
            {"compression_type": _alg, "tile_shape": (7, 5), "quantize_level": 16, "quantize_method": _method,
             "dither_seed": 321},
        )
ASTROPY_VARIANTS |= {
    "int32_rice_3x12": (np.arange(23 * 31, dtype=np.int32).reshape(23, 31) % 977 * 4099,
                        {"compression_type": "RICE_1", "tile_shape": (3, 12)}),
    "int32_gzip1": (np.arange(23 * 31, dtype=np.int32).reshape(23, 31) * 7919,
                    {"compression_type": "GZIP_1", "tile_shape": (7, 5)}),
    "int32_gzip2": (np.arange(23 * 31, dtype=np.int32).reshape(23, 31) * 7919,
                    {"compression_type": "GZIP_2", "tile_shape": (7, 5)}),
    "int16_rice": ((np.arange(23 * 31) % 3000 - 1500).astype(np.int16).reshape(23, 31),
                   {"compression_type": "RICE_1", "tile_shape": (5, 31)}),
    "uint8_gzip2": ((np.arange(23 * 31) % 256).astype(np.uint8).reshape(23, 31),
                    {"compression_type": "GZIP_2", "tile_shape": (4, 4)}),
    "float64_lossless": (_float_image((23, 31), "float64"),
                         {"compression_type": "GZIP_2", "tile_shape": (6, 31), "quantize_level": 0.0}),
    "float64_quantized": (_float_image((23, 31), "float64"),
                          {"compression_type": "RICE_1", "tile_shape": (6, 8), "quantize_level": 8,
                           "quantize_method": 2, "dither_seed": 10000}),
    "nocompress": (_float_image((23, 31)), {"compression_type": "NOCOMPRESS", "tile_shape": (7, 5)}),
    "psf_like_4d": (np.random.default_rng(2).normal(size=(3, 2, 7, 9)),
                    {"compression_type": "GZIP_2", "tile_shape": (1, 1, 1, 9), "quantize_level": 0.0}),
    "cube_3d": (np.random.default_rng(4).normal(size=(5, 9, 11)).astype(np.float32),
                {"compression_type": "RICE_1", "tile_shape": (2, 3, 4), "quantize_level": 4,
                 "quantize_method": 1, "dither_seed": 5}),
}


@pytest.fixture(scope="module")
def astropy_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("astropy")
    paths = {}
    for name, (array, kwargs) in ASTROPY_VARIANTS.items():
        paths[name] = folder / f"{name}.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(array, **kwargs)]).writeto(paths[name])
    return paths


@pytest.mark.parametrize("name", list(ASTROPY_VARIANTS))
def test_astropy_written_variants_read_like_astropy(astropy_files: dict[str, Path], name: str) -> None:
    assert check_file(astropy_files[name]) == 1


def test_variants_cover_zblank_and_fallback_tiles(astropy_files: dict[str, Path]) -> None:
    for name in ("RICE_1_sd2", "GZIP_2_nodither", "GZIP_1_sd1"):
        (hdu,) = image_hdus(astropy_files[name])
        layout = hdu.layout()
        assert isinstance(layout, TiledArray) and layout.fallback is not None
        assert layout.codec.zblank == -2147483648
        assert ((layout.data[:, 1] == 0) & (layout.fallback[:, 1] > 0)).any()
        assert np.isnan(hdu.expected()).sum() == 1


@pytest.fixture(scope="module")
def lsst_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from lsst.images.cells import CellCoadd
    from lsst.images.fits import (
        FitsCompressionAlgorithm,
        FitsCompressionOptions,
        FitsDitherAlgorithm,
        FitsQuantizationOptions,
    )
    from lsst.images.serialization import read_archive

    def options(algorithm: str, dither: str | None = None, tile_shape: tuple[int, int] | None = None) -> object:
        quantization = None if dither is None else FitsQuantizationOptions(
            dither=FitsDitherAlgorithm[dither], level=16.0)
        return FitsCompressionOptions(algorithm=FitsCompressionAlgorithm[algorithm], quantization=quantization,
                                      tile_shape=tile_shape)

    coadd = read_archive(REF / "cell_coadd_min_as_shipped.json", CellCoadd)
    folder = tmp_path_factory.mktemp("lsst")
    # RICE_1 without quantization truncates floats to integers (written before any NaN is added).
    paths = [folder / "rice_float_unquantized.fits"]
    coadd.write(str(paths[0]), compression_options={"image": options("RICE_1"), "variance": None})
    coadd.image.array[7, 8] = np.nan  # NaN in a quantized tile -> ZBLANK card
    variants = {
        "gzip1_sd1_3x12": {"image": options("GZIP_1", "SUBTRACTIVE_DITHER_1", (3, 12)),
                           "variance": options("GZIP_2", "NO_DITHER", (7, 5)),
                           "mask": options("GZIP_1", tile_shape=(7, 5)),
                           "mask_fractions": options("RICE_1", "SUBTRACTIVE_DITHER_2", (5, 7))},
        "gzip2_sd2": {"image": options("GZIP_2", "SUBTRACTIVE_DITHER_2"),
                      "variance": options("RICE_1", "SUBTRACTIVE_DITHER_1", (7, 5)),
                      "mask": options("RICE_1", tile_shape=(3, 12)),
                      "psf": options("GZIP_1")},
    }
    for n, (name, compression) in enumerate(variants.items()):
        paths.append(folder / f"{name}.fits")
        coadd.write(str(paths[-1]), compression_options=compression, compression_seed=100 + n)
    return paths


def test_lsst_images_variants_read_like_astropy(lsst_files: list[Path]) -> None:
    zblank_seen = unquantized_rice_float_seen = False
    for path in lsst_files:
        assert check_file(path) >= 5
        for hdu in image_hdus(path):
            zblank_seen |= hdu.header.get("ZBLANK") is not None
            unquantized_rice_float_seen |= (hdu.header.get("ZCMPTYPE") == "RICE_1"
                                            and hdu.header.get("ZBITPIX") == -32
                                            and "ZSCALE" not in hdu.header.values())
    assert zblank_seen and unquantized_rice_float_seen


# ----------------------------------------------------------------------------------------------
# The same tables spelled differently (header keywords, 64-bit descriptors, ZBLANK column)
# ----------------------------------------------------------------------------------------------


def _rebuilt(hdu: Hdu, cards: dict[str, object], columns: list[tuple[str, str, np.ndarray]]) -> TiledArray:
    """A layout for ``hdu`` whose table has the given columns; the heap stays where it is (THEAP)."""
    ntiles = int(hdu.header["NAXIS2"])
    old = dict(hdu.header)
    for n in range(1, int(old["TFIELDS"]) + 1):
        del old[f"TTYPE{n}"], old[f"TFORM{n}"]
    table = np.concatenate([a.reshape(ntiles, -1).view(np.uint8) for _, _, a in columns], axis=1)
    heap = hdu.data_start + int(hdu.header.get("THEAP", table_nbytes(hdu.header)))
    # A wider table is placed earlier (data_start moves back) so that the heap stays in place.
    data_start = min(hdu.data_start, heap - table.size)
    heap_size = int(hdu.header["PCOUNT"]) - (heap - hdu.data_start - table_nbytes(hdu.header))
    old |= {"TFIELDS": len(columns), "NAXIS1": table.shape[1], "THEAP": heap - data_start,
            "PCOUNT": heap - data_start - table.size + heap_size}
    old |= {f"TTYPE{n}": c[0] for n, c in enumerate(columns, 1)}
    old |= {f"TFORM{n}": c[1] for n, c in enumerate(columns, 1)}
    old |= cards
    return compressed_layout(Header(old, hdu.header.size), table.tobytes(), data_start=data_start,
                             data_size=hdu.data_size + hdu.data_start - data_start, url=str(hdu.path),
                             hdu=hdu.name)


def _raw_columns(hdu: Hdu) -> dict[str, np.ndarray]:
    with fits.open(hdu.path, disable_image_compression=True) as hdus:
        raw = hdus[hdu.index]
        rows = np.frombuffer(hdu.table(), dtype=np.uint8).reshape(int(hdu.header["NAXIS2"]), -1)
        # Every column of these tables is 8 bytes wide (1PB descriptors, 1D values).
        return {column.name: rows[:, 8 * n : 8 * n + 8].copy() for n, column in enumerate(raw.columns)}


def test_q_descriptors_read_like_p_descriptors(astropy_files: dict[str, Path]) -> None:
    (hdu,) = image_hdus(astropy_files["RICE_1_sd1"])
    cols = _raw_columns(hdu)
    as_q = {k: v.view(">u4").astype(">i8") for k, v in cols.items() if "DATA" in k}
    layout = _rebuilt(hdu, {}, [("COMPRESSED_DATA", "1QB(99)", as_q["COMPRESSED_DATA"]),
                                ("GZIP_COMPRESSED_DATA", "1QB(99)", as_q["GZIP_COMPRESSED_DATA"]),
                                ("ZSCALE", "1D", cols["ZSCALE"]), ("ZZERO", "1D", cols["ZZERO"])])
    full = tuple(slice(0, n) for n in layout.shape)
    assert_same(read_region(layout, hdu.path, full), hdu.expected())


def test_header_keyword_zscale_zzero_and_zblank_column(astropy_files: dict[str, Path]) -> None:
    (hdu,) = image_hdus(astropy_files["RICE_1_sd2"])
    cols = _raw_columns(hdu)
    ntiles = int(hdu.header["NAXIS2"])
    scale, zero = cols["ZSCALE"].view(">f8").ravel(), cols["ZZERO"].view(">f8").ravel()
    blank = np.full(ntiles, hdu.header["ZBLANK"], dtype=">i4")
    base = [("COMPRESSED_DATA", "1PB(99)", cols["COMPRESSED_DATA"]),
            ("GZIP_COMPRESSED_DATA", "1PB(99)", cols["GZIP_COMPRESSED_DATA"])]
    # A ZBLANK column instead of the keyword.
    cards = {k: v for k, v in dict(hdu.header).items() if k != "ZBLANK"}
    no_keyword = Hdu(hdu.path, hdu.index, hdu.name, Header(cards, hdu.header.size), hdu.data_start, hdu.data_size)
    layout = _rebuilt(no_keyword, {}, [*base, ("ZSCALE", "1D", cols["ZSCALE"]), ("ZZERO", "1D", cols["ZZERO"]),
                                       ("ZBLANK", "1J", blank)])
    assert layout.codec.zblank is None and layout.zblank is not None
    full = tuple(slice(0, n) for n in layout.shape)
    assert_same(read_region(layout, hdu.path, full), hdu.expected())
    # ZSCALE/ZZERO as header keywords: valid when every quantized tile shares them.
    quantized = np.flatnonzero(cols["COMPRESSED_DATA"].view(">u4")[:, 0] > 0)
    t = int(quantized[0])
    layout = _rebuilt(hdu, {"ZSCALE": float(scale[t]), "ZZERO": float(zero[t])}, base)
    assert layout.zscale is not None and np.all(layout.zscale == scale[t])
    grid = layout.grid
    ty, tx = divmod(t, grid[1])
    box = (slice(ty * 7, min(ty * 7 + 7, 23)), slice(tx * 5, min(tx * 5 + 5, 31)))
    assert_same(read_region(layout, hdu.path, box), hdu.expected()[box])


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def _one_hdu(name: str, astropy_files: dict[str, Path]) -> Hdu:
    (hdu,) = image_hdus(astropy_files[name])
    return hdu


def _with(hdu: Hdu, **cards: object) -> Header:
    return Header(dict(hdu.header) | cards, hdu.header.size)


def test_hcompress_is_rejected_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "hcompress.fits"
    image = np.arange(16 * 16, dtype=np.int32).reshape(16, 16)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, compression_type="HCOMPRESS_1")]).writeto(path)
    (hdu,) = image_hdus(path)
    with pytest.raises(ArchiveFormatError, match="HCOMPRESS_1") as info:
        hdu.layout()
    assert info.value.url == str(path) and info.value.hdu == hdu.name


def test_descriptor_past_the_heap_is_rejected(astropy_files: dict[str, Path]) -> None:
    hdu = _one_hdu("int32_gzip2", astropy_files)
    table = bytearray(hdu.table())
    row = 3 * int(hdu.header["NAXIS1"])
    table[row + 4 : row + 8] = (int(hdu.header["PCOUNT"]) - 2).to_bytes(4, "big")
    with pytest.raises(ArchiveFormatError, match="tile 3 of COMPRESSED_DATA lies outside the heap") as info:
        compressed_layout(hdu.header, bytes(table), data_start=hdu.data_start, data_size=hdu.data_size,
                          url="file.fits", hdu="MASK")
    assert info.value.byte_range is not None and info.value.hdu == "MASK"
    # A 64-bit descriptor with an absurd offset, too.
    with pytest.raises(ArchiveFormatError, match="outside the heap"):
        compressed_layout(_with(hdu, TFORM1="1QB(9)", NAXIS1=16), bytes(16 * int(hdu.header["NAXIS2"]))[:-16]
                          + (1).to_bytes(8, "big") + (2**62).to_bytes(8, "big"),
                          data_start=hdu.data_start, data_size=hdu.data_size)
    # THEAP pushing the heap past the data.
    with pytest.raises(ArchiveFormatError, match="outside the heap"):
        compressed_layout(_with(hdu, THEAP=hdu.data_size), hdu.table(), data_start=hdu.data_start,
                          data_size=hdu.data_size)


def test_tile_count_mismatch_is_rejected(astropy_files: dict[str, Path]) -> None:
    hdu = _one_hdu("int32_gzip2", astropy_files)
    with pytest.raises(ArchiveFormatError, match="tile grid"):
        compressed_layout(_with(hdu, ZTILE1=4), hdu.table(), data_start=hdu.data_start, data_size=hdu.data_size)
    with pytest.raises(ArchiveFormatError, match="tile grid"):
        compressed_layout(_with(hdu, ZNAXIS2=40), hdu.table(), data_start=hdu.data_start,
                          data_size=hdu.data_size)


def test_absurd_sizes_are_rejected_quickly(astropy_files: dict[str, Path]) -> None:
    hdu = _one_hdu("RICE_1_sd1", astropy_files)
    table, start, size = hdu.table(), hdu.data_start, hdu.data_size
    began = time.perf_counter()
    cases = [
        (dict(ZNAXIS1=10**15), "tile grid"),
        (dict(ZNAXIS=10**6), "ZNAXIS"),
        (dict(ZNAXIS1=0), "ZNAXIS1"),
        (dict(ZTILE2=-7), "ZTILE2"),
        (dict(NAXIS1=24), "NAXIS1"),
        (dict(NAXIS1=40), "tile table needs"),
        (dict(NAXIS2=10**12), "tile table needs"),
        (dict(ZBITPIX=12), "ZBITPIX"),
        (dict(ZQUANTIZ="SUBTRACTIVE_DITHER_9"), "quantization"),
        (dict(ZCMPTYPE="PLIO_1"), "PLIO_1"),
        (dict(BZERO=32768), "BZERO"),
    ]
    for cards, message in cases:
        with pytest.raises(ArchiveFormatError, match=message):
            compressed_layout(_with(hdu, **cards), table, data_start=start, data_size=size)
    # One giant tile claimed by a few stored bytes.
    big = _with(hdu, ZNAXIS1=10**12, ZNAXIS2=10**6, ZTILE1=10**12, ZTILE2=10**6, NAXIS2=1)
    with pytest.raises(ArchiveFormatError, match="stored bytes can hold"):
        compressed_layout(big, table, data_start=start, data_size=size)
    assert time.perf_counter() - began < 1.0


def test_plain_layout_checks_its_header() -> None:
    hdu = next(h for h in image_hdus(REF / "min_uncompressed.fits") if h.name == "IMAGE,1")
    for cards, message in [(dict(BITPIX=12), "BITPIX"), (dict(NAXIS1=10**9), "needs"),
                           (dict(NAXIS=0), "NAXIS"), (dict(BSCALE=2.0), "BSCALE")]:
        with pytest.raises(ArchiveFormatError, match=message):
            plain_layout(_with(hdu, **cards), data_start=hdu.data_start, data_size=hdu.data_size)


def test_wrong_blobs_and_corrupt_tiles_are_located_errors() -> None:
    hdu = next(h for h in image_hdus(REF / "synthetic_3x3.fits") if h.name == "IMAGE,1")
    layout = hdu.layout()
    region = (slice(0, 10), slice(0, 10))
    ranges = layout.byte_ranges(region)
    (blob,) = _read(hdu.path, ranges)
    with pytest.raises(ArchiveFormatError, match="expected 38616") as info:
        layout.assemble(region, [blob + b"extra"])  # e.g. a server that ignored Range
    assert info.value.byte_range == ranges[0]
    corrupt = blob[:100] + bytes(200) + blob[300:]
    with pytest.raises(ArchiveFormatError, match="tile 0") as info:
        layout.assemble(region, [corrupt])
    assert info.value.hdu == "IMAGE,1" and info.value.url == str(hdu.path) and info.value.byte_range == ranges[0]
    with pytest.raises(ArchiveFormatError, match="blobs"):
        layout.assemble(region, [])
    with pytest.raises(ArchiveFormatError, match="blobs"):
        layout.assemble(region, [blob, blob])
    plain = next(h for h in image_hdus(REF / "min_uncompressed.fits") if h.name == "IMAGE,1").layout()
    with pytest.raises(ArchiveFormatError, match="expected"):
        plain.assemble((slice(0, 2), slice(0, 12)), [b"short"])


def test_a_tile_with_only_empty_descriptors_fails_like_astropy(astropy_files: dict[str, Path]) -> None:
    hdu = _one_hdu("int32_gzip1", astropy_files)
    table = bytearray(hdu.table())
    width = int(hdu.header["NAXIS1"])
    table[2 * width : 3 * width] = bytes(width)
    layout = compressed_layout(hdu.header, bytes(table), data_start=hdu.data_start, data_size=hdu.data_size)
    assert isinstance(layout, TiledArray)
    region = (slice(0, 7), slice(10, 15))  # tile 2 alone
    assert layout.byte_ranges(region) == []
    with pytest.raises(ArchiveFormatError, match=r"tile 2.*no data"):
        layout.assemble(region, [])


# ----------------------------------------------------------------------------------------------
# Micro-measurement (printed, not asserted)
# ----------------------------------------------------------------------------------------------


def test_decode_threads_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[1] / "cellcoadd_dask" / "data" / "synthetic_3x3.fits"
    hdu = next(h for h in image_hdus(path) if h.name == "IMAGE,1")
    layout = hdu.layout()
    assert isinstance(layout, TiledArray)
    ny, nx = layout.grid
    ty, tx = layout.tile_shape
    boxes = [(slice(i * ty, min((i + 1) * ty, layout.shape[0])), slice(j * tx, min((j + 1) * tx, layout.shape[1])))
             for i in range(ny) for j in range(nx)]
    blobs = [_read(path, layout.byte_ranges(b)) for b in boxes]

    def run(threads: int, repeat: int = 5) -> float:
        best = math.inf
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(repeat):
                began = time.perf_counter()
                list(pool.map(layout.assemble, boxes, blobs))
                best = min(best, time.perf_counter() - began)
        return best

    one, two = run(1), run(2)
    with capsys.disabled():
        print(f"\ndecode {len(boxes)} tiles of synthetic_3x3.fits IMAGE: 1 thread {one * 1e3:.1f} ms, "
              f"2 threads {two * 1e3:.1f} ms ({one / two:.2f}x)")
