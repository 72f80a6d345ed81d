"""Coadds through a real butler repository: ``open_butler``, ``open_tract(butler=...)``, butler provenance.

Repositories are made here (``Butler.makeRepo``: sqlite registry; a file datastore, and an S3
datastore on the SeaweedFS fixture), the corpus' 3x3 demonstration tract is ``put`` with
lsst-images' formatter (one patch with provenance naming another as its input), and what this
package opens is compared with ``butler.get``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lsst.daf.butler import Butler, Config, DatasetProvenance, DatasetType
from lsst.images import Box as LsstBox
from lsst.images.cells import CellCoadd as LsstCellCoadd

import cellcoadd_dask as ccd
from cellcoadd_dask import butler_info
from cellcoadd_dask.fetch import fetch_stats

DATASET_TYPE = "deep_coadd"


def _demo_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "demo_tract").glob("*.fits"))


def _fill(root: Path, files: list[Path], datastore: str | None = None) -> tuple[Butler, dict[int, Any]]:
    """A new repository holding every file as a ``deep_coadd``; the refs by patch id."""
    config = Config({"datastore": {"root": datastore}}) if datastore else None
    Butler.makeRepo(str(root), config=config, forceConfigRoot=datastore is None)
    butler = Butler.from_config(str(root), writeable=True, run="u/coadds")
    first = ccd.open_coadd(files[0])
    registry = butler.registry
    registry.insertDimensionData("skymap", {"name": first.skymap, "hash": b"x", "tract_max": 1000,
                                            "patch_nx_max": 10, "patch_ny_max": 10})
    registry.insertDimensionData("instrument", {"name": "Cam", "visit_max": 1, "exposure_max": 1,
                                                "detector_max": 1, "class_name": "x"})
    registry.insertDimensionData("physical_filter", {"instrument": "Cam", "name": "Cam-b", "band": first.band})
    registry.insertDimensionData("tract", {"skymap": first.skymap, "id": first.tract})
    registry.registerDatasetType(DatasetType(DATASET_TYPE, ("skymap", "tract", "patch", "band"), "CellCoadd",
                                             universe=butler.dimensions))
    refs: dict[int, Any] = {}
    for path in files:
        patch = ccd.open_coadd(path).patch_definition
        assert patch is not None
        registry.insertDimensionData("patch", {"skymap": first.skymap, "tract": first.tract, "id": patch.id,
                                               "cell_x": patch.index.x, "cell_y": patch.index.y})
        provenance = None
        if refs:  # every patch after the first names the first as its input
            provenance = DatasetProvenance(quantum_id=uuid.uuid4())
            provenance.add_input(refs[min(refs)])
        refs[patch.id] = butler.put(LsstCellCoadd.read(str(path)), DATASET_TYPE, skymap=first.skymap,
                                    tract=first.tract, patch=patch.id, band=first.band, provenance=provenance)
    return butler, refs


@pytest.fixture(scope="module")
def file_repo(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Butler, dict[int, Any]]:
    return _fill(tmp_path_factory.mktemp("repo"), _demo_files(corpus))


@pytest.fixture(scope="module")
def s3_repo(corpus: Path, s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Butler, dict]]:
    """A repository whose datastore is an S3 prefix; lsst.resources and this package read the environment."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("S3_ENDPOINT_URL", s3_server.endpoint_url)
        env.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
        env.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
        prefix = f"s3://{s3_server.bucket}/butler-{uuid.uuid4().hex[:8]}/"
        yield _fill(tmp_path_factory.mktemp("s3repo"), _demo_files(corpus)[:4], datastore=prefix)


def _assert_same(ours: ccd.CellCoadd, theirs: Any) -> None:
    assert ours.bbox.y.start == theirs.bbox.y.start and ours.bbox.x.start == theirs.bbox.x.start
    np.testing.assert_array_equal(ours.image.array.compute(), theirs.image.array)
    np.testing.assert_array_equal(ours.variance.array.compute(), theirs.variance.array)
    np.testing.assert_array_equal(ours.mask.array.compute(), theirs.mask.array)


