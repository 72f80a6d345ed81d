"""The tile encoder writes what astropy writes (astropy is the oracle), and compression options validate."""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.hdu.compressed._codecs import Rice1
from lsst.images.fits import FitsCompressionAlgorithm as LsstAlgorithm
from lsst.images.fits import FitsCompressionOptions as LsstOptions
from lsst.images.fits import FitsDitherAlgorithm as LsstDither
from lsst.images.fits import FitsQuantizationOptions as LsstQuantization

from cellcoadd_dask.archives.fits.cards import Header
from cellcoadd_dask.archives.fits.codecs import decode_tile
from cellcoadd_dask.archives.fits.encode import ZBLANK, EncodedTile, TileEncoder
from cellcoadd_dask.archives.fits.tile_tables import codec_from_header
from cellcoadd_dask.compression import (
    FitsCompressionAlgorithm,
    FitsCompressionOptions,
    FitsDitherAlgorithm,
    FitsQuantizationOptions,
)
from cellcoadd_dask.errors import ValidationError

SHAPE = (46, 61)  # 4 x 4 tiles of 15 x 20: partial edge tiles 1 pixel high / wide, a 1-pixel corner
TILE = (15, 20)
ASTROPY_DITHER = {"NO_DITHER": -1, "SUBTRACTIVE_DITHER_1": 1, "SUBTRACTIVE_DITHER_2": 2}
SEED = 9998  # with 16 tiles the dither row wraps past 10000
RICE = FitsCompressionAlgorithm.RICE_1


def _float_image(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    image = rng.normal(1000.0, 20.0, SHAPE).astype(dtype)
    image[0, 0] = image[3, 7] = np.nan  # tile 0: a few NaN -> quantized, ZBLANK
    image[1, 25] = np.inf  # tile 1: +inf -> unquantizable, GZIP_1 fallback
    image[0:15, 40:60] = 2.5  # tile 2: constant -> fallback (or quantized with NO_DITHER)
    image[15:30, 0:20] = 0.0  # tile 4: zeros (kept exact by SUBTRACTIVE_DITHER_2)
    image[15:30, 20:40] = np.nan  # tile 5: all NaN
    image[15:30, 40:60] = -3.0  # tile 6: constant but for NaN and -inf
    image[16, 41] = np.nan
    image[17, 42] = -np.inf
    image[30:45, 0:20] = 7.0  # tile 8: constant but for NaN
    image[31, 1] = np.nan
    sparse = np.zeros(300, bool)
    sparse[::3] = True
    image[30:45, 20:40][sparse.reshape(15, 20)] = np.nan  # tile 9: many NaN, their stand-in value shapes the noise
    return image


def _mask_image(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(4)
    bits = (rng.random(SHAPE) < 0.1).astype(dtype) * 4 + (rng.random(SHAPE) < 0.02).astype(dtype)
    bits[20:25, :] |= 1 << (8 * np.dtype(dtype).itemsize - 2)
    bits[0, 0] = np.iinfo(dtype).min if dtype != "uint8" else 255
    return bits.astype(dtype)


def _tiles(shape: tuple[int, ...], tile: tuple[int, ...]) -> Iterator[tuple[int, tuple[slice, ...]]]:
    grid = [math.ceil(n / t) for n, t in zip(shape, tile, strict=True)]
    for row, index in enumerate(np.ndindex(*grid)):
        yield row, tuple(slice(i * t, min((i + 1) * t, n)) for i, t, n in zip(index, tile, shape, strict=True))


def _astropy(image: np.ndarray, **kwargs: Any) -> tuple[fits.BinTableHDU, np.ndarray]:
    """Compress with astropy; return its raw table HDU and its own decoding of the image."""
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, tile_shape=TILE, **kwargs)]).writeto(buffer)
    with fits.open(io.BytesIO(buffer.getvalue())) as hdul:
        decoded = np.array(hdul[1].data)
    raw = fits.open(io.BytesIO(buffer.getvalue()), disable_image_compression=True)[1]
    return raw, decoded


