"""Compression options of the FITS writer: algorithm, tile shape and lossy quantization.

The classes mirror ``lsst.images.fits``' options of the same names (and accept
them through :meth:`FitsCompressionOptions.coerce`), but validate their values
when built, and :meth:`FitsCompressionOptions.check_for` refuses combinations
that would lose data silently (``RICE_1`` on floats without quantization) or
that the tile encoder cannot write.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
from typing import Any, ClassVar

import numpy as np

from .errors import ValidationError

__all__ = [
    "FitsCompressionAlgorithm",
    "FitsCompressionOptions",
    "FitsDitherAlgorithm",
    "FitsQuantizationOptions",
]

_SEED_RANGE = (-1, 10_000)

_LOSSLESS_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64))
"""Logical dtypes the tile encoder writes (FITS ``BITPIX`` 8, 16, 32, 64, -32, -64)."""

_RICE_INTEGER_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int16, np.int32))
"""Integer dtypes ``RICE_1`` stores losslessly (``BYTEPIX`` 1, 2, 4)."""


class FitsCompressionAlgorithm(enum.StrEnum):
    """Tile compression algorithms (``ZCMPTYPE``) the writer supports."""

    GZIP_1 = "GZIP_1"
    GZIP_2 = "GZIP_2"
    RICE_1 = "RICE_1"


class FitsDitherAlgorithm(enum.StrEnum):
    """Dithering of lossy float quantization (``ZQUANTIZ``), FITS standard section 10.2."""

    NO_DITHER = "NO_DITHER"
    SUBTRACTIVE_DITHER_1 = "SUBTRACTIVE_DITHER_1"
    SUBTRACTIVE_DITHER_2 = "SUBTRACTIVE_DITHER_2"


def _to_enum[E: enum.StrEnum](kind: type[E], value: Any, field: str) -> E:
    """Convert ``value`` (member, its string value, or a foreign string enum) to ``kind``."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        try:
            return kind(str(value))
        except ValueError:
            pass
    allowed = ", ".join(repr(m.value) for m in kind)
    raise ValidationError(f"{field} must be one of {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


@dataclasses.dataclass(frozen=True)
class FitsQuantizationOptions:
    """Lossy quantization of float pixels into integers before compression.

    Parameters
    ----------
    level
        Quantization level (``NOISEBIT``).  When positive, the integer step is
        the tile's estimated noise sigma divided by ``level``; when negative,
        ``-level`` is used directly as the step (``ZSCALE``) of every tile.
    dither
        Dithering method; strings such as ``"SUBTRACTIVE_DITHER_2"`` are accepted.
    seed
        Dither seed (``ZDITHER0``): 1..10000 used as is, 0 from the clock, -1
        from the image checksum, ``None`` to take the write call's seed.

    Raises
    ------
    ValidationError
        If ``level`` is not a finite non-zero number, ``dither`` is unknown, or
        ``seed`` is neither ``None`` nor an integer in -1..10000.
    """

    level: float = 16.0
    dither: FitsDitherAlgorithm = FitsDitherAlgorithm.SUBTRACTIVE_DITHER_2
    seed: int | None = None

    def __post_init__(self) -> None:
        level = self.level
        if not isinstance(level, numbers.Real) or isinstance(level, bool | np.bool_):
            raise ValidationError(f"quantization level must be a number, got {level!r}")
        if not math.isfinite(level) or level == 0:
            raise ValidationError(f"quantization level must be finite and non-zero, got {level!r}")
        object.__setattr__(self, "level", float(level))
        object.__setattr__(self, "dither", _to_enum(FitsDitherAlgorithm, self.dither, "quantization dither"))
        seed = self.seed
        if seed is not None:
            low, high = _SEED_RANGE
            if not _is_int(seed) or not low <= int(seed) <= high:
                raise ValidationError(
                    f"quantization seed must be None or an integer in {low}..{high}, got {seed!r}"
                )
            object.__setattr__(self, "seed", int(seed))

    @classmethod
    def coerce(cls, value: Any) -> FitsQuantizationOptions | None:
        """Return quantization options from ``None``, this class, or a look-alike object.

        Parameters
        ----------
        value
            ``None``, a :class:`FitsQuantizationOptions`, or any object with
            ``level``, ``dither`` and ``seed`` attributes (such as
            ``lsst.images.fits.FitsQuantizationOptions``).

        Returns
        -------
        FitsQuantizationOptions or None
            The equivalent options (``None`` stays ``None``).

        Raises
        ------
        ValidationError
            If ``value`` lacks one of the attributes or holds invalid values.
        """
        if value is None or isinstance(value, cls):
            return value
        try:
            level, dither, seed = value.level, value.dither, value.seed
        except AttributeError:
            raise ValidationError(
                f"quantization must be None or have 'level', 'dither' and 'seed' attributes, got {value!r}"
            ) from None
        return cls(level=level, dither=dither, seed=seed)


@dataclasses.dataclass(frozen=True)
class FitsCompressionOptions:
    """How one kind of array is stored as a FITS tile-compressed image.

    Parameters
    ----------
    algorithm
        Tile compression (``ZCMPTYPE``); strings such as ``"RICE_1"`` are accepted.
    tile_shape
        Tile shape in numpy order ``(..., y, x)``; ``None`` lets the writer
        choose (the cell shape for cell-based planes).  Lists are accepted.
    quantization
        Lossy quantization of float pixels, or ``None`` for lossless storage.
        Look-alike objects (``lsst.images.fits.FitsQuantizationOptions``) are
        converted.

    Raises
    ------
    ValidationError
        If a field holds an invalid value.

    Notes
    -----
    ``FitsCompressionOptions.DEFAULT`` is lossless ``GZIP_2``;
    ``FitsCompressionOptions.LOSSY`` is ``RICE_1`` with quantization level 16
    and ``SUBTRACTIVE_DITHER_2`` (the seed then comes from the write call).
    """

    algorithm: FitsCompressionAlgorithm = FitsCompressionAlgorithm.GZIP_2
    tile_shape: tuple[int, ...] | None = None
    quantization: FitsQuantizationOptions | None = None

    DEFAULT: ClassVar[FitsCompressionOptions]
    """Lossless ``GZIP_2`` with the writer's tile shape."""

    LOSSY: ClassVar[FitsCompressionOptions]
    """``RICE_1`` after quantization at level 16 with ``SUBTRACTIVE_DITHER_2``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithm", _to_enum(FitsCompressionAlgorithm, self.algorithm, "algorithm"))
        tile_shape = self.tile_shape
        if tile_shape is not None:
            if not isinstance(tile_shape, tuple | list) or not tile_shape:
                raise ValidationError(f"tile_shape must be None or a non-empty tuple of positive ints, "
                                      f"got {tile_shape!r}")
            if not all(_is_int(n) and n > 0 for n in tile_shape):
                raise ValidationError(f"tile_shape must hold positive ints, got {tile_shape!r}")
            object.__setattr__(self, "tile_shape", tuple(int(n) for n in tile_shape))
        object.__setattr__(self, "quantization", FitsQuantizationOptions.coerce(self.quantization))

    @classmethod
    def coerce(cls, value: Any) -> FitsCompressionOptions | None:
        """Return options from ``None``, this class, or a look-alike object.

        Parameters
        ----------
        value
            ``None``, a :class:`FitsCompressionOptions`, or any object with
            ``algorithm``, ``tile_shape`` and ``quantization`` attributes (the
            latter ``None`` or with ``level``, ``dither`` and ``seed``), such as
            ``lsst.images.fits.FitsCompressionOptions``.

        Returns
        -------
        FitsCompressionOptions or None
            The equivalent options (``None`` stays ``None``: a plain image).

        Raises
        ------
        ValidationError
            If ``value`` lacks one of the attributes or holds invalid values.
        """
        if value is None or isinstance(value, cls):
            return value
        try:
            algorithm, tile_shape, quantization = value.algorithm, value.tile_shape, value.quantization
        except AttributeError:
            raise ValidationError(
                "compression options must be None or have 'algorithm', 'tile_shape' and 'quantization' "
                f"attributes, got {value!r}"
            ) from None
        return cls(algorithm=algorithm, tile_shape=tile_shape, quantization=quantization)

    def check_for(self, dtype: np.dtype | type, shape: tuple[int, ...], *, plane: str) -> None:
        """Check that these options can store an array of ``dtype`` and ``shape`` without loss of meaning.

        Parameters
        ----------
        dtype
            The array's dtype (byte order does not matter).
        shape
            The array's shape (numpy order).
        plane
            Name of the plane or HDU, used in error messages.

        Raises
        ------
        ValidationError
            If the dtype cannot be tile-compressed, quantization is asked for
            integers, ``RICE_1`` is asked for floats without quantization (the
            floats would be truncated to integers) or for a dtype it cannot
            code, or ``tile_shape`` has another number of axes than the array.
        """
        dt = np.dtype(dtype).newbyteorder("=")
        if dt not in _LOSSLESS_DTYPES:
            allowed = ", ".join(sorted(str(d) for d in _LOSSLESS_DTYPES))
            raise ValidationError(f"{plane}: cannot tile-compress dtype {dt} (supported: {allowed})")
        is_float = dt.kind == "f"
        if self.quantization is not None and not is_float:
            raise ValidationError(f"{plane}: quantization applies to float arrays only, not dtype {dt}")
        if self.algorithm == FitsCompressionAlgorithm.RICE_1:
            if is_float and self.quantization is None:
                raise ValidationError(
                    f"{plane}: RICE_1 on a {dt} array needs quantization (without it the floats are "
                    "truncated to integers); use GZIP_1/GZIP_2 or add quantization"
                )
            if not is_float and dt not in _RICE_INTEGER_DTYPES:
                raise ValidationError(f"{plane}: RICE_1 codes uint8, int16 and int32 values, not dtype {dt}")
        if self.tile_shape is not None and len(self.tile_shape) != len(shape):
            raise ValidationError(
                f"{plane}: tile_shape {self.tile_shape} has {len(self.tile_shape)} axes but the array "
                f"has {len(shape)} (shape {tuple(shape)})"
            )


FitsCompressionOptions.DEFAULT = FitsCompressionOptions()
FitsCompressionOptions.LOSSY = FitsCompressionOptions(
    algorithm=FitsCompressionAlgorithm.RICE_1,
    quantization=FitsQuantizationOptions(level=16.0, dither=FitsDitherAlgorithm.SUBTRACTIVE_DITHER_2, seed=None),
)
