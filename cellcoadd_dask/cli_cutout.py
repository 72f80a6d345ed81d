"""The ``cutout`` command: a box of a coadd (by pixels or by a sky circle) as a coadd archive or NumPy arrays.

Registered on :data:`cellcoadd_dask.cli.cli` when that module is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .cli import (
    BoxType,
    cli,
    echo_json,
    json_option,
    open_counted,
    progress_bar,
    progress_flag,
    storage_option_flag,
    storage_options_of,
)
from .geom import Box

__all__ = ["cutout"]


@cli.command()
@click.argument("url")
@click.option("--box", type=BoxType(), default=None, help="Absolute box y0:y1,x0:x1 (half-open).")
@click.option("--sky", nargs=3, type=str, default=None, metavar="RA DEC RADIUS",
              help="The box covering a sky circle: RA and Dec in degrees, RADIUS with a unit (10arcsec, 0.5arcmin).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output: .fits (a CellCoadd file lsst-images reads), .zarr, .json, or .npz (NumPy arrays).")
@json_option
@progress_flag
@storage_option_flag
@click.pass_context
def cutout(ctx: click.Context, url: str, box: Box | None, sky: tuple[str, str, str] | None, output: Path,
           as_json: bool, progress: bool | None, storage_option: tuple[str, ...]) -> None:
    """Save a box of a coadd: as a coadd archive (.fits, .zarr, .json: every plane, PSF, tables), or .npz.

    The .npz holds image, variance (float32), mask (y, x, mask_size) in the in-memory bit layout,
    mask_planes (plane name per bit, "" for a reserved bit), bbox (y0, y1, x0, x1), unit.
    """
    from .fetch import fetch_stats
    from .summary import box_json, fetched_json

    if (box is None) == (sky is None):
        raise click.UsageError("give one of --box or --sky RA DEC RADIUS")
    options = storage_options_of(ctx, storage_option)
    if sky is not None:
        coadd, at_open = open_counted(url, storage_options=options)
        box = _sky_box(coadd, sky)
    assert box is not None
    coadd, at_open = open_counted(url, storage_options=options, bbox=box) if sky is None else (coadd, at_open)
    sub = coadd[box]
    with fetch_stats() as computing, progress_bar(progress):
        if output.suffix.lower() == ".npz":
            arrays = _save_npz(sub, box, output)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            sub.write(str(output))
            arrays = {}
    if as_json:
        echo_json({"output": str(output), "bbox": box_json(box),
                    "arrays": {k: list(v.shape) for k, v in arrays.items()},
                    "fetched": {"open": fetched_json(at_open), "cutout": fetched_json(computing)}})
    else:
        what = "image, variance, mask" if arrays else "the coadd"
        click.echo(f"wrote {output}: {what} of {box} "
                   f"(read {at_open.requests + computing.requests} requests, "
                   f"{at_open.nbytes + computing.nbytes:,} bytes)")


def _sky_box(coadd: Any, sky: tuple[str, str, str]) -> Box:
    import astropy.units as u

    try:
        ra, dec = float(sky[0]), float(sky[1])
        radius = u.Quantity(sky[2])
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(f"{' '.join(sky)}: {exc}", param_hint="--sky") from None
    if radius.unit.physical_type != "angle":
        raise click.BadParameter(f"radius {sky[2]!r} needs an angle unit (10arcsec, 0.5arcmin)", param_hint="--sky")
    box: Box = coadd.to_xarray().cellcoadd.sel_sky(ra, dec, radius).cellcoadd.bbox
    return box


def _save_npz(sub: Any, box: Box, output: Path) -> dict[str, Any]:
    import dask
    import numpy as np

    image, variance, mask = dask.compute(sub.image.array, sub.variance.array, sub.mask.array)
    arrays = {
        "image": image,
        "variance": variance,
        "mask": mask,
        "mask_planes": np.array(["" if p is None else p.name for p in sub.mask.schema]),
        "bbox": np.array([box.y.start, box.y.stop, box.x.start, box.x.stop], dtype=np.int64),
        "unit": np.array(sub.unit.to_string()),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with partial.open("wb") as stream:
        np.savez_compressed(stream, **arrays)
    os.replace(partial, output)
    return arrays
