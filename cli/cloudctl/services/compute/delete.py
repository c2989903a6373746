"""Delete, soft delete, force delete, the reclaim of expired soft deletes, and forgetting.

With ``reclaim_instance_interval`` > 0 a delete is a soft delete (Nova's deferred delete): the
guest is powered off and the instance is SOFT_DELETED with its disks, IP and claim, until
``restore`` powers it on again or :func:`reclaim_soft_deleted` hard-deletes it once the interval
has passed. ``force`` deletes at once, soft-deleted instances included. A hard delete removes
the domain, disks, config drive, console log, IP and claim; a host that already lost the domain
or the files is fine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.audit import MOVING_STATUSES
from cloudctl.db.models import Instance, Migration
from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import (
    CloudctlError,
    InvalidState,
    NotFound,
    OperationFailed,
)
from cloudctl.services import actions, leases, network
from cloudctl.services.compute import tasks
from cloudctl.services.compute.common import (
    by_uuid,
    check_state,
    destroy_on_hosts,
    fail_action,
    failure_reason,
    get_instance,
    run_error,
)
from cloudctl.services.compute.power import power
from cloudctl.services.compute.snapshot import mark_snapshots_deleted
from cloudctl.services.compute.views import instance_view
from cloudctl.services.context import Context


def delete(ctx: Context, names: Sequence[str], *, force: bool = False) -> list[dict[str, Any]]:
    """Delete instances: soft when the reclaim interval is set (unless ``force``), else hard.

    As in Nova, an instance that never ran (its build failed) is deleted hard even when soft
    delete is on: there is nothing to restore.
    """
    soft_on = ctx.settings.reclaim_instance_interval > 0 and not force
    hard_action = "force_delete" if force else "delete"
    soft: list[str] = []
    hard: list[str] = []
    with ctx.db.unit_of_work() as session:
        found = [get_instance(session, ctx.settings.project_id, n) for n in names]
        for inst in found:
            if soft_on and inst.vm_state == VmState.SOFT_DELETED:
                check_state(ctx, inst, "soft_delete", None, task_states=None)  # the lock only
                raise InvalidState(
                    f"instance {inst.name} is soft-deleted already: restore it, or delete "
                    "it now with --force",
                    action="delete",
                    name=inst.name,
                    vm_state=inst.vm_state,
                    task_state=inst.task_state,
                )
            if soft_on and inst.launched_at is not None and inst.host is not None:
                check_state(ctx, inst, "soft_delete")
                soft.append(inst.uuid)
            else:
                check_state(ctx, inst, hard_action)
                hard.append(inst.uuid)
        order = [i.uuid for i in found]
    request_id = actions.new_request_id()
    views: list[dict[str, Any]] = []
    errors: list[CloudctlError] = []
    with leases.command_lease(ctx, f"delete {' '.join(names)}", request_id=request_id):
        _delete(ctx, soft, hard, hard_action, request_id, views, errors)
    if errors:
        raise errors[0]
    return sorted(views, key=lambda v: order.index(v["uuid"]))


def _delete(
    ctx: Context,
    soft: Sequence[str],
    hard: Sequence[str],
    hard_action: str,
    request_id: str,
    views: list[dict[str, Any]],
    errors: list[CloudctlError],
) -> None:
    if soft:
        ctx.progress.info(f"soft-deleting {len(soft)} instance(s)")
        try:
            views += power(ctx, soft, "soft_delete", request_id=request_id)
        except CloudctlError as exc:
            errors.append(exc)
    if hard:
        ctx.progress.info(f"deleting {len(hard)} instance(s)")
        try:
            views += hard_delete(ctx, hard, hard_action, request_id)
        except CloudctlError as exc:
            errors.append(exc)


def hard_delete(
    ctx: Context,
    uuids: Sequence[str],
    action: str,
    request_id: str,
    *,
    skip_refused: bool = False,
) -> list[dict[str, Any]]:
    """Remove instances from their hosts and the books.

    ``action`` is the row of ACTION_STATES the claim checks (``delete``, ``force_delete`` or
    ``reclaim``); the claim (DELETING, in SQL under the command's lease) is what stops another
    command, on any controller, from driving the guest meanwhile. ``skip_refused`` leaves out
    the instances it refuses instead of failing (the reclaim: one restored meanwhile is no
    error); otherwise all are claimed in one transaction or none.
    """
    recorded = {"delete": "delete", "force_delete": "forceDelete", "reclaim": "delete"}[action]
    event = "reclaim" if action == "reclaim" else "terminate"
    with leases.command_lease(ctx, f"{recorded} {len(uuids)} instance(s)", request_id=request_id):
        todo: list[str] = []

        def claim(session: Session, batch: Sequence[str]) -> None:
            now = ctx.clock()
            for inst in tasks.claim(session, ctx, batch, action, TaskState.DELETING, now=now):
                act = actions.start_action(session, inst, recorded, request_id, now)
                actions.start_event(session, act, event, now, inst.host.name if inst.host else None)

        if skip_refused:
            for u in uuids:
                try:
                    tasks.start(ctx, lambda session, u=u: claim(session, [u]))  # type: ignore[misc]
                except (InvalidState, NotFound):
                    continue
                todo.append(u)
        else:
            tasks.start(ctx, lambda session: claim(session, uuids))
            todo = list(uuids)
        if not todo:
            return []
        try:
            result = destroy_on_hosts(ctx, todo)
        except BaseException as exc:  # never leave a task_state behind, not even on Ctrl-C
            fail_action(ctx, todo, request_id, event, run_error(exc), None)
            raise
        failed_hosts = result.failed_hosts()
        views = []
        bad = []
        with ctx.db.unit_of_work() as session:
            now = ctx.clock()
            for u in todo:
                inst = by_uuid(session, u)
                if inst.host is not None and inst.host.name in failed_hosts:
                    bad.append(u)
                    continue
                act = actions.current_action(session, u, request_id)
                actions.finish_event(session, act, event, now)
                actions.finish_action(act, now)
                tasks.finish(session, ctx, inst)
                mark_deleted(session, inst, now)
                session.flush()
                views.append(instance_view(session, inst))
        if bad:
            reason = failure_reason(result)
            fail_action(ctx, bad, request_id, event, reason, result)
            with ctx.db.unit_of_work() as session:
                names = ", ".join(by_uuid(session, u).name for u in bad)
            raise OperationFailed(action="delete", name=names, reason=reason)
        return views


def mark_deleted(session: Session, inst: Instance, now: datetime) -> None:
    """The books' side of a hard delete: claim, IP and snapshots released, the row deleted.

    A move left unfinished (a resize waiting for confirm) goes with it: the source's
    allocation, held by the migration, is released too (its stash is an orphan for reconcile).
    """
    ledger.release(session, inst.uuid)
    for mig in session.scalars(
        select(Migration).where(
            Migration.instance_uuid == inst.uuid, Migration.status.in_(MOVING_STATUSES)
        )
    ):
        ledger.release(session, mig.uuid)
        mig.status = "deleted"
    network.release_fixed_ips(session, inst.uuid)
    mark_snapshots_deleted(session, inst.uuid, now)
    inst.vm_state = VmState.DELETED
    inst.task_state = None
    inst.task_owner = None
    inst.power_state = PowerState.NOSTATE
    inst.terminated_at = now
    inst.deleted_at = now
    inst.deleted = inst.id


def reclaim_soft_deleted(ctx: Context, now: datetime) -> list[dict[str, Any]]:
    """Hard-delete the soft-deleted instances whose reclaim interval has passed by ``now``.

    Nova's ``_reclaim_queued_deletes``: every project, locked or not; nothing when the interval
    is 0. Instances restored or deleted meanwhile are left out. Returns the deleted instances.
    """
    interval = ctx.settings.reclaim_instance_interval
    if interval <= 0:
        return []
    cutoff = now - timedelta(seconds=interval)
    with ctx.db.unit_of_work() as session:
        uuids = list(
            session.scalars(
                select(Instance.uuid)
                .where(
                    Instance.deleted == 0,
                    Instance.vm_state == VmState.SOFT_DELETED,
                    Instance.task_state.is_(None),
                    or_(Instance.deleted_at.is_(None), Instance.deleted_at <= cutoff),
                )
                .order_by(Instance.id)
            )
        )
    if not uuids:
        return []
    ctx.progress.info(f"reclaiming {len(uuids)} soft-deleted instance(s)")
    return hard_delete(ctx, uuids, "reclaim", actions.new_request_id(), skip_refused=True)


def restore(ctx: Context, names: Sequence[str]) -> list[dict[str, Any]]:
    """Bring soft-deleted instances back: powered on, ACTIVE, out of the reclaim queue."""
    return power(ctx, names, "restore")


def forget(ctx: Context, uuids: Sequence[str], *, reason: str) -> int:
    """Mark deleted the instances whose host went away with them (``lab down``): books only."""
    request_id = actions.new_request_id()
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = by_uuid(session, u)
            act = actions.start_action(session, inst, "delete", request_id, now)
            host = inst.host.name if inst.host else None
            actions.finish_event(session, act, "forget", now, details=reason, host=host)
            actions.finish_action(act, now)
            mark_deleted(session, inst, now)
    return len(uuids)
