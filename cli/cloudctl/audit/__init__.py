"""Where the books and the hosts disagree: the pure decision behind ``verify`` and ``reconcile``.

Input is a snapshot of the books (:class:`Books`, read from SQL by the services layer), what one
survey play saw on every host (:class:`HostSeen`: reachable or not, its libvirt domains, the
files under its instances path) and the knobs (:class:`Policy`). :func:`audit` returns
:class:`Finding` objects, each with a stable code (Ganeti's ``cluster verify`` style), a
severity, the object it is about, a one-line message and the :class:`Fix` that would make the
books and the hosts agree again (None when only an operator can decide). Nothing here reads a
clock, a database or a host: the tables in tests/audit/ drive it.

A task_state is a command's lock (services/compute/tasks.py): an instance whose task a live
lease holds is busy and never judged. One whose command died (its lease expired, or no lease
names it) gets ESTATE002 with a ``settle`` fix, decided by :func:`settle` from what the hosts
show: the dead command's work is rolled forward where the hosts show it done, and back
otherwise, or waited for while a host that would tell cannot be asked.

Codes (stable; scripts may match on them):

========== ======== ==================================================================
ELEDGER001 error    an instance's allocation is on another host than the instance
ELEDGER002 error    an allocation whose consumer is no live instance or move under way
ELEDGER003 error    a live instance with no allocation on its host
ELEDGER004 error    an allocation whose amounts differ from the instance's flavor
EDOMAIN001 error    an instance's domain is missing from its host
EDOMAIN002 error    an instance's domain is on another host than the books say
EDOMAIN003 error    a deleted instance's domain is still on a host
EDOMAIN004 warning  a domain cloudctl does not know (not its own, or to adopt)
EDOMAIN005 error    a stale copy of a guest's domain on another host (e.g. after evacuation)
EPOWER001  error    the domain's power state differs from the instance's vm_state
ESTATE001  warning  a live command has held an instance's task (or build) past its timeout
ESTATE002  error    an instance in a task no live command holds (its command died): settle it
ELEASE001  error    a command's lease expired: the command died without finishing
ELEASE002  error    the state lock's holder stopped renewing it: the apply died
EHOST001   error    a host without a heartbeat for longer than service_down_time
EHOST002   warning  a host that did not answer the survey (not down yet)
EFILE001   warning  an instance directory no live instance on that host owns
EFILE002   warning  a resize stash (``<uuid>_resize``) no move under way needs
EFILE003   warning  a cached base image no disk uses, older than the minimum age
EFILE004   error    a guest's domain is on its host but its instance directory is not
========== ======== ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cloudctl.domain.states import VM_STATE_OF_DOMAIN, PowerState, TaskState, VmState

Severity = Literal["error", "warning"]
PowerPolicy = Literal["report", "restore"]
DeletedPolicy = Literal["reap", "log", "noop"]

#: Migration statuses in which the source host still holds the move's allocation (under the
#: migration's uuid) and in which the stash and the destination's files are in use.
MOVING_STATUSES = frozenset(
    {
        "accepted",
        "queued",
        "pre-migrating",
        "preparing",
        "migrating",
        "running",
        "finished",
        "reverting",
        "confirming",
    }
)

#: vm_state -> libvirt states that agree with it (an idle instance).
EXPECTED_DOMAIN_STATES: Mapping[str, frozenset[str]] = {
    VmState.ACTIVE: frozenset({"running", "blocked"}),
    VmState.STOPPED: frozenset({"shutoff", "shutdown", "crashed"}),
    VmState.PAUSED: frozenset({"paused"}),
    VmState.SUSPENDED: frozenset({"shutoff"}),
    VmState.RESIZED: frozenset({"running", "blocked", "shutoff"}),
    VmState.SOFT_DELETED: frozenset({"shutoff", "shutdown", "crashed"}),
}

#: libvirt state -> the vm_state the books record under the ``report`` policy.
REPORTED_VM_STATE = VM_STATE_OF_DOMAIN

#: vm_state -> the domain state the ``restore`` policy puts the guest back into.
RESTORED_DOMAIN_STATE: Mapping[str, str] = {
    VmState.ACTIVE: "running",
    VmState.STOPPED: "shutdown",
    VmState.PAUSED: "paused",
    VmState.SUSPENDED: "saved",
    VmState.SOFT_DELETED: "shutdown",
}

MOVE_TASKS = frozenset(
    {
        TaskState.MIGRATING,
        TaskState.RESIZE_PREP,
        TaskState.RESIZE_MIGRATING,
        TaskState.RESIZE_FINISH,
        TaskState.RESIZE_REVERTING,
        TaskState.RESIZE_CONFIRMING,
    }
)


@dataclass(frozen=True)
class InstanceRecord:
    """An instance as the books have it (``deleted`` rows included: their domains may linger)."""

    uuid: str
    name: str
    host: str | None
    vm_state: str
    task_state: str | None
    power_state: int
    updated_at: datetime
    domain_name: str
    resources: Mapping[str, int]
    deleted: bool = False
    #: The command lease holding its task (``instances.task_owner``).
    task_owner: str | None = None
    #: Set when the instance was ever launched (a build that died after it is not undone).
    launched: bool = False


@dataclass(frozen=True)
class LeaseRecord:
    """A command's lease (services/leases.py) as the books have it."""

    uuid: str
    command: str
    holder: str
    expires_at: datetime
    taken_over_by: str | None = None


