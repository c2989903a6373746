"""Cold migration and resize, with confirm and revert (Nova's prep_resize, resize_instance,
finish_resize, confirm_resize, revert_resize).

``migrate`` / ``resize``: schedule (the stored request, the new flavor for a resize, the source
ignored unless a resize may stay), hand the source's allocation to the migration and claim the
destination; check whether the instances path is shared; then one play powers the guest off,
keeps its files as ``<uuid>_resize`` on the source, copies them (streamed through the
destination's libvirtd, or locally when shared), grows the disks and defines (and starts) the
guest on the destination. The instance waits in VERIFY_RESIZE holding both allocations until
``resize-confirm`` (source files and allocation go) or ``resize-revert`` (destination cleaned,
source restored with the old flavor). A failure undoes the move on the hosts and in the ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl.db.models import Flavor, Instance, Migration
from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import InvalidInput, InvalidState, OperationFailed
from cloudctl.executor.base import HostTarget, RunRequest, RunResult
from cloudctl.services import actions, hosts, leases, quotas
from cloudctl.services.compute import tasks
from cloudctl.services.compute.boot import _check_image_fits
from cloudctl.services.compute.common import by_uuid, check_state, get_instance
from cloudctl.services.compute.moves import (
    COLD,
    RESIZE,
    claim_move,
    domain_xml_on,
    drop_source,
    fail_move,
    guest_files,
    in_progress,
    migration_by_uuid,
    new_migration,
    peer_uri,
    pick_destination,
    power_of,
    resources_of,
    run_checks,
    run_play,
    set_flavor,
    undo_claims,
    with_claim_retries,
)
from cloudctl.services.compute.views import instance_view
from cloudctl.services.context import Context
from cloudctl.services.flavors import get_flavor

_FILES = ["disk", "disk.eph0", "disk.swap", "disk.config"]


def migrate(
    ctx: Context, name: str, *, host: str | None = None, flavor: str | None = None
) -> dict[str, Any]:
    """Cold-migrate (or, with ``flavor``, resize) an instance; it ends in VERIFY_RESIZE."""
    action = "resize" if flavor else "migrate"
    request_id = actions.new_request_id()
    hosts.refresh_stale(ctx)

    def schedule(session: Session) -> tuple[str, str, str, str, bool]:
        now = ctx.clock()
        inst = get_instance(session, ctx.settings.project_id, name)
        [inst] = tasks.claim(
            session,
            ctx,
            [inst.uuid],
            action,
            TaskState.RESIZE_PREP,
            (VmState.ACTIVE, VmState.STOPPED),
            now=now,
        )
        source = inst.host
        if source is None:
            raise InvalidState(
                action=action, name=inst.name, vm_state=inst.vm_state, task_state=None
            )
        new_flavor = _resize_flavor(session, inst, flavor) if flavor else None
        if new_flavor is not None:
            quotas.check_resize(
                session,
                ctx.settings,
                (inst.vcpus, inst.memory_mb),
                (new_flavor.vcpus, new_flavor.memory_mb),
            )
        same_ok = new_flavor is not None and ctx.settings.allow_resize_to_same_host
        ignore = frozenset() if same_ok else frozenset({source.name})
        if host is not None and host == source.name and not same_ok:
            raise InvalidInput(
                reason=f"{inst.name} is on {host} already"
                + ("" if flavor else "; a migration needs another host")
            )
        act = actions.start_action(session, inst, action, request_id, now)
        actions.start_event(session, act, "schedule", now)
        dest, generation = pick_destination(
            ctx, session, inst, flavor=new_flavor, force_host=host, ignore_hosts=ignore
        )
        mig = new_migration(
            session,
            inst,
            RESIZE if new_flavor is not None else COLD,
            "pre-migrating",
            source.name,
            dest.name,
            new_flavor=new_flavor,
        )
        claim_move(session, inst, mig, source, dest, resources_of(new_flavor or inst), generation)
        actions.finish_event(session, act, "schedule", ctx.clock(), host=dest.name)
        ctx.progress.info(f"{inst.name}: {source.name} -> {dest.name}")
        return inst.uuid, mig.uuid, source.name, dest.name, source.name == dest.name

    with leases.command_lease(ctx, f"{action} {name}", request_id=request_id) as lease:
        inst_uuid, mig_uuid, source_name, dest_name, same_host = with_claim_retries(
            ctx, lambda: tasks.start(ctx, schedule)
        )
        lease.hold("migrations", [mig_uuid])
        shared = same_host or _probe(ctx, inst_uuid, mig_uuid, request_id, source_name, dest_name)
        _move(ctx, inst_uuid, mig_uuid, request_id, shared)
    with ctx.db.unit_of_work() as session:
        return instance_view(session, by_uuid(session, inst_uuid), detail=True)


def resize(ctx: Context, name: str, flavor: str, *, host: str | None = None) -> dict[str, Any]:
    """Resize an instance to ``flavor`` (a cold migration with a new flavor)."""
    return migrate(ctx, name, host=host, flavor=flavor)


def _resize_flavor(session: Any, inst: Instance, name: str) -> Flavor:
    flavor = get_flavor(session, name)
    if flavor.id == inst.flavor_id:
        raise InvalidInput(reason=f"{inst.name} already has flavor {flavor.name}")
    if flavor.disabled:
        raise InvalidInput(reason=f"flavor {flavor.name} is disabled")
    for what, new, old in (
        ("root disk", flavor.root_gb, inst.root_gb),
        ("ephemeral disk", flavor.ephemeral_gb, inst.ephemeral_gb),
        ("swap", flavor.swap_mb, inst.swap_mb),
    ):
        if new < old:
            raise InvalidInput(
                reason=f"resizing to a smaller {what} is not allowed ({old} -> {new})"
            )
    if inst.image is not None:
        _check_image_fits(inst.image, flavor.memory_mb, flavor.root_gb)
    return flavor


def _probe(
    ctx: Context, inst_uuid: str, mig_uuid: str, request_id: str, source: str, dest: str
) -> bool:
    """Whether source and destination share the instances path; a failure undoes the claims."""
    with ctx.db.unit_of_work() as session:
        act = actions.current_action(session, inst_uuid, request_id)
        actions.start_event(session, act, "check", ctx.clock(), dest)
        src_host, dst_host = hosts.get_host(session, source), hosts.get_host(session, dest)
    report = run_checks(ctx, mig_uuid, src_host, dst_host)
    if report.error:
        fail_move(ctx, inst_uuid, mig_uuid, request_id, "check", report.error, None)
        raise OperationFailed(action="migrate", name=inst_uuid, reason=report.error)
    with ctx.db.unit_of_work() as session:
        act = actions.current_action(session, inst_uuid, request_id)
        shared = report.shared_storage
        note = "instances path shared" if shared else "instances path not shared: disks copied"
        actions.finish_event(session, act, "check", ctx.clock(), details=note, host=dest)
    return shared


def _move(ctx: Context, inst_uuid: str, mig_uuid: str, request_id: str, shared: bool) -> None:
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        source = hosts.get_host(session, mig.source_host or "")
        dest = hosts.get_host(session, mig.dest_host or "")
        new_flavor = session.get(Flavor, mig.new_flavor_id) if mig.new_flavor_id else None
        mig.status = "migrating"
        mig.shared_storage = shared
        tasks.advance(session, ctx, inst, TaskState.RESIZE_MIGRATING)
        act = actions.current_action(session, inst_uuid, request_id)
        actions.start_event(session, act, "resize_instance", now, source.name)
        running = inst.vm_state == VmState.ACTIVE
        files = guest_files(session, inst, dest, new_flavor)
        copy: dict[str, Any] = {
            "dest_instances_path": dest.instances_path,
            "guest": {"uuid": inst.uuid, "files": _FILES},
        }
        if not shared:
            copy["dest_uri"] = peer_uri(ctx, dest)
        domain = {"name": inst.domain_name}
        extravars = {
            "cloudctl_outgoing": {
                source.name: {
                    "stop": [{**domain, "state": "shutdown"}],
                    "undefine": [{**domain, "state": "absent"}],
                    "stash": [{"uuid": inst.uuid}],
                    "copies": [copy],
                }
            },
            "cloudctl_incoming": {
                dest.name: {
                    "base": [] if shared else files["base"],
                    "rebase": files["rebase"],
                    "disks": files["disks"],
                    "drives": files["drives"],
                    "domains": [
                        {
                            **domain,
                            "xml": domain_xml_on(session, inst, dest, new_flavor),
                            "state": "running" if running else "present",
                        }
                    ],
                }
            },
            "cloudctl_stop_timeout": ctx.settings.stop_timeout_s,
        }
        targets = tuple({h.name: hosts.host_target(h) for h in (source, dest)}.values())
        name, dest_name = inst.name, dest.name
    result, error = run_play(
        ctx,
        RunRequest(
            playbook="migrate_cold.yml",
            hosts=targets,
            extravars=extravars,
            description=f"migrate {name} -> {dest_name}",
        ),
    )
    if error is not None:
        roll_back(ctx, inst_uuid, mig_uuid, request_id, error, result)
        raise OperationFailed(action="migrate", name=name, reason=error)
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        dest = hosts.get_host(session, mig.dest_host or "")
        act = actions.current_action(session, inst_uuid, request_id)
        actions.finish_event(session, act, "resize_instance", now, host=mig.source_host)
        actions.finish_event(session, act, "finish_resize", now, host=dest.name, started=now)
        actions.finish_action(act, now)
        if mig.new_flavor_id and mig.new_flavor_id != inst.flavor_id:
            new_flavor = session.get(Flavor, mig.new_flavor_id)
            assert new_flavor is not None
            set_flavor(inst, new_flavor)
        tasks.finish(session, ctx, inst)
        inst.host = dest
        inst.availability_zone = dest.availability_zone
        inst.vm_state = VmState.RESIZED
        inst.power_state = power_of(result, "spawn", dest.name, inst.domain_name) or (
            PowerState.RUNNING if mig.old_vm_state == VmState.ACTIVE else PowerState.SHUTDOWN
        )
        mig.status = "finished"
    hosts.touch_hosts(ctx, {source_name_of(ctx, mig_uuid), dest_name})


def source_name_of(ctx: Context, mig_uuid: str) -> str:
    """The source host's name of a migration."""
    with ctx.db.unit_of_work() as session:
        return migration_by_uuid(session, mig_uuid).source_host or ""


