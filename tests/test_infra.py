"""The test infrastructure itself: servers, cluster, oracle files."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lsst_files import VARIANTS, plane_names
from servers import HttpServer, S3Server

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes, each offset's value is known


def _get(url: str, method: str = "GET", range_: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Range": range_} if range_ else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def test_range_request_gets_206_with_exactly_the_range(http_server: HttpServer) -> None:
    url = http_server.publish_bytes(PAYLOAD)
    status, headers, body = _get(url, range_="bytes=1000-1099")
    assert status == 206
    assert headers["Content-Range"] == f"bytes 1000-1099/{len(PAYLOAD)}"
    assert body == PAYLOAD[1000:1100]
    status, _, body = _get(url, range_="bytes=-10")
    assert (status, body) == (206, PAYLOAD[-10:])


def test_access_log_records_method_range_status_and_bytes(http_server: HttpServer) -> None:
    url = http_server.publish_bytes(PAYLOAD)
    other = http_server.publish_bytes(b"other")
    mark = http_server.mark()
    _get(url, method="HEAD")
    _get(url, range_="bytes=0-99")
    _get(other)
    _get(url, range_="bytes=5000-5499")
    log = http_server.requests_since(mark, name=url)
    assert [(r.method, r.range, r.status, r.body_bytes) for r in log] == [
        ("HEAD", None, 200, 0),
        ("GET", "bytes=0-99", 206, 100),
        ("GET", "bytes=5000-5499", 206, 500),
    ]
    assert log.body_bytes == 600
    assert len(http_server.requests_since(mark)) == 4
    assert len(http_server.requests_since(http_server.mark(), name=url)) == 0


def test_access_log_sees_fsspec_range_reads(http_server: HttpServer) -> None:
    import fsspec

    url = http_server.publish_bytes(PAYLOAD)
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    mark = http_server.mark()
    assert fs.cat_file(url, start=256, end=512) == PAYLOAD[256:512]
    log = http_server.requests_since(mark, name=url)
    gets = [r for r in log if r.method == "GET"]
    assert [(r.range, r.status, r.body_bytes) for r in gets] == [("bytes=256-511", 206, 256)]
    assert log.body_bytes == 256


def test_cluster_computes_in_two_other_processes(dask_client: Any) -> None:
    import dask.array as da

    pids = dask_client.run(os.getpid)
    assert len(pids) == 2
    assert os.getpid() not in pids.values()
    assert len(set(pids.values())) == 2
    array = da.arange(1_000_000, chunks=100_000, dtype=np.int64)
    assert int(array.sum().compute()) == 999_999 * 1_000_000 // 2


def test_s3_round_trip(s3_server: S3Server, tmp_path: Path) -> None:
    import fsspec

    source = tmp_path / "payload.bin"
    source.write_bytes(PAYLOAD)
    url = s3_server.upload(source)
    fs = s3_server.filesystem()
    assert fs.size(url) == len(PAYLOAD)
    assert fs.cat_file(url, start=300, end=400) == PAYLOAD[300:400]
    with fsspec.open(url, "rb", **s3_server.storage_options) as stream:
        assert stream.read() == PAYLOAD


def test_s3_rejects_a_wrong_secret(s3_server: S3Server, tmp_path: Path) -> None:
    import s3fs

    source = tmp_path / "secret.bin"
    source.write_bytes(b"x")
    url = s3_server.upload(source)
    options = {**s3_server.storage_options, "secret": "wrong"}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    with pytest.raises(PermissionError):
        fs.cat_file(url)


def test_reference_dir_matches_expected_values(reference_dir: Path, expected_values: dict[str, Any]) -> None:
    assert expected_values
    for name in expected_values:
        assert (reference_dir / name).is_file(), name


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_lsst_variant_reads_back_in_lsst_images(lsst_variants: dict[str, Path], name: str) -> None:
    from lsst.images.cells import CellCoadd

    path = lsst_variants[name]
    assert path.stat().st_size < 2_000_000
    coadd = CellCoadd.read(str(path))
    shape = VARIANTS[name].shape
    assert coadd.image.array.shape == shape
    assert coadd.variance.array.shape == shape
    assert coadd.mask.array.shape[:2] == shape


def test_lossy_nan_variant_carries_zblank(lsst_variants: dict[str, Path]) -> None:
    from astropy.io import fits
    from lsst.images.cells import CellCoadd

    with fits.open(lsst_variants["lossy_nan.fits"], disable_image_compression=True) as hdus:
        header = hdus["IMAGE"].header
        assert header["ZQUANTIZ"] == "SUBTRACTIVE_DITHER_2"
        assert "ZBLANK" in header or "ZBLANK" in hdus["IMAGE"].columns.names
    image = CellCoadd.read(str(lsst_variants["lossy_nan.fits"])).image.array
    assert np.count_nonzero(np.isnan(image)) == 12


def test_tile_variant_has_tiles_other_than_cells(lsst_variants: dict[str, Path]) -> None:
    from astropy.io import fits

    with fits.open(lsst_variants["tile_7x13.fits"], disable_image_compression=True) as hdus:
        header = hdus["IMAGE"].header
        assert (header["ZTILE2"], header["ZTILE1"]) == (7, 13)


def test_many_planes_variant_splits_the_mask_over_three_hdus(lsst_variants: dict[str, Path]) -> None:
    from astropy.io import fits
    from lsst.images.cells import CellCoadd

    with fits.open(lsst_variants["mask_70_planes.fits"]) as hdus:
        assert [h.ver for h in hdus if h.name == "MASK"] == [1, 2, 3]
    coadd = CellCoadd.read(str(lsst_variants["mask_70_planes.fits"]))
    assert list(coadd.mask.schema.names) == plane_names(70)


def test_off_grid_cutout_is_not_aligned_with_cells(lsst_variants: dict[str, Path]) -> None:
    from lsst.images.cells import CellCoadd

    coadd = CellCoadd.read(str(lsst_variants["offset_cutout.fits"]))
    cell = coadd.grid.cell_shape
    offset = (coadd.bbox.y.start - coadd.grid.bbox.y.start, coadd.bbox.x.start - coadd.grid.bbox.x.start)
    assert offset[0] % cell.y != 0 and offset[1] % cell.x != 0
