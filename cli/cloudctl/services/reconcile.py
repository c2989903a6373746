"""Keeping the books true: ``cloudctl verify``, ``cloudctl reconcile`` and the agent's passes.

Nova's compute manager runs periodic tasks so its database keeps matching the hypervisors. Here
one pass is a handful of batched steps, each one Ansible play over every host at most:

1. ``update_available_resource``: one survey play (``discover.yml`` with files) reads every host's
   capacity, domains and instance files; it is the hosts' heartbeat, and a host silent for longer
   than ``service_down_time_s`` is down (a host event records each up/down change).
2. The pure :func:`cloudctl.audit.audit` compares the survey with the books and returns findings
   with their fixes.
3. The fixes run in task order: ``settle_dead_commands`` (take over the expired leases of
   commands that died and settle what they left by what the hosts show: services/settle.py),
   ``sync_power_states`` (SQL, and one
   ``power.yml`` play under the ``restore`` policy), ``heal_allocations`` (SQL),
   ``cleanup_running_deleted_instances`` (one ``destroy.yml`` play), ``reclaim_queued_deletes``,
   ``poll_unconfirmed_resizes``, then ``cleanup_orphaned_files`` (one ``cleanup_files.yml`` play).

Every correction is an instance action (``reconcile``, one event per fix) or a host event. Each SQL
fix is its own short transaction and re-checks, with a compare-and-swap, that no command took the
instance since the survey. A pass holds a command lease of its own ("reconcile"); instances a
live lease holds, whichever controller runs its command, are never judged or touched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloudctl import audit, ledger
from cloudctl.audit import Books, Finding, Fix, HostSeen
from cloudctl.db.models import (
    Allocation,
    CommandLease,
    Host,
    HostEvent,
    Instance,
    Migration,
    Snapshot,
    StateLock,
)
from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import InvalidState, NotFound
from cloudctl.executor.base import HostTarget, RunRequest, RunResult
from cloudctl.render.domain import render_domain_xml
from cloudctl.services import actions, hosts, leases, settle
from cloudctl.services.compute import tasks
from cloudctl.services.compute.common import domain_spec, run_error
from cloudctl.services.compute.delete import reclaim_soft_deleted
from cloudctl.services.compute.migrate import confirm_due_resizes
from cloudctl.services.context import Context

#: The periodic tasks of one pass, in the order they run (Nova's names where Nova has one).
TASKS = (
    "update_available_resource",
    "settle_dead_commands",
    "sync_power_states",
    "heal_allocations",
    "cleanup_running_deleted_instances",
    "reclaim_queued_deletes",
    "poll_unconfirmed_resizes",
    "cleanup_orphaned_files",
)

_TASK_OF_CODE = {
    "ESTATE002": "settle_dead_commands",
    "ELEASE001": "settle_dead_commands",
    "ELEASE002": "settle_dead_commands",
    "EPOWER001": "sync_power_states",
    "EDOMAIN001": "sync_power_states",
    "EDOMAIN002": "sync_power_states",
    "ELEDGER001": "heal_allocations",
    "ELEDGER002": "heal_allocations",
    "ELEDGER003": "heal_allocations",
    "ELEDGER004": "heal_allocations",
    "EDOMAIN003": "cleanup_running_deleted_instances",
    "EDOMAIN005": "cleanup_running_deleted_instances",
    "EFILE001": "cleanup_orphaned_files",
    "EFILE002": "cleanup_orphaned_files",
    "EFILE003": "cleanup_orphaned_files",
}

_DELETED_POLICIES: Mapping[str, audit.DeletedPolicy] = {"reap": "reap", "log": "log"}

_SQL_FIXES = frozenset({"ledger_release", "ledger_set", "record_power", "mark_error", "rehome"})


@dataclass
class Correction:
    """One thing a pass (or ``verify --fix``) changed, or tried to."""

    task: str
    code: str
    object: str
    host: str | None
    what: str
    ok: bool = True

    def view(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "task": self.task,
            "code": self.code,
            "object": self.object,
            "host": self.host,
            "what": self.what,
            "result": "done" if self.ok else "failed",
        }


@dataclass
class Survey:
    """One survey play's outcome."""

    seen: list[HostSeen]
    result: RunResult | None


