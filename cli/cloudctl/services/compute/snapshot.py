"""Snapshots of instances, and images made from them.

A snapshot is a libvirt snapshot on the instance's host: internal (a qcow2 internal snapshot,
with the memory state when the guest runs) or, with ``disk_only``, external (a new overlay
``disk.snap-<name>`` next to the root disk takes the writes, the file below it keeps the
snapshot's state). An instance's snapshots are all of one kind: mixing them would let the block
commit that deletes an external snapshot drop internal ones (the host module refuses it too).

Every operation is an instance action with one event, runs one play (``snapshot.yml`` or
``snapshot_export.yml``) under the instance's lock, with a task_state set for its duration
so that other actions refuse to run meanwhile, and two short transactions around the play.
A failure records a fault and an Error event and clears the task_state; the instance goes to
ERROR only when the host reports a change before the failure (a revert half done). Rows in
``snapshots`` go ``creating`` -> ``available`` (or ``error``) -> ``deleting`` -> ``deleted``;
a create that changed nothing on the host (e.g. the guest agent did not answer) leaves no row.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl.db.models import Image, Instance, Snapshot
from cloudctl.domain import validation
from cloudctl.domain.states import VM_STATE_OF_DOMAIN, PowerState, TaskState, VmState
from cloudctl.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
)
from cloudctl.executor.base import HostTarget, RunRequest, RunResult
from cloudctl.services import actions, hosts, images, leases
from cloudctl.services.compute import tasks
from cloudctl.services.compute.common import (
    by_uuid,
    check_state,
    fail_action,
    failure_reason,
    get_instance,
    run_error,
)
from cloudctl.services.compute.views import instance_view
from cloudctl.services.context import Context

INTERNAL = "internal"
EXTERNAL = "external"
#: vm_states a snapshot may be taken in (Nova's snapshot accepts the same, bar SUSPENDED).
SNAPSHOT_VM_STATES = (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED)
#: vm_states in which snapshots may be reverted to, deleted or exported.
CHANGE_VM_STATES = (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.ERROR)
#: The task the host module's entries run under (see playbooks/snapshot.yml).
TASK = "snapshot"
EXPORT_TASK = "export"
MAX_DESCRIPTION = 1024


@dataclass(frozen=True)
class _Run:
    """One instance's share of a play: where it runs and what its entries are."""

    inst_uuid: str
    name: str
    host: HostTarget
    domain: str
    request_id: str
    event: str


def snapshot_view(row: Snapshot) -> dict[str, Any]:
    """A snapshot as the CLI shows it (JSON-friendly)."""
    return {
        "name": row.name,
        "id": row.uuid,
        "instance": row.instance_uuid,
        "kind": row.kind,
        "status": row.status,
        "state": row.state,
        "size": row.size_bytes,
        "host": row.host,
        "file": row.file,
        "quiesced": row.quiesced,
        "description": row.description,
        "created_at": row.created_at.isoformat(),
        "deleted_at": row.deleted_at.isoformat() if row.deleted_at else None,
        "error": row.error,
    }


def _description(text: str | None) -> str | None:
    if text is None:
        return None
    if "\n" in text or "\x00" in text or len(text) > MAX_DESCRIPTION:
        raise InvalidInput(
            reason=f"a snapshot description is one line of at most {MAX_DESCRIPTION} characters"
        )
    return text


def _live_rows(session: Session, inst_uuid: str) -> list[Snapshot]:
    return list(
        session.scalars(
            select(Snapshot)
            .where(Snapshot.instance_uuid == inst_uuid, Snapshot.deleted == 0)
            .order_by(Snapshot.id)
        )
    )


def _row(session: Session, inst: Instance, snap: str) -> Snapshot:
    for row in _live_rows(session, inst.uuid):
        if row.name == snap:
            return row
    raise NotFound(kind="snapshot", name=f"{inst.name}/{snap}")


def _placed(inst: Instance, action: str) -> str:
    if inst.host is None:
        raise InvalidState(
            action=action, name=inst.name, vm_state=inst.vm_state, task_state=inst.task_state
        )
    return inst.host.name


def _start(
    session: Session,
    ctx: Context,
    inst_uuid: str,
    check: str,
    vm_states: Sequence[str],
    action: str,
    event: str,
    task_state: str,
) -> tuple[Instance, _Run]:
    """Claim the instance (``task_state``, checked as ``check`` from ``vm_states``) and open the
    action and its event: the first thing of the first transaction, so that what the caller
    reads next is the instance's state under its claim."""
    assert ctx.lease is not None
    request_id = ctx.lease.request_id
    now = ctx.clock()
    [inst] = tasks.claim(session, ctx, [inst_uuid], check, task_state, vm_states, now=now)
    _placed(inst, check)
    host = inst.host
    assert host is not None
    act = actions.start_action(session, inst, action, request_id, now)
    actions.start_event(session, act, event, now, host.name)
    run = _Run(inst.uuid, inst.name, hosts.host_target(host), inst.domain_name, request_id, event)
    return inst, run


