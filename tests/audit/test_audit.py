"""The audit behind ``verify`` / ``reconcile``, from tables: books + survey + policy -> findings."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import cloudctl.audit as audit_module
from cloudctl.audit import (
    AllocationRecord,
    BaseSeen,
    Books,
    DirSeen,
    DomainSeen,
    Finding,
    HostRecord,
    HostSeen,
    InstanceRecord,
    LeaseRecord,
    LockRecord,
    MigrationRecord,
    Policy,
    SnapshotRecord,
    audit,
    settle,
)
from cloudctl.domain.states import PowerState, VmState

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
RES = {"VCPU": 1, "MEMORY_MB": 128, "DISK_GB": 1}
YOUNG = 60  # seconds: younger than every default age and timeout
OLD = 2 * 3600  # past the build/task timeouts (3600) and the orphan age (600)
BASE_OLD = 2 * 86400  # past base_image_min_age_s (86400)

#: code -> severity, read from the table in the module docstring (the documented contract).
SEVERITY = dict(
    re.findall(r"^(E[A-Z]+\d{3})\s+(error|warning)\s", audit_module.__doc__ or "", re.M)
)


# --- builders ---------------------------------------------------------------------------------


def U(name: str) -> str:
    """The uuid of a named test object (stable across runs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cloudctl-audit-test:{name}"))


def M(name: str) -> str:
    """The uuid of the migration of instance ``name`` (see :func:`mig`)."""
    return U(f"migration:{name}")


def _consumer(ref: str) -> str:
    try:
        uuid.UUID(ref)
    except ValueError:
        return U(ref)
    return ref


_POWER: dict[str, PowerState] = {
    VmState.ACTIVE: PowerState.RUNNING,
    VmState.PAUSED: PowerState.PAUSED,
    VmState.RESIZED: PowerState.RUNNING,
}


def inst(
    name: str,
    host: str | None = "h1",
    vm_state: str = "active",
    task_state: str | None = None,
    age_s: int = 0,
    deleted: bool = False,
    resources: Mapping[str, int] | None = None,
    owner: str | None = None,
) -> InstanceRecord:
    return InstanceRecord(
        uuid=U(name),
        name=name,
        host=host,
        vm_state="deleted" if deleted else vm_state,
        task_state=task_state,
        power_state=int(_POWER.get(vm_state, PowerState.SHUTDOWN)),
        updated_at=NOW - timedelta(seconds=age_s),
        domain_name=f"instance-{name}",
        resources=dict(RES if resources is None else resources),
        deleted=deleted,
        task_owner=None if owner is None else L(owner),
    )


def L(name: str) -> str:
    """The uuid of a named lease."""
    return U(f"lease:{name}")


def lease(name: str, expires_in_s: int, taken_over_by: str | None = None) -> LeaseRecord:
    """A command lease expiring ``expires_in_s`` from NOW (negative: expired)."""
    return LeaseRecord(
        uuid=L(name),
        command=f"cmd {name}",
        holder=f"root@ci, pid {len(name)}",
        expires_at=NOW + timedelta(seconds=expires_in_s),
        taken_over_by=None if taken_over_by is None else L(taken_over_by),
    )


def alloc(host: str, name_or_uuid: str, **res: int) -> AllocationRecord:
    return AllocationRecord(host=host, consumer=_consumer(name_or_uuid), resources={**RES, **res})


def mig(name: str, source: str | None, dest: str | None, status: str) -> MigrationRecord:
    return MigrationRecord(
        uuid=M(name), instance_uuid=U(name), source=source, dest=dest, status=status
    )


def host(name: str, beat_age_s: int | None = 10) -> HostRecord:
    beat = None if beat_age_s is None else NOW - timedelta(seconds=beat_age_s)
    return HostRecord(name=name, last_heartbeat=beat)


def books(
    *rows: InstanceRecord | AllocationRecord | MigrationRecord | LeaseRecord | LockRecord,
    hosts: Sequence[HostRecord] = (host("h1"), host("h2")),
) -> Books:
    return Books(
        hosts=tuple(hosts),
        instances=tuple(r for r in rows if isinstance(r, InstanceRecord)),
        allocations=tuple(r for r in rows if isinstance(r, AllocationRecord)),
        migrations=tuple(r for r in rows if isinstance(r, MigrationRecord)),
        leases=tuple(r for r in rows if isinstance(r, LeaseRecord)),
        locks=tuple(r for r in rows if isinstance(r, LockRecord)),
    )


def dirname(name: str) -> str:
    """``web-1`` -> ``<uuid>``, ``web-1_resize`` -> ``<uuid>_resize`` (as on the host)."""
    if name.endswith("_resize"):
        return f"{U(name.removesuffix('_resize'))}_resize"
    return U(name)


def F(host_name: str, name: str) -> str:
    """The object of a file finding about the directory of ``name`` on ``host_name``."""
    return f"{host_name}:{dirname(name)}"


def _dir(entry: str | tuple[str, int] | DirSeen, host_name: str) -> DirSeen:
    """A directory on local storage: its identity is its own host's."""
    if isinstance(entry, DirSeen):
        return entry
    name, age = (entry, OLD) if isinstance(entry, str) else entry
    resize = name.endswith("_resize")
    return DirSeen(
        name=dirname(name),
        uuid=U(name.removesuffix("_resize")),
        kind="resize" if resize else "instance",
        mtime=NOW - timedelta(seconds=age),
        identity=f"{host_name}:{name}",
    )


def shared(name: str) -> DirSeen:
    """A directory on shared storage: every host sees the same identity."""
    return DirSeen(
        name=dirname(name),
        uuid=U(name),
        kind="instance",
        mtime=NOW - timedelta(seconds=OLD),
        identity=f"shared:{name}",
    )


def seen(
    host_name: str,
    domains: Iterable[tuple[str, str] | DomainSeen] = (),
    dirs: Iterable[str | tuple[str, int] | DirSeen] = (),
    base: Iterable[tuple[str, int, bool]] = (),
    reachable: bool = True,
    error: str = "",
    files_seen: bool | None = None,
) -> HostSeen:
    """What the survey saw on ``host_name``; domains are ``(instance name, libvirt state)``.

    Files count as surveyed only when some are given (or ``files_seen``), so the cases about
    domains need not list every guest's directory.
    """
    dirs = list(dirs)
    return HostSeen(
        host=host_name,
        reachable=reachable,
        error=error,
        files_seen=bool(dirs or base) if files_seen is None else files_seen,
        domains=tuple(
            d if isinstance(d, DomainSeen) else DomainSeen(f"instance-{d[0]}", U(d[0]), d[1])
            for d in domains
        ),
        dirs=tuple(_dir(d, host_name) for d in dirs),
        base_files=tuple(
            BaseSeen(name=n, mtime=NOW - timedelta(seconds=age), in_use=used)
            for n, age, used in base
        ),
    )


def down(host_name: str) -> HostSeen:
    return seen(host_name, reachable=False, error="ssh: connect to host timed out")


def fx(kind: str, **fields: Any) -> dict[str, Any]:
    """The fields of one expected fix (only those given are compared)."""
    return {"kind": kind, **fields}


def run(b: Books, s: Sequence[HostSeen], **policy: Any) -> list[Finding]:
    return audit(b, s, Policy(now=NOW, **policy))


def check_fixes(finding: Finding, want: Sequence[Mapping[str, Any]]) -> None:
    got = [f.kind for f in finding.fixes]
    assert got == [w["kind"] for w in want], finding.line()
    for fix, spec in zip(finding.fixes, want, strict=True):
        for key, value in spec.items():
            actual = getattr(fix, key)
            if key == "resources":
                actual = dict(actual)
            assert actual == value, f"{finding.line()}: {fix.kind}.{key}"


def case(
    case_id: str,
    b: Books,
    s: Sequence[HostSeen],
    expect: set[tuple[str, str]],
    *,
    policy: Mapping[str, Any] | None = None,
    fixes: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]] | None = None,
    instance: Mapping[tuple[str, str], str | None] | None = None,
) -> Any:
    return pytest.param(b, s, policy or {}, expect, fixes or {}, instance or {}, id=case_id)


