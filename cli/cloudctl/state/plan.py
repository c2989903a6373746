"""The plan's pure diff: desired documents against what cloudctl's books hold.

:func:`diff` compares an :class:`~cloudctl.state.model.Estate` with a :class:`Current` snapshot
(read from SQL by ``services.gitops``) and returns one :class:`Change` per resource: ``create``,
``update``, ``replace``, ``move``, ``delete`` or ``no-op``, with the reason and, for a change
to a server, its impact: ``live`` (no guest downtime: power state, metadata, a live migration),
``needs-reboot`` (a resize: cold migration) or ``needs-recreate`` (new disk or config drive:
image, key, user data, group). Placement is not decided here: server creates and moves carry a
:class:`ServerIntent` that the services layer hands to the scheduler's placement session, and
:func:`capacity` turns the chosen hosts into each host's capacity before and after.

Rules an operator relies on:

* a server whose pinned host changes is a live migration (``move``, ``live``), never a
  re-create; ``preferred`` and ``free`` servers never move because the files changed;
* deleting what the files no longer declare happens only with ``prune``, and only for resources
  cloudctl recorded as created from these files (:attr:`Current.owned`); anything else is left
  alone and listed as ``unmanaged`` (not a change);
* changes come out in dependency order: hosts, flavors, images, networks, key pairs, groups,
  quotas, then servers (deletes of servers first, so a shrink frees room for a create).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cloudctl.state.model import (
    KINDS,
    DesiredServer,
    Estate,
    FlavorSpec,
    HostSpec,
    ImageSpec,
    KeyPairSpec,
    NetworkSpec,
    QuotaSpec,
    ServerGroupSpec,
)

Action = Literal["create", "update", "replace", "move", "delete", "no-op"]
Impact = Literal["live", "needs-reboot", "needs-recreate", ""]

#: What a change to a server's field costs the guest.
SERVER_FIELD_IMPACT: Mapping[str, Impact] = {
    "power_state": "live",
    "metadata": "live",
    "host": "live",  # a pinned host: live migration
    "flavor": "needs-reboot",  # resize = cold migration
    "availability_zone": "needs-reboot",  # cold migration into the zone
    "image": "needs-recreate",  # rebuild: a new root disk
    "key": "needs-recreate",  # config drive
    "user_data": "needs-recreate",
    "group": "needs-recreate",  # Nova cannot change a server's group
    "hints": "",  # placement only: nothing to do for a server already placed
}

_IMPACT_ORDER = {"": 0, "live": 1, "needs-reboot": 2, "needs-recreate": 3}


@dataclass(frozen=True)
class CurrentServer:
    """A live instance as the books have it (names of its flavor, image, key and group)."""

    uuid: str
    name: str
    flavor: str
    image: str | None
    host: str | None
    vm_state: str
    task_state: str | None = None
    key: str | None = None
    group: str | None = None
    availability_zone: str | None = None
    user_data: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Current:
    """What cloudctl's SQL holds, as plain values (``services.gitops.snapshot`` reads it)."""

    flavors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    images: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    networks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    keypairs: Mapping[str, str] = field(default_factory=dict)  # name -> public key
    server_groups: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    quotas: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    hosts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    servers: Mapping[str, CurrentServer] = field(default_factory=dict)
    #: kind -> names cloudctl created from these files (the ownership record).
    owned: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Servers' libvirt states as a survey saw them (uuid -> state, "absent" if on no host);
    #: empty when the plan did not ask the hosts.
    observed: Mapping[str, str] = field(default_factory=dict)
    #: Servers' domain sizes as the survey saw them: uuid -> (vCPUs, memory MiB).
    observed_size: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: Domains a survey found that no instance (live or deleted) has: (host, domain name).
    unknown_domains: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ServerIntent:
    """What a server to create (or move) asks of the scheduler."""

    name: str
    flavor: str
    image: str
    key: str | None
    group: str | None
    availability_zone: str | None
    hints: Mapping[str, tuple[str, ...]]
    user_data: str | None
    metadata: Mapping[str, str]
    power_state: str
    placement: str  # pinned | preferred | free
    host_name: str | None
    document: str  # the Server document's metadata.name
    index: int


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: ``old`` as the books have it, ``new`` as the files say."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Change:
    """One resource's planned change."""

    kind: str
    name: str
    action: Action
    reason: str
    impact: Impact = ""
    fields: tuple[FieldChange, ...] = ()
    intent: ServerIntent | None = None
    uuid: str | None = None
    from_host: str | None = None

    @property
    def is_change(self) -> bool:
        """Everything but a no-op."""
        return self.action != "no-op"


