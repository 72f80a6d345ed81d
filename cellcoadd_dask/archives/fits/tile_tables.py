"""Header cards and tile-descriptor tables -> :class:`TiledArray` / :class:`PlainArray` layouts.

The one place where the cards of an image HDU become codec settings and byte ranges.
Everything is validated against the HDU's data size before any tile is fetched:
unsupported algorithms (``HCOMPRESS_1``, ``PLIO_1``) never reach a decoder, and no
allocation is sized by a header field that the stored bytes cannot back.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ArchiveFormatError
from .cards import Header
from .codecs import ALGORITHMS, BITPIX_DTYPES, QUANTIZE_METHODS, TileCodec, TileDecodeError
from .plain import PlainArray
from .tables import BinTableColumn, parse_columns, read_bintable
from .tiles import TiledArray

__all__ = [
    "MAX_EXPANSION",
    "codec_from_header",
    "compressed_layout",
    "compressed_layout_from_header",
    "load_rows",
    "plain_layout",
    "table_nbytes",
]

MAX_EXPANSION = 1100
"""Upper bound on decoded/stored bytes of a tile (deflate tops out near 1032:1, Rice near 205:1)."""

_MAX_AXES = 999
_FALLBACK_COLUMNS = {"GZIP_1": "GZIP_COMPRESSED_DATA", "NOCOMPRESS": "UNCOMPRESSED_DATA"}
_SCALAR_CODES = {"E", "D", "I", "J", "K"}


class _Cards:
    """Typed access to header cards with located errors."""

    def __init__(self, header: Header, url: str | None, hdu: str | None) -> None:
        self.header, self.url, self.hdu = header, url, hdu

    def error(self, message: str, byte_range: tuple[int, int] | None = None) -> ArchiveFormatError:
        return ArchiveFormatError(message, url=self.url, hdu=self.hdu, byte_range=byte_range)

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int:
        value = self.header.get(key, default)
        if value is None:
            raise self.error(f"missing header card {key}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"header card {key} = {value!r} is not an integer")
        if minimum is not None and value < minimum:
            raise self.error(f"header card {key} = {value} is below {minimum}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        value = self.header.get(key, default)
        if not isinstance(value, str):
            raise self.error(f"header card {key} = {value!r} is missing or not a string")
        return value.strip()

    def number(self, key: str) -> float | None:
        value = self.header.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"header card {key} = {value!r} is not a number")
        return float(value)

    def check_no_scaling(self) -> None:
        for key, neutral in (("BSCALE", 1.0), ("BZERO", 0.0)):
            value = self.number(key)
            if value is not None and value != neutral:
                raise self.error(f"{key} = {value} scaling is not supported")


def table_nbytes(header: Header, *, url: str | None = None, hdu: str | None = None) -> int:
    """Size in bytes of the tile-descriptor table of a compressed HDU (``NAXIS1 * NAXIS2``).

    Raises
    ------
    ArchiveFormatError
        If the header is not a binary table with valid ``NAXIS1``/``NAXIS2``.
    """
    cards = _Cards(header, url, hdu)
    if cards.integer("NAXIS") != 2:
        raise cards.error("a tile-compressed HDU needs NAXIS = 2")
    return cards.integer("NAXIS1", minimum=0) * cards.integer("NAXIS2", minimum=0)


def _zval(cards: _Cards, name: str, default: int) -> int:
    """Look up a ``ZNAMEn``/``ZVALn`` compression parameter."""
    for n in range(1, _MAX_AXES + 1):
        key = cards.header.get(f"ZNAME{n}")
        if key is None:
            break
        if isinstance(key, str) and key.strip().upper() == name:
            return cards.integer(f"ZVAL{n}")
    return default


def codec_from_header(header: Header, *, url: str | None = None, hdu: str | None = None) -> TileCodec:
    """Turn the compression cards of a tile-compressed HDU into a :class:`TileCodec`.

    The one place where header cards become codec settings: ``ZCMPTYPE``,
    ``ZBITPIX``, ``BLOCKSIZE``/``BYTEPIX`` (``ZNAMEn``/``ZVALn``), ``ZQUANTIZ``,
    ``ZDITHER0``, ``ZBLANK`` (or ``BLANK``), and which fallback column exists.
    The image is quantized when it has a ``ZSCALE`` column or keyword.

    Raises
    ------
    ArchiveFormatError
        For an unsupported algorithm (``HCOMPRESS_1``, ``PLIO_1``, ...) or
        quantization method, or invalid cards.
    """
    cards = _Cards(header, url, hdu)
    algorithm = cards.string("ZCMPTYPE").upper()
    if algorithm == "RICE_ONE":
        algorithm = "RICE_1"
    if algorithm not in ALGORITHMS:
        raise cards.error(f"unsupported tile compression ZCMPTYPE = {algorithm!r} (supported: {', '.join(ALGORITHMS)})")
    zbitpix = cards.integer("ZBITPIX")
    if zbitpix not in BITPIX_DTYPES:
        raise cards.error(f"invalid ZBITPIX = {zbitpix}")
    nfields = cards.integer("TFIELDS", minimum=0)
    if nfields > _MAX_AXES:
        raise cards.error(f"TFIELDS = {nfields} is out of range")
    names = {cards.string(f"TTYPE{n}", "").upper() for n in range(1, nfields + 1)}
    quantize = None
    if "ZSCALE" in names or "ZSCALE" in header:
        quantize = cards.string("ZQUANTIZ", "NO_DITHER").upper()
        if quantize not in QUANTIZE_METHODS:
            raise cards.error(f"unsupported quantization ZQUANTIZ = {quantize!r}")
    zblank = header.get("ZBLANK", header.get("BLANK"))
    if zblank is not None and (isinstance(zblank, bool) or not isinstance(zblank, int)):
        raise cards.error(f"ZBLANK = {zblank!r} is not an integer")
    fallback = "GZIP_1" if "GZIP_COMPRESSED_DATA" in names else ("NOCOMPRESS" if "UNCOMPRESSED_DATA" in names else None)
    try:
        return TileCodec(
            algorithm=algorithm,
            zbitpix=zbitpix,
            blocksize=_zval(cards, "BLOCKSIZE", 32),
            bytepix=_zval(cards, "BYTEPIX", 4),
            quantize=quantize,
            zdither0=cards.integer("ZDITHER0", 0),
            zblank=zblank,
            fallback=fallback,
        )
    except TileDecodeError as exc:
        raise cards.error(str(exc)) from None


def _tile_columns(cards: _Cards) -> dict[str, BinTableColumn]:
    """The table's columns by upper-cased name, checked for the types a tile table may use."""
    columns = {c.name.upper(): c for c in parse_columns(cards.header, url=cards.url, hdu=cards.hdu)}
    if "COMPRESSED_DATA" not in columns:
        raise cards.error("no COMPRESSED_DATA column")
    for name, column in columns.items():
        if name in ("COMPRESSED_DATA", *_FALLBACK_COLUMNS.values()) and column.code not in ("P", "Q"):
            raise cards.error(f"column {name} is not a variable-length array column")
        if name in ("ZSCALE", "ZZERO", "ZBLANK") and (column.repeat != 1 or column.code not in _SCALAR_CODES):
            raise cards.error(f"column {name} has an unsupported type ({column.repeat}{column.code})")
    return columns