@dataclass
class PassReport:
    """What one reconcile pass found and did."""

    request_id: str
    hosts_up: list[str] = field(default_factory=list)
    hosts_down: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    tasks_run: list[str] = field(default_factory=list)
    stopped: bool = False

    def view(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "request_id": self.request_id,
            "tasks": self.tasks_run,
            "hosts_up": self.hosts_up,
            "hosts_down": self.hosts_down,
            "findings": [finding_view(f) for f in self.findings],
            "corrections": [c.view() for c in self.corrections],
            "reclaimed": self.reclaimed,
            "confirmed": self.confirmed,
            "failed": sum(1 for c in self.corrections if not c.ok),
            "stopped": self.stopped,
        }


def finding_view(f: Finding) -> dict[str, Any]:
    """A finding as ``verify -o json`` prints it."""
    return {
        "code": f.code,
        "severity": f.severity,
        "kind": f.kind,
        "object": f.object,
        "host": f.host,
        "message": f.message,
        "fix": ", ".join(_describe(fix) for fix in f.fixes) or None,
    }


# -- reading the books and the hosts --------------------------------------------------------------
def read_books(session: Session) -> Books:
    """The SQL side of an audit, in one read."""
    host_rows = list(session.scalars(select(Host)))
    names = {h.id: h.name for h in host_rows}
    instances = []
    image_files: set[str] = set()
    for inst in session.scalars(select(Instance)):
        if not inst.deleted and inst.image is not None:
            image = inst.image
            image_files.update(
                c for c in (image.checksum, image.kernel_checksum, image.initrd_checksum) if c
            )
        instances.append(
            audit.InstanceRecord(
                uuid=inst.uuid,
                name=inst.name,
                host=names.get(inst.host_id) if inst.host_id is not None else None,
                vm_state=inst.vm_state,
                task_state=inst.task_state,
                power_state=inst.power_state,
                updated_at=inst.updated_at or inst.created_at,
                domain_name=inst.domain_name,
                resources=ledger.resources_for(
                    inst.vcpus, inst.memory_mb, inst.root_gb, inst.ephemeral_gb, inst.swap_mb
                ),
                deleted=bool(inst.deleted),
                task_owner=inst.task_owner,
                launched=inst.launched_at is not None,
            )
        )
    held: dict[tuple[str, str], dict[str, int]] = {}
    for a in session.scalars(select(Allocation)):
        held.setdefault((names.get(a.host_id, f"#{a.host_id}"), a.consumer_uuid), {})[
            a.resource_class
        ] = a.used
    return Books(
        hosts=[
            audit.HostRecord(name=h.name, last_heartbeat=h.last_heartbeat)
            for h in host_rows
            if not h.deleted
        ],
        instances=instances,
        allocations=[
            audit.AllocationRecord(host=h, consumer=c, resources=r) for (h, c), r in held.items()
        ],
        migrations=[
            audit.MigrationRecord(
                uuid=m.uuid,
                instance_uuid=m.instance_uuid,
                source=m.source_host,
                dest=m.dest_host,
                status=m.status,
                kind=m.migration_type,
                shared_storage=m.shared_storage,
            )
            for m in session.scalars(select(Migration))
        ],
        image_files=frozenset(image_files),
        leases=[
            audit.LeaseRecord(
                uuid=row.uuid,
                command=row.command,
                holder=f"{row.holder}, pid {row.pid}",
                expires_at=row.expires_at,
                taken_over_by=row.taken_over_by,
            )
            for row in session.scalars(select(CommandLease))
        ],
        locks=[
            audit.LockRecord(
                name=row.name,
                holder=f"{row.holder}, pid {row.pid}",
                operation=row.operation,
                expires_at=row.expires_at,
            )
            for row in session.scalars(select(StateLock))
        ],
        snapshots=[
            audit.SnapshotRecord(instance_uuid=row.instance_uuid, name=row.name, status=row.status)
            for row in session.scalars(select(Snapshot).where(Snapshot.deleted == 0))
        ],
    )