# --- the tables -------------------------------------------------------------------------------

HOSTS = [
    case(
        "clean-estate",
        books(
            inst("web-1"),
            inst("db-1", vm_state="stopped"),
            inst("app-1", "h2", "paused"),
            inst("sus-1", "h2", "suspended"),
            inst("soft-1", "h2", "soft-delete"),
            inst("err-1", "h2", "error"),
            alloc("h1", "web-1"),
            alloc("h1", "db-1"),
            alloc("h2", "app-1"),
            alloc("h2", "sus-1"),
            alloc("h2", "soft-1"),
            alloc("h2", "err-1"),
        ),
        [
            seen(
                "h1",
                domains=[("web-1", "running"), ("db-1", "shutoff")],
                dirs=["web-1", "db-1"],
                base=[("img-a", BASE_OLD, True), ("img-b", YOUNG, False)],
            ),
            seen(
                "h2",
                domains=[("app-1", "paused"), ("sus-1", "shutoff"), ("soft-1", "shutoff")],
                dirs=["app-1", "sus-1", "soft-1", "err-1"],
            ),
        ],
        set(),
    ),
    case(
        "reachable-host-with-old-heartbeat-is-not-down",
        books(hosts=[host("h1", 3600)]),
        [seen("h1")],
        set(),
    ),
    case(
        "unreachable-host-with-old-heartbeat-is-down",
        books(hosts=[host("h1", 3600), host("h2")]),
        [down("h1"), seen("h2")],
        {("EHOST001", "h1")},
        fixes={("EHOST001", "h1"): []},
    ),
    case(
        "unreachable-host-with-fresh-heartbeat-is-a-warning",
        books(hosts=[host("h1", 30), host("h2")]),
        [down("h1"), seen("h2")],
        {("EHOST002", "h1")},
        fixes={("EHOST002", "h1"): []},
    ),
    case(
        "host-never-seen-and-not-surveyed-is-down",
        books(hosts=[host("h1", None), host("h2")]),
        [seen("h2")],
        {("EHOST001", "h1")},
    ),
    case(
        "no-power-finding-on-unreachable-host",
        books(inst("web-1", vm_state="stopped"), alloc("h1", "web-1")),
        [down("h1"), seen("h2")],
        {("EHOST002", "h1")},
    ),
    case(
        "no-power-finding-on-down-host",
        books(inst("web-1"), alloc("h1", "web-1"), hosts=[host("h1", 3600), host("h2")]),
        [down("h1"), seen("h2")],
        {("EHOST001", "h1")},
    ),
]

