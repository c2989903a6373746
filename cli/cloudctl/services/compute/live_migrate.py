"""Live migration with Nova's checks and rollback (conductor's LiveMigrationTask, the compute
manager's pre_live_migration / live_migration / post_live_migration / _rollback_live_migration).

queued -> preparing (schedule and claim the destination, the pre-check play: hypervisor type and
version, the source's CPU compared on the destination, the shared storage probe that decides a
block migration) -> running (the source's cloudctl_migrate runs libvirt's peer-to-peer migration
in a worker thread while this one reads its job statistics every few seconds with a small play on
the source, writing each sample to the migration row and the console; the final numbers come with
the migration's result) -> completed, with the
source's allocation dropped; or, on any failure, a rollback: the destination's domain (and copied
disks) removed, the guest left running on the source, the claims undone, the instance ACTIVE and
the migration in ``error`` with a fault.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from sqlalchemy.orm import Session

from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import InvalidInput, InvalidState, NoValidHost, OperationFailed
from cloudctl.executor.base import HostTarget, RunRequest, RunResult
from cloudctl.services import actions, hosts, leases
from cloudctl.services.compute import tasks
from cloudctl.services.compute.common import (
    by_uuid,
    destroy_on,
    failure_reason,
    get_instance,
    launch_worker,
)
from cloudctl.services.compute.moves import (
    LIVE,
    claim_move,
    domain_xml_on,
    drop_source,
    fail_move,
    guest_files,
    live_migration_problems,
    migration_by_uuid,
    migration_view,
    new_migration,
    peer_uri,
    pick_destination,
    record_progress,
    resources_of,
    run_checks,
    run_play,
    with_claim_retries,
)
from cloudctl.services.context import Context

log = logging.getLogger(__name__)

BLOCK_MODES = ("auto", "yes", "no")
#: The job statistics a progress sample carries (the migration row's progress columns).
STAT_KEYS = ("memory_total", "memory_processed", "disk_total", "disk_processed")
#: The shortest pause between two progress samples, whatever the settings say.
MIN_PROGRESS_INTERVAL_S = 0.1


def live_migrate(
    ctx: Context,
    name: str,
    *,
    host: str | None = None,
    block_migrate: str = "auto",
    wait: bool = True,
) -> dict[str, Any]:
    """Live-migrate a running instance; returns the migration (its final state with ``wait``)."""
    if block_migrate not in BLOCK_MODES:
        raise InvalidInput(reason=f"--block-migrate must be one of {', '.join(BLOCK_MODES)}")
    request_id = actions.new_request_id()
    hosts.refresh_stale(ctx)
    with leases.command_lease(ctx, f"live-migrate {name}", request_id=request_id) as lease:

        def begin(session: Session) -> str:
            now = ctx.clock()
            inst = get_instance(session, ctx.settings.project_id, name)
            [inst] = tasks.claim(
                session, ctx, [inst.uuid], "live-migrate", TaskState.MIGRATING, (VmState.ACTIVE,)
            )
            if inst.host is None or inst.power_state != PowerState.RUNNING:
                raise InvalidState(
                    action="live-migrate", name=inst.name, vm_state=inst.vm_state, task_state=None
                )
            if not hosts.is_up(inst.host, now, ctx.settings.service_down_time_s):
                raise InvalidInput(
                    reason=f"the source host {inst.host.name} is down: live migration needs it "
                    "(evacuate instead)"
                )
            if host is not None:
                hosts.get_host(session, host)
            mig = new_migration(session, inst, LIVE, "queued", inst.host.name)
            act = actions.start_action(session, inst, "live-migration", request_id, now)
            actions.start_event(session, act, "schedule", now)
            return mig.uuid

        mig_uuid = tasks.start(ctx, begin)
        lease.hold("migrations", [mig_uuid])
        if not wait:
            args = ["_live_migrate", request_id, mig_uuid, "--block-migrate", block_migrate]
            args += ["--lease", lease.uuid]
            launch_worker(ctx.settings, [*args, *(["--host", host] if host else [])])
            lease.handed_off = True
        else:
            run_live_migration(ctx, request_id, mig_uuid, host=host, block_migrate=block_migrate)
    with ctx.db.unit_of_work() as session:
        return migration_view(session, migration_by_uuid(session, mig_uuid))


def live_migrate_in_worker(
    ctx: Context,
    request_id: str,
    mig_uuid: str,
    lease_uuid: str | None,
    *,
    host: str | None = None,
    block_migrate: str = "auto",
) -> None:
    """The ``live-migrate --no-wait`` worker: carry on the parent's lease and migrate."""
    with (
        leases.carry_on(ctx, lease_uuid, "live-migrate (worker)")
        if lease_uuid
        else leases.command_lease(ctx, "live-migrate (worker)", request_id=request_id)
    ):
        run_live_migration(ctx, request_id, mig_uuid, host=host, block_migrate=block_migrate)