def ledger_findings(session: Session, now: datetime) -> list[Finding]:
    """The ledger's disagreements with the books alone (no host asked): ELEDGER codes."""
    found = audit.audit(read_books(session), [], audit.Policy(now=now))
    return [f for f in found if f.code.startswith("ELEDGER")]


def survey(ctx: Context) -> Survey:
    """One play over every host: capacity, domains and instance files."""
    blind: list[HostSeen] = []  # hosts this controller cannot reach: files it lacks
    with ctx.db.unit_of_work() as session:
        found = []
        for h in hosts.list_hosts(session):
            missing = hosts.missing_controller_file(h)
            if missing is None:
                found.append(hosts.host_target(h))
            else:
                blind.append(HostSeen(h.name, False, error=missing.message[:300]))
        targets = tuple(found)
    if not targets:
        return Survey(blind, None)
    ctx.progress.info(f"surveying {len(targets)} host(s)")
    result = ctx.executor.run(
        RunRequest(
            playbook="discover.yml",
            hosts=targets,
            extravars={"cloudctl_survey_files": True},
            description="survey hosts",
        ),
        ctx.progress.run_event,
    )
    seen = parse_survey(result, targets)
    # an answer is a heartbeat (the audit counts it as one too)
    hosts.touch_hosts(ctx, [s.host for s in seen if s.reachable])
    return Survey(seen + blind, result)


def parse_survey(result: RunResult, targets: Sequence[HostTarget]) -> list[HostSeen]:
    """Turn the host-facts results into :class:`HostSeen` (hosts that did not answer included)."""
    seen = []
    for t in targets:
        task = next(
            (r for r in reversed(result.tasks) if r.host == t.name and r.task == "host facts"), None
        )
        if task is None or task.status in ("failed", "unreachable"):
            reason = task.message if task is not None else "no answer"
            seen.append(HostSeen(t.name, False, error=(reason or "failed").splitlines()[0][:300]))
            continue
        facts = task.result.get("host_facts") or {}
        files = facts.get("files")
        seen.append(
            HostSeen(
                host=t.name,
                reachable=True,
                domains=tuple(
                    audit.DomainSeen(
                        name=str(d["name"]),
                        uuid=str(d["uuid"]),
                        state=str(d["state"]),
                        vcpus=_int_or_none(d.get("vcpus")),
                        memory_mb=_int_or_none(d.get("memory_mb")),
                        snapshots=tuple(str(n) for n in d["snapshots"])
                        if isinstance(d.get("snapshots"), list)
                        else None,
                        has_managed_save=bool(d.get("has_managed_save")),
                    )
                    for d in facts.get("domains", [])
                ),
                dirs=tuple(
                    audit.DirSeen(
                        name=str(d["name"]),
                        uuid=d.get("uuid"),
                        kind=d.get("kind", "other"),
                        mtime=_ts(d.get("mtime")),
                        identity=str(d.get("identity") or ""),
                    )
                    for d in (files or {}).get("instance_dirs", [])
                ),
                base_files=tuple(
                    audit.BaseSeen(
                        name=str(b["name"]),
                        mtime=_ts(b.get("mtime")),
                        in_use=bool(b.get("in_use", True)),
                        size_bytes=int(b.get("size_bytes", 0)),
                        identity=str(b.get("identity") or ""),
                    )
                    for b in (files or {}).get("base_files", [])
                ),
                files_seen=isinstance(files, Mapping),
            )
        )
    return seen


def _ts(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value or 0), UTC)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def policy_for(ctx: Context, books: Books, *, power: str | None = None) -> audit.Policy:
    """The audit's knobs from the settings (the books' leases tell which instances are busy)."""
    s = ctx.settings
    return audit.Policy(
        now=ctx.clock(),
        service_down_time_s=s.service_down_time_s,
        power="restore" if (power or s.sync_power_state_policy) == "restore" else "report",
        running_deleted=_DELETED_POLICIES.get(s.running_deleted_instance_action, "noop"),
        build_timeout_s=s.instance_build_timeout_s,
        task_timeout_s=s.task_timeout_s,
        orphan_min_age_s=s.orphan_files_min_age_s,
        remove_unused_base_images=s.remove_unused_base_images,
        base_image_min_age_s=s.remove_unused_base_images_min_age_s,
    )


