"""No credential and no presigned signature in anything a user sees, saves or logs.

A coadd is published on the session SeaweedFS server as FITS, JSON and Zarr and opened by
``s3://`` URL with the key and secret in ``storage_options``, and (FITS and JSON: one object
each) by presigned ``http`` URL (the signature in its query string).  Every text the package
produces is swept for the key, the secret, the signature and the markers of a signed query
(``X-Amz-``, ``Signature=``, ``AWSAccessKeyId=``): reprs, ``describe()`` and ``_repr_html_``
of the coadd and its planes; the Dataset views (repr, HTML, attrs, encodings, a netCDF
file, a tract); dask graph keys and task texts; the messages of induced failures (wrong
credentials, missing object, deleted object, refused byte range, access denied); log records
of the package, fsspec and s3fs; the command line's text and JSON output.

One place is allowed to hold credentials: the *pickled* bytes of a graph.  Workers read
the objects themselves, so the tasks carry the storage options (or the presigned URL)
they need; what is never allowed is for them to show in a key, a repr or a message.

(botocore's own DEBUG log prints request headers, signatures included; it is not the
package's to change and is not swept: keep it off in production.)
"""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from faultproxy import S3FaultProxy
from servers import S3Server

import cellcoadd_dask as ccd
from cellcoadd_dask.cli import cli
from cellcoadd_dask.errors import shown_url

SYNTHETIC = "synthetic_3x3.fits"
MARKERS = ("X-Amz-", "Signature=", "AWSAccessKeyId=", "x-amz-")
LOGGERS = ("cellcoadd_dask", "fsspec", "s3fs")
BAD_SECRET = "not-the-secret-0123456789"


class Secrets:
    """The strings that must never show, and a check of a text against them."""

    def __init__(self, server: S3Server, presigned: list[str]) -> None:
        self.words = {server.key, server.secret, BAD_SECRET}
        for url in presigned:
            query = urlsplit(url).query
            assert query, f"not a presigned URL: {url}"
            self.words.add(query)
            self.words.update(v for _, v in parse_qsl(query) if len(v) >= 8 and not v.isdigit())

    def check(self, text: str | bytes, where: str) -> None:
        """Fail naming ``where`` when ``text`` holds a secret or a marker of a signed query."""
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        for word in [*self.words, *MARKERS]:
            assert word not in text, f"{where}: holds {word[:6]}... :\n{text[:2000]}"


SOURCES = ("fits s3", "fits presigned", "json s3", "json presigned", "zarr s3")
"""Every archive by ``s3://`` URL with credentials, and the single-object ones by presigned URL too."""


@pytest.fixture(scope="module")
def published(s3_server: S3Server, reference_dir: Path) -> dict[str, Any]:
    """The coadd on S3 as FITS, JSON and Zarr, their presigned URLs, and the secrets to look for."""
    options = s3_server.storage_options
    url = s3_server.upload(reference_dir / SYNTHETIC)
    coadd = ccd.open_coadd(url, storage_options=options)
    stem = url.removesuffix(".fits")
    json_url = coadd.write_json(stem + ".json", storage_options=options)
    zarr_url = coadd.write_zarr(stem + ".zarr", storage_options=options)
    presigned = s3_server.filesystem().url(url.removeprefix("s3://"), expires=900)
    json_presigned = s3_server.filesystem().url(json_url.removeprefix("s3://"), expires=900)
    sources = {"fits s3": (url, options), "fits presigned": (presigned, None), "json s3": (json_url, options),
               "json presigned": (json_presigned, None), "zarr s3": (zarr_url, options)}
    return {"url": url, "presigned": presigned, "options": options, "sources": sources,
            "secrets": Secrets(s3_server, [presigned, json_presigned])}


@pytest.fixture(params=SOURCES)
def opened(request: pytest.FixtureRequest, published: dict[str, Any]) -> Iterator[tuple[str, Any, Secrets]]:
    """The coadd opened from each source."""
    url, options = published["sources"][request.param]
    yield request.param, ccd.open_coadd(url, storage_options=options), published["secrets"]


def _shown(obj: Any) -> Iterator[tuple[str, str]]:
    """Every text ``obj`` shows: repr, str, and describe() / _repr_html_() when it has them."""
    yield "repr", repr(obj)
    yield "str", str(obj)
    for name in ("describe", "_repr_html_"):
        method = getattr(obj, name, None)
        if method is not None:
            yield name, str(method())


def _parts(coadd: Any) -> dict[str, Any]:
    parts = {"coadd": coadd, "image": coadd.image, "variance": coadd.variance, "mask": coadd.mask,
             "psf": coadd.psf}
    parts |= {f"mask_fractions/{k}": v for k, v in coadd.mask_fractions.items()}
    parts |= {f"noise_realizations/{n}": v for n, v in enumerate(coadd.noise_realizations)}
    return parts


@pytest.mark.parametrize("source", SOURCES)
def test_stored_archive_shows_no_secret(source: str, published: dict[str, Any]) -> None:
    url, options = published["sources"][source]
    stored = ccd.open_coadd(url, storage_options=options).stored
    for kind, text in _shown(stored):
        published["secrets"].check(text, f"{source}: {kind} of coadd.stored")


