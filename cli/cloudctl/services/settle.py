"""Settling what dead commands left: the service side of the audit's ``settle`` fixes.

A command that dies (SIGKILL, a lost database connection, a crashed runner) leaves instances in
its task, claims on one or two hosts, a migration or a snapshot under way. Once its lease has
expired any controller's ``reconcile`` (or ``agent``) takes the lease over
(:func:`cloudctl.services.leases.take_over`, a compare-and-swap: one controller wins) and
settles each instance as the pure :func:`cloudctl.audit.settle` decided from the hosts: a step
the hosts show done is rolled forward, anything else rolled back with the flow's own undo (the
live migration's rollback, the cold migration's restore of the source, the build's cleanup).
The dead command's action is closed as interrupted, a ``reconcile`` action records the
settlement, a fault records what was undone, and the task_state is cleared. Nothing is left for
an operator to unstick by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.audit import MOVING_STATUSES, Finding, Settlement
from cloudctl.db.models import (
    CommandLease,
    Host,
    Instance,
    InstanceAction,
    Migration,
    Snapshot,
    StateLock,
)
from cloudctl.domain.states import PowerState, VmState
from cloudctl.errors import CloudctlError, LeaseLost
from cloudctl.services import actions, hosts, network
from cloudctl.services.compute import tasks
from cloudctl.services.compute.common import by_uuid, destroy_on, run_error
from cloudctl.services.compute.delete import mark_deleted
from cloudctl.services.compute.live_migrate import rollback as live_rollback
from cloudctl.services.compute.migrate import complete_confirm, complete_revert, roll_back
from cloudctl.services.compute.moves import drop_source, migration_by_uuid, undo_claims
from cloudctl.services.context import Context

#: The event a settlement records on the ``reconcile`` action.
EVENT = "settle"


@dataclass
class Outcome:
    """What settling one finding did."""

    finding: Finding
    ok: bool
    what: str


def settle_all(ctx: Context, findings: Sequence[Finding], request_id: str) -> list[Outcome]:
    """Take over and settle every ESTATE002 instance, then forget dead leases and locks.

    Runs under the caller's command lease (``ctx.lease``), which becomes the owner of what it
    takes over: another controller's reconcile finds those instances busy meanwhile.
    """
    assert ctx.lease is not None, "settling runs under a command lease"
    out: list[Outcome] = []
    for f in findings:
        for fix in f.fixes:
            if fix.kind == "settle" and fix.settlement is not None:
                out.append(_settle_one(ctx, f, fix.consumer, fix.settlement, request_id))
    for f in findings:
        for fix in f.fixes:
            if fix.kind == "forget_lease":
                out.append(_forget_lease(ctx, f, fix.consumer))
            elif fix.kind == "break_lock":
                out.append(_break_lock(ctx, f, fix.name))
    return out


def _open_request(session: Session, inst: Instance) -> str | None:
    return tasks.open_request(session, inst)


def _give_up(ctx: Context, inst_uuid: str) -> None:
    """Let go of an instance this pass could not settle: the next pass takes it again."""
    assert ctx.lease is not None
    with ctx.db.unit_of_work() as session:
        session.execute(
            update(Instance)
            .where(Instance.uuid == inst_uuid, Instance.task_owner == ctx.lease.uuid)
            .values(task_owner=None)
            .execution_options(synchronize_session=False)
        )


# -- recording ----------------------------------------------------------------------------------
def _close_dead_action(session: Session, inst: Instance, now: datetime, ok: bool, why: str) -> None:
    """Close the dead command's open actions and events (interrupted, settled as ``why``)."""
    for act in session.scalars(
        select(InstanceAction).where(
            InstanceAction.instance_uuid == inst.uuid, InstanceAction.finish_time.is_(None)
        )
    ):
        for ev in act.events:
            if ev.finish_time is None:
                ev.finish_time = now
                ev.result = actions.SUCCESS if ok else actions.ERROR
                ev.details = f"interrupted: its command died; reconcile: {why}"
        act.finish_time = now
        act.message = None if ok else "Error"


