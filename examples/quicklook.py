"""Notebook-style tour: open a coadd lazily, cut it by pixel box and by sky position, plot it.

Run as ``python examples/quicklook.py [URL]`` (default: the coadd shipped with the package);
in a notebook, run the cells one by one and let the figures display themselves.
"""

# %% Open lazily: only headers, the JSON tree and the tile tables are read.
import sys
from pathlib import Path

import astropy.units as u

import cellcoadd_dask as ccd
from cellcoadd_dask.demo import demo_file
from cellcoadd_dask.fetch import fetch_stats
from cellcoadd_dask.plot import quicklook_figure
from cellcoadd_dask.summary import cell_statistics

output = Path("quicklook-output")
output.mkdir(exist_ok=True)

with demo_file() as shipped:
    url = sys.argv[1] if len(sys.argv) > 1 else str(shipped)
    with fetch_stats() as fetched:
        coadd = ccd.open_coadd(url)
    print(coadd, "opened with", fetched.requests, "requests,", fetched.nbytes, "bytes")
    print("cells of", coadd.grid.cell_shape, "missing:", sorted(coadd.bounds.missing))
    print(coadd.image.array)  # a dask array chunked on cell edges

    # %% Slice by absolute (tract) pixel coordinates: still lazy, reads only the cells it touches.
    y0, x0 = coadd.bbox.start
    corner = coadd.absolute[y0 : y0 + 200, x0 : x0 + 200]
    with fetch_stats() as fetched:
        mean = float(corner.image.array.mean().compute())
    print(f"{corner.bbox}: mean {mean:.3f} {coadd.unit}, read {fetched.nbytes} bytes")

    # %% Slice by sky position: a 10 arcsec circle around the centre of the coadd.
    centre_y = (coadd.bbox.y.start + coadd.bbox.y.stop) / 2
    centre_x = (coadd.bbox.x.start + coadd.bbox.x.stop) / 2
    centre = coadd.projection.pixel_to_sky(x=centre_x, y=centre_y)
    print("centre:", centre.to_string("hmsdms"))
    around = coadd[coadd.bbox_from_sky_circle(centre, 10 * u.arcsec)]
    print("10 arcsec around the centre:", around.bbox, "cells", list(around.bounds.cell_indices()))

    # %% Per-cell statistics (one dask task per chunk) and the PSF of one cell.
    for row in cell_statistics(coadd)[:3]:
        print(f"cell ({row['i']},{row['j']}): mean {row['mean']:.3f}, std {row['std']:.3f}")
    cell = next(iter(coadd.bounds.cell_indices()))
    print("PSF of", cell, "sums to", float(coadd.psf[cell].array.sum().compute()))

    # %% Plot: in a notebook the figure displays itself; here it is saved.
    quicklook_figure(coadd).savefig(output / "coadd.png")
    quicklook_figure(around, plane="variance").savefig(output / "around-centre-variance.png")
    print("wrote", sorted(str(p) for p in output.glob("*.png")))
