"""Flavors: hardware templates with extra specs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl.db.models import Flavor, FlavorExtraSpec, Instance
from cloudctl.domain import validation
from cloudctl.errors import AlreadyExists, InUse, InvalidInput, NotFound
from cloudctl.services.context import Context

#: The longest extra spec value (``flavor_extra_specs.value`` is a String(255)).
EXTRA_SPEC_MAX = 255


def get_flavor(session: Session, name: str) -> Flavor:
    """A live flavor by name."""
    flavor = session.scalars(select(Flavor).where(Flavor.name == name, Flavor.deleted == 0)).first()
    if flavor is None:
        raise NotFound(kind="flavor", name=name)
    return flavor


def create_flavor(
    ctx: Context,
    name: str,
    *,
    vcpus: int,
    memory_mb: int,
    root_gb: int,
    ephemeral_gb: int = 0,
    swap_mb: int = 0,
    extra_specs: Mapping[str, str] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Create a flavor; sizes are validated before anything is written."""
    validation.object_name("flavor", name)
    validation.positive("vcpus", vcpus)
    validation.positive("ram", memory_mb)
    validation.non_negative("disk", root_gb)
    validation.non_negative("ephemeral", ephemeral_gb)
    validation.non_negative("swap", swap_mb)
    for key, value in (extra_specs or {}).items():
        if len(value) > EXTRA_SPEC_MAX:
            raise InvalidInput(
                reason=f"extra spec {key!r} is longer than {EXTRA_SPEC_MAX} characters"
            )
    with ctx.db.unit_of_work() as session:
        if session.scalars(
            select(Flavor.id).where(Flavor.name == name, Flavor.deleted == 0)
        ).first():
            raise AlreadyExists(kind="flavor", name=name)
        flavor = Flavor(
            flavorid=str(uuid.uuid4()),
            name=name,
            vcpus=vcpus,
            memory_mb=memory_mb,
            root_gb=root_gb,
            ephemeral_gb=ephemeral_gb,
            swap_mb=swap_mb,
            description=description,
            created_at=ctx.clock(),
            extra_specs=[FlavorExtraSpec(key=k, value=v) for k, v in (extra_specs or {}).items()],
        )
        session.add(flavor)
        session.flush()
        return flavor_view(flavor)


def list_flavors(ctx: Context) -> list[dict[str, Any]]:
    """Every live flavor."""
    with ctx.db.unit_of_work() as session:
        rows = session.scalars(select(Flavor).where(Flavor.deleted == 0).order_by(Flavor.name))
        return [flavor_view(f) for f in rows]


def show_flavor(ctx: Context, name: str) -> dict[str, Any]:
    """One flavor."""
    with ctx.db.unit_of_work() as session:
        return flavor_view(get_flavor(session, name))


def delete_flavor(ctx: Context, name: str) -> None:
    """Soft-delete a flavor no live instance uses."""
    with ctx.db.unit_of_work() as session:
        flavor = get_flavor(session, name)
        users = session.scalars(
            select(Instance.name).where(Instance.flavor_id == flavor.id, Instance.deleted == 0)
        ).all()
        if users:
            raise InUse(kind="flavor", name=name, reason=f"used by {', '.join(users)}")
        flavor.deleted = flavor.id
        flavor.deleted_at = ctx.clock()


def flavor_view(flavor: Flavor) -> dict[str, Any]:
    """A flavor as the CLI shows it."""
    return {
        "name": flavor.name,
        "id": flavor.flavorid,
        "vcpus": flavor.vcpus,
        "ram": flavor.memory_mb,
        "disk": flavor.root_gb,
        "ephemeral": flavor.ephemeral_gb,
        "swap": flavor.swap_mb,
        "properties": flavor.specs(),
        "description": flavor.description,
    }