def _play(
    ctx: Context, run: _Run, playbook: str, extravars: Mapping[str, Any], what: str
) -> RunResult:
    """Run the play; on an exception the action fails (instance state kept) and it re-raises."""
    try:
        return ctx.executor.run(
            RunRequest(
                playbook=playbook,
                hosts=(run.host,),
                extravars=extravars,
                description=f"{what} {run.name}",
            ),
            ctx.progress.run_event,
        )
    except BaseException as exc:  # never leave a task_state behind, not even on Ctrl-C
        fail_action(
            ctx, [run.inst_uuid], run.request_id, run.event, run_error(exc), None, to_error=False
        )
        raise


def _entries(result: RunResult, task: str, host: str) -> list[Mapping[str, Any]]:
    data = result.result(task, host) or {}
    return [r for r in data.get("results") or [] if isinstance(r, Mapping)]


def _outcome(
    result: RunResult, task: str, run: _Run, snap: str, *, whole_play: bool = False
) -> tuple[Mapping[str, Any] | None, str | None]:
    """(the module's entry for ``snap``, why it failed or None).

    The module's entry decides (another entry of the same call may have failed), unless
    ``whole_play``: then a later task of the play failing fails it too.
    """
    entry = next(
        (e for e in _entries(result, task, run.host.name) if e.get("name") == snap),
        None,
    )
    if entry is not None and entry.get("failed"):
        return entry, str(entry.get("msg") or "failed").splitlines()[0][:400]
    if entry is None or (whole_play and not result.ok):
        return entry, failure_reason(result)
    return entry, None


def _created(entry: Mapping[str, Any]) -> datetime | None:
    stamp = entry.get("created")
    return datetime.fromtimestamp(int(stamp), UTC) if isinstance(stamp, int) else None


def _apply_domain_state(inst: Instance, entry: Mapping[str, Any] | None) -> None:
    state = str((entry or {}).get("domain_state") or "")
    if state and state != "absent":
        inst.power_state = PowerState.from_libvirt(state)
        inst.vm_state = VM_STATE_OF_DOMAIN.get(state, inst.vm_state)


def _finish(session: Session, ctx: Context, inst: Instance, run: _Run) -> None:
    now = ctx.clock()
    tasks.finish(session, ctx, inst)
    act = actions.current_action(session, inst.uuid, run.request_id)
    actions.finish_event(session, act, run.event, now, host=run.host.name)
    actions.finish_action(act, now)


def _fail(
    ctx: Context,
    run: _Run,
    reason: str,
    result: RunResult,
    entry: Mapping[str, Any] | None,
    action: str,
) -> OperationFailed:
    """Record the failure; ERROR only if the host changed something before it failed."""
    fail_action(
        ctx,
        [run.inst_uuid],
        run.request_id,
        run.event,
        reason,
        result,
        to_error=bool(entry and entry.get("changed")),
    )
    return OperationFailed(action=action, name=run.name, reason=reason)


# --- create -------------------------------------------------------------------------------------


