"""What every move shares: the Migration record, choosing and claiming a destination, the
pre-check play and its pure verdict, and the views of ``migration list / show``.

The ledger follows Nova's conductor: while a move is in flight the source's allocation is held
by the migration's uuid and the destination's by the instance's, so both hosts stay charged
until the move is confirmed (source dropped) or undone (destination dropped, source handed back).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import Flavor, Host, Instance, Migration
from cloudctl.domain import validation
from cloudctl.domain.states import PowerState
from cloudctl.errors import ClaimConflict, CloudctlError, InvalidInput, NotFound
from cloudctl.executor.base import RunRequest, RunResult
from cloudctl.render import render_domain_xml
from cloudctl.scheduler.host_state import RequestSpec
from cloudctl.services import actions, hosts
from cloudctl.services.compute import tasks
from cloudctl.services.compute.boot import (
    CLAIM_RETRIES,
    build_request_spec,
    host_states,
    make_scheduler,
    request_spec_for,
)
from cloudctl.services.compute.common import (
    base_files,
    by_uuid,
    config_drive_files,
    domain_spec,
    failure_reason,
    get_instance,
    looked_up_progress,
)
from cloudctl.services.context import Context

T = TypeVar("T")

#: Nova's migration_type values.
COLD, RESIZE, LIVE, EVACUATION = "migration", "resize", "live-migration", "evacuation"
#: Statuses after which a migration holds nothing any more.
DONE_STATUSES = frozenset(
    {"confirmed", "reverted", "completed", "failed", "error", "done", "cancelled"}
)


def new_migration(
    session: Session,
    inst: Instance,
    migration_type: str,
    status: str,
    source: str | None,
    dest: str | None = None,
    *,
    new_flavor: Flavor | None = None,
) -> Migration:
    """A Migration row for ``inst`` (flushed, so its id is known)."""
    mig = Migration(
        uuid=str(uuid.uuid4()),
        instance_uuid=inst.uuid,
        source_host=source,
        dest_host=dest,
        migration_type=migration_type,
        status=status,
        old_flavor_id=inst.flavor_id,
        new_flavor_id=(new_flavor or inst.flavor).id,
        old_vm_state=inst.vm_state,
    )
    session.add(mig)
    session.flush()
    return mig


def get_migration(session: Session, ref: str) -> Migration:
    """A migration by id or uuid."""
    column = Migration.uuid if validation.is_uuid(ref) else Migration.id
    if column is Migration.id and not ref.isdigit():
        raise InvalidInput(reason=f"migration id must be a number or a UUID, not {ref!r}")
    mig = session.scalars(
        select(Migration).where(column == (ref if column is Migration.uuid else int(ref)))
    ).first()
    if mig is None:
        raise NotFound(kind="migration", name=ref)
    return mig


def migration_by_uuid(session: Session, mig_uuid: str) -> Migration:
    """A migration by uuid."""
    return get_migration(session, mig_uuid)


def in_progress(session: Session, inst_uuid: str, statuses: Sequence[str]) -> Migration | None:
    """The instance's latest migration in one of ``statuses``."""
    return session.scalars(
        select(Migration)
        .where(Migration.instance_uuid == inst_uuid, Migration.status.in_(list(statuses)))
        .order_by(Migration.id.desc())
    ).first()


def migration_view(session: Session, mig: Migration) -> dict[str, Any]:
    """A migration as the CLI shows it (JSON-friendly)."""
    inst = session.scalars(select(Instance).where(Instance.uuid == mig.instance_uuid)).first()
    flavors = {
        f.id: f.name
        for f in session.scalars(
            select(Flavor).where(Flavor.id.in_([mig.old_flavor_id or 0, mig.new_flavor_id or 0]))
        )
    }

    def pct(done: int | None, total: int | None) -> int | None:
        return None if not total or done is None else min(100, int(done * 100 / total))

    return {
        "id": mig.id,
        "uuid": mig.uuid,
        "instance": inst.name if inst else None,
        "instance_uuid": mig.instance_uuid,
        "type": mig.migration_type,
        "status": mig.status,
        "source_host": mig.source_host,
        "dest_host": mig.dest_host,
        "old_flavor": flavors.get(mig.old_flavor_id or 0),
        "new_flavor": flavors.get(mig.new_flavor_id or 0),
        "shared_storage": mig.shared_storage,
        "block_migration": mig.block_migration,
        "memory_total": mig.memory_total,
        "memory_processed": mig.memory_processed,
        "disk_total": mig.disk_total,
        "disk_processed": mig.disk_processed,
        "memory_progress": pct(mig.memory_processed, mig.memory_total),
        "disk_progress": pct(mig.disk_processed, mig.disk_total),
        "error": mig.error,
        "created_at": mig.created_at.isoformat() if mig.created_at else None,
        "updated_at": mig.updated_at.isoformat() if mig.updated_at else None,
    }


