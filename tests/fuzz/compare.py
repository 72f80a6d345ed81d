"""What a read of a mutated archive may and may not change, and which tree paths belong to which plane.

The read is ``test_bad_input.read_everything``: every plane, PSF kernel, the aperture corrections,
the provenance row counts, a sky position and the bounding box.  The rule: where the mutation did
not touch pixel bytes, pixel values (planes, PSF kernels, aperture corrections, provenance) equal
the unmutated archive's.  The bounding box and the sky position are metadata and may follow an
edited tree; planes present in only one of the two reads are not compared (a tree key made
unrecognisable drops the item, which readers are allowed to do for forward compatibility).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compare", "plane_of_path", "read_everything", "reference_agrees", "tree_changes"]


def read_everything(path: Path) -> dict[str, Any]:
    """Open and compute everything (``test_bad_input.read_everything``, shared with the FITS tests)."""
    from test_bad_input import read_everything as read

    return read(path)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    same = a == b
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        same |= np.isnan(a.astype(np.float64, copy=False)) & np.isnan(b.astype(np.float64, copy=False))
    return np.asarray(same)


def compare(got: dict[str, Any], base: dict[str, Any], allowed: tuple[tuple[str, Any], ...]) -> list[str]:
    """What differs between two reads outside ``allowed`` (``(plane, region)`` pairs, ``"*"``: all)."""
    if any(plane == "*" for plane, _ in allowed):
        return []
    whole = {plane for plane, region in allowed if region is None}
    out = []
    for key in sorted(set(got) & set(base)):
        value, expected = got[key], base[key]
        plane = key.split("/")[0] if key.startswith("psf_kernel") else key
        if plane in whole or (plane == "psf_kernel" and "psf" in {p for p, _ in allowed}):
            continue
        if key in ("bbox", "sky"):
            continue
        if key == "aperture_corrections":
            if sorted(value) == sorted(expected) and not all(
                    np.array_equal(value[k], expected[k], equal_nan=True) for k in expected):
                out.append("aperture correction values differ")
            continue
        if not isinstance(expected, np.ndarray):
            if value != expected:
                out.append(f"{key}: {value!r} != {expected!r}")
            continue
        value = np.asarray(value)
        if value.shape != expected.shape:
            out.append(f"{key}: shape {value.shape} != {expected.shape}")
            continue
        try:
            same = _same(value, expected)
        except (TypeError, ValueError):
            out.append(f"{key}: dtype {value.dtype} not comparable with {expected.dtype}")
            continue
        for name, region in allowed:
            if name == plane and region is not None:
                same[region] = True
        if not same.all():
            out.append(f"{key}: {np.count_nonzero(~same)} values differ ({value.dtype} vs {expected.dtype})")
    return out


def reference_agrees(path: Path, got: dict[str, Any], problems: list[str]) -> bool:
    """Whether lsst-images reads the mutated FITS or JSON archive to the same values where ours differ.

    A tree edit that changes what stored values mean (a mask plane made reserved, a table left
    without columns) is read as the format says; the reference reader is the judge of that.  If it
    refuses the file, or reads other values, our read was silently wrong.
    """
    import warnings

    name = path.name.lower()
    if not name.endswith((".fits", ".json", ".json.gz")):
        return False  # no reference reader for this archive
    keys = {problem.split(":", 1)[0] for problem in problems}
    if not keys <= {"image", "variance", "mask", "provenance_rows"} | {
            k for k in got if k.startswith(("mask_fractions/", "noise_realizations/", "psf_kernel/"))}:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lsst.images.cells import CellCoadd
            from lsst.images.serialization import read_archive
            from oracle import lsst_planes

            ref = read_archive(str(path), CellCoadd)
            expected: dict[str, Any] = {k.lower(): np.asarray(v) for k, v in lsst_planes(ref).items()}
            if "provenance_rows" in keys:
                expected["provenance_rows"] = (len(ref.provenance.inputs), len(ref.provenance.contributions))
            from lsst.images.cells import CellIJ

            for key in keys:
                if key.startswith("psf_kernel/"):
                    i, j = (int(v) for v in key.split("/", 1)[1].split(","))
                    expected[key] = np.asarray(ref.psf[CellIJ(i=i, j=j)].array)
    except Exception:  # the reference refuses what we read
        return False
    for key in keys:
        value, want = got[key], expected.get(key)
        if isinstance(value, np.ndarray):
            if not isinstance(want, np.ndarray) or value.shape != want.shape or not _same(value, want).all():
                return False
        elif value != want:
            return False
    return True


# ----------------------------------------------------------------------------- trees


def plane_of_path(path: tuple[str | int, ...]) -> str:
    """The key of `read_everything`'s result that a tree path holds the values of."""
    head = str(path[0]) if path else ""
    if head in ("mask_fractions", "noise_realizations") and len(path) > 1:
        return f"{head}/{path[1]}"
    if head == "provenance":
        return "provenance_rows"
    return head


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def tree_changes(old: Any, new: Any, path: tuple[str | int, ...] = ()) -> tuple[set[str], bool]:
    """``(planes, metadata)``: planes whose inline values (scalars in the lists below a ``data`` key, the
    JSON counterpart of pixel bytes) were replaced, and whether anything else changed."""
    if isinstance(old, dict) and isinstance(new, dict):
        planes: set[str] = set()
        meta = set(old) != set(new)
        for key in set(old) & set(new):
            p, m = tree_changes(old[key], new[key], (*path, key))
            planes |= p
            meta |= m
        return planes, meta
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return set(), True
        planes, meta = set(), False
        for n, (a, b) in enumerate(zip(old, new, strict=True)):
            p, m = tree_changes(a, b, (*path, n))
            planes |= p
            meta |= m
        return planes, meta
    if _is_number(old) and _is_number(new) and (old == new or (old != old and new != new)):
        return set(), False
    if type(old) is type(new) and old == new:
        return set(), False
    if "data" in path and isinstance(path[-1], int) and not isinstance(old, dict | list):
        return {plane_of_path(path)}, False  # an inline value of a plane: its "pixel bytes"
    return set(), True


def allowed_for_tree(old: Any, new_text: bytes) -> tuple[tuple[str, Any], ...]:
    """The planes a read may change after the tree ``old`` became ``new_text`` (which may not parse)."""
    import json

    try:
        new = json.loads(new_text)
    except (ValueError, RecursionError):
        return ()
    planes, _ = tree_changes(old, new)
    return tuple((plane, None) for plane in sorted(planes))
