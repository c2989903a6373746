"""plan.diff(): desired files against cloudctl's books -> changes, drift and unmanaged (pure).

Estates are built from YAML documents with ``load_estate`` (and checked clean by ``validate``);
the books are :class:`Current` values built by hand. The base estate and the base books agree,
so each case edits one side and lists the changes it expects; everything else stays a no-op.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from cloudctl.domain.paths import DEFAULT_BRIDGE
from cloudctl.state import API_VERSION, KINDS, Estate, Known, load_estate, validate
from cloudctl.state.plan import (
    Action,
    Change,
    Current,
    CurrentServer,
    Diff,
    Drift,
    FieldChange,
    HostCapacity,
    capacity,
    diff,
    summary,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0bmV3a2V5bmV3a2V5bmV3a2V5bmV3a2V5bmV3a2V5 c@d"
#: What cloudctl's SQL knows beyond the files (so a file may drop a document it still uses).
KNOWN = Known(
    flavors=frozenset({"m1", "m2"}),
    images=frozenset({"tiny", "tiny2"}),
    keypairs=frozenset({"demo"}),
    server_groups=frozenset({"web"}),
    networks=frozenset({"net1"}),
    hosts={"lab-1": "az1", "lab-2": "az1", "lab-3": "az2"},
)
DROP = object()  # a spec key to remove in an edit

#: The base estate: (kind, name) -> spec.
BASE: dict[tuple[str, str], dict[str, Any]] = {
    ("Host", "lab-1"): {"availability_zone": "az1", "labels": {"rack": "r1"}},
    ("Flavor", "m1"): {"vcpus": 1, "ram_mb": 128, "disk_gb": 1},
    ("Flavor", "m2"): {"vcpus": 2, "ram_mb": 256, "disk_gb": 2},
    ("Image", "tiny"): {"source": "tiny"},
    ("Image", "tiny2"): {"source": "tiny", "min_ram_mb": 64},
    ("Network", "net1"): {"cidr": "10.10.0.0/24", "gateway": "10.10.0.1"},
    ("KeyPair", "demo"): {"public_key": KEY},
    ("ServerGroup", "web"): {"policy": "anti-affinity"},
    ("Quota", "default"): {"instances": 10, "cores": 20},
    ("Server", "web"): {
        "replicas": 3,
        "flavor": "m1",
        "image": "tiny",
        "key": "demo",
        "group": "web",
        "metadata": {"role": "web"},
    },
    ("Server", "db"): {
        "flavor": "m2",
        "image": "tiny",
        "placement": {"host": "pinned", "host_name": "lab-1"},
    },
    ("Server", "cache"): {
        "flavor": "m1",
        "image": "tiny",
        "placement": {"host": "preferred", "host_name": "lab-2"},
    },
}


def doc(kind: str, name: str, spec: Mapping[str, Any]) -> str:
    """One YAML document."""
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
    return yaml.safe_dump(body, sort_keys=False, width=1000)


def estate_of(texts: Sequence[str]) -> Estate:
    """The estate of documents in one file, validated clean."""
    estate = load_estate([("estate.yaml", "---\n".join(texts))])
    assert [str(p) for p in validate(estate, KNOWN)] == []
    return estate


def files(
    edits: Mapping[tuple[str, str], Mapping[str, Any] | None] | None = None,
    *,
    base: Mapping[tuple[str, str], Mapping[str, Any]] = BASE,
    reverse: bool = False,
) -> Estate:
    """The base estate with edits: None drops the document, a mapping updates its spec
    (a value of DROP removes the key); a new (kind, name) is appended."""
    specs = {k: dict(v) for k, v in base.items()}
    for key, edit in (edits or {}).items():
        if edit is None:
            specs.pop(key)
            continue
        spec = specs.setdefault(key, {})
        for k, v in edit.items():
            if v is DROP:
                spec.pop(k, None)
            else:
                spec[k] = v
    texts = [doc(kind, name, spec) for (kind, name), spec in specs.items()]
    return estate_of(texts[::-1] if reverse else texts)


def flavor_row(vcpus: int, ram_mb: int, disk_gb: int, **more: Any) -> dict[str, Any]:
    row = {
        "vcpus": vcpus,
        "ram_mb": ram_mb,
        "disk_gb": disk_gb,
        "ephemeral_gb": 0,
        "swap_mb": 0,
        "extra_specs": {},
        "description": None,
    }
    return row | more


def server(name: str, host: str | None, **kw: Any) -> CurrentServer:
    """A server in the books: active, flavor m1, image tiny, uuid ``uuid-NAME``."""
    values: dict[str, Any] = {
        "uuid": f"uuid-{name}",
        "name": name,
        "flavor": "m1",
        "image": "tiny",
        "host": host,
        "vm_state": "active",
    }
    return CurrentServer(**(values | kw))


TINY_PROPS = {"os_type": "linux", "hw_architecture": "x86_64", "kernel_version": "6.1"}
BOOK_SERVERS: dict[str, CurrentServer] = {
    **{
        f"web-{i}": server(
            f"web-{i}", f"lab-{i}", key="demo", group="web", metadata={"role": "web"}
        )
        for i in (1, 2, 3)
    },
    "db": server("db", "lab-1", flavor="m2"),
    "cache": server("cache", "lab-2"),
}
#: The books after the base estate was applied.
BOOKS = Current(
    flavors={"m1": flavor_row(1, 128, 1), "m2": flavor_row(2, 256, 2)},
    # source: tiny images carry properties cloudctl set itself: not declared, not compared
    images={
        "tiny": {"min_ram_mb": 0, "min_disk_gb": 0, "properties": TINY_PROPS},
        "tiny2": {"min_ram_mb": 64, "min_disk_gb": 0, "properties": TINY_PROPS},
    },
    networks={
        "net1": {
            "cidr": "10.10.0.0/24",
            "gateway": "10.10.0.1",
            "bridge": DEFAULT_BRIDGE,
            "dns": [],
        }
    },
    keypairs={"demo": KEY},
    server_groups={"web": {"policy": "anti-affinity", "max_per_host": None}},
    # ram_mb not declared: left as is
    quotas={"default": {"instances": 10, "cores": 20, "ram_mb": 51200}},
    hosts={
        "lab-1": {
            "availability_zone": "az1",
            "labels": {"rack": "r1"},
            "enabled": True,
            "disabled_reason": None,
        },
        "lab-2": {"availability_zone": "az1", "labels": {}, "enabled": True},
    },
    servers=BOOK_SERVERS,
    owned={
        "Flavor": frozenset({"m1", "m2"}),
        "Image": frozenset({"tiny", "tiny2"}),
        "Network": frozenset({"net1"}),
        "KeyPair": frozenset({"demo"}),
        "ServerGroup": frozenset({"web"}),
        "Server": frozenset(BOOK_SERVERS),
    },
)


def books(
    servers: Mapping[str, CurrentServer | None] | None = None,
    owned: Mapping[str, Sequence[str]] | None = None,
    **kw: Any,
) -> Current:
    """The base books with edits: ``servers`` adds/replaces (None removes) servers by name;
    ``owned`` adds names to the ownership record; other keywords replace fields of Current."""
    all_servers = dict(BOOKS.servers)
    for name, srv in (servers or {}).items():
        if srv is None:
            all_servers.pop(name)
        else:
            all_servers[name] = srv
    all_owned = dict(BOOKS.owned)
    for kind, names in (owned or {}).items():
        all_owned[kind] = all_owned.get(kind, frozenset()) | frozenset(names)
    return dataclasses.replace(BOOKS, servers=all_servers, owned=all_owned, **kw)


def rows(d: Diff, *, all_: bool = False) -> list[tuple[str, str, str, str]]:
    """(kind, name, action, impact) of every change (no-ops only with ``all_``)."""
    return [(c.kind, c.name, c.action, c.impact) for c in d.changes if all_ or c.is_change]


def change(d: Diff, kind: str, name: str) -> Change:
    (found,) = [c for c in d.changes if (c.kind, c.name) == (kind, name)]
    return found


BASE_RESOURCES = [
    ("Host", "lab-1"),
    ("Flavor", "m1"),
    ("Flavor", "m2"),
    ("Image", "tiny"),
    ("Image", "tiny2"),
    ("Network", "net1"),
    ("KeyPair", "demo"),
    ("ServerGroup", "web"),
    ("Quota", "default"),
    ("Server", "web-1"),
    ("Server", "web-2"),
    ("Server", "web-3"),
    ("Server", "db"),
    ("Server", "cache"),
]


# --- nothing to do --------------------------------------------------------------------------------


def test_empty_estate_and_empty_books() -> None:
    d = diff(estate_of([]), Current())
    assert d == Diff(changes=(), drift=(), unmanaged=())
    assert not d.has_changes
    assert summary(d.changes) == dict.fromkeys(
        ("create", "update", "replace", "move", "delete", "no-op"), 0
    )


@pytest.mark.parametrize("prune", [False, True])
def test_second_run_is_all_no_op(prune: bool) -> None:
    d = diff(files(), BOOKS, prune=prune)
    assert [(c.kind, c.name) for c in d.changes] == BASE_RESOURCES
    assert {(c.action, c.impact, c.reason) for c in d.changes} == {("no-op", "", "up to date")}
    assert not d.has_changes
    assert d.drift == ()
    assert d.unmanaged == ()
    assert summary(d.changes)["no-op"] == len(BASE_RESOURCES)
    assert d.of("no-op") == list(d.changes)
    # a server no-op still names the instance
    assert change(d, "Server", "db").uuid == "uuid-db"


# --- creates and order ----------------------------------------------------------------------------


def test_creates_for_every_kind_in_dependency_order() -> None:
    # documents written servers first: the plan still comes out in dependency order
    d = diff(files(reverse=True), Current(hosts={"lab-1": {"availability_zone": "az1"}}))
    assert rows(d) == [
        # hosts and quotas are never created: their declared fields become an update
        ("Host", "lab-1", "update", "live"),
        # within a kind, file order (written reversed here)
        ("Flavor", "m2", "create", ""),
        ("Flavor", "m1", "create", ""),
        ("Image", "tiny2", "create", ""),
        ("Image", "tiny", "create", ""),
        ("Network", "net1", "create", ""),
        ("KeyPair", "demo", "create", ""),
        ("ServerGroup", "web", "create", ""),
        ("Quota", "default", "update", "live"),
        # servers in file order (written reversed: cache, db, web), replicas in index order
        ("Server", "cache", "create", ""),
        ("Server", "db", "create", ""),
        ("Server", "web-1", "create", ""),
        ("Server", "web-2", "create", ""),
        ("Server", "web-3", "create", ""),
    ]
    assert [c.kind for c in d.changes] == sorted((c.kind for c in d.changes), key=list(KINDS).index)
    assert change(d, "Host", "lab-1").fields == (FieldChange("labels", None, {"rack": "r1"}),)
    assert change(d, "Flavor", "m1").reason == "declared, not in cloudctl"
    assert summary(d.changes) == {
        "create": 12,
        "update": 2,
        "replace": 0,
        "move": 0,
        "delete": 0,
        "no-op": 0,
    }


def test_create_intents() -> None:
    d = diff(files(), Current())
    webs = [c for c in d.changes if c.name.startswith("web-")]
    assert [c.name for c in webs] == ["web-1", "web-2", "web-3"]
    assert [c.intent and (c.intent.name, c.intent.document, c.intent.index) for c in webs] == [
        ("web-1", "web", 1),
        ("web-2", "web", 2),
        ("web-3", "web", 3),
    ]
    web1 = webs[0].intent
    assert web1 is not None
    assert (web1.flavor, web1.image, web1.key, web1.group) == ("m1", "tiny", "demo", "web")
    assert (web1.metadata, web1.power_state, web1.placement, web1.host_name) == (
        {"role": "web"},
        "running",
        "free",
        None,
    )
    assert webs[0].reason == "declared, not running"
    assert webs[0].uuid is None and webs[0].from_host is None

    db = change(d, "Server", "db")
    assert db.reason == "declared, not running on lab-1"
    assert db.intent is not None
    assert (db.intent.placement, db.intent.host_name, db.intent.document, db.intent.index) == (
        "pinned",
        "lab-1",
        "db",
        1,
    )
    cache = change(d, "Server", "cache")
    assert cache.reason == "declared, not running"  # preferred: the scheduler has the last word
    assert cache.intent is not None
    assert (cache.intent.placement, cache.intent.host_name) == ("preferred", "lab-2")


def test_create_intent_carries_hints_and_user_data() -> None:
    yaml_text = f"""\