DOMAINS = [
    case(
        "domain-missing-marks-error-keeping-host-and-claim",
        books(inst("web-1"), alloc("h1", "web-1")),
        [seen("h1", dirs=["web-1"]), seen("h2")],
        {("EDOMAIN001", "web-1")},
        fixes={
            ("EDOMAIN001", "web-1"): [
                fx(
                    "mark_error",
                    host="h1",
                    consumer=U("web-1"),
                    resources=RES,
                    power_state=0,
                    release_on_other_hosts=False,
                )
            ]
        },
        instance={("EDOMAIN001", "web-1"): U("web-1")},
    ),
    case(
        "domain-on-other-host-rehomes",
        books(inst("web-1"), alloc("h1", "web-1")),
        [seen("h1", dirs=["web-1"]), seen("h2", domains=[("web-1", "running")], dirs=["web-1"])],
        {("EDOMAIN002", "web-1")},
        fixes={
            ("EDOMAIN002", "web-1"): [fx("rehome", host="h2", consumer=U("web-1"), resources=RES)]
        },
    ),
    case(
        "domain-on-other-host-no-ledger-double-report",
        books(inst("web-1"), alloc("h2", "web-1", VCPU=4)),
        [seen("h1"), seen("h2", domains=[("web-1", "running")])],
        {("EDOMAIN002", "web-1")},
    ),
    case(
        "deleted-instance-domain-reaped",
        books(inst("old-1", deleted=True)),
        [seen("h1", domains=[("old-1", "running")], dirs=["old-1"]), seen("h2")],
        {("EDOMAIN003", "instance-old-1")},
        fixes={
            ("EDOMAIN003", "instance-old-1"): [
                fx("reap", host="h1", consumer=U("old-1"), domain="instance-old-1")
            ]
        },
        instance={("EDOMAIN003", "instance-old-1"): U("old-1")},
    ),
    case(
        "deleted-instance-domain-only-logged",
        books(inst("old-1", deleted=True)),
        [seen("h1", domains=[("old-1", "shutoff")]), seen("h2")],
        {("EDOMAIN003", "instance-old-1")},
        policy={"running_deleted": "log"},
        fixes={("EDOMAIN003", "instance-old-1"): []},
    ),
    case(
        "deleted-instance-domain-left-alone-while-busy",
        books(inst("old-1", deleted=True)),
        [seen("h1", domains=[("old-1", "running")], dirs=["old-1"]), seen("h2")],
        set(),
        policy={"busy": frozenset({U("old-1")})},
    ),
    case(
        "unknown-domain-is-a-warning-and-its-dir-is-left",
        books(),
        [
            seen("h1", domains=[DomainSeen("win10", U("win10"), "running")], dirs=["win10"]),
            seen("h2"),
        ],
        {("EDOMAIN004", "win10")},
        fixes={("EDOMAIN004", "win10"): []},
        instance={("EDOMAIN004", "win10"): None},
    ),
]

STATES = [
    case(
        "task-of-a-live-command-is-never-judged",
        books(
            inst("b-1", vm_state="building", task_state="spawning", age_s=YOUNG, owner="boot"),
            inst("web-2", task_state="powering-off", age_s=YOUNG, owner="stop"),
            lease("boot", 20),
            lease("stop", 20),
            alloc("h2", "b-1", VCPU=8),
            alloc("h2", "web-2"),
        ),
        [seen("h1", dirs=["b-1"]), seen("h2", domains=[("web-2", "running")], dirs=["web-2"])],
        set(),
    ),
    case(
        "live-command-past-the-timeout-is-a-warning-only",
        books(
            inst("web-1", task_state="migrating", age_s=OLD, owner="lm"),
            lease("lm", 20),
            alloc("h1", "web-1"),
        ),
        [seen("h1", domains=[("web-1", "running")]), seen("h2")],
        {("ESTATE001", "web-1")},
        fixes={("ESTATE001", "web-1"): []},
    ),
    case(
        "building-whose-command-died-is-settled-back",
        books(
            inst("b-1", vm_state="building", task_state="spawning", age_s=YOUNG, owner="boot"),
            lease("boot", -5),
            alloc("h1", "b-1"),
        ),
        [seen("h1", dirs=["b-1"]), seen("h2")],
        {("ESTATE002", "b-1"), ("ELEASE001", "cmd boot")},
        fixes={
            ("ESTATE002", "b-1"): [fx("settle", host="h1", consumer=U("b-1"))],
            ("ELEASE001", "cmd boot"): [fx("forget_lease", consumer=L("boot"))],
        },
    ),
    case(
        "task-with-no-owner-at-all",
        books(inst("web-1", task_state="rebooting", age_s=YOUNG), alloc("h1", "web-1")),
        [seen("h1", domains=[("web-1", "running")]), seen("h2")],
        {("ESTATE002", "web-1")},
        fixes={("ESTATE002", "web-1"): [fx("settle", host="h1")]},
    ),
    case(
        "owner-lease-row-gone",
        books(
            inst("web-1", task_state="pausing", owner="gone"),
            alloc("h1", "web-1"),
        ),
        [seen("h1", domains=[("web-1", "paused")]), seen("h2")],
        {("ESTATE002", "web-1")},
    ),
    case(
        "dead-command-whose-host-does-not-answer-waits",
        books(
            inst("web-1", task_state="rebooting", owner="r"), lease("r", -1), alloc("h1", "web-1")
        ),
        [down("h1"), seen("h2")],
        {("ESTATE002", "web-1"), ("ELEASE001", "cmd r"), ("EHOST002", "h1")},
        fixes={("ESTATE002", "web-1"): []},
    ),
    case(
        "taken-over-by-a-live-controller-is-left-alone",
        books(
            inst("web-1", task_state="migrating", owner="rec"),
            lease("lm", -60, taken_over_by="rec"),
            lease("rec", 25),
            alloc("h1", "web-1"),
        ),
        [seen("h1", domains=[("web-1", "running")]), seen("h2")],
        set(),
    ),
    case(
        "taken-over-by-a-dead-controller-is-reported",
        books(
            inst("web-1", task_state="migrating", owner="rec"),
            lease("lm", -60, taken_over_by="rec"),
            lease("rec", -1),
            mig("web-1", "h1", "h2", "running"),
            alloc("h1", M("web-1")),
            alloc("h2", "web-1"),
        ),
        [seen("h1", domains=[("web-1", "running")]), seen("h2")],
        {("ESTATE002", "web-1"), ("ELEASE001", "cmd lm"), ("ELEASE001", "cmd rec")},
    ),
    case(
        "expired-state-lock",
        books(
            LockRecord("default", "root@ci, pid 9", "apply", NOW - timedelta(seconds=1)),
            LockRecord("by-hand", "alice@laptop, pid 0", "maintenance", None),
        ),
        [seen("h1"), seen("h2")],
        {("ELEASE002", "state lock default")},
        fixes={("ELEASE002", "state lock default"): [fx("break_lock", name="default")]},
    ),
    case(
        "busy-instance-is-never-judged",
        books(
            inst("b-1", vm_state="building", task_state="spawning", age_s=10 * OLD),
            inst("web-1", age_s=10 * OLD),
            inst("web-2", task_state="powering-off", age_s=10 * OLD),
            alloc("h2", "b-1", VCPU=8),
            alloc("h2", "web-2"),
        ),
        [
            seen("h1", dirs=["b-1"]),
            seen("h2", domains=[("web-2", "running")], dirs=["web-1"]),
        ],
        # held that long by live commands: a warning, nothing fixed
        {("ESTATE001", "b-1"), ("ESTATE001", "web-2")},
        policy={"busy": frozenset({U("b-1"), U("web-1"), U("web-2")})},
    ),
]


