"""Power actions, lock / unlock and the per-instance lock over the fake executor."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from cloudctl.domain.states import TaskState, VmState
from cloudctl.errors import (
    ExecutorError,
    InstanceBusy,
    InvalidInput,
    InvalidState,
    OperationFailed,
)
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute
from cloudctl.services.compute import BootRequest
from cloudctl.services.compute.common import by_uuid
from cloudctl.services.context import Context
from tests.services.lifecycle import another, faults, hold, let_go, power_answer, row


@pytest.fixture
def web(cloud: Context, fake: FakeExecutor) -> str:
    fake.on("power.yml", power_answer)
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    return str(view["uuid"])


def set_state(ctx: Context, uuid: str, vm_state: str, task_state: str | None = None) -> None:
    with ctx.db.unit_of_work() as s:
        inst = by_uuid(s, uuid)
        inst.vm_state, inst.task_state = vm_state, task_state


@pytest.mark.parametrize(
    ("action", "start", "domain_steps", "vm_state", "power_state", "recorded"),
    [
        ("pause", "active", ["paused"], "paused", "PAUSED", "pause"),
        ("unpause", "paused", ["running"], "active", "RUNNING", "unpause"),
        ("suspend", "active", ["saved"], "suspended", "SHUTDOWN", "suspend"),
        ("resume", "suspended", ["running"], "active", "RUNNING", "resume"),
        ("stop", "active", ["shutdown"], "stopped", "SHUTDOWN", "stop"),
        ("start", "stopped", ["running"], "active", "RUNNING", "start"),
        ("reboot", "active", ["shutdown", "running"], "active", "RUNNING", "reboot"),
        ("reboot_hard", "suspended", ["destroyed", "running"], "active", "RUNNING", "reboot"),
        ("reboot_hard", "paused", ["destroyed", "running"], "active", "RUNNING", "reboot"),
    ],
)
def test_power_flows(
    cloud: Context,
    fake: FakeExecutor,
    web: str,
    action: str,
    start: str,
    domain_steps: list[str],
    vm_state: str,
    power_state: str,
    recorded: str,
) -> None:
    set_state(cloud, web, start)
    [view] = compute.power(cloud, ["web"], action)
    assert (view["vm_state"], view["task_state"], view["power_state"]) == (
        vm_state,
        None,
        power_state,
    )
    req = fake.requests[-1]
    assert req.playbook == "power.yml"
    steps = [req.extravars["cloudctl_domains"]["h1"], req.extravars["cloudctl_domains_after"]["h1"]]
    assert [g["state"] for step in steps for g in step] == domain_steps
    assert all(g["name"] == f"instance-{web}" and "<domain" in g["xml"] for s in steps for g in s)
    last = compute.action_list(cloud, "web")[-1]
    assert (last["action"], last["message"]) == (recorded, None)
    assert [(e["event"], e["result"], e["host"]) for e in last["events"]] == [
        (action, "Success", "h1")
    ]


@pytest.mark.parametrize(
    ("action", "start", "message"),
    [
        (
            "pause",
            "stopped",
            "cannot pause instance web: vm_state stopped, task_state None (pause needs active)",
        ),
        ("unpause", "active", "(unpause needs paused)"),
        ("suspend", "paused", "(suspend needs active)"),
        ("resume", "active", "(resume needs suspended)"),
        ("start", "active", "(start needs stopped)"),
        ("restore", "active", "(restore needs soft-delete)"),
    ],
)
def test_refused_states_run_nothing(
    cloud: Context, fake: FakeExecutor, web: str, action: str, start: str, message: str
) -> None:
    set_state(cloud, web, start)
    runs = len(fake.requests)
    with pytest.raises(InvalidState, match=message.replace("(", r"\(").replace(")", r"\)")):
        compute.power(cloud, ["web"], action)
    assert len(fake.requests) == runs
    assert row(cloud, "web").task_state is None


def test_a_task_another_command_holds_is_refused_with_who_holds_it(
    cloud: Context, web: str
) -> None:
    hold(cloud, web, TaskState.REBOOTING, command="reboot web")
    with pytest.raises(InstanceBusy, match=r"task_state rebooting .*held by reboot web"):
        compute.power(cloud, ["web"], "pause")
    held = compute.show_instance(cloud, "web")["task_held_by"]
    assert (held["command"], held["holder"], held["pid"]) == ("reboot web", "root@elsewhere", 4242)


def test_a_dead_commands_task_is_refused_until_reconcile_settles_it(
    cloud: Context, web: str
) -> None:
    hold(cloud, web, TaskState.REBOOTING, expires_in_s=-5)
    later = cloud.clock() + timedelta(hours=2)
    cloud.clock = lambda: later  # however long ago: no command guesses it is over
    with pytest.raises(InstanceBusy, match="the command died; `cloudctl reconcile` settles it"):
        compute.power(cloud, ["web"], "pause")
    assert row(cloud, "web").task_state == TaskState.REBOOTING


def test_play_failure_clears_the_task_and_records_a_fault(
    cloud: Context, fake: FakeExecutor, web: str
) -> None:
    fake.fail("power.yml", host="h1", task="power", msg="libvirt: cannot suspend")
    with pytest.raises(OperationFailed, match=r"pause of instance 'web' failed: .*cannot suspend"):
        compute.power(cloud, ["web"], "pause")
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state) == (VmState.ACTIVE, None)
    assert faults(cloud, "web") == ["pause failed: task 'power' on h1: libvirt: cannot suspend"]
    last = compute.action_list(cloud, "web")[-1]
    assert last["message"] == "Error" and last["events"][-1]["result"] == "Error"


@pytest.mark.parametrize(
    "exc", [ExecutorError("ansible-runner died"), RuntimeError("bug"), KeyboardInterrupt()]
)
def test_executor_exception_clears_the_task(
    cloud: Context, fake: FakeExecutor, web: str, exc: BaseException
) -> None:
    def boom(req: RunRequest) -> dict[str, object]:
        raise exc

    fake.on("power.yml", boom)
    with pytest.raises(type(exc)):
        compute.power(cloud, ["web"], "suspend")
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state) == (VmState.ACTIVE, None)
    assert faults(cloud, "web")[0].startswith("suspend failed: ")
    assert compute.action_list(cloud, "web")[-1]["events"][-1]["result"] == "Error"


def test_lock_refuses_everything_but_unlock(cloud: Context, fake: FakeExecutor, web: str) -> None:
    [view] = compute.lock(cloud, ["web"], reason="maintenance")
    assert (view["locked"], view["locked_reason"]) == (True, "maintenance")
    runs = len(fake.requests)
    for action in ("pause", "stop", "reboot_hard", "suspend"):
        with pytest.raises(InvalidState, match=r"^instance web is locked: maintenance$"):
            compute.power(cloud, ["web"], action)
    with pytest.raises(InvalidState, match="is locked"):
        compute.delete(cloud, ["web"])
    with pytest.raises(InvalidState, match="is locked"):
        compute.delete(cloud, ["web"], force=True)
    with pytest.raises(InvalidState, match="is locked"):
        compute.rebuild(cloud, "web")
    with pytest.raises(InvalidState, match="is locked"):
        compute.lock(cloud, ["web"])
    assert len(fake.requests) == runs
    assert compute.show_instance(cloud, "web")["locked"] is True  # reading is fine
    [view] = compute.unlock(cloud, ["web"])
    assert (view["locked"], view["locked_reason"]) == (False, None)
    compute.unlock(cloud, ["web"])  # unlocking an unlocked instance changes nothing
    assert compute.power(cloud, ["web"], "pause")[0]["vm_state"] == "paused"
    acts = [(a["action"], a["events"][0]["details"]) for a in compute.action_list(cloud, "web")]
    assert acts[1:] == [
        ("lock", "maintenance"),
        ("unlock", None),
        ("unlock", None),
        ("pause", None),
    ]


def test_lock_reason_is_bounded(cloud: Context, web: str) -> None:
    with pytest.raises(InvalidInput, match="longer than 255"):
        compute.lock(cloud, ["web"], reason="x" * 256)


def test_wait_lock_waits_for_the_other_command(cloud: Context, web: str) -> None:
    cloud.settings = replace(cloud.settings, wait_lock_s=10)
    hold(cloud, web, TaskState.REBOOTING)
    done: list[str] = []
    worker = threading.Thread(
        target=lambda: done.append(compute.power(cloud, ["web"], "pause")[0]["vm_state"])
    )
    worker.start()
    time.sleep(1.0)
    assert done == [] and worker.is_alive()  # waiting, not refused
    let_go(cloud, web)
    worker.join(10)
    assert done == ["paused"]


def test_the_wait_is_bounded(cloud: Context, web: str) -> None:
    cloud.settings = replace(cloud.settings, wait_lock_s=0.3)
    hold(cloud, web, TaskState.REBOOTING)
    started = time.monotonic()
    with pytest.raises(InstanceBusy):
        compute.power(cloud, ["web"], "pause")
    assert time.monotonic() - started >= 0.3
    assert row(cloud, "web").task_state == TaskState.REBOOTING


def test_the_claim_is_a_compare_and_swap(cloud: Context, web: str) -> None:
    """Two commands read the instance idle; only the first conditional UPDATE changes it."""
    from cloudctl.services import leases
    from cloudctl.services.compute import tasks

    other = another(cloud)
    with leases.command_lease(cloud, "first"), leases.command_lease(other, "second"):
        with cloud.db.unit_of_work() as s:
            tasks.claim(s, cloud, [web], "stop", TaskState.POWERING_OFF)
        with other.db.unit_of_work() as s, pytest.raises(InstanceBusy, match="held by first"):
            tasks.claim(s, other, [web], "reboot", TaskState.REBOOTING)
        with cloud.db.unit_of_work() as s:
            tasks.finish(s, cloud, by_uuid(s, web))
    assert row(cloud, "web").task_state is None