# -- verify --------------------------------------------------------------------------------------
def verify(ctx: Context, *, fix: bool = False) -> dict[str, Any]:
    """Compare the books with every host; with ``fix``, apply the safe repairs and look again.

    Safe repairs: the ledger, the books following libvirt's power state (never the other way
    round), stuck tasks to ERROR, deleted instances' domains reaped (unless the
    running-deleted policy says otherwise), orphaned files and unused base images removed.
    """
    seen = survey(ctx).seen
    with ctx.db.unit_of_work() as session:
        books = read_books(session)
    findings = audit.audit(books, seen, policy_for(ctx, books, power="report"))
    fixed: list[Correction] = []
    if fix and any(f.fixes for f in findings):
        with leases.command_lease(ctx, "verify --fix") as lease:
            for task in TASKS:
                fixed += _run_task(ctx, task, findings, lease.request_id)
        seen = survey(ctx).seen
        with ctx.db.unit_of_work() as session:
            books = read_books(session)
        findings = audit.audit(books, seen, policy_for(ctx, books, power="report"))
    return {
        "findings": [finding_view(f) for f in findings],
        "errors": sum(1 for f in findings if f.severity == "error"),
        "warnings": sum(1 for f in findings if f.severity == "warning"),
        "fixed": [c.view() for c in fixed],
    }


def settle_dead(ctx: Context, instances: Collection[str]) -> list[Correction]:
    """Settle, now, what dead commands left on ``instances`` (and their expired leases): one
    survey and the ``settle_dead_commands`` task alone (``apply`` resuming a killed apply)."""
    seen = survey(ctx).seen
    with ctx.db.unit_of_work() as session:
        books = read_books(session)
    findings = [
        f
        for f in audit.audit(books, seen, policy_for(ctx, books))
        if f.code in ("ESTATE002", "ELEASE001") and (f.instance is None or f.instance in instances)
    ]
    with leases.command_lease(ctx, "settle") as lease:
        return _run_task(ctx, "settle_dead_commands", findings, lease.request_id)


# -- reconcile -----------------------------------------------------------------------------------
def reconcile(ctx: Context, *, should_stop: Callable[[], bool] = lambda: False) -> PassReport:
    """One pass of every periodic task; ``should_stop`` is asked between tasks."""
    with leases.command_lease(ctx, "reconcile") as lease:
        return _reconcile(ctx, lease.request_id, should_stop)


def _reconcile(ctx: Context, request_id: str, should_stop: Callable[[], bool]) -> PassReport:
    report = PassReport(request_id=request_id)
    sv = survey(ctx)
    if sv.result is not None:
        hosts.apply_facts(ctx, sv.result)
    report.hosts_up, report.hosts_down = _record_host_states(ctx, sv.seen, report.request_id)
    report.tasks_run.append("update_available_resource")
    with ctx.db.unit_of_work() as session:
        books = read_books(session)
    report.findings = audit.audit(books, sv.seen, policy_for(ctx, books))
    for task in TASKS[1:]:
        if should_stop():
            report.stopped = True
            break
        if task == "reclaim_queued_deletes":
            reclaimed = reclaim_soft_deleted(ctx, ctx.clock())
            report.reclaimed = [str(v["name"]) for v in reclaimed]
        elif task == "poll_unconfirmed_resizes":
            report.confirmed = confirm_due_resizes(ctx, ctx.clock())
        else:
            report.corrections += _run_task(ctx, task, report.findings, report.request_id)
        report.tasks_run.append(task)
    return report