apiVersion: {API_VERSION}
kind: Server
metadata: {{name: api}}
spec:
  replicas: 2
  name_pattern: "{{name}}-{{index:02d}}"
  flavor: m1
  image: tiny
  availability_zone: az2
  power_state: stopped
  user_data: "#cloud-config\\n"
  hints:
    different_host: [db]
"""
    d = diff(estate_of([yaml_text]), Current())
    assert rows(d) == [("Server", "api-01", "create", ""), ("Server", "api-02", "create", "")]
    intent = d.changes[1].intent
    assert intent is not None
    assert (intent.name, intent.index, intent.availability_zone, intent.power_state) == (
        "api-02",
        2,
        "az2",
        "stopped",
    )
    assert intent.hints == {"different_host": ("db",)}
    assert intent.user_data == "#cloud-config\n"


def test_server_deletes_come_before_server_creates() -> None:
    # web shrinks to 2 (web-3 goes), a new server api is declared after it
    estate = files(
        {("Server", "web"): {"replicas": 2}, ("Server", "api"): dict(BASE["Server", "db"])}
    )
    d = diff(estate, books(servers={"db": None}), prune=True)
    assert rows(d) == [
        ("Server", "web-3", "delete", "needs-recreate"),
        ("Server", "db", "create", ""),
        ("Server", "api", "create", ""),
    ]
    kinds = [c.kind for c in d.changes]
    assert kinds == sorted(kinds, key=list(KINDS).index)
    servers = [c.action for c in d.changes if c.kind == "Server"]
    assert servers[0] == "delete" and "delete" not in servers[1:]


# --- replicas, prune, ownership -------------------------------------------------------------------


def test_replicas_up_creates_the_new_indexes() -> None:
    d = diff(files({("Server", "web"): {"replicas": 5}}), BOOKS)
    assert rows(d) == [("Server", "web-4", "create", ""), ("Server", "web-5", "create", "")]
    assert [c.intent.index for c in d.changes if c.intent] == [4, 5]


def test_replicas_down_with_prune_deletes_the_owned_extra() -> None:
    d = diff(files({("Server", "web"): {"replicas": 2}}), BOOKS, prune=True)
    assert rows(d) == [("Server", "web-3", "delete", "needs-recreate")]
    web3 = change(d, "Server", "web-3")
    assert web3.uuid == "uuid-web-3"
    assert web3.reason == "no longer declared (--prune)"
    assert d.unmanaged == ()


def test_replicas_down_without_prune_keeps_it() -> None:
    d = diff(files({("Server", "web"): {"replicas": 2}}), BOOKS)
    assert rows(d) == []
    assert not d.has_changes
    assert ("Server", "web-3") not in [(c.kind, c.name) for c in d.changes]
    assert d.unmanaged == ()  # owned: kept, not unmanaged
    assert d.undeclared == (("Server", "web-3"),)  # and said so


def test_replicas_down_not_owned_is_never_deleted() -> None:
    owned = dict(BOOKS.owned) | {"Server": frozenset(BOOK_SERVERS) - {"web-3"}}
    current = dataclasses.replace(BOOKS, owned=owned)
    d = diff(files({("Server", "web"): {"replicas": 2}}), current, prune=True)
    assert rows(d) == []
    assert d.unmanaged == (("Server", "web-3"),)


def test_replicas_zero_with_prune_deletes_every_owned_replica() -> None:
    d = diff(files({("Server", "web"): {"replicas": 0}}), BOOKS, prune=True)
    assert rows(d) == [
        ("Server", "web-1", "delete", "needs-recreate"),
        ("Server", "web-2", "delete", "needs-recreate"),
        ("Server", "web-3", "delete", "needs-recreate"),
    ]


@pytest.mark.parametrize("prune", [False, True])
def test_unmanaged_resources_are_listed_and_never_deleted(prune: bool) -> None:
    current = books(
        servers={"stray": server("stray", "lab-3")},
        flavors={**BOOKS.flavors, "legacy": flavor_row(4, 4096, 40)},
        images={**BOOKS.images, "cirros": {"min_ram_mb": 0, "min_disk_gb": 0}},
        keypairs={**BOOKS.keypairs, "ops": KEY2},
        server_groups={**BOOKS.server_groups, "old": {"policy": "affinity"}},
    )
    d = diff(files(), current, prune=prune)
    assert rows(d) == []
    assert d.unmanaged == (
        ("Flavor", "legacy"),
        ("Image", "cirros"),
        ("KeyPair", "ops"),
        ("ServerGroup", "old"),
        ("Server", "stray"),
    )
    assert not d.has_changes


def test_unmanaged_network_is_listed() -> None:
    current = books(
        networks={**BOOKS.networks, "legacy": {"cidr": "10.20.0.0/24", "bridge": "br1"}}
    )
    d = diff(files(), current, prune=True)
    assert ("Network", "legacy") in d.unmanaged


def test_owned_catalog_no_longer_declared_is_deleted_only_with_prune() -> None:
    # nothing uses m2 once db is on m1; tiny2 and the group: no server left using them either
    edits: dict[tuple[str, str], Any] = {
        ("Flavor", "m2"): None,
        ("Image", "tiny2"): None,
        ("KeyPair", "demo"): None,
        ("Server", "db"): {"flavor": "m1"},
    }
    current = books(servers={"db": server("db", "lab-1")})
    kept = diff(files(edits), current)
    assert rows(kept) == []
    assert kept.unmanaged == ()

    pruned = diff(files(edits), current, prune=True)
    assert rows(pruned) == [  # deletes: dependents first (reverse dependency order)
        ("KeyPair", "demo", "delete", ""),
        ("Image", "tiny2", "delete", ""),
        ("Flavor", "m2", "delete", ""),
    ]
    assert {c.reason for c in pruned.of("delete")} == {"no longer declared (--prune)"}


def test_owned_but_already_gone_is_not_deleted() -> None:
    current = books(owned={"Flavor": ["gone"], "Server": ["ghost"]})
    assert rows(diff(files(), current, prune=True)) == []


def test_pruned_servers_are_deleted_before_what_they_use() -> None:
    # db and its flavor m2 both go
    d = diff(files({("Server", "db"): None, ("Flavor", "m2"): None}), BOOKS, prune=True)
    assert sorted(rows(d)) == [
        ("Flavor", "m2", "delete", ""),
        ("Server", "db", "delete", "needs-recreate"),
    ]
    assert rows(d)[0] == ("Server", "db", "delete", "needs-recreate")


# --- one edit at a time ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Edits to the files and/or the books, and the changes expected (the rest: no-ops)."""

    files: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    servers: Mapping[str, CurrentServer | None] = field(default_factory=dict)
    books: Mapping[str, Any] = field(default_factory=dict)
    expect: Sequence[tuple[str, str, str, str]] = ()
    #: name -> the FieldChanges of its change
    fields: Mapping[str, tuple[FieldChange, ...]] = field(default_factory=dict)
    #: name -> its reason
    reasons: Mapping[str, str] = field(default_factory=dict)