def test_open_by_ref_equals_butler_get(file_repo: tuple[Butler, dict[int, Any]]) -> None:
    butler, refs = file_repo
    for patch, ref in refs.items():
        coadd = ccd.open_butler(butler, ref)
        theirs = butler.get(ref)
        _assert_same(coadd, theirs)
        assert coadd.butler_dataset.id == ref.id
        assert coadd.butler_dataset == theirs.butler_dataset
        assert coadd.butler_provenance == theirs.butler_provenance
        if patch != min(refs):
            assert [r.id for r in coadd.butler_provenance.inputs] == [refs[min(refs)].id]
            assert coadd.butler_provenance.quantum_id is not None
        assert "LSST BUTLER RUN" not in coadd.metadata  # the formatter's header cards stay out, as in lsst-images


def test_open_by_data_id(file_repo: tuple[Butler, dict[int, Any]]) -> None:
    butler, refs = file_repo
    patch = sorted(refs)[4]
    ref = refs[patch]
    ident = dict(ref.dataId.required)
    by_dict = ccd.open_butler(butler, DATASET_TYPE, ident)
    by_kwargs = ccd.open_butler(butler, DATASET_TYPE, **ident)
    by_type = ccd.open_butler(butler, ref.datasetType, ident, collections="u/coadds")
    for coadd in (by_dict, by_kwargs, by_type):
        assert coadd.butler_dataset.id == ref.id
        assert coadd.bbox == by_dict.bbox
    with pytest.raises(ccd.DatasetNotFoundError, match=DATASET_TYPE):
        ccd.open_butler(butler, DATASET_TYPE, {**ident, "patch": 77})
    with pytest.raises(ccd.DatasetNotFoundError, match="no_such_type"):
        ccd.open_butler(butler, "no_such_type", ident)
    with pytest.raises(ccd.ValidationError, match="not both"):
        ccd.open_butler(butler, ref, ident)


def test_bbox_reads_only_its_cells_and_equals_a_bbox_get(file_repo: tuple[Butler, dict[int, Any]]) -> None:
    butler, refs = file_repo
    ref = refs[sorted(refs)[4]]
    whole = ccd.open_butler(butler, ref)
    y0, x0 = whole.patch_definition.inner_bbox.y.start, whole.patch_definition.inner_bbox.x.start
    box = ccd.Box.factory[y0 + 160 : y0 + 290, x0 + 10 : x0 + 140]  # inside one cell
    with fetch_stats() as full:
        whole.image.array.compute()
    with fetch_stats() as cut:
        coadd = ccd.open_butler(butler, ref, bbox=box)
        image = coadd.image.array.compute()
    theirs = butler.get(ref, parameters={"bbox": LsstBox.factory[box.y.start : box.y.stop, box.x.start : box.x.stop]})
    np.testing.assert_array_equal(image, theirs.image.array)
    assert coadd.bbox == box
    assert cut.nbytes < full.nbytes / 8  # one tile of the image, and metadata


def test_a_tract_through_the_butler_equals_the_files(corpus: Path, file_repo: tuple[Butler, dict[int, Any]]) -> None:
    butler, refs = file_repo
    first = ccd.open_butler(butler, refs[min(refs)])
    ds = ccd.open_tract(butler=butler, skymap=first.skymap, tract=first.tract, band=first.band)
    expected = ccd.open_tract([str(p) for p in _demo_files(corpus)])
    assert ds.sizes == expected.sizes and len(ds.attrs["patches"]) == len(refs)
    for name in ("image", "variance", "mask"):
        np.testing.assert_array_equal(ds[name].values, expected[name].values)
    with pytest.raises(ccd.DatasetNotFoundError):
        ccd.open_tract(butler=butler, skymap=first.skymap, tract=first.tract, band="z")
    with pytest.raises(ccd.ValidationError, match="band"):
        ccd.open_tract(butler=butler, tract=first.tract)