# --- settling a dead command's instance, from what the hosts show ----------------------------


def dom(
    name: str, state: str, *, snaps: Sequence[str] | None = None, saved: bool = False
) -> DomainSeen:
    return DomainSeen(
        f"instance-{name}",
        U(name),
        state,
        snapshots=None if snaps is None else tuple(snaps),
        has_managed_save=saved,
    )


def mv(kind: str, status: str, source: str = "h1", dest: str | None = "h2") -> MigrationRecord:
    return MigrationRecord(M("web"), U("web"), source, dest, status, kind=kind)


BOTH = frozenset({"h1", "h2"})
SETTLE = [
    # (id, instance, moves, snapshots, domains, reachable, down, expected (step, way, vm, host))
    (
        "build-running",
        inst("web", vm_state="building", task_state="spawning"),
        [],
        [],
        [("h1", dom("web", "running"))],
        BOTH,
        frozenset(),
        ("build", "forward", "active", "h1"),
    ),
    (
        "build-defined-not-running",
        inst("web", vm_state="building", task_state="spawning"),
        [],
        [],
        [("h1", dom("web", "shutoff"))],
        BOTH,
        frozenset(),
        ("build", "back", "error", "h1"),
    ),
    (
        "build-nothing-yet",
        inst("web", vm_state="building", task_state="block_device_mapping"),
        [],
        [],
        [],
        BOTH,
        frozenset(),
        ("build", "back", "error", "h1"),
    ),
    (
        "build-never-placed",
        inst("web", None, "building", "scheduling"),
        [],
        [],
        [],
        BOTH,
        frozenset(),
        ("build", "back", "error", None),
    ),
    (
        "build-host-silent",
        inst("web", vm_state="building", task_state="spawning"),
        [],
        [],
        [],
        frozenset({"h2"}),
        frozenset(),
        None,
    ),
    (
        "delete",
        inst("web", task_state="deleting"),
        [],
        [],
        [("h1", dom("web", "running"))],
        BOTH,
        frozenset(),
        ("delete", "forward", "deleted", "h1"),
    ),
    (
        "delete-host-down-is-local",
        inst("web", task_state="deleting"),
        [],
        [],
        [],
        frozenset({"h2"}),
        frozenset({"h1"}),
        ("delete", "forward", "deleted", "h1"),
    ),
    (
        "delete-host-silent-not-down",
        inst("web", task_state="deleting"),
        [],
        [],
        [],
        frozenset({"h2"}),
        frozenset(),
        None,
    ),
    (
        "stop-done",
        inst("web", task_state="powering-off"),
        [],
        [],
        [("h1", dom("web", "shutoff"))],
        BOTH,
        frozenset(),
        ("power", "forward", "stopped", "h1"),
    ),
    (
        "stop-not-done",
        inst("web", task_state="powering-off"),
        [],
        [],
        [("h1", dom("web", "running"))],
        BOTH,
        frozenset(),
        ("power", "back", "active", "h1"),
    ),
    (
        "suspend-done",
        inst("web", task_state="suspending"),
        [],
        [],
        [("h1", dom("web", "shutoff", saved=True))],
        BOTH,
        frozenset(),
        ("power", "forward", "suspended", "h1"),
    ),
    (
        "soft-delete-done",
        inst("web", task_state="soft-deleting"),
        [],
        [],
        [("h1", dom("web", "shutoff"))],
        BOTH,
        frozenset(),
        ("power", "forward", "soft-delete", "h1"),
    ),
    (
        "pause-crashed",
        inst("web", task_state="pausing"),
        [],
        [],
        [("h1", dom("web", "crashed"))],
        BOTH,
        frozenset(),
        ("power", "back", "stopped", "h1"),
    ),
    (
        "power-domain-gone",
        inst("web", task_state="rebooting"),
        [],
        [],
        [],
        BOTH,
        frozenset(),
        ("power", "back", "error", "h1"),
    ),
    (
        "live-done",
        inst("web", task_state="migrating"),
        [mv("live-migration", "running")],
        [],
        [("h2", dom("web", "running"))],
        BOTH,
        frozenset(),
        ("live_migration", "forward", "active", "h2"),
    ),
    (
        "live-still-on-source",
        inst("web", task_state="migrating"),
        [mv("live-migration", "running")],
        [],
        [("h1", dom("web", "running")), ("h2", dom("web", "paused"))],
        BOTH,
        frozenset(),
        ("live_migration", "back", "active", "h1"),
    ),
    (
        "live-source-paused-at-the-end",
        inst("web", task_state="migrating"),
        [mv("live-migration", "running")],
        [],
        [("h1", dom("web", "paused"))],
        BOTH,
        frozenset(),
        ("live_migration", "back", "active", "h1"),
    ),
    (
        "live-queued-no-destination",
        inst("web", task_state="migrating"),
        [mv("live-migration", "queued", dest=None)],
        [],
        [("h1", dom("web", "running"))],
        frozenset({"h1"}),
        frozenset(),
        ("live_migration", "back", "active", "h1"),
    ),
    (
        "live-lost",
        inst("web", task_state="migrating"),
        [mv("live-migration", "running")],
        [],
        [],
        BOTH,
        frozenset(),
        ("live_migration", "back", "error", "h1"),
    ),
    (
        "live-dest-silent",
        inst("web", task_state="migrating"),
        [mv("live-migration", "running")],
        [],
        [("h1", dom("web", "running"))],
        frozenset({"h1"}),
        frozenset(),
        None,
    ),
    (
        "resize-killed-mid-copy",
        inst("web", task_state="resize_migrating"),
        [mv("resize", "migrating")],
        [],
        [],
        BOTH,
        frozenset(),
        ("cold_migration", "back", None, "h1"),
    ),
    (
        "migrate-killed-before-play",
        inst("web", task_state="resize_prep"),
        [mv("migration", "pre-migrating")],
        [],
        [("h1", dom("web", "running"))],
        BOTH,
        frozenset(),
        ("cold_migration", "back", None, "h1"),
    ),
    (
        "confirm-killed",
        inst("web", "h2", "resized", "resize_confirming"),
        [mv("resize", "confirming")],
        [],
        [("h2", dom("web", "running"))],
        BOTH,
        frozenset(),
        ("confirm", "forward", None, "h2"),
    ),
    (
        "revert-killed",
        inst("web", "h2", "resized", "resize_reverting"),
        [mv("resize", "reverting")],
        [],
        [("h2", dom("web", "running"))],
        BOTH,
        frozenset(),
        ("revert", "forward", None, "h1"),
    ),
    (
        "evacuated",
        inst("web", task_state="rebuilding"),
        [mv("evacuation", "pre-migrating")],
        [],
        [("h2", dom("web", "running"))],
        frozenset({"h2"}),
        frozenset({"h1"}),
        ("evacuation", "forward", "active", "h2"),
    ),
    (
        "evacuation-not-there",
        inst("web", task_state="rebuilding"),
        [mv("evacuation", "accepted")],
        [],
        [],
        frozenset({"h2"}),
        frozenset({"h1"}),
        ("evacuation", "back", "error", "h1"),
    ),
    (
        "rebuild-done",
        inst("web", task_state="rebuild_spawning"),
        [],
        [],
        [("h1", dom("web", "running"))],
        BOTH,
        frozenset(),
        ("rebuild", "forward", "active", "h1"),
    ),
    (
        "rebuild-half-done",
        inst("web", task_state="rebuild_block_device_mapping"),
        [],
        [],
        [],
        BOTH,
        frozenset(),
        ("rebuild", "back", "error", "h1"),
    ),
    (
        "snapshot-made",
        inst("web", task_state="image_snapshot"),
        [],
        [SnapshotRecord(U("web"), "s1", "creating")],
        [("h1", dom("web", "running", snaps=["s1"]))],
        BOTH,
        frozenset(),
        ("snapshot", "forward", "active", "h1"),
    ),
    (
        "snapshot-not-reported",
        inst("web", task_state="image_snapshot"),
        [],
        [],
        [("h1", dom("web", "running"))],
        BOTH,
        frozenset(),
        None,
    ),
]