@dataclass(frozen=True)
class Drift:
    """Where the hosts disagree with the books (shown apart from what the files change)."""

    server: str
    kind: Literal[
        "domain-missing",
        "stopped",
        "paused",
        "running",
        "flavor-mismatch",
        "unknown-domain",
        "placement",
    ]
    detail: str

    @property
    def category(self) -> Literal["config", "placement"]:
        """Placement drift (a server not where it prefers) is shown apart from the rest."""
        return "placement" if self.kind == "placement" else "config"


@dataclass(frozen=True)
class Diff:
    """Every change in dependency order, plus drift and what is left unmanaged."""

    changes: tuple[Change, ...]
    drift: tuple[Drift, ...] = ()
    unmanaged: tuple[tuple[str, str], ...] = ()  # (kind, name) neither declared nor owned
    #: Owned by these files, no longer declared, kept because the plan was made without prune.
    undeclared: tuple[tuple[str, str], ...] = ()

    def of(self, action: Action) -> list[Change]:
        """Changes with that action."""
        return [c for c in self.changes if c.action == action]

    @property
    def has_changes(self) -> bool:
        """Whether applying would do anything."""
        return any(c.is_change for c in self.changes)


def diff(estate: Estate, current: Current, *, prune: bool = False) -> Diff:
    """Compare the files with the books. ``estate`` must have validated clean."""
    changes: list[Change] = []
    unmanaged: list[tuple[str, str]] = []
    changes += _hosts(estate, current)
    changes += _catalog("Flavor", estate.flavors, current.flavors, flavor_fields, current, prune)
    changes += _catalog("Image", estate.images, current.images, _image_fields, current, prune)
    changes += _catalog(
        "Network", estate.networks, current.networks, _network_fields, current, prune
    )
    changes += _catalog(
        "KeyPair",
        estate.keypairs,
        {k: {"public_key": v} for k, v in current.keypairs.items()},
        _keypair_fields,
        current,
        prune,
    )
    changes += _catalog(
        "ServerGroup", estate.server_groups, current.server_groups, _group_fields, current, prune
    )
    changes += _quotas(estate, current)
    desired = {ds.name: ds for ds in estate.desired_servers()}
    server_changes, drift = _servers(desired, current, prune)
    drift += [
        Drift(name, "unknown-domain", f"on {host}, not cloudctl's (cloudctl adopt {host} {name})")
        for host, name in current.unknown_domains
    ]
    changes += server_changes
    for kind, declared, have in (
        ("Flavor", estate.flavors, current.flavors),
        ("Image", estate.images, current.images),
        ("Network", estate.networks, current.networks),
        ("KeyPair", estate.keypairs, current.keypairs),
        ("ServerGroup", estate.server_groups, current.server_groups),
        ("Server", desired, current.servers),
    ):
        unmanaged += [
            (kind, n) for n in sorted(have) if n not in declared and n not in _owned(current, kind)
        ]
    undeclared = [
        (c.kind, c.name)
        for c in changes
        if c.action == "no-op" and c.reason.startswith("no longer declared")
    ]
    changes = [c for c in changes if not c.reason.startswith("no longer declared") or c.is_change]
    changes.sort(key=_order)
    return Diff(tuple(changes), tuple(drift), tuple(unmanaged), tuple(undeclared))


