"""Tile codecs decode every tile exactly as astropy does (astropy writes, astropy is the oracle)."""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
import pytest
from astropy.io import fits

from cellcoadd_dask.archives.fits.cards import Header
from cellcoadd_dask.archives.fits.codecs import TileCodec, TileDecodeError, decode_tile
from cellcoadd_dask.archives.fits.tile_tables import codec_from_header
from cellcoadd_dask.errors import ArchiveFormatError

DITHERS = {"NO_DITHER": -1, "SUBTRACTIVE_DITHER_1": 1, "SUBTRACTIVE_DITHER_2": 2}


def _float_image(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    rng = np.random.default_rng(42)
    image = (rng.normal(100.0, 5.0, size=shape) * rng.uniform(0.5, 2.0)).astype(dtype)
    image.flat[3] = np.nan  # a NaN in a quantized tile -> ZBLANK
    image.flat[7] = 0.0
    image[..., -4:, -4:] = 1.5  # a constant corner: unquantizable -> GZIP_COMPRESSED_DATA fallback
    return image


def _tiles(array: np.ndarray, **kwargs: object) -> tuple[TileCodec, fits.BinTableHDU, np.ndarray]:
    """Compress ``array`` with astropy; return our codec, the raw table HDU and astropy's decoded image."""
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(array, **kwargs)]).writeto(buffer)
    buffer.seek(0)
    expected = fits.open(io.BytesIO(buffer.getvalue()))[1].data
    raw = fits.open(buffer, disable_image_compression=True)[1]
    header = Header(dict(raw.header.items()), 0)
    return codec_from_header(header), raw, expected


def _decode_all(codec: TileCodec, raw: fits.BinTableHDU, shape: tuple[int, ...],
                tile_shape: tuple[int, ...]) -> np.ndarray:
    """Decode every row of the table and paste it where the FITS tiling puts it."""
    out = np.empty(shape, dtype=codec.dtype)
    grid = [math.ceil(n / t) for n, t in zip(shape, tile_shape, strict=True)]
    names = raw.columns.names
    for row, index in enumerate(np.ndindex(*grid)):
        box = tuple(slice(i * t, min((i + 1) * t, n))
                    for i, t, n in zip(index, tile_shape, shape, strict=True))
        npix = math.prod(s.stop - s.start for s in box)
        record = raw.data[row]
        pixels = decode_tile(
            codec,
            data=record["COMPRESSED_DATA"].tobytes(),
            gzip_data=record["GZIP_COMPRESSED_DATA"].tobytes() if "GZIP_COMPRESSED_DATA" in names else None,
            zscale=float(record["ZSCALE"]) if "ZSCALE" in names else 0.0,
            zzero=float(record["ZZERO"]) if "ZZERO" in names else 0.0,
            zblank=codec.zblank,
            tile_index=row,
            npix=npix,
        )
        assert pixels.shape == (npix,)
        assert pixels.dtype == codec.dtype and pixels.dtype.isnative
        out[box] = pixels.reshape(tuple(s.stop - s.start for s in box))
    return out


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype.newbyteorder("=")
    assert np.array_equal(got, expected, equal_nan=True)
    if got.dtype.kind == "f":
        assert np.array_equal(np.isnan(got), np.isnan(expected))


@pytest.mark.parametrize("algorithm", ["GZIP_1", "GZIP_2", "RICE_1"])
@pytest.mark.parametrize("dither", list(DITHERS))
def test_quantized_float_tiles_decode_like_astropy(algorithm: str, dither: str) -> None:
    image = _float_image((23, 31))
    codec, raw, expected = _tiles(image, compression_type=algorithm, tile_shape=(7, 5), quantize_level=16,
                                  quantize_method=DITHERS[dither], dither_seed=9999)
    assert codec.quantize == dither
    assert codec.zblank is not None
    fallback_rows = [r for r in raw.data if r["COMPRESSED_DATA"].size == 0]
    assert fallback_rows, "the constant corner should be stored as a fallback tile"
    _assert_same(_decode_all(codec, raw, image.shape, (7, 5)), expected)


@pytest.mark.parametrize("algorithm", ["GZIP_2", "RICE_1"])
def test_quantized_float64_tiles_decode_like_astropy(algorithm: str) -> None:
    image = _float_image((20, 16), "float64")
    codec, raw, expected = _tiles(image, compression_type=algorithm, tile_shape=(6, 16), quantize_level=8,
                                  quantize_method=2, dither_seed=17)
    _assert_same(_decode_all(codec, raw, image.shape, (6, 16)), expected)


