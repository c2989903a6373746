"""The resource ledger (Nova's ResourceTracker + Placement allocations).

Allocations are the single source of truth for usage. A claim is a compare-and-swap on the host's
``generation``: it succeeds only if no other claim or release touched the host since the caller
read it, so two pipelines booting at once can never over-commit a host.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from cloudctl.db.models import Allocation, Host

VCPU = "VCPU"
MEMORY_MB = "MEMORY_MB"
DISK_GB = "DISK_GB"


class GenerationConflict(Exception):
    """The host changed between read and claim; re-read and try again."""

    def __init__(self, host: str) -> None:
        super().__init__(f"host {host} changed concurrently")
        self.host = host


@dataclass
class HostUsage:
    """Sum of allocations on one host."""

    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0
    consumers: set[str] = field(default_factory=set)


def resources_for(
    vcpus: int, memory_mb: int, root_gb: int, ephemeral_gb: int, swap_mb: int
) -> dict[str, int]:
    """The resource classes one instance of a flavor consumes (swap rounds up to whole GiB)."""
    return {
        VCPU: vcpus,
        MEMORY_MB: memory_mb,
        DISK_GB: root_gb + ephemeral_gb + math.ceil(swap_mb / 1024),
    }


def usage_by_host(session: Session, host_ids: Iterable[int] | None = None) -> dict[int, HostUsage]:
    """Current usage of every host (or of ``host_ids``) from the allocations."""
    stmt = select(
        Allocation.host_id, Allocation.consumer_uuid, Allocation.resource_class, Allocation.used
    )
    if host_ids is not None:
        stmt = stmt.where(Allocation.host_id.in_(list(host_ids)))
    usage: dict[int, HostUsage] = {}
    for host_id, consumer, rc, used in session.execute(stmt):
        u = usage.setdefault(host_id, HostUsage())
        u.consumers.add(consumer)
        if rc == VCPU:
            u.vcpus += used
        elif rc == MEMORY_MB:
            u.memory_mb += used
        elif rc == DISK_GB:
            u.disk_gb += used
    return usage


def claim(
    session: Session,
    host: Host,
    consumer_uuid: str,
    resources: Mapping[str, int],
    expected_generation: int,
) -> int:
    """Allocate ``resources`` on ``host`` for ``consumer_uuid`` if the host is unchanged.

    Returns the host's new generation; raises :class:`GenerationConflict` otherwise.
    """
    new_generation = _bump(session, host, expected_generation)
    for rc, amount in resources.items():
        if amount:
            session.add(
                Allocation(
                    host_id=host.id, consumer_uuid=consumer_uuid, resource_class=rc, used=amount
                )
            )
    session.flush()
    return new_generation


def release(session: Session, consumer_uuid: str, host_id: int | None = None) -> int:
    """Drop a consumer's allocations (on one host or all) and bump those hosts' generations."""
    where = [Allocation.consumer_uuid == consumer_uuid]
    if host_id is not None:
        where.append(Allocation.host_id == host_id)
    host_ids = set(session.scalars(select(Allocation.host_id).where(*where)))
    if not host_ids:
        return 0
    result: CursorResult[Any] = session.execute(delete(Allocation).where(*where))  # type: ignore[assignment]
    removed = result.rowcount
    session.execute(
        update(Host).where(Host.id.in_(host_ids)).values(generation=Host.generation + 1)
    )
    return int(removed or 0)


def set_allocation(
    session: Session, host: Host, consumer_uuid: str, resources: Mapping[str, int]
) -> None:
    """Make ``consumer_uuid``'s allocation on ``host`` exactly ``resources`` (a heal: no limit).

    Reconcile's repair of a ledger that lost or garbled a row: the guest is there whether the
    host has room or not, so capacity is not checked; the generation is still bumped so a
    concurrent claim on the host retries against the new usage.
    """
    session.execute(
        delete(Allocation).where(
            Allocation.consumer_uuid == consumer_uuid, Allocation.host_id == host.id
        )
    )
    session.flush()
    session.refresh(host, ["generation"])
    claim(session, host, consumer_uuid, resources, host.generation)


def move_to_consumer(session: Session, host_id: int, from_consumer: str, to_consumer: str) -> int:
    """Hand ``from_consumer``'s allocations on one host to ``to_consumer`` (usage unchanged).

    A move holds the source's resources under the migration's uuid while the instance's uuid
    claims the destination, as Nova's conductor does; confirm or revert hands them back or drops
    them. The host's generation is untouched: nothing it can hand out changed.
    """
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Allocation)
        .where(Allocation.host_id == host_id, Allocation.consumer_uuid == from_consumer)
        .values(consumer_uuid=to_consumer)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def allocations_of(session: Session, consumer_uuid: str) -> dict[int, dict[str, int]]:
    """A consumer's allocations: host id -> resource class -> amount."""
    out: dict[int, dict[str, int]] = {}
    rows = session.execute(
        select(Allocation.host_id, Allocation.resource_class, Allocation.used).where(
            Allocation.consumer_uuid == consumer_uuid
        )
    )
    for host_id, rc, used in rows:
        out.setdefault(host_id, {})[rc] = used
    return out


def instance_counts(session: Session) -> dict[int, int]:
    """Number of distinct consumers per host."""
    rows = session.execute(
        select(Allocation.host_id, func.count(func.distinct(Allocation.consumer_uuid))).group_by(
            Allocation.host_id
        )
    )
    return {host_id: int(n) for host_id, n in rows}


def _bump(session: Session, host: Host, expected_generation: int) -> int:
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Host)
        .where(Host.id == host.id, Host.generation == expected_generation)
        .values(generation=expected_generation + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise GenerationConflict(host.name)
    session.expire(host, ["generation"])
    return expected_generation + 1