def run_live_migration(
    ctx: Context,
    request_id: str,
    mig_uuid: str,
    *,
    host: str | None = None,
    block_migrate: str = "auto",
) -> None:
    """The migration proper (inline, or in the detached worker of ``--no-wait``)."""
    with ctx.db.unit_of_work() as session:
        inst_uuid = migration_by_uuid(session, mig_uuid).instance_uuid
    block = _prepare(ctx, request_id, inst_uuid, mig_uuid, host, block_migrate)
    error, result = _start(ctx, request_id, inst_uuid, mig_uuid, block)
    if error is not None:
        rollback(ctx, request_id, inst_uuid, mig_uuid, error, result)
        with ctx.db.unit_of_work() as session:
            name = by_uuid(session, inst_uuid).name
        raise OperationFailed(action="live migration", name=name, reason=error)
    _post(ctx, request_id, inst_uuid, mig_uuid)


def _prepare(
    ctx: Context,
    request_id: str,
    inst_uuid: str,
    mig_uuid: str,
    host: str | None,
    block_migrate: str,
) -> bool:
    """Schedule and claim, then the pre-checks; False/True = block migration or not."""

    def schedule() -> tuple[str, str]:
        with ctx.db.unit_of_work() as session:
            inst = by_uuid(session, inst_uuid)
            mig = migration_by_uuid(session, mig_uuid)
            source = inst.host
            assert source is not None
            mig.status = "preparing"
            if host == source.name:
                raise InvalidInput(reason=f"{inst.name} is on {host} already")
            dest, generation = pick_destination(
                ctx, session, inst, force_host=host, ignore_hosts=frozenset({source.name})
            )
            claim_move(session, inst, mig, source, dest, resources_of(inst), generation)
            mig.dest_host = dest.name
            act = actions.current_action(session, inst_uuid, request_id)
            actions.finish_event(session, act, "schedule", ctx.clock(), host=dest.name)
            actions.start_event(session, act, "check_can_live_migrate", ctx.clock(), dest.name)
            ctx.progress.info(f"{inst.name}: {source.name} -> {dest.name} (live)")
            return source.name, dest.name

    try:
        source_name, dest_name = with_claim_retries(ctx, schedule)
    except (NoValidHost, InvalidInput) as exc:
        fail_move(
            ctx,
            inst_uuid,
            mig_uuid,
            request_id,
            "schedule",
            exc.message,
            None,
            status="failed",
            undo=False,
            fault=False,
        )
        raise
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        source = hosts.get_host(session, source_name)
        dest = hosts.get_host(session, dest_name)
        down = ctx.settings.service_down_time_s
        source_up, dest_up = hosts.is_up(source, now, down), hosts.is_up(dest, now, down)
        missing = [h.name for h in (source, dest) if not h.address]
    report = run_checks(ctx, mig_uuid, source, dest)
    problems, block = live_migration_problems(
        source=source_name,
        dest=dest_name,
        source_up=source_up,
        dest_up=dest_up,
        report=report,
        block_migrate=block_migrate,
    )
    problems += [f"host {h} has no address for migration traffic" for h in missing]
    if problems:
        reason = "; ".join(problems)
        fail_move(
            ctx,
            inst_uuid,
            mig_uuid,
            request_id,
            "check_can_live_migrate",
            reason,
            None,
            status="failed",
            fault=False,
        )
        with ctx.db.unit_of_work() as session:
            name = by_uuid(session, inst_uuid).name
        raise OperationFailed(action="live migration", name=name, reason=reason)
    with ctx.db.unit_of_work() as session:
        mig = migration_by_uuid(session, mig_uuid)
        mig.shared_storage = report.shared_storage
        mig.block_migration = block
        act = actions.current_action(session, inst_uuid, request_id)
        note = "block migration" if block else "shared instances path"
        actions.finish_event(session, act, "check_can_live_migrate", ctx.clock(), details=note)
    return block


