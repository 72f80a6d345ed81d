"""The butler dataset and provenance a coadd's tree records (its ``butler_info``).

A coadd written through a butler (lsst-images' formatter) carries, in its JSON tree,
``butler_info = {"dataset": <SerializedDatasetRef>, "provenance": <DatasetProvenance>}``.
:func:`parse_butler_info` validates that subtree when the archive is opened (a typed error
names the field at fault); :func:`dataset_of` and :func:`provenance_of` turn it into
``lsst.daf.butler`` types when that package is importable, and otherwise into the plain,
frozen objects below, which have the same field names (``lsst.daf.butler`` is never required).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ArchiveFormatError

__all__ = [
    "DataCoordinateInfo",
    "DatasetProvenanceInfo",
    "DatasetRefInfo",
    "DatasetTypeInfo",
    "dataset_of",
    "parse_butler_info",
    "provenance_of",
]


@dataclass(frozen=True)
class DatasetTypeInfo:
    """A serialized butler dataset type (the fields of ``lsst.daf.butler.SerializedDatasetType``)."""

    name: str
    storageClass: str | None = None
    dimensions: tuple[str, ...] | None = None
    parentStorageClass: str | None = None
    isCalibration: bool = False


@dataclass(frozen=True)
class DataCoordinateInfo:
    """A serialized data ID (the fields of ``lsst.daf.butler.SerializedDataCoordinate``)."""

    dataId: dict[str, Any]
    records: dict[str, Any] | None = None


@dataclass(frozen=True)
class DatasetRefInfo:
    """A serialized dataset reference (the fields of ``lsst.daf.butler.SerializedDatasetRef``)."""

    id: uuid.UUID
    datasetType: DatasetTypeInfo | None = None
    dataId: DataCoordinateInfo | None = None
    run: str | None = None
    component: str | None = None


@dataclass(frozen=True)
class DatasetProvenanceInfo:
    """What produced a dataset (the fields of ``lsst.daf.butler.DatasetProvenance``)."""

    inputs: tuple[DatasetRefInfo, ...] = ()
    quantum_id: uuid.UUID | None = None
    extras: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)


class _Fields:
    """Field readers that raise :class:`ArchiveFormatError` naming the field."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def error(self, path: str, message: str) -> ArchiveFormatError:
        return ArchiveFormatError(f"JSON tree field {path!r}: {message}", url=self.url, hdu="JSON")

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected an object, got {type(value).__name__}")
        return value

    def text(self, value: Any, path: str, *, optional: bool = True) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {type(value).__name__}")
        return value

    def uuid(self, value: Any, path: str) -> uuid.UUID:
        if not isinstance(value, (str, uuid.UUID)):
            raise self.error(path, f"expected a UUID string, got {type(value).__name__}")
        try:
            return uuid.UUID(str(value))
        except ValueError:
            raise self.error(path, f"not a UUID: {str(value)[:60]!r}") from None

    def dataset_type(self, value: Any, path: str) -> DatasetTypeInfo | None:
        if value is None:
            return None
        node = self.obj(value, path)
        dims = node.get("dimensions")
        if dims is not None and (not isinstance(dims, list) or not all(isinstance(d, str) for d in dims)):
            raise self.error(f"{path}.dimensions", "expected a list of dimension names")
        calibration = node.get("isCalibration", False)
        if not isinstance(calibration, bool):
            raise self.error(f"{path}.isCalibration", "expected true or false")
        return DatasetTypeInfo(
            name=str(self.text(node.get("name"), f"{path}.name", optional=False)),
            storageClass=self.text(node.get("storageClass"), f"{path}.storageClass"),
            dimensions=None if dims is None else tuple(dims),
            parentStorageClass=self.text(node.get("parentStorageClass"), f"{path}.parentStorageClass"),
            isCalibration=calibration,
        )

    def data_id(self, value: Any, path: str) -> DataCoordinateInfo | None:
        if value is None:
            return None
        node = self.obj(value, path)
        values = dict(self.obj(node.get("dataId"), f"{path}.dataId"))
        for key, item in values.items():
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                raise self.error(f"{path}.dataId.{key}", f"expected a string or integer, got {type(item).__name__}")
        records = node.get("records")
        return DataCoordinateInfo(values, None if records is None else dict(self.obj(records, f"{path}.records")))

    def ref(self, value: Any, path: str) -> DatasetRefInfo:
        node = self.obj(value, path)
        if "id" not in node:
            raise self.error(f"{path}.id", "missing")
        if not isinstance(node["id"], str):
            raise self.error(f"{path}.id", f"expected a UUID string, got {type(node['id']).__name__}")
        return DatasetRefInfo(
            id=self.uuid(node["id"], f"{path}.id"),
            datasetType=self.dataset_type(node.get("datasetType"), f"{path}.datasetType"),
            dataId=self.data_id(node.get("dataId"), f"{path}.dataId"),
            run=self.text(node.get("run"), f"{path}.run"),
            component=self.text(node.get("component"), f"{path}.component"),
        )

    def provenance(self, value: Any, path: str) -> DatasetProvenanceInfo:
        if value is None:
            return DatasetProvenanceInfo()
        node = self.obj(value, path)
        inputs = node.get("inputs") or []
        if not isinstance(inputs, list):
            raise self.error(f"{path}.inputs", "expected a list")
        quantum = node.get("quantum_id")
        extras = self.obj(node.get("extras") or {}, f"{path}.extras")
        return DatasetProvenanceInfo(
            inputs=tuple(self.ref(item, f"{path}.inputs[{n}]") for n, item in enumerate(inputs)),
            quantum_id=None if quantum is None else self.uuid(quantum, f"{path}.quantum_id"),
            extras={self.uuid(k, f"{path}.extras"): dict(self.obj(v, f"{path}.extras.{k}")) for k, v in extras.items()},
        )