def _arrays(coadd: Any) -> dict[str, da.Array]:
    arrays = {"image": coadd.image.array, "variance": coadd.variance.array, "mask": coadd.mask.array,
              "mask.packed": coadd.mask.packed(), "psf": coadd.psf.array}
    arrays |= {f"mask_fractions/{k}": v.array for k, v in coadd.mask_fractions.items()}
    return arrays


def test_reprs_and_summaries_hold_no_secret(opened: tuple[str, Any, Secrets]) -> None:
    source, coadd, secrets = opened
    for name, part in _parts(coadd).items():
        for kind, text in _shown(part):
            secrets.check(text, f"{source}: {kind} of {name}")
    cut = coadd[ccd.Box.factory[1200:1350, 1650:1800]]
    for kind, text in _shown(cut):
        secrets.check(text, f"{source}: {kind} of a cutout")


def test_graph_keys_hold_no_secret(opened: tuple[str, Any, Secrets]) -> None:
    source, coadd, secrets = opened
    for name, array in _arrays(coadd).items():
        graph = dict(array.__dask_graph__())
        secrets.check(repr(list(graph)), f"{source}: graph keys of {name}")
        secrets.check(repr(array), f"{source}: repr of the dask array of {name}")


@pytest.mark.parametrize("source", SOURCES)
def test_graph_tasks_show_no_secret(source: str, published: dict[str, Any]) -> None:
    """The text of a task (what dask prints when a task fails, what the dashboard shows)."""
    url, options = published["sources"][source]
    coadd = ccd.open_coadd(url, storage_options=options)
    for name, array in _arrays(coadd).items():
        for key, task in dict(array.__dask_graph__()).items():
            published["secrets"].check(str(task), f"{source}: task {key} of {name}")


def test_pickled_graphs_are_the_one_place_credentials_go(published: dict[str, Any]) -> None:
    """Workers open the objects themselves: a pickled graph carries what they need (the documented exception)."""
    coadd = ccd.open_coadd(published["url"], storage_options=published["options"])
    part = coadd.image.array[:150, :150]
    shipped = pickle.loads(pickle.dumps(part))
    assert shipped.name == part.name
    np.testing.assert_array_equal(shipped.compute(scheduler="sync"), part.compute(scheduler="sync"))


def _dataset_texts(ds: xr.Dataset) -> Iterator[tuple[str, str]]:
    yield "repr", repr(ds)
    yield "_repr_html_", ds._repr_html_()
    yield "attrs", repr(ds.attrs)
    yield "encoding", repr(ds.encoding)
    for name, var in ds.variables.items():
        yield f"attrs of {name}", repr(var.attrs)
        yield f"encoding of {name}", repr(var.encoding)
        yield f"_repr_html_ of {name}", ds[name]._repr_html_()
    yield "describe()", ds.cellcoadd.describe()
    yield "summary()._repr_html_()", ds.cellcoadd.summary()._repr_html_()


def test_datasets_hold_no_secret(opened: tuple[str, Any, Secrets], published: dict[str, Any],
                                 tmp_path: Path) -> None:
    source, coadd, secrets = opened
    url, options = published["sources"][source]
    engine = xr.open_dataset(url, engine="cellcoadd", storage_options=options)
    for label, ds in (("to_xarray()", coadd.to_xarray()), ("open_dataset", engine)):
        for kind, text in _dataset_texts(ds):
            secrets.check(text, f"{source}: {kind} of {label}")
        for name, var in ds.data_vars.items():
            if var.chunks is not None:
                secrets.check(repr(list(dict(var.data.__dask_graph__()))), f"{source}: graph keys of {label}[{name}]")
        back = ds.cellcoadd.to_coadd()
        for kind, text in _shown(back):
            secrets.check(text, f"{source}: {kind} of {label}.cellcoadd.to_coadd()")
    small = coadd.to_xarray().isel(y=slice(0, 8), x=slice(0, 8))
    path = tmp_path / "small.nc"
    small.to_netcdf(path)
    secrets.check(path.read_bytes(), f"{source}: netCDF file")
    with xr.open_dataset(path) as saved:
        assert saved.attrs["source_url"] == small.attrs["source_url"]


def test_presigned_url_signature_is_not_kept_in_dataset_attrs(published: dict[str, Any]) -> None:
    presigned = published["presigned"]
    ds = ccd.open_coadd(presigned).to_xarray()
    assert ds.attrs["source_url"] == presigned.split("?", 1)[0] + "?***"
    assert ds.encoding["source"] == ds.attrs["source_url"]
    back = ds.cellcoadd.to_coadd()  # nothing to re-open: a coadd without provenance, not a failing one
    with pytest.raises(AttributeError):
        _ = back.provenance
    assert back.backgrounds is None
    s3 = ccd.open_coadd(published["url"], storage_options=published["options"]).to_xarray()
    assert s3.attrs["source_url"] == published["url"]


