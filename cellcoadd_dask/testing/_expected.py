"""What lsst-images reads back from a corpus file: the values a conforming reader must reproduce.

Sums are float64 sums over finite pixels; boxes are absolute (tract) pixels, ``(y, x)``, half-open;
"memory bit n" is a plane's position in the mask schema (reserved placeholders count).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["describe_coadd", "describe_file", "describe_fits_layout"]


def _finite_sum(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.sum(a[np.isfinite(a)]))


def _box(box: Any) -> dict[str, list[int]]:
    return {"y": [int(box.y.start), int(box.y.stop)], "x": [int(box.x.start), int(box.x.stop)]}


def _optional(coadd: Any, attribute: str) -> Any:
    try:
        return getattr(coadd, attribute)
    except AttributeError:
        return None


def describe_coadd(coadd: Any, pixels: Sequence[tuple[int, int]], metadata_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Collect the values of an lsst-images ``CellCoadd`` that a reader must reproduce.

    Parameters
    ----------
    coadd
        An ``lsst.images.cells.CellCoadd`` read back by lsst-images.
    pixels
        Absolute ``(y, x)`` positions whose values are recorded for every plane.
    metadata_keys
        Metadata entries to record.
    """
    schema = coadd.mask.schema
    psf = coadd.psf
    out: dict[str, Any] = {
        "bbox": _box(coadd.bbox),
        "grid_bbox": _box(coadd.grid.bbox),
        "cell_shape": {"y": int(coadd.grid.cell_shape.y), "x": int(coadd.grid.cell_shape.x)},
        "bounds_bbox": _box(coadd.bounds.bbox),
        "missing_cells": [{"i": c.i, "j": c.j} for c in sorted(coadd.bounds.missing)],
        "cells_with_data": [{"i": c.i, "j": c.j} for c in coadd.bounds.cell_indices()],
        "unit": coadd.unit.to_string("vounit") if coadd.unit is not None else None,
        "variance_unit": coadd.variance.unit.to_string("vounit"),
        "band": coadd.band,
        "skymap": coadd.skymap,
        "tract": coadd.tract,
        "mask_planes": [
            None
            if plane is None
            else {
                "name": plane.name,
                "memory_bit": n,
                "memory_byte_index": int(schema.bit(plane.name).index),
                "memory_bitmask": int(schema.bit(plane.name).mask),
            }
            for n, plane in enumerate(schema)
        ],
        "mask_dtype": str(schema.dtype),
        "mask_size": schema.mask_size,
        "mask_fraction_names": list(coadd.mask_fractions),
        "n_noise_realizations": len(coadd.noise_realizations),
        "psf_array_shape": [
            psf.bounds.subgrid_size.i,
            psf.bounds.subgrid_size.j,
            psf.kernel_bbox.y.size,
            psf.kernel_bbox.x.size,
        ],
        "psf_kernel_bbox": str(psf.kernel_bbox),
        "aperture_correction_names": sorted(coadd.aperture_corrections),
        "metadata": {k: coadd.metadata[k] for k in metadata_keys if k in coadd.metadata},
    }
    patch = _optional(coadd, "patch")
    out["patch"] = (
        None
        if patch is None
        else {"id": patch.id, "index": {"y": patch.index.y, "x": patch.index.x}, "inner_bbox": str(patch.inner_bbox)}
    )
    provenance = _optional(coadd, "provenance")
    out["provenance"] = (
        None
        if provenance is None
        else {"n_inputs": len(provenance.inputs), "n_contributions": len(provenance.contributions)}
    )
    planes = {"image": coadd.image.array, "variance": coadd.variance.array}
    planes.update({f"mask_fractions/{k}": v.array for k, v in coadd.mask_fractions.items()})
    planes.update({f"noise_realizations/{n}": v.array for n, v in enumerate(coadd.noise_realizations)})
    out["finite_sums_float64"] = {k: _finite_sum(v) for k, v in planes.items()}
    out["nonfinite_counts"] = {k: int(np.count_nonzero(~np.isfinite(v))) for k, v in planes.items()}
    out["mask_plane_counts"] = {name: int(np.count_nonzero(coadd.mask.get(name))) for name in schema.names}
    out["psf_sum_over_cells_with_data_float64"] = _finite_sum(
        np.stack([psf[c].array for c in coadd.bounds.cell_indices()])
    )
    out["image_finite_sum_per_cell_float64"] = {
        f"{c.i},{c.j}": _finite_sum(coadd.image[coadd.grid.bbox_of(c).intersection(coadd.bbox)].array)
        for c in coadd.bounds.cell_indices()
    }
    sky = []
    for y, x in [(coadd.bbox.y.start, coadd.bbox.x.start), (coadd.bbox.y.max, coadd.bbox.x.max)]:
        coord = coadd.sky_projection.pixel_to_sky(x=float(x), y=float(y))
        sky.append({"y": int(y), "x": int(x), "ra_deg": float(coord.ra.deg), "dec_deg": float(coord.dec.deg)})
    out["pixel_to_sky"] = sky
    values = []
    for y, x in pixels:
        local = (y - coadd.bbox.y.start, x - coadd.bbox.x.start)
        entry: dict[str, Any] = {"y": y, "x": x}
        for k, v in planes.items():
            value = float(v[local])
            entry[k] = value if np.isfinite(value) else str(value)
        entry["mask_planes_set"] = schema.interpret(coadd.mask.array[local])
        values.append(entry)
    out["pixels"] = values
    return out