@dataclass(frozen=True)
class LockRecord:
    """The state lock of apply; ``expires_at`` None: held by a person, never expires."""

    name: str
    holder: str
    operation: str
    expires_at: datetime | None


@dataclass(frozen=True)
class SnapshotRecord:
    """A snapshot row still in flux (creating or deleting) or available."""

    instance_uuid: str
    name: str
    status: str


@dataclass(frozen=True)
class AllocationRecord:
    """What one consumer holds on one host, per resource class."""

    host: str
    consumer: str
    resources: Mapping[str, int]


@dataclass(frozen=True)
class MigrationRecord:
    """A move (cold, resize, live, evacuation) as the books have it."""

    uuid: str
    instance_uuid: str
    source: str | None
    dest: str | None
    status: str
    #: ``migration``, ``resize``, ``live-migration`` or ``evacuation`` ("" when unknown).
    kind: str = ""
    shared_storage: bool | None = None


@dataclass(frozen=True)
class HostRecord:
    """A compute host as the books have it."""

    name: str
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class Books:
    """Everything the audit reads from SQL, taken in one short transaction."""

    hosts: Sequence[HostRecord]
    instances: Sequence[InstanceRecord]
    allocations: Sequence[AllocationRecord]
    migrations: Sequence[MigrationRecord] = ()
    #: Cached base file names (checksums) of the images live guests use: disk, kernel, initrd.
    #: A kernel or initrd is named by the domain XML, not by a qcow2 backing file, so the host
    #: alone cannot tell it is in use.
    image_files: frozenset[str] = frozenset()
    leases: Sequence[LeaseRecord] = ()
    locks: Sequence[LockRecord] = ()
    snapshots: Sequence[SnapshotRecord] = ()


@dataclass(frozen=True)
class DomainSeen:
    """A libvirt domain on a host."""

    name: str
    uuid: str
    state: str
    #: The domain's size as libvirt runs it (None: the survey did not say).
    vcpus: int | None = None
    memory_mb: int | None = None
    #: Its libvirt snapshots' names (None: the survey did not say).
    snapshots: tuple[str, ...] | None = None
    has_managed_save: bool = False


@dataclass(frozen=True)
class DirSeen:
    """An entry directly under a host's instances path (``_base`` excluded)."""

    name: str
    uuid: str | None
    kind: Literal["instance", "resize", "other"]
    mtime: datetime
    #: Equal on two hosts when both see one directory on shared storage.
    identity: str = ""


@dataclass(frozen=True)
class BaseSeen:
    """A cached base image under ``<instances_path>/_base``."""

    name: str
    mtime: datetime
    in_use: bool
    size_bytes: int = 0
    identity: str = ""


@dataclass(frozen=True)
class HostSeen:
    """What the survey play saw on one host; ``reachable`` False means nothing else is known."""

    host: str
    reachable: bool
    error: str = ""
    domains: Sequence[DomainSeen] = ()
    dirs: Sequence[DirSeen] = ()
    base_files: Sequence[BaseSeen] = ()
    #: False when the survey did not list files (an older module): no file findings then.
    files_seen: bool = True


@dataclass(frozen=True)
class Policy:
    """The knobs of one audit, from the settings and the clock."""

    now: datetime
    service_down_time_s: int = 60
    power: PowerPolicy = "report"
    running_deleted: DeletedPolicy = "reap"
    build_timeout_s: int = 3600
    task_timeout_s: int = 3600
    orphan_min_age_s: int = 600
    remove_unused_base_images: bool = True
    base_image_min_age_s: int = 86400
    #: Instances a live cloudctl command holds, besides those a live lease in the books names.
    busy: frozenset[str] = frozenset()


FixKind = Literal[
    "ledger_release",  # drop consumer's allocation on host
    "ledger_set",  # make consumer's allocation on host equal resources (create or correct)
    "record_power",  # books follow libvirt: vm_state, power_state
    "set_power",  # libvirt follows the books: domain to state
    "mark_error",  # instance to ERROR with a fault; host/claim settled as the fix says
    "rehome",  # the books follow the domain to another host
    "reap",  # destroy + undefine a deleted instance's domain and remove its files
    "remove_dir",  # remove an orphaned instance directory or resize stash
    "remove_base",  # remove an unused cached base image
    "settle",  # take a dead command's instance over and settle it (see Settlement)
    "forget_lease",  # delete a dead command's lease once nothing names it
    "break_lock",  # remove a state lock whose holder died
]

