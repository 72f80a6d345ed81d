"""Sky export: a patch or tract as HiPS tiles (:func:`write_hips`), through ``reproject.hips``.

``reproject`` is an optional dependency (``pip install 'cellcoadd-dask[hips]'``).  The plane is
read at the resolution asked for (full resolution by default, or a pyramid level or reduction
by ``pixels``), pixels flagged ``NO_DATA`` become blank (NaN), and it is resampled onto HEALPix
tiles in equatorial coordinates with ``reproject.reproject_interp``.  Besides what reproject
writes (tiles, ``properties``, preview), a ``Moc.fits`` lists the HEALPix cells the survey
covers (IVOA MOC 1.1: one ``UNIQ`` column, ``NUNIQ`` ordering, at the tile order), so clients
such as Aladin know where data is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ValidationError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["INSTALL_HINT", "write_hips", "write_moc"]

INSTALL_HINT = "HiPS export needs reproject: pip install 'cellcoadd-dask[hips]'"
_TILE = re.compile(r"Npix(\d+)\.(fits|png|jpg)$")


def write_moc(directory: str | os.PathLike[str]) -> Path:
    """Write ``Moc.fits`` of a HiPS directory: the cells of its deepest tile order that have a tile.

    Returns
    -------
    pathlib.Path
        The MOC file.
    """
    from astropy.io import fits

    root = Path(directory)
    orders = sorted(int(p.name[len("Norder"):]) for p in root.glob("Norder*") if p.name[len("Norder"):].isdigit())
    if not orders:
        raise ValidationError(f"{root}: no Norder* directory (not a HiPS)")
    order = orders[-1]
    cells = sorted({int(m.group(1)) for p in (root / f"Norder{order}").rglob("Npix*")
                    if (m := _TILE.search(p.name)) is not None})
    uniq = np.array([4 * 4**order + n for n in cells], dtype=np.int64)
    table = fits.BinTableHDU.from_columns([fits.Column(name="UNIQ", format="K", array=uniq)])
    header = table.header
    header["PIXTYPE"] = "HEALPIX"
    header["ORDERING"] = "NUNIQ"
    header["COORDSYS"] = "C"
    header["MOCORDER"] = order
    header["MOCVERS"] = "1.1"
    header["MOCDIM"] = "SPACE"
    header["MOCTOOL"] = "cellcoadd-dask"
    path = root / "Moc.fits"
    table.writeto(path, overwrite=True)
    return path


def write_hips(
    ds: xr.Dataset,
    directory: str | os.PathLike[str],
    *,
    variable: str = "image",
    level: int | None = None,
    pixels: int | None = None,
    pyramid: str | None = None,
    tile_size: int = 256,
    properties: Mapping[str, str] | None = None,
    threads: bool | int = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Path:
    """Write a variable of a patch or tract Dataset as a HiPS survey in ``directory`` (created).

    Parameters
    ----------
    ds
        A patch or tract Dataset (full resolution, coarsened, or a pyramid level).
    directory
        Local directory to create (it must not exist).
    variable
        A variable on ``(y, x)`` (``image`` by default).
    level
        HEALPix order of the deepest tiles (default: reproject's choice from the pixel scale).
    pixels
        Read at most this many pixels along a side (a reduction, or a pyramid level), instead of
        the full resolution.
    pyramid
        A pyramid of the Dataset to read that reduction from.
    tile_size
        Tile side in pixels (even).
    properties
        Extra HiPS ``properties`` (``obs_title`` ... ; defaults name the skymap, tract and band).
    threads
        Passed to ``reproject_to_hips``.
    storage_options
        For ``pyramid``.

    Returns
    -------
    pathlib.Path
        The HiPS directory.

    Raises
    ------
    ImportError
        If reproject is not installed (the message says how to install it).
    ValidationError
        If the variable is not on ``(y, x)``, or the directory exists.
    """
    try:
        from reproject import reproject_interp
        from reproject.hips import reproject_to_hips
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    from .dataset_plot import shown_dataset

    out = Path(directory)
    if out.exists():
        raise ValidationError(f"{out}: the HiPS directory exists already")
    shown = shown_dataset(ds, pixels, pyramid, storage_options) if (pixels or pyramid) else ds
    if variable not in shown.data_vars or shown[variable].dims != ("y", "x"):
        raise ValidationError(f"write_hips: {variable!r} is not a variable on (y, x)")
    values = np.asarray(shown.cellcoadd.valid()[variable].values, dtype=np.float64)
    wcs = shown.cellcoadd.wcs
    title = " ".join(str(v) for v in (ds.attrs.get("skymap", ""), f"tract {ds.attrs.get('tract', '')}",
                                      ds.attrs.get("band", "")) if v)
    props = {"obs_title": f"{title} {variable}".strip(), "creator_did": "ivo://cellcoadd-dask/hips",
             "hips_creator": "cellcoadd-dask", **dict(properties or {})}
    reproject_to_hips((values, wcs), coord_system_out="equatorial", reproject_function=reproject_interp,
                      output_directory=str(out), level=level, tile_size=tile_size, threads=threads,
                      properties=props)
    write_moc(out)
    return out
