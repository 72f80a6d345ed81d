"""Tract commands of the command line: ``index`` (and the other whole-tract commands).

Registered on :data:`cellcoadd_dask.cli.cli` when that module is imported.
"""

from __future__ import annotations

import time
from typing import Any

import click

from .cli import cli, echo_json, json_option, storage_option_flag, storage_options_of
from .errors import shown_url

__all__ = ["index"]


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
