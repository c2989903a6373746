"""validate(): every problem of an estate, one line each, from a table of files -> lines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from cloudctl.state import Known, load_estate, validate
from cloudctl.state.model import InvalidEstate
from cloudctl.state.validate import require_valid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "estate"
#: What cloudctl's SQL holds in these tests: the 4-host lab of `lab up --hosts 4 --azs 2`.
KNOWN = Known(
    flavors=frozenset({"m1", "m1.huge"}),
    images=frozenset({"tiny"}),
    keypairs=frozenset({"k"}),
    server_groups=frozenset({"g"}),
    networks=frozenset({"default"}),
    hosts={"lab-1": "az1", "lab-2": "az2", "lab-3": "az1", "lab-4": "az2"},
)
H = "apiVersion: cloudctl.dev/v1\n"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"


def server(spec: str, name: str = "web") -> str:
    """A Server document: its spec (flow mapping body) is on line 4."""
    return f"{H}kind: Server\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n"


def docs(*texts: str) -> str:
    """Documents of one file: the second one's spec is on line 9, the third's on 14, ..."""
    return "---\n".join(texts)


def problems(files: str | Mapping[str, str], known: Known = KNOWN) -> list[str]:
    pairs = [("a.yaml", files)] if isinstance(files, str) else list(files.items())
    return [str(p) for p in validate(load_estate(pairs), known)]


CASES: list[tuple[str, str | Mapping[str, str], list[str]]] = [
    ("valid server, names from cloudctl", server("flavor: m1, image: tiny, key: k, group: g"), []),
    (
        "valid, names from the files",
        {
            "a.yaml": f"{H}kind: Flavor\nmetadata: {{name: f1}}\nspec: {{vcpus: 1, ram_mb: 64, disk_gb: 0}}\n"
            f"---\n{H}kind: Image\nmetadata: {{name: i1}}\nspec: {{source: tiny}}\n"
            f"---\n{H}kind: KeyPair\nmetadata: {{name: k1}}\nspec: {{public_key: {KEY}}}\n"
            f"---\n{H}kind: ServerGroup\nmetadata: {{name: g1}}\nspec: {{policy: anti-affinity, max_per_host: 2}}\n",
            "b.yaml": server("flavor: f1, image: i1, key: k1, group: g1, replicas: 3"),
        },
        [],
    ),
    (
        "bad YAML",
        f"{H}kind: Server\nmetadata:\n  name: web\n spec: {{}}\n",
        [
            "a.yaml:5: invalid YAML: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block mapping at line 1)"
        ],
    ),
    (
        "bad YAML after a good document: the good one is still checked",
        server("flavor: m1.hge, image: tiny") + "---\nkind: [\n",
        [
            'a.yaml:4: spec.flavor: unknown flavor "m1.hge" (did you mean "m1.huge"?)',
            "a.yaml:7: invalid YAML: expected the node content, but found '<stream end>' "
            "(while parsing a flow node)",
        ],
    ),
    (
        "tab indentation",
        f"{H}kind: Server\n\tmetadata: {{}}\n",
        [
            "a.yaml:3: invalid YAML: found character '\\t' that cannot start any token "
            "(while scanning for the next token)"
        ],
    ),
    (
        "document not a mapping",
        "- a\n- b\n",
        ["a.yaml:1: a document must be a mapping, got a list"],
    ),
    ("scalar document", "hello\n", ['a.yaml:1: a document must be a mapping, got "hello"']),
    ("empty file and empty documents", "# nothing\n---\n---\n", []),
    (
        "missing apiVersion",
        "kind: Quota\nmetadata: {name: default}\n",
        ['a.yaml:1: apiVersion: required field missing (use "cloudctl.dev/v1")'],
    ),
    (
        "unknown apiVersion",
        "apiVersion: cloudctl.dev/v2\nkind: Quota\nmetadata: {name: default}\n",
        ['a.yaml:1: apiVersion: unknown apiVersion "cloudctl.dev/v2"; expected "cloudctl.dev/v1"'],
    ),
    (
        "unknown kind with a suggestion",
        f"{H}kind: Flavour\nmetadata: {{name: x}}\nspec: {{}}\n",
        ['a.yaml:2: kind: unknown kind "Flavour"; did you mean "Flavor"?'],
    ),
    (
        "unknown kind without one",
        f"{H}kind: Pod\nmetadata: {{name: x}}\n",
        [
            'a.yaml:2: kind: unknown kind "Pod" (known: Host, Flavor, Image, Network, KeyPair, '
            "ServerGroup, Quota, Server)"
        ],
    ),
    (
        "missing kind",
        f"{H}metadata: {{name: x}}\n",
        [
            "a.yaml:1: kind: required field missing (one of Host, Flavor, Image, Network, KeyPair, "
            "ServerGroup, Quota, Server)"
        ],
    ),
    (
        "missing metadata",
        f"{H}kind: Quota\nspec: {{instances: 1}}\n",
        ["a.yaml:1: metadata.name: required field missing"],
    ),
    (
        "missing metadata.name",
        f"{H}kind: Quota\nmetadata:\n  labels: {{a: b}}\n",
        ["a.yaml:3: metadata.name: required field missing"],
    ),
    (
        "metadata.name not a string",
        f"{H}kind: Quota\nmetadata: {{name: 12}}\n",
        ["a.yaml:3: metadata.name: expected a string, got 12"],
    ),
    (
        "invalid object name",
        f"{H}kind: Flavor\nmetadata:\n  name: m1 small\nspec: {{vcpus: 1, ram_mb: 1, disk_gb: 1}}\n",
        [
            "a.yaml:4: metadata.name: flavor name 'm1 small' must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
        ],
    ),
    (
        "invalid server name (a DNS label)",
        server("flavor: m1, image: tiny", name="Web_1"),
        [
            "a.yaml:3: metadata.name: instance name 'Web_1' must match ^[a-z0-9][a-z0-9-]{0,62}$ "
            "(lowercase letters, digits and '-', at most 63 characters)"
        ],
    ),
    (
        "unknown top-level field",
        f"{H}kind: Quota\nmetadata: {{name: default}}\nspecs: {{}}\n",
        ['a.yaml:4: specs: unknown field "specs"; did you mean "spec"?'],
    ),
    (
        "unknown metadata field",
        f"{H}kind: Quota\nmetadata: {{name: default, label: {{}}}}\n",
        ['a.yaml:3: metadata.label: unknown field "label"; did you mean "labels"?'],
    ),
    (
        "unknown spec field with and without a suggestion",
        server("flavour: m1, flavor: m1, image: tiny, colour: red"),
        [
            'a.yaml:4: spec.colour: unknown field "colour" (known: flavor, image, replicas, '
            "name_pattern, key, group, availability_zone, hints, user_data, metadata, "
            "power_state, placement)",
            'a.yaml:4: spec.flavour: unknown field "flavour"; did you mean "flavor"?',
        ],
    ),
    (
        "unknown nested field",
        server("flavor: m1, image: tiny, placement: {host: free, hostname: lab-1}"),
        ['a.yaml:4: spec.placement.hostname: unknown field "hostname"; did you mean "host_name"?'],
    ),
    (
        "wrong types",
        server("flavor: m1, image: tiny, replicas: three, user_data: 5, metadata: [a], hints: x"),
        [
            'a.yaml:4: spec.hints: expected a mapping, got "x"',
            "a.yaml:4: spec.metadata: expected a mapping, got a list",
            'a.yaml:4: spec.replicas: expected an integer, got "three"',
            "a.yaml:4: spec.user_data: expected a string, got 5; quote it",
        ],
    ),
    (
        "wrong types, block style: the line of each key",
        f"{H}kind: Flavor\nmetadata: {{name: f}}\nspec:\n  vcpus: 1.5\n  ram_mb: true\n"
        "  disk_gb: null\n  extra_specs:\n    hw:cpu_cores: 2\n  description: 2024-01-01\n",
        [
            "a.yaml:5: spec.vcpus: expected an integer, got 1.5",
            "a.yaml:6: spec.ram_mb: expected an integer, got true",
            "a.yaml:7: spec.disk_gb: expected an integer, got null",
            "a.yaml:9: spec.extra_specs.hw:cpu_cores: expected a string, got 2; quote it",
            "a.yaml:10: spec.description: expected a string, got 2024-01-01 (a date); quote it",
        ],
    ),
    (
        "a bool where a bool belongs, a string where it does not",
        f"{H}kind: Host\nmetadata: {{name: lab-1}}\nspec: {{enabled: maybe, labels: {{a: 1}}}}\n",
        [
            'a.yaml:4: spec.enabled: expected true or false, got "maybe"',
            "a.yaml:4: spec.labels.a: expected a string, got 1; quote it",
        ],
    ),
    (
        "lists",
        f"{H}kind: Network\nmetadata: {{name: n}}\nspec:\n  cidr: 10.0.0.0/24\n  dns:\n"
        "    - 10.0.0.2\n    - not-an-ip\n    - [x]\n",
        [
            "a.yaml:8: spec.dns[1]: 'not-an-ip' is not an IP address",
            "a.yaml:9: spec.dns[2]: expected a string, got a list",
        ],
    ),
    (
        "out of range",
        server("flavor: m1, image: tiny, replicas: -1")
        + f"---\n{H}kind: Flavor\nmetadata: {{name: f}}\nspec: {{vcpus: 0, ram_mb: 1, disk_gb: -1}}\n"
        + f"---\n{H}kind: Quota\nmetadata: {{name: default}}\nspec: {{cores: -2, instances: -1}}\n"
        + f"---\n{H}kind: ServerGroup\nmetadata: {{name: sg}}\nspec: {{policy: anti-affinity, max_per_host: 0}}\n"
        + "---\n"
        + server("flavor: m1, image: tiny, replicas: 100001", name="many"),
        [
            "a.yaml:4: spec.replicas: must be >= 0, got -1",
            "a.yaml:9: spec.disk_gb: must be >= 0, got -1",
            "a.yaml:9: spec.vcpus: must be >= 1, got 0",
            "a.yaml:14: spec.cores: must be >= -1, got -2",
            "a.yaml:19: spec.max_per_host: must be >= 1, got 0",
            "a.yaml:24: spec.replicas: must be <= 100000, got 100001",
        ],
    ),
    (
        "choices",
        server("flavor: m1, image: tiny, power_state: stoped")
        + f"---\n{H}kind: ServerGroup\nmetadata: {{name: sg}}\nspec: {{policy: spread}}\n",
        [
            'a.yaml:4: spec.power_state: must be one of running, stopped or paused, got "stoped" '
            '(did you mean "stopped"?)',
            "a.yaml:9: spec.policy: must be one of affinity, anti-affinity, soft-affinity or "
            'soft-anti-affinity, got "spread"',
        ],
    ),
    (
        "patterns",
        server("flavor: m 1, image: tiny, availability_zone: 'a z'"),
        [
            'a.yaml:4: spec.availability_zone: "a z" must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$',
            'a.yaml:4: spec.flavor: "m 1" must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$',
        ],
    ),
    (
        "missing spec and missing required fields",
        f"{H}kind: Flavor\nmetadata: {{name: f}}\n---\n{H}kind: Server\nmetadata: {{name: s}}\n"
        "spec:\n  replicas: 2\n",
        [
            "a.yaml:1: spec: required field missing",
            "a.yaml:8: spec.flavor: required field missing",
            "a.yaml:8: spec.image: required field missing",
        ],
    ),
    (
        "dangling references",
        server("flavor: m1.hge, image: cirros, key: nokey, group: nogroup"),
        [
            'a.yaml:4: spec.flavor: unknown flavor "m1.hge" (did you mean "m1.huge"?)',
            'a.yaml:4: spec.group: unknown server group "nogroup"',
            'a.yaml:4: spec.image: unknown image "cirros"',
            'a.yaml:4: spec.key: unknown key pair "nokey"',
        ],
    ),
    (
        "dangling reference, block style: the line of the key",
        f"{H}kind: Server\nmetadata:\n  name: web\nspec:\n  image: tiny\n  flavor: m1.hge\n",
        ['a.yaml:7: spec.flavor: unknown flavor "m1.hge" (did you mean "m1.huge"?)'],
    ),
    (
        "pinned and preferred hosts must be registered",
        docs(
            server("flavor: m1, image: tiny, placement: {host: pinned, host_name: lab-9}"),
            server("flavor: m1, image: tiny, placement: {host: preferred, host_name: lab1}", "b"),
        ),
        [
            'a.yaml:4: spec.placement.host_name: unknown host "lab-9"',
            'a.yaml:9: spec.placement.host_name: unknown host "lab1" (did you mean "lab-1"?)',
        ],
    ),
    (
        "pinned without host_name, host_name without pinned",
        docs(
            server("flavor: m1, image: tiny, placement: {host: pinned}"),
            server("flavor: m1, image: tiny, placement: {host_name: lab-1}", "b"),
        ),
        [
            "a.yaml:4: spec.placement.host_name: required when spec.placement.host is pinned",
            "a.yaml:9: spec.placement.host_name: only allowed when spec.placement.host is "
            "pinned or preferred",
        ],
    ),
    (
        "zones: unknown zone, pinned host in another zone",
        docs(
            server("flavor: m1, image: tiny, availability_zone: az3"),
            server(
                "flavor: m1, image: tiny, availability_zone: az2, "
                "placement: {host: pinned, host_name: lab-1}",
                "b",
            ),
        ),
        [
            'a.yaml:4: spec.availability_zone: no host is in availability zone "az3" (zones: az1, az2)',
            'a.yaml:9: spec.placement.host_name: host "lab-1" is in availability zone az1, not az2',
        ],
    ),
    (
        "a Host document moves a host to another zone",
        f"{H}kind: Host\nmetadata: {{name: lab-2}}\nspec: {{availability_zone: az3}}\n---\n"
        + server(
            "flavor: m1, image: tiny, availability_zone: az3, placement: {host: pinned, host_name: lab-2}"
        ),
        [],
    ),
    (
        "Host documents manage registered hosts only",
        f"{H}kind: Host\nmetadata:\n  name: lab-9\nspec: {{enabled: false, disabled_reason: maintenance}}\n",
        [
            'a.yaml:4: metadata.name: unknown host "lab-9"; '
            "a Host document manages a host registered by host add or lab up"
        ],
    ),
    (
        "disabled_reason only when disabled",
        f"{H}kind: Host\nmetadata: {{name: lab-1}}\nspec:\n  enabled: true\n  disabled_reason: x\n",
        ["a.yaml:6: spec.disabled_reason: only allowed when spec.enabled is false"],
    ),
    (
        "duplicate names within a kind, across files",
        {
            "a.yaml": server("flavor: m1, image: tiny"),
            "b.yaml": f"# again\n{H}kind: Server\nmetadata:\n  name: web\nspec: {{flavor: m1, image: tiny}}\n",
        },
        ['b.yaml:5: metadata.name: duplicate Server "web" (first defined at a.yaml:1)'],
    ),
    (
        "the same name in two kinds is fine",
        f"{H}kind: Flavor\nmetadata: {{name: web}}\nspec: {{vcpus: 1, ram_mb: 1, disk_gb: 1}}\n---\n"
        + server("flavor: web, image: tiny"),
        [],
    ),
    (
        "duplicate expanded server names across Server documents",
        docs(
            server("flavor: m1, image: tiny, replicas: 2"),
            server("flavor: m1, image: tiny", name="web-2"),
        ),
        ['a.yaml:8: metadata.name: server "web-2" is also declared by Server "web" (a.yaml:1)'],
    ),
    (
        "name patterns",
        docs(
            server("flavor: m1, image: tiny, replicas: 2, name_pattern: '{name}'"),
            server("flavor: m1, image: tiny, name_pattern: '{name}-{idx}'", "b"),
            server("flavor: m1, image: tiny, replicas: 2, name_pattern: 'X{index}'", "c"),
            server("flavor: m1, image: tiny, replicas: 2, name_pattern: 'c-{index:02d}'", "d"),
        ),
        [
            "a.yaml:4: spec.name_pattern: must contain {index} when replicas is more than 1",
            "a.yaml:9: spec.name_pattern: unknown placeholder {idx}; use {name} and {index}",
            "a.yaml:14: spec.name_pattern: gives \"X1\": instance name 'X1' must match "
            "^[a-z0-9][a-z0-9-]{0,62}$ (lowercase letters, digits and '-', at most 63 characters)",
        ],
    ),
    (
        "replicas: 0 declares no server",
        docs(
            server("flavor: m1, image: tiny, replicas: 0"),
            server("flavor: m1, image: tiny", "web-1"),
        ),
        [],
    ),
    (
        "image sources",
        f"{H}kind: Image\nmetadata: {{name: a}}\nspec: {{min_ram_mb: 1}}\n"
        f"---\n{H}kind: Image\nmetadata: {{name: b}}\nspec:\n  source: tiny\n  file: b.qcow2\n"
        f"---\n{H}kind: Image\nmetadata: {{name: c}}\nspec:\n  kernel: vmlinuz\n  source: cirros\n"
        f"---\n{H}kind: Image\nmetadata: {{name: d}}\nspec:\n  file: d.qcow2\n  initrd: initrd.img\n",
        [
            "a.yaml:4: spec: needs one of spec.source, spec.file or spec.kernel",
            "a.yaml:11: spec.file: not allowed with spec.source",
            "a.yaml:17: spec.kernel: not allowed with spec.source",
            'a.yaml:18: spec.source: must be one of tiny, got "cirros"',
            "a.yaml:25: spec.initrd: needs spec.kernel",
        ],
    ),
    (
        "max_per_host only with anti-affinity",
        f"{H}kind: ServerGroup\nmetadata: {{name: sg}}\nspec:\n  policy: affinity\n  max_per_host: 2\n",
        ["a.yaml:6: spec.max_per_host: only allowed when spec.policy is anti-affinity"],
    ),
    (
        "key pairs",
        f"{H}kind: KeyPair\nmetadata: {{name: k2}}\nspec: {{public_key: not a key}}\n",
        [
            "a.yaml:4: spec.public_key: must be one OpenSSH public key line (ssh-ed25519 AAAA... comment)"
        ],
    ),
    (
        "networks",
        f"{H}kind: Network\nmetadata: {{name: a}}\nspec: {{cidr: 10.0.0.0/16}}\n"
        f"---\n{H}kind: Network\nmetadata: {{name: b}}\nspec: {{cidr: 10.0.1.0/24, gateway: 10.9.0.1}}\n"
        f"---\n{H}kind: Network\nmetadata: {{name: c}}\nspec: {{cidr: 10.1.0.1/24, bridge: a-very-long-bridge-name}}\n",
        [
            'a.yaml:9: spec.cidr: 10.0.1.0/24 overlaps 10.0.0.0/16 of Network "a" (a.yaml:4)',
            "a.yaml:9: spec.gateway: 10.9.0.1 is not a host address of 10.0.1.0/24",
            'a.yaml:14: spec.bridge: "a-very-long-bridge-name" must match ^[A-Za-z0-9_.-]{1,15}$',
            "a.yaml:14: spec.cidr: '10.1.0.1/24' is not a network in CIDR notation: "
            "10.1.0.1/24 has host bits set",
        ],
    ),
    (
        "scheduler hints",
        server(
            "flavor: m1, image: tiny, hints: {same_host: 'a, b', different_hosts: [c], different_host: []}"
        ),
        [
            "a.yaml:4: spec.hints.different_host: expected a server name, a comma-separated string or a list",
            'a.yaml:4: spec.hints.different_hosts: unknown scheduler hint "different_hosts"; '
            'did you mean "different_host"?',
        ],
    ),
    (
        "property keys",
        server("flavor: m1, image: tiny, metadata: {'bad key': x}"),
        [
            "a.yaml:4: spec.metadata.bad key: property key 'bad key' must match ^[A-Za-z0-9][A-Za-z0-9:._-]{0,254}$"
        ],
    ),
    (
        "duplicate and non-string keys",
        f"{H}kind: Quota\nmetadata: {{name: default}}\nspec:\n  cores: 1\n  cores: 2\n  3: x\n",
        [
            "a.yaml:6: spec.cores: duplicate key (first at line 5)",
            "a.yaml:7: spec: keys must be strings, got 3",
        ],
    ),
    (
        "the image's minimums against the flavor, both in the files",
        f"{H}kind: Flavor\nmetadata: {{name: f}}\nspec: {{vcpus: 1, ram_mb: 64, disk_gb: 1}}\n---\n"
        f"{H}kind: Image\nmetadata: {{name: i}}\nspec: {{source: tiny, min_ram_mb: 128, min_disk_gb: 2}}\n---\n"
        + server("flavor: f, image: i"),
        [
            'a.yaml:14: spec.flavor: flavor "f" has 64 MiB of RAM, image "i" needs at least 128 (min_ram_mb)',
            'a.yaml:14: spec.flavor: flavor "f" has a 1 GiB disk, image "i" needs at least 2 (min_disk_gb)',
        ],
    ),
    (
        "sorted by file and line across files",
        {
            "b.yaml": server("flavor: nope, image: tiny"),
            "a.yaml": f"{H}kind: Quota\nmetadata: {{name: default}}\nspec: {{cores: x}}\n",
        },
        [
            'a.yaml:4: spec.cores: expected an integer, got "x"',
            'b.yaml:4: spec.flavor: unknown flavor "nope"',
        ],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problems(files: str | Mapping[str, str], expected: list[str]) -> None:
    assert problems(files) == expected


def test_offline_accepts_references_the_files_do_not_define() -> None:
    text = server(
        "flavor: anything, image: tiny, availability_zone: az9, "
        "placement: {host: pinned, host_name: somewhere}"
    )
    assert problems(text, Known.unchecked()) == []
    broken = server("flavor: anything, image: tiny, replicas: x")
    assert problems(broken, Known.unchecked()) == [
        'a.yaml:4: spec.replicas: expected an integer, got "x"'
    ]


def test_no_hosts_known_skips_the_zone_check_but_not_pinning() -> None:
    text = server(
        "flavor: m1, image: tiny, availability_zone: az1, "
        "placement: {host: pinned, host_name: lab-1}"
    )
    assert problems(text, Known(flavors=frozenset({"m1"}), images=frozenset({"tiny"}))) == [
        'a.yaml:4: spec.placement.host_name: unknown host "lab-1"'
    ]


def test_require_valid_raises_with_every_problem() -> None:
    estate = load_estate([("a.yaml", server("flavor: x, image: y"))])
    with pytest.raises(InvalidEstate) as caught:
        require_valid(estate, KNOWN)
    assert [str(p) for p in caught.value.problems] == [
        'a.yaml:4: spec.flavor: unknown flavor "x"',
        'a.yaml:4: spec.image: unknown image "y"',
    ]
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith("invalid input: 2 problem(s) in the desired-state files")
    good = load_estate([("a.yaml", server("flavor: m1, image: tiny"))])
    assert require_valid(good, KNOWN) is good


def test_the_examples_are_valid_against_the_lab() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    estate = load_estate([(f.name, f.read_text()) for f in files])
    assert validate(estate, Known(hosts=KNOWN.hosts)) == []
    assert len(files) >= 3
    assert sorted(s.name for s in estate.desired_servers()) == [
        "batch-01",
        "batch-02",
        "cache",
        "db",
        "web-1",
        "web-2",
        "web-3",
    ]
    db = estate.servers["db"].spec
    assert (db.placement.host, db.placement.host_name, db.availability_zone) == (
        "pinned",
        "lab-1",
        "az1",
    )
    assert {d.spec.power_state for d in estate.servers.values()} == {"running", "stopped"}
    assert estate.server_groups["web"].spec.policy == "anti-affinity"
    assert estate.images["tiny"].spec.source == "tiny"
    assert {s.spec.availability_zone for s in estate.servers.values()} >= {"az1", "az2"}
