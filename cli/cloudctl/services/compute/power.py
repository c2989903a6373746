"""Power actions (start, stop, reboot) and the serial console."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import (
    CloudctlError,
    InvalidState,
    OperationFailed,
)
from cloudctl.executor.base import RunRequest
from cloudctl.render import render_domain_xml
from cloudctl.services import actions, hosts
from cloudctl.services.compute.common import (
    by_uuid,
    check_state,
    domain_spec,
    domain_states,
    fail_action,
    failure_reason,
    get_instance,
)
from cloudctl.services.compute.views import instance_view
from cloudctl.services.context import Context

_POWER = {
    # action: (allowed vm_states, task_state, [domain states in order], vm_state after)
    "start": ((VmState.STOPPED,), TaskState.POWERING_ON, ["running"], VmState.ACTIVE),
    "stop": (
        (VmState.ACTIVE, VmState.ERROR),
        TaskState.POWERING_OFF,
        ["shutdown"],
        VmState.STOPPED,
    ),
    "reboot": ((VmState.ACTIVE,), TaskState.REBOOTING, ["shutdown", "running"], VmState.ACTIVE),
    "reboot_hard": (
        (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR),
        TaskState.REBOOTING_HARD,
        ["destroyed", "running"],
        VmState.ACTIVE,
    ),
}


def power(ctx: Context, names: Sequence[str], action: str) -> list[dict[str, Any]]:
    """start / stop / reboot / reboot_hard, one play for all the named instances."""
    allowed, task_state, steps, after = _POWER[action]
    request_id = actions.new_request_id()
    uuids: list[str] = []
    per_host: dict[str, list[list[dict[str, Any]]]] = defaultdict(lambda: [[] for _ in steps])
    targets = {}
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        found = [get_instance(session, ctx.settings.project_id, n) for n in names]
        for inst in found:
            check_state(ctx, inst, action.replace("_", " "), allowed)
            if inst.host is None:
                raise InvalidState(
                    action=action, name=inst.name, vm_state=inst.vm_state, task_state=None
                )
        for inst in found:
            assert inst.host is not None
            xml = render_domain_xml(domain_spec(session, inst))
            for i, state in enumerate(steps):
                per_host[inst.host.name][i].append(
                    {"name": inst.domain_name, "xml": xml, "state": state}
                )
            targets[inst.host.name] = hosts.host_target(inst.host)
            inst.task_state = task_state
            act = actions.start_action(session, inst, action.split("_")[0], request_id, now)
            actions.start_event(session, act, action, now, inst.host.name)
            uuids.append(inst.uuid)
    extravars = {
        "cloudctl_domains": {h: steps_[0] for h, steps_ in per_host.items()},
        "cloudctl_domains_after": {
            h: steps_[1] if len(steps_) > 1 else [] for h, steps_ in per_host.items()
        },
        "cloudctl_stop_timeout": ctx.settings.stop_timeout_s,
    }
    try:
        result = ctx.executor.run(
            RunRequest(
                playbook="power.yml",
                hosts=tuple(targets.values()),
                extravars=extravars,
                description=action,
            ),
            ctx.progress.run_event,
        )
    except CloudctlError as exc:
        fail_action(ctx, uuids, request_id, action, str(exc), None, to_error=False)
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
            inst.task_state = None
            inst.vm_state = after
            inst.power_state = PowerState.from_libvirt(states.get(inst.domain_name, "nostate"))
            session.flush()
            views.append(instance_view(session, inst))
    hosts.touch_hosts(ctx, set(targets) - failed_hosts)
    if bad:
        reason = failure_reason(result)
        fail_action(ctx, bad, request_id, action, reason, result, to_error=False)
        raise OperationFailed(action=action, name=", ".join(bad), reason=reason)
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
