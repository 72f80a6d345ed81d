"""Coadds reached through a data butler: :func:`~cellcoadd_dask.open_butler` and the patches of a tract.

The butler only says *where* a dataset is (``butler.getURI``: a local file, an object in an
S3 datastore, or the presigned HTTPS URL a client/server butler hands out); the bytes are then
read lazily by the usual readers, so ``bbox=`` reads only the cells it touches and a tract
opens like any list of patch files.  ``lsst.daf.butler`` is needed only by the caller (it made
the ``butler``); nothing here imports it.

For an S3 datastore, the endpoint and credentials ``lsst.resources`` uses (``S3_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, or the per-bucket profiles
``LSST_RESOURCES_S3_PROFILE_<name>`` as ``https://KEY:SECRET@host``) become the fsspec
``storage_options`` unless some are given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import DatasetNotFoundError, ValidationError

if TYPE_CHECKING:
    import xarray as xr

    from .coadd import CellCoadd
    from .geom import Box
    from .lazy import Chunks

__all__ = ["dataset_url", "open_butler", "open_butler_tract", "resolve_ref"]


def _is_ref(value: Any) -> bool:
    return hasattr(value, "datasetType") and hasattr(value, "id") and hasattr(value, "dataId")


def resolve_ref(
    butler: Any,
    ref_or_dataset_type: Any,
    data_id: Mapping[str, Any] | None = None,
    collections: Any = None,
    **data_id_kwargs: Any,
) -> Any:
    """The ``DatasetRef`` given, or the one ``butler.find_dataset`` finds for a dataset type and data ID.

    Raises
    ------
    DatasetNotFoundError
        If the butler has no such dataset (the message names the dataset type and data ID).
    """
    if _is_ref(ref_or_dataset_type):
        if data_id or data_id_kwargs:
            raise ValidationError("open_butler: give a DatasetRef or a dataset type with a data ID, not both")
        return ref_or_dataset_type
    ident = {**dict(data_id or {}), **data_id_kwargs}
    try:
        ref = butler.find_dataset(ref_or_dataset_type, ident or None, collections=collections)
    except LookupError as exc:  # unknown dataset type, dimension or collection
        raise DatasetNotFoundError(f"{_name(ref_or_dataset_type)} {ident}: {exc}") from None
    if ref is None:
        raise DatasetNotFoundError(f"{_name(ref_or_dataset_type)} {ident}: no such dataset in {_collections(butler)}")
    return ref


def _name(dataset_type: Any) -> str:
    return str(getattr(dataset_type, "name", dataset_type))


def _collections(butler: Any) -> str:
    try:
        return f"collections {list(butler.collections.defaults)}"
    except Exception:  # only for the message
        return "the butler's default collections"


def _s3_options(netloc_profile: str | None) -> dict[str, Any]:
    """The fsspec options of the environment ``lsst.resources`` reads for S3."""
    options: dict[str, Any] = {}
    endpoint = os.environ.get("S3_ENDPOINT_URL")
    if netloc_profile:
        profile = os.environ.get(f"LSST_RESOURCES_S3_PROFILE_{netloc_profile}")
        if profile:
            parts = urlsplit(profile)
            endpoint = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            if parts.username:
                options["key"] = parts.username
            if parts.password:
                options["secret"] = parts.password
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def dataset_url(
    butler: Any, ref: Any, storage_options: Mapping[str, Any] | None = None
) -> tuple[str, Mapping[str, Any] | None]:
    """Where ``ref``'s file is (``butler.getURI``) as a URL this package reads, with its storage options.

    ``file`` URIs become local paths; ``s3://[profile@]bucket/key`` becomes ``s3://bucket/key``
    with options from the environment (see the module docstring) unless ``storage_options`` are
    given; ``http(s)`` URLs (presigned by a client/server butler) are used as they are.
    """
    uri = butler.getURI(ref)
    text = str(uri.geturl() if hasattr(uri, "geturl") else uri)
    parts = urlsplit(text)
    scheme = parts.scheme or "file"
    if scheme == "file":
        return (uri.ospath if hasattr(uri, "ospath") else parts.path), storage_options
    if scheme == "s3":
        profile, _, bucket = parts.netloc.rpartition("@")
        url = f"s3://{bucket}{parts.path}"
        return url, (storage_options if storage_options is not None else _s3_options(profile or None))
    return text, storage_options


def open_butler(
    butler: Any,
    ref_or_dataset_type: Any,
    data_id: Mapping[str, Any] | None = None,
    *,
    bbox: Box | None = None,
    chunks: Chunks = "auto",
    storage_options: Mapping[str, Any] | None = None,
    collections: Any = None,
    **data_id_kwargs: Any,
) -> CellCoadd:
    """Open a coadd dataset of a butler repository lazily.

    Parameters
    ----------
    butler
        A ``lsst.daf.butler.Butler`` (direct or client/server).
    ref_or_dataset_type
        A resolved ``DatasetRef``, or a dataset type (name or object) found with ``data_id``.
    data_id, **data_id_kwargs
        The data ID (``skymap``, ``tract``, ``patch``, ``band`` for ``deep_coadd``).
    bbox
        Read only the cells this absolute box touches.
    chunks
        As for :func:`~cellcoadd_dask.open_coadd`.
    storage_options
        fsspec options for the datastore's storage (default for S3: from the environment).
    collections
        Collections to search (default: the butler's).

    Returns
    -------
    CellCoadd
        Opened from the dataset's file (metadata only); ``coadd.butler_dataset.id`` is the ref's id.

    Raises
    ------
    DatasetNotFoundError
        If the butler has no such dataset.
    """
    from .open import open_coadd

    ref = resolve_ref(butler, ref_or_dataset_type, data_id, collections, **data_id_kwargs)
    url, options = dataset_url(butler, ref, storage_options)
    return open_coadd(url, bbox=bbox, chunks=chunks, storage_options=options)


def open_butler_tract(
    butler: Any,
    *,
    dataset_type: Any = "deep_coadd",
    skymap: str | None = None,
    tract: int | None = None,
    band: str | None = None,
    collections: Any = None,
    where: str = "",
    storage_options: Mapping[str, Any] | None = None,
    chunks: Chunks = "auto",
) -> xr.Dataset:
    """Every patch of one tract and band a butler holds, opened as one tract Dataset.

    Raises
    ------
    DatasetNotFoundError
        If the query finds no dataset.
    ValidationError
        If ``tract`` or ``band`` is missing, or the datasets are in more than one storage.
    """
    from .tract import open_tract

    if tract is None or band is None:
        raise ValidationError("open_tract(butler=...): give tract= and band= (and skymap= unless it is implied)")
    ident: dict[str, Any] = {"tract": tract, "band": band}
    if skymap is not None:
        ident["skymap"] = skymap
    try:
        refs = butler.query_datasets(dataset_type, collections=collections, data_id=ident, where=where,
                                     explain=False, find_first=True)
    except LookupError as exc:
        raise DatasetNotFoundError(f"{_name(dataset_type)} {ident}: {exc}") from None
    if not refs:
        raise DatasetNotFoundError(f"{_name(dataset_type)} {ident}: no datasets in {_collections(butler)}")
    located = [dataset_url(butler, ref, storage_options) for ref in refs]
    options = {repr(opts) for _, opts in located}
    if len(options) > 1:
        raise ValidationError("open_tract(butler=...): the patches are in storages needing different options")
    return open_tract([url for url, _ in located], storage_options=located[0][1], chunks=chunks)
