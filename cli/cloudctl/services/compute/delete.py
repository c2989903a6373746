"""Delete: domain, disks, config drive, console log, IP and allocation; and forgetting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloudctl import ledger
from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import (
    CloudctlError,
    OperationFailed,
)
from cloudctl.services import actions, network
from cloudctl.services.compute.common import (
    by_uuid,
    check_state,
    destroy_on_hosts,
    fail_action,
    failure_reason,
    get_instance,
)
from cloudctl.services.compute.views import instance_view
from cloudctl.services.context import Context


def delete(ctx: Context, names: Sequence[str]) -> list[dict[str, Any]]:
    """Delete instances: domain, disks, config drive, console log, IP and allocation."""
    request_id = actions.new_request_id()
    uuids: list[str] = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        found = [get_instance(session, ctx.settings.project_id, n) for n in names]
        for inst in found:
            check_state(ctx, inst, "delete", vm_states=None)
        for inst in found:
            inst.task_state = TaskState.DELETING
            act = actions.start_action(session, inst, "delete", request_id, now)
            actions.start_event(
                session, act, "terminate", now, inst.host.name if inst.host else None
            )
            uuids.append(inst.uuid)
    ctx.progress.info(f"deleting {len(uuids)} instance(s)")
    try:
        result = destroy_on_hosts(ctx, uuids)
    except CloudctlError as exc:
        fail_action(ctx, uuids, request_id, "terminate", str(exc), None)
        raise
    failed_hosts = result.failed_hosts()
    views = []
    bad = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = by_uuid(session, u)
            if inst.host is not None and inst.host.name in failed_hosts:
                bad.append(u)
                continue
            act = actions.current_action(session, u, request_id)
            actions.finish_event(session, act, "terminate", now)
            actions.finish_action(act, now)
            ledger.release(session, u)
            network.release_fixed_ips(session, u)
            inst.vm_state = VmState.DELETED
            inst.task_state = None
            inst.power_state = PowerState.NOSTATE
            inst.terminated_at = now
            inst.deleted_at = now
            inst.deleted = inst.id
            session.flush()
            views.append(instance_view(session, inst))
    if bad:
        reason = failure_reason(result)
        fail_action(ctx, bad, request_id, "terminate", reason, result)
        raise OperationFailed(action="delete", name=", ".join(bad), reason=reason)
    return views


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
            ledger.release(session, u)
            network.release_fixed_ips(session, u)
            inst.vm_state = VmState.DELETED
            inst.task_state = None
            inst.power_state = PowerState.NOSTATE
            inst.terminated_at = inst.deleted_at = now
            inst.deleted = inst.id
    return len(uuids)