def list_migrations(ctx: Context, instance: str | None = None) -> list[dict[str, Any]]:
    """Migrations (of one instance, or of the project's instances), oldest first."""
    with ctx.db.unit_of_work() as session:
        stmt = select(Migration).order_by(Migration.id)
        if instance is not None:
            if validation.is_uuid(instance):
                inst_uuid = instance
            else:
                inst_uuid = get_instance(session, ctx.settings.project_id, instance).uuid
            stmt = stmt.where(Migration.instance_uuid == inst_uuid)
        else:
            project = select(Instance.uuid).where(Instance.project_id == ctx.settings.project_id)
            stmt = stmt.where(Migration.instance_uuid.in_(project))
        return [migration_view(session, m) for m in session.scalars(stmt)]


def show_migration(ctx: Context, ref: str) -> dict[str, Any]:
    """One migration by id or uuid."""
    with ctx.db.unit_of_work() as session:
        return migration_view(session, get_migration(session, ref))


# --- scheduling and claims ----------------------------------------------------------------


def move_spec(
    session: Session,
    inst: Instance,
    *,
    flavor: Flavor | None,
    ignore_hosts: frozenset[str],
    force_host: str | None,
) -> RequestSpec:
    """The instance's stored request (new flavor for a resize), for a move.

    As Nova does for moves, the host forced at boot no longer binds: the destination is the
    scheduler's choice, or ``--host`` (still checked by every filter).
    """
    if flavor is None:
        spec = request_spec_for(session, inst, 1, ignore_hosts)
    else:
        rs = inst.request_spec or {}
        spec = build_request_spec(
            session,
            inst.project_id,
            flavor,
            inst.image,
            availability_zone=rs.get("availability_zone"),
            group=rs.get("group"),
            hints=rs.get("hints") or {},
            ignore_hosts=ignore_hosts,
        )
    return replace(spec, force_host=force_host)


def resources_of(flavor_like: Instance | Flavor) -> dict[str, int]:
    """Ledger resources of an instance's (or a flavor's) sizes."""
    return ledger.resources_for(
        flavor_like.vcpus,
        flavor_like.memory_mb,
        flavor_like.root_gb,
        flavor_like.ephemeral_gb,
        flavor_like.swap_mb,
    )


def pick_destination(
    ctx: Context,
    session: Session,
    inst: Instance,
    *,
    flavor: Flavor | None = None,
    force_host: str | None = None,
    ignore_hosts: frozenset[str] = frozenset(),
) -> tuple[Host, int]:
    """The scheduler's destination for a move and the generation it was chosen at."""
    if force_host is not None:
        hosts.get_host(session, force_host)
    spec = move_spec(session, inst, flavor=flavor, ignore_hosts=ignore_hosts, force_host=force_host)
    rows = {h.name: h for h in hosts.list_hosts(session)}
    states = host_states(session, rows.values(), ctx.clock(), ctx.settings.service_down_time_s)
    [sel] = make_scheduler(ctx).select(states, spec, 1)
    return rows[sel.host.name], sel.host.generation


def claim_move(
    session: Session,
    inst: Instance,
    mig: Migration,
    source: Host | None,
    dest: Host,
    resources: Mapping[str, int],
    generation: int,
) -> None:
    """Hand the source's allocation to the migration, claim the destination for the instance."""
    if source is not None:
        ledger.move_to_consumer(session, source.id, inst.uuid, mig.uuid)
    ledger.claim(session, dest, inst.uuid, resources, generation)


def drop_source(session: Session, mig: Migration) -> None:
    """The move is done: the source's allocation (held by the migration) goes."""
    ledger.release(session, mig.uuid)


def undo_claims(session: Session, inst: Instance, mig: Migration) -> None:
    """The move is undone: the destination's claim goes, the source's returns to the instance."""
    dest = session.scalars(
        select(Host).where(Host.name == mig.dest_host, Host.deleted == 0)
    ).first()
    source = session.scalars(
        select(Host).where(Host.name == mig.source_host, Host.deleted == 0)
    ).first()
    if dest is not None:
        ledger.release(session, inst.uuid, dest.id)
    if source is not None:
        ledger.move_to_consumer(session, source.id, mig.uuid, inst.uuid)


