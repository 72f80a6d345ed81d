"""Tract commands of the command line: ``index`` (and the other whole-tract commands).

Registered on :data:`cellcoadd_dask.cli.cli` when that module is imported.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from .cli import (
    BoxType,
    check_plane,
    cli,
    echo_json,
    json_option,
    open_counted,
    progress_bar,
    progress_flag,
    storage_option_flag,
    storage_options_of,
)
from .errors import shown_url
from .geom import Box

__all__ = ["hips", "index", "open_urls", "plot", "pyramid"]


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


@cli.command()
@click.argument("urls", nargs=-1, required=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output PNG file.")
@click.option("--plane", default="image", show_default=True,
              help="image, variance, mask_fractions/NAME, noise_realizations/N, or a mask plane (NO_DATA ...).")
@click.option("--box", type=BoxType(), default=None, help="Only this absolute box: y0:y1,x0:x1.")
@click.option("--overlay", multiple=True, metavar="PLANE", help="Mask plane drawn in colour (repeatable).")
@click.option("--stretch", type=click.Choice(["asinh", "zscale", "linear"]), default="asinh", show_default=True)
@click.option("--pyramid", default=None, metavar="URL", help="Read the overview from this pyramid of the data.")
@click.option("--max-pixels", type=click.IntRange(min=16), default=2048, show_default=True,
              help="Largest number of data pixels along a side (the resolution read).")
@progress_flag
@storage_option_flag
@click.pass_context
def plot(ctx: click.Context, urls: tuple[str, ...], output: Path, plane: str, box: Box | None,
         overlay: tuple[str, ...], stretch: str, pyramid: str | None, max_pixels: int, progress: bool | None,
         storage_option: tuple[str, ...]) -> None:
    """Write a PNG of one coadd file (quick look), or of a tract (several files, or an index) on sky axes.

    One coadd file without --overlay, --pyramid or a mask plane gives the quick look: asinh/zscale
    stretch, cell grid, missing cells hatched.  Otherwise the figure has right ascension and
    declination axes, the chosen stretch, mask planes overlaid, patch and cell grids, missing
    patches hatched, and reads only the resolution it shows.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:  # pragma: no cover - matplotlib is a test dependency
        raise click.ClickException(f"{exc}: pip install 'cellcoadd-dask[plot]'") from None
    from .archives.registry import suffix_format
    from .fetch import normalize_url

    options = storage_options_of(ctx, storage_option)
    single = len(urls) == 1 and suffix_format(normalize_url(urls[0])) is not None
    quick = (single and not overlay and pyramid is None and stretch == "asinh"
             and (plane in ("image", "variance") or "/" in plane))
    if quick:
        from .plot import save_quicklook

        coadd, _ = open_counted(urls[0], storage_options=options, bbox=box)
        if box is not None:
            coadd = coadd[box]
        check_plane(coadd, plane)
        with progress_bar(progress):
            path = save_quicklook(coadd, output, plane=plane, max_pixels=max_pixels)
        click.echo(f"wrote {path}")
        return
    ds = open_urls(urls, options)
    if box is not None:
        ds = ds.sel(y=slice(box.y.start, box.y.stop - 1), x=slice(box.x.start, box.x.stop - 1))
    variable = plane.replace("/", "-") if "/" in plane else plane
    if "/" in plane:
        kind, name = plane.split("/", 1)
        axis = "fraction" if kind == "mask_fractions" else "realization"
        index = name if axis == "fraction" else int(name)
        ds = ds.assign({variable: ds[kind].sel({axis: index})})
    with progress_bar(progress):
        fig = ds.cellcoadd.plot(variable, stretch=stretch, overlay=list(overlay), pixels=max_pixels,
                                pyramid=pyramid, storage_options=options)
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, format="png", dpi=fig.dpi)
    click.echo(f"wrote {output}")


@cli.command()
@click.argument("urls", nargs=-1, required=True)
@click.option("--output", "-o", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The HiPS directory to create.")
@click.option("--plane", default="image", show_default=True, help="The variable exported (image, variance ...).")
@click.option("--order", type=click.IntRange(0, 29), default=None, help="HEALPix order of the deepest tiles.")
@click.option("--max-pixels", type=click.IntRange(min=16), default=None,
              help="Read at most this many pixels along a side (default: full resolution).")
@click.option("--pyramid", default=None, metavar="URL", help="Read that resolution from this pyramid.")
@progress_flag
@storage_option_flag
@click.pass_context
def hips(ctx: click.Context, urls: tuple[str, ...], output: Path, plane: str, order: int | None,
         max_pixels: int | None, pyramid: str | None, progress: bool | None, storage_option: tuple[str, ...]) -> None:
    """Export a coadd file, or the tract of several files or of an index, as a HiPS survey (needs reproject)."""
    from .hips import write_hips

    options = storage_options_of(ctx, storage_option)
    ds = open_urls(urls, options)
    try:
        with progress_bar(progress):
            written = write_hips(ds, output, variable=plane, level=order, pixels=max_pixels, pyramid=pyramid,
                                 storage_options=options)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {written}")
