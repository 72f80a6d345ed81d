"""The archives of the conformance suite: one `Archive` entry per kind of archive.

Adding an archive to the suite is adding one entry to `ARCHIVES`: how to produce it from a
reference FITS file (written by lsst-images) into a directory, its suffix, whether it is a
store (a directory of objects) or one object, how our package writes it (if it is a write
target), what lsst-images read it must equal, what opening and reading one cell may cost, and
how to damage a copy of it.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from oracle import hdu_bytes
from paths import REFERENCE_DIR

import cellcoadd_dask as ccd

__all__ = ["ARCHIVES", "CELLS", "SMALL", "Archive", "archive_named", "oracle_path", "writable_archives"]

SMALL = "min_default.fits"
"""The source file of most tests: 12x12 px in 2x2 cells of 6 px (one missing), every kind of field."""
CELLS = "synthetic_3x3.fits"
"""The source file of the laziness tests: 3x3 cells of 150 px (one missing), every kind of plane."""

Writer = Callable[[ccd.CellCoadd, str], str]
Damage = Callable[[Path], None]

CORPUS_JSON = {"min_default.fits": "cell_coadd_min_as_shipped.json", "synthetic_3x3.fits": "synthetic_3x3_cutout.json"}
"""The corpus JSON archive lsst-images wrote of each source FITS file (the same coadd, or a cut-out of it)."""


@dataclasses.dataclass(frozen=True)
class Archive:
    """One kind of archive the suite runs over.

    Attributes
    ----------
    name
        Test id.
    suffix
        File-name suffix of the archive (``.fits``, ``.json.gz``, ``.zarr`` ...).
    store
        Whether the archive is a directory of objects (a store) rather than one object.
    produce
        ``produce(source, directory) -> path``: make the archive from the source FITS file
        (a corpus file written by lsst-images) in ``directory``.
    write
        ``write(coadd, url) -> url``: how our package writes this kind of archive; `None` for an
        archive that is not a write target (written by lsst-images, or a read-only layout).
    oracle
        ``oracle(source) -> path``: the file whose lsst-images read the archive must equal.
    open_requests
        Most requests opening may make; `None` when opening reads the whole object.
    cell_requests
        Most requests reading one cell of the image may make after opening (0: nothing).
    damage
        Ways to damage a local copy of the archive, by name: each must make reading it fail with
        a `ccd.CellCoaddError` naming its URL.
    files
        The reference files this archive is made from in the tests that run over several.
    """

    name: str
    suffix: str
    store: bool
    produce: Callable[[Path, Path], Path]
    write: Writer | None
    oracle: Callable[[Path], Path]
    open_requests: int | None
    cell_requests: int
    damage: Mapping[str, Damage]
    files: tuple[str, ...] = (SMALL, CELLS)

    @property
    def reads_whole_at_open(self) -> bool:
        """Whether opening reads the whole archive (and nothing is read after)."""
        return self.open_requests is None

    def __str__(self) -> str:
        return self.name


# ----------------------------------------------------------------------------- producing


def _same(source: Path) -> Path:
    return source


def _corpus_json(source: Path) -> Path:
    return REFERENCE_DIR / CORPUS_JSON[source.name]


def _copy_corpus_fits(source: Path, directory: Path) -> Path:
    return Path(shutil.copy(source, directory / source.name))


def _copy_corpus_json(source: Path, directory: Path) -> Path:
    json_path = _corpus_json(source)
    return Path(shutil.copy(json_path, directory / json_path.name))


def _written(write: Writer, suffix: str) -> Callable[[Path, Path], Path]:
    def produce(source: Path, directory: Path) -> Path:
        target = directory / (source.name.removesuffix(".fits") + suffix)
        return Path(write(ccd.open_coadd(source), str(target)))

    return produce


def write_fits(coadd: ccd.CellCoadd, url: str) -> str:
    """Our FITS writer, default options."""
    return coadd.write_fits(url)


def write_json(coadd: ccd.CellCoadd, url: str) -> str:
    """Our JSON writer (gzip-compressed for a ``.json.gz`` URL)."""
    return coadd.write_json(url)


def write_zarr_layout_1(coadd: ccd.CellCoadd, url: str) -> str:
    """The Zarr writer in its first layout (one object per chunk, the tree in the root attributes)."""
    from cellcoadd_dask.archives.zarr.writer import write_zarr

    return write_zarr(coadd, url, layout=1)


def write_zarr(coadd: ccd.CellCoadd, url: str) -> str:
    """Our Zarr writer, default layout (2)."""
    return coadd.write_zarr(url)


# ----------------------------------------------------------------------------- damaging


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 5])


def _scramble_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _scramble_fits_tile(path: Path) -> None:
    """Overwrite the first image tile (gzip data) of a FITS file with garbage of the same length."""
    tile = next(t for t in hdu_bytes(path, "IMAGE").tiles if t is not None)
    data = bytearray(path.read_bytes())
    data[tile[0] : tile[1]] = b"\xa5" * (tile[1] - tile[0])
    path.write_bytes(bytes(data))


def _scramble_fits_tree(path: Path) -> None:
    """Garbage inside the JSON HDU's data (the ``cell_coadd`` tree)."""
    start, _ = hdu_bytes(path, "JSON").table
    data = bytearray(path.read_bytes())
    data[start + 100 : start + 164] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _chunk_files(path: Path, array: str = "image") -> list[Path]:
    chunks = sorted(p for p in (path / array / "c").rglob("*") if p.is_file())
    assert chunks, f"{path} has no chunk of {array}"
    return chunks


