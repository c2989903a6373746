"""Rebuild over the fake executor: inputs of the play, states, validation, failures."""

from __future__ import annotations

import pytest

from cloudctl import ledger
from cloudctl.domain.states import TaskState, VmState
from cloudctl.errors import (
    ExecutorError,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
)
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute
from cloudctl.services.compute import BootRequest
from cloudctl.services.compute.common import by_uuid
from cloudctl.services.context import Context
from tests.conftest import NOW
from tests.services.conftest import add_image
from tests.services.lifecycle import faults, power_answer, rebuild_answer, row

OTHER = "22222222-2222-4222-8222-222222222222"


@pytest.fixture
def web(cloud: Context, fake: FakeExecutor) -> dict[str, object]:
    fake.on("power.yml", power_answer)
    fake.on("rebuild.yml", rebuild_answer)
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    return view


def test_rebuild_keeps_identity_and_makes_new_disks(
    cloud: Context, fake: FakeExecutor, web: dict[str, object]
) -> None:
    view = compute.rebuild(cloud, "web")
    assert (view["status"], view["power_state"], view["image"]) == ("ACTIVE", "RUNNING", "tiny")
    for key in ("uuid", "host", "addresses", "flavor", "domain", "allocations"):
        assert view[key] == web[key] or key == "allocations"
    assert view["allocations"] and view["launched_at"] == NOW.isoformat()
    req = fake.requests[-1]
    assert req.playbook == "rebuild.yml" and [h.name for h in req.hosts] == ["h1"]
    ev = req.extravars
    uuid, domain = web["uuid"], web["domain"]
    assert ev["cloudctl_power_off"] == {"h1": [{"name": domain, "state": "shutdown"}]}
    assert ev["cloudctl_undefine"] == {"h1": [{"name": domain, "state": "absent"}]}
    assert ev["cloudctl_old_files"] == {"h1": [{"uuid": uuid}]}
    [disks] = ev["cloudctl_disks"]["h1"]
    assert disks["uuid"] == uuid and disks["image"] == {"checksum": "a" * 64, "format": "qcow2"}
    [drive] = ev["cloudctl_config_drives"]["h1"]
    assert "local-hostname: web" in drive["files"]["meta-data"]
    assert web["addresses"][0]["address"] in drive["files"]["network-config"]  # type: ignore[index]
    [dom] = ev["cloudctl_domains"]["h1"]
    assert dom["state"] == "running" and f"<uuid>{uuid}</uuid>" in dom["xml"]
    assert {b["checksum"][0] for b in ev["cloudctl_base_files"]["h1"]} == {"a", "b", "c"}
    last = compute.action_list(cloud, "web")[-1]
    assert (last["action"], last["message"]) == ("rebuild", None)
    assert [(e["event"], e["result"]) for e in last["events"]] == [("rebuild", "Success")]


def test_rebuild_walks_the_task_states_with_the_play(
    cloud: Context, fake: FakeExecutor, web: dict[str, object]
) -> None:
    seen: list[str | None] = []
    uuid = str(web["uuid"])

    def record(event: object) -> None:
        with cloud.db.unit_of_work() as s:
            seen.append(by_uuid(s, uuid).task_state)

    cloud.progress.run_event = record  # type: ignore[method-assign]
    compute.rebuild(cloud, "web")
    assert seen[0] == TaskState.REBUILDING
    assert TaskState.REBUILD_BLOCK_DEVICE_MAPPING in seen
    assert seen[-1] == TaskState.REBUILD_SPAWNING  # the last event before the result


def test_rebuild_from_another_image_and_from_stopped(
    cloud: Context, fake: FakeExecutor, web: dict[str, object]
) -> None:
    add_image(cloud, "tiny2", uuid=OTHER, checksum="d" * 64, path="/images/disk2")
    compute.power(cloud, ["web"], "stop")
    view = compute.rebuild(cloud, "web", image="tiny2")
    assert (view["status"], view["image"]) == ("ACTIVE", "tiny2")  # Nova leaves it ACTIVE
    ev = fake.requests[-1].extravars
    assert ev["cloudctl_disks"]["h1"][0]["image"]["checksum"] == "d" * 64
    disk2 = str(cloud.settings.home / "images" / "disk2")
    assert {"src": disk2, "checksum": "d" * 64, "size": 5} in ev["cloudctl_base_files"]["h1"]
    assert "tiny2" in ev["cloudctl_domains"]["h1"][0]["xml"]


@pytest.mark.parametrize(
    ("setup", "image", "error", "message"),
    [
        ("none", "nope", NotFound, "image 'nope' not found"),
        ("big", "big", InvalidInput, "smaller than the image"),
        ("paused", None, InvalidState, r"\(rebuild needs active, stopped or error\)"),
        ("suspended", None, InvalidState, "vm_state suspended"),
        ("locked", None, InvalidState, "instance web is locked: audit"),
        ("busy", None, InvalidState, "task_state powering-off"),
        ("unclaimed", None, InvalidState, "holds no resources on a host"),
    ],
)
def test_refused_rebuilds_run_nothing(
    cloud: Context,
    fake: FakeExecutor,
    web: dict[str, object],
    setup: str,
    image: str | None,
    error: type[Exception],
    message: str,
) -> None:
    uuid = str(web["uuid"])
    if setup == "big":
        add_image(cloud, "big", uuid=OTHER, virtual_size_bytes=5 * 1024**3)
    elif setup == "locked":
        compute.lock(cloud, ["web"], reason="audit")
    else:
        with cloud.db.unit_of_work() as s:
            inst = by_uuid(s, uuid)
            if setup in ("paused", "suspended"):
                inst.vm_state = setup
            elif setup == "busy":
                inst.task_state = TaskState.POWERING_OFF
            elif setup == "unclaimed":
                inst.vm_state = VmState.ERROR
                ledger.release(s, uuid)
    runs = len(fake.requests)
    with pytest.raises(error, match=message):
        compute.rebuild(cloud, "web", image=image)
    assert len(fake.requests) == runs


@pytest.mark.parametrize("task", ["disks", "spawn", "power off"])
def test_play_failure_goes_error_with_a_fault(
    cloud: Context, fake: FakeExecutor, web: dict[str, object], task: str
) -> None:
    fake.fail("rebuild.yml", host="h1", task=task, msg="no space left")
    with pytest.raises(OperationFailed, match=r"rebuild of instance 'web' failed: .*no space left"):
        compute.rebuild(cloud, "web")
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state) == (VmState.ERROR, None)
    assert faults(cloud, "web") == [f"rebuild failed: task '{task}' on h1: no space left"]
    assert compute.action_list(cloud, "web")[-1]["events"][-1]["result"] == "Error"
    fake.on("rebuild.yml", rebuild_answer)
    fake._failures.clear()
    assert compute.rebuild(cloud, "web")["status"] == "ACTIVE"  # rebuild is the way back


def test_executor_exception_goes_error(
    cloud: Context, fake: FakeExecutor, web: dict[str, object]
) -> None:
    def boom(req: RunRequest) -> dict[str, object]:
        raise ExecutorError("ansible-runner died")

    fake.on("rebuild.yml", boom)
    with pytest.raises(ExecutorError):
        compute.rebuild(cloud, "web")
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state) == (VmState.ERROR, None)
    assert faults(cloud, "web") == ["rebuild failed: ansible-runner died"]
