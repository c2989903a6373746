"""The loader: YAML text -> typed documents with the line of every key; the model's helpers."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.state import (
    DesiredServer,
    Estate,
    FlavorSpec,
    ImageSpec,
    InvalidEstate,
    Location,
    Placement,
    Problem,
    ServerSpec,
    expand,
    expand_names,
    load_estate,
    loader,
    model,
    parse,
)
from cloudctl.state import fields as F

H = "apiVersion: cloudctl.dev/v1\n"
ESTATE = f"""\
# a comment first
{H}kind: Flavor
metadata:
  name: m1
  labels:
    size: small
spec:
  vcpus: 2
  ram_mb: 512
  disk_gb: 4
  extra_specs:
    hw:cpu_policy: shared
---
{H}kind: Server
metadata:
  name: web
spec:
  flavor: m1
  image: tiny
  replicas: 3
  hints:
    same_host: "a, b"
    different_host: [c]
  placement:
    host: preferred
    host_name: lab-1
---
---
{H}kind: Image
metadata: {{name: tiny}}
spec: {{source: tiny}}
"""


def test_values_defaults_and_labels() -> None:
    flavor, web, tiny = parse(ESTATE, "a.yaml")
    assert flavor.spec == FlavorSpec(
        vcpus=2, ram_mb=512, disk_gb=4, extra_specs={"hw:cpu_policy": "shared"}
    )
    assert (flavor.kind, flavor.name, flavor.labels) == ("Flavor", "m1", {"size": "small"})
    assert web.spec == ServerSpec(
        flavor="m1",
        image="tiny",
        replicas=3,
        hints={"same_host": ("a", "b"), "different_host": ("c",)},
        placement=Placement(host="preferred", host_name="lab-1"),
    )
    assert web.spec.power_state == "running" and web.spec.metadata == {} and web.labels == {}
    assert tiny.spec == ImageSpec(source="tiny")
    assert all(d.ok for d in (flavor, web, tiny))


def test_locations_of_documents_and_fields() -> None:
    flavor, web, tiny = parse(ESTATE, "dir/a.yaml")
    assert flavor.location == Location("dir/a.yaml", 2)
    assert str(flavor.location) == "dir/a.yaml:2"
    assert flavor.at("metadata.name") == Location("dir/a.yaml", 5)
    assert flavor.at("spec.extra_specs.hw:cpu_policy").line == 13
    assert web.location.line == 15
    assert web.at("spec.flavor").line == 20
    assert web.at("spec.placement.host_name").line == 28
    assert web.at("spec.hints.different_host").line == 25
    # not written: the nearest written parent, else the document
    assert web.at("spec.power_state").line == 19
    assert web.at("spec.placement.nothing").line == 26
    assert web.at("nowhere").line == 15
    assert web.has("spec.replicas") and not web.has("spec.key")
    assert tiny.at("spec.source").line == 34


def test_defaults_of_every_kind() -> None:
    text = "---\n".join(
        f"{H}kind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        for kind, name, spec in [
            ("Network", "n", "{cidr: 10.0.0.0/24}"),
            ("Quota", "default", "{}"),
            ("Host", "lab-1", "null"),
            ("ServerGroup", "g", "{policy: affinity}"),
            ("KeyPair", "k", "{public_key: 'ssh-ed25519 AAAA k'}"),
            ("Server", "s", "{flavor: f, image: i}"),
        ]
    )
    net, quota, host, group, key, server = parse(text, "a.yaml")
    assert net.spec == model.NetworkSpec(
        cidr="10.0.0.0/24", gateway=None, dns=(), bridge="cloudbr0"
    )
    assert quota.spec == model.QuotaSpec(None, None, None)
    assert host.spec == model.HostSpec(None, None, None, None)
    assert group.spec == model.ServerGroupSpec("affinity", None)
    assert key.spec.public_key == "ssh-ed25519 AAAA k"
    assert server.spec.placement == Placement("free", None)
    assert server.spec.replicas == 1 and server.spec.power_state == "running"


def test_null_means_not_set_for_optional_fields() -> None:
    text = f"{H}kind: Server\nmetadata: {{name: s}}\nspec: {{flavor: f, image: i, key: null, replicas: ~, metadata: null}}\n"
    (doc,) = parse(text, "a.yaml")
    assert (doc.spec.key, doc.spec.replicas, doc.spec.metadata) == (None, 1, {})
    host = f"{H}kind: Host\nmetadata: {{name: h}}\nspec: {{labels: {{}}, enabled: false}}\n"
    (doc,) = parse(host, "a.yaml")
    assert doc.spec.labels == {} and doc.spec.enabled is False  # {} clears; absent leaves


def test_anchors_and_merge_keys() -> None:
    text = f"""\
{H}kind: Server
metadata:
  name: a
  labels: &common
    team: shop
    tier: web