@pytest.mark.parametrize(
    ("i", "moves", "snaps", "domains", "reachable", "down_", "want"),
    [pytest.param(*row[1:], id=row[0]) for row in SETTLE],
)
def test_settle(
    i: InstanceRecord,
    moves: Sequence[MigrationRecord],
    snaps: Sequence[SnapshotRecord],
    domains: Sequence[tuple[str, DomainSeen]],
    reachable: frozenset[str],
    down_: frozenset[str],
    want: tuple[str, str, str | None, str | None] | None,
) -> None:
    got = settle(i, moves, snaps, domains, reachable=reachable, down=down_)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert (got.step, got.way, got.vm_state, got.host) == want, got.why


def test_settle_snapshots_follow_libvirt() -> None:
    rows = [
        SnapshotRecord(U("web"), "made", "creating"),
        SnapshotRecord(U("web"), "never", "creating"),
        SnapshotRecord(U("web"), "gone", "deleting"),
        SnapshotRecord(U("web"), "kept", "deleting"),
        SnapshotRecord(U("web"), "old", "available"),
    ]
    got = settle(
        inst("web", task_state="image_snapshot"),
        [],
        rows,
        [("h1", dom("web", "paused", snaps=["made", "kept", "old"]))],
        reachable=BOTH,
    )
    assert got is not None
    assert dict(got.snapshots) == {
        "made": "available",
        "never": "deleted",
        "gone": "deleted",
        "kept": "available",
    }
    assert got.vm_state == "paused"