def _undo_on_hosts(
    ctx: Context, inst_uuid: str, mig_uuid: str
) -> tuple[RunResult | None, str | None]:
    """Remove the guest from the destination and restore it on the source as it was.

    On one host, or on a shared instances path, the destination's ``<uuid>`` is the source's
    too: only the source's restore (which replaces ``<uuid>`` only when ``<uuid>_resize`` is
    there) may touch it, or a failure before the stash would delete the guest's only disk.
    """
    with ctx.db.unit_of_work() as session:
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        source = hosts.get_host(session, mig.source_host or "")
        dest = hosts.get_host(session, mig.dest_host or "")
        old_flavor = session.get(Flavor, mig.old_flavor_id) if mig.old_flavor_id else None
        running = mig.old_vm_state == VmState.ACTIVE
        domain = {"name": inst.domain_name}
        # Unknown (killed before the probe) counts as shared: the directory may be the guest's.
        own_files = source.name != dest.name and mig.shared_storage is False
        extravars = {
            "cloudctl_dest": {
                dest.name: {
                    "domains": [{**domain, "state": "absent"}],
                    "files": [{"uuid": inst.uuid}] if own_files else [],
                }
            },
            "cloudctl_source": {
                source.name: {
                    "files": [{"uuid": inst.uuid}],
                    "domains": [
                        {
                            **domain,
                            "xml": domain_xml_on(session, inst, source, old_flavor),
                            "state": "running" if running else "present",
                        }
                    ],
                }
            },
        }
        targets = tuple({h.name: hosts.host_target(h) for h in (dest, source)}.values())
        name = inst.name
    return run_play(
        ctx,
        RunRequest(
            playbook="migrate_revert.yml",
            hosts=targets,
            extravars=extravars,
            description=f"revert {name}",
        ),
    )