CASES = {
    # --- servers
    "flavor-resize": Case(
        files={("Server", "db"): {"flavor": "m1"}},
        expect=[("Server", "db", "move", "needs-reboot")],
        fields={"db": (FieldChange("flavor", "m2", "m1"),)},
        reasons={"db": "flavor changed"},
    ),
    "flavor-resize-every-replica": Case(
        files={("Server", "web"): {"flavor": "m2"}},
        expect=[
            ("Server", "web-1", "move", "needs-reboot"),
            ("Server", "web-2", "move", "needs-reboot"),
            ("Server", "web-3", "move", "needs-reboot"),
        ],
    ),
    "image-rebuild": Case(
        files={("Server", "db"): {"image": "tiny2"}},
        expect=[("Server", "db", "replace", "needs-recreate")],
        fields={"db": (FieldChange("image", "tiny", "tiny2"),)},
        reasons={"db": "image changed"},
    ),
    "power-stop": Case(
        files={("Server", "db"): {"power_state": "stopped"}},
        expect=[("Server", "db", "update", "live")],
        fields={"db": (FieldChange("power_state", "running", "stopped"),)},
        reasons={"db": "power_state changed"},
    ),
    "power-start": Case(
        servers={"db": server("db", "lab-1", flavor="m2", vm_state="stopped")},
        expect=[("Server", "db", "update", "live")],
        fields={"db": (FieldChange("power_state", "stopped", "running"),)},
    ),
    "power-pause": Case(
        files={("Server", "cache"): {"power_state": "paused"}},
        expect=[("Server", "cache", "update", "live")],
        fields={"cache": (FieldChange("power_state", "running", "paused"),)},
    ),
    "vm-state-without-power-meaning": Case(
        # an errored or building server: no power state to compare
        servers={"db": server("db", "lab-1", flavor="m2", vm_state="error")},
    ),
    "metadata": Case(
        files={("Server", "web"): {"metadata": {"role": "api"}}},
        expect=[
            ("Server", "web-1", "update", "live"),
            ("Server", "web-2", "update", "live"),
            ("Server", "web-3", "update", "live"),
        ],
        fields={"web-2": (FieldChange("metadata", {"role": "web"}, {"role": "api"}),)},
        reasons={"web-2": "metadata changed"},
    ),
    "metadata-removed": Case(
        files={("Server", "web"): {"metadata": DROP}},
        expect=[
            ("Server", "web-1", "update", "live"),
            ("Server", "web-2", "update", "live"),
            ("Server", "web-3", "update", "live"),
        ],
        fields={"web-1": (FieldChange("metadata", {"role": "web"}, {}),)},
    ),
    "pinned-host-live-migration": Case(
        files={("Server", "db"): {"placement": {"host": "pinned", "host_name": "lab-2"}}},
        expect=[("Server", "db", "move", "live")],
        fields={"db": (FieldChange("host", "lab-1", "lab-2"),)},
        reasons={"db": "host changed"},
    ),
    "pinned-host-and-flavor": Case(
        files={
            ("Server", "db"): {
                "flavor": "m1",
                "placement": {"host": "pinned", "host_name": "lab-2"},
            }
        },
        expect=[("Server", "db", "move", "needs-reboot")],
        fields={"db": (FieldChange("flavor", "m2", "m1"), FieldChange("host", "lab-1", "lab-2"))},
        reasons={"db": "flavor, host changed"},
    ),
    "pinned-host-and-image": Case(
        files={
            ("Server", "db"): {
                "image": "tiny2",
                "placement": {"host": "pinned", "host_name": "lab-2"},
            }
        },
        expect=[("Server", "db", "replace", "needs-recreate")],
    ),
    "preferred-elsewhere-is-not-moved": Case(
        servers={"cache": server("cache", "lab-3")},
    ),
    "free-placement-never-moves": Case(
        servers={
            "web-1": server("web-1", "lab-3", key="demo", group="web", metadata={"role": "web"})
        },
    ),
    "now-pinned-where-it-already-is": Case(
        files={("Server", "cache"): {"placement": {"host": "pinned", "host_name": "lab-2"}}},
    ),
    "now-pinned-elsewhere": Case(
        files={("Server", "cache"): {"placement": {"host": "pinned", "host_name": "lab-1"}}},
        expect=[("Server", "cache", "move", "live")],
    ),
    "availability-zone": Case(
        files={("Server", "cache"): {"availability_zone": "az2", "placement": DROP}},
        servers={"cache": server("cache", "lab-2", availability_zone="az1")},
        expect=[("Server", "cache", "move", "needs-reboot")],
        fields={"cache": (FieldChange("availability_zone", "az1", "az2"),)},
    ),
    "availability-zone-undeclared-is-left-alone": Case(
        servers={"cache": server("cache", "lab-2", availability_zone="az1")},
    ),
    "key": Case(
        files={("Server", "web"): {"key": DROP}},
        expect=[
            ("Server", "web-1", "replace", "needs-recreate"),
            ("Server", "web-2", "replace", "needs-recreate"),
            ("Server", "web-3", "replace", "needs-recreate"),
        ],
        fields={"web-3": (FieldChange("key", "demo", None),)},
    ),
    "group": Case(
        files={("Server", "web"): {"group": DROP}},
        expect=[
            ("Server", "web-1", "replace", "needs-recreate"),
            ("Server", "web-2", "replace", "needs-recreate"),
            ("Server", "web-3", "replace", "needs-recreate"),
        ],
        fields={"web-1": (FieldChange("group", "web", None),)},
    ),
    "user-data": Case(
        files={("Server", "db"): {"user_data": "#cloud-config\n"}},
        expect=[("Server", "db", "replace", "needs-recreate")],
        fields={"db": (FieldChange("user_data", "(old)", "(new)"),)},
    ),
    "empty-user-data-is-none": Case(
        servers={"db": server("db", "lab-1", flavor="m2", user_data="")},
    ),
    "hints-are-placement-only": Case(
        files={("Server", "web"): {"hints": {"different_host": ["db"]}}},
    ),
    "metadata-and-power-is-one-live-update": Case(
        files={("Server", "db"): {"power_state": "stopped", "metadata": {"a": "b"}}},
        expect=[("Server", "db", "update", "live")],
        reasons={"db": "metadata, power_state changed"},
    ),
    # --- catalog: immutable, a change is a replace
    "flavor-vcpus": Case(
        files={("Flavor", "m1"): {"vcpus": 2}},
        expect=[("Flavor", "m1", "replace", "")],
        fields={"m1": (FieldChange("vcpus", 1, 2),)},
        reasons={"m1": "vcpus changed"},
    ),
    "flavor-extra-specs": Case(
        files={("Flavor", "m2"): {"ram_mb": 512, "extra_specs": {"hw:cpu_policy": "dedicated"}}},
        expect=[("Flavor", "m2", "replace", "")],
        fields={
            "m2": (
                FieldChange("ram_mb", 256, 512),
                FieldChange("extra_specs", {}, {"hw:cpu_policy": "dedicated"}),
            )
        },
        reasons={"m2": "ram_mb, extra_specs changed"},
    ),
    "flavor-description-is-not-compared": Case(
        files={("Flavor", "m1"): {"description": "tiny and cheap"}},
    ),
    "image-min-ram": Case(
        files={("Image", "tiny2"): {"min_ram_mb": 128}},
        expect=[("Image", "tiny2", "replace", "")],
        fields={"tiny2": (FieldChange("min_ram_mb", 64, 128),)},
    ),
    "image-properties-declared": Case(
        files={("Image", "tiny"): {"properties": {"os_type": "windows"}}},
        expect=[("Image", "tiny", "replace", "")],
        fields={"tiny": (FieldChange("properties", TINY_PROPS, {"os_type": "windows"}),)},
    ),
    "network-gateway": Case(
        files={("Network", "net1"): {"gateway": "10.10.0.254"}},
        expect=[("Network", "net1", "replace", "")],
        fields={"net1": (FieldChange("gateway", "10.10.0.1", "10.10.0.254"),)},
    ),
    "network-bridge": Case(
        files={("Network", "net1"): {"bridge": "br-lab"}},
        expect=[("Network", "net1", "replace", "")],
        fields={"net1": (FieldChange("bridge", DEFAULT_BRIDGE, "br-lab"),)},
    ),
    "keypair": Case(
        files={("KeyPair", "demo"): {"public_key": KEY2}},
        expect=[("KeyPair", "demo", "replace", "")],
        fields={"demo": (FieldChange("public_key", KEY, KEY2),)},
    ),
    "keypair-whitespace-is-not-a-change": Case(
        files={("KeyPair", "demo"): {"public_key": KEY + "\n"}},
    ),
    "group-policy": Case(
        files={("ServerGroup", "web"): {"policy": "anti-affinity", "max_per_host": 2}},
        expect=[("ServerGroup", "web", "replace", "")],
        fields={"web": (FieldChange("max_per_host", None, 2),)},
    ),
    # --- quotas and hosts: updated in place
    "quota": Case(
        files={("Quota", "default"): {"instances": 20}},
        expect=[("Quota", "default", "update", "live")],
        fields={"default": (FieldChange("instances", 10, 20),)},
        reasons={"default": "instances changed"},
    ),
    "quota-new-limit": Case(
        files={("Quota", "default"): {"ram_mb": 4096}},
        expect=[("Quota", "default", "update", "live")],
        fields={"default": (FieldChange("ram_mb", 51200, 4096),)},
    ),
    "quota-undeclared-limit-is-left-alone": Case(
        books={"quotas": {"default": {"instances": 10, "cores": 20, "ram_mb": 1}}},
    ),
    "host-labels": Case(
        files={("Host", "lab-1"): {"labels": {"rack": "r2", "ssd": "yes"}}},
        expect=[("Host", "lab-1", "update", "live")],
        fields={"lab-1": (FieldChange("labels", {"rack": "r1"}, {"rack": "r2", "ssd": "yes"}),)},
        reasons={"lab-1": "labels changed"},
    ),
    "host-disabled": Case(
        files={("Host", "lab-1"): {"enabled": False, "disabled_reason": "maintenance"}},
        expect=[("Host", "lab-1", "update", "live")],
        fields={
            "lab-1": (
                FieldChange("enabled", True, False),
                FieldChange("disabled_reason", None, "maintenance"),
            )
        },
    ),
    "host-labels-undeclared-are-left-alone": Case(
        files={("Host", "lab-1"): {"labels": DROP}},
        books={"hosts": {"lab-1": {"availability_zone": "az1", "labels": {"x": "y"}}}},
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_one_edit(case: Case) -> None:
    d = diff(files(case.files), books(case.servers, **case.books))
    assert rows(d) == list(case.expect)
    assert d.has_changes == bool(case.expect)
    for name, expected in case.fields.items():
        (c,) = [c for c in d.changes if c.name == name]
        assert c.fields == expected
    for name, reason in case.reasons.items():
        (c,) = [c for c in d.changes if c.name == name]
        assert c.reason == reason
    # every resource is still there exactly once
    assert sorted((c.kind, c.name) for c in d.changes) == sorted(
        {(c.kind, c.name) for c in d.changes}
    )
    current = books(case.servers, **case.books)
    for c in d.changes:
        if c.kind == "Server" and c.is_change:
            assert c.uuid == f"uuid-{c.name}"
            assert c.intent is not None and c.intent.name == c.name
            assert c.from_host == current.servers[c.name].host


def test_network_dns_change_is_planned() -> None:
    d = diff(files({("Network", "net1"): {"dns": ["10.10.0.53"]}}), BOOKS)
    assert rows(d) == [("Network", "net1", "replace", "")]


def test_pinned_move_carries_from_host_and_intent() -> None:
    edit = {("Server", "db"): {"placement": {"host": "pinned", "host_name": "lab-2"}}}
    db = change(diff(files(edit), BOOKS), "Server", "db")
    assert (db.action, db.impact, db.from_host, db.uuid) == ("move", "live", "lab-1", "uuid-db")
    assert db.intent is not None
    assert (db.intent.placement, db.intent.host_name) == ("pinned", "lab-2")


# --- drift ----------------------------------------------------------------------------------------


DRIFT_CASES = {
    "domain-missing": (
        {"uuid-web-1": "absent"},
        {},
        [Drift("web-1", "domain-missing", "no domain on lab-1")],
    ),
    "stopped": (
        {"uuid-db": "shutoff"},
        {},
        [Drift("db", "stopped", "shutoff on lab-1, active in the books")],
    ),
    "crashed": (
        {"uuid-web-2": "crashed"},
        {},
        [Drift("web-2", "stopped", "crashed on lab-2, active in the books")],
    ),
    "paused": ({"uuid-db": "paused"}, {}, [Drift("db", "paused", "paused on lab-1")]),
    "running-as-booked": ({"uuid-db": "running", "uuid-web-1": "running"}, {}, []),
    "placement": (
        {},
        {"cache": server("cache", "lab-3")},
        [Drift("cache", "placement", "on lab-3, prefers lab-2 (not moved)")],
    ),
    "not-surveyed": ({}, {}, []),
}

SIZE_CASES = {
    "as-the-flavor": ({"uuid-db": (2, 256)}, {}, []),
    "more-memory": (
        {"uuid-db": (2, 512)},
        {},
        [
            Drift(
                "db", "flavor-mismatch", "2 vCPU / 512 MiB on lab-1, flavor m2 has 2 vCPU / 256 MiB"
            )
        ],
    ),
    "fewer-vcpus": (
        {"uuid-web-1": (2, 128)},
        {},
        [
            Drift(
                "web-1",
                "flavor-mismatch",
                "2 vCPU / 128 MiB on lab-1, flavor m1 has 1 vCPU / 128 MiB",
            )
        ],
    ),
    "under-a-resize": (
        {"uuid-db": (1, 128)},
        {"db": server("db", "lab-1", flavor="m2", task_state="resize_finish")},
        [],
    ),
    "size-unknown": ({}, {}, []),
}


@pytest.mark.parametrize(
    ("sizes", "servers", "expected"), list(SIZE_CASES.values()), ids=list(SIZE_CASES)
)
def test_flavor_mismatch_is_drift(
    sizes: dict[str, tuple[int, int]],
    servers: dict[str, CurrentServer],
    expected: list[Drift],
) -> None:
    d = diff(files(), books(servers, observed_size=sizes))
    assert list(d.drift) == expected
    assert not d.has_changes
    assert all(x.category == "config" for x in d.drift)


def test_placement_drift_is_its_own_category() -> None:
    d = diff(files(), books({"cache": server("cache", "lab-3")}))
    assert [(x.kind, x.category) for x in d.drift] == [("placement", "placement")]


@pytest.mark.parametrize(
    ("observed", "servers", "expected"), list(DRIFT_CASES.values()), ids=list(DRIFT_CASES)
)
def test_drift_is_never_a_change(
    observed: dict[str, str], servers: dict[str, CurrentServer], expected: list[Drift]
) -> None:
    current = books(servers, observed=observed)
    d = diff(files(), current)
    assert list(d.drift) == expected
    assert rows(d) == []  # no config change: the files and the books agree
    assert not d.has_changes


def test_stopped_in_the_books_and_on_the_host_is_no_drift() -> None:
    d = diff(
        files({("Server", "db"): {"power_state": "stopped"}}),
        books(
            {"db": server("db", "lab-1", flavor="m2", vm_state="stopped")},
            observed={"uuid-db": "shutoff"},
        ),
    )
    assert d.drift == ()
    assert not d.has_changes


def test_drift_alongside_a_change() -> None:
    # the books say active, the host says shutoff, the files say stopped: one change, one drift
    d = diff(
        files({("Server", "db"): {"power_state": "stopped"}}),
        books(observed={"uuid-db": "shutoff", "uuid-web-3": "absent"}),
    )
    assert rows(d) == [("Server", "db", "update", "live")]
    assert d.drift == (
        Drift("web-3", "domain-missing", "no domain on lab-3"),
        Drift("db", "stopped", "shutoff on lab-1, active in the books"),
    )


# --- capacity and summary -------------------------------------------------------------------------


def test_capacity_before_and_after() -> None:
    totals = {
        "lab-2": {"VCPU": 8, "MEMORY_MB": 2048, "DISK_GB": 40},
        "lab-1": {"VCPU": 4, "MEMORY_MB": 1024, "DISK_GB": 20},
        "lab-3": {"VCPU": 2},
    }
    usage = {
        "lab-1": {"VCPU": 3, "MEMORY_MB": 384, "DISK_GB": 3},
        "lab-2": {"VCPU": 1, "MEMORY_MB": 128, "DISK_GB": 1},
        # lab-3: nothing on it
    }
    m1 = {"VCPU": 1, "MEMORY_MB": 128, "DISK_GB": 1}
    m2 = {"VCPU": 2, "MEMORY_MB": 256, "DISK_GB": 2}
    moves = [
        (None, "lab-2", m1),  # create web-4 on lab-2
        (None, "lab-3", m1),  # create web-5 on lab-3
        ("lab-1", None, m1),  # delete web-3
        ("lab-1", "lab-2", m2),  # live-migrate db
        (None, None, m1),  # unplaced: counts nowhere
        (None, "lab-9", m2),  # a host outside the totals: ignored
    ]
    usage_copy = {h: dict(u) for h, u in usage.items()}
    result = capacity(totals, usage, moves)
    assert result == [
        HostCapacity(
            "lab-1",
            4,
            1024,
            20,
            before={"VCPU": 3, "MEMORY_MB": 384, "DISK_GB": 3},
            after={"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0},
        ),
        HostCapacity(
            "lab-2",
            8,
            2048,
            40,
            before={"VCPU": 1, "MEMORY_MB": 128, "DISK_GB": 1},
            after={"VCPU": 4, "MEMORY_MB": 512, "DISK_GB": 4},
        ),
        HostCapacity(
            "lab-3",
            2,
            0,
            0,
            before={},
            after={"VCPU": 1, "MEMORY_MB": 128, "DISK_GB": 1},
        ),
    ]
    assert usage == usage_copy  # not modified


def test_capacity_without_moves_is_unchanged() -> None:
    totals = {"lab-1": {"VCPU": 4, "MEMORY_MB": 1024, "DISK_GB": 20}}
    usage = {"lab-1": {"VCPU": 1}}
    (cap,) = capacity(totals, usage, [])
    assert cap.before == cap.after == {"VCPU": 1}
    assert capacity({}, usage, [(None, "lab-1", {"VCPU": 1})]) == []


def test_summary_counts() -> None:
    edits: dict[tuple[str, str], Any] = {
        ("Server", "web"): {"replicas": 2},  # delete web-3
        ("Server", "api"): {"flavor": "m1", "image": "tiny"},  # create
        ("Server", "db"): {"flavor": "m1"},  # move
        ("Server", "cache"): {"image": "tiny2"},  # replace
        ("Quota", "default"): {"cores": 40},  # update
        ("Flavor", "m1"): {"extra_specs": {"k": "v"}},  # replace
    }
    d = diff(files(edits), BOOKS, prune=True)
    counts = summary(d.changes)
    assert counts == {
        "create": 1,
        "update": 1,
        "replace": 2,
        "move": 1,
        "delete": 1,
        "no-op": 9,
    }
    assert sum(counts.values()) == len(d.changes)
    actions: tuple[Action, ...] = ("create", "update", "replace", "move", "delete", "no-op")
    assert {a: len(d.of(a)) for a in actions} == counts
    assert summary([]) == dict.fromkeys(counts, 0)