LEDGER = [
    case(
        "allocation-of-deleted-instance",
        books(inst("old-1", deleted=True), alloc("h1", "old-1")),
        [seen("h1"), seen("h2")],
        {("ELEDGER002", U("old-1"))},
        fixes={("ELEDGER002", U("old-1")): [fx("ledger_release", host="h1", consumer=U("old-1"))]},
    ),
    case(
        "allocation-of-unknown-consumer",
        books(alloc("h2", "12345678-1234-5678-1234-567812345678")),
        [seen("h1"), seen("h2")],
        {("ELEDGER002", "12345678-1234-5678-1234-567812345678")},
        fixes={
            ("ELEDGER002", "12345678-1234-5678-1234-567812345678"): [
                fx("ledger_release", host="h2", consumer="12345678-1234-5678-1234-567812345678")
            ]
        },
        instance={("ELEDGER002", "12345678-1234-5678-1234-567812345678"): None},
    ),
    case(
        "live-instance-without-allocation",
        books(inst("web-1")),
        [seen("h1", domains=[("web-1", "running")]), seen("h2")],
        {("ELEDGER003", "web-1")},
        fixes={
            ("ELEDGER003", "web-1"): [
                fx("ledger_set", host="h1", consumer=U("web-1"), resources=RES)
            ]
        },
    ),
    case(
        "stopped-and-soft-deleted-keep-their-claims",
        books(inst("db-1", vm_state="stopped"), inst("soft-1", vm_state="soft-delete")),
        [seen("h1", domains=[("db-1", "shutoff"), ("soft-1", "shutoff")]), seen("h2")],
        {("ELEDGER003", "db-1"), ("ELEDGER003", "soft-1")},
    ),
    case(
        "allocation-with-wrong-amounts",
        books(inst("web-1"), alloc("h1", "web-1", VCPU=2, DISK_GB=10)),
        [seen("h1", domains=[("web-1", "running")]), seen("h2")],
        {("ELEDGER004", "web-1")},
        fixes={
            ("ELEDGER004", "web-1"): [
                fx("ledger_set", host="h1", consumer=U("web-1"), resources=RES)
            ]
        },
    ),
    case(
        "allocation-on-another-host",
        books(inst("web-1"), alloc("h2", "web-1")),
        [seen("h1", domains=[("web-1", "running")]), seen("h2")],
        {("ELEDGER001", "web-1")},
        fixes={
            ("ELEDGER001", "web-1"): [
                fx("ledger_release", host="h2", consumer=U("web-1")),
                fx("ledger_set", host="h1", consumer=U("web-1"), resources=RES),
            ]
        },
        instance={("ELEDGER001", "web-1"): U("web-1")},
    ),
    case(
        "allocation-on-both-hosts-releases-the-stray-one",
        books(inst("web-1"), alloc("h1", "web-1"), alloc("h2", "web-1")),
        [seen("h1", domains=[("web-1", "running")]), seen("h2")],
        {("ELEDGER001", "web-1")},
        fixes={("ELEDGER001", "web-1"): [fx("ledger_release", host="h2")]},
    ),
    case(
        "error-instance-without-allocation-is-fine",
        books(inst("err-1", vm_state="error")),
        [seen("h1"), seen("h2")],
        set(),
    ),
    case(
        "verify-resize-holds-both-allocations",
        books(
            inst("web-1", "h2", "resized"),
            mig("web-1", "h1", "h2", "finished"),
            alloc("h1", M("web-1")),
            alloc("h2", "web-1"),
        ),
        [
            seen("h1", dirs=["web-1_resize"]),
            seen("h2", domains=[("web-1", "running")], dirs=["web-1"]),
        ],
        set(),
    ),
    case(
        "confirmed-resize-leftovers",
        books(
            inst("web-1", "h2"),
            mig("web-1", "h1", "h2", "confirmed"),
            alloc("h1", M("web-1")),
            alloc("h2", "web-1"),
        ),
        [
            seen("h1", dirs=["web-1_resize"]),
            seen("h2", domains=[("web-1", "running")], dirs=["web-1"]),
        ],
        {("ELEDGER002", M("web-1")), ("EFILE002", F("h1", "web-1_resize"))},
        fixes={
            ("ELEDGER002", M("web-1")): [fx("ledger_release", host="h1", consumer=M("web-1"))],
            ("EFILE002", F("h1", "web-1_resize")): [
                fx("remove_dir", host="h1", consumer=U("web-1"), dir_kind="resize")
            ],
        },
        instance={("EFILE002", F("h1", "web-1_resize")): U("web-1")},
    ),
]

FILES = [
    case(
        "orphan-dir-old",
        books(),
        [seen("h1", dirs=["gone-1"]), seen("h2")],
        {("EFILE001", F("h1", "gone-1"))},
        fixes={
            ("EFILE001", F("h1", "gone-1")): [
                fx("remove_dir", host="h1", consumer=U("gone-1"), dir_kind="instance")
            ]
        },
        instance={("EFILE001", F("h1", "gone-1")): None},
    ),
    case(
        "orphan-dir-young",
        books(),
        [seen("h1", dirs=[("gone-1", YOUNG)]), seen("h2")],
        set(),
    ),
    case(
        "orphan-dir-younger-than-a-raised-minimum-age",
        books(),
        [seen("h1", dirs=["gone-1"]), seen("h2")],
        set(),
        policy={"orphan_min_age_s": 2 * OLD},
    ),
    case(
        "deleted-instance-dir",
        books(inst("old-1", deleted=True)),
        [seen("h1", dirs=["old-1"]), seen("h2")],
        {("EFILE001", F("h1", "old-1"))},
        instance={("EFILE001", F("h1", "old-1")): U("old-1")},
    ),
    case(
        "evacuation-leftover-dir-on-other-host",
        books(inst("web-1"), alloc("h1", "web-1")),
        [seen("h1", domains=[("web-1", "running")], dirs=["web-1"]), seen("h2", dirs=["web-1"])],
        {("EFILE001", F("h2", "web-1"))},
        fixes={
            ("EFILE001", F("h2", "web-1")): [
                fx("remove_dir", host="h2", consumer=U("web-1"), dir_kind="instance")
            ]
        },
        instance={("EFILE001", F("h2", "web-1")): U("web-1")},
    ),
    case(
        "shared-storage-dir-seen-from-another-host-is-the-guests-own",
        books(inst("web-1"), alloc("h1", "web-1")),
        [
            seen("h1", domains=[("web-1", "running")], dirs=[shared("web-1")]),
            seen("h2", dirs=[shared("web-1")]),
        ],
        set(),
    ),
    case(
        "dir-on-other-host-while-the-guests-host-is-unreachable-is-kept",
        books(inst("web-1"), alloc("h1", "web-1")),
        [down("h1"), seen("h2", dirs=["web-1"])],
        {("EHOST002", "h1")},
    ),
    case(
        "orphan-on-shared-storage-is-reported-once",
        books(),
        [seen("h1", dirs=[shared("gone-1")]), seen("h2", dirs=[shared("gone-1")])],
        {("EFILE001", F("h1", "gone-1"))},
    ),
    case(
        "error-instance-dir-on-other-host-is-left-to-the-operator",
        books(inst("err-1", vm_state="error"), alloc("h1", "err-1")),
        [seen("h1", dirs=["err-1"]), seen("h2", dirs=["err-1", "err-1_resize"])],
        set(),
    ),
    case(
        "other-entries-are-ignored",
        books(),
        [
            seen(
                "h1",
                dirs=[
                    DirSeen("locks", None, "other", NOW - timedelta(seconds=BASE_OLD)),
                    DirSeen("snapshots", U("x"), "other", NOW - timedelta(seconds=BASE_OLD)),
                ],
            ),
            seen("h2"),
        ],
        set(),
    ),
    case(
        "unused-base-image-old",
        books(),
        [seen("h1", base=[("abc123", BASE_OLD, False)]), seen("h2")],
        {("EFILE003", "h1:_base/abc123")},
        fixes={("EFILE003", "h1:_base/abc123"): [fx("remove_base", host="h1", name="abc123")]},
    ),
    case(
        "base-image-in-use-or-young",
        books(),
        [seen("h1", base=[("used", BASE_OLD, True), ("young", 3600, False)]), seen("h2")],
        set(),
    ),
    case(
        "base-image-removal-off",
        books(),
        [seen("h1", base=[("abc123", BASE_OLD, False)]), seen("h2")],
        set(),
        policy={"remove_unused_base_images": False},
    ),
]