_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


def _order(c: Change) -> tuple[int, int]:
    """Creates and updates in dependency order, servers last; deletes the other way round:
    servers first (a shrink frees room for a create), then what they used, dependents first."""
    if c.action == "delete":
        return (1, 0) if c.kind == "Server" else (3, -_KIND_ORDER[c.kind])
    return (2, 0) if c.kind == "Server" else (0, _KIND_ORDER[c.kind])


def _owned(current: Current, kind: str) -> frozenset[str]:
    return current.owned.get(kind, frozenset())


def _field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    return tuple(
        FieldChange(k, old.get(k), v) for k, v in new.items() if _norm(old.get(k)) != _norm(v)
    )


def _norm(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _norm(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_norm(v) for v in value)
    return value


def flavor_fields(spec: FlavorSpec) -> dict[str, Any]:
    """A flavor's compared fields, named as :attr:`Current.flavors` names them."""
    return {
        "vcpus": spec.vcpus,
        "ram_mb": spec.ram_mb,
        "disk_gb": spec.disk_gb,
        "ephemeral_gb": spec.ephemeral_gb,
        "swap_mb": spec.swap_mb,
        "extra_specs": dict(spec.extra_specs),
    }


def _image_fields(spec: ImageSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"min_ram_mb": spec.min_ram_mb, "min_disk_gb": spec.min_disk_gb}
    if spec.properties:
        out["properties"] = dict(spec.properties)
    return out


def _network_fields(spec: NetworkSpec) -> dict[str, Any]:
    return {
        "cidr": spec.cidr,
        "gateway": spec.gateway,
        "dns": list(spec.dns),
        "bridge": spec.bridge,
    }


def _keypair_fields(spec: KeyPairSpec) -> dict[str, Any]:
    return {"public_key": spec.public_key.strip()}


def _group_fields(spec: ServerGroupSpec) -> dict[str, Any]:
    return {"policy": spec.policy, "max_per_host": spec.max_per_host}


def _catalog(
    kind: str,
    declared: Mapping[str, Any],
    have: Mapping[str, Mapping[str, Any]],
    fields_of: Any,
    current: Current,
    prune: bool,
) -> list[Change]:
    """Catalog resources are immutable in cloudctl (as in Nova): a change is a replace."""
    out = []
    for name, doc in declared.items():
        want = fields_of(doc.spec)
        if name not in have:
            out.append(Change(kind, name, "create", "declared, not in cloudctl"))
            continue
        changed = _field_changes(have[name], want)
        if changed:
            what = ", ".join(c.field for c in changed)
            out.append(Change(kind, name, "replace", f"{what} changed", fields=changed))
        else:
            out.append(Change(kind, name, "no-op", "up to date"))
    for name in sorted(_owned(current, kind)):
        if name in have and name not in declared:
            if prune:
                out.append(Change(kind, name, "delete", "no longer declared (--prune)"))
            else:
                out.append(Change(kind, name, "no-op", "no longer declared (kept: --prune)"))
    return out


def _hosts(estate: Estate, current: Current) -> list[Change]:
    out = []
    for name, doc in estate.hosts.items():
        spec: HostSpec = doc.spec
        have = current.hosts.get(name, {})
        want = {
            k: v
            for k, v in (
                ("availability_zone", spec.availability_zone),
                ("labels", dict(spec.labels) if spec.labels is not None else None),
                ("enabled", spec.enabled),
                ("disabled_reason", spec.disabled_reason),
            )
            if v is not None
        }
        changed = _field_changes(have, want)
        if changed:
            what = ", ".join(c.field for c in changed)
            out.append(Change("Host", name, "update", f"{what} changed", "live", changed))
        else:
            out.append(Change("Host", name, "no-op", "up to date"))
    return out


def _quotas(estate: Estate, current: Current) -> list[Change]:
    out = []
    for project, doc in estate.quotas.items():
        spec: QuotaSpec = doc.spec
        want = {
            k: v
            for k, v in (
                ("instances", spec.instances),
                ("cores", spec.cores),
                ("ram_mb", spec.ram_mb),
            )
            if v is not None
        }
        changed = _field_changes(current.quotas.get(project, {}), want)
        if changed:
            what = ", ".join(c.field for c in changed)
            out.append(Change("Quota", project, "update", f"{what} changed", "live", changed))
        else:
            out.append(Change("Quota", project, "no-op", "up to date"))
    return out


def intent_of(ds: DesiredServer) -> ServerIntent:
    """What one desired server asks for."""
    spec = ds.document.spec
    return ServerIntent(
        name=ds.name,
        flavor=spec.flavor,
        image=spec.image,
        key=spec.key,
        group=spec.group,
        availability_zone=spec.availability_zone,
        hints=dict(spec.hints),
        user_data=spec.user_data,
        metadata=dict(spec.metadata),
        power_state=spec.power_state,
        placement=spec.placement.host,
        host_name=spec.placement.host_name,
        document=ds.document.name,
        index=ds.index,
    )


#: Books' vm_state -> the desired power_state it satisfies.
_POWER_OF_VM_STATE = {"active": "running", "stopped": "stopped", "paused": "paused"}


def _servers(
    desired: Mapping[str, DesiredServer], current: Current, prune: bool
) -> tuple[list[Change], list[Drift]]:
    out: list[Change] = []
    drift: list[Drift] = []
    owned = _owned(current, "Server")
    # Replicas differ only in name and index, which no comparison reads: each document's
    # servers are compared with one intent, and a replica gets its own only when it changes.
    shared: dict[int, ServerIntent] = {}
    for name, ds in desired.items():
        have = current.servers.get(name)
        if have is None:
            want = intent_of(ds)
            where = f" on {want.host_name}" if want.placement == "pinned" else ""
            out.append(
                Change("Server", name, "create", f"declared, not running{where}", "", (), want)
            )
            continue
        common = shared.get(id(ds.document))
        if common is None:
            common = shared[id(ds.document)] = intent_of(ds)
        drift += _drift_of(have, common, current)
        change = _server_change(have, common)
        if change.is_change:
            change = _server_change(have, intent_of(ds))
        out.append(change)
    for name in sorted(owned):
        have = current.servers.get(name)
        if have is not None and name not in desired:
            if prune:
                out.append(
                    Change(
                        "Server",
                        name,
                        "delete",
                        "no longer declared (--prune)",
                        "needs-recreate",
                        uuid=have.uuid,
                    )
                )
            else:
                out.append(
                    Change(
                        "Server",
                        name,
                        "no-op",
                        "no longer declared (kept: --prune)",
                        uuid=have.uuid,
                    )
                )
    return out, drift


def _server_change(have: CurrentServer, want: ServerIntent) -> Change:
    fields: list[FieldChange] = []
    if have.flavor != want.flavor:
        fields.append(FieldChange("flavor", have.flavor, want.flavor))
    if have.image != want.image:
        fields.append(FieldChange("image", have.image, want.image))
    if (have.key or None) != (want.key or None):
        fields.append(FieldChange("key", have.key, want.key))
    if (have.user_data or None) != (want.user_data or None):
        fields.append(FieldChange("user_data", "(old)", "(new)"))
    if (have.group or None) != (want.group or None):
        fields.append(FieldChange("group", have.group, want.group))
    if dict(have.metadata) != dict(want.metadata):
        fields.append(FieldChange("metadata", dict(have.metadata), dict(want.metadata)))
    if want.availability_zone and have.availability_zone != want.availability_zone:
        fields.append(
            FieldChange("availability_zone", have.availability_zone, want.availability_zone)
        )
    power = _POWER_OF_VM_STATE.get(have.vm_state)
    if power is not None and power != want.power_state:
        fields.append(FieldChange("power_state", power, want.power_state))
    pinned_move = want.placement == "pinned" and want.host_name and have.host != want.host_name
    if pinned_move:
        fields.append(FieldChange("host", have.host, want.host_name))
    if not fields:
        return Change("Server", have.name, "no-op", "up to date", uuid=have.uuid)
    impact: Impact = max(
        (SERVER_FIELD_IMPACT[f.field] for f in fields), key=lambda i: _IMPACT_ORDER[i]
    )
    what = ", ".join(f.field for f in fields)
    if impact == "needs-recreate":
        action: Action = "replace"
    elif pinned_move or any(f.field in ("flavor", "availability_zone") for f in fields):
        action = "move"
    else:
        action = "update"
    return Change(
        "Server",
        have.name,
        action,
        f"{what} changed",
        impact,
        tuple(fields),
        want,
        uuid=have.uuid,
        from_host=have.host,
    )


def _drift_of(have: CurrentServer, want: ServerIntent, current: Current) -> list[Drift]:
    out = []
    seen = current.observed.get(have.uuid)
    if seen is not None:
        if seen == "absent":
            out.append(Drift(have.name, "domain-missing", f"no domain on {have.host}"))
        elif have.vm_state == "active" and seen in ("shutoff", "shutdown", "crashed"):
            out.append(Drift(have.name, "stopped", f"{seen} on {have.host}, active in the books"))
        elif have.vm_state == "active" and seen == "paused":
            out.append(Drift(have.name, "paused", f"paused on {have.host}"))
        elif have.vm_state == "stopped" and seen in ("running", "blocked"):
            out.append(Drift(have.name, "running", f"running on {have.host}, stopped in the books"))
    size = current.observed_size.get(have.uuid)
    flavor = current.flavors.get(have.flavor)
    # A server under a task (a resize) may run another flavor's size until the task ends.
    if size is not None and flavor is not None and have.task_state is None:
        booked = (int(flavor.get("vcpus") or 0), int(flavor.get("ram_mb") or 0))
        if size != booked:
            out.append(
                Drift(
                    have.name,
                    "flavor-mismatch",
                    f"{size[0]} vCPU / {size[1]} MiB on {have.host}, flavor {have.flavor} has "
                    f"{booked[0]} vCPU / {booked[1]} MiB",
                )
            )
    if want.placement == "preferred" and want.host_name and have.host != want.host_name:
        out.append(
            Drift(have.name, "placement", f"on {have.host}, prefers {want.host_name} (not moved)")
        )
    return out


@dataclass(frozen=True)
class HostCapacity:
    """One host's usage before and after the plan (what the ledger would hold)."""

    host: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    before: Mapping[str, int]
    after: Mapping[str, int]


def capacity(
    totals: Mapping[str, Mapping[str, int]],
    usage: Mapping[str, Mapping[str, int]],
    moves: Iterable[tuple[str | None, str | None, Mapping[str, int]]],
) -> list[HostCapacity]:
    """Each host's usage after ``moves``: (from host or None, to host or None, resources)."""
    after = {h: dict(usage.get(h, {})) for h in totals}
    for src, dst, res in moves:
        for host, sign in ((src, -1), (dst, 1)):
            if host is None or host not in after:
                continue
            for rc, amount in res.items():
                after[host][rc] = after[host].get(rc, 0) + sign * amount
    return [
        HostCapacity(
            host=h,
            vcpus=t.get("VCPU", 0),
            memory_mb=t.get("MEMORY_MB", 0),
            disk_gb=t.get("DISK_GB", 0),
            before=dict(usage.get(h, {})),
            after=after[h],
        )
        for h, t in sorted(totals.items())
    ]


def summary(changes: Sequence[Change]) -> dict[str, int]:
    """Counts per action (Terraform's ``Plan: 2 to add, 1 to change, 0 to destroy``)."""
    out = {a: 0 for a in ("create", "update", "replace", "move", "delete", "no-op")}
    for c in changes:
        out[c.action] += 1
    return out
