"""Rebuild, as Nova's: the guest's disks made afresh from an image (its own by default) on the
same host, keeping its UUID, IP, flavor and claim; the config drive is generated again.

One play (``rebuild.yml``): cache the image's base files, power the guest off (gracefully, then
forced after ``stop_timeout_s``) and undefine it, remove its directory (disks, config drive,
console log), create disks and config drive, define and start the domain. task_state goes
REBUILDING -> REBUILD_BLOCK_DEVICE_MAPPING -> REBUILD_SPAWNING with the play's tasks, and the
instance ends ACTIVE. The old disks are gone once the play has removed them, so a failure leaves
the instance in ERROR with a fault (as Nova does); a rebuild from ERROR is the way back.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import Image, Instance
from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import InvalidInput, InvalidState, NotFound, OperationFailed
from cloudctl.executor.base import RunEvent, RunRequest
from cloudctl.executor.events import guest_labels, rename_guests
from cloudctl.render import render_domain_xml
from cloudctl.services import actions, hosts, leases
from cloudctl.services.compute import tasks
from cloudctl.services.compute.boot import _check_image_fits
from cloudctl.services.compute.common import (
    base_files,
    by_uuid,
    check_state,
    config_drive_files,
    domain_spec,
    domain_states,
    fail_action,
    failure_reason,
    get_instance,
    run_error,
)
from cloudctl.services.compute.views import show_instance
from cloudctl.services.context import Context
from cloudctl.services.images import get_image

EVENT = "rebuild"
#: Task of rebuild.yml -> the task_state the instance enters when it starts.
_TASK_STATES = {
    "disks": TaskState.REBUILD_BLOCK_DEVICE_MAPPING,
    "spawn": TaskState.REBUILD_SPAWNING,
}


def rebuild(ctx: Context, name: str, *, image: str | None = None) -> dict[str, Any]:
    """Rebuild an instance from ``image`` (a name; default: the image it runs now)."""
    with ctx.db.unit_of_work() as session:
        inst = get_instance(session, ctx.settings.project_id, name)
        image_id = _validate(ctx, session, inst, image)
        inst_uuid = inst.uuid
    request_id = actions.new_request_id()
    with leases.command_lease(ctx, f"rebuild {name}", request_id=request_id):
        target, extravars = tasks.start(
            ctx, lambda session: _start(ctx, session, inst_uuid, image_id, request_id)
        )

        def on_event(event: RunEvent) -> None:
            ctx.progress.run_event(rename_guests(event, guest_labels({inst_uuid: name})))
            if event.kind == "task_start" and event.task in _TASK_STATES:
                _set_task_state(ctx, inst_uuid, _TASK_STATES[event.task])

        try:
            result = ctx.executor.run(
                RunRequest(
                    playbook="rebuild.yml",
                    hosts=(target,),
                    extravars=extravars,
                    description=f"rebuild {name}",
                ),
                on_event,
            )
        except BaseException as exc:  # never leave a task_state behind, not even on Ctrl-C
            fail_action(ctx, [inst_uuid], request_id, EVENT, run_error(exc), None)
            raise
        if not result.ok:
            reason = failure_reason(result)
            fail_action(ctx, [inst_uuid], request_id, EVENT, reason, result)
            raise OperationFailed(action="rebuild", name=name, reason=reason)
        with ctx.db.unit_of_work() as session:
            now = ctx.clock()
            inst = by_uuid(session, inst_uuid)
            act = actions.current_action(session, inst_uuid, request_id)
            actions.finish_event(session, act, EVENT, now)
            actions.finish_action(act, now)
            tasks.finish(session, ctx, inst)
            inst.vm_state = VmState.ACTIVE
            states = domain_states(result, "spawn")
            inst.power_state = PowerState.from_libvirt(states.get(inst.domain_name, "nostate"))
            inst.launched_at = now
        hosts.touch_hosts(ctx, {target.name})
    return show_instance(ctx, inst_uuid)


def _validate(ctx: Context, session: Session, inst: Instance, image: str | None) -> int:
    """Refuse what cannot be rebuilt; return the id of the image to rebuild from."""
    if inst.deleted:
        raise NotFound(kind="instance", name=inst.uuid)
    check_state(ctx, inst, "rebuild")
    if inst.host is None or not ledger.allocations_of(session, inst.uuid):
        raise InvalidState(
            f"cannot rebuild instance {inst.name}: it holds no resources on a host "
            "(its build failed); delete it and boot it again",
            action="rebuild",
            name=inst.name,
            vm_state=inst.vm_state,
            task_state=inst.task_state,
        )
    img: Image | None = get_image(session, image) if image else inst.image
    if img is None or img.deleted:
        raise InvalidInput(
            reason=f"instance {inst.name} has no image to rebuild from: name one with --image"
        )
    if not img.checksum:
        raise InvalidInput(reason=f"image {img.name} has no disk file to rebuild from")
    _check_image_fits(img, inst.memory_mb, inst.root_gb)
    return img.id


def _start(
    ctx: Context, session: Session, inst_uuid: str, image_id: int, request_id: str
) -> tuple[Any, dict[str, Any]]:
    """Claim the instance (REBUILDING), check again, switch the image; the play's inputs."""
    now = ctx.clock()
    [inst] = tasks.claim(session, ctx, [inst_uuid], "rebuild", TaskState.REBUILDING, now=now)
    image = session.get(Image, image_id)
    if image is None or image.deleted:
        raise NotFound(kind="image", name=str(image_id))
    _validate(ctx, session, inst, image.name)
    host = inst.host
    assert host is not None
    inst.image = image
    act = actions.start_action(session, inst, "rebuild", request_id, now)
    actions.start_event(session, act, EVENT, now, host.name)
    session.flush()
    base = base_files(image)
    guest: dict[str, list[dict[str, Any]]] = defaultdict(list)
    guest["power_off"].append({"name": inst.domain_name, "state": "shutdown"})
    guest["undefine"].append({"name": inst.domain_name, "state": "absent"})
    guest["files"].append({"uuid": inst.uuid})
    guest["disks"].append(
        {
            "uuid": inst.uuid,
            "image": {"checksum": image.checksum, "format": image.disk_format},
            "root_gb": inst.root_gb,
            "ephemeral_gb": inst.ephemeral_gb,
            "swap_mb": inst.swap_mb,
        }
    )
    guest["drives"].append({"uuid": inst.uuid, "files": config_drive_files(session, inst)})
    guest["domains"].append(
        {
            "name": inst.domain_name,
            "xml": render_domain_xml(domain_spec(session, inst)),
            "state": "running",
        }
    )
    h = host.name
    extravars: dict[str, Any] = {
        "cloudctl_base_files": {h: base},
        "cloudctl_power_off": {h: guest["power_off"]},
        "cloudctl_undefine": {h: guest["undefine"]},
        "cloudctl_old_files": {h: guest["files"]},
        "cloudctl_disks": {h: guest["disks"]},
        "cloudctl_config_drives": {h: guest["drives"]},
        "cloudctl_domains": {h: guest["domains"]},
        "cloudctl_stop_timeout": ctx.settings.stop_timeout_s,
    }
    return hosts.host_target(host), extravars


def _set_task_state(ctx: Context, inst_uuid: str, state: TaskState) -> None:
    with ctx.db.unit_of_work() as session:
        tasks.advance(session, ctx, by_uuid(session, inst_uuid), state)
