"""Instances, and their action history, as the CLI shows them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import CommandLease, Instance, InstanceAction, InstanceFault, utcnow
from cloudctl.domain import validation
from cloudctl.domain.states import PowerState, VmState, display_status
from cloudctl.errors import (
    NotFound,
)
from cloudctl.services import network
from cloudctl.services.compute.common import by_uuid, get_instance
from cloudctl.services.context import Context
from cloudctl.services.leases import lease_info


def list_instances(ctx: Context, *, include_deleted: bool = False) -> list[dict[str, Any]]:
    """The project's instances."""
    with ctx.db.unit_of_work() as session:
        stmt = select(Instance).where(Instance.project_id == ctx.settings.project_id)
        if not include_deleted:
            stmt = stmt.where(Instance.deleted == 0)
        rows = session.scalars(stmt.order_by(Instance.created_at, Instance.launch_index))
        return [instance_view(session, i) for i in rows]


def show_instance(ctx: Context, name_or_uuid: str) -> dict[str, Any]:
    """One instance, with its latest fault when in ERROR."""
    with ctx.db.unit_of_work() as session:
        if validation.is_uuid(name_or_uuid):
            inst = by_uuid(session, name_or_uuid)
        else:
            inst = get_instance(session, ctx.settings.project_id, name_or_uuid)
        return instance_view(session, inst, detail=True)


def instance_view(session: Session, inst: Instance, *, detail: bool = False) -> dict[str, Any]:
    """An instance as the CLI shows it (JSON-friendly)."""
    view: dict[str, Any] = {
        "name": inst.name,
        "uuid": inst.uuid,
        "status": display_status(inst.vm_state, inst.task_state),
        "vm_state": inst.vm_state,
        "task_state": inst.task_state,
        "power_state": PowerState(inst.power_state).name,
        "host": inst.host.name if inst.host else None,
        "availability_zone": inst.availability_zone,
        "domain": inst.domain_name,
        "flavor": inst.flavor.name,
        "image": inst.image.name if inst.image else None,
        "addresses": [
            {"network": ip.network.name, "address": ip.address, "mac": ip.mac}
            for ip in network.fixed_ips_of(session, inst.uuid)
        ],
        "key_name": inst.key_name,
        "locked": inst.locked,
        "locked_reason": inst.locked_reason,
        "created_at": inst.created_at.isoformat(),
        "launched_at": inst.launched_at.isoformat() if inst.launched_at else None,
        "terminated_at": inst.terminated_at.isoformat() if inst.terminated_at else None,
    }
    if detail:
        view["vcpus"] = inst.vcpus
        view["ram"] = inst.memory_mb
        view["disk"] = inst.root_gb
        view["metadata"] = inst.instance_metadata
        view["project_id"] = inst.project_id
        view["user_id"] = inst.user_id
        view["allocations"] = {
            str(k): v for k, v in ledger.allocations_of(session, inst.uuid).items()
        }
        fault = session.scalars(
            select(InstanceFault)
            .where(InstanceFault.instance_uuid == inst.uuid)
            .order_by(InstanceFault.id.desc())
        ).first()
        lease = (
            session.scalars(
                select(CommandLease).where(CommandLease.uuid == inst.task_owner)
            ).first()
            if inst.task_owner
            else None
        )
        if lease is not None:
            info = lease_info(lease)
            view["task_held_by"] = info.view(utcnow())
        if fault is not None and inst.vm_state == VmState.ERROR:
            view["fault"] = {
                "message": fault.message,
                "code": fault.code,
                "details": fault.details,
                "created": fault.created_at.isoformat(),
            }
    return view


def action_list(ctx: Context, name: str) -> list[dict[str, Any]]:
    """An instance's action history with events (deleted instances included)."""
    with ctx.db.unit_of_work() as session:
        column = Instance.uuid if validation.is_uuid(name) else Instance.name
        inst = session.scalars(
            select(Instance)
            .where(column == name, Instance.project_id == ctx.settings.project_id)
            .order_by(Instance.deleted, Instance.id.desc())
        ).first()
        if inst is None:
            raise NotFound(kind="instance", name=name)
        rows = session.scalars(
            select(InstanceAction)
            .where(InstanceAction.instance_uuid == inst.uuid)
            .order_by(InstanceAction.id)
        )
        return [
            {
                "action": a.action,
                "request_id": a.request_id,
                "start_time": a.start_time.isoformat(),
                "finish_time": a.finish_time.isoformat() if a.finish_time else None,
                "message": a.message,
                "events": [
                    {
                        "event": e.event,
                        "result": e.result,
                        "host": e.host,
                        "start_time": e.start_time.isoformat(),
                        "finish_time": e.finish_time.isoformat() if e.finish_time else None,
                        "details": e.details,
                    }
                    for e in a.events
                ],
            }
            for a in rows
        ]


def action_show(ctx: Context, name: str, request_id: str) -> dict[str, Any]:
    """One action of an instance by request id (a unique prefix will do), with its events."""
    matches = [a for a in action_list(ctx, name) if a["request_id"].startswith(request_id)]
    if len(matches) != 1:
        raise NotFound(kind=f"action of instance {name}", name=request_id)
    return matches[0]