def with_claim_retries(ctx: Context, attempt: Callable[[], T]) -> T:
    """Run ``attempt()`` (one transaction that claims) again when the ledger moved under it."""
    for n in range(1, CLAIM_RETRIES + 1):
        try:
            return attempt()
        except ledger.GenerationConflict as exc:
            if n == CLAIM_RETRIES:
                raise ClaimConflict(host=exc.host, attempts=n) from exc
            time.sleep(ctx.rng.uniform(0.01, 0.05 * n))
    raise AssertionError("unreachable")


# --- hosts and rendering ----------------------------------------------------------------------


def peer_uri(ctx: Context, host: Host) -> str:
    """How another host's libvirtd reaches ``host``'s (Nova's live_migration_scheme)."""
    if not host.address:
        raise InvalidInput(
            reason=f"host {host.name} has no address: other hosts cannot reach its libvirtd"
        )
    return f"qemu+{ctx.settings.live_migration_scheme}://{host.address}/system"


@contextmanager
def placed(inst: Instance, host: Host, flavor: Flavor | None = None) -> Any:
    """``inst`` as if it were on ``host`` with ``flavor``'s sizes, for rendering only."""
    saved = (inst.host, inst.vcpus, inst.memory_mb, inst.root_gb, inst.ephemeral_gb, inst.swap_mb)
    try:
        inst.host = host
        if flavor is not None:
            inst.vcpus, inst.memory_mb = flavor.vcpus, flavor.memory_mb
            inst.root_gb, inst.ephemeral_gb = flavor.root_gb, flavor.ephemeral_gb
            inst.swap_mb = flavor.swap_mb
        yield inst
    finally:
        (
            inst.host,
            inst.vcpus,
            inst.memory_mb,
            inst.root_gb,
            inst.ephemeral_gb,
            inst.swap_mb,
        ) = saved


def set_flavor(inst: Instance, flavor: Flavor) -> None:
    """Give ``inst`` ``flavor`` and its sizes (Nova's instance.flavor = new_flavor)."""
    inst.flavor = flavor
    inst.vcpus, inst.memory_mb = flavor.vcpus, flavor.memory_mb
    inst.root_gb, inst.ephemeral_gb, inst.swap_mb = (
        flavor.root_gb,
        flavor.ephemeral_gb,
        flavor.swap_mb,
    )


def domain_xml_on(
    session: Session, inst: Instance, host: Host, flavor: Flavor | None = None
) -> str:
    """The instance's domain XML as it would be on ``host`` with ``flavor``."""
    with session.no_autoflush, placed(inst, host, flavor):
        return render_domain_xml(domain_spec(session, inst))


def guest_files(
    session: Session, inst: Instance, host: Host, flavor: Flavor | None = None
) -> dict[str, Any]:
    """What building the guest's files on ``host`` takes: base files, disks, config drive."""
    image = inst.image
    base = base_files(image)
    sizes = flavor or inst
    image_ref = (
        {"checksum": image.checksum, "format": image.disk_format}
        if image is not None and image.checksum
        else None
    )
    with session.no_autoflush, placed(inst, host, flavor):
        files = config_drive_files(session, inst)
    return {
        "base": base,
        "disks": [
            {
                "uuid": inst.uuid,
                "image": image_ref,
                "root_gb": sizes.root_gb,
                "ephemeral_gb": sizes.ephemeral_gb,
                "swap_mb": sizes.swap_mb,
            }
        ],
        "drives": [{"uuid": inst.uuid, "files": files}],
        "rebase": [{"uuid": inst.uuid, "image": image_ref}] if image_ref else [],
    }


# --- the pre-check play and its verdict -----------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What cloudctl_migration_check reported of one host."""

    hypervisor_type: str | None = None
    hypervisor_version: int | None = None
    libvirt_version: int | None = None
    cpu_compare: str | None = None
    probe_found: bool | None = None


@dataclass(frozen=True)
class CheckReport:
    """The pre-check play's findings (or why it could not run)."""

    source: HostFacts
    dest: HostFacts
    error: str | None = None

    @property
    def shared_storage(self) -> bool:
        """The destination's probe was visible from the source."""
        return bool(self.source.probe_found)


def _facts(result: Mapping[str, Any] | None) -> HostFacts:
    r = result or {}
    return HostFacts(
        hypervisor_type=r.get("hypervisor_type"),
        hypervisor_version=r.get("hypervisor_version"),
        libvirt_version=r.get("libvirt_version"),
        cpu_compare=r.get("cpu_compare"),
        probe_found=r.get("probe_found"),
    )


