"""The JSON Schema (draft 2020-12) of a desired-state document, from the field table.

Generated from :mod:`cloudctl.state.fields`, the table the loader checks documents with, so
editors (yaml-language-server: ``# yaml-language-server: $schema=cloudctl.schema.json``)
complete and check exactly what ``cloudctl validate`` accepts, references and names in
cloudctl's SQL aside. One schema covers every kind: an ``if``/``then`` per ``kind`` picks
the spec.
"""

from __future__ import annotations

from typing import Any

from cloudctl.domain.validation import PROPERTY_KEY_RE
from cloudctl.state import fields as F
from cloudctl.state.model import API_VERSION, HINTS, KINDS

SCHEMA_ID = "https://cloudctl.dev/schemas/v1/document.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The schema of one document (apply it to every document of a file)."""
    defs: dict[str, Any] = {
        "labels": _str_map("Free labels."),
        "metadata": {
            "type": "object",
            "description": "The object's name (unique per kind) and labels.",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {f.name: _field(f) for f in F.METADATA.fields if f.name != "labels"}
            | {"labels": {"$ref": "#/$defs/labels"}},
        },
    }
    branches: list[dict[str, Any]] = []
    for kind, info in F.KINDS.items():
        defs[kind] = _shape(info.shape, f"{kind}: {info.description}")
        then: dict[str, Any] = {
            "properties": {
                "metadata": {"properties": {"name": {"pattern": info.name_pattern}}},
                "spec": {"$ref": f"#/$defs/{kind}"},
            }
        }
        if _needs_spec(info.shape):
            then["required"] = ["spec"]
        branches.append(
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": then,
            }
        )
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": "cloudctl desired-state document",
        "description": "One YAML document of a cloudctl estate (cloudctl validate / plan / apply).",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": API_VERSION, "description": "Always " + API_VERSION + "."},
            "kind": {"enum": list(KINDS), "description": "What the document declares."},
            "metadata": {"$ref": "#/$defs/metadata"},
            "spec": {"type": "object", "description": "The kind's fields."},
        },
        "allOf": branches,
        "$defs": defs,
    }


def _needs_spec(shape: F.Shape) -> bool:
    return any(f.required for f in shape.fields) or any(
        isinstance(r, F.AtLeastOne) for r in shape.rules
    )


def _str_map(description: str, max_length: int | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "propertyNames": {"pattern": PROPERTY_KEY_RE.pattern},
        "additionalProperties": {"type": "string", "maxLength": max_length or 1024},
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Optional fields without a default may be written as null (= not set)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _field(field: F.Field) -> dict[str, Any]:
    schema: dict[str, Any]
    if field.type is F.T.OBJECT and field.shape is not None:
        schema = _shape(field.shape, field.description)
    elif field.type is F.T.STR_MAP:
        schema = _str_map(field.description, field.max_length)
    elif field.type is F.T.STR_LIST:
        item: dict[str, Any] = {"type": "string"}
        if field.pattern:
            item["pattern"] = field.pattern
        schema = {"type": "array", "description": field.description, "items": item}
    elif field.type is F.T.HINTS:
        names = {"type": "string", "minLength": 1}
        schema = {
            "type": "object",
            "description": field.description,
            "propertyNames": {"enum": list(HINTS)},
            "additionalProperties": {
                "oneOf": [names, {"type": "array", "items": names, "minItems": 1}]
            },
        }
    else:
        schema = {"type": field.type.value, "description": field.description}
        if field.choices:
            schema["enum"] = list(field.choices)
        if field.pattern:
            schema["pattern"] = field.pattern
        if field.max_length is not None:
            schema["maxLength"] = field.max_length
        if field.minimum is not None:
            schema["minimum"] = field.minimum
        if field.maximum is not None:
            schema["maximum"] = field.maximum
    if field.default is not None and field.default not in ({}, ()):
        schema["default"] = field.default
    if not field.required and field.default is None:
        schema = _nullable(schema)
    return schema


def _rule(rule: F.Rule, shape: F.Shape) -> dict[str, Any]:
    if isinstance(rule, F.Needs):
        return {"dependentRequired": {rule.field: [rule.other]}}
    if isinstance(rule, F.Conflicts):
        return {
            "if": {"required": [rule.field]},
            "then": {"not": {"anyOf": [{"required": [o]} for o in rule.others]}},
        }
    if isinstance(rule, F.AtLeastOne):
        return {"anyOf": [{"required": [f]} for f in rule.fields]}
    if isinstance(rule, F.OnlyWhen):
        then: dict[str, Any] = {"properties": {rule.other: {"enum": list(rule.values)}}}
        other = shape.field(rule.other)
        if other is None or other.default not in rule.values:
            then["required"] = [rule.other]
        return {"if": {"required": [rule.field]}, "then": then}
    return {
        "if": {"properties": {rule.other: {"enum": list(rule.values)}}, "required": [rule.other]},
        "then": {"required": [rule.field]},
    }


def _shape(shape: F.Shape, description: str) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": {f.name: _field(f) for f in shape.fields},
    }
    required = [f.name for f in shape.fields if f.required]
    if required:
        schema["required"] = required
    if shape.rules:
        schema["allOf"] = [_rule(r, shape) for r in shape.rules]
    return schema