def test_dither_sequence_wraps_over_the_table_end_like_astropy() -> None:
    # 150x150 tiles use more than 10 000 randoms: the sequence re-seeds mid-tile.
    image = np.random.default_rng(3).normal(0.0, 1.0, size=(300, 150)).astype(np.float32)
    codec, raw, expected = _tiles(image, compression_type="RICE_1", tile_shape=(150, 150), quantize_level=4,
                                  quantize_method=1, dither_seed=10000)
    _assert_same(_decode_all(codec, raw, image.shape, (150, 150)), expected)


@pytest.mark.parametrize(
    ("algorithm", "dtype"),
    [(a, d) for a in ("GZIP_1", "GZIP_2", "RICE_1") for d in ("int32", "int16", "uint8")]
    + [("NOCOMPRESS", "int32"), ("GZIP_1", "float32"), ("GZIP_2", "float64"), ("GZIP_1", "int64")],
)
def test_lossless_tiles_decode_like_astropy(algorithm: str, dtype: str) -> None:
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        image = rng.integers(max(info.min, -(2**30)), min(info.max, 2**30), size=(17, 13)).astype(dtype)
    else:
        image = rng.normal(size=(17, 13)).astype(dtype)
    codec, raw, expected = _tiles(image, compression_type=algorithm, tile_shape=(3, 12), quantize_level=0.0)
    assert codec.quantize is None
    _assert_same(_decode_all(codec, raw, image.shape, (3, 12)), expected)


def test_unsupported_algorithms_are_refused_before_any_bytes() -> None:
    for algorithm in ("HCOMPRESS_1", "PLIO_1", "BZIP2"):
        with pytest.raises(ArchiveFormatError, match="unsupported tile compression"):
            TileCodec(algorithm=algorithm, zbitpix=-32)
    with pytest.raises(ArchiveFormatError, match="unsupported quantization"):
        TileCodec(algorithm="RICE_1", zbitpix=-32, quantize="NONE", zdither0=1)
    with pytest.raises(ArchiveFormatError, match="ZDITHER0"):
        TileCodec(algorithm="RICE_1", zbitpix=-32, quantize="SUBTRACTIVE_DITHER_1", zdither0=0)


def _decode(codec: TileCodec, data: bytes, npix: int, gzip_data: bytes | None = None) -> np.ndarray:
    return decode_tile(codec, data=data, gzip_data=gzip_data, zscale=1.0, zzero=0.0, zblank=None,
                       tile_index=0, npix=npix)


def test_a_tile_of_the_wrong_size_is_an_error() -> None:
    values = np.arange(10, dtype=">f4").tobytes()
    for algorithm in ("GZIP_1", "GZIP_2"):
        codec = TileCodec(algorithm=algorithm, zbitpix=-32)
        blob = zlib.compress(values)
        assert _decode(codec, blob, 10).size == 10
        with pytest.raises(TileDecodeError, match="expected 44"):
            _decode(codec, blob, 11)
        with pytest.raises(TileDecodeError, match="more than"):
            _decode(codec, blob, 9)
        with pytest.raises(TileDecodeError):
            _decode(codec, blob[:-6], 10)
        with pytest.raises(TileDecodeError, match="corrupt"):
            _decode(codec, b"not a gzip stream", 10)
    assert _decode(TileCodec(algorithm="GZIP_1", zbitpix=-32), zlib.compress(values), 10).tolist() == [
        float(v) for v in range(10)
    ]
    with pytest.raises(TileDecodeError, match="expected 44"):
        _decode(TileCodec(algorithm="NOCOMPRESS", zbitpix=-32), values, 11)


def test_a_corrupt_rice_tile_is_an_error() -> None:
    image = np.arange(36, dtype=np.int32).reshape(6, 6) * 37
    codec, raw, _ = _tiles(image, compression_type="RICE_1", tile_shape=(6, 6))
    blob = raw.data[0]["COMPRESSED_DATA"].tobytes()
    with pytest.raises(TileDecodeError, match="RICE_1"):
        _decode(codec, blob[: len(blob) // 2], 36)


def test_a_tile_without_any_data_is_an_error() -> None:
    codec = TileCodec(algorithm="RICE_1", zbitpix=-32, quantize="SUBTRACTIVE_DITHER_2", zdither0=1,
                      fallback="GZIP_1")
    with pytest.raises(TileDecodeError, match="no data"):
        _decode(codec, b"", 36, gzip_data=b"")
    with pytest.raises(TileDecodeError, match="no data"):
        _decode(TileCodec(algorithm="GZIP_2", zbitpix=-32), b"", 36)