def roll_back(
    ctx: Context,
    inst_uuid: str,
    mig_uuid: str,
    request_id: str,
    reason: str,
    result: RunResult | None,
) -> None:
    """A failed move: undo it on the hosts and in the ledger; ERROR only if that fails too."""
    undo, undo_error = _undo_on_hosts(ctx, inst_uuid, mig_uuid)
    with ctx.db.unit_of_work() as session:
        old = migration_by_uuid(session, mig_uuid).old_vm_state or VmState.ACTIVE
    if undo_error is None:
        fail_move(ctx, inst_uuid, mig_uuid, request_id, "resize_instance", reason, result)
        with ctx.db.unit_of_work() as session:
            inst = by_uuid(session, inst_uuid)
            inst.vm_state = old
            host = inst.host.name if inst.host else ""
            inst.power_state = power_of(undo, "spawn", host, inst.domain_name) or inst.power_state
        return
    fail_move(
        ctx,
        inst_uuid,
        mig_uuid,
        request_id,
        "resize_instance",
        f"{reason}; restoring the source failed too: {undo_error}",
        result,
        vm_state=VmState.ERROR,
    )


# --- confirm and revert ---------------------------------------------------------------------


def _finished_migration(ctx: Context, name: str, action: str) -> tuple[str, str]:
    with ctx.db.unit_of_work() as session:
        inst = get_instance(session, ctx.settings.project_id, name)
        check_state(ctx, inst, action, (VmState.RESIZED,))
        mig = in_progress(session, inst.uuid, ("finished",))
        if mig is None:
            raise InvalidState(
                action=action, name=inst.name, vm_state=inst.vm_state, task_state=inst.task_state
            )
        return inst.uuid, mig.uuid


