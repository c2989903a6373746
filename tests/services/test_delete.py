"""Delete, soft delete, restore, force delete and the reclaim over the fake executor."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from cloudctl.db.models import Allocation, CommandLease, FixedIP, Instance
from cloudctl.domain.states import TaskState, VmState
from cloudctl.errors import ExecutorError, InstanceBusy, InvalidState, OperationFailed
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute
from cloudctl.services.compute import BootRequest
from cloudctl.services.context import Context
from tests.conftest import NOW
from tests.services.lifecycle import faults, hold, let_go, power_answer, row

INTERVAL = 3600


def held(ctx: Context, uuid: str) -> tuple[int, int]:
    """(allocations, fixed IPs) the instance still holds."""
    with ctx.db.unit_of_work() as s:
        return (
            s.scalar(select(func.count(Allocation.id)).where(Allocation.consumer_uuid == uuid))
            or 0,
            s.scalar(
                select(func.count(FixedIP.id)).where(
                    FixedIP.instance_uuid == uuid, FixedIP.allocated
                )
            )
            or 0,
        )


@pytest.fixture
def soft(cloud: Context, fake: FakeExecutor) -> Context:
    """The cloud with soft delete on and one ACTIVE instance, ``web``."""
    cloud.settings = replace(cloud.settings, reclaim_instance_interval=INTERVAL)
    fake.on("power.yml", power_answer)
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    return cloud


def test_soft_delete_powers_off_and_keeps_disks_ip_and_claim(
    soft: Context, fake: FakeExecutor
) -> None:
    uuid = row(soft, "web").uuid
    [view] = compute.delete(soft, ["web"])
    assert (view["status"], view["vm_state"], view["power_state"]) == (
        "SOFT_DELETED",
        "soft-delete",
        "SHUTDOWN",
    )
    req = fake.requests[-1]
    assert req.playbook == "power.yml"  # no destroy.yml: the disks stay
    assert [g["state"] for g in req.extravars["cloudctl_domains"]["h1"]] == ["destroyed"]
    assert held(soft, uuid) == (3, 1)
    inst = row(soft, "web")
    assert (inst.deleted, inst.deleted_at, inst.task_state) == (0, NOW, None)
    assert [i["name"] for i in compute.list_instances(soft)] == ["web"]
    last = compute.action_list(soft, "web")[-1]
    assert (last["action"], [e["event"] for e in last["events"]]) == ("delete", ["soft_delete"])


def test_restore_powers_on_and_leaves_the_reclaim_queue(soft: Context, fake: FakeExecutor) -> None:
    compute.delete(soft, ["web"])
    [view] = compute.restore(soft, ["web"])
    assert (view["status"], view["power_state"]) == ("ACTIVE", "RUNNING")
    assert [g["state"] for g in fake.requests[-1].extravars["cloudctl_domains"]["h1"]] == [
        "running"
    ]
    assert row(soft, "web").deleted_at is None
    assert compute.reclaim_soft_deleted(soft, NOW + timedelta(days=1)) == []
    assert compute.action_list(soft, "web")[-1]["action"] == "restore"


def test_plain_delete_of_a_soft_deleted_instance_says_what_to_do(soft: Context) -> None:
    compute.delete(soft, ["web"])
    with pytest.raises(InvalidState, match="soft-deleted already: restore it, or delete it now"):
        compute.delete(soft, ["web"])


def test_force_delete_of_a_soft_deleted_instance(soft: Context, fake: FakeExecutor) -> None:
    uuid = row(soft, "web").uuid
    compute.delete(soft, ["web"])
    [view] = compute.delete(soft, ["web"], force=True)
    assert view["status"] == "DELETED"
    assert fake.requests[-1].playbook == "destroy.yml"
    assert held(soft, uuid) == (0, 0)
    assert [a["action"] for a in compute.action_list(soft, "web")] == [
        "create",
        "delete",
        "forceDelete",
    ]


def test_force_skips_the_soft_delete(soft: Context, fake: FakeExecutor) -> None:
    [view] = compute.delete(soft, ["web"], force=True)
    assert view["status"] == "DELETED" and fake.requests[-1].playbook == "destroy.yml"


def test_an_instance_that_never_ran_is_deleted_hard(soft: Context, fake: FakeExecutor) -> None:
    soft.settings = replace(
        soft.settings, scheduler=replace(soft.settings.scheduler, max_attempts=1)
    )
    for host in ("h1", "h2"):
        fake.fail("spawn.yml", host=host, task="spawn", msg="qemu exploded")
    with pytest.raises(OperationFailed):
        compute.boot(soft, BootRequest(name="dud", flavor="small", image="tiny"))
    [view] = compute.delete(soft, ["dud"])
    assert view["status"] == "DELETED"


def test_mixed_batch_keeps_the_order(soft: Context, fake: FakeExecutor) -> None:
    compute.boot(soft, BootRequest(name="db", flavor="small", image="tiny"))
    compute.delete(soft, ["db"])
    views = compute.delete(soft, ["db", "web"], force=True)
    assert [(v["name"], v["status"]) for v in views] == [("db", "DELETED"), ("web", "DELETED")]


def test_reclaim_after_the_interval_with_a_fake_clock(soft: Context, fake: FakeExecutor) -> None:
    uuid = row(soft, "web").uuid
    compute.delete(soft, ["web"])
    compute.lock(soft, ["web"], reason="kept for audit")  # the reclaim is no user: it goes on
    assert compute.reclaim_soft_deleted(soft, NOW + timedelta(seconds=INTERVAL - 1)) == []
    assert fake.requests[-1].playbook == "power.yml"
    [view] = compute.reclaim_soft_deleted(soft, NOW + timedelta(seconds=INTERVAL))
    assert view["status"] == "DELETED"
    req = fake.requests[-1]
    assert req.playbook == "destroy.yml"
    assert req.extravars["cloudctl_disks"]["h1"] == [{"uuid": uuid}]
    assert held(soft, uuid) == (0, 0)
    last = compute.action_list(soft, "web")[-1]
    assert (last["action"], [e["event"] for e in last["events"]]) == ("delete", ["reclaim"])
    assert compute.reclaim_soft_deleted(soft, NOW + timedelta(days=2)) == []


def test_reclaim_is_off_without_an_interval(soft: Context) -> None:
    compute.delete(soft, ["web"])
    soft.settings = replace(soft.settings, reclaim_instance_interval=0)
    assert compute.reclaim_soft_deleted(soft, NOW + timedelta(days=365)) == []
    assert row(soft, "web").vm_state == VmState.SOFT_DELETED


def test_soft_delete_failure_keeps_the_instance(soft: Context, fake: FakeExecutor) -> None:
    fake.fail("power.yml", host="h1", task="power", msg="libvirt down")
    with pytest.raises(OperationFailed, match="libvirt down"):
        compute.delete(soft, ["web"])
    inst = row(soft, "web")
    assert (inst.vm_state, inst.task_state, inst.deleted_at) == (VmState.ACTIVE, None, None)
    assert faults(soft, "web") == ["delete failed: task 'power' on h1: libvirt down"]


def test_hard_delete_executor_exception_goes_error(cloud: Context, fake: FakeExecutor) -> None:
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))

    def boom(req: RunRequest) -> dict[str, object]:
        raise ExecutorError("ansible-runner died")

    fake.on("destroy.yml", boom)
    with pytest.raises(ExecutorError):
        compute.delete(cloud, ["web"])
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state, inst.deleted) == (VmState.ERROR, None, 0)
    assert faults(cloud, "web") == ["delete failed: ansible-runner died"]
    fake.on("destroy.yml", lambda req: {h.name: {"undefine": {}} for h in req.hosts})
    assert compute.delete(cloud, ["web"])[0]["status"] == "DELETED"  # ERROR is deletable


@pytest.mark.parametrize(
    "task_state",
    [
        TaskState.POWERING_OFF,
        TaskState.PAUSING,
        TaskState.SPAWNING,
        TaskState.MIGRATING,
        TaskState.REBUILDING,
    ],
)
def test_delete_during_another_commands_task_is_refused(
    cloud: Context, fake: FakeExecutor, task_state: str
) -> None:
    """The task_state is the other command's lock: a delete never races its play."""
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    hold(cloud, str(view["uuid"]), task_state, command="some command")
    runs = len(fake.requests)
    with pytest.raises(InstanceBusy, match=f"task_state {task_state} .*held by some command"):
        compute.delete(cloud, ["web"])
    assert len(fake.requests) == runs
    assert row(cloud, "web").task_state == task_state