@pytest.mark.parametrize(
    ("b", "s", "policy", "expect", "fixes", "instance"), HOSTS + DOMAINS + STATES + LEDGER + FILES
)
def test_audit(
    b: Books,
    s: Sequence[HostSeen],
    policy: Mapping[str, Any],
    expect: set[tuple[str, str]],
    fixes: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
    instance: Mapping[tuple[str, str], str | None],
) -> None:
    findings = run(b, s, **policy)
    got = [(f.code, f.object) for f in findings]
    assert set(got) == expect, "\n".join(f.line() for f in findings)
    assert len(got) == len(set(got)), "a finding is reported twice"
    by_key = {(f.code, f.object): f for f in findings}
    for key, want in fixes.items():
        check_fixes(by_key[key], want)
    for key, uuid_ in instance.items():
        assert by_key[key].instance == uuid_, by_key[key].line()
    for f in findings:
        assert f.severity == SEVERITY[f.code], f.line()
    assert run(b, s, **policy) == findings  # pure: same input, same answer


# --- power states: one instance web-1 on h1, charged, its domain in some state -----------------

POWER = [
    # (id, vm_state, domain state, policy.power, expected fix or None for no finding)
    ("active-running", "active", "running", "report", None),
    ("active-blocked", "active", "blocked", "report", None),
    (
        "active-shutoff-report",
        "active",
        "shutoff",
        "report",
        fx("record_power", host="h1", vm_state="stopped", power_state=4),
    ),
    (
        "active-shutoff-restore",
        "active",
        "shutoff",
        "restore",
        fx("set_power", host="h1", domain="instance-web-1", state="running"),
    ),
    (
        "active-crashed-report",
        "active",
        "crashed",
        "report",
        fx("record_power", vm_state="stopped", power_state=int(PowerState.CRASHED)),
    ),
    (
        "active-paused-report",
        "active",
        "paused",
        "report",
        fx("record_power", vm_state="paused", power_state=int(PowerState.PAUSED)),
    ),
    ("stopped-shutoff", "stopped", "shutoff", "report", None),
    ("stopped-crashed", "stopped", "crashed", "restore", None),
    (
        "stopped-running-report",
        "stopped",
        "running",
        "report",
        fx("record_power", vm_state="active", power_state=int(PowerState.RUNNING)),
    ),
    (
        "stopped-running-restore",
        "stopped",
        "running",
        "restore",
        fx("set_power", domain="instance-web-1", state="shutdown"),
    ),
    ("paused-paused", "paused", "paused", "report", None),
    (
        "paused-running-report",
        "paused",
        "running",
        "report",
        fx("record_power", vm_state="active", power_state=1),
    ),
    (
        "paused-shutoff-restore",
        "paused",
        "shutoff",
        "restore",
        fx("set_power", state="paused"),
    ),
    ("suspended-shutoff", "suspended", "shutoff", "report", None),
    ("suspended-shutoff-restore", "suspended", "shutoff", "restore", None),
    (
        "soft-deleted-running-report",
        "soft-delete",
        "running",
        "report",
        fx("set_power", host="h1", domain="instance-web-1", state="shutdown"),
    ),
    (
        "soft-deleted-running-restore",
        "soft-delete",
        "running",
        "restore",
        fx("set_power", state="shutdown"),
    ),
    ("soft-deleted-shutoff", "soft-delete", "shutoff", "report", None),
    ("resized-shutoff", "resized", "shutoff", "report", None),
    ("error-running", "error", "running", "report", None),
    ("error-shutoff", "error", "shutoff", "restore", None),
    ("shelved-running", "shelved", "running", "report", None),
]


@pytest.mark.parametrize(
    ("vm_state", "dom_state", "power", "want"),
    [pytest.param(*row[1:], id=row[0]) for row in POWER],
)
def test_power(vm_state: str, dom_state: str, power: str, want: dict[str, Any] | None) -> None:
    b = books(inst("web-1", vm_state=vm_state), alloc("h1", "web-1"))
    s = [seen("h1", domains=[("web-1", dom_state)], dirs=["web-1"]), seen("h2")]
    findings = run(b, s, power=power)
    if want is None:
        assert findings == [], "\n".join(f.line() for f in findings)
        return
    assert [(f.code, f.object, f.severity) for f in findings] == [("EPOWER001", "web-1", "error")]
    assert findings[0].instance == U("web-1")
    assert findings[0].host == "h1"
    check_fixes(findings[0], [{"consumer": U("web-1"), **want}])


# --- ordering and wording -----------------------------------------------------------------------


def _mixed() -> tuple[Books, list[HostSeen]]:
    b = books(
        inst("web-1"),
        inst("web-2"),
        inst("web-3"),
        inst("old-1", deleted=True),
        alloc("h1", "web-1"),
        alloc("h1", "web-2"),
        alloc("h2", "web-3"),
        alloc("h2", "old-1"),
        hosts=[host("h1"), host("h2"), host("h3", 3600)],
    )
    s = [
        seen(
            "h1",
            domains=[("web-1", "shutoff"), ("web-3", "running")],
            dirs=["web-1", "web-3", "gone-1"],
        ),
        seen(
            "h2",
            domains=[DomainSeen("win10", U("win10"), "running")],
            base=[("b0", BASE_OLD, False)],
        ),
        down("h3"),
    ]
    return b, s