def confirm_resize(ctx: Context, name: str) -> dict[str, Any]:
    """Keep the move: the source's kept files and its allocation go."""
    inst_uuid, mig_uuid = _finished_migration(ctx, name, "confirm resize")
    with leases.command_lease(ctx, f"resize-confirm {name}"):
        return _confirm(ctx, inst_uuid, mig_uuid)


def _claim_finished(
    session: Session, ctx: Context, inst_uuid: str, mig_uuid: str, action: str, task_state: str
) -> tuple[Instance, Migration]:
    """Claim a VERIFY_RESIZE instance whose move is still ``finished`` (confirm, revert)."""
    [inst] = tasks.claim(session, ctx, [inst_uuid], action, task_state, (VmState.RESIZED,))
    mig = migration_by_uuid(session, mig_uuid)
    if mig.status != "finished":
        raise InvalidState(
            action=action, name=inst.name, vm_state=inst.vm_state, task_state=inst.task_state
        )
    return inst, mig


def _confirm(ctx: Context, inst_uuid: str, mig_uuid: str) -> dict[str, Any]:
    assert ctx.lease is not None
    request_id = ctx.lease.request_id

    def begin(session: Session) -> tuple[HostTarget, str]:
        now = ctx.clock()
        inst, mig = _claim_finished(
            session, ctx, inst_uuid, mig_uuid, "confirm resize", TaskState.RESIZE_CONFIRMING
        )
        source = hosts.get_host(session, mig.source_host or "")
        mig.status = "confirming"
        act = actions.start_action(session, inst, "confirmResize", request_id, now)
        actions.start_event(session, act, "confirm_resize", now, source.name)
        return hosts.host_target(source), inst.name

    target, name = tasks.start(ctx, begin)
    return complete_confirm(ctx, inst_uuid, mig_uuid, request_id, target, name)


def complete_confirm(
    ctx: Context, inst_uuid: str, mig_uuid: str, request_id: str, target: HostTarget, name: str
) -> dict[str, Any]:
    """The confirm's play on the source and its books, for a claimed instance whose migration
    is ``confirming`` (also how reconcile finishes the confirm of a command that died)."""
    result, error = run_play(
        ctx,
        RunRequest(
            playbook="migrate_confirm.yml",
            hosts=(target,),
            extravars={"cloudctl_discard": {target.name: [{"uuid": inst_uuid}]}},
            description=f"confirm resize of {name}",
        ),
    )
    if error is not None:
        fail_move(
            ctx,
            inst_uuid,
            mig_uuid,
            request_id,
            "confirm_resize",
            error,
            result,
            status="finished",
            undo=False,
            fault=False,
        )
        raise OperationFailed(action="confirm resize", name=name, reason=error)
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        act = actions.current_action(session, inst_uuid, request_id)
        actions.finish_event(session, act, "confirm_resize", now)
        actions.finish_action(act, now)
        tasks.finish(session, ctx, inst)
        drop_source(session, mig)
        mig.status = "confirmed"
        inst.vm_state = VmState.STOPPED if mig.old_vm_state == VmState.STOPPED else VmState.ACTIVE
        return instance_view(session, inst, detail=True)