def _record_host_states(
    ctx: Context, seen: Iterable[HostSeen], request_id: str
) -> tuple[list[str], list[str]]:
    """Up/down per host after the survey; a change since the last recorded one is a host event."""
    answered = {s.host: s for s in seen}
    up: list[str] = []
    down: list[str] = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for host in hosts.list_hosts(session):
            is_up = hosts.is_up(host, now, ctx.settings.service_down_time_s)
            (up if is_up else down).append(host.name)
            last = session.scalars(
                select(HostEvent.event)
                .where(HostEvent.host == host.name, HostEvent.event.in_(("up", "down")))
                .order_by(HostEvent.id.desc())
            ).first()
            state = "up" if is_up else "down"
            if last == state or (last is None and is_up):
                continue
            s = answered.get(host.name)
            why = (
                f"no heartbeat for more than {ctx.settings.service_down_time_s}s"
                + (f" ({s.error})" if s is not None and s.error else "")
                if not is_up
                else "answering again"
            )
            session.add(
                HostEvent(
                    host=host.name, event=state, request_id=request_id, message=why, created_at=now
                )
            )
            ctx.progress.info(f"host {host.name} is {state}: {why}")
    return up, down


def _run_task(
    ctx: Context, task: str, findings: Sequence[Finding], request_id: str
) -> list[Correction]:
    mine = [f for f in findings if f.fixes and _TASK_OF_CODE.get(f.code) == task]
    if not mine:
        return []
    out: list[Correction] = []
    if task == "settle_dead_commands":
        for o in settle.settle_all(ctx, mine, request_id):
            corr = Correction(task, o.finding.code, o.finding.object, o.finding.host, o.what, o.ok)
            ctx.progress.info(f"{o.finding.code} {o.finding.object}: {corr.what}")
            out.append(corr)
        return out
    for f in mine:
        for fix in f.fixes:
            if fix.kind in _SQL_FIXES:
                out.append(_apply_sql(ctx, task, f, fix, request_id))
    plays = [(f, fix) for f in mine for fix in f.fixes if fix.kind not in _SQL_FIXES]
    if plays:
        kinds = {fix.kind for _, fix in plays}
        if "set_power" in kinds:
            out += _set_power(ctx, task, [p for p in plays if p[1].kind == "set_power"], request_id)
        if "reap" in kinds:
            out += _reap(ctx, task, [p for p in plays if p[1].kind == "reap"], request_id)
        if kinds & {"remove_dir", "remove_base"}:
            files = [p for p in plays if p[1].kind in ("remove_dir", "remove_base")]
            out += _remove_files(ctx, task, files, request_id)
    return out


def _describe(fix: Fix) -> str:
    res = ", ".join(f"{k}={v}" for k, v in sorted(fix.resources.items()))
    return {
        "ledger_release": f"release the allocation on {fix.host}",
        "ledger_set": f"set the allocation on {fix.host} to {res}",
        "record_power": f"record vm_state {fix.vm_state}",
        "set_power": f"put the domain back to {fix.state}",
        "mark_error": "set ERROR"
        + (f", charged on {fix.host}" if fix.host and fix.resources else ", claim released"),
        "rehome": f"record it on {fix.host}",
        "reap": f"destroy and undefine {fix.domain} on {fix.host}"
        + ("" if fix.keep_files else ", remove its files"),
        "remove_dir": f"remove the {fix.dir_kind} directory on {fix.host}",
        "remove_base": f"remove the base image on {fix.host}",
        "settle": (
            f"take it over and settle it: {fix.settlement.step} {fix.settlement.way} "
            f"({fix.settlement.why})"
            if fix.settlement
            else "settle it"
        ),
        "forget_lease": "forget the lease once what it held is settled",
        "break_lock": f"release state lock {fix.name}",
    }[fix.kind]


def _host_row(session: Session, name: str | None) -> Host | None:
    if name is None:
        return None
    return session.scalars(select(Host).where(Host.name == name).order_by(Host.deleted)).first()


def _instance(session: Session, uuid: str) -> Instance | None:
    return session.scalars(select(Instance).where(Instance.uuid == uuid)).first()


