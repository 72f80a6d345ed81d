"""Caps on the sizes a file states about itself, checked before anything that size is fetched or allocated.

An archive says how large its parts are (FITS ``JSONSIZE``/``INDXSIZE``, the shape of the Zarr
``lsst_json`` array, a chunk shape, a shard's chunk count).  A reader checks every such size
against the object's real size when it is known, and against a cap from this module, *before*
it fetches or allocates it; a hostile or damaged file then fails fast with a
:class:`LimitExceededError` naming the field and the cap instead of downloading gigabytes.

Every cap is read from dask's configuration at each use (``cellcoadd.limits.<name>``), so::

    dask.config.set({"cellcoadd.limits.tree_bytes": 2**31})

raises one.  The caps and their defaults:

====================  ==========  ==============================================================
``tree_bytes``        256 MiB     the JSON tree: FITS ``JSONSIZE`` (the JSON HDU), the Zarr
                                  ``lsst_json`` array
``index_bytes``       64 MiB      the FITS INDEX HDU (``INDXSIZE``)
``json_bytes``        1 GiB       a JSON archive (which holds every array inline), decompressed
``metadata_bytes``    64 MiB      one Zarr ``zarr.json`` document (a group's, with its attributes
                                  and consolidated metadata, or an array's), checked before it is
                                  read or parsed
``chunk_bytes``       256 MiB     one decoded Zarr chunk (its shape times the item size), a Zarr
                                  array read whole (table columns, background arrays), and (plus
                                  :data:`~cellcoadd_dask.limits.CHUNK_OVERHEAD`) one encoded chunk before it is fetched
``shard_chunks``      1048576     chunks per Zarr shard (rows of its index: 16 bytes each)
====================  ==========  ==============================================================
"""

from __future__ import annotations

from .errors import ArchiveFormatError

__all__ = ["CHUNK_OVERHEAD", "DEFAULTS", "LimitExceededError", "check", "limit"]

CHUNK_OVERHEAD = 1 << 20
"""Bytes an *encoded* chunk may hold beyond ``chunk_bytes`` (codec headers of incompressible data)."""

DEFAULTS: dict[str, int] = {
    "tree_bytes": 256 * 1024**2,
    "index_bytes": 64 * 1024**2,
    "json_bytes": 1024**3,
    "metadata_bytes": 64 * 1024**2,
    "chunk_bytes": 256 * 1024**2,
    "shard_chunks": 1 << 20,
}
"""The default of every cap (``cellcoadd.limits.<name>`` in dask's configuration overrides it)."""


class LimitExceededError(ArchiveFormatError):
    """A size a file states is larger than the object holding it or than a configured cap.

    Attributes
    ----------
    field
        What stated the size (``"JSONSIZE"``, ``"lsst_json shape"``, ``"zarr.json"``...).
    cap
        The name of the cap (``cellcoadd.limits.<cap>``), or ``None`` when the size exceeds the object.
    """

    def __init__(self, message: str, *, field: str, cap: str | None = None, url: str | None = None,
                 hdu: str | None = None) -> None:
        self.field = field
        self.cap = cap
        super().__init__(message, url=url, hdu=hdu)


def limit(name: str) -> int:
    """The current value of cap ``name`` (dask config ``cellcoadd.limits.<name>``, else its default).

    Raises
    ------
    KeyError
        If there is no such cap.
    """
    default = DEFAULTS[name]
    import dask

    value = dask.config.get(f"cellcoadd.limits.{name}", None)
    return default if value is None else int(value)


def check(size: int, name: str, *, field: str, url: str | None = None, hdu: str | None = None,
          available: int | None = None) -> int:
    """Return ``size`` if it is within cap ``name`` and within ``available`` bytes, else raise.

    Parameters
    ----------
    size
        The size the file states (bytes, or a count for ``shard_chunks``).
    name
        The cap (a key of :data:`DEFAULTS`).
    field
        What stated it, for the message.
    url, hdu
        Where, for the message.
    available
        What the object really holds there (bytes), if known.

    Raises
    ------
    LimitExceededError
        Naming ``field`` and the cap.
    """
    cap = limit(name)
    if available is not None and size > available:
        raise LimitExceededError(
            f"{field} states {size} bytes but the object holds only {available} there",
            field=field, url=url, hdu=hdu,
        )
    if size > cap:
        raise LimitExceededError(
            f"{field} states {size} {'chunks' if name == 'shard_chunks' else 'bytes'}, more than the cap "
            f"cellcoadd.limits.{name} = {cap}",
            field=field, cap=name, url=url, hdu=hdu,
        )
    return size