def create_snapshot(
    ctx: Context,
    server: str,
    snap: str,
    *,
    disk_only: bool = False,
    quiesce: bool = False,
    description: str | None = None,
) -> dict[str, Any]:
    """Take a snapshot of an instance: internal by default, external with ``disk_only``."""
    validation.object_name("snapshot", snap)
    description = _description(description)
    kind = EXTERNAL if disk_only else INTERNAL
    with ctx.db.unit_of_work() as session:
        inst = get_instance(session, ctx.settings.project_id, server)
        check_state(ctx, inst, "snapshot", SNAPSHOT_VM_STATES)
        inst_uuid = inst.uuid
    with leases.command_lease(ctx, f"snapshot create {server} {snap}"):

        def begin(session: Session) -> tuple[_Run, str]:
            inst, run = _start(
                session,
                ctx,
                inst_uuid,
                "snapshot",
                SNAPSHOT_VM_STATES,
                "snapshot",
                "snapshot_create",
                TaskState.IMAGE_SNAPSHOT,
            )
            if quiesce and inst.vm_state != VmState.ACTIVE:
                raise InvalidInput(
                    reason="--quiesce needs a running instance: the guest agent freezes its "
                    f"filesystems, and {inst.name} is {inst.vm_state}"
                )
            rows = _live_rows(session, inst.uuid)
            if any(r.name == snap for r in rows):
                raise AlreadyExists(kind="snapshot", name=f"{inst.name}/{snap}")
            others = [r.name for r in rows if r.kind != kind]
            if others:
                raise InvalidInput(
                    reason=f"instance {inst.name} has {rows[0].kind} snapshots "
                    f"({', '.join(others)}); internal and disk-only snapshots are not mixed: "
                    "delete those first"
                )
            row = Snapshot(
                uuid=str(uuid.uuid4()),
                instance_uuid=inst.uuid,
                name=snap,
                kind=kind,
                status="creating",
                description=description,
                host=run.host.name,
                quiesced=quiesce,
                created_at=ctx.clock(),
            )
            session.add(row)
            return run, row.uuid

        run, row_uuid = tasks.start(ctx, begin)
        entry_in: dict[str, Any] = {
            "domain": run.domain,
            "name": snap,
            "state": "present",
            "disk_only": disk_only,
            "quiesce": quiesce,
        }
        if description:
            entry_in["description"] = description
        ctx.progress.info(f"{run.name}: taking {kind} snapshot {snap} on {run.host.name}")
        try:
            result = _play(ctx, run, "snapshot.yml", _vars(run, [entry_in]), "snapshot")
        except BaseException:
            _mark_row(ctx, row_uuid, "error", "the play did not finish")
            raise
        entry, reason = _outcome(result, TASK, run, snap)
        with ctx.db.unit_of_work() as session:
            row = _by_row_uuid(session, row_uuid)
            if reason is None and entry is not None:
                inst = by_uuid(session, inst_uuid)
                row.status = "available"
                row.file = entry.get("file")
                row.state = entry.get("snapshot_state")
                row.size_bytes = entry.get("size")
                row.created_at = _created(entry) or row.created_at
                _apply_domain_state(inst, entry)
                _finish(session, ctx, inst, run)
                session.flush()
                view = snapshot_view(row)
            else:
                row.status = "error"
                row.error = reason
                if entry is not None and not entry.get("changed"):
                    # Nothing was made on the host: leave nothing behind in the books either.
                    row.deleted = row.id
                    row.deleted_at = ctx.clock()
        if reason is not None:
            raise _fail(ctx, run, reason or "failed", result, entry, "snapshot")
        hosts.touch_hosts(ctx, [run.host.name])
        return view


def _vars(run: _Run, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"cloudctl_snapshots": {run.host.name: entries}}


def _by_row_uuid(session: Session, row_uuid: str) -> Snapshot:
    row = session.scalars(select(Snapshot).where(Snapshot.uuid == row_uuid)).first()
    if row is None:
        raise NotFound(kind="snapshot", name=row_uuid)
    return row


def _mark_row(ctx: Context, row_uuid: str, status: str, error: str) -> None:
    with ctx.db.unit_of_work() as session:
        row = _by_row_uuid(session, row_uuid)
        row.status = status
        row.error = error


# --- list ---------------------------------------------------------------------------------------


def list_snapshots(
    ctx: Context, server: str, *, include_deleted: bool = False
) -> list[dict[str, Any]]:
    """An instance's snapshots, from SQL (with ``include_deleted`` also deleted ones, and the
    snapshots of a deleted instance of that name)."""
    with ctx.db.unit_of_work() as session:
        if include_deleted:
            column = Instance.uuid if validation.is_uuid(server) else Instance.name
            inst = session.scalars(
                select(Instance)
                .where(column == server, Instance.project_id == ctx.settings.project_id)
                .order_by(Instance.deleted, Instance.id.desc())
            ).first()
            if inst is None:
                raise NotFound(kind="instance", name=server)
        else:
            inst = get_instance(session, ctx.settings.project_id, server)
        stmt = select(Snapshot).where(Snapshot.instance_uuid == inst.uuid)
        if not include_deleted:
            stmt = stmt.where(Snapshot.deleted == 0)
        return [snapshot_view(r) for r in session.scalars(stmt.order_by(Snapshot.id))]


# --- revert -------------------------------------------------------------------------------------


