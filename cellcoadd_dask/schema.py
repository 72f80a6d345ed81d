"""Validate a ``cell_coadd`` 1.0.0 JSON tree against the package's frozen JSON Schema.

The schema (``schemas/cell_coadd-1.0.0.json``, JSON Schema draft 2020-12) describes
the tree that FITS and JSON archives store: every required key, the array, quantity
and table models, and the ``source`` grammar.  Unknown keys are allowed everywhere,
so trees written by newer minor versions still validate.  Writers call
:func:`validate_tree` before any byte is written.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError as SchemaError
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from .archives.names import SCHEMA_NAME, SCHEMA_URL_PREFIX, SCHEMA_VERSION, ZARR_SOURCE_PATTERN
from .errors import ValidationError, shown_url

__all__ = ["SCHEMA_ID", "SCHEMA_NAME", "SCHEMA_VERSION", "load_schema", "validate_tree"]

SCHEMA_ID = f"{SCHEMA_URL_PREFIX}{SCHEMA_NAME}-{SCHEMA_VERSION}"
"""The schema's ``$id`` (also the ``schema_url`` written at the top of a tree)."""

_RESOURCE = f"schemas/{SCHEMA_NAME}-{SCHEMA_VERSION}.json"
_MAX_DETAIL = 300


@functools.cache
def _schema_text() -> str:
    return resources.files("cellcoadd_dask").joinpath(_RESOURCE).read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """The frozen ``cell_coadd`` 1.0.0 JSON Schema.

    Returns
    -------
    schema
        A fresh copy of the parsed schema document (callers may modify it).
    """
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


_LITERAL_KEYWORDS = frozenset({"const", "enum", "required", "examples", "default"})
_NAMED_SUBSCHEMAS = frozenset({"properties", "patternProperties", "dependentSchemas"})
_LOCAL_DEF = "#/$defs/"


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """An equivalent schema with every non-recursive local ``$ref`` replaced by its target.

    Resolving ``$ref`` at validation time dominates jsonschema's run time on this
    schema; inlining at load time roughly halves it.  A reference met again inside
    its own expansion (``bounds`` nests itself) stays a ``$ref`` into ``$defs``.
    ``{"$ref": X, ...}`` with sibling keywords becomes ``{"allOf": [X], ...}``.
    """
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: Any, expanding: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, expanding) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" or key in _LITERAL_KEYWORDS:
                out[key] = value
            elif key in _NAMED_SUBSCHEMAS:
                out[key] = {name: walk(sub, expanding) for name, sub in value.items()}
            else:
                out[key] = walk(value, expanding)
        ref = out.get("$ref")
        if not (isinstance(ref, str) and ref.startswith(_LOCAL_DEF)):
            return out
        name = ref.removeprefix(_LOCAL_DEF)
        if name in expanding or name not in defs:
            return out
        del out["$ref"]
        target = walk(defs[name], expanding | {name})
        if not out:
            return target
        out["allOf"] = [target, *out.get("allOf", [])]
        return out

    inlined = {key: value if key == "$defs" else walk(value, frozenset()) for key, value in schema.items()}
    return inlined


def _is_object(checker: Any, instance: Any) -> bool:
    return isinstance(instance, dict | Mapping)


def _is_array(checker: Any, instance: Any) -> bool:
    # Tuples serialize as JSON arrays, so a tree built with them is still checked as one.
    return isinstance(instance, list | tuple)


def _for_scheme(schema: dict[str, Any], scheme: str) -> dict[str, Any]:
    """The schema with the source grammar of ``scheme``: the frozen schema spells FITS sources only."""
    if scheme == "fits":
        return schema
    if scheme != "zarr":
        raise ValueError(f"unknown source scheme {scheme!r}")
    defs = schema["$defs"]
    defs["source"]["pattern"] = ZARR_SOURCE_PATTERN
    defs["source"]["description"] = "zarr:PATH or zarr:/PATH (see cellcoadd_dask.archives.names)."
    # A Zarr table column is an array of its own: its source has no [column] suffix.
    defs["column_reference"]["properties"]["source"] = {"not": {"pattern": "(^zarr:/?|/)\\.\\.?(/|$)"}}
    defs["hdu_reference"]["properties"]["source"] = {"not": {"pattern": "(^zarr:/?|/)\\.\\.?(/|$)"}}
    # The mask is int32 arrays of 31 planes, or one packed unsigned array (schema plane n at bit n).
    data = defs["mask"]["properties"]["data"]
    data["description"] = "Signed int32 2-d arrays of 31 planes each, or one packed unsigned 2-d array."
    data["items"]["properties"]["datatype"] = {"enum": ["int32", "uint8", "uint16", "uint32", "uint64"]}
    return schema


@functools.cache
def _validator(scheme: str = "fits") -> Validator:
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({"object": _is_object, "array": _is_array})
    cls = jsonschema.validators.extend(base, type_checker=checker)
    schema = _for_scheme(load_schema(), scheme)
    base.check_schema(schema)
    validator: Validator = cls(_inline_refs(schema))
    return validator


def _json_path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _describe(error: SchemaError) -> tuple[str, str]:
    """The JSON path of an error and a short explanation."""
    parts: list[str | int] = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [key for key in error.validator_value if key not in error.instance]
        if missing:
            return _json_path([*parts, missing[0]]), "required key is missing"
    return _json_path(parts), _shorten(error.message)


def validate_tree(tree: Mapping[str, Any], *, url: str | None = None, scheme: str = "fits") -> None:
    """Check a ``cell_coadd`` tree against the frozen 1.0.0 schema.

    Parameters
    ----------
    tree
        The JSON tree as Python objects (mappings, lists or tuples, strings, numbers,
        booleans and ``None``), exactly as it will be serialized.
    url
        The file the tree is meant for, named in the error message.
    scheme
        The archive's source grammar: ``"fits"`` (the frozen schema's) or ``"zarr"`` (the same
        schema with ``zarr:`` sources, columns as arrays of their own).

    Raises
    ------
    ValidationError
        When the tree does not match the schema; the message names the JSON path of the
        most relevant error, e.g. ``image.yx0`` or ``mask.data[1].source``.
    """
    validator = _validator(scheme)
    if validator.is_valid(tree):
        return
    error = best_match(validator.iter_errors(tree))
    if error is None:  # pragma: no cover - is_valid and iter_errors always agree
        return
    path, detail = _describe(error)
    where = path or "the top level"
    prefix = f"{shown_url(url)}: " if url is not None else ""
    raise ValidationError(f"{prefix}JSON tree does not match {SCHEMA_NAME} {SCHEMA_VERSION} at {where}: {detail}")
