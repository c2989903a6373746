"""Server groups: hard and soft (anti-)affinity between instances, as Nova's instance groups."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl.db.models import Instance, ServerGroup
from cloudctl.domain import validation
from cloudctl.errors import AlreadyExists, InUse, InvalidInput, NotFound
from cloudctl.scheduler.host_state import GroupState
from cloudctl.services.context import Context

POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


def get_group(session: Session, project_id: str, name: str) -> ServerGroup:
    """A live server group of the project by name (or UUID)."""
    column = ServerGroup.uuid if validation.is_uuid(name) else ServerGroup.name
    group = session.scalars(
        select(ServerGroup).where(
            column == name, ServerGroup.project_id == project_id, ServerGroup.deleted == 0
        )
    ).first()
    if group is None:
        raise NotFound(kind="server group", name=name)
    return group


def live_members(session: Session, group: ServerGroup) -> list[Instance]:
    """The group's instances that are not deleted."""
    uuids = [m.instance_uuid for m in group.members]
    if not uuids:
        return []
    return list(
        session.scalars(select(Instance).where(Instance.uuid.in_(uuids), Instance.deleted == 0))
    )


def group_state(session: Session, group: ServerGroup) -> GroupState:
    """What the scheduler needs of a group: policy, limit, members per host."""
    per_host: Counter[str] = Counter(
        i.host.name for i in live_members(session, group) if i.host is not None
    )
    limit = group.rules.get("max_server_per_host") if group.rules else None
    return GroupState(
        name=group.name,
        policy=group.policy,
        max_server_per_host=int(limit) if limit is not None else None,
        members_per_host=per_host,
    )


def create_group(
    ctx: Context, name: str, policy: str, max_per_host: int | None = None
) -> dict[str, Any]:
    """Create a server group; ``max_per_host`` only for anti-affinity (Nova's rules)."""
    validation.object_name("server group", name)
    if policy not in POLICIES:
        raise InvalidInput(reason=f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if max_per_host is not None:
        if policy != "anti-affinity":
            raise InvalidInput(reason="--max-per-host applies to the anti-affinity policy only")
        validation.positive("max per host", max_per_host)
    s = ctx.settings
    with ctx.db.unit_of_work() as session:
        exists = session.scalars(
            select(ServerGroup.id).where(
                ServerGroup.name == name,
                ServerGroup.project_id == s.project_id,
                ServerGroup.deleted == 0,
            )
        ).first()
        if exists:
            raise AlreadyExists(kind="server group", name=name)
        group = ServerGroup(
            uuid=str(uuid.uuid4()),
            name=name,
            project_id=s.project_id,
            user_id=s.user_id,
            policy=policy,
            rules={"max_server_per_host": max_per_host} if max_per_host else {},
            created_at=ctx.clock(),
        )
        session.add(group)
        session.flush()
        return group_view(session, group)


def list_groups(ctx: Context) -> list[dict[str, Any]]:
    """The project's server groups."""
    with ctx.db.unit_of_work() as session:
        rows = session.scalars(
            select(ServerGroup)
            .where(ServerGroup.project_id == ctx.settings.project_id, ServerGroup.deleted == 0)
            .order_by(ServerGroup.name)
        )
        return [group_view(session, g) for g in rows]


def show_group(ctx: Context, name: str) -> dict[str, Any]:
    """One server group with its members."""
    with ctx.db.unit_of_work() as session:
        return group_view(session, get_group(session, ctx.settings.project_id, name))


def delete_group(ctx: Context, name: str) -> None:
    """Delete a group that has no live members."""
    with ctx.db.unit_of_work() as session:
        group = get_group(session, ctx.settings.project_id, name)
        members = live_members(session, group)
        if members:
            names = ", ".join(sorted(m.name for m in members))
            raise InUse(kind="server group", name=name, reason=f"members {names}")
        group.deleted = group.id
        group.deleted_at = ctx.clock()


def group_view(session: Session, group: ServerGroup) -> dict[str, Any]:
    """A server group as the CLI shows it."""
    members = live_members(session, group)
    return {
        "name": group.name,
        "id": group.uuid,
        "policy": group.policy,
        "max_per_host": (group.rules or {}).get("max_server_per_host"),
        "members": sorted(m.name for m in members),
        "hosts": sorted({m.host.name for m in members if m.host is not None}),
    }