def run_checks(ctx: Context, mig_uuid: str, source: Host, dest: Host) -> CheckReport:
    """Hypervisor facts, the CPU comparison and the shared storage probe, in one play."""
    run = ctx.executor.run(
        RunRequest(
            playbook="migrate_check.yml",
            hosts=(hosts.host_target(source), hosts.host_target(dest)),
            extravars={
                "cloudctl_check": {
                    "source": source.name,
                    "dest": dest.name,
                    "probe": f"cloudctl-probe-{mig_uuid}",
                }
            },
            description=f"migration checks {source.name} -> {dest.name}",
        ),
        ctx.progress.run_event,
    )
    error = None if run.ok else failure_reason(run)
    return CheckReport(
        source=_facts(run.result("source facts", source.name)),
        dest=_facts(run.result("destination checks", dest.name)),
        error=error,
    )


def live_migration_problems(
    *,
    source: str,
    dest: str,
    source_up: bool,
    dest_up: bool,
    report: CheckReport,
    block_migrate: str,
) -> tuple[list[str], bool]:
    """Nova's live-migration pre-checks as data: (problems, use block migration)."""
    problems: list[str] = []
    if not source_up:
        problems.append(f"source host {source} is down")
    if dest == source:
        problems.append(f"the destination {dest} is the instance's own host")
    if not dest_up:
        problems.append(f"destination host {dest} is down")
    if report.error:
        problems.append(f"checks failed: {report.error}")
        return problems, False
    s, d = report.source, report.dest
    if s.hypervisor_type != d.hypervisor_type:
        problems.append(
            f"hypervisor types differ: {source} runs {s.hypervisor_type}, "
            f"{dest} runs {d.hypervisor_type}"
        )
    if (s.hypervisor_version or 0) > (d.hypervisor_version or 0):
        problems.append(
            f"destination hypervisor version {d.hypervisor_version} is older than the "
            f"source's {s.hypervisor_version}"
        )
    if d.cpu_compare not in ("identical", "superset"):
        problems.append(f"the source's CPU is {d.cpu_compare or 'not comparable'} on {dest}")
    shared = report.shared_storage
    block = {"auto": not shared, "yes": True, "no": False}[block_migrate]
    if block and shared:
        problems.append("block migration asked for, but the instances path is shared")
    if not block and not shared:
        problems.append(
            "the instances path is not shared between the hosts: use --block-migrate yes|auto"
        )
    return problems, block


def record_progress(ctx: Context, mig_uuid: str, values: Mapping[str, Any]) -> None:
    """Write a progress sample (libvirt job info) to the migration row."""
    with ctx.db.unit_of_work() as session:
        mig = migration_by_uuid(session, mig_uuid)
        for key in ("memory_total", "memory_processed", "disk_total", "disk_processed"):
            if values.get(key) is not None:
                setattr(mig, key, int(values[key]))


def fail_move(
    ctx: Context,
    inst_uuid: str,
    mig_uuid: str,
    request_id: str,
    event: str,
    reason: str,
    result: RunResult | None,
    *,
    status: str = "error",
    vm_state: str | None = None,
    undo: bool = True,
    fault: bool = True,
) -> None:
    """Close a failed move: event and action in error, a fault, the claims undone."""
    details = reason + ("\n--- ansible output ---\n" + result.stdout_tail if result else "")
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        if not tasks.owned(session, ctx, inst):
            return  # its lease was taken over: the controller settling it records the outcome
        mig = migration_by_uuid(session, mig_uuid)
        host = inst.host.name if inst.host else None
        act = actions.current_action(session, inst_uuid, request_id)
        actions.finish_event(session, act, event, now, actions.ERROR, details, host)
        actions.finish_action(act, now, message="Error")
        if fault:
            actions.add_fault(session, inst, f"{act.action} failed: {reason}", details, now, host)
        if undo:
            undo_claims(session, inst, mig)
        mig.status = status
        mig.error = reason[:2000]
        tasks.finish(session, ctx, inst)
        if vm_state is not None:
            inst.vm_state = vm_state


def power_of(result: RunResult | None, task: str, host: str, name: str) -> PowerState | None:
    """The power state a cloudctl_domain task reported for ``name`` on ``host``."""
    if result is None:
        return None
    data = result.result(task, host) or {}
    for item in data.get("results") or []:
        if isinstance(item, Mapping) and item.get("name") == name:
            return PowerState.from_libvirt(str(item.get("state", "nostate")))
    return None


def run_play(ctx: Context, request: RunRequest) -> tuple[RunResult | None, str | None]:
    """Run a play; (result, None) when it went well, else (result or None, why)."""
    try:
        result = ctx.executor.run(request, looked_up_progress(ctx))
    except CloudctlError as exc:
        return None, str(exc)
    return result, None if result.ok else failure_reason(result)