SettleStep = Literal[
    "build",
    "delete",
    "power",
    "rebuild",
    "evacuation",
    "live_migration",
    "cold_migration",
    "confirm",
    "revert",
    "snapshot",
]


@dataclass(frozen=True)
class Settlement:
    """How to settle what a dead command left on one instance: roll its step forward (the
    hosts show it done, or it can be finished) or back (undo it), and the books after."""

    step: SettleStep
    way: Literal["forward", "back"]
    #: The instance's vm_state and power state afterwards (None: as the step decides).
    vm_state: str | None
    power_state: int
    #: Where the instance lives afterwards (None: nowhere, e.g. a build undone).
    host: str | None
    why: str
    #: ``delete`` of a guest whose host is down: the books only (the reap removes the domain
    #: if the host comes back).
    local_only: bool = False
    #: Snapshot name -> its status afterwards (``available`` or ``deleted``).
    snapshots: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fix:
    """One repair; which fields matter depends on ``kind``."""

    kind: FixKind
    host: str | None = None
    consumer: str = ""
    resources: Mapping[str, int] = field(default_factory=dict)
    vm_state: str | None = None
    power_state: int | None = None
    domain: str = ""
    state: str = ""
    dir_kind: str = ""
    name: str = ""
    migration: str | None = None
    release_on_other_hosts: bool = False
    #: ``reap``: undefine only; the directory is (or may be) the live guest's on shared storage.
    keep_files: bool = False
    settlement: Settlement | None = None


@dataclass(frozen=True)
class Finding:
    """One disagreement between the books and the hosts."""

    code: str
    severity: Severity
    kind: Literal["instance", "allocation", "domain", "host", "file", "lease"]
    object: str
    message: str
    host: str | None = None
    instance: str | None = None
    fixes: tuple[Fix, ...] = ()

    def line(self) -> str:
        """``ELEDGER001 error allocation web-3: allocation on lab-2 but domain on lab-1``."""
        return f"{self.code} {self.severity} {self.kind} {self.object}: {self.message}"


def audit(books: Books, seen: Iterable[HostSeen], policy: Policy) -> list[Finding]:
    """Every disagreement, in a stable order: hosts, instances, ledger, domains, files."""
    survey = {s.host: s for s in seen}
    view = _View(books, survey, policy)
    findings = (
        view.hosts()
        + view.leases()
        + view.instances()
        + view.ledger()
        + view.domains()
        + view.files()
    )
    order = {"host": 0, "lease": 1, "instance": 2, "allocation": 3, "domain": 4, "file": 5}
    return sorted(findings, key=lambda f: (order[f.kind], f.object, f.code, f.host or ""))