def _apply_sql(ctx: Context, task: str, f: Finding, fix: Fix, request_id: str) -> Correction:
    what = _describe(fix)
    corr = Correction(task, f.code, f.object, fix.host, what)
    try:
        with ctx.db.unit_of_work() as session:
            now = ctx.clock()
            inst = _instance(session, fix.consumer)
            if inst is not None and not inst.deleted and not _untouched(session, inst, now):
                # a command took the instance since the survey: its result is the truth
                corr.ok, corr.what = False, f"skipped: now {inst.task_state}"
                return corr
            host = _host_row(session, fix.host)
            if fix.kind == "ledger_release":
                ledger.release(session, fix.consumer, host.id if host else None)
            elif fix.kind == "ledger_set":
                assert host is not None
                ledger.set_allocation(session, host, fix.consumer, fix.resources)
            elif fix.kind == "record_power" and inst is not None:
                inst.vm_state = fix.vm_state or inst.vm_state
                inst.power_state = fix.power_state or 0
            elif fix.kind == "rehome" and inst is not None and host is not None:
                inst.host_id = host.id
                inst.availability_zone = host.availability_zone
                ledger.release(session, inst.uuid)
                ledger.set_allocation(session, host, inst.uuid, fix.resources)
            elif fix.kind == "mark_error" and inst is not None:
                _mark_error(session, inst, host, f, fix, now)
            if inst is not None and not inst.deleted:
                _record_action(session, inst, task, f, what, request_id, now)
            elif inst is None or fix.kind.startswith("ledger"):
                session.add(
                    HostEvent(
                        host=fix.host or "-",
                        event=task,
                        request_id=request_id,
                        message=f"{f.code} {f.object}: {f.message}; {what}",
                        created_at=now,
                    )
                )
    except Exception as exc:  # one bad row must not stop the pass
        corr.ok, corr.what = False, f"{what}: {run_error(exc)}"
    ctx.progress.info(f"{f.code} {f.object}: {corr.what}")
    return corr