def _record(
    session: Session,
    inst: Instance,
    request_id: str,
    now: datetime,
    what: str,
    *,
    ok: bool = True,
    fault: str | None = None,
) -> None:
    try:
        act = actions.current_action(session, inst.uuid, request_id)
    except LookupError:
        act = actions.start_action(session, inst, "reconcile", request_id, now)
    ev = actions.start_event(session, act, EVENT, now, inst.host.name if inst.host else None)
    ev.finish_time = now
    ev.result = actions.SUCCESS if ok else actions.ERROR
    ev.details = what
    act.finish_time = now
    if fault is not None:
        host = inst.host.name if inst.host else None
        actions.add_fault(session, inst, fault[:255], what, now, host)


def _host(session: Session, name: str | None) -> Host | None:
    if name is None:
        return None
    return session.scalars(select(Host).where(Host.name == name, Host.deleted == 0)).first()


def _migration(session: Session, inst_uuid: str) -> Migration | None:
    return session.scalars(
        select(Migration)
        .where(Migration.instance_uuid == inst_uuid, Migration.status.in_(MOVING_STATUSES))
        .order_by(Migration.id.desc())
    ).first()


def _under_way(session: Session, inst_uuid: str) -> Migration:
    """The instance's migration under way; CloudctlError (settle again later) if none is."""
    mig = _migration(session, inst_uuid)
    if mig is None:
        raise CloudctlError("its migration is no longer under way")
    return mig


# -- one instance -------------------------------------------------------------------------------
def _settle_one(
    ctx: Context, f: Finding, inst_uuid: str, plan: Settlement, request_id: str
) -> Outcome:
    what = f"{plan.step} {plan.way}: {plan.why}"
    taken, dead_request = tasks.take_dead(ctx, inst_uuid)
    if not taken:
        return Outcome(f, False, f"skipped: another command holds {f.object} now")
    ctx.progress.info(f"{f.object}: settling ({what})")
    try:
        _STEPS[plan.step](ctx, inst_uuid, plan, request_id, dead_request or request_id, what)
    except LeaseLost:
        return Outcome(f, False, f"{what}: another controller took it over")
    except (CloudctlError, OSError) as exc:
        _give_up(ctx, inst_uuid)
        return Outcome(f, False, f"{what}: {run_error(exc)}")
    return Outcome(f, True, what)


def _destroy(
    ctx: Context, host_name: str | None, inst_uuid: str, *, keep_files: bool = False
) -> None:
    """Remove the instance's domain (and files) from one host; raises if that failed."""
    with ctx.db.unit_of_work() as session:
        if host_name is None or _host(session, host_name) is None:
            return  # no host, or it was removed: nothing of it to clean
    error = destroy_on(
        ctx,
        host_name,
        inst_uuid,
        keep_files=keep_files,
        description="clean up after a command that died",
    )
    if error is not None:
        raise CloudctlError(f"cleaning {host_name} failed: {error}")


def _build(ctx: Context, u: str, plan: Settlement, request_id: str, dead: str, what: str) -> None:
    if plan.way == "back" and plan.host is not None:
        _destroy(ctx, plan.host, u)
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, u)
        tasks.finish(session, ctx, inst)
        forward = plan.way == "forward"
        _close_dead_action(session, inst, now, forward, what)
        if forward:
            host = _host(session, plan.host)
            for host_id in ledger.allocations_of(session, u):
                if host is None or host_id != host.id:
                    ledger.release(session, u, host_id)
            inst.vm_state = VmState.ACTIVE
            inst.power_state = plan.power_state
            inst.launched_at = now
            _record(session, inst, request_id, now, what)
        else:
            ledger.release(session, u)
            network.release_fixed_ips(session, u)
            inst.vm_state = VmState.ERROR
            inst.power_state = PowerState.NOSTATE
            _record(session, inst, request_id, now, what, fault=f"Build interrupted: {plan.why}")


def _delete(ctx: Context, u: str, plan: Settlement, request_id: str, dead: str, what: str) -> None:
    if not plan.local_only:
        _destroy(ctx, plan.host, u)
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, u)
        tasks.finish(session, ctx, inst)
        _close_dead_action(session, inst, now, True, what)
        _record(session, inst, request_id, now, what)
        mark_deleted(session, inst, now)