def test_tract_dataset_holds_no_secret(published: dict[str, Any]) -> None:
    secrets = published["secrets"]
    for label, ds in (("presigned", ccd.open_tract([published["presigned"]])),
                      ("s3", ccd.open_tract([published["url"]], storage_options=published["options"]))):
        assert list(ds.attrs["urls"]) == [shown_url(published["presigned" if label == "presigned" else "url"])]
        for kind, text in _dataset_texts(ds):
            secrets.check(text, f"tract from {label}: {kind}")


def _failure_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def _failures(published: dict[str, Any], s3_server: S3Server, s3_proxy: S3FaultProxy,
              reference_dir: Path) -> Iterator[tuple[str, BaseException]]:
    options = published["options"]

    def caught(what: str, call: Any) -> tuple[str, BaseException]:
        with pytest.raises(ccd.CellCoaddError) as info:
            call()
        return what, info.value

    bad = {**options, "secret": BAD_SECRET, "skip_instance_cache": True}
    yield caught("wrong secret", lambda: ccd.open_coadd(published["url"], storage_options=bad))
    missing = published["presigned"].replace(published["url"].rsplit("/", 1)[1], "missing.fits")
    yield caught("presigned URL of a missing object", lambda: ccd.open_coadd(missing))
    yield caught("s3 URL of a missing object",
                 lambda: ccd.open_coadd(published["url"] + ".missing", storage_options=options))
    # An object deleted after opening: the first tile read fails.
    doomed = s3_server.upload(reference_dir / SYNTHETIC)
    doomed_presigned = s3_server.filesystem().url(doomed.removeprefix("s3://"), expires=900)
    by_s3 = ccd.open_coadd(doomed, storage_options=options)
    by_url = ccd.open_coadd(doomed_presigned)
    s3_server.filesystem().rm_file(doomed.removeprefix("s3://"))
    yield caught("deleted object, s3", lambda: by_s3.image.array.compute(scheduler="sync"))
    yield caught("deleted object, presigned", lambda: by_url.image.array.compute(scheduler="sync"))
    # Refused byte ranges, through the fault proxy (its presigned URLs are signed for the proxy).
    through = s3_proxy.upload(reference_dir / SYNTHETIC)
    proxied = s3_proxy.filesystem().url(through.removeprefix("s3://"), expires=900)
    by_s3 = ccd.open_coadd(through, storage_options=s3_proxy.storage_options)
    by_url = ccd.open_coadd(proxied)
    s3_proxy.status(416, times=None, ranged_only=True)
    yield caught("refused byte range, s3", lambda: by_s3.variance.array.compute(scheduler="sync"))
    yield caught("refused byte range, presigned", lambda: by_url.variance.array.compute(scheduler="sync"))
    s3_proxy.clear_faults()
    s3_proxy.status(403, times=None)
    yield caught("access denied, presigned", lambda: ccd.open_coadd(proxied))


def test_failures_and_logs_hold_no_secret(
    published: dict[str, Any], s3_server: S3Server, s3_proxy: S3FaultProxy, reference_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = Secrets(s3_server, [published["presigned"]])
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    seen = []
    for what, exc in _failures(published, s3_server, s3_proxy, reference_dir):
        seen.append(what)
        secrets.check(_failure_text(exc), f"error of {what}")
    assert len(seen) == 8
    ok = ccd.open_coadd(published["presigned"])
    ok.image.array[:10, :10].compute(scheduler="sync")
    ccd.open_coadd(published["url"], storage_options=published["options"]).image.array[:10, :10].compute()
    records = [r for r in caplog.records if r.name.split(".")[0] in LOGGERS]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        secrets.check(formatter.format(record), f"log record of {record.name}")


def _cli(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    return result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_command_line_shows_no_secret(published: dict[str, Any], s3_server: S3Server) -> None:
    secrets = published["secrets"]
    options = ["-s", f"key={s3_server.key}", "-s", f"secret={s3_server.secret}",
               "-s", f"client_kwargs.endpoint_url={s3_server.endpoint_url}"]
    runs = {
        "info s3": ["info", published["url"], *options],
        "info s3 --json": ["info", published["url"], "--json", *options],
        "stats s3 --json": ["stats", published["url"], "--json", *options],
        "info presigned": ["info", published["presigned"]],
        "info presigned --json": ["info", published["presigned"], "--json"],
        "stats presigned": ["stats", published["presigned"]],
        "stats presigned --json": ["stats", published["presigned"], "--json", "--plane", "variance"],
        "info, wrong secret": ["info", published["url"], "-s", f"key={s3_server.key}", "-s",
                               f"secret={BAD_SECRET}", "-s", "skip_instance_cache=true",
                               "-s", f"client_kwargs.endpoint_url={s3_server.endpoint_url}"],
        # A message naming a secret given on the command line (here in the object's name) is redacted.
        "info, secret in the message": ["info", f"s3://{s3_server.bucket}/{s3_server.secret}.fits", *options],
    }
    for label, args in runs.items():
        text = _cli(args)
        assert text.strip(), label
        secrets.check(text, f"cellcoadd-dask {label}")
    assert "?***" in _cli(["info", published["presigned"], "--json"])