MIXED_ORDER = [
    ("EHOST001", "h3"),
    ("EPOWER001", "web-1"),
    ("EDOMAIN001", "web-2"),
    ("ELEDGER002", U("old-1")),  # a uuid (hex) sorts before "web-3"
    ("ELEDGER001", "web-3"),
    ("EDOMAIN004", "win10"),
    ("EFILE001", F("h1", "gone-1")),
    ("EFILE003", "h2:_base/b0"),
]


def test_findings_are_sorted_host_instance_allocation_domain_file() -> None:
    b, s = _mixed()
    findings = run(b, s)
    assert [(f.code, f.object) for f in findings] == MIXED_ORDER
    assert [f.kind for f in findings] == [
        "host",
        "instance",
        "instance",
        "allocation",
        "allocation",
        "domain",
        "file",
        "file",
    ]


def test_order_does_not_depend_on_input_order() -> None:
    b, s = _mixed()
    shuffled = Books(
        hosts=tuple(reversed(b.hosts)),
        instances=tuple(reversed(b.instances)),
        allocations=tuple(reversed(b.allocations)),
        migrations=b.migrations,
    )
    assert run(shuffled, list(reversed(s))) == run(b, s)


@pytest.mark.parametrize(
    ("b", "s", "line"),
    [
        pytest.param(
            books(inst("web-3"), alloc("h2", "web-3")),
            [seen("h1", domains=[("web-3", "running")]), seen("h2")],
            "ELEDGER001 error allocation web-3: allocation on h2 but domain on h1",
            id="ledger001",
        ),
        pytest.param(
            books(inst("web-1", vm_state="stopped"), alloc("h1", "web-1")),
            [seen("h1", domains=[("web-1", "running")]), seen("h2")],
            "EPOWER001 error instance web-1: stopped in the books but running on h1",
            id="power001",
        ),
        pytest.param(
            books(hosts=[host("h1", 30)]),
            [seen("h1", reachable=False, error="no route to host")],
            "EHOST002 warning host h1: did not answer: no route to host",
            id="host002",
        ),
        pytest.param(
            books(hosts=[host("h1", 3600)]),
            [down("h1")],
            "EHOST001 error host h1: down (last heartbeat 2026-11-22T11:00:00+00:00)",
            id="host001",
        ),
    ],
)
def test_line(b: Books, s: Sequence[HostSeen], line: str) -> None:
    assert [f.line() for f in run(b, s)] == [line]


def test_every_documented_code_has_a_severity() -> None:
    assert len(SEVERITY) == 20
    assert {c for c, sev in SEVERITY.items() if sev == "warning"} == {
        "EDOMAIN004",
        "EHOST002",
        "EFILE001",
        "EFILE002",
        "EFILE003",
        "ESTATE001",  # a live command past its timeout: it still lives, nothing to fix
    }


# --- suspected gaps -----------------------------------------------------------------------------


@pytest.mark.parametrize(("h1_dir", "keep_files"), [("web-1", False), (None, True)])
def test_evacuation_source_back_with_old_domain_is_reaped(
    h1_dir: str | None, keep_files: bool
) -> None:
    """The evacuated guest's old domain is reaped; its files too unless shared storage holds them."""
    b = books(
        inst("web-1", "h2"),
        mig("web-1", "h1", "h2", "done"),
        alloc("h2", "web-1"),
    )
    one = shared("web-1")
    s = [
        seen("h1", domains=[("web-1", "running")], dirs=[h1_dir] if h1_dir else [one]),
        seen("h2", domains=[("web-1", "running")], dirs=["web-1"] if h1_dir else [one]),
    ]
    [finding] = run(b, s)
    assert (finding.code, finding.host, finding.instance) == ("EDOMAIN005", "h1", U("web-1"))
    [fix] = finding.fixes
    assert (fix.kind, fix.host, fix.keep_files) == ("reap", "h1", keep_files)


def test_stash_next_to_its_domain_is_left_alone() -> None:
    """cloudctl_host_cleanup refuses to remove anything of a domain defined on the host, so a
    stash next to its guest's domain (a same-host resize) is not reported: the resize's own
    confirm or revert removes it."""
    b = books(inst("web-1"), mig("web-1", "h1", "h1", "confirmed"), alloc("h1", "web-1"))
    s = [seen("h1", domains=[("web-1", "running")], dirs=["web-1", "web-1_resize"]), seen("h2")]
    assert run(b, s) == []


def test_a_base_file_an_image_of_a_live_guest_names_is_kept() -> None:
    """Kernels and initrds are named by the domain XML, not by a qcow2 backing file: the host's
    in_use is False for them, and only the books know a live guest's image uses them."""
    kernel = "k" * 64
    b = replace(books(inst("web-1"), alloc("h1", "web-1")), image_files=frozenset({kernel}))
    h1 = seen(
        "h1", domains=[("web-1", "running")], dirs=["web-1"], base=[(kernel, BASE_OLD, False)]
    )
    s = [h1, seen("h2")]
    assert run(b, s) == []
    assert [f.code for f in run(replace(b, image_files=frozenset()), s)] == ["EFILE003"]


def test_a_guest_whose_directory_is_gone_is_an_error() -> None:
    b = books(inst("web-1"), alloc("h1", "web-1"))
    gone = [seen("h1", domains=[("web-1", "running")], files_seen=True), seen("h2")]
    [finding] = run(b, gone)
    assert (finding.code, finding.severity, finding.fixes) == ("EFILE004", "error", ())
    there = [seen("h1", domains=[("web-1", "running")], dirs=["web-1"]), seen("h2")]
    assert run(b, there) == []


def test_an_unused_base_file_on_shared_storage_is_reported_once() -> None:
    one = BaseSeen("a" * 64, NOW - timedelta(seconds=BASE_OLD), False, identity="shared:a")
    findings = run(books(), [replace(seen(h), base_files=(one,)) for h in ("h1", "h2")])
    assert [(f.code, f.object) for f in findings] == [("EFILE003", f"h1:_base/{'a' * 64}")]