def _sql_only(
    ctx: Context, u: str, plan: Settlement, request_id: str, dead: str, what: str
) -> None:
    """power, rebuild and snapshot: the books follow the domain the survey saw."""
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, u)
        before = inst.vm_state
        tasks.finish(session, ctx, inst)
        ok = plan.vm_state != VmState.ERROR
        _close_dead_action(session, inst, now, ok and plan.way == "forward", what)
        if plan.vm_state is not None:
            inst.vm_state = plan.vm_state
        inst.power_state = plan.power_state
        if inst.vm_state == VmState.SOFT_DELETED and before != VmState.SOFT_DELETED:
            inst.deleted_at = now  # the reclaim interval starts, as a soft delete's does
        elif before == VmState.SOFT_DELETED and inst.vm_state != VmState.SOFT_DELETED:
            inst.deleted_at = None
        if plan.step == "rebuild" and ok:
            inst.launched_at = now
        for row in session.scalars(
            select(Snapshot).where(Snapshot.instance_uuid == u, Snapshot.deleted == 0)
        ):
            status = plan.snapshots.get(row.name)
            if status == "available":
                row.status = "available"
            elif status == "deleted":
                row.status = "deleted"
                row.deleted = row.id
                row.deleted_at = now
        fault = None if ok else f"{plan.step} interrupted: {plan.why}"
        _record(session, inst, request_id, now, what, ok=ok, fault=fault)


def _evacuation(
    ctx: Context, u: str, plan: Settlement, request_id: str, dead: str, what: str
) -> None:
    with ctx.db.unit_of_work() as session:
        mig = _migration(session, u)
        dest = mig.dest_host if mig else None
    if plan.way == "back" and dest is not None:
        _destroy(ctx, dest, u, keep_files=True)
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, u)
        mig = _migration(session, u)
        tasks.finish(session, ctx, inst)
        forward = plan.way == "forward"
        _close_dead_action(session, inst, now, forward, what)
        dest_row = _host(session, mig.dest_host if mig else None)
        if forward and dest_row is not None:
            inst.host = dest_row
            inst.availability_zone = dest_row.availability_zone
            inst.vm_state = plan.vm_state or VmState.ACTIVE
            inst.power_state = plan.power_state
            if mig is not None:
                mig.status = "done"
            _record(session, inst, request_id, now, what)
        else:
            if dest_row is not None:
                ledger.release(session, u, dest_row.id)
            if mig is not None:
                mig.status = "failed"
                mig.error = f"reconcile: {plan.why}"
            inst.vm_state = VmState.ERROR
            _record(session, inst, request_id, now, what, fault=f"evacuate interrupted: {plan.why}")


def _live_migration(
    ctx: Context, u: str, plan: Settlement, request_id: str, dead: str, what: str
) -> None:
    with ctx.db.unit_of_work() as session:
        mig = _under_way(session, u)
        # Unknown (the checks never ran) counts as shared: never remove a disk it might be.
        mig_uuid, source, shared = mig.uuid, mig.source_host, mig.shared_storage is not False
        no_dest = mig.dest_host is None
        if plan.way == "back" and (plan.vm_state == VmState.ERROR or no_dest):
            now = ctx.clock()
            inst = by_uuid(session, u)
            tasks.finish(session, ctx, inst)
            _close_dead_action(session, inst, now, False, what)
            undo_claims(session, inst, mig)
            mig.status = "error"
            mig.error = f"reconcile: {plan.why}"
            if plan.vm_state == VmState.ERROR:
                inst.vm_state = VmState.ERROR
                inst.power_state = PowerState.NOSTATE
                fault: str | None = f"live migration lost: {plan.why}"
            else:  # queued: no destination chosen, nothing done on any host
                inst.vm_state = VmState.ACTIVE
                fault = None
            _record(session, inst, request_id, now, what, fault=fault)
            return
    if plan.way == "back":
        # The flow's own rollback: destination cleaned, source defined and running, claims
        # undone, the migration in error, the dead command's action closed with a fault.
        live_rollback(ctx, dead, u, mig_uuid, f"its command died; {plan.why}", None)
        with ctx.db.unit_of_work() as session:
            now = ctx.clock()
            inst = by_uuid(session, u)
            _close_dead_action(session, inst, now, False, what)
            _record(session, inst, request_id, now, what)
            if inst.task_owner is not None:
                raise CloudctlError("the rollback did not finish")
        return
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, u)
        mig = migration_by_uuid(session, mig_uuid)
        dest = _host(session, plan.host)
        if dest is None:
            raise CloudctlError(f"host {plan.host} is gone")
        tasks.finish(session, ctx, inst)
        _close_dead_action(session, inst, now, True, what)
        drop_source(session, mig)
        inst.host = dest
        inst.availability_zone = dest.availability_zone
        inst.power_state = plan.power_state
        inst.vm_state = VmState.ACTIVE
        mig.status = "completed"
        _record(session, inst, request_id, now, what)
    # What the migration left on the source: the domain (if libvirt did not undefine it yet)
    # and, without shared storage, the copied-from files.
    try:
        _destroy(ctx, source, u, keep_files=shared)
    except CloudctlError as exc:
        ctx.progress.info(f"leftovers on {source} not removed: {exc.message}")