class _View:
    """The indexes one audit needs, and one method per family of findings."""

    def __init__(self, books: Books, survey: Mapping[str, HostSeen], policy: Policy) -> None:
        self.books = books
        self.survey = survey
        self.policy = policy
        self.by_uuid = {i.uuid: i for i in books.instances}
        self.live = {
            i.uuid: i for i in books.instances if not i.deleted and i.vm_state != "deleted"
        }
        self.moving = {m.uuid: m for m in books.migrations if m.status in MOVING_STATUSES}
        self.moving_by_instance: dict[str, list[MigrationRecord]] = {}
        for m in self.moving.values():
            self.moving_by_instance.setdefault(m.instance_uuid, []).append(m)
        # uuid -> [(host, domain)] over every reachable host.
        self.domains_of: dict[str, list[tuple[str, DomainSeen]]] = {}
        for s in survey.values():
            if s.reachable:
                for d in s.domains:
                    self.domains_of.setdefault(d.uuid, []).append((s.host, d))
        #: Instances whose record this audit corrects; the ledger and file checks wait for them.
        self.settled: set[str] = set()
        self.dir_identity = {
            (s.host, d.name): d.identity for s in survey.values() if s.reachable for d in s.dirs
        }
        self.lease_rows = {lease.uuid: lease for lease in books.leases}
        live_leases = {u for u, lease in self.lease_rows.items() if lease.expires_at >= policy.now}
        #: Instances a live command holds: never judged, their claims and files theirs.
        self.busy = set(policy.busy) | {
            i.uuid for i in books.instances if i.task_owner in live_leases and not i.deleted
        }
        self.snapshots_of: dict[str, list[SnapshotRecord]] = {}
        for snap in books.snapshots:
            self.snapshots_of.setdefault(snap.instance_uuid, []).append(snap)
        self.down = {
            h.name
            for h in books.hosts
            if not self.reachable(h.name)
            and (
                h.last_heartbeat is None
                or policy.now - h.last_heartbeat > timedelta(seconds=policy.service_down_time_s)
            )
        }

    def same_dir(self, host: str, other: str | None, name: str) -> bool | None:
        """Whether ``host`` and ``other`` see one directory ``name`` (None: cannot tell)."""
        if not self.reachable(other):
            return None
        mine = self.dir_identity.get((host, name))
        theirs = self.dir_identity.get((other or "", name))
        if mine is None or theirs is None:
            return False  # only one of them has it: two directories
        if not mine or not theirs:
            return None  # no identity reported
        return mine == theirs

    def reachable(self, host: str | None) -> bool:
        seen = self.survey.get(host or "")
        return seen is not None and seen.reachable

    def in_flight(self, inst: InstanceRecord) -> bool:
        """A live command holds the instance: its state, claims and files are that command's."""
        return inst.uuid in self.busy

    def orphaned(self, inst: InstanceRecord) -> bool:
        """In a task (or a build) that no live command holds: its command died."""
        if inst.uuid in self.busy:
            return False
        return inst.task_state is not None or inst.vm_state == VmState.BUILDING

    def past_timeout(self, inst: InstanceRecord) -> bool:
        if inst.vm_state == VmState.BUILDING:
            timeout = self.policy.build_timeout_s
        elif inst.task_state is not None:
            timeout = self.policy.task_timeout_s
        else:
            return False
        return timeout > 0 and self.policy.now - inst.updated_at > timedelta(seconds=timeout)

    # -- hosts ---------------------------------------------------------------------------------
    def hosts(self) -> list[Finding]:
        out = []
        down_after = timedelta(seconds=self.policy.service_down_time_s)
        for h in self.books.hosts:
            seen = self.survey.get(h.name)
            beat = h.last_heartbeat
            if seen is not None and seen.reachable:
                continue  # the survey that just answered is a heartbeat
            if beat is None or self.policy.now - beat > down_after:
                since = (
                    f"last heartbeat {beat.isoformat(timespec='seconds')}" if beat else "never seen"
                )
                out.append(
                    Finding("EHOST001", "error", "host", h.name, f"down ({since})", host=h.name)
                )
            elif seen is not None and not seen.reachable:
                out.append(
                    Finding(
                        "EHOST002",
                        "warning",
                        "host",
                        h.name,
                        f"did not answer: {seen.error or 'unreachable'}",
                        host=h.name,
                    )
                )
        return out

    # -- leases and locks: commands that died -------------------------------------------------
    def leases(self) -> list[Finding]:
        out: list[Finding] = []
        now = self.policy.now
        for lease in self.books.leases:
            if lease.expires_at >= now:
                continue
            taker = self.lease_rows.get(lease.taken_over_by or "")
            if taker is not None and taker.expires_at >= now:
                continue  # a live controller is settling what it left
            held = sorted(
                i.name for i in self.books.instances if i.task_owner == lease.uuid and not i.deleted
            )
            since = lease.expires_at.isoformat(timespec="seconds")
            what = f"; holds {', '.join(held)}" if held else ""
            out.append(
                Finding(
                    "ELEASE001",
                    "error",
                    "lease",
                    lease.command,
                    f"its command died ({lease.holder}; lease expired {since}){what}",
                    fixes=(Fix("forget_lease", consumer=lease.uuid),),
                )
            )
        for lock in self.books.locks:
            if lock.expires_at is None or lock.expires_at >= now:
                continue
            since = lock.expires_at.isoformat(timespec="seconds")
            out.append(
                Finding(
                    "ELEASE002",
                    "error",
                    "lease",
                    f"state lock {lock.name}",
                    f"held by a dead {lock.operation} ({lock.holder}; lease expired {since})",
                    fixes=(Fix("break_lock", name=lock.name),),
                )
            )
        return out

    # -- instances: dead commands' tasks, power states, missing or wandering domains ----------
    def instances(self) -> list[Finding]:
        out: list[Finding] = []
        for inst in self.live.values():
            if self.in_flight(inst):
                if self.past_timeout(inst):
                    out.append(self._long_task(inst))
                continue
            if self.orphaned(inst):
                out.append(self._orphan(inst))
                continue
            if inst.host is None or not self.reachable(inst.host):
                continue
            out += self._power(inst)
        return out

    def _where(self, inst: InstanceRecord) -> tuple[str, DomainSeen] | None:
        """The host holding the instance's domain: its own if there, else the first other."""
        places = self.domains_of.get(inst.uuid, [])
        for host, dom in places:
            if host == inst.host:
                return host, dom
        return places[0] if places else None

    def _long_task(self, inst: InstanceRecord) -> Finding:
        task = inst.task_state or inst.vm_state
        since = inst.updated_at.isoformat(timespec="seconds")
        return Finding(
            "ESTATE001",
            "warning",
            "instance",
            inst.name,
            f"in {task} since {since}, held by a live command",
            host=inst.host,
            instance=inst.uuid,
        )

    def _orphan(self, inst: InstanceRecord) -> Finding:
        self.settled.add(inst.uuid)
        task = inst.task_state or inst.vm_state
        lease = self.lease_rows.get(inst.task_owner or "")
        if lease is not None:
            since = lease.expires_at.isoformat(timespec="seconds")
            who = f"its command {lease.command} ({lease.holder}) died: lease expired {since}"
        else:
            who = "no command holds it"
        decision = settle(
            inst,
            self.moving_by_instance.get(inst.uuid, []),
            self.snapshots_of.get(inst.uuid, []),
            self.domains_of.get(inst.uuid, []),
            reachable=frozenset(h for h, s in self.survey.items() if s.reachable),
            down=frozenset(self.down),
        )
        fixes: tuple[Fix, ...] = ()
        how = "waits for its host to answer"
        if decision is not None:
            fixes = (Fix("settle", host=decision.host, consumer=inst.uuid, settlement=decision),)
            how = f"settle: {decision.step} {decision.way} ({decision.why})"
        return Finding(
            "ESTATE002",
            "error",
            "instance",
            inst.name,
            f"in {task}, but {who}; {how}",
            host=inst.host,
            instance=inst.uuid,
            fixes=fixes,
        )

    def _power(self, inst: InstanceRecord) -> list[Finding]:
        expected = EXPECTED_DOMAIN_STATES.get(inst.vm_state)
        if expected is None:  # ERROR, SHELVED...: no power expectation
            return []
        where = self._where(inst)
        if where is None:
            self.settled.add(inst.uuid)
            return [
                Finding(
                    "EDOMAIN001",
                    "error",
                    "instance",
                    inst.name,
                    f"domain {inst.domain_name} is missing on {inst.host}",
                    host=inst.host,
                    instance=inst.uuid,
                    fixes=(
                        Fix(
                            "mark_error",
                            host=inst.host,
                            consumer=inst.uuid,
                            resources=inst.resources,
                            power_state=int(PowerState.NOSTATE),
                        ),
                    ),
                )
            ]
        host, dom = where
        if host != inst.host:
            self.settled.add(inst.uuid)
            if not self.reachable(inst.host) or self._moving_between(inst, host):
                return []
            return [
                Finding(
                    "EDOMAIN002",
                    "error",
                    "instance",
                    inst.name,
                    f"domain on {host} but the books say {inst.host}",
                    host=host,
                    instance=inst.uuid,
                    fixes=(Fix("rehome", host=host, consumer=inst.uuid, resources=inst.resources),),
                )
            ]
        missing = self._dir_missing(inst)
        if dom.state in expected:
            return missing
        message = f"{inst.vm_state} in the books but {dom.state} on {host}"
        if inst.vm_state == VmState.SOFT_DELETED or self.policy.power == "restore":
            target = RESTORED_DOMAIN_STATE.get(inst.vm_state)
            fix = Fix(
                "set_power", host=host, consumer=inst.uuid, domain=dom.name, state=target or ""
            )
        else:
            fix = Fix(
                "record_power",
                host=host,
                consumer=inst.uuid,
                vm_state=REPORTED_VM_STATE.get(dom.state, VmState.STOPPED),
                power_state=int(PowerState.from_libvirt(dom.state)),
            )
        return [
            *missing,
            Finding(
                "EPOWER001",
                "error",
                "instance",
                inst.name,
                message,
                host=host,
                instance=inst.uuid,
                fixes=(fix,) if fix.kind != "set_power" or fix.state else (),
            ),
        ]

    def _dir_missing(self, inst: InstanceRecord) -> list[Finding]:
        seen = self.survey.get(inst.host or "")
        if seen is None or not seen.files_seen or any(d.name == inst.uuid for d in seen.dirs):
            return []
        return [
            Finding(
                "EFILE004",
                "error",
                "instance",
                inst.name,
                f"its domain is on {inst.host} but its directory (disks) is not",
                host=inst.host,
                instance=inst.uuid,
            )
        ]

    def _moving_between(self, inst: InstanceRecord, host: str) -> bool:
        return any(host in (m.source, m.dest) for m in self.moving_by_instance.get(inst.uuid, []))

    # -- ledger ----------------------------------------------------------------------------------
    def ledger(self) -> list[Finding]:
        expected: dict[tuple[str, str], InstanceRecord] = {}
        optional: set[tuple[str, str]] = set()
        skip: set[str] = set(self.settled)
        for live in self.live.values():
            if self.in_flight(live):
                skip.add(live.uuid)
                continue
            if live.host is None or live.uuid in skip:
                continue
            expected[(live.host, live.uuid)] = live
            if live.vm_state == VmState.ERROR:
                optional.add((live.host, live.uuid))
        actual = {(a.host, a.consumer): a for a in self.books.allocations}
        out: list[Finding] = []
        for (host, consumer), alloc in sorted(actual.items()):
            mig = self.moving.get(consumer)
            if mig is not None and (mig.source == host or mig.instance_uuid in skip):
                continue
            if consumer in skip:
                continue
            inst = self.live.get(consumer)
            if (host, consumer) in expected:
                want = expected[(host, consumer)].resources
                if dict(alloc.resources) != dict(want):
                    out.append(
                        Finding(
                            "ELEDGER004",
                            "error",
                            "allocation",
                            expected[(host, consumer)].name,
                            f"allocation on {host} is {_fmt(alloc.resources)}, "
                            f"the flavor says {_fmt(want)}",
                            host=host,
                            instance=consumer,
                            fixes=(
                                Fix("ledger_set", host=host, consumer=consumer, resources=want),
                            ),
                        )
                    )
                continue
            if inst is not None and inst.host is not None and host != inst.host:
                if self._moving_between(inst, host):
                    continue
                where = self._where(inst)
                on = f"domain on {where[0]}" if where else f"instance on {inst.host}"
                fixes = [Fix("ledger_release", host=host, consumer=consumer)]
                if (inst.host, consumer) not in actual and (inst.host, consumer) not in optional:
                    fixes.append(
                        Fix(
                            "ledger_set",
                            host=inst.host,
                            consumer=consumer,
                            resources=inst.resources,
                        )
                    )
                out.append(
                    Finding(
                        "ELEDGER001",
                        "error",
                        "allocation",
                        inst.name,
                        f"allocation on {host} but {on}",
                        host=host,
                        instance=consumer,
                        fixes=tuple(fixes),
                    )
                )
                continue
            owner = inst.name if inst is not None else consumer
            out.append(
                Finding(
                    "ELEDGER002",
                    "error",
                    "allocation",
                    owner,
                    f"allocation of {_fmt(alloc.resources)} on {host} belongs to no live guest",
                    host=host,
                    instance=consumer if inst is not None else None,
                    fixes=(Fix("ledger_release", host=host, consumer=consumer),),
                )
            )
        for (host, consumer), inst in sorted(expected.items()):
            if (host, consumer) in actual or (host, consumer) in optional:
                continue
            if any(a[1] == consumer for a in actual if a[0] != host):
                continue  # ELEDGER001 above adds it
            out.append(
                Finding(
                    "ELEDGER003",
                    "error",
                    "allocation",
                    inst.name,
                    f"no allocation on {host} for the guest ({inst.vm_state})",
                    host=host,
                    instance=consumer,
                    fixes=(
                        Fix("ledger_set", host=host, consumer=consumer, resources=inst.resources),
                    ),
                )
            )
        return out

    # -- domains no live instance owns -----------------------------------------------------------
    def domains(self) -> list[Finding]:
        out: list[Finding] = []
        for s in self.survey.values():
            if not s.reachable:
                continue
            for dom in s.domains:
                inst = self.by_uuid.get(dom.uuid)
                if inst is None:
                    out.append(
                        Finding(
                            "EDOMAIN004",
                            "warning",
                            "domain",
                            dom.name,
                            f"{dom.state} on {s.host}, unknown to cloudctl",
                            host=s.host,
                        )
                    )
                elif inst.uuid in self.live:
                    out += self._stale_copy(s.host, dom, self.live[inst.uuid])
                elif inst.uuid not in self.busy:
                    reap = self.policy.running_deleted == "reap"
                    out.append(
                        Finding(
                            "EDOMAIN003",
                            "error",
                            "domain",
                            dom.name,
                            f"{dom.state} on {s.host}, but instance {inst.name} is deleted",
                            host=s.host,
                            instance=inst.uuid,
                            fixes=(Fix("reap", host=s.host, consumer=inst.uuid, domain=dom.name),)
                            if reap
                            else (),
                        )
                    )
        return out

    def _stale_copy(self, host: str, dom: DomainSeen, inst: InstanceRecord) -> list[Finding]:
        """A domain of a live guest on a host other than its own, while its own host has it too."""
        if host == inst.host or inst.host is None or self.in_flight(inst):
            return []
        if not any(h == inst.host for h, _ in self.domains_of.get(inst.uuid, [])):
            return []  # not on its own host: EDOMAIN002 (rehome) is the finding
        if self._moving_between(inst, host):
            return []  # VERIFY_RESIZE keeps the source's domain until confirm
        separate = self.same_dir(host, inst.host, inst.uuid) is False
        return [
            Finding(
                "EDOMAIN005",
                "error",
                "domain",
                dom.name,
                f"{dom.state} on {host}: a stale copy of instance {inst.name}, "
                f"which lives on {inst.host}",
                host=host,
                instance=inst.uuid,
                fixes=(
                    Fix(
                        "reap",
                        host=host,
                        consumer=inst.uuid,
                        domain=dom.name,
                        keep_files=not separate,
                    ),
                ),
            )
        ]

    # -- files -----------------------------------------------------------------------------------
    def files(self) -> list[Finding]:
        out: list[Finding] = []
        min_age = timedelta(seconds=self.policy.orphan_min_age_s)
        reported: set[str] = set()
        for s in sorted(self.survey.values(), key=lambda seen: seen.host):
            if not s.reachable:
                continue
            on_host = {d.uuid for d in s.domains}
            for d in s.dirs:
                if d.uuid is None or d.kind == "other" or d.uuid in on_host:
                    continue
                if d.kind == "instance" and any(
                    self.same_dir(s.host, other, d.name) is not False
                    for other, _ in self.domains_of.get(d.uuid, [])
                ):
                    continue  # a domain on another host uses this very directory (shared)
                if self.policy.now - d.mtime < min_age or self._dir_in_use(s.host, d):
                    continue
                if d.identity and d.identity in reported:
                    continue  # one directory on shared storage, seen from several hosts
                reported.add(d.identity)
                code = "EFILE001" if d.kind == "instance" else "EFILE002"
                what = "instance directory" if d.kind == "instance" else "resize stash"
                inst = self.by_uuid.get(d.uuid)
                owner = f"instance {inst.name}" if inst is not None else "no instance"
                where = (
                    f" (lives on {inst.host})" if inst is not None and d.uuid in self.live else ""
                )
                out.append(
                    Finding(
                        code,
                        "warning",
                        "file",
                        f"{s.host}:{d.name}",
                        f"{what} of {owner}{where} is not needed on {s.host}",
                        host=s.host,
                        instance=d.uuid if inst is not None else None,
                        fixes=(Fix("remove_dir", host=s.host, consumer=d.uuid, dir_kind=d.kind),),
                    )
                )
            if not self.policy.remove_unused_base_images:
                continue
            base_age = timedelta(seconds=self.policy.base_image_min_age_s)
            for b in s.base_files:
                if b.in_use or b.name in self.books.image_files:
                    continue
                if self.policy.now - b.mtime < base_age:
                    continue
                if b.identity and b.identity in reported:
                    continue  # one file on shared storage, seen from several hosts
                reported.add(b.identity)
                out.append(
                    Finding(
                        "EFILE003",
                        "warning",
                        "file",
                        f"{s.host}:_base/{b.name}",
                        f"cached base image unused since {b.mtime.isoformat(timespec='seconds')}",
                        host=s.host,
                        fixes=(Fix("remove_base", host=s.host, name=b.name),),
                    )
                )
        return out

    def _dir_in_use(self, host: str, d: DirSeen) -> bool:
        assert d.uuid is not None
        inst = self.live.get(d.uuid)
        if d.uuid in self.busy or (inst is not None and self.in_flight(inst)):
            return True
        if any(host in (m.source, m.dest) for m in self.moving_by_instance.get(d.uuid, [])):
            return True
        if inst is None:
            return False
        if inst.vm_state == VmState.ERROR or inst.uuid in self.settled:
            return True  # an operator decides what an ERROR guest's files are worth
        if d.kind != "instance":
            return False
        # Its own host's, or the same directory its own host sees (shared storage), or its own
        # host cannot tell us: kept.
        return inst.host == host or self.same_dir(host, inst.host, d.name) is not False