spec:
  flavor: m1
  image: tiny
  metadata:
    <<: *common
    tier: frontend
  hints: {{same_host: &peers [x, y], different_host: *peers}}
"""
    (doc,) = parse(text, "a.yaml")
    assert doc.labels == {"team": "shop", "tier": "web"}
    assert doc.spec.metadata == {"team": "shop", "tier": "frontend"}
    assert doc.spec.hints == {"same_host": ("x", "y"), "different_host": ("x", "y")}
    assert doc.at("spec.metadata.tier").line == 13
    assert doc.at("spec.metadata.team").line == 6  # merged in: where it was written
    dup = text.replace("    tier: frontend\n", "    tier: frontend\n    tier: backend\n")
    assert [str(p) for p in loader.parse_file(dup, "a.yaml")[1]] == [
        "a.yaml:14: spec.metadata.tier: duplicate key (first at line 13)"
    ]
    twice = f"{H}kind: Server\nmetadata:\n  name: a\n  labels: &l {{<<: {{a: x}}, a: y}}\nspec: {{flavor: f, image: i, metadata: *l}}\n"
    (doc,) = parse(twice, "a.yaml")
    assert doc.labels == doc.spec.metadata == {"a": "y"}
    undefined = f"{H}kind: Server\nmetadata: {{name: a}}\nspec: {{<<: *nope}}\n"
    assert [str(p) for p in loader.parse_file(undefined, "a.yaml")[1]] == [
        "a.yaml:4: invalid YAML: found undefined alias 'nope'"
    ]


def test_a_broken_document_is_kept_with_its_broken_paths() -> None:
    text = f"{H}kind: Server\nmetadata: {{name: s}}\nspec: {{flavor: f, image: i, replicas: x}}\n"
    docs, problems = loader.parse_file(text, "a.yaml")
    assert [str(p) for p in problems] == ['a.yaml:4: spec.replicas: expected an integer, got "x"']
    (doc,) = docs
    assert not doc.ok and doc.broken == {"spec.replicas"} and doc.spec.replicas == 1
    with pytest.raises(InvalidEstate) as caught:
        parse(text, "a.yaml")
    assert caught.value.problems == tuple(problems)


def test_documents_without_a_kind_or_name_are_dropped() -> None:
    text = f"{H}kind: Nope\nmetadata: {{name: s}}\n---\n{H}kind: Quota\nmetadata: {{}}\n"
    docs, problems = loader.parse_file(text, "a.yaml")
    assert docs == [] and len(problems) == 2


def test_tags_and_unreadable_text() -> None:
    text = f"{H}kind: Server\nmetadata: {{name: s}}\nspec: {{flavor: !custom f, image: i}}\n"
    _, problems = loader.parse_file(text, "a.yaml")
    assert [str(p) for p in problems] == [
        "a.yaml:4: spec.flavor: expected a string, got a value tagged !custom"
    ]
    _, problems = loader.parse_file(f"{H}kind: Server\n\x07\n", "a.yaml")
    assert len(problems) == 1 and problems[0].location == Location("a.yaml", 3)
    assert problems[0].message.startswith("invalid YAML: ")


@pytest.mark.parametrize(
    "text",
    ["a: 1\n b: 2\n", "a: [1,\n", "a: 'x\n", "- a\nb: 1\n", "a: 1\n\tb: 2\n", "{a: 1}}\n"],
)
def test_yaml_errors_do_not_depend_on_libyaml(text: str) -> None:
    fast = loader.parse_file(text, "a.yaml")[1]
    slow = loader._parse(text, "a.yaml", yaml.SafeLoader)[1]
    assert fast == slow and fast[-1].message.startswith("invalid YAML: ")


def test_problems_print_and_serialise() -> None:
    p = Problem(Location("a.yaml", 3), "spec.flavor", 'unknown flavor "x"')
    assert str(p) == 'a.yaml:3: spec.flavor: unknown flavor "x"'
    assert str(Problem(Location("a.yaml", 1), "", "bad")) == "a.yaml:1: bad"
    assert p.to_dict() == {
        "file": "a.yaml",
        "line": 3,
        "path": "spec.flavor",
        "message": 'unknown flavor "x"',
        "text": 'a.yaml:3: spec.flavor: unknown flavor "x"',
    }
    assert sorted([p, Problem(Location("a.yaml", 2), "z", "z")])[0].location.line == 2


@pytest.mark.parametrize(
    ("name", "replicas", "pattern", "expected"),
    [
        ("web", 1, None, ["web"]),
        ("web", 3, None, ["web-1", "web-2", "web-3"]),
        ("web", 1, "{name}-{index}", ["web-1"]),
        ("web", 0, None, []),
        ("db", 2, "{name}-{index:02d}", ["db-01", "db-02"]),
        ("x", 2, "node{index}-{name}", ["node1-x", "node2-x"]),
    ],
)
def test_expand_names(name: str, replicas: int, pattern: str | None, expected: list[str]) -> None:
    assert expand_names(name, replicas, pattern) == expected


@pytest.mark.parametrize("pattern", ["{name}-{i}", "{name.upper}", "{name!r}", "{", "{index:q}"])
def test_bad_name_patterns(pattern: str) -> None:
    assert model.name_pattern_problem(pattern) is not None
    with pytest.raises(ValueError):
        expand_names("web", 2, pattern)


def test_expand_and_the_estate() -> None:
    estate = load_estate(
        [
            ("a.yaml", ESTATE),
            (
                "b.yaml",
                f"{H}kind: Server\nmetadata: {{name: db}}\nspec: {{flavor: m1, image: tiny}}\n",
            ),
            (
                "c.yaml",
                f"{H}kind: Flavor\nmetadata: {{name: m1}}\nspec: {{vcpus: 9, ram_mb: 1, disk_gb: 1}}\n",
            ),
        ]
    )
    assert estate.files == ("a.yaml", "b.yaml", "c.yaml") and estate.problems == ()
    web = estate.servers["web"]
    assert expand(web) == [DesiredServer(f"web-{i}", i, web) for i in (1, 2, 3)]
    assert [(s.name, s.index, s.server) for s in estate.desired_servers()] == [
        ("web-1", 1, "web"),
        ("web-2", 2, "web"),
        ("web-3", 3, "web"),
        ("db", 1, "db"),
    ]
    first = estate.desired_servers()[0]
    assert first.spec is web.spec and first.location == web.location
    # duplicates: the lookups give the first, of_kind gives both
    assert estate.flavors["m1"].spec.vcpus == 2 and len(estate.of_kind("Flavor")) == 2
    assert estate.get(FlavorSpec, "m1") is estate.flavors["m1"]
    assert estate.get(ImageSpec, "nope") is None
    assert estate.declares("Image", "tiny") and not estate.declares("Image", "m1")
    assert set(estate.images) == {"tiny"} and estate.networks == {} and estate.hosts == {}
    assert estate.keypairs == {} and estate.server_groups == {} and estate.quotas == {}
    assert Estate().desired_servers() == []


def test_paths_resolve_against_the_declaring_file() -> None:
    (doc,) = parse(
        f"{H}kind: Image\nmetadata: {{name: i}}\nspec: {{file: ../disk.qcow2}}\n",
        "estate/img/a.yaml",
    )
    assert doc.resolve_path("../disk.qcow2") == "estate/disk.qcow2"
    assert doc.resolve_path("/srv/disk.qcow2") == "/srv/disk.qcow2"


def _dataclass_defaults(cls: type[Any]) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize("kind", model.KINDS)
def test_the_field_table_matches_the_dataclasses(kind: str) -> None:
    info = F.KINDS[kind]
    shapes = [info.shape, *(f.shape for f in info.shape.fields if f.shape is not None)]
    assert info.shape.cls is model.KIND_SPECS[kind]
    for shape in shapes:
        assert shape.names == tuple(f.name for f in dataclasses.fields(shape.cls))
        defaults = _dataclass_defaults(shape.cls)
        for field in shape.fields:
            assert field.required == (field.name not in defaults), field.name
            if not field.required and field.type is not F.T.OBJECT:
                assert loader._fresh(field.default) == defaults[field.name], field.name
            assert field.description, field.name
    assert tuple(F.KINDS) == model.KINDS


ALLOWED_IMPORTS = ("cloudctl.state", "cloudctl.domain", "cloudctl.errors", "yaml", "__future__")


def test_the_state_package_is_pure() -> None:
    """stdlib + pyyaml + cloudctl.domain/errors only: no database, no CLI, no services."""
    root = Path(model.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert name.startswith(ALLOWED_IMPORTS) or top in sys.stdlib_module_names, (
                    f"{path.name} imports {name}"
                )