def _scramble_chunk(path: Path) -> None:
    chunk = _chunk_files(path)[0]
    chunk.write_bytes(b"\xa5" * chunk.stat().st_size)


def _delete_chunk(path: Path) -> None:
    _chunk_files(path)[0].unlink()


def _scramble_tree_layout_2(path: Path) -> None:
    """Garbage in the chunk of the ``lsst_json`` array (the ``cell_coadd`` tree)."""
    for chunk in _chunk_files(path, "lsst_json"):
        chunk.write_bytes(b"\xa5" * chunk.stat().st_size)


def _delete_tree_layout_2(path: Path) -> None:
    for chunk in _chunk_files(path, "lsst_json"):
        chunk.unlink()


def _scramble_root_metadata(path: Path) -> None:
    """The root ``zarr.json`` (layout 1 holds the tree in its attributes) cut in half."""
    _truncate(path / "zarr.json")


SINGLE_OBJECT_DAMAGE: dict[str, Damage] = {"truncated": _truncate, "scrambled": _scramble_middle}
FITS_DAMAGE: dict[str, Damage] = {"truncated": _truncate, "scrambled tile": _scramble_fits_tile,
                                  "scrambled tree": _scramble_fits_tree}
ZARR_DAMAGE: dict[str, Damage] = {"scrambled chunk": _scramble_chunk, "deleted chunk": _delete_chunk}

# ----------------------------------------------------------------------------- the archives

ARCHIVES: tuple[Archive, ...] = (
    Archive("fits-lsst", ".fits", False, _copy_corpus_fits, None, _same, 2, 2, FITS_DAMAGE),
    Archive("fits", ".fits", False, _written(write_fits, ".fits"), write_fits, _same, 2, 2, FITS_DAMAGE),
    Archive("json-lsst", ".json", False, _copy_corpus_json, None, _corpus_json, None, 0, SINGLE_OBJECT_DAMAGE),
    # Our JSON archives hold every array inline, for small coadds: not the 450x450 px one
    # (8.5 MB of JSON, seconds to write); the corpus JSON above is a cut-out of it.
    Archive("json", ".json", False, _written(write_json, ".json"), write_json, _same, None, 0, SINGLE_OBJECT_DAMAGE,
            (SMALL,)),
    Archive("json-gz", ".json.gz", False, _written(write_json, ".json.gz"), write_json, _same, None, 0,
            SINGLE_OBJECT_DAMAGE, (SMALL,)),
    # Layout 1 is read-only in spirit: still read, never a write target.
    Archive("zarr-1", ".zarr", True, _written(write_zarr_layout_1, ".zarr"), None, _same, 2, 2,
            {**ZARR_DAMAGE, "scrambled tree": _scramble_root_metadata}),
    Archive("zarr-2", ".zarr", True, _written(write_zarr, ".zarr"), write_zarr, _same, 2, 2,
            {**ZARR_DAMAGE, "scrambled tree": _scramble_tree_layout_2, "deleted tree": _delete_tree_layout_2,
             "scrambled root": _scramble_root_metadata}),
)
"""Every archive of the suite."""


def archive_named(name: str) -> Archive:
    """The entry of `ARCHIVES` called ``name``."""
    return next(a for a in ARCHIVES if a.name == name)


def writable_archives() -> tuple[Archive, ...]:
    """The archives our package writes (the round-trip targets)."""
    return tuple(a for a in ARCHIVES if a.write is not None)


def oracle_path(archive: Archive, name: str = SMALL) -> str:
    """The file whose lsst-images read must equal ``archive`` made from the reference file ``name``."""
    return str(archive.oracle(REFERENCE_DIR / name))