def _cold_migration(
    ctx: Context, u: str, plan: Settlement, request_id: str, dead: str, what: str
) -> None:
    with ctx.db.unit_of_work() as session:
        mig_uuid = _under_way(session, u).uuid
    roll_back(ctx, u, mig_uuid, dead, f"its command died; {plan.why}", None)
    _after_flow(ctx, u, request_id, what)


def _moving(ctx: Context, u: str, dead: str, action: str, event: str) -> tuple[Migration, str]:
    """The instance's migration under way and its name; the dead command's action (``action``
    with ``event``) is made again if the flow has none to record its end on."""
    with ctx.db.unit_of_work() as session:
        mig = _under_way(session, u)
        inst = by_uuid(session, u)
        if _open_request(session, inst) != dead:
            act = actions.start_action(session, inst, action, dead, ctx.clock())
            actions.start_event(session, act, event, ctx.clock(), mig.source_host)
        session.expunge(mig)
        return mig, inst.name


def _confirm(ctx: Context, u: str, plan: Settlement, request_id: str, dead: str, what: str) -> None:
    mig, name = _moving(ctx, u, dead, "confirmResize", "confirm_resize")
    with ctx.db.unit_of_work() as session:
        source = _host(session, mig.source_host)
        if source is None:
            raise CloudctlError(f"host {mig.source_host} is gone")
        target = hosts.host_target(source)
    complete_confirm(ctx, u, mig.uuid, dead, target, name)
    _after_flow(ctx, u, request_id, what)


def _revert(ctx: Context, u: str, plan: Settlement, request_id: str, dead: str, what: str) -> None:
    mig, name = _moving(ctx, u, dead, "revertResize", "revert_resize")
    complete_revert(ctx, u, mig.uuid, dead, name)
    _after_flow(ctx, u, request_id, what)


def _after_flow(ctx: Context, u: str, request_id: str, what: str) -> None:
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, u)
        _close_dead_action(session, inst, now, inst.vm_state != VmState.ERROR, what)
        _record(session, inst, request_id, now, what)
        if inst.task_owner is not None:
            raise CloudctlError("the flow did not finish")


_STEPS = {
    "build": _build,
    "delete": _delete,
    "power": _sql_only,
    "rebuild": _sql_only,
    "snapshot": _sql_only,
    "evacuation": _evacuation,
    "live_migration": _live_migration,
    "cold_migration": _cold_migration,
    "confirm": _confirm,
    "revert": _revert,
}


# -- leases and locks ---------------------------------------------------------------------------
def _forget_lease(ctx: Context, f: Finding, lease_uuid: str) -> Outcome:
    """Delete a dead lease once no instance names it (its instances were settled above)."""
    mine = ctx.lease
    assert mine is not None
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        named = session.scalar(
            select(Instance.id).where(Instance.task_owner == lease_uuid).limit(1)
        )
        if named is not None:
            return Outcome(f, False, "kept: an instance it holds is not settled yet")
        result = session.execute(
            delete(CommandLease).where(
                CommandLease.uuid == lease_uuid, CommandLease.expires_at < now
            )
        )
        gone = bool(getattr(result, "rowcount", 0))
    return Outcome(f, gone, "lease forgotten" if gone else "skipped: renewed meanwhile")


def _break_lock(ctx: Context, f: Finding, name: str) -> Outcome:
    """Remove a state lock whose holder stopped renewing it (compare-and-delete on expiry)."""
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        result = session.execute(
            delete(StateLock).where(
                StateLock.name == name,
                StateLock.expires_at.is_not(None),
                StateLock.expires_at < now,
            )
        )
        gone = bool(getattr(result, "rowcount", 0))
    return Outcome(f, gone, "state lock released" if gone else "skipped: renewed meanwhile")
