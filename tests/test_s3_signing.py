"""Presigned S3 reads: URLs signed without creating s3fs's client when the options say everything.

Against SeaweedFS on loopback: a fresh filesystem reads a coadd without ever creating its
botocore client (no service model loaded), a refused signature is signed again by the client,
and options that change signing or addressing leave the signing to the client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from oracle import lsst_read

import cellcoadd_dask as ccd
from cellcoadd_dask.fetch import fetch_stats
from cellcoadd_dask.fetch_backends import s3 as s3_backend

SYNTHETIC = "synthetic_3x3.fits"


def _fresh_options(s3_server: Any, timeout: int) -> dict[str, Any]:
    """The server's options plus a neutral setting no other test uses: a filesystem of its own."""
    return {**s3_server.storage_options, "config_kwargs": {"connect_timeout": timeout}}


def test_reads_sign_without_creating_the_client(reference_dir: Path, s3_server: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    options = _fresh_options(s3_server, 31)
    fs = fsspec.filesystem("s3", **options)
    assert fs._s3 is None
    with fetch_stats() as stats:
        coadd = ccd.open_coadd(url, storage_options=options)
    assert stats.requests == 2  # the primary header, then JSON + index
    pixels = coadd.image.array[:150, :150].compute()
    np.testing.assert_array_equal(pixels, lsst_read(str(reference_dir / SYNTHETIC)).image.array[:150, :150])
    assert fsspec.filesystem("s3", **options) is fs and fs._s3 is None  # never created


def test_a_refused_signature_is_signed_again_by_the_client(
    reference_dir: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    options = _fresh_options(s3_server, 32)
    real = s3_backend._sign_directly
    signed: list[str] = []

    def spoiled(fs: Any, path: str) -> str | None:
        good = real(fs, path)
        assert good is not None
        signed.append(good)
        return good.replace("X-Amz-Signature=", "X-Amz-Signature=0")  # a signature the server refuses

    monkeypatch.setattr(s3_backend, "_sign_directly", spoiled)
    coadd = ccd.open_coadd(url, storage_options=options)
    np.testing.assert_array_equal(coadd.image.array[150:300, :150].compute(),
                                  lsst_read(str(reference_dir / SYNTHETIC)).image.array[150:300, :150])
    assert signed  # the direct signature was tried, refused, and the client's used
    assert fsspec.filesystem("s3", **options)._s3 is not None


def test_wrong_secret_is_refused_after_the_client_signs_again(reference_dir: Path, s3_server: Any) -> None:
    url = s3_server.upload(reference_dir / SYNTHETIC)
    bad = {**_fresh_options(s3_server, 33), "secret": "not-the-secret-9876543210"}
    with pytest.raises(ccd.FetchError) as info:
        ccd.open_coadd(url, storage_options=bad)
    assert "access denied" in str(info.value) and "not-the-secret-9876543210" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "direct"),
    [
        ({}, True),
        ({"client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-3"}}, True),
        ({"config_kwargs": {"s3": {"addressing_style": "virtual"}}}, False),
        ({"config_kwargs": {"signature_version": "s3"}}, False),
        ({"client_kwargs": {"endpoint_url": "https://s3.eu-west-3.amazonaws.com"}}, False),
        ({"client_kwargs": {}}, False),  # no endpoint: AWS, whose regions botocore resolves
        ({"anon": True}, False),
        ({"s3_additional_kwargs": {"SSECustomerKey": "k"}}, False),
        ({"profile": "someone"}, False),
        ({"token": "session-token"}, True),
    ],
)
def test_which_options_are_signed_directly(change: dict[str, Any], direct: bool, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/config
    base = {"key": "AKEXAMPLE", "secret": "SECRETEXAMPLE", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    fs = fsspec.filesystem("s3", **{**base, **change, "skip_instance_cache": True})
    url = s3_backend._sign_directly(fs, "bucket/dir/a b.fits")
    assert (url is not None) == direct
    if url is not None:
        assert url.startswith("http://127.0.0.1:9/bucket/dir/a%20b.fits?")
        region = change.get("client_kwargs", {}).get("region_name", "us-east-1")
        assert f"%2F{region}%2Fs3%2Faws4_request" in url and "SECRETEXAMPLE" not in url
        assert ("X-Amz-Security-Token=session-token" in url) == ("token" in change)


def test_a_configured_region_leaves_signing_to_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-2")
    fs = fsspec.filesystem("s3", key="AKEXAMPLE", secret="SECRETEXAMPLE", skip_instance_cache=True,
                           client_kwargs={"endpoint_url": "http://127.0.0.1:9"})
    assert s3_backend._sign_directly(fs, "bucket/a.fits") is None
