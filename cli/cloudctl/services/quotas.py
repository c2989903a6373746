"""Per-project quotas on instances, cores and RAM (checked before any claim)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudctl.db.models import Instance, Quota
from cloudctl.domain import validation
from cloudctl.domain.settings import Settings
from cloudctl.errors import InvalidInput, QuotaExceeded
from cloudctl.services.context import Context

RESOURCES = ("instances", "cores", "ram")


def limits(session: Session, s: Settings, project_id: str) -> dict[str, int]:
    """Hard limits (defaults from settings, overridden per project); -1 means unlimited."""
    out = {"instances": s.quota_instances, "cores": s.quota_cores, "ram": s.quota_ram_mb}
    for row in session.scalars(select(Quota).where(Quota.project_id == project_id)):
        out[row.resource] = row.hard_limit
    return out


def usage(session: Session, project_id: str) -> dict[str, int]:
    """What the project's live instances use."""
    n, cores, ram = session.execute(
        select(
            func.count(Instance.id),
            func.coalesce(func.sum(Instance.vcpus), 0),
            func.coalesce(func.sum(Instance.memory_mb), 0),
        ).where(Instance.project_id == project_id, Instance.deleted == 0)
    ).one()
    return {"instances": int(n), "cores": int(cores), "ram": int(ram)}


def check(session: Session, s: Settings, count: int, vcpus: int, memory_mb: int) -> None:
    """Refuse a request for ``count`` instances of this size that would exceed a limit."""
    check_more(session, s, {"instances": count, "cores": count * vcpus, "ram": count * memory_mb})


def check_resize(session: Session, s: Settings, old: tuple[int, int], new: tuple[int, int]) -> None:
    """Refuse a resize from ``old`` to ``new`` (vcpus, memory_mb) whose growth exceeds a limit.

    Only the growth counts (Nova's upsize delta): a smaller flavor needs no quota.
    """
    cores, ram = max(0, new[0] - old[0]), max(0, new[1] - old[1])
    if cores or ram:
        check_more(session, s, {"instances": 0, "cores": cores, "ram": ram})


def check_more(session: Session, s: Settings, wanted: Mapping[str, int]) -> None:
    """Refuse ``wanted`` more of each resource when it would take the project over a limit."""
    lim = limits(session, s, s.project_id)
    used = usage(session, s.project_id)
    for res in RESOURCES:
        if not wanted.get(res):
            continue
        if lim[res] >= 0 and used[res] + wanted[res] > lim[res]:
            raise QuotaExceeded(resource=res, requested=wanted[res], used=used[res], limit=lim[res])


def show(ctx: Context, project_id: str | None = None) -> list[dict[str, Any]]:
    """Limit and usage per resource."""
    project = project_id or ctx.settings.project_id
    with ctx.db.unit_of_work() as session:
        lim = limits(session, ctx.settings, project)
        used = usage(session, project)
    return [
        {"project": project, "resource": r, "limit": lim[r], "in_use": used[r]} for r in RESOURCES
    ]


def set_limits(
    ctx: Context, values: dict[str, int], project_id: str | None = None
) -> list[dict[str, Any]]:
    """Set hard limits (-1 = unlimited) for a project."""
    project = project_id or ctx.settings.project_id
    for res, value in values.items():
        if res not in RESOURCES:
            raise InvalidInput(reason=f"unknown quota resource {res!r}")
        if value < -1:
            raise InvalidInput(reason=f"quota {res} must be -1 (unlimited) or >= 0")
        validation.in_range(f"quota {res}", value, -1)
    with ctx.db.unit_of_work() as session:
        for res, value in values.items():
            row = session.scalars(
                select(Quota).where(Quota.project_id == project, Quota.resource == res)
            ).first()
            if row is None:
                session.add(Quota(project_id=project, resource=res, hard_limit=value))
            else:
                row.hard_limit = value
    return show(ctx, project)