# -- settling what a dead command left ----------------------------------------------------------

#: Power task -> the vm_state its flow ends in (services/compute/power.py).
POWER_TARGETS: Mapping[str, str] = {
    TaskState.POWERING_OFF: VmState.STOPPED,
    TaskState.POWERING_ON: VmState.ACTIVE,
    TaskState.REBOOTING: VmState.ACTIVE,
    TaskState.REBOOTING_HARD: VmState.ACTIVE,
    TaskState.PAUSING: VmState.PAUSED,
    TaskState.UNPAUSING: VmState.ACTIVE,
    TaskState.SUSPENDING: VmState.SUSPENDED,
    TaskState.RESUMING: VmState.ACTIVE,
    TaskState.SOFT_DELETING: VmState.SOFT_DELETED,
    TaskState.RESTORING: VmState.ACTIVE,
}
REBUILD_TASKS = frozenset(
    {TaskState.REBUILDING, TaskState.REBUILD_BLOCK_DEVICE_MAPPING, TaskState.REBUILD_SPAWNING}
)
SNAPSHOT_TASKS = frozenset({TaskState.IMAGE_SNAPSHOT, TaskState.IMAGE_UPLOADING})
RUNNING = frozenset({"running", "blocked"})


def _seen_state(dom: DomainSeen) -> str:
    """The vm_state an idle guest in ``dom`` has (a managed save is a suspended guest)."""
    if dom.state in ("shutoff", "shutdown") and dom.has_managed_save:
        return VmState.SUSPENDED
    return REPORTED_VM_STATE.get(dom.state, VmState.STOPPED)