def revert_snapshot(ctx: Context, server: str, snap: str) -> dict[str, Any]:
    """Bring an instance back to a snapshot; its vm_state and power state follow the guest."""
    with ctx.db.unit_of_work() as session:
        inst = get_instance(session, ctx.settings.project_id, server)
        check_state(ctx, inst, "revert to a snapshot of", CHANGE_VM_STATES)
        inst_uuid = inst.uuid
    with leases.command_lease(ctx, f"snapshot revert {server} {snap}"):

        def begin(session: Session) -> _Run:
            inst, run = _start(
                session,
                ctx,
                inst_uuid,
                "revert to a snapshot of",
                CHANGE_VM_STATES,
                "revertSnapshot",
                "snapshot_revert",
                TaskState.IMAGE_SNAPSHOT,
            )
            row = _row(session, inst, snap)
            if row.status != "available":
                raise InvalidInput(reason=f"snapshot {inst.name}/{snap} is {row.status}")
            if row.kind == EXTERNAL:
                newest = [r for r in _live_rows(session, inst.uuid) if r.kind == EXTERNAL][-1]
                if newest.id != row.id:
                    raise InvalidInput(
                        reason=f"only the newest disk-only snapshot of {inst.name} "
                        f"({newest.name}) can be reverted to: delete the newer ones first"
                    )
            return run

        run = tasks.start(ctx, begin)
        ctx.progress.info(f"{run.name}: reverting to snapshot {snap} on {run.host.name}")
        entries = [{"domain": run.domain, "name": snap, "state": "reverted"}]
        result = _play(ctx, run, "snapshot.yml", _vars(run, entries), "revert")
        entry, reason = _outcome(result, TASK, run, snap)
        if reason is None:
            with ctx.db.unit_of_work() as session:
                inst = by_uuid(session, inst_uuid)
                _apply_domain_state(inst, entry)
                _finish(session, ctx, inst, run)
                session.flush()
                view = instance_view(session, inst)
                view["snapshot"] = snapshot_view(_row(session, inst, snap))
        if reason is not None:
            raise _fail(ctx, run, reason, result, entry, "snapshot revert")
        hosts.touch_hosts(ctx, [run.host.name])
        return view


# --- delete -------------------------------------------------------------------------------------


def delete_snapshots(ctx: Context, server: str, snaps: Sequence[str]) -> list[dict[str, Any]]:
    """Delete snapshots of an instance on its host (external ones are committed back)."""
    if not snaps:
        raise InvalidInput(reason="name at least one snapshot to delete")
    with ctx.db.unit_of_work() as session:
        inst = get_instance(session, ctx.settings.project_id, server)
        check_state(ctx, inst, "delete a snapshot of", CHANGE_VM_STATES)
        inst_uuid = inst.uuid
    with leases.command_lease(ctx, f"snapshot delete {server} {' '.join(snaps)}"):

        def begin(session: Session) -> tuple[_Run, list[str]]:
            inst, run = _start(
                session,
                ctx,
                inst_uuid,
                "delete a snapshot of",
                CHANGE_VM_STATES,
                "deleteSnapshot",
                "snapshot_delete",
                TaskState.IMAGE_SNAPSHOT,
            )
            rows = [_row(session, inst, s) for s in dict.fromkeys(snaps)]
            # Newest first: each external one is then the active overlay when it goes.
            rows.sort(key=lambda r: r.id, reverse=True)
            for row in rows:
                row.status = "deleting"
            return run, [r.name for r in rows]

        run, names = tasks.start(ctx, begin)
        ctx.progress.info(f"{run.name}: deleting snapshot(s) {', '.join(names)} on {run.host.name}")
        entries = [{"domain": run.domain, "name": n, "state": "absent"} for n in names]
        result = _play(ctx, run, "snapshot.yml", _vars(run, entries), "snapshot delete")
        outcomes = {n: _outcome(result, TASK, run, n) for n in names}
        failed = {n: why for n, (_, why) in outcomes.items() if why is not None}
        views: list[dict[str, Any]] = []
        with ctx.db.unit_of_work() as session:
            inst = by_uuid(session, inst_uuid)
            now = ctx.clock()
            for row in (_row(session, inst, n) for n in names):
                if row.name in failed:
                    row.status = "error"
                    row.error = failed[row.name]
                    continue
                row.status = "deleted"
                row.deleted = row.id
                row.deleted_at = now
                row.file = None if row.kind == EXTERNAL else row.file
                session.flush()
                views.append(snapshot_view(row))
            if not failed:
                _apply_domain_state(inst, next(iter(outcomes.values()))[0])
                _finish(session, ctx, inst, run)
        if failed:
            first = next(iter(failed))
            entry = outcomes[first][0]
            reason = "; ".join(f"{n}: {why}" for n, why in failed.items())
            raise _fail(ctx, run, reason, result, entry, "snapshot delete")
        hosts.touch_hosts(ctx, [run.host.name])
        return views


