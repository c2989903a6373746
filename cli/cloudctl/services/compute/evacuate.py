"""Evacuate and host evacuate/drain (Nova's rebuild on another host; host-evacuate-live).

Evacuation is for instances of a host that is down: refused while the host answers. The guest
is rebuilt on a scheduled (or named) host with the spawn play: a disk on a shared instances path
is kept (the disk module finds it and leaves it), else a fresh one is made from the image. The
destination is claimed for the instance and the source's allocation released; what the dead
host still holds (its domain definition, files on local storage) is recorded on the migration
row (status ``done``) for a later reconcile to remove, as Nova's _destroy_evacuated_instances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import Instance
from cloudctl.domain.states import TaskState, VmState
from cloudctl.errors import CloudctlError, InvalidInput, InvalidState, OperationFailed
from cloudctl.executor.base import RunRequest
from cloudctl.services import actions, hosts, leases
from cloudctl.services.compute import tasks
from cloudctl.services.compute.common import by_uuid, check_state, destroy_on, get_instance
from cloudctl.services.compute.live_migrate import live_migrate
from cloudctl.services.compute.migrate import confirm_resize, migrate
from cloudctl.services.compute.moves import (
    EVACUATION,
    domain_xml_on,
    fail_move,
    guest_files,
    migration_by_uuid,
    new_migration,
    pick_destination,
    power_of,
    resources_of,
    run_play,
    with_claim_retries,
)
from cloudctl.services.compute.views import instance_view
from cloudctl.services.context import Context

#: Called after each guest of a host evacuate / drain: (done, total, guest outcome).
OnGuest = Callable[[int, int, Mapping[str, Any]], None]


def source_is_down(ctx: Context, host_name: str) -> bool:
    """A probe, whatever the heartbeat says: a host whose libvirtd answers is up.

    Nova trusts its servicegroup here, but a stale heartbeat only means no cloudctl command or
    agent reached the host lately; rebuilding the guests of a host that still runs them would
    leave two copies writing one disk on shared storage.
    """
    with ctx.db.unit_of_work() as session:
        target = hosts.host_target(hosts.get_host(session, host_name))
    try:
        result = ctx.executor.run(
            RunRequest(playbook="discover.yml", hosts=(target,), description="is it down?"),
            ctx.progress.run_event,
        )
    except CloudctlError:
        return True
    if result.ok:
        hosts.apply_facts(ctx, result)
    return not result.ok


def _refuse_up(host: str) -> InvalidInput:
    return InvalidInput(
        reason=f"host {host} is up: evacuate is only for instances of a host that is down "
        "(use migrate or live-migrate)"
    )


def evacuate(
    ctx: Context, name: str, *, host: str | None = None, checked_down: bool = False
) -> dict[str, Any]:
    """Rebuild an instance of a down host on another host."""
    with ctx.db.unit_of_work() as session:
        inst = get_instance(session, ctx.settings.project_id, name)
        check_state(ctx, inst, "evacuate", (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR))
        if inst.host is None:
            raise InvalidState(
                action="evacuate", name=inst.name, vm_state=inst.vm_state, task_state=None
            )
        source_name = inst.host.name
    if host == source_name:
        raise InvalidInput(reason=f"{name} is on {host}: evacuate needs another host")
    if not checked_down and not source_is_down(ctx, source_name):
        raise _refuse_up(source_name)
    hosts.refresh_stale(ctx, exclude={source_name})
    request_id = actions.new_request_id()
    with leases.command_lease(ctx, f"evacuate {name}", request_id=request_id) as lease:
        return _evacuate(ctx, name, host, source_name, request_id, lease)


def _evacuate(
    ctx: Context,
    name: str,
    host: str | None,
    source_name: str,
    request_id: str,
    lease: leases.Lease,
) -> dict[str, Any]:
    def schedule(session: Session) -> tuple[str, str, str]:
        now = ctx.clock()
        inst = get_instance(session, ctx.settings.project_id, name)
        [inst] = tasks.claim(
            session,
            ctx,
            [inst.uuid],
            "evacuate",
            TaskState.REBUILDING,
            (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR),
            now=now,
        )
        source = inst.host
        if source is None or source.name != source_name:
            raise InvalidState(
                f"cannot evacuate instance {name}: it moved off {source_name} meanwhile",
                action="evacuate",
                name=name,
                vm_state=inst.vm_state,
                task_state=None,
            )
        act = actions.start_action(session, inst, "evacuate", request_id, now)
        actions.start_event(session, act, "schedule", now)
        dest, generation = pick_destination(
            ctx, session, inst, force_host=host, ignore_hosts=frozenset({source.name})
        )
        mig = new_migration(session, inst, EVACUATION, "accepted", source.name, dest.name)
        ledger.claim(session, dest, inst.uuid, resources_of(inst), generation)
        ledger.release(session, inst.uuid, source.id)
        actions.finish_event(session, act, "schedule", ctx.clock(), host=dest.name)
        actions.start_event(session, act, "rebuild", ctx.clock(), dest.name)
        ctx.progress.info(f"{inst.name}: evacuating {source.name} -> {dest.name}")
        return inst.uuid, mig.uuid, dest.name

    inst_uuid, mig_uuid, dest_name = with_claim_retries(ctx, lambda: tasks.start(ctx, schedule))
    lease.hold("migrations", [mig_uuid])
    with ctx.db.unit_of_work() as session:
        inst = by_uuid(session, inst_uuid)
        dest = hosts.get_host(session, dest_name)
        files = guest_files(session, inst, dest)
        running = inst.vm_state != VmState.STOPPED
        domain = {
            "name": inst.domain_name,
            "xml": domain_xml_on(session, inst, dest),
            "state": "running" if running else "present",
        }
        target = hosts.host_target(dest)
        migration_by_uuid(session, mig_uuid).status = "pre-migrating"
    result, error = run_play(
        ctx,
        RunRequest(
            playbook="spawn.yml",
            hosts=(target,),
            extravars={
                "cloudctl_base_files": {dest_name: files["base"]},
                "cloudctl_disks": {dest_name: files["disks"]},
                "cloudctl_config_drives": {dest_name: files["drives"]},
                "cloudctl_domains": {dest_name: [domain]},
            },
            description=f"evacuate {name} to {dest_name}",
        ),
    )
    disk = (result.result("disks", dest_name) if result else None) or {}
    kept = not any((item.get("actions") or []) for item in disk.get("results") or [])
    if error is not None:
        _clean_failed(ctx, inst_uuid, dest_name, kept)
        with ctx.db.unit_of_work() as session:
            inst = by_uuid(session, inst_uuid)
            ledger.release(session, inst_uuid, hosts.get_host(session, dest_name).id)
        fail_move(
            ctx,
            inst_uuid,
            mig_uuid,
            request_id,
            "rebuild",
            error,
            result,
            status="failed",
            undo=False,
            vm_state=VmState.ERROR,
        )
        raise OperationFailed(action="evacuate", name=name, reason=error)
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        dest = hosts.get_host(session, dest_name)
        note = (
            ("disk kept (shared instances path)" if kept else "fresh disk from the image")
            + f"; left on {mig.source_host}: the domain definition"
            + ("" if kept else " and the instance's files")
            + " (a later reconcile removes them)"
        )
        act = actions.current_action(session, inst_uuid, request_id)
        actions.finish_event(session, act, "rebuild", now, details=note)
        actions.finish_action(act, now)
        mig.status = "done"
        mig.shared_storage = kept
        mig.error = note
        tasks.finish(session, ctx, inst)
        inst.host = dest
        inst.availability_zone = dest.availability_zone
        inst.vm_state = VmState.ACTIVE if running else VmState.STOPPED
        inst.power_state = power_of(result, "spawn", dest_name, inst.domain_name) or 0
        view = instance_view(session, inst, detail=True)
    hosts.touch_hosts(ctx, {dest_name})
    return view


def _clean_failed(ctx: Context, inst_uuid: str, dest_name: str, kept: bool) -> None:
    # A disk that was there before the evacuation (shared storage) is the guest's only copy.
    destroy_on(ctx, dest_name, inst_uuid, keep_files=kept, description="clean a failed evacuation")


def _guests_of(ctx: Context, host_name: str) -> list[tuple[str, str]]:
    with ctx.db.unit_of_work() as session:
        host = hosts.get_host(session, host_name)
        rows = session.scalars(
            select(Instance)
            .where(Instance.host_id == host.id, Instance.deleted == 0)
            .order_by(Instance.name)
        )
        return [(i.name, i.vm_state) for i in rows]


def host_evacuate(
    ctx: Context, host_name: str, *, on_guest: OnGuest | None = None
) -> dict[str, Any]:
    """Evacuate every instance of a down host; a summary of what moved and what failed."""
    if not source_is_down(ctx, host_name):
        raise _refuse_up(host_name)
    guests = _guests_of(ctx, host_name)
    outcomes = []
    for index, (name, _state) in enumerate(guests, 1):
        try:
            view = evacuate(ctx, name, checked_down=True)
            outcome = {"name": name, "result": "moved", "host": view["host"], "reason": None}
        except CloudctlError as exc:
            outcome = {"name": name, "result": "failed", "host": host_name, "reason": exc.message}
        outcomes.append(outcome)
        if on_guest is not None:
            on_guest(index, len(guests), outcome)
    return _summary(host_name, outcomes)


def drain(ctx: Context, host_name: str, *, on_guest: OnGuest | None = None) -> dict[str, Any]:
    """Disable a host (reason "draining") and move every guest off it, one by one.

    Running guests are live-migrated (block migration when the storage is not shared); stopped
    ones are cold-migrated and confirmed. The scheduler picks each destination, so server group
    policies hold.
    """
    hosts.set_enabled(ctx, host_name, False, "draining")
    guests = _guests_of(ctx, host_name)
    outcomes = []
    for index, (name, state) in enumerate(guests, 1):
        try:
            if state == VmState.ACTIVE:
                mig = live_migrate(ctx, name, block_migrate="auto")
                dest = mig["dest_host"]
            elif state == VmState.STOPPED:
                dest = migrate(ctx, name)["host"]
                confirm_resize(ctx, name)
            else:
                raise InvalidInput(reason=f"cannot move an instance in vm_state {state}")
            outcome = {"name": name, "result": "moved", "host": dest, "reason": None}
        except CloudctlError as exc:
            outcome = {"name": name, "result": "failed", "host": host_name, "reason": exc.message}
        outcomes.append(outcome)
        if on_guest is not None:
            on_guest(index, len(guests), outcome)
    return _summary(host_name, outcomes)


def _summary(host: str, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "host": host,
        "moved": sum(1 for o in outcomes if o["result"] == "moved"),
        "failed": sum(1 for o in outcomes if o["result"] == "failed"),
        "guests": outcomes,
    }