def _start(
    ctx: Context, request_id: str, inst_uuid: str, mig_uuid: str, block: bool
) -> tuple[str | None, RunResult | None]:
    """pre_live_migration on the destination, then the migration from the source."""
    s = ctx.settings
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        source = hosts.get_host(session, mig.source_host or "")
        dest = hosts.get_host(session, mig.dest_host or "")
        mig.status = "running"
        act = actions.current_action(session, inst_uuid, request_id)
        actions.start_event(session, act, "live_migration", now, source.name)
        files = guest_files(session, inst, dest)
        disks = ["vda"]
        letters = iter("bcdefgh")
        if inst.ephemeral_gb:
            disks.append(f"vd{next(letters)}")
        if inst.swap_mb:
            disks.append(f"vd{next(letters)}")
        incoming: dict[str, Any] = {}
        if block:
            incoming = {"base": files["base"], "disks": files["disks"], "drives": files["drives"]}
        guest = {
            "name": inst.domain_name,
            "dest_uri": peer_uri(ctx, dest),
            "migrate_uri": f"tcp://{dest.address}",
            "listen_address": dest.address,
            "dest_xml": domain_xml_on(session, inst, dest),
            "block_migration": block,
            "shared_storage": bool(mig.shared_storage),
            "disks": disks if block else [],
            "bandwidth": s.live_migration_bandwidth_mib,
            "timeout": s.live_migration_timeout_s,
        }
        targets = (hosts.host_target(source), hosts.host_target(dest))
        source_name, name = source.name, inst.name
    result, error = _run_watched(
        ctx,
        mig_uuid,
        RunRequest(
            playbook="migrate_live.yml",
            hosts=targets,
            extravars={
                "cloudctl_incoming": {targets[1].name: incoming},
                "cloudctl_outgoing": {source_name: [guest]},
            },
            description=f"live-migrate {name}",
        ),
        targets[0],
        str(guest["name"]),
        name,
    )
    done = _item(result.result("live migrate", source_name) or {}) if result else {}
    record_progress(ctx, mig_uuid, done)
    return error, result


def _run_watched(
    ctx: Context,
    mig_uuid: str,
    request: RunRequest,
    source: HostTarget,
    domain: str,
    name: str,
) -> tuple[RunResult | None, str | None]:
    """``run_play(request)`` in a worker thread while this thread samples the progress.

    Every ``live_migration_progress_interval_s`` a migrate_progress.yml play reads the job on the
    source; an active job's numbers go to the migration row (one short transaction) and to the
    console. The worker only runs the play. A sample that fails is logged and skipped: it never
    fails the migration, and the next one starts only after a full interval. Ctrl-C aborts the
    job on the source, waits for the play to end, then goes on as ``KeyboardInterrupt``.
    """
    interval = max(MIN_PROGRESS_INTERVAL_S, ctx.settings.live_migration_progress_interval_s)
    executor = ctx.executor  # built here, not lazily by two threads at once
    poll = RunRequest(
        playbook="migrate_progress.yml",
        hosts=(source,),
        extravars={"cloudctl_progress": {source.name: [{"name": domain}]}},
        description=f"live-migration progress of {name}",
    )
    shown = ""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-migrate") as pool:
        future = pool.submit(run_play, ctx, request)
        try:
            while True:
                try:
                    return future.result(timeout=interval)
                except TimeoutError:
                    pass
                try:
                    # No run events: a poll's task lines every few seconds would drown the console.
                    sample = _progress_sample(executor.run(poll), source.name)
                    if sample:
                        record_progress(ctx, mig_uuid, sample)
                        line = _progress_line(name, sample)
                        if line != shown:
                            ctx.progress.info(line)
                            shown = line
                except Exception:
                    # Progress is a nicety: whatever breaks here (the poll, the database) must
                    # not leave the running migration without its result, rollback or ledger.
                    log.info("live-migration progress of %s not read", name, exc_info=True)
        except KeyboardInterrupt:
            # Only the main thread's plays see Ctrl-C: abort the libvirt job, as stopping the
            # play did when it ran here, rather than wait for the whole migration.
            abort = dict(poll.extravars, cloudctl_job_state="aborted")
            with suppress(Exception):
                executor.run(dataclasses.replace(poll, extravars=abort))
            future.result()
            raise


def _progress_sample(result: RunResult, host: str) -> dict[str, int]:
    """The job numbers of an active migration in a migrate_progress.yml result (else empty)."""
    if not result.ok:
        log.info("live-migration progress not read: %s", failure_reason(result))
        return {}
    item = _item(result.result("migration progress", host) or {})
    if not item.get("active"):
        return {}
    return {key: int(item[key]) for key in STAT_KEYS if item.get(key) is not None}


