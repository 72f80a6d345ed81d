"""Tract commands of the command line: ``index`` (and the other whole-tract commands).

Registered on :data:`cellcoadd_dask.cli.cli` when that module is imported.
"""

from __future__ import annotations

import time
from typing import Any

import click

from .cli import cli, echo_json, json_option, storage_option_flag, storage_options_of
from .errors import shown_url

__all__ = ["index", "open_urls", "pyramid"]


@cli.command()
@click.argument("urls", nargs=-1, required=True)
@click.option("--output", "-o", "output", required=True, metavar="INDEX",
              help="Where to write the index (local path or fsspec URL; patches beside it are stored relative).")
@json_option
@storage_option_flag
@click.pass_context
def index(ctx: click.Context, urls: tuple[str, ...], output: str, as_json: bool,
          storage_option: tuple[str, ...]) -> None:
    """Write the tract index of the patch files URLS: open_tract(INDEX) then opens the tract in 2 requests."""
    from .fetch import fetch_stats
    from .tract_index import write_tract_index

    options = storage_options_of(ctx, storage_option)
    start = time.perf_counter()
    with fetch_stats() as stats:
        written = write_tract_index(list(urls), output, storage_options=options)
    elapsed = time.perf_counter() - start
    summary: dict[str, Any] = {"index": shown_url(written), "patches": len(urls), "seconds": round(elapsed, 3),
                               "fetched": {"requests": stats.requests, "bytes": stats.nbytes}}
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"wrote {shown_url(written)}: {len(urls)} patches in {elapsed:.2f} s "
                   f"(read {stats.requests} requests, {stats.nbytes:,} bytes)")


def open_urls(urls: tuple[str, ...], storage_options: dict[str, Any] | None) -> Any:
    """The Dataset of URLS: one coadd file's view, or the tract of several files (or of an index)."""
    from .archives.registry import suffix_format
    from .fetch import normalize_url
    from .open import open_coadd
    from .tract import open_tract

    if len(urls) == 1 and suffix_format(normalize_url(urls[0])) is not None:
        return open_coadd(urls[0], storage_options=storage_options).to_xarray()
    return open_tract(urls[0] if len(urls) == 1 else list(urls), storage_options=storage_options)


@cli.command()
@click.argument("urls", nargs=-1, required=True)
@click.option("--output", "-o", "output", required=True, metavar="PYRAMID",
              help="Where to write the pyramid (a directory or object-store prefix, .zarr customary).")
@click.option("--levels", type=click.IntRange(1, 30), default=None,
              help="Number of levels (factors 1, 2, 4, ...); default down to about 1024 pixels.")
@json_option
@storage_option_flag
@click.pass_context
def pyramid(ctx: click.Context, urls: tuple[str, ...], output: str, levels: int | None, as_json: bool,
            storage_option: tuple[str, ...]) -> None:
    """Write the OME-Zarr overview pyramid of a coadd file, or of the tract of several files or of an index."""
    from .fetch import fetch_stats
    from .pyramid import write_pyramid

    options = storage_options_of(ctx, storage_option)
    start = time.perf_counter()
    with fetch_stats() as stats:
        ds = open_urls(urls, options)
        written = write_pyramid(ds, output, levels=levels, storage_options=options)
    elapsed = time.perf_counter() - start
    summary: dict[str, Any] = {"pyramid": shown_url(written), "shape": [ds.sizes["y"], ds.sizes["x"]],
                               "seconds": round(elapsed, 3),
                               "fetched": {"requests": stats.requests, "bytes": stats.nbytes}}
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"wrote {shown_url(written)} of a {ds.sizes['y']} x {ds.sizes['x']} px mosaic in {elapsed:.2f} s "
                   f"(read {stats.requests} requests, {stats.nbytes:,} bytes)")