def revert_resize(ctx: Context, name: str) -> dict[str, Any]:
    """Undo the move: the destination is cleaned, the source restored with the old flavor."""
    inst_uuid, mig_uuid = _finished_migration(ctx, name, "revert resize")
    with leases.command_lease(ctx, f"resize-revert {name}") as lease:
        return _revert(ctx, inst_uuid, mig_uuid, name, lease.request_id)


def _revert(
    ctx: Context, inst_uuid: str, mig_uuid: str, name: str, request_id: str
) -> dict[str, Any]:
    def begin(session: Session) -> None:
        now = ctx.clock()
        inst, mig = _claim_finished(
            session, ctx, inst_uuid, mig_uuid, "revert resize", TaskState.RESIZE_REVERTING
        )
        mig.status = "reverting"
        act = actions.start_action(session, inst, "revertResize", request_id, now)
        actions.start_event(session, act, "revert_resize", now, mig.dest_host)

    tasks.start(ctx, begin)
    return complete_revert(ctx, inst_uuid, mig_uuid, request_id, name)


def complete_revert(
    ctx: Context, inst_uuid: str, mig_uuid: str, request_id: str, name: str
) -> dict[str, Any]:
    """The revert's play on both hosts and its books, for a claimed instance whose migration
    is ``reverting`` (also how reconcile finishes the revert of a command that died)."""
    undo, error = _undo_on_hosts(ctx, inst_uuid, mig_uuid)
    if error is not None:
        fail_move(
            ctx,
            inst_uuid,
            mig_uuid,
            request_id,
            "revert_resize",
            error,
            undo,
            undo=False,
            vm_state=VmState.ERROR,
        )
        raise OperationFailed(action="revert resize", name=name, reason=error)
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        source = hosts.get_host(session, mig.source_host or "")
        act = actions.current_action(session, inst_uuid, request_id)
        actions.finish_event(session, act, "revert_resize", now)
        actions.finish_event(
            session, act, "finish_revert_resize", now, host=source.name, started=now
        )
        actions.finish_action(act, now)
        undo_claims(session, inst, mig)
        old_flavor = session.get(Flavor, mig.old_flavor_id) if mig.old_flavor_id else None
        if old_flavor is not None and old_flavor.id != inst.flavor_id:
            set_flavor(inst, old_flavor)
        tasks.finish(session, ctx, inst)
        inst.host = source
        inst.availability_zone = source.availability_zone
        inst.vm_state = mig.old_vm_state or VmState.ACTIVE
        inst.power_state = power_of(undo, "spawn", source.name, inst.domain_name) or (
            PowerState.RUNNING if inst.vm_state == VmState.ACTIVE else PowerState.SHUTDOWN
        )
        mig.status = "reverted"
        return instance_view(session, inst, detail=True)


def confirm_due_resizes(ctx: Context, now: datetime) -> list[str]:
    """Confirm the resizes left in VERIFY_RESIZE longer than ``resize_confirm_window_s``.

    Nova's _poll_unconfirmed_resizes, for the reconcile loop: 0 turns it off. Returns the
    names of the instances confirmed; one failing confirm does not stop the others.
    """
    window = ctx.settings.resize_confirm_window_s
    if window <= 0:
        return []
    due: list[tuple[str, str, str]] = []
    with ctx.db.unit_of_work() as session:
        rows = session.execute(
            select(Migration, Instance)
            .join(Instance, Instance.uuid == Migration.instance_uuid)
            .where(
                Migration.status == "finished",
                Instance.deleted == 0,
                Instance.vm_state == VmState.RESIZED,
                Instance.task_state.is_(None),
            )
            .order_by(Migration.id)
        ).all()
        for mig, inst in rows:
            finished = mig.updated_at or mig.created_at
            if finished is not None and now - finished >= timedelta(seconds=window):
                due.append((inst.uuid, mig.uuid, inst.name))
    confirmed = []
    for inst_uuid, mig_uuid, name in due:
        try:
            with leases.command_lease(ctx, f"resize-confirm {name} (automatic)"):
                _confirm(ctx, inst_uuid, mig_uuid)
        except (OperationFailed, InvalidState) as exc:
            ctx.progress.info(f"{name}: automatic confirm failed: {exc.message}")
            continue
        confirmed.append(name)
    return confirmed


__all__ = [
    "confirm_due_resizes",
    "confirm_resize",
    "migrate",
    "resize",
    "revert_resize",
]