def compressed_layout_from_header(
    header: Header,
    *,
    data_start: int,
    data_size: int,
    url: str | None = None,
    hdu: str | None = None,
) -> TiledArray:
    """Describe a tile-compressed image HDU from its header alone; no descriptor row loaded yet.

    Rows are then loaded with :func:`load_rows` (all at once, or just those a read needs).

    Raises
    ------
    ArchiveFormatError
        If a card is inconsistent: unsupported compression, tile count different from the
        tile grid, column widths different from ``NAXIS1``, a table larger than the data.
    """
    cards = _Cards(header, url, hdu)
    codec = codec_from_header(header, url=url, hdu=hdu)
    if header.get("ZIMAGE") is not True:
        raise cards.error("not a tile-compressed image (ZIMAGE is not T)")
    cards.check_no_scaling()
    nbytes = table_nbytes(header, url=url, hdu=hdu)
    ntiles = cards.integer("NAXIS2")
    if nbytes > data_size:
        raise cards.error(
            f"tile table needs {nbytes} bytes; the data holds {data_size}", byte_range=(data_start, data_start + nbytes)
        )
    ndim = cards.integer("ZNAXIS", minimum=1)
    if ndim > _MAX_AXES:
        raise cards.error(f"ZNAXIS = {ndim} is out of range")
    fits_shape = [cards.integer(f"ZNAXIS{n}", minimum=1) for n in range(1, ndim + 1)]
    fits_tile = [cards.integer(f"ZTILE{n}", fits_shape[0] if n == 1 else 1, minimum=1) for n in range(1, ndim + 1)]
    shape, tile_shape = tuple(reversed(fits_shape)), tuple(reversed(fits_tile))
    grid = [-(-n // t) for n, t in zip(shape, tile_shape, strict=True)]
    if math.prod(grid) != ntiles:
        raise cards.error(f"the tile grid {tuple(grid)} has {math.prod(grid)} tiles but the table has {ntiles} rows")
    columns = _tile_columns(cards)
    cards.integer("THEAP", nbytes, minimum=nbytes)
    cards.integer("PCOUNT", 0, minimum=0)
    fallback_name = _FALLBACK_COLUMNS.get(codec.fallback or "")
    if codec.fallback == "NOCOMPRESS":
        element = columns["UNCOMPRESSED_DATA"].element
        if columns["UNCOMPRESSED_DATA"].element_size != codec.dtype.itemsize or (element in "ED") != (
            codec.zbitpix < 0
        ):
            raise cards.error(f"UNCOMPRESSED_DATA elements ({element}) do not match ZBITPIX {codec.zbitpix}")

    def per_tile(name: str, dtype: type, default: float | None) -> np.ndarray | None:
        if name in columns:
            return np.zeros(ntiles, dtype=dtype)
        value = cards.number(name) if dtype is np.float64 else None
        value = default if value is None else value
        return None if value is None else np.full(ntiles, value, dtype=dtype)

    quantized = codec.quantize is not None
    return TiledArray(
        shape=shape,
        tile_shape=tile_shape,
        codec=codec,
        data=np.zeros((ntiles, 2), dtype=np.int64),
        fallback=None if fallback_name is None else np.zeros((ntiles, 2), dtype=np.int64),
        zscale=per_tile("ZSCALE", np.float64, None) if quantized else None,
        zzero=per_tile("ZZERO", np.float64, 0.0) if quantized else None,
        zblank=per_tile("ZBLANK", np.int64, None),
        url=url,
        hdu=hdu,
        loaded=np.zeros(ntiles, dtype=bool),
        table_start=data_start,
        row_bytes=cards.integer("NAXIS1"),
        header=header,
        data_size=data_size,
    )


def load_rows(layout: TiledArray, first: int, rows: bytes | memoryview) -> None:
    """Decode descriptor rows ``[first, first + len(rows) // row_bytes)`` into ``layout``.

    Every tile's bytes are checked to lie inside the HDU's heap, and every tile's pixel
    count against what its stored bytes can hold, before the row counts as loaded.

    Raises
    ------
    ArchiveFormatError
        If a descriptor is negative or points outside the heap, or a tile claims more
        pixels than its stored bytes can plausibly hold.
    """
    assert layout.loaded is not None and layout.header is not None
    header, url, hdu = layout.header, layout.url, layout.hdu
    cards = _Cards(header, url, hdu)
    count = len(rows) // layout.row_bytes if layout.row_bytes else 0
    count = min(count, len(layout.loaded) - first)
    if count <= 0:
        return
    columns = _tile_columns(cards)
    values = read_bintable(header, rows, url=url, hdu=hdu, data_offset=layout.row_range(first, first)[0], nrows=count)
    by_name = {name.upper(): array for name, array in values.items()}
    nbytes = table_nbytes(header, url=url, hdu=hdu)
    heap_start = layout.table_start + cards.integer("THEAP", nbytes, minimum=nbytes)
    heap_stop = layout.table_start + min(layout.data_size, nbytes + cards.integer("PCOUNT", 0, minimum=0))

    def located(name: str) -> np.ndarray:
        desc = by_name[name].reshape(-1, 2)
        if (desc < 0).any():
            raise cards.error(f"negative descriptor in column {name}")
        # Clip first so that absurd 64-bit descriptors cannot overflow the sums below.
        huge = (desc[:, 0] > 0) & ((desc[:, 0] > layout.data_size) | (desc[:, 1] > layout.data_size))
        desc = np.where(huge[:, None], layout.data_size, desc)
        counts = desc[:, 0] * columns[name].element_size
        starts = heap_start + desc[:, 1]
        bad = (counts > 0) & (starts + counts > heap_stop)
        if bad.any():
            t = int(np.argmax(bad))
            raise cards.error(
                f"tile {first + t} of {name} lies outside the heap (ends at {heap_stop})",
                byte_range=(int(starts[t]), int(starts[t] + counts[t])),
            )
        return np.stack([np.where(counts > 0, starts, 0), counts], axis=1)

    span = slice(first, first + count)
    data = located("COMPRESSED_DATA")
    stored = data[:, 1].copy()
    fallback = None
    if layout.fallback is not None:
        fallback = located(_FALLBACK_COLUMNS[layout.codec.fallback or ""])
        stored += fallback[:, 1]
    numbers = np.arange(first, first + count)
    grid = layout.grid
    sizes = np.ones(count, dtype=np.int64)
    rest = numbers.copy()
    for n, t, g in zip(reversed(layout.shape), reversed(layout.tile_shape), reversed(grid), strict=True):
        index = rest % g
        rest //= g
        sizes *= np.minimum((index + 1) * t, n) - index * t
    too_big = sizes * layout.codec.dtype.itemsize > MAX_EXPANSION * stored + 1024
    if too_big.any():
        t = int(np.argmax(too_big))
        raise cards.error(
            f"tile {first + t} of {int(sizes[t])} pixels is larger than its {int(stored[t])} stored bytes can hold"
        )
    layout.data[span] = data
    if fallback is not None and layout.fallback is not None:
        layout.fallback[span] = fallback
    for name, target in (("ZSCALE", layout.zscale), ("ZZERO", layout.zzero), ("ZBLANK", layout.zblank)):
        if name in by_name and target is not None:
            target[span] = np.asarray(by_name[name]).reshape(-1)
    layout.loaded[span] = True


def compressed_layout(
    header: Header,
    table: bytes | memoryview,
    *,
    data_start: int,
    data_size: int,
    url: str | None = None,
    hdu: str | None = None,
) -> TiledArray:
    """Describe a tile-compressed image HDU from its header and whole descriptor table.

    Parameters
    ----------
    header
        The HDU's parsed header (a ``BINTABLE`` with ``ZIMAGE = T``).
    table
        The first ``table_nbytes(header)`` bytes of the HDU's data.
    data_start
        Absolute file offset of the HDU's data (the table's first byte).
    data_size
        Size of the HDU's data in the file (table + heap + padding).
    url, hdu
        Where the HDU lives, for error messages and the returned layout.

    Raises
    ------
    ArchiveFormatError
        As :func:`compressed_layout_from_header` and :func:`load_rows`, or when ``table``
        is shorter than the table.
    """
    nbytes = table_nbytes(header, url=url, hdu=hdu)
    if len(table) < nbytes:
        raise ArchiveFormatError(
            f"tile table needs {nbytes} bytes, got {len(table)}",
            url=url,
            hdu=hdu,
            byte_range=(data_start, data_start + nbytes),
        )
    layout = compressed_layout_from_header(header, data_start=data_start, data_size=data_size, url=url, hdu=hdu)
    load_rows(layout, 0, table[:nbytes])
    return layout


def plain_layout(
    header: Header, *, data_start: int, data_size: int, url: str | None = None, hdu: str | None = None
) -> PlainArray:
    """Describe an uncompressed ``IMAGE`` HDU from its header.

    Raises
    ------
    ArchiveFormatError
        If ``BITPIX``/``NAXISn`` are invalid, the pixels do not fit in
        ``data_size``, or ``BSCALE``/``BZERO`` scaling is present.
    """
    cards = _Cards(header, url, hdu)
    bitpix = cards.integer("BITPIX")
    if bitpix not in BITPIX_DTYPES:
        raise cards.error(f"invalid BITPIX = {bitpix}")
    ndim = cards.integer("NAXIS", minimum=1)
    if ndim > _MAX_AXES:
        raise cards.error(f"NAXIS = {ndim} is out of range")
    shape = tuple(reversed([cards.integer(f"NAXIS{n}", minimum=1) for n in range(1, ndim + 1)]))
    cards.check_no_scaling()
    dtype = BITPIX_DTYPES[bitpix]
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > data_size:
        raise cards.error(
            f"image of shape {shape} needs {nbytes} bytes but the data holds {data_size}",
            byte_range=(data_start, data_start + data_size),
        )
    return PlainArray(shape=shape, dtype=dtype, data_start=data_start, url=url, hdu=hdu)