def test_an_s3_datastore(s3_repo: tuple[Butler, dict[int, Any]]) -> None:
    butler, refs = s3_repo
    ref = refs[min(refs)]
    assert str(butler.getURI(ref)).startswith("s3://")
    with fetch_stats() as opening:
        coadd = ccd.open_butler(butler, ref)
    assert opening.requests <= 2
    theirs = butler.get(ref)
    _assert_same(coadd, theirs)
    inner = coadd.patch_definition.inner_bbox
    box = ccd.Box.factory[inner.y.start : inner.y.start + 150, inner.x.start : inner.x.start + 150]
    cut = ccd.open_butler(butler, ref, bbox=box)
    np.testing.assert_array_equal(cut.image.array.compute(), theirs.image.array[150:300, 150:300])
    ds = ccd.open_tract(butler=butler, skymap=coadd.skymap, tract=coadd.tract, band=coadd.band)
    assert len(ds.attrs["patches"]) == len(refs) and all(u.startswith("s3://") for u in ds.attrs["urls"])


def test_written_coadds_keep_the_butler_dataset(file_repo: tuple[Butler, dict[int, Any]], tmp_path: Path) -> None:
    butler, refs = file_repo
    ref = refs[max(refs)]
    coadd = ccd.open_butler(butler, ref)
    coadd.write_fits(tmp_path / "c.fits")
    theirs = LsstCellCoadd.read(str(tmp_path / "c.fits"))
    assert theirs.butler_dataset == butler.get(ref).butler_dataset
    assert theirs.butler_provenance == butler.get(ref).butler_provenance
    coadd.write_zarr(tmp_path / "c.zarr")
    assert ccd.open_coadd(tmp_path / "c.zarr").butler_dataset.id == ref.id
    box = coadd.patch_definition.inner_bbox
    assert coadd[box].butler_dataset.id == ref.id


def test_without_the_butler_package_plain_objects_with_the_same_fields(
    file_repo: tuple[Butler, dict[int, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    butler, refs = file_repo
    ref = refs[max(refs)]
    coadd = ccd.open_butler(butler, ref)
    monkeypatch.setattr(butler_info, "_butler", lambda: None)
    dataset, provenance = coadd.butler_dataset, coadd.butler_provenance
    assert isinstance(dataset, butler_info.DatasetRefInfo)
    assert dataset.id == ref.id and dataset.run == ref.run
    assert dataset.datasetType is not None and dataset.datasetType.name == DATASET_TYPE
    assert dataset.datasetType.storageClass == "CellCoadd"
    assert dataset.dataId is not None and dataset.dataId.dataId == dict(ref.dataId.required)
    assert isinstance(provenance, butler_info.DatasetProvenanceInfo)
    assert [r.id for r in provenance.inputs] == [refs[min(refs)].id]
    assert provenance.quantum_id == butler.get(ref).butler_provenance.quantum_id
    assert ccd.open_butler(butler, refs[min(refs)]).butler_provenance.inputs == ()


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ([1, 2], "butler_info"),
        ({"provenance": {}}, "butler_info.dataset"),
        ({"dataset": {"run": "r"}}, "butler_info.dataset.id"),
        ({"dataset": {"id": 12}}, "butler_info.dataset.id"),
        ({"dataset": {"id": "not-a-uuid"}}, "butler_info.dataset.id"),
        ({"dataset": {"id": str(uuid.uuid4()), "run": 3}}, "butler_info.dataset.run"),
        ({"dataset": {"id": str(uuid.uuid4()), "dataId": {"dataId": {"tract": [1]}}}},
         "butler_info.dataset.dataId.dataId.tract"),
        ({"dataset": {"id": str(uuid.uuid4()), "datasetType": {"storageClass": "x"}}},
         "butler_info.dataset.datasetType.name"),
        ({"dataset": {"id": str(uuid.uuid4())}, "provenance": {"inputs": {"a": 1}}}, "butler_info.provenance.inputs"),
        ({"dataset": {"id": str(uuid.uuid4())}, "provenance": {"inputs": [{"id": "x"}]}},
         "butler_info.provenance.inputs[0].id"),
        ({"dataset": {"id": str(uuid.uuid4())}, "provenance": {"quantum_id": "q"}},
         "butler_info.provenance.quantum_id"),
    ],
)
def test_a_malformed_butler_info_is_a_typed_error_naming_the_field(value: Any, field: str) -> None:
    with pytest.raises(ccd.ArchiveFormatError, match=field.replace("[", r"\[").replace("]", r"\]")) as info:
        butler_info.parse_butler_info(value, url="file:///x.fits")
    assert "x.fits" in str(info.value)