def snapshot_names(session: Session, inst_uuid: str) -> list[str]:
    """Names of an instance's live snapshots, oldest first (for flows that must refuse them:
    libvirt keeps snapshot metadata per host, and a rebuilt root disk loses them)."""
    return [r.name for r in _live_rows(session, inst_uuid)]


def mark_snapshots_deleted(session: Session, inst_uuid: str, now: datetime) -> int:
    """Books only: an instance's snapshots went with it (its domain was undefined with its
    snapshot metadata, its directory removed). Returns how many rows were marked."""
    rows = _live_rows(session, inst_uuid)
    for row in rows:
        row.status = "deleted"
        row.deleted = row.id
        row.deleted_at = now
    return len(rows)


# --- images from snapshots ----------------------------------------------------------------------


def create_image(ctx: Context, server: str, snap: str, image_name: str) -> dict[str, Any]:
    """Register a bootable image from a snapshot: the root disk as it was at the snapshot,
    flattened on the host and brought into the image store, with the kernel, initrd, command
    line and properties of the instance's image (plus ``image_type=snapshot``)."""
    validation.object_name("image", image_name)
    with ctx.db.unit_of_work() as session:
        inst_uuid = get_instance(session, ctx.settings.project_id, server).uuid
    image_uuid = str(uuid.uuid4())
    with leases.command_lease(ctx, f"image create-from {server} {snap} {image_name}"):

        def begin(session: Session) -> tuple[_Run, Any, dict[str, str], int, int, str, str]:
            if session.scalars(
                select(Image.id).where(Image.name == image_name, Image.deleted == 0)
            ).first():
                raise AlreadyExists(kind="image", name=image_name)
            inst, run = _start(
                session,
                ctx,
                inst_uuid,
                "create an image from",
                CHANGE_VM_STATES,
                "createImage",
                "snapshot_export",
                TaskState.IMAGE_UPLOADING,
            )
            row = _row(session, inst, snap)
            if row.status != "available":
                raise InvalidInput(reason=f"snapshot {inst.name}/{snap} is {row.status}")
            source = inst.image
            boot = images.DirectBoot.of(source)
            properties = dict(source.props()) if source else {}
            properties.update(
                {
                    "image_type": "snapshot",
                    "instance_uuid": inst.uuid,
                    "snapshot": snap,
                    "base_image_ref": source.uuid if source else "",
                }
            )
            min_ram = source.min_ram_mb if source else 0
            assert inst.host is not None
            return (
                run,
                boot,
                properties,
                min_ram,
                inst.root_gb,
                inst.host.connection,
                inst.host.instances_path,
            )

        run, boot, properties, min_ram, min_disk, connection, instances_path = tasks.start(
            ctx, begin
        )
        staging = images.image_staging(ctx, image_uuid)
        fetches: list[dict[str, str]] = []
        if connection == "local":
            # The host's files are this machine's: write straight into the staging directory.
            dest = str(staging / "disk")
        else:
            dest = f"{instances_path}/_export/{image_uuid}.qcow2"
            fetches.append({"src": dest, "dest": str(staging / "disk")})
        entries = [{"domain": run.domain, "name": snap, "state": "exported", "dest": dest}]
        ctx.progress.info(f"{run.name}: exporting snapshot {snap} from {run.host.name}")
        try:
            result = _play(
                ctx,
                run,
                "snapshot_export.yml",
                {
                    "cloudctl_exports": {run.host.name: entries},
                    "cloudctl_fetches": {run.host.name: fetches},
                },
                "image from",
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _, reason = _outcome(result, EXPORT_TASK, run, snap, whole_play=True)
        if reason is None:
            ctx.progress.info(f"registering image {image_name}")
            try:
                view = images.register_disk_image(
                    ctx,
                    image_name,
                    image_uuid,
                    staging,
                    boot=boot,
                    properties=properties,
                    min_ram_mb=min_ram,
                    min_disk_gb=min_disk,
                )
            except BaseException as exc:
                fail_action(
                    ctx,
                    [run.inst_uuid],
                    run.request_id,
                    run.event,
                    run_error(exc),
                    None,
                    to_error=False,
                )
                raise
            with ctx.db.unit_of_work() as session:
                _finish(session, ctx, by_uuid(session, inst_uuid), run)
        else:
            shutil.rmtree(staging, ignore_errors=True)
        if reason is not None:
            raise _fail(ctx, run, reason, result, None, "image export")
        hosts.touch_hosts(ctx, [run.host.name])
        return view