def _agrees(vm_state: str, dom: DomainSeen) -> bool:
    if vm_state == VmState.SUSPENDED:
        return dom.state == "shutoff" and dom.has_managed_save
    return dom.state in EXPECTED_DOMAIN_STATES.get(vm_state, frozenset())


def settle(
    inst: InstanceRecord,
    moves: Sequence[MigrationRecord],
    snapshots: Sequence[SnapshotRecord],
    domains: Sequence[tuple[str, DomainSeen]],
    *,
    reachable: frozenset[str],
    down: frozenset[str] = frozenset(),
) -> Settlement | None:
    """How to settle ``inst``, whose command died mid-task, from what the hosts show.

    ``moves`` are its migrations under way, ``snapshots`` its snapshot rows, ``domains`` every
    (host, domain) of its uuid the survey saw, ``reachable`` the hosts that answered and
    ``down`` those past ``service_down_time``. None: a host that would tell did not answer;
    try again on the next pass.
    """
    on = {h: d for h, d in domains}
    task = inst.task_state
    host = inst.host
    mig = moves[-1] if moves else None

    def tells(*names: str | None) -> bool:
        return all(n is None or n in reachable for n in names)

    def power(dom: DomainSeen) -> int:
        return int(PowerState.from_libvirt(dom.state))

    if task == TaskState.DELETING:
        if tells(host):
            return Settlement("delete", "forward", VmState.DELETED, 0, host, "finish the delete")
        if host in down:
            return Settlement(
                "delete", "forward", VmState.DELETED, 0, host, "its host is down", local_only=True
            )
        return None
    if inst.vm_state == VmState.BUILDING:
        if host is None:
            return Settlement("build", "back", VmState.ERROR, 0, None, "it was never placed")
        if not tells(host):
            return None
        dom = on.get(host)
        if dom is not None and dom.state in RUNNING:
            return Settlement(
                "build", "forward", VmState.ACTIVE, power(dom), host, f"it runs on {host}"
            )
        return Settlement("build", "back", VmState.ERROR, 0, host, f"it does not run on {host}")
    if mig is not None and (mig.kind == "live-migration" or task == TaskState.MIGRATING):
        if not tells(mig.source, mig.dest):
            return None
        src = on.get(mig.source or "")
        dst = on.get(mig.dest or "") if mig.dest else None
        if dst is not None and dst.state in RUNNING and (src is None or src.state not in RUNNING):
            return Settlement(
                "live_migration",
                "forward",
                VmState.ACTIVE,
                power(dst),
                mig.dest,
                f"it runs on {mig.dest}",
            )
        if src is not None:
            return Settlement(
                "live_migration",
                "back",
                VmState.ACTIVE,
                int(PowerState.RUNNING),
                mig.source,
                f"it is still on {mig.source}",
            )
        return Settlement(
            "live_migration", "back", VmState.ERROR, 0, mig.source, "its domain is on no host"
        )
    if mig is not None and mig.kind == "evacuation":
        if not tells(mig.dest):
            return None
        dst = on.get(mig.dest or "")
        if dst is not None:
            return Settlement(
                "evacuation",
                "forward",
                _seen_state(dst),
                power(dst),
                mig.dest,
                f"it was rebuilt on {mig.dest}",
            )
        return Settlement(
            "evacuation", "back", VmState.ERROR, 0, mig.source, f"it is not on {mig.dest}"
        )
    if mig is not None and (mig.kind in ("migration", "resize") or task in MOVE_TASKS):
        if task == TaskState.RESIZE_CONFIRMING or mig.status == "confirming":
            if not tells(mig.source):
                return None
            return Settlement("confirm", "forward", None, 0, mig.dest, "discard the source's stash")
        if not tells(mig.source, mig.dest):
            return None
        if task == TaskState.RESIZE_REVERTING or mig.status == "reverting":
            return Settlement("revert", "forward", None, 0, mig.source, "finish the revert")
        return Settlement(
            "cold_migration", "back", None, 0, mig.source, f"restore it on {mig.source}"
        )
    if not tells(host) or host is None:
        return None
    dom = on.get(host)
    if task in REBUILD_TASKS:
        if dom is not None and dom.state in RUNNING:
            return Settlement(
                "rebuild", "forward", VmState.ACTIVE, power(dom), host, f"it runs on {host}"
            )
        return Settlement(
            "rebuild", "back", VmState.ERROR, power(dom) if dom else 0, host, "it does not run"
        )
    if dom is None:
        step: SettleStep = "snapshot" if task in SNAPSHOT_TASKS else "power"
        return Settlement(step, "back", VmState.ERROR, 0, host, f"its domain is not on {host}")
    if task in SNAPSHOT_TASKS:
        if dom.snapshots is None:
            return None
        names = set(dom.snapshots)
        after = {
            s.name: "available" if s.name in names else "deleted"
            for s in snapshots
            if s.status in ("creating", "deleting")
        }
        return Settlement(
            "snapshot",
            "forward",
            _seen_state(dom),
            power(dom),
            host,
            "snapshots as libvirt has them",
            snapshots=after,
        )
    target = POWER_TARGETS.get(task or "")
    if target is not None and _agrees(target, dom):
        return Settlement("power", "forward", target, power(dom), host, f"{dom.state} on {host}")
    if _agrees(inst.vm_state, dom):
        return Settlement(
            "power", "back", inst.vm_state, power(dom), host, f"{dom.state} on {host}"
        )
    return Settlement("power", "back", _seen_state(dom), power(dom), host, f"{dom.state} on {host}")


def _fmt(resources: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(resources.items())) or "nothing"


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding is an error (``verify`` exits 1)."""
    return any(f.severity == "error" for f in findings)
