"""The JSON Schema: generated from the field table, and agreeing with the loader.

``jsonschema`` is not a dependency: a small evaluator of the keywords the schema uses checks
that the example estate and the valid documents pass and that malformed ones fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.state import KINDS, json_schema
from cloudctl.state import fields as F

from .test_validate import CASES, EXAMPLES, H, server

SCHEMA = json_schema()

#: Every keyword the evaluator below understands; the schema must use no other.
KEYWORDS = {
    "$schema", "$id", "$defs", "$ref", "title", "description", "default", "type", "const",
    "enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "properties",
    "additionalProperties", "required", "propertyNames", "dependentRequired", "items",
    "minItems", "allOf", "anyOf", "oneOf", "not", "if", "then",
}  # fmt: skip
TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
    "null": type(None),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer" and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[kind])


def valid(schema: dict[str, Any] | bool, value: Any, root: dict[str, Any] = SCHEMA) -> bool:
    """Whether ``value`` satisfies ``schema`` (draft 2020-12, the keywords in KEYWORDS)."""
    if isinstance(schema, bool):
        return schema
    checks: list[bool] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/")
        checks.append(valid(root["$defs"][ref.removeprefix("#/$defs/")], value, root))
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        checks.append(any(_is(value, k) for k in kinds))
    if "const" in schema:
        checks.append(value == schema["const"])
    if "enum" in schema:
        checks.append(value in schema["enum"])
    if isinstance(value, str):
        if "pattern" in schema:
            checks.append(re.search(schema["pattern"], value) is not None)
        checks.append(len(value) >= schema.get("minLength", 0))
        checks.append(len(value) <= schema.get("maxLength", len(value)))
    if isinstance(value, int) and not isinstance(value, bool):
        checks.append(value >= schema.get("minimum", value))
        checks.append(value <= schema.get("maximum", value))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                checks.append(valid(props[key], item, root))
            elif "additionalProperties" in schema:
                checks.append(valid(schema["additionalProperties"], item, root))
            if "propertyNames" in schema:
                checks.append(valid(schema["propertyNames"], key, root))
        checks.append(all(k in value for k in schema.get("required", [])))
        for key, needed in schema.get("dependentRequired", {}).items():
            checks.append(key not in value or all(n in value for n in needed))
    if isinstance(value, list):
        checks.append(len(value) >= schema.get("minItems", 0))
        if "items" in schema:
            checks.extend(valid(schema["items"], v, root) for v in value)
    checks.extend(valid(s, value, root) for s in schema.get("allOf", []))
    if "anyOf" in schema:
        checks.append(any(valid(s, value, root) for s in schema["anyOf"]))
    if "oneOf" in schema:
        checks.append(sum(valid(s, value, root) for s in schema["oneOf"]) == 1)
    if "not" in schema:
        checks.append(not valid(schema["not"], value, root))
    if "if" in schema and valid(schema["if"], value, root):
        checks.append(valid(schema.get("then", True), value, root))
    return all(checks)


def _keywords(schema: Any, out: set[str]) -> set[str]:
    if isinstance(schema, dict):
        for key, sub in schema.items():
            out.add(key)
            if key in ("properties", "$defs", "dependentRequired"):
                for inner in sub.values():
                    _keywords(inner, out)
            elif key not in ("enum", "const", "default", "required"):
                _keywords(sub, out)
    elif isinstance(schema, list):
        for sub in schema:
            _keywords(sub, out)
    return out


def documents(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_structure() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(json.dumps(SCHEMA)) == SCHEMA
    assert SCHEMA["properties"]["kind"]["enum"] == list(KINDS)
    assert SCHEMA["properties"]["apiVersion"] == {
        "const": "cloudctl.dev/v1",
        "description": "Always cloudctl.dev/v1.",
    }
    branches = {b["if"]["properties"]["kind"]["const"]: b["then"] for b in SCHEMA["allOf"]}
    assert list(branches) == list(KINDS)
    for kind, info in F.KINDS.items():
        spec = SCHEMA["$defs"][kind]
        assert list(spec["properties"]) == list(info.shape.names)
        assert spec.get("required", []) == [f.name for f in info.shape.fields if f.required]
        assert spec["additionalProperties"] is False
        assert branches[kind]["properties"]["spec"] == {"$ref": f"#/$defs/{kind}"}
        assert branches[kind]["properties"]["metadata"]["properties"]["name"]["pattern"] == (
            info.name_pattern
        )
    server_spec = SCHEMA["$defs"]["Server"]["properties"]
    assert server_spec["power_state"]["enum"] == ["running", "stopped", "paused"]
    assert server_spec["power_state"]["default"] == "running"
    assert server_spec["replicas"] == {
        "type": "integer",
        "description": "How many servers.",
        "minimum": 0,
        "maximum": 100000,
        "default": 1,
    }
    assert server_spec["key"]["type"] == ["string", "null"]
    assert server_spec["placement"]["properties"]["host"]["enum"] == ["pinned", "preferred", "free"]


def test_only_known_keywords() -> None:
    assert _keywords(SCHEMA, set()) <= KEYWORDS


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_validate(path: Path) -> None:
    for doc in documents(path.read_text()):
        assert valid(SCHEMA, doc), doc


VALID = [c for c in CASES if not c[2] and isinstance(c[1], str)]


@pytest.mark.parametrize("text", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_documents_the_validator_accepts_pass(text: str) -> None:
    for doc in documents(text):
        assert valid(SCHEMA, doc), doc


INVALID = {
    "unknown field": server("flavor: m1, image: tiny, flavour: m1"),
    "wrong type": server("flavor: m1, image: tiny, replicas: three"),
    "out of range": server("flavor: m1, image: tiny, replicas: -1"),
    "choice": server("flavor: m1, image: tiny, power_state: off"),
    "missing required": server("image: tiny"),
    "bad server name": server("flavor: m1, image: tiny", name="Web"),
    "pinned without host_name": server("flavor: m1, image: tiny, placement: {host: pinned}"),
    "host_name when free": server("flavor: m1, image: tiny, placement: {host_name: lab-1}"),
    "unknown hint": server("flavor: m1, image: tiny, hints: {near: a}"),
    "metadata value": server("flavor: m1, image: tiny, metadata: {a: 1}"),
    "unknown kind": f"{H}kind: Pod\nmetadata: {{name: x}}\n",
    "apiVersion": "apiVersion: v1\nkind: Quota\nmetadata: {name: x}\n",
    "no apiVersion": "kind: Quota\nmetadata: {name: x}\n",
    "no name": f"{H}kind: Quota\nmetadata: {{labels: {{}}}}\n",
    "unknown top-level": f"{H}kind: Quota\nmetadata: {{name: x}}\nstatus: {{}}\n",
    "flavor without spec": f"{H}kind: Flavor\nmetadata: {{name: x}}\n",
    "image without a source": f"{H}kind: Image\nmetadata: {{name: x}}\nspec: {{}}\n",
    "image source and file": f"{H}kind: Image\nmetadata: {{name: x}}\nspec: {{source: tiny, file: a}}\n",
    "initrd without kernel": f"{H}kind: Image\nmetadata: {{name: x}}\nspec: {{file: a, initrd: b}}\n",
    "max_per_host with affinity": f"{H}kind: ServerGroup\nmetadata: {{name: x}}\n"
    "spec: {policy: affinity, max_per_host: 2}\n",
    "disabled_reason when enabled": f"{H}kind: Host\nmetadata: {{name: x}}\n"
    "spec: {enabled: true, disabled_reason: r}\n",
    "disabled_reason alone": f"{H}kind: Host\nmetadata: {{name: x}}\nspec: {{disabled_reason: r}}\n",
    "bool as string": f"{H}kind: Host\nmetadata: {{name: x}}\nspec: {{enabled: 'yes'}}\n",
}


@pytest.mark.parametrize("text", list(INVALID.values()), ids=list(INVALID))
def test_malformed_documents_fail(text: str) -> None:
    from cloudctl.state import load_estate

    (doc,) = documents(text)
    assert not valid(SCHEMA, doc)
    assert load_estate([("a.yaml", text)]).problems  # and the loader agrees