def test_delete_waits_for_the_other_command_with_wait_lock(
    cloud: Context, fake: FakeExecutor
) -> None:
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    hold(cloud, str(view["uuid"]), TaskState.POWERING_OFF)
    cloud.settings = replace(cloud.settings, wait_lock_s=10)
    timer = threading.Timer(0.6, let_go, args=(cloud, str(view["uuid"])))
    timer.start()
    try:
        assert compute.delete(cloud, ["web"])[0]["status"] == "DELETED"
    finally:
        timer.join()


def test_delete_succeeds_when_the_host_lost_the_domain(cloud: Context, fake: FakeExecutor) -> None:
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    fake.on(
        "destroy.yml",
        lambda req: {
            h.name: {
                "undefine": {"changed": False, "results": [{"name": "x", "state": "absent"}]},
                "remove files": {"changed": False},
            }
            for h in req.hosts
        },
    )
    assert compute.delete(cloud, ["web"])[0]["status"] == "DELETED"
    with cloud.db.unit_of_work() as s:
        assert s.scalar(select(func.count(Instance.id)).where(Instance.deleted == 0)) == 0


def test_a_delete_leaves_no_lease_and_no_file(cloud: Context, fake: FakeExecutor) -> None:
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny", count=2))
    fake.on("destroy.yml", lambda req: {h.name: {"undefine": {}} for h in req.hosts})
    compute.delete(cloud, ["web-1"])
    with cloud.db.unit_of_work() as s:
        assert s.scalars(select(CommandLease)).all() == []
    assert not (cloud.settings.home / "locks").exists()


def test_a_failed_delete_ends_its_task_and_its_lease(cloud: Context, fake: FakeExecutor) -> None:
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    fake.on("destroy.yml", lambda req: {h.name: {"undefine": {"failed": True}} for h in req.hosts})
    with pytest.raises(OperationFailed):
        compute.delete(cloud, ["web"])
    assert row(cloud, "web").task_state is None
    with cloud.db.unit_of_work() as s:
        assert s.scalars(select(CommandLease)).all() == []