def describe_fits_layout(path: Path) -> dict[str, Any]:
    """Record the primary cards, the HDU order and the compression cards of a FITS file (astropy's view)."""
    import astropy.io.fits

    out: dict[str, Any] = {"hdus": [], "disk_mask_planes": []}
    with astropy.io.fits.open(path, disable_image_compression=True) as hdu_list:
        primary = hdu_list[0].header
        out["primary"] = {k: primary[k] for k in ("FMTVER", "INDXADDR", "INDXSIZE", "JSONADDR", "JSONSIZE", "DATAMODL")}
        for hdu in hdu_list[1:]:
            header = hdu.header
            entry = {
                "EXTNAME": header.get("EXTNAME"),
                "EXTVER": header.get("EXTVER", 1),
                "XTENSION": header["XTENSION"],
            }
            for key in ("ZIMAGE", "ZCMPTYPE", "ZBITPIX", "ZTILE1", "ZTILE2", "ZQUANTIZ", "ZDITHER0", "BITPIX"):
                if key in header:
                    entry[key] = header[key]
            if header.get("ZIMAGE"):
                entry["ZNAXIS"] = [header[f"ZNAXIS{n}"] for n in range(1, header["ZNAXIS"] + 1)]
                entry["columns"] = list(hdu.columns.names)
                entry["n_tiles"] = header["NAXIS2"]
            out["hdus"].append(entry)
            if header.get("EXTNAME") == "MASK":
                for card in header.cards:
                    if card.keyword.startswith("MSKN"):
                        n = int(card.keyword[4:])
                        out["disk_mask_planes"].append(
                            {
                                "name": card.value,
                                "EXTVER": header.get("EXTVER", 1),
                                "bit": n,
                                "MSKM": header[f"MSKM{n:04d}"],
                            }
                        )
    return out


def describe_file(path: Path, pixels: Sequence[tuple[int, int]], metadata_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``path`` with lsst-images and describe it (plus its FITS layout for a FITS file)."""
    from lsst.images.cells import CellCoadd
    from lsst.images.serialization import read_archive

    out = describe_coadd(read_archive(path, CellCoadd), pixels, metadata_keys)
    if path.suffix == ".fits":
        out["fits_layout"] = describe_fits_layout(path)
    return out