def _progress_line(name: str, sample: Mapping[str, int]) -> str:
    """A console line for a progress sample: ``live-migrate web: 45% of 128 MiB``."""
    parts = []
    for key, label in (("memory", ""), ("disk", "disk ")):
        total, done = sample.get(f"{key}_total"), sample.get(f"{key}_processed")
        if total and done is not None:
            percent = min(100, done * 100 // total)
            parts.append(f"{label}{percent}% of {total // 2**20} MiB")
    return f"live-migrate {name}: {', '.join(parts) or 'starting'}"


def _item(data: Mapping[str, Any]) -> dict[str, Any]:
    items = data.get("results") or []
    first = items[0] if items and isinstance(items[0], Mapping) else {}
    return dict(first)


def _post(ctx: Context, request_id: str, inst_uuid: str, mig_uuid: str) -> None:
    """post_live_migration: the instance is the destination's; the source's leftovers go."""
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        dest = hosts.get_host(session, mig.dest_host or "")
        source_name = mig.source_host or ""
        act = actions.current_action(session, inst_uuid, request_id)
        actions.finish_event(session, act, "live_migration", now)
        actions.finish_event(session, act, "post_live_migration", now, host=dest.name, started=now)
        actions.finish_action(act, now)
        tasks.finish(session, ctx, inst)
        drop_source(session, mig)
        inst.host = dest
        inst.availability_zone = dest.availability_zone
        inst.power_state = PowerState.RUNNING
        mig.status = "completed"
        if mig.memory_total is not None and mig.memory_processed is not None:
            mig.memory_processed = max(mig.memory_processed, mig.memory_total)
        shared = bool(mig.shared_storage)
        dest_name = dest.name
    hosts.touch_hosts(ctx, {source_name, dest_name})
    if not shared:
        _clean_source(ctx, inst_uuid, source_name)


def _clean_source(ctx: Context, inst_uuid: str, source_name: str) -> None:
    """The block-migrated guest's files on the source (its domain left with the migration)."""
    error = destroy_on(
        ctx,
        source_name,
        inst_uuid,
        keep_files=False,
        description="clean the source of a live migration",
    )
    if error is not None:
        ctx.progress.info(f"leftovers on {source_name} not removed: {error}")


def rollback(
    ctx: Context,
    request_id: str,
    inst_uuid: str,
    mig_uuid: str,
    reason: str,
    result: RunResult | None,
) -> None:
    """_rollback_live_migration: the guest stays on the source, the destination is cleaned."""
    with ctx.db.unit_of_work() as session:
        inst = by_uuid(session, inst_uuid)
        mig = migration_by_uuid(session, mig_uuid)
        source = hosts.get_host(session, mig.source_host or "")
        dest = hosts.get_host(session, mig.dest_host or "")
        domain = {"name": inst.domain_name}
        extravars = {
            "cloudctl_dest": {
                dest.name: {
                    "domains": [{**domain, "state": "absent"}],
                    # Only a destination known not to share the source's instances path has
                    # copies of its own; unknown (the checks never ran) is treated as shared.
                    "files": [{"uuid": inst.uuid}] if mig.shared_storage is False else [],
                }
            },
            "cloudctl_source": {
                source.name: {
                    "domains": [
                        {**domain, "xml": domain_xml_on(session, inst, source), "state": "running"}
                    ]
                }
            },
        }
        targets = (hosts.host_target(dest), hosts.host_target(source))
        name = inst.name
    ctx.progress.info(f"{name}: live migration failed, rolling back: {reason}")
    _undo, undo_error = run_play(
        ctx,
        RunRequest(
            playbook="migrate_revert.yml",
            hosts=targets,
            extravars=extravars,
            description=f"roll back the live migration of {name}",
        ),
    )
    details = reason if undo_error is None else f"{reason}; rollback failed: {undo_error}"
    fail_move(
        ctx,
        inst_uuid,
        mig_uuid,
        request_id,
        "live_migration",
        details,
        result,
        vm_state=VmState.ACTIVE if undo_error is None else VmState.ERROR,
    )
    with ctx.db.unit_of_work() as session:
        act = actions.current_action(session, inst_uuid, request_id)
        now = ctx.clock()
        actions.finish_event(
            session,
            act,
            "rollback_live_migration",
            now,
            actions.SUCCESS if undo_error is None else actions.ERROR,
            undo_error,
            targets[1].name,
            started=now,
        )


__all__ = ["live_migrate", "live_migrate_in_worker", "run_live_migration"]
