"""The boot / delete / power flows over the fake executor: states, events, ledger, cleanup."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from cloudctl.db.models import Allocation, FixedIP, Host, Instance, InstanceFault
from cloudctl.errors import (
    AlreadyExists,
    CloudctlError,
    InvalidInput,
    InvalidState,
    NotFound,
    NoValidHost,
    OperationFailed,
    QuotaExceeded,
)
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, flavors
from cloudctl.services.compute import BootRequest
from cloudctl.services.context import Context
from tests.conftest import NOW
from tests.services.conftest import add_image


def counts(ctx: Context) -> tuple[int, int, int]:
    with ctx.db.unit_of_work() as s:
        return (
            s.scalar(select(func.count(Instance.id)).where(Instance.deleted == 0)) or 0,
            s.scalar(select(func.count(Allocation.id))) or 0,
            s.scalar(select(func.count(FixedIP.id)).where(FixedIP.allocated)) or 0,
        )


def test_boot_goes_active_with_events_claim_and_ip(cloud: Context, fake: FakeExecutor) -> None:
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    assert view["status"] == "ACTIVE"
    assert view["power_state"] == "RUNNING"
    assert view["host"] == "h1"  # more free RAM than h2
    assert view["addresses"][0]["address"] == "10.254.0.2"
    assert counts(cloud) == (1, 3, 1)
    [action] = compute.action_list(cloud, "web")
    assert action["action"] == "create"
    assert [(e["event"], e["result"]) for e in action["events"]] == [
        ("schedule", "Success"),
        ("networking", "Success"),
        ("block_device_mapping", "Success"),
        ("spawn", "Success"),
    ]
    req = fake.requests[-1]
    assert req.playbook == "spawn.yml"
    [domain] = req.extravars["cloudctl_domains"]["h1"]
    assert domain["name"] == f"instance-{view['uuid']}"
    assert f"<uuid>{view['uuid']}</uuid>" in domain["xml"]
    [drive] = req.extravars["cloudctl_config_drives"]["h1"]
    assert "local-hostname: web" in drive["files"]["meta-data"]
    assert {b["checksum"][0] for b in req.extravars["cloudctl_base_files"]["h1"]} == {"a", "b", "c"}


def test_count_spreads_and_names(cloud: Context) -> None:
    views = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny", count=3))
    assert [v["name"] for v in views] == ["web-1", "web-2", "web-3"]
    assert [v["host"] for v in views] == ["h1", "h1", "h1"] or len({v["host"] for v in views}) == 2
    assert len({v["addresses"][0]["address"] for v in views}) == 3


def test_spawn_failure_reschedules_to_the_next_host(cloud: Context, fake: FakeExecutor) -> None:
    fake.fail("spawn.yml", host="h1", task="spawn", msg="qemu exploded")
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    assert (view["status"], view["host"]) == ("ACTIVE", "h2")
    assert [r.playbook for r in fake.requests] == ["spawn.yml", "destroy.yml", "spawn.yml"]
    assert list(fake.requests[1].extravars["cloudctl_domains"]) == ["h1"]
    events = [
        (e["event"], e["result"], e["host"]) for e in compute.action_list(cloud, "web")[0]["events"]
    ]
    assert ("spawn", "Error", "h1") in events and ("reschedule", "Success", "h2") in events
    assert events[-1] == ("spawn", "Success", "h2")
    with cloud.db.unit_of_work() as s:
        fails = {h.name: h.failed_builds for h in s.scalars(select(Host))}
        assert fails == {"h1": 1, "h2": 0}
        assert {a.host_id for a in s.scalars(select(Allocation))} == {
            s.scalars(select(Host.id).where(Host.name == "h2")).one()
        }


def test_spawn_failure_on_every_host_goes_error_and_frees_everything(
    cloud: Context, fake: FakeExecutor
) -> None:
    fake.fail("spawn.yml", host="h1", task="spawn", msg="qemu exploded")
    fake.fail("spawn.yml", host="h2", task="spawn", msg="qemu exploded")
    with pytest.raises(OperationFailed, match="qemu exploded"):
        compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    view = compute.show_instance(cloud, "web")
    assert view["status"] == "ERROR"
    assert "qemu exploded" in view["fault"]["message"]
    assert "h1: " in view["fault"]["message"] and "h2: " in view["fault"]["message"]
    assert view["addresses"] == []
    assert counts(cloud) == (1, 0, 0)
    assert [r.playbook for r in fake.requests] == [
        "spawn.yml",
        "destroy.yml",
        "spawn.yml",
        "destroy.yml",
    ]
    [action] = compute.action_list(cloud, "web")
    assert action["events"][-1]["result"] == "Error"


@pytest.mark.parametrize(
    ("req", "error"),
    [
        (BootRequest(name="Bad_Name", flavor="small", image="tiny"), InvalidInput),
        (BootRequest(name="-x", flavor="small", image="tiny"), InvalidInput),
        (BootRequest(name="a" * 64, flavor="small", image="tiny"), InvalidInput),
        (BootRequest(name="web", flavor="nope", image="tiny"), NotFound),
        (BootRequest(name="web", flavor="small", image="nope"), NotFound),
        (BootRequest(name="web", flavor="small", image="tiny", count=0), InvalidInput),
        (BootRequest(name="web", flavor="small", image="tiny", key_name="nokey"), NotFound),
        (
            BootRequest(name="web", flavor="small", image="tiny", availability_zone="bad az"),
            InvalidInput,
        ),
        (
            BootRequest(name="web", flavor="small", image="tiny", availability_zone="nova:nohost"),
            NotFound,
        ),
        (BootRequest(name="web", flavor="huge", image="tiny"), NoValidHost),
        (
            BootRequest(name="web", flavor="small", image="tiny", availability_zone="az9"),
            NoValidHost,
        ),
        (BootRequest(name="web", flavor="small", image="tiny", count=30), QuotaExceeded),
    ],
)
def test_refused_boots_leave_nothing(
    cloud: Context, fake: FakeExecutor, req: BootRequest, error: type[CloudctlError]
) -> None:
    with pytest.raises(error) as exc:
        compute.boot(cloud, req)
    assert exc.value.exit_code == (2 if error in (InvalidInput, NotFound) else 1)
    assert counts(cloud) == (0, 0, 0)
    assert fake.requests == []


def test_no_valid_host_names_the_filter(cloud: Context) -> None:
    with pytest.raises(NoValidHost, match=r"RamFilter removed 2 \(h1: ram: needs 8192 MiB"):
        compute.boot(cloud, BootRequest(name="web", flavor="huge", image="tiny"))


def test_image_larger_than_flavor_disk(cloud: Context) -> None:
    add_image(
        cloud, "big", uuid="22222222-2222-4222-8222-222222222222", virtual_size_bytes=5 * 1024**3
    )
    with pytest.raises(InvalidInput, match="smaller than the image"):
        compute.boot(cloud, BootRequest(name="web", flavor="small", image="big"))


def test_duplicate_name_refused(cloud: Context) -> None:
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    with pytest.raises(AlreadyExists):
        compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))


def test_delete_frees_claim_ip_and_marks_deleted(cloud: Context, fake: FakeExecutor) -> None:
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    [gone] = compute.delete(cloud, ["web"])
    assert gone["status"] == "DELETED"
    assert counts(cloud) == (0, 0, 0)
    req = fake.requests[-1]
    assert req.playbook == "destroy.yml"
    assert req.extravars["cloudctl_domains"]["h1"] == [{"name": view["domain"], "state": "absent"}]
    assert req.extravars["cloudctl_disks"]["h1"] == [{"uuid": view["uuid"]}]
    assert [a["action"] for a in compute.action_list(cloud, "web")] == ["create", "delete"]
    # the name is free again (soft delete keeps the row)
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))


def test_delete_failure_keeps_books(cloud: Context, fake: FakeExecutor) -> None:
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    fake.fail("destroy.yml", host="h1", task="undefine", msg="libvirt down")
    with pytest.raises(OperationFailed, match="libvirt down"):
        compute.delete(cloud, ["web"])
    view = compute.show_instance(cloud, "web")
    assert view["status"] == "ERROR"
    assert counts(cloud) == (1, 3, 1)


def test_power_state_machine(cloud: Context, fake: FakeExecutor) -> None:
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    with pytest.raises(InvalidState):
        compute.power(cloud, ["web"], "start")
    fake.on(
        "power.yml",
        lambda req: {
            h: {"power": {"results": [{"name": g["name"], "state": "shutoff"} for g in gs]}}
            for h, gs in req.extravars["cloudctl_domains"].items()
        },
    )
    [v] = compute.power(cloud, ["web"], "stop")
    assert (v["status"], v["power_state"]) == ("SHUTOFF", "SHUTDOWN")
    assert fake.requests[-1].extravars["cloudctl_domains"]["h1"][0]["state"] == "shutdown"


def test_fault_rows_recorded(cloud: Context, fake: FakeExecutor) -> None:
    cloud.settings = replace(
        cloud.settings, scheduler=replace(cloud.settings.scheduler, max_attempts=1)
    )
    fake.fail("spawn.yml", host="h1", task="disks", msg="no space")
    with pytest.raises(OperationFailed):
        compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    with cloud.db.unit_of_work() as s:
        fault = s.scalars(select(InstanceFault)).one()
        assert "no space" in fault.message and fault.host == "h1"
        assert fault.created_at == NOW


def test_key_pair_reaches_the_config_drive(cloud: Context, fake: FakeExecutor) -> None:
    from cloudctl.services import keypairs

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@example"
    keypairs.add_keypair(cloud, "k", key)
    compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny", key_name="k"))
    [drive] = fake.requests[-1].extravars["cloudctl_config_drives"]["h1"]
    assert key in drive["files"]["meta-data"]


def test_ephemeral_and_swap_disks_are_built_and_attached(
    cloud: Context, fake: FakeExecutor
) -> None:
    flavors.create_flavor(
        cloud, "big", vcpus=1, memory_mb=256, root_gb=2, ephemeral_gb=1, swap_mb=512
    )
    [view] = compute.boot(cloud, BootRequest(name="eph", flavor="big", image="tiny"))
    req = fake.requests[-1]
    [disks] = req.extravars["cloudctl_disks"]["h1"]
    assert (disks["root_gb"], disks["ephemeral_gb"], disks["swap_mb"]) == (2, 1, 512)
    xml = req.extravars["cloudctl_domains"]["h1"][0]["xml"]
    base = f"/var/lib/cloudctl/instances/{view['uuid']}"
    for path, dev in (
        (f"{base}/disk", "vda"),
        (f"{base}/disk.eph0", "vdb"),
        (f"{base}/disk.swap", "vdc"),
        (f"{base}/disk.config", "vdd"),
    ):
        assert f"<source file='{path}'/>" in xml or f'<source file="{path}"/>' in xml
        assert f"dev='{dev}'" in xml or f'dev="{dev}"' in xml
    with cloud.db.unit_of_work() as s:
        assert (
            sum(
                a.used
                for a in s.scalars(select(Allocation).where(Allocation.resource_class == "DISK_GB"))
            )
            == 4
        )
