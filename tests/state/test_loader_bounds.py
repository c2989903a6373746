"""Hostile desired-state text ends as problems with their lines, never as an exception: nesting
depth, merge-key bombs, numbers that do not fit their SQL column, scalars PyYAML cannot build."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from cloudctl.state import Location, json_schema, loader
from cloudctl.state import fields as F

H = "apiVersion: cloudctl.dev/v1\n"
FLAVOR = f"{H}kind: Flavor\nmetadata: {{name: m1}}\n"
LOADERS = {"libyaml": loader._FAST_LOADER, "pure Python": loader._SAFE_LOADER}


def problems(text: str, load: Any = None) -> list[str]:
    found = loader._parse(text, "a.yaml", load or loader._FAST_LOADER)[1]
    return [str(p) for p in found]


def nested_flow(depth: int) -> str:
    """``x:`` holding ``depth`` nested flow lists (with the document's mapping, ``depth + 1``)."""
    return f"{FLAVOR}spec: {{vcpus: 1, ram_mb: 1, disk_gb: 1}}\nx: " + "[" * depth + "]" * depth


def nested_block(depth: int) -> str:
    """``x:`` holding ``depth`` nested block mappings (with the document's, ``depth + 1``)."""
    body = "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(depth))
    return f"{FLAVOR}spec: {{vcpus: 1, ram_mb: 1, disk_gb: 1}}\nx:\n{body}{'  ' * (depth + 1)}v\n"


#: (label, text, the one problem about nesting; None: nesting is fine).
DEPTHS = [
    ("flow, 64 levels", nested_flow(63), None),
    ("flow, 65 levels", nested_flow(64), "a.yaml:5: nested more than 64 levels deep"),
    ("flow, 100001 levels", nested_flow(100_000), "a.yaml:5: nested more than 64 levels deep"),
    ("block, 64 levels", nested_block(63), None),
    # the 65th level is the mapping whose first key, k63, is on line 6 + 63
    ("block, 65 levels", nested_block(64), "a.yaml:69: nested more than 64 levels deep"),
    ("block, 2001 levels", nested_block(2000), "a.yaml:69: nested more than 64 levels deep"),
]


@pytest.mark.parametrize("which", list(LOADERS))
@pytest.mark.parametrize(("text", "expected"), [d[1:] for d in DEPTHS], ids=[d[0] for d in DEPTHS])
def test_nesting_depth_is_bounded(which: str, text: str, expected: str | None) -> None:
    found = [p for p in problems(text, LOADERS[which]) if "nested" in p]
    assert found == ([] if expected is None else [expected])


def test_a_deep_document_stops_the_file_with_the_documents_before_it() -> None:
    good = f"{FLAVOR}spec: {{vcpus: 1, ram_mb: 1, disk_gb: 1}}\n"
    docs, found = loader.parse_file(good + "---\n" + nested_flow(100_000), "a.yaml")
    assert [d.name for d in docs] == ["m1"]
    assert [(p.location, p.message) for p in found] == [
        (Location("a.yaml", 10), "nested more than 64 levels deep")
    ]


def merge_bomb(levels: int) -> str:
    """Each level merges the one before twice: 2**levels entries from a few lines."""
    lines = ["x:", "  - &a0 {k0: 1, k1: 2}"]
    lines += [f"  - &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, levels + 1)]
    return f"{FLAVOR}" + "\n".join(lines) + f"\nspec:\n  <<: *a{levels}\n  vcpus: 1\n"


def merge_chain(levels: int) -> str:
    lines = ["x:", "  - &a0 {k: 1}"]
    lines += [f"  - &a{i} {{<<: *a{i - 1}}}" for i in range(1, levels + 1)]
    return f"{FLAVOR}" + "\n".join(lines) + f"\nspec:\n  <<: *a{levels}\n  vcpus: 1\n"


MERGES = [
    ("bomb of 2**25 entries", merge_bomb(25), "spec: merge keys (<<) give more than 10000 entries"),
    (
        "a mapping merged into itself",
        f"{FLAVOR}spec: &s\n  <<: *s\n",
        "spec: merge keys (<<) merge",
    ),
    # nesting is counted with aliases followed: each merge is a level
    ("chain of 200 merges", merge_chain(200), "nested more than 64 levels deep"),
    ("bomb of 2**40 entries", merge_bomb(40), "nested more than 64 levels deep"),
]


@pytest.mark.parametrize(("text", "why"), [m[1:] for m in MERGES], ids=[m[0] for m in MERGES])
def test_merge_keys_cannot_explode(text: str, why: str) -> None:
    started = time.monotonic()
    found = problems(text)
    assert time.monotonic() - started < 5
    assert any(why in p and p.startswith("a.yaml:") for p in found), found


def test_ordinary_merge_keys_still_work() -> None:
    text = f"x: &base {{vcpus: 2, ram_mb: 64}}\n{FLAVOR}spec:\n  <<: *base\n  disk_gb: 1\n"
    docs, found = loader.parse_file(text, "a.yaml")
    assert [p.message for p in found if "merge" in p.message] == []
    assert (docs[0].spec.vcpus, docs[0].spec.ram_mb, docs[0].spec.disk_gb) == (2, 64, 1)


def _int_fields() -> list[tuple[str, str, F.Field]]:
    out = []
    for kind, info in F.KINDS.items():
        for field in info.shape.fields:
            if field.type is F.T.INT:
                out.append((kind, field.name, field))
    return out


INT_FIELDS = _int_fields()


def test_every_integer_field_fits_an_sql_integer() -> None:
    assert INT_FIELDS, "the kinds have integer fields"
    for _, _, field in INT_FIELDS:
        assert field.minimum is not None and field.maximum is not None
        assert field.minimum >= F.INT_MIN and field.maximum <= F.INT_MAX == 2**31 - 1


@pytest.mark.parametrize(
    ("kind", "name", "field"), INT_FIELDS, ids=[f"{k}.{n}" for k, n, _ in INT_FIELDS]
)
def test_out_of_range_integers_are_problems(kind: str, name: str, field: F.Field) -> None:
    assert field.maximum is not None and field.minimum is not None
    head = f"{H}kind: {kind}\nmetadata: {{name: x}}\nspec:\n"
    too_big = field.maximum + 1
    line = f"a.yaml:5: spec.{name}: must be <= {field.maximum}, got {too_big}"
    assert line in problems(f"{head}  {name}: {too_big}\n")
    huge = "9" * 5000  # more digits than Python turns into an int by default
    assert (
        f'a.yaml:5: spec.{name}: must be between {field.minimum} and {field.maximum}, got "999'
        in "\n".join(problems(f"{head}  {name}: {huge}\n"))
    )
    hexed = "0x" + "f" * 40
    assert f"a.yaml:5: spec.{name}: must be <= {field.maximum}, got 146150163733" in "\n".join(
        problems(f"{head}  {name}: {hexed}\n")
    )
    low = f"a.yaml:5: spec.{name}: must be >= {field.minimum}, got -2147483649"
    if field.minimum == F.INT_MIN:
        assert low in problems(f"{head}  {name}: -2147483649\n")


def test_the_schema_says_the_same_range() -> None:
    defs = json_schema()["$defs"]
    for kind, name, field in INT_FIELDS:
        prop = defs[kind]["properties"][name]
        assert (prop["minimum"], prop["maximum"]) == (field.minimum, field.maximum)


UNBUILDABLE = [
    ("a date that is no date", "labels: {a: 2026-13-45}", "metadata.labels.a: expected a string"),
    (
        "an integer of 5000 digits",
        "labels: {a: " + "1" * 5000 + "}",
        "metadata.labels.a: expected a string",
    ),
]


@pytest.mark.parametrize(
    ("text", "said"), [u[1:] for u in UNBUILDABLE], ids=[u[0] for u in UNBUILDABLE]
)
def test_scalars_pyyaml_cannot_build_are_problems(text: str, said: str) -> None:
    doc = f"{H}kind: Flavor\nmetadata: {{name: m1, {text}}}\nspec: {{vcpus: 1, ram_mb: 1, disk_gb: 1}}\n"
    assert any(said in p for p in problems(doc))


def test_libyaml_is_what_runs_here() -> None:
    assert getattr(yaml, "__with_libyaml__", False), "the fast path is tested only with libyaml"


#: Strings stored in a String(255) column: one character more is a problem, not a driver error.
LENGTHS = [
    (
        f"{H}kind: Host\nmetadata: {{name: h1}}\nspec:\n  enabled: false\n"
        f"  disabled_reason: {'r' * 256}\n",
        "a.yaml:6: spec.disabled_reason: must be at most 255 characters, got 256",
    ),
    (
        f"{FLAVOR}spec:\n  vcpus: 1\n  ram_mb: 1\n  disk_gb: 1\n  extra_specs:\n"
        f"    hw:cpu_policy: {'d' * 256}\n",
        "a.yaml:9: spec.extra_specs.hw:cpu_policy: must be at most 255 characters, got 256",
    ),
]


@pytest.mark.parametrize(("text", "said"), LENGTHS)
def test_strings_fit_their_sql_column(text: str, said: str) -> None:
    assert said in problems(text)
    assert problems(text.replace("r" * 256, "r" * 255).replace("d" * 256, "d" * 255)) == []