def _astropy_reads(encoder: TileEncoder, tiles: list[EncodedTile], shape: tuple[int, ...]) -> np.ndarray:
    """Put our tiles into a FITS compressed-image table and let astropy decode it."""
    columns = []
    for name, kind in encoder.columns():
        if kind == "PB":
            cells = [np.frombuffer(t.data if name == "COMPRESSED_DATA" else t.fallback, np.uint8) for t in tiles]
            column = np.empty(len(cells), object)
            column[:] = cells
            columns.append(fits.Column(name=name, format="1PB()", array=column))
        else:
            values = [t.zscale if name == "ZSCALE" else t.zzero for t in tiles]
            columns.append(fits.Column(name=name, format="1D", array=np.array(values)))
    table = fits.BinTableHDU.from_columns(columns)
    header = table.header
    header["ZIMAGE"] = True
    header["ZBITPIX"] = encoder.zbitpix
    header["ZNAXIS"] = len(shape)
    for axis, (n, t) in enumerate(zip(shape[::-1], TILE[::-1], strict=True), start=1):
        header[f"ZNAXIS{axis}"] = n
        header[f"ZTILE{axis}"] = t
    for key, value, comment in encoder.compression_cards():
        header[key] = (value, comment)
    if any(t.blank for t in tiles):
        header["ZBLANK"] = ZBLANK
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    with fits.open(io.BytesIO(buffer.getvalue())) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
        return np.array(hdul[1].data)


