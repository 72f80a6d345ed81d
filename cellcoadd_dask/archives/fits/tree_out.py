"""Build the ``cell_coadd`` 1.0.0 JSON tree of a coadd being written to FITS.

Keys come in the order lsst-images writes them (spec 4.3); every schema-bearing node is
stamped with ``schema_version``, ``min_read_version`` and ``schema_url``.  Fields of a stored
tree that this version does not interpret are merged back in by :func:`merge_unknown`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..names import SCHEMA_NAME, SCHEMA_URL_PREFIX, SCHEMA_VERSION

if TYPE_CHECKING:
    from ...coadd import CellCoadd
    from ...image import Image

__all__ = ["build_tree", "merge_unknown", "stamped"]



def stamped(name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` between the version stamps of schema ``name``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "min_read_version": 1,
        **body,
        "schema_url": f"{SCHEMA_URL_PREFIX}{name}-{SCHEMA_VERSION}",
    }


def _array_ref(source: str, shape: Any, dtype: Any) -> dict[str, Any]:
    import numpy as np

    return {"source": source, "shape": [int(n) for n in shape], "datatype": np.dtype(dtype).name, "byteorder": "big"}


def _image(image: Image, source: str) -> dict[str, Any]:
    data: dict[str, Any] = _array_ref(source, image.array.shape, image.dtype)
    if image.unit is not None:
        data = {"value": data, "unit": image.unit.to_string("vounit")}
    return stamped("image", {"data": data, "yx0": [int(image.bbox.y.start), int(image.bbox.x.start)]})


def build_tree(coadd: CellCoadd, sources: Mapping[str, str], subtrees: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON tree of ``coadd`` with arrays at ``sources`` (plane key -> ``fits:`` source).

    Parameters
    ----------
    coadd
        The coadd.
    sources
        ``"image"``, ``"variance"``, ``"mask/<k>"``, ``"mask_fractions/<name>"``,
        ``"noise_realizations/<n>"``, ``"psf"`` -> source string.
    subtrees
        Ready ``"aperture_corrections"`` and ``"provenance"`` subtrees (or ``None``).
    """
    mask = coadd.mask
    schema = mask.schema
    mask_data = [
        _array_ref(sources[f"mask/{k}"], mask.array.shape[:2], "int32") for k in range(schema.n_disk_arrays)
    ]
    planes = [None if p is None else {"name": p.name, "description": p.description} for p in schema]
    body: dict[str, Any] = {}
    if coadd.metadata:
        body["metadata"] = copy.deepcopy(dict(coadd.metadata))
    body["image"] = _image(coadd.image, sources["image"])
    body["mask"] = stamped("mask", {
        "data": mask_data,
        "yx0": [int(mask.bbox.y.start), int(mask.bbox.x.start)],
        "planes": planes,
        "dtype": schema.dtype.name,
    })
    body["variance"] = _image(coadd.variance, sources["variance"])
    body["sky_projection"] = coadd.projection.to_json()
    body["mask_fractions"] = {
        name: _image(image, sources[f"mask_fractions/{name}"]) for name, image in coadd.mask_fractions.items()
    }
    body["noise_realizations"] = [
        _image(image, sources[f"noise_realizations/{n}"]) for n, image in enumerate(coadd.noise_realizations)
    ]
    body["band"] = coadd.band
    psf = coadd.psf
    body["psf"] = stamped("cell_psf", {
        "array": _array_ref(sources["psf"], psf.array.shape, psf.array.dtype),
        "bounds": psf.bounds.to_json(),
    })
    body["aperture_corrections"] = subtrees.get("aperture_corrections")
    body["patch"] = coadd._patch.to_json() if coadd._patch is not None else None
    body["provenance"] = subtrees.get("provenance")
    backgrounds = coadd.backgrounds
    if backgrounds is not None:
        body["backgrounds"] = backgrounds.to_json()
    for key, value in coadd.extra.items():
        if key not in body and key not in ("schema_version", "min_read_version", "schema_url"):
            body[key] = copy.deepcopy(value)
    return stamped(SCHEMA_NAME, body)


def merge_unknown(ours: Any, stored: Any) -> Any:
    """``ours`` plus the keys of ``stored`` it lacks, recursively (objects by key, lists by position).

    Only keys absent from ``ours`` are taken from ``stored``; values this writer produces
    always win.  Keys written as ``null``/omitted on purpose (``metadata``, the optional
    subtrees) are left out.
    """
    if isinstance(ours, dict) and isinstance(stored, Mapping):
        out = dict(ours)
        schema_url = out.pop("schema_url", None)
        for key, value in stored.items():
            if key in out:
                out[key] = merge_unknown(out[key], value)
            elif key not in _OWNED and key != "schema_url":
                out[key] = copy.deepcopy(value)
        if schema_url is not None:
            out["schema_url"] = schema_url
        return out
    if isinstance(ours, list) and isinstance(stored, list) and len(ours) == len(stored):
        return [merge_unknown(a, b) for a, b in zip(ours, stored, strict=True)]
    return ours


_OWNED = frozenset({"metadata", "aperture_corrections", "provenance", "backgrounds", "fits_approximation", "missing"})
"""Keys this writer decides on its own: never revived from a stored tree when it leaves them out."""
