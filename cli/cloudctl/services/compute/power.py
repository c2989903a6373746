"""Power actions, soft delete and restore as power changes, lock / unlock, and the serial console.

Every power action is one row of :data:`POWER_FLOWS`: the task_state it sets, the
``cloudctl_domain`` states the guest goes through on its host (one play over all hosts,
``power.yml``) and the vm_state it ends in. The states an action may start from are its row of
``ACTION_STATES`` (domain/states.py). A flow claims its instances (``tasks.claim``: the
task_state is the lock, in SQL, under the command's lease) before the play and ends the task
after it, so two commands never drive one guest at the same time, whichever controller runs
them; a failure clears the task_state and records a fault, leaving the vm_state as it was.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cloudctl.db.models import Instance
from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import (
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
)
from cloudctl.executor.base import HostTarget, RunRequest
from cloudctl.render import render_domain_xml
from cloudctl.services import actions, hosts, leases
from cloudctl.services.compute import tasks
from cloudctl.services.compute.common import (
    by_uuid,
    check_state,
    domain_spec,
    domain_states,
    fail_action,
    failure_reason,
    get_instance,
    guest_label_names,
    named_progress,
    run_error,
)
from cloudctl.services.compute.views import instance_view
from cloudctl.services.context import Context

#: Longest lock reason kept (Nova's limit, and the column's).
MAX_LOCK_REASON = 255


@dataclass(frozen=True)
class PowerFlow:
    """How one power action runs (a row of :data:`POWER_FLOWS`)."""

    #: The instance action recorded (Nova's instance_actions name).
    action: str
    task_state: TaskState
    #: ``cloudctl_domain`` states in order: the ``power`` task, then ``power again``.
    steps: tuple[str, ...]
    #: vm_state once every step succeeded.
    vm_state: VmState


#: Flow name (a row of ACTION_STATES too) -> how it runs.
POWER_FLOWS: dict[str, PowerFlow] = {
    "start": PowerFlow("start", TaskState.POWERING_ON, ("running",), VmState.ACTIVE),
    "stop": PowerFlow("stop", TaskState.POWERING_OFF, ("shutdown",), VmState.STOPPED),
    "reboot": PowerFlow("reboot", TaskState.REBOOTING, ("shutdown", "running"), VmState.ACTIVE),
    "reboot_hard": PowerFlow(
        "reboot", TaskState.REBOOTING_HARD, ("destroyed", "running"), VmState.ACTIVE
    ),
    "pause": PowerFlow("pause", TaskState.PAUSING, ("paused",), VmState.PAUSED),
    "unpause": PowerFlow("unpause", TaskState.UNPAUSING, ("running",), VmState.ACTIVE),
    "suspend": PowerFlow("suspend", TaskState.SUSPENDING, ("saved",), VmState.SUSPENDED),
    "resume": PowerFlow("resume", TaskState.RESUMING, ("running",), VmState.ACTIVE),
    # Nova's soft delete powers the guest off hard (its libvirt driver has no soft_delete) and
    # records a "delete" action; disks, IP and claim stay until restore or reclaim.
    "soft_delete": PowerFlow(
        "delete", TaskState.SOFT_DELETING, ("destroyed",), VmState.SOFT_DELETED
    ),
    "restore": PowerFlow("restore", TaskState.RESTORING, ("running",), VmState.ACTIVE),
}


def power(
    ctx: Context, names: Sequence[str], action: str, *, request_id: str | None = None
) -> list[dict[str, Any]]:
    """Run the power flow ``action`` on the named instances, one play for all of them."""
    flow = POWER_FLOWS[action]
    with ctx.db.unit_of_work() as session:
        found = [get_instance(session, ctx.settings.project_id, n) for n in names]
        for inst in found:
            _check(ctx, inst, action)
        uuids = list(dict.fromkeys(i.uuid for i in found))
    label = action.replace("_", " ")
    with leases.command_lease(ctx, f"{label} {' '.join(names)}", request_id=request_id) as lease:
        return _run(ctx, uuids, action, flow, request_id or lease.request_id)


def _check(ctx: Context, inst: Instance, action: str) -> None:
    if inst.deleted:
        raise NotFound(kind="instance", name=inst.uuid)
    check_state(ctx, inst, action)
    _placed(inst, action)


def _placed(inst: Instance, action: str) -> None:
    if inst.host is None:
        raise InvalidState(
            f"cannot {action.replace('_', ' ')} instance {inst.name}: it is on no host",
            action=action,
            name=inst.name,
            vm_state=inst.vm_state,
            task_state=inst.task_state,
        )


def _run(
    ctx: Context, uuids: Sequence[str], action: str, flow: PowerFlow, request_id: str
) -> list[dict[str, Any]]:
    per_host: dict[str, list[list[dict[str, Any]]]] = defaultdict(lambda: [[] for _ in flow.steps])
    targets: dict[str, HostTarget] = {}
    labels: dict[str, str] = {}

    def begin(session: Session) -> None:
        per_host.clear()
        targets.clear()
        now = ctx.clock()
        # The claim is the check that counts: one conditional UPDATE per instance.
        found = tasks.claim(session, ctx, uuids, action, flow.task_state, now=now)
        for inst in found:
            _placed(inst, action)
            assert inst.host is not None
            guest_label_names(inst, labels)
            xml = render_domain_xml(domain_spec(session, inst))
            for i, state in enumerate(flow.steps):
                per_host[inst.host.name][i].append(
                    {"name": inst.domain_name, "xml": xml, "state": state}
                )
            targets[inst.host.name] = hosts.host_target(inst.host)
            act = actions.start_action(session, inst, flow.action, request_id, now)
            actions.start_event(session, act, action, now, inst.host.name)

    tasks.start(ctx, begin)
    extravars = {
        "cloudctl_domains": {h: steps[0] for h, steps in per_host.items()},
        "cloudctl_domains_after": {
            h: steps[1] if len(steps) > 1 else [] for h, steps in per_host.items()
        },
        "cloudctl_stop_timeout": ctx.settings.stop_timeout_s,
    }
    try:
        result = ctx.executor.run(
            RunRequest(
                playbook="power.yml",
                hosts=tuple(targets.values()),
                extravars=extravars,
                description=action.replace("_", " "),
            ),
            named_progress(ctx, labels),
        )
    except BaseException as exc:  # never leave a task_state behind, not even on Ctrl-C
        fail_action(ctx, uuids, request_id, action, run_error(exc), None, to_error=False)
        raise
    states = domain_states(result, "power")
    states.update(domain_states(result, "power again"))
    failed_hosts = result.failed_hosts()
    bad = []
    views = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = by_uuid(session, u)
            assert inst.host is not None
            if inst.host.name in failed_hosts:
                bad.append(u)
                continue
            act = actions.current_action(session, u, request_id)
            actions.finish_event(session, act, action, now)
            actions.finish_action(act, now)
            tasks.finish(session, ctx, inst)
            if flow.vm_state == VmState.SOFT_DELETED:
                inst.deleted_at = now  # when the reclaim interval starts, as in Nova
            elif inst.vm_state == VmState.SOFT_DELETED:
                inst.deleted_at = None
            inst.vm_state = flow.vm_state
            inst.power_state = PowerState.from_libvirt(states.get(inst.domain_name, "nostate"))
            session.flush()
            views.append(instance_view(session, inst))
    hosts.touch_hosts(ctx, set(targets) - failed_hosts)
    if bad:
        reason = failure_reason(result)
        fail_action(ctx, bad, request_id, action, reason, result, to_error=False)
        names = _names(ctx, bad)
        raise OperationFailed(action=action.replace("_", " "), name=names, reason=reason)
    return views


def _names(ctx: Context, uuids: Sequence[str]) -> str:
    with ctx.db.unit_of_work() as session:
        return ", ".join(by_uuid(session, u).name for u in uuids)


def lock(ctx: Context, names: Sequence[str], *, reason: str | None = None) -> list[dict[str, Any]]:
    """Lock instances: every action but ``unlock`` (and reading them) is refused until then."""
    if reason is not None and len(reason) > MAX_LOCK_REASON:
        raise InvalidInput(reason=f"lock reason is longer than {MAX_LOCK_REASON} characters")
    return _set_lock(ctx, names, "lock", reason)


def unlock(ctx: Context, names: Sequence[str]) -> list[dict[str, Any]]:
    """Unlock instances (an unlocked instance stays unlocked)."""
    return _set_lock(ctx, names, "unlock", None)


def _set_lock(
    ctx: Context, names: Sequence[str], action: str, reason: str | None
) -> list[dict[str, Any]]:
    request_id = actions.new_request_id()
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        found = [get_instance(session, ctx.settings.project_id, n) for n in names]
        for inst in found:
            check_state(ctx, inst, action)
        views = []
        for inst in found:
            inst.locked = action == "lock"
            inst.locked_reason = reason if inst.locked else None
            act = actions.start_action(session, inst, action, request_id, now)
            host = inst.host.name if inst.host else None
            actions.finish_event(session, act, action, now, details=reason, host=host)
            actions.finish_action(act, now)
            session.flush()
            views.append(instance_view(session, inst))
        return views


def console(
    ctx: Context, name: str, *, wait_for: str | None = None, timeout_s: int = 0
) -> dict[str, Any]:
    """The serial console log of an instance (optionally waiting for a regex to appear)."""
    with ctx.db.unit_of_work() as session:
        inst = get_instance(session, ctx.settings.project_id, name)
        if inst.host is None:
            raise InvalidState(
                action="read the console of",
                name=inst.name,
                vm_state=inst.vm_state,
                task_state=inst.task_state,
            )
        target = hosts.host_target(inst.host)
        guest: dict[str, Any] = {"uuid": inst.uuid}
        if wait_for:
            guest["pattern"] = wait_for
    result = ctx.executor.run(
        RunRequest(
            playbook="console.yml",
            hosts=(target,),
            extravars={
                "cloudctl_consoles": {target.name: [guest]},
                "cloudctl_console_timeout": timeout_s,
            },
            description=f"console {name}",
        ),
        ctx.progress.run_event,
    )
    data = result.result("console", target.name) or {}
    items = list(data.get("results") or [])
    item: Mapping[str, Any] = items[0] if items else {}
    out = {
        "name": name,
        "found": bool(item.get("found")),
        "match": item.get("match"),
        "log": str(item.get("log") or ""),
    }
    if not result.ok:
        raise OperationFailed(action="console", name=name, reason=failure_reason(result))
    return out
