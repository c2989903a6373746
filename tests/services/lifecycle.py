"""Helpers of the lifecycle service tests: libvirt-like answers of the fake executor."""

from __future__ import annotations

import uuid as uuidlib
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from cloudctl.db.models import CommandLease, Instance, InstanceFault
from cloudctl.executor.base import RunRequest
from cloudctl.services.context import Context

#: The libvirt state a guest is in after cloudctl_domain brought it to a state.
LIBVIRT = {
    "running": "running",
    "paused": "paused",
    "saved": "shutoff",
    "destroyed": "shutoff",
    "shutdown": "shutoff",
    "absent": "absent",
}


def power_answer(req: RunRequest) -> dict[str, Any]:
    """Answer power.yml as libvirt would: every guest reaches the state it was asked for."""
    out: dict[str, dict[str, Any]] = {}
    for task, var in (("power", "cloudctl_domains"), ("power again", "cloudctl_domains_after")):
        for host, guests in req.extravars.get(var, {}).items():
            if guests:
                out.setdefault(host, {})[task] = {
                    "changed": True,
                    "results": [{"name": g["name"], "state": LIBVIRT[g["state"]]} for g in guests],
                }
    return out


def rebuild_answer(req: RunRequest) -> dict[str, Any]:
    """Answer rebuild.yml: every task ok, the guests running at the end."""
    out: dict[str, dict[str, Any]] = {}
    for host in req.extravars["cloudctl_domains"]:
        out[host] = {
            task: {"changed": True}
            for task in ("power off", "undefine", "remove old files", "disks", "config drive")
        }
        out[host]["spawn"] = {
            "changed": True,
            "results": [
                {"name": g["name"], "state": "running"}
                for g in req.extravars["cloudctl_domains"][host]
            ],
        }
    return out


def row(ctx: Context, name: str) -> Instance:
    """The (live or deleted) instance row called ``name``, detached."""
    with ctx.db.unit_of_work() as s:
        inst = s.scalars(
            select(Instance).where(Instance.name == name).order_by(Instance.id.desc())
        ).first()
        assert inst is not None
        s.expunge(inst)
        return inst


def faults(ctx: Context, name: str) -> list[str]:
    """The messages of an instance's faults, oldest first."""
    uuid = row(ctx, name).uuid
    with ctx.db.unit_of_work() as s:
        return list(
            s.scalars(
                select(InstanceFault.message)
                .where(InstanceFault.instance_uuid == uuid)
                .order_by(InstanceFault.id)
            )
        )


def foreign_lease(
    ctx: Context,
    *,
    expires_in_s: int = 30,
    command: str = "another command",
    lease_uuid: str | None = None,
) -> str:
    """Another process's command lease (expiring ``expires_in_s`` after the context's clock;
    negative: its command died); returns its uuid."""
    lease_uuid = lease_uuid or str(uuidlib.uuid4())
    now = ctx.clock()
    with ctx.db.unit_of_work() as s:
        s.add(
            CommandLease(
                uuid=lease_uuid,
                request_id=f"req-{lease_uuid}",
                command=command,
                holder="root@elsewhere",
                hostname="elsewhere",
                boot_id="b",
                pid_ns="1",
                pid=4242,
                start_time=1,
                lease_s=30,
                created_at=now,
                heartbeat_at=now + timedelta(seconds=expires_in_s - 30),
                expires_at=now + timedelta(seconds=expires_in_s),
                holds={},
            )
        )
    return lease_uuid


def hold(
    ctx: Context,
    uuid: str,
    task_state: str,
    *,
    expires_in_s: int = 30,
    command: str = "another command",
) -> str:
    """Make ``uuid`` held by another command (:func:`foreign_lease`) in ``task_state``."""
    lease_uuid = foreign_lease(ctx, expires_in_s=expires_in_s, command=command)
    with ctx.db.unit_of_work() as s:
        inst = s.scalars(select(Instance).where(Instance.uuid == uuid)).one()
        inst.task_state, inst.task_owner = task_state, lease_uuid
    return lease_uuid


def let_go(ctx: Context, uuid: str) -> None:
    """The other command of :func:`hold` ends its task."""
    with ctx.db.unit_of_work() as s:
        inst = s.scalars(select(Instance).where(Instance.uuid == uuid)).one()
        inst.task_state, inst.task_owner = None, None


def another(ctx: Context) -> Context:
    """A second command on the same books (another process, or another controller)."""
    return Context(
        settings=ctx.settings,
        db=ctx.db,
        executor_factory=ctx.executor_factory,
        progress=ctx.progress,
        clock=ctx.clock,
        rng=ctx.rng,
    )