def _assert_identical(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=")
    assert got.shape == expected.shape
    # Bit-identical, NaN included.
    assert np.array_equal(got.astype(got.dtype.newbyteorder("=")).view(np.uint8),
                          expected.astype(expected.dtype.newbyteorder("=")).view(np.uint8))


def _check_against_astropy(
    image: np.ndarray, encoder: TileEncoder, **astropy_kwargs: Any
) -> tuple[list[EncodedTile], set[int]]:
    raw, expected = _astropy(image, **astropy_kwargs)
    tiles = [encoder.encode(image[box], row) for row, box in _tiles(image.shape, TILE)]
    assert len(tiles) == raw.header["NAXIS2"]

    # Columns and compression cards as astropy writes them.
    assert [(c.name, c.format.lstrip("1")[:2]) for c in raw.columns] == encoder.columns()
    cards = encoder.compression_cards()
    start = raw.header.index("ZCMPTYPE")
    assert raw.header.index("ZTILE1") < start
    written = [(c.keyword, c.value, c.comment) for c in raw.header.cards[start : start + len(cards)]]
    assert written == cards
    follower = raw.header.cards[start + len(cards)].keyword
    assert not follower.startswith(("ZNAME", "ZVAL", "ZQUANTIZ", "ZDITHER")), follower

    # Row by row: the same scaling, the same fallbacks, the same stored values.
    names = raw.columns.names
    boxes = dict(_tiles(image.shape, TILE))
    broken = set()
    for row, tile in enumerate(tiles):
        record = raw.data[row]
        theirs = record["COMPRESSED_DATA"].tobytes()
        if "ZSCALE" in names and not np.isfinite([record["ZSCALE"], record["ZZERO"]]).all():
            # astropy "quantizes" this tile to nothing but NaN; ours stores it losslessly.
            broken.add(row)
            assert tile.data == b"" and tile.zscale == tile.zzero == 0.0 and not tile.blank
            raw_tile = image[boxes[row]].astype(image.dtype.newbyteorder(">")).tobytes()
            assert zlib.decompress(tile.fallback, 31) == raw_tile
            continue
        assert (tile.data == b"") == (theirs == b""), row
        if "GZIP_COMPRESSED_DATA" in names:
            assert tile.blank == (bool(theirs) and bool(np.isnan(image[boxes[row]]).any())), row
            assert tile.zscale == record["ZSCALE"] and tile.zzero == record["ZZERO"], row
            fallback = record["GZIP_COMPRESSED_DATA"].tobytes()
            assert (tile.fallback == b"") == (fallback == b""), row
            if fallback:
                assert zlib.decompress(tile.fallback, 31) == zlib.decompress(fallback, 31)
        else:
            assert tile.fallback == b"" and tile.zscale == 0.0 and tile.zzero == 0.0
        if not theirs:
            continue
        if raw.header["ZCMPTYPE"] == "RICE_1":
            assert tile.data == theirs, row  # Rice coding is deterministic: the same bytes
        else:
            assert zlib.decompress(tile.data, 31) == zlib.decompress(theirs, 31), row

    # NaN blanking as astropy reports it.
    if not broken:
        assert any(t.blank for t in tiles) == ("ZBLANK" in raw.header)
    for row in broken:
        expected[boxes[row]] = image[boxes[row]]

    # Decoded pixels: our tiles through the package's decoder (with astropy's header) and through astropy.
    codec = codec_from_header(Header(dict(raw.header.items()), 0))
    ours = np.empty(image.shape, codec.dtype)
    for row, box in _tiles(image.shape, TILE):
        pixels = decode_tile(codec, data=tiles[row].data, gzip_data=tiles[row].fallback, zscale=tiles[row].zscale,
                             zzero=tiles[row].zzero, zblank=codec.zblank, tile_index=row,
                             npix=math.prod(s.stop - s.start for s in box))
        ours[box] = pixels.reshape(ours[box].shape)
    _assert_identical(ours, expected)
    _assert_identical(_astropy_reads(encoder, tiles, image.shape), expected)
    return tiles, broken


@pytest.mark.parametrize("algorithm", ["GZIP_1", "GZIP_2", "RICE_1"])
@pytest.mark.parametrize("dither", list(ASTROPY_DITHER))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_quantized_tiles_match_astropy(algorithm: str, dither: str, dtype: str) -> None:
    image = _float_image(dtype)
    quantization = FitsQuantizationOptions(level=16.0, dither=FitsDitherAlgorithm(dither), seed=SEED)
    encoder = TileEncoder(FitsCompressionAlgorithm(algorithm), np.dtype(dtype), quantization,
                          zdither0=SEED if dither != "NO_DITHER" else 0)
    assert encoder.quantized
    tiles, broken = _check_against_astropy(image, encoder, compression_type=algorithm, quantize_level=16.0,
                                           quantize_method=ASTROPY_DITHER[dither], dither_seed=SEED)
    assert broken == {6}  # constant with -inf: astropy loses the whole tile, we keep it
    assert tiles[0].blank and tiles[0].data and tiles[0].zscale > 0  # NaNs do not prevent quantization
    assert tiles[1].fallback and not tiles[1].data and tiles[1].zscale == tiles[1].zzero == 0.0  # +inf
    assert tiles[15].fallback and not tiles[15].data  # a single pixel cannot be quantized
    assert not tiles[3].blank


@pytest.mark.parametrize(("algorithm", "level", "dither"),
                         [("RICE_1", -0.25, "SUBTRACTIVE_DITHER_1"), ("GZIP_2", 4.0, "SUBTRACTIVE_DITHER_2"),
                          ("GZIP_1", -0.01, "NO_DITHER")])
def test_other_quantization_levels_match_astropy(algorithm: str, level: float, dither: str) -> None:
    image = _float_image("float32")
    quantization = FitsQuantizationOptions(level=level, dither=FitsDitherAlgorithm(dither))
    encoder = TileEncoder(algorithm, np.float32, quantization, zdither0=1)
    _check_against_astropy(image, encoder, compression_type=algorithm, quantize_level=level,
                           quantize_method=ASTROPY_DITHER[dither], dither_seed=1)


@pytest.mark.parametrize("algorithm", ["GZIP_1", "GZIP_2"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_lossless_gzip_tiles_match_astropy(algorithm: str, dtype: str) -> None:
    image = _float_image(dtype) if dtype.startswith("float") else _mask_image(dtype)
    if dtype.startswith("float"):
        image = image.byteswap().view(image.dtype.newbyteorder())  # big-endian input is fine
    encoder = TileEncoder(algorithm, np.dtype(dtype))
    assert not encoder.quantized
    _check_against_astropy(image, encoder, compression_type=algorithm, quantize_level=0.0)


@pytest.mark.parametrize("algorithm", ["GZIP_1", "GZIP_2", "RICE_1"])
@pytest.mark.parametrize("dtype", ["int32", "int16", "uint8"])
def test_integer_tiles_match_astropy(algorithm: str, dtype: str) -> None:
    image = _mask_image(dtype)
    encoder = TileEncoder(algorithm, np.dtype(dtype))
    _check_against_astropy(image, encoder, compression_type=algorithm)


@pytest.mark.parametrize("dtype", ["int32", "int16", "uint8"])
def test_rice_streams_decode_with_astropy(dtype: str) -> None:
    rng = np.random.default_rng(8)
    info = np.iinfo(dtype)
    for npix in (1, 31, 32, 33, 150 * 150):
        values = rng.integers(info.min, info.max, npix, endpoint=True, dtype=dtype)
        values[: npix // 2] = rng.integers(-3, 4, npix // 2).astype(dtype)  # small and wide blocks
        data = TileEncoder("RICE_1", np.dtype(dtype)).encode(values, 0).data
        bytepix = np.dtype(dtype).itemsize
        decoded = Rice1(blocksize=32, bytepix=bytepix, tilesize=npix).decode(np.frombuffer(data, np.uint8))
        assert np.array_equal(np.asarray(decoded).view(f"u{bytepix}").astype(dtype), values)


def test_quantized_rice_holds_astropy_integers() -> None:
    image = _float_image("float32")[:15, :20]
    encoder = TileEncoder("RICE_1", np.float32, FitsQuantizationOptions(dither=FitsDitherAlgorithm.NO_DITHER))
    tile = encoder.encode(image, 0)
    q = np.frombuffer(Rice1(blocksize=32, bytepix=4, tilesize=image.size).decode(np.frombuffer(tile.data, np.uint8)),
                      np.int32)
    nan = np.isnan(image.ravel())
    assert np.array_equal(q[nan], np.full(nan.sum(), ZBLANK))
    # Without dithering, value = q * ZSCALE + ZZERO and the steps are within half a quantum.
    restored = q[~nan] * tile.zscale + tile.zzero
    assert np.max(np.abs(restored - image.ravel()[~nan])) <= tile.zscale / 2 * (1 + 1e-6)


def test_shuffle_is_msb_first() -> None:
    values = np.array([0x01020304, 0x05060708], dtype=np.int32)
    data = TileEncoder("GZIP_2", np.int32).encode(values, 0).data
    assert zlib.decompress(data, 31) == bytes([1, 5, 2, 6, 3, 7, 4, 8])
    data = TileEncoder("GZIP_1", np.int32).encode(values, 0).data
    assert zlib.decompress(data, 31) == bytes(range(1, 9))
    doubles = np.array([1.0, -2.0])
    shuffled = zlib.decompress(TileEncoder("GZIP_2", np.float64).encode(doubles, 0).data, 31)
    assert shuffled == np.frombuffer(doubles.astype(">f8").tobytes(), np.uint8).reshape(2, 8).T.tobytes()


def test_encoding_is_thread_safe() -> None:
    image = _float_image("float32")
    boxes = [box for _, box in _tiles(SHAPE, TILE)] * 8
    encoder = TileEncoder("RICE_1", np.float32, FitsQuantizationOptions(), zdither0=5)
    serial = [encoder.encode(image[box], i) for i, box in enumerate(boxes)]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda ib: encoder.encode(image[ib[1]], ib[0]), enumerate(boxes)))
    assert threaded == serial


def test_gzip_level_changes_size_not_content() -> None:
    values = np.random.default_rng(1).normal(0, 1, 4000).astype(np.float32)
    fast = TileEncoder("GZIP_2", np.float32, gzip_level=1).encode(values, 0).data
    small = TileEncoder("GZIP_2", np.float32, gzip_level=9).encode(values, 0).data
    assert zlib.decompress(fast, 31) == zlib.decompress(small, 31)
    assert len(small) < len(fast)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("RICE_1", np.float32), {}, "needs quantization"),
        (("RICE_1", np.int64), {}, "RICE_1 codes"),
        (("GZIP_2", np.int32, FitsQuantizationOptions()), {}, "float images only"),
        (("GZIP_2", np.uint16), {}, "cannot tile-compress dtype uint16"),
        (("LZW", np.int32), {}, "algorithm must be one of"),
        (("GZIP_2", np.float32, FitsQuantizationOptions()), {"zdither0": 0}, "ZDITHER0"),
        (("GZIP_2", np.float32), {"gzip_level": 0}, "gzip_level"),
    ],
)
def test_encoder_refuses_bad_settings(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TileEncoder(*args, **kwargs)


def test_encoder_refuses_bad_tiles() -> None:
    encoder = TileEncoder("GZIP_2", np.float32)
    with pytest.raises(ValidationError, match="does not match"):
        encoder.encode(np.zeros(4, np.float64), 0)
    with pytest.raises(ValidationError, match="empty"):
        encoder.encode(np.zeros((0, 3), np.float32), 0)
    with pytest.raises(ValidationError, match="index"):
        encoder.encode(np.zeros(3, np.float32), -1)


# --- compression options -------------------------------------------------------------------------


def test_option_defaults_and_presets() -> None:
    default = FitsCompressionOptions()
    assert default == FitsCompressionOptions.DEFAULT
    assert default.algorithm is FitsCompressionAlgorithm.GZIP_2
    assert default.tile_shape is None and default.quantization is None
    lossy = FitsCompressionOptions.LOSSY
    assert lossy.algorithm is FitsCompressionAlgorithm.RICE_1
    assert lossy.quantization == FitsQuantizationOptions(16.0, FitsDitherAlgorithm.SUBTRACTIVE_DITHER_2, None)
    assert [m.value for m in FitsCompressionAlgorithm] == [m.value for m in LsstAlgorithm]
    assert [m.value for m in FitsDitherAlgorithm] == [m.value for m in LsstDither]


def test_options_convert_strings_and_lists() -> None:
    loose: dict[str, Any] = {"algorithm": "RICE_1", "tile_shape": [3, 12]}
    quantization: dict[str, Any] = {"level": 4, "dither": "NO_DITHER", "seed": -1}
    options = FitsCompressionOptions(**loose, quantization=FitsQuantizationOptions(**quantization))
    assert options.algorithm is FitsCompressionAlgorithm.RICE_1
    assert options.tile_shape == (3, 12)
    assert options.quantization is not None
    assert options.quantization.dither is FitsDitherAlgorithm.NO_DITHER
    assert options.quantization.level == 4.0 and isinstance(options.quantization.level, float)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (FitsCompressionOptions, {"algorithm": "RICE_2"}, "algorithm must be one of 'GZIP_1', 'GZIP_2', 'RICE_1'"),
        (FitsQuantizationOptions, {"dither": "DITHER"}, "dither must be one of 'NO_DITHER'"),
        (FitsQuantizationOptions, {"level": 0.0}, "level must be finite and non-zero"),
        (FitsQuantizationOptions, {"level": float("nan")}, "level must be finite"),
        (FitsQuantizationOptions, {"level": float("-inf")}, "level must be finite"),
        (FitsQuantizationOptions, {"level": "16"}, "level must be a number"),
        (FitsQuantizationOptions, {"level": True}, "level must be a number"),
        (FitsQuantizationOptions, {"seed": 10001}, "seed must be None or an integer in -1..10000"),
        (FitsQuantizationOptions, {"seed": -2}, "seed"),
        (FitsQuantizationOptions, {"seed": 1.5}, "seed"),
        (FitsCompressionOptions, {"tile_shape": (0, 4)}, "tile_shape must hold positive ints"),
        (FitsCompressionOptions, {"tile_shape": (2.5, 4)}, "tile_shape must hold positive ints"),
        (FitsCompressionOptions, {"tile_shape": ()}, "tile_shape"),
        (FitsCompressionOptions, {"tile_shape": 4}, "tile_shape"),
        (FitsCompressionOptions, {"quantization": 16}, "quantization must be None or have"),
    ],
)
def test_options_refuse_bad_values(cls: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        cls(**kwargs)


def test_coerce_refuses_other_objects() -> None:
    with pytest.raises(ValidationError, match="compression options must be None or have"):
        FitsCompressionOptions.coerce("GZIP_2")


@pytest.mark.parametrize(
    ("options", "dtype", "shape", "message"),
    [
        (FitsCompressionOptions(quantization=FitsQuantizationOptions()), np.int32, (4, 5),
         "mask: quantization applies to float arrays only"),
        (FitsCompressionOptions(algorithm=RICE), np.float32, (4, 5), "mask: RICE_1 on a float32 array needs"),
        (FitsCompressionOptions(algorithm=RICE), np.float64, (4, 5), "mask: RICE_1 on a float64 array needs"),
        (FitsCompressionOptions(algorithm=RICE), np.int64, (4, 5), "mask: RICE_1 codes"),
        (FitsCompressionOptions(), np.uint16, (4, 5), "mask: cannot tile-compress dtype uint16"),
        (FitsCompressionOptions(), np.complex64, (4, 5), "mask: cannot tile-compress"),
        (FitsCompressionOptions(tile_shape=(3, 4)), np.float32, (2, 4, 5), "mask: tile_shape .* 2 axes .* has 3"),
    ],
)
def test_check_for_refuses_with_plane_name(options: FitsCompressionOptions, dtype: Any, shape: tuple[int, ...],
                                          message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        options.check_for(np.dtype(dtype), shape, plane="mask")


@pytest.mark.parametrize(
    ("options", "dtype", "shape"),
    [
        (FitsCompressionOptions.LOSSY, ">f4", (4, 5)),
        (FitsCompressionOptions.LOSSY, np.float64, (3, 4, 5)),
        (FitsCompressionOptions(algorithm=RICE, tile_shape=(2, 3)), np.int32, (4, 5)),
        (FitsCompressionOptions(algorithm=FitsCompressionAlgorithm.GZIP_1), np.float64, (5,)),
    ],
)
def test_check_for_accepts_valid_combinations(options: FitsCompressionOptions, dtype: Any,
                                              shape: tuple[int, ...]) -> None:
    options.check_for(np.dtype(dtype), shape, plane="image")  # no error


def test_coerce_lsst_images_options() -> None:
    assert FitsCompressionOptions.coerce(None) is None
    ours = FitsCompressionOptions.coerce(LsstOptions.LOSSY)
    assert ours == FitsCompressionOptions.LOSSY
    custom = LsstOptions(
        algorithm=LsstAlgorithm.GZIP_1,
        tile_shape=(3, 5),
        quantization=LsstQuantization(level=-0.01, dither=LsstDither.SUBTRACTIVE_DITHER_1, seed=7),
    )
    assert FitsCompressionOptions.coerce(custom) == FitsCompressionOptions(
        algorithm=FitsCompressionAlgorithm.GZIP_1,
        tile_shape=(3, 5),
        quantization=FitsQuantizationOptions(level=-0.01, dither=FitsDitherAlgorithm.SUBTRACTIVE_DITHER_1, seed=7),
    )
    assert FitsCompressionOptions.coerce(LsstOptions()) == FitsCompressionOptions.DEFAULT
    same = FitsCompressionOptions()
    assert FitsCompressionOptions.coerce(same) is same
    # An lsst-images quantization object is accepted directly too.
    foreign: Any = LsstQuantization(level=8.0, dither=LsstDither.NO_DITHER)
    direct = FitsCompressionOptions(quantization=foreign)
    assert direct.quantization == FitsQuantizationOptions(level=8.0, dither=FitsDitherAlgorithm.NO_DITHER)