def _untouched(session: Session, inst: Instance, now: datetime) -> bool:
    """Hold ``inst`` for this transaction if no command holds it (a compare-and-swap that
    takes the row's lock on PostgreSQL and the write lock on SQLite until the commit)."""
    result = session.execute(
        update(Instance)
        .where(Instance.id == inst.id, Instance.task_state.is_(None))
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(inst)
    return bool(getattr(result, "rowcount", 0))


def _mark_error(
    session: Session, inst: Instance, host: Host | None, f: Finding, fix: Fix, now: datetime
) -> None:
    inst.vm_state = VmState.ERROR
    inst.task_state = None
    if fix.power_state is not None:
        inst.power_state = fix.power_state
    if fix.release_on_other_hosts:
        for host_id in ledger.allocations_of(session, inst.uuid):
            if host is None or host_id != host.id:
                ledger.release(session, inst.uuid, host_id)
    if fix.migration is not None:
        ledger.release(session, fix.migration)
        mig = session.scalars(select(Migration).where(Migration.uuid == fix.migration)).first()
        if mig is not None:
            mig.status = "error"
            mig.error = f"reconcile: {f.message}"
    inst.host_id = host.id if host is not None else None
    if host is not None and fix.resources:
        ledger.set_allocation(session, host, inst.uuid, fix.resources)
    actions.add_fault(session, inst, f"{f.code}: {f.message}", None, now, host=fix.host)


def _record_action(
    session: Session,
    inst: Instance,
    task: str,
    f: Finding,
    what: str,
    request_id: str,
    now: datetime,
    ok: bool = True,
) -> None:
    try:
        act = actions.current_action(session, inst.uuid, request_id)
    except LookupError:
        act = actions.start_action(session, inst, "reconcile", request_id, now)
    ev = actions.start_event(session, act, task, now, f.host)
    ev.finish_time = now
    ev.result = actions.SUCCESS if ok else actions.ERROR
    ev.details = f"{f.code}: {f.message}; {what}"
    act.finish_time = now


# -- the fixes that need the hosts: one play each ------------------------------------------------
def _targets(session: Session, names: Iterable[str]) -> dict[str, HostTarget]:
    out = {}
    for n in sorted(set(names)):
        row = _host_row(session, n)
        if row is not None and not row.deleted:
            out[n] = hosts.host_target(row)
    return out


def _run_play(ctx: Context, request: RunRequest) -> RunResult | str:
    try:
        return ctx.executor.run(request, ctx.progress.run_event)
    except Exception as exc:
        return run_error(exc)


def _set_power(
    ctx: Context, task: str, todo: Sequence[tuple[Finding, Fix]], request_id: str
) -> list[Correction]:
    per_host: dict[str, list[dict[str, Any]]] = defaultdict(list)
    taken: dict[str, str | None] = {}  # consumer -> None (claimed) or why it was not
    for _, fix in todo:
        try:
            # The guest is driven on its host: it is claimed like any command's.
            tasks.start(
                ctx,
                lambda session, u=fix.consumer: tasks.claim(  # type: ignore[misc]
                    session, ctx, [u], "restore the power state of", TaskState.SETTLING, None
                ),
            )
            taken[fix.consumer] = None
        except (InvalidState, NotFound) as exc:
            taken[fix.consumer] = f"skipped: {exc.message}"
    with ctx.db.unit_of_work() as session:
        targets = _targets(session, (fix.host or "" for _, fix in todo))
        for _, fix in todo:
            inst = _instance(session, fix.consumer)
            if inst is None or fix.host not in targets or taken.get(fix.consumer):
                continue
            xml = render_domain_xml(domain_spec(session, inst))
            per_host[fix.host].append({"name": fix.domain, "xml": xml, "state": fix.state})
    result = _run_play(
        ctx,
        RunRequest(
            playbook="power.yml",
            hosts=tuple(targets[h] for h in per_host),
            extravars={
                "cloudctl_domains": dict(per_host),
                "cloudctl_domains_after": {},
                "cloudctl_stop_timeout": ctx.settings.stop_timeout_s,
            },
            description="restore power states",
        ),
    )
    why = _item_failures(result, "power", "name")
    out = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for f, fix in todo:
            reason = taken.get(fix.consumer) or why(fix.host or "", fix.domain)
            corr = Correction(task, f.code, f.object, fix.host, _describe(fix), ok=reason is None)
            if reason is not None:
                corr.what += f": {reason}"
            inst = _instance(session, fix.consumer)
            if inst is not None and taken.get(fix.consumer) is None:
                tasks.finish(session, ctx, inst)
                if reason is None:
                    inst.power_state = int(
                        PowerState.from_libvirt(
                            {"saved": "shutoff", "shutdown": "shutoff"}.get(fix.state, fix.state)
                        )
                    )
                _record_action(session, inst, task, f, corr.what, request_id, now, corr.ok)
            ctx.progress.info(f"{f.code} {f.object}: {corr.what}")
            out.append(corr)
    return out


def _reap(
    ctx: Context, task: str, todo: Sequence[tuple[Finding, Fix]], request_id: str
) -> list[Correction]:
    domains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    disks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with ctx.db.unit_of_work() as session:
        targets = _targets(session, (fix.host or "" for _, fix in todo))
    for _, fix in todo:
        if fix.host in targets:
            domains[fix.host].append({"name": fix.domain, "state": "absent"})
            if not fix.keep_files:
                disks[fix.host].append({"uuid": fix.consumer})
    result = _run_play(
        ctx,
        RunRequest(
            playbook="destroy.yml",
            hosts=tuple(targets[h] for h in domains),
            extravars={"cloudctl_domains": dict(domains), "cloudctl_disks": dict(disks)},
            description="reap deleted instances' domains",
        ),
    )
    why = _item_failures(result, "undefine", "name")
    return _host_corrections(
        ctx, task, todo, request_id, lambda fix: why(fix.host or "", fix.domain)
    )


def _remove_files(
    ctx: Context, task: str, todo: Sequence[tuple[Finding, Fix]], request_id: str
) -> list[Correction]:
    per_host: dict[str, dict[str, list[Any]]] = defaultdict(
        lambda: {"instance_dirs": [], "base_files": []}
    )
    with ctx.db.unit_of_work() as session:
        targets = _targets(session, (fix.host or "" for _, fix in todo))
    for _, fix in todo:
        if fix.host not in targets:
            continue
        if fix.kind == "remove_dir":
            per_host[fix.host]["instance_dirs"].append({"uuid": fix.consumer, "kind": fix.dir_kind})
        else:
            per_host[fix.host]["base_files"].append(fix.name)
    result = _run_play(
        ctx,
        RunRequest(
            playbook="cleanup_files.yml",
            hosts=tuple(targets[h] for h in per_host),
            extravars={
                "cloudctl_cleanup": {h: dict(v) for h, v in per_host.items()},
                "cloudctl_base_min_age_s": ctx.settings.remove_unused_base_images_min_age_s,
            },
            description="remove orphaned files",
        ),
    )
    outcome: dict[tuple[str, str], str | None] = {}
    answered: dict[str, str | None] = {}
    if isinstance(result, RunResult):
        for t in result.tasks:
            if t.task != "cleanup files":
                continue
            items = t.result.get("results", []) or []
            answered[t.host] = (
                None
                if items or t.status not in ("failed", "unreachable")
                else (t.message or "failed")
            )
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                done = item.get("removed") or item.get("reason") == "absent"
                reason = item.get("msg") or item.get("reason") or "not removed"
                outcome[(t.host, str(item.get("path")))] = None if done else str(reason)

    def failures(host: str, path: str) -> str | None:
        if isinstance(result, str):
            return result
        if host not in answered:
            return "no result from the host"
        return answered[host] or outcome.get((host, path), "no result for it")

    def why(fix: Fix) -> str | None:
        host = targets.get(fix.host or "")
        if host is None:
            return "host is gone"
        base = host.hostvars.get("instances_path", "")
        if fix.kind == "remove_base":
            path = f"{base}/_base/{fix.name}"
        else:
            path = f"{base}/{fix.consumer}" + ("_resize" if fix.dir_kind == "resize" else "")
        return failures(fix.host or "", path)

    return _host_corrections(ctx, task, todo, request_id, why)


def _host_corrections(
    ctx: Context,
    task: str,
    todo: Sequence[tuple[Finding, Fix]],
    request_id: str,
    why: Callable[[Fix], str | None],
) -> list[Correction]:
    out = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for f, fix in todo:
            reason = why(fix)
            corr = Correction(task, f.code, f.object, fix.host, _describe(fix), ok=reason is None)
            if reason is not None:
                corr.what += f": {reason}"
            session.add(
                HostEvent(
                    host=fix.host or "-",
                    event=task,
                    request_id=request_id,
                    message=f"{f.code} {f.object}: {corr.what}",
                    created_at=now,
                )
            )
            ctx.progress.info(f"{f.code} {f.object}: {corr.what}")
            out.append(corr)
    return out


def _item_failures(
    result: RunResult | str, task: str, key: str
) -> Callable[[str, str], str | None]:
    """``why(host, item)``: None if ``task`` did ``item`` on ``host``, else why it did not."""
    if isinstance(result, str):
        run_failed = result
        return lambda host, item: run_failed
    per_item: dict[tuple[str, str], str] = {}
    per_host: dict[str, str] = {}
    answered: set[str] = set()
    for t in result.tasks:
        if t.task != task:
            continue
        answered.add(t.host)
        items = t.result.get("results", []) or []
        for item in items:
            if isinstance(item, Mapping) and item.get("failed"):
                per_item[(t.host, str(item.get(key)))] = str(item.get("msg") or "failed")
        if t.status in ("failed", "unreachable") and not items:
            per_host[t.host] = (t.message or "failed").splitlines()[0]

    def why(host: str, item: str) -> str | None:
        if host not in answered:
            return "no result from the host"
        return per_host.get(host) or per_item.get((host, item))

    return why


def host_events(ctx: Context, name: str, limit: int = 50) -> list[dict[str, Any]]:
    """A host's recent events, newest first."""
    with ctx.db.unit_of_work() as session:
        rows = session.scalars(
            select(HostEvent)
            .where(HostEvent.host == name)
            .order_by(HostEvent.id.desc())
            .limit(limit)
        )
        return [
            {
                "time": r.created_at.isoformat(timespec="seconds"),
                "event": r.event,
                "message": r.message,
                "request_id": r.request_id,
            }
            for r in rows
        ]


def is_clean(findings: Sequence[Mapping[str, Any]]) -> bool:
    """No error among ``verify``'s findings."""
    return not any(f["severity"] == "error" for f in findings)