def parse_butler_info(
    value: Any, *, url: str | None = None
) -> tuple[DatasetRefInfo, DatasetProvenanceInfo] | None:
    """Validate a tree's ``butler_info`` (``None`` when absent).

    Raises
    ------
    ArchiveFormatError
        Naming the field at fault.
    """
    if value is None:
        return None
    fields = _Fields(url)
    node = fields.obj(value, "butler_info")
    if "dataset" not in node:
        raise fields.error("butler_info.dataset", "missing")
    return (fields.ref(node["dataset"], "butler_info.dataset"),
            fields.provenance(node.get("provenance"), "butler_info.provenance"))


def _butler() -> Any:
    try:
        import lsst.daf.butler as butler
    except ImportError:
        return None
    return butler


def dataset_of(butler_info: Mapping[str, Any] | None, *, url: str | None = None) -> Any:
    """``butler_info["dataset"]`` as a ``lsst.daf.butler.SerializedDatasetRef``, or a :class:`DatasetRefInfo`.

    ``None`` when the coadd records no butler dataset.
    """
    parsed = parse_butler_info(butler_info, url=url)
    if parsed is None or butler_info is None:
        return None
    butler = _butler()
    if butler is None:
        return parsed[0]
    return butler.SerializedDatasetRef.model_validate(butler_info["dataset"])


def provenance_of(butler_info: Mapping[str, Any] | None, *, url: str | None = None) -> Any:
    """``butler_info["provenance"]`` as a ``lsst.daf.butler.DatasetProvenance``, or a :class:`DatasetProvenanceInfo`.

    ``None`` when the coadd records no butler dataset; empty provenance when it records
    the dataset only.
    """
    parsed = parse_butler_info(butler_info, url=url)
    if parsed is None or butler_info is None:
        return None
    butler = _butler()
    if butler is None:
        return parsed[1]
    return butler.DatasetProvenance.model_validate(butler_info.get("provenance") or {})
