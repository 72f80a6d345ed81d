"""The ``convert`` command: a coadd archive written again as FITS, JSON or Zarr, whole or a box of it.

Registered on :data:`cellcoadd_dask.cli.cli` when that module is imported.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .cli import (
    BoxType,
    cli,
    echo_json,
    json_option,
    open_counted,
    parse_compression,
    progress_flag,
    storage_option_flag,
    storage_options_of,
)
from .errors import shown_url
from .geom import Box

__all__ = ["convert"]


_PLANES = ("image", "mask", "variance", "mask_fractions", "psf")


def _compression_args(ctx: click.Context, lossy: bool, items: tuple[str, ...]) -> dict[str, Any]:
    from .compression import FitsCompressionOptions

    chosen: dict[str, Any] = {}
    if lossy:
        chosen = {"image": FitsCompressionOptions.LOSSY, "variance": FitsCompressionOptions.LOSSY}
    for item in items:
        plane, sep, spec = item.partition("=")
        if not sep or plane not in _PLANES:
            raise click.BadParameter(f"expected PLANE=SPEC with PLANE one of {', '.join(_PLANES)}, got {item!r}",
                                     ctx=ctx, param_hint="--compress")
        try:
            chosen[plane] = parse_compression(spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="--compress") from None
    return {f"{plane}_compression": value for plane, value in chosen.items()}


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option("--box", type=BoxType(), default=None,
              help="Write only this absolute box y0:y1,x0:x1 (reads only the cells it touches).")
@click.option("--lossy", is_flag=True,
              help="Quantize image, noise realizations and variance (RICE_1, SUBTRACTIVE_DITHER_2, level 16).")
@click.option("--compress", "compress", multiple=True, metavar="PLANE=SPEC",
              help="Per-plane compression (repeatable): PLANE is image, mask, variance, mask_fractions or psf; "
                   "SPEC is GZIP_1, GZIP_2, RICE_1, NONE or LOSSY[:LEVEL]. Default: lossless GZIP_2.")
@click.option("--seed", "compression_seed", type=click.IntRange(1, 10000), default=None,
              help="Dither seed of quantized planes (incremented per plane, as lsst-images does).")
@click.option("--keep-bits", "keep_bits", type=click.IntRange(1, 51), default=None,
              help="Zarr only: lossy, keep N mantissa bits of float planes (relative error <= 2**-(N+1)).")
@click.option("--overwrite/--no-overwrite", default=True, show_default=True,
              help="Replace an existing destination (atomically).")
@json_option
@progress_flag
@storage_option_flag
@click.option("--dst-storage-option", "dst_storage_option", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option of the destination (default: those of the source).")
@click.pass_context
def convert(ctx: click.Context, src: str, dst: str, box: Box | None, lossy: bool, compress: tuple[str, ...],
            compression_seed: int | None, keep_bits: int | None, overwrite: bool, as_json: bool,
            progress: bool | None, storage_option: tuple[str, ...], dst_storage_option: tuple[str, ...]) -> None:
    """Write SRC (FITS, JSON or Zarr archive) as DST: FITS (.fits), JSON (.json, .json.gz) or Zarr (.zarr)."""
    import time

    from .archives.registry import format_for_destination
    from .errors import ValidationError
    from .fetch import fetch_stats
    from .summary import box_json, fetched_json

    where = f"convert {shown_url(src)} -> {shown_url(dst)}"
    try:
        fmt = format_for_destination(dst)
    except ValidationError as exc:
        raise click.ClickException(f"{where}: {exc}") from None
    if fmt.name != "fits" and (lossy or compress or compression_seed is not None):
        raise click.ClickException(
            f"{where}: --lossy/--compress/--seed are FITS compression options; "
            f"drop them for a {fmt.description} archive" + (" (Zarr: --keep-bits N)" if fmt.name == "zarr" else "")
        )
    if keep_bits is not None and fmt.name != "zarr":
        raise click.ClickException(f"{where}: --keep-bits applies to Zarr archives only")
    kwargs = _compression_args(ctx, lossy, compress)
    src_options = storage_options_of(ctx, storage_option)
    dst_options = storage_options_of(ctx, dst_storage_option, "--dst-storage-option") or src_options
    coadd, at_open = open_counted(src, storage_options=src_options, bbox=box)
    if box is not None:
        coadd = coadd[box]
    shown = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()
    with fetch_stats() as reading:
        if fmt.name == "zarr":
            url = coadd.write_zarr(dst, storage_options=dst_options, overwrite=overwrite, keep_bits=keep_bits)
        elif fmt.name == "json":
            url = coadd.write_json(dst, storage_options=dst_options, overwrite=overwrite)
        else:
            url = coadd.write_fits(dst, compression_seed=compression_seed, storage_options=dst_options,
                                   overwrite=overwrite, progress=shown, **kwargs)
    elapsed = time.perf_counter() - start
    if as_json:
        echo_json({"source": shown_url(src), "destination": shown_url(url), "bbox": box_json(coadd.bbox),
                    "seconds": round(elapsed, 3),
                    "fetched": {"open": fetched_json(at_open), "write": fetched_json(reading)}})
    else:
        click.echo(f"wrote {shown_url(url)}: {coadd.bbox} in {elapsed:.2f} s "
                   f"(read {at_open.requests + reading.requests} requests, {at_open.nbytes + reading.nbytes:,} bytes)")
