"""``cloudctl adopt``: a libvirt guest cloudctl did not create, booked over the fake executor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import select

from cloudctl import ledger
from cloudctl.db.models import Host, Instance, InstanceAction
from cloudctl.errors import AlreadyExists, InvalidInput, NotFound, OperationFailed
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import adopt as service
from cloudctl.services import compute, flavors
from cloudctl.services.context import Context

UUID = "6f0c3d4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
GiB = 1024**3


def domain(name: str = "legacy-web", **kw: Any) -> dict[str, Any]:
    """What cloudctl_domain_info reports of a found domain."""
    values: dict[str, Any] = {
        "name": name,
        "found": True,
        "uuid": UUID.upper(),
        "state": "running",
        "has_managed_save": False,
        "persistent": True,
        "autostart": False,
        "domain_type": "kvm",
        "vcpus": 1,
        "memory_mb": 512,
        "disks": [
            {
                "target": "vda",
                "device": "disk",
                "type": "file",
                "format": "qcow2",
                "source": "/srv/legacy-web.qcow2",
                "readonly": False,
                "virtual_size_bytes": GiB,
            },
            {
                "target": "vdb",
                "device": "disk",
                "type": "file",
                "format": "raw",
                "source": "/srv/seed.iso",
                "readonly": True,
                "virtual_size_bytes": 50 * GiB,
            },
        ],
        "nics": [{"mac": "52:54:00:12:34:56", "type": "bridge", "source": "br0"}],
        "macs": ["52:54:00:12:34:56"],
    }
    values.update(kw)
    return values


def answer(fake: FakeExecutor, *entries: Mapping[str, Any]) -> None:
    """Answer domain_info.yml runs with ``entries`` (names asked for and not given: not found)."""

    def respond(req: RunRequest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for host, names in req.extravars["cloudctl_domains"].items():
            given = {e["name"]: e for e in entries}
            out[host] = {
                "domain info": {
                    "changed": False,
                    "domains": [given.get(n, {"name": n, "found": False}) for n in names],
                }
            }
        return out

    fake.on("domain_info.yml", respond)


def test_adopt_books_the_domain_on_its_host(cloud: Context, fake: FakeExecutor) -> None:
    answer(fake, domain())
    view = service.adopt(cloud, "h1", "legacy-web")
    [req] = fake.requests
    assert (req.playbook, [h.name for h in req.hosts], dict(req.extravars)) == (
        "domain_info.yml",
        ["h1"],
        {"cloudctl_domains": {"h1": ["legacy-web"]}},
    )
    assert (view["name"], view["uuid"], view["status"], view["power_state"]) == (
        "legacy-web",
        UUID,
        "ACTIVE",
        "RUNNING",
    )
    assert (view["host"], view["domain"], view["flavor"], view["image"]) == (
        "h1",
        "legacy-web",
        "small",
        None,
    )
    assert (view["vcpus"], view["ram"], view["disk"]) == (1, 512, 1)
    with cloud.db.unit_of_work() as s:
        h1 = s.scalars(select(Host).where(Host.name == "h1")).one()
        assert ledger.allocations_of(s, UUID) == {
            h1.id: {ledger.VCPU: 1, ledger.MEMORY_MB: 512, ledger.DISK_GB: 1}
        }
        inst = s.scalars(select(Instance).where(Instance.uuid == UUID)).one()
        assert inst.request_spec is not None
        assert inst.request_spec["adopted"]["macs"] == ["52:54:00:12:34:56"]
        assert inst.availability_zone == "nova" and inst.launched_at is not None
    [act] = compute.action_list(cloud, "legacy-web")
    assert act["action"] == "adopt" and act["finish_time"] is not None
    [event] = act["events"]
    assert (event["event"], event["result"], event["host"]) == ("adopt", "Success", "h1")
    assert event["details"] == (
        "domain legacy-web (running; 1 vCPU(s), 512 MiB, root disk 1.00 GiB) on h1 booked as "
        "flavor small"
    )


def test_an_adopted_guest_is_deleted_like_any_other(cloud: Context, fake: FakeExecutor) -> None:
    answer(fake, domain())
    service.adopt(cloud, "h1", "legacy-web", name="web")
    compute.delete(cloud, ["web"])
    destroy = fake.requests[-1]
    assert destroy.playbook == "destroy.yml"
    assert destroy.extravars["cloudctl_domains"] == {
        "h1": [{"name": "legacy-web", "state": "absent"}]
    }
    with cloud.db.unit_of_work() as s:
        assert ledger.allocations_of(s, UUID) == {}


@pytest.mark.parametrize(
    ("reported", "status", "power"),
    [
        ({"state": "shutoff"}, "SHUTOFF", "SHUTDOWN"),
        ({"state": "paused"}, "PAUSED", "PAUSED"),
        ({"state": "shutoff", "has_managed_save": True}, "SUSPENDED", "SHUTDOWN"),
    ],
)
def test_the_vm_state_follows_the_domain(
    cloud: Context, fake: FakeExecutor, reported: dict[str, Any], status: str, power: str
) -> None:
    answer(fake, domain(**reported))
    view = service.adopt(cloud, "h1", "legacy-web")
    assert (view["status"], view["power_state"]) == (status, power)


def test_a_domain_already_booked_is_refused(cloud: Context, fake: FakeExecutor) -> None:
    [booted] = compute.boot(cloud, compute.BootRequest(name="web", flavor="small", image="tiny"))
    answer(fake, domain(booted["domain"], uuid=booted["uuid"]))
    with pytest.raises(AlreadyExists, match=f"domain {booted['domain']} on h1 is already"):
        service.adopt(cloud, booted["host"], booted["domain"], name="other")
    assert fake.requests[-1].playbook == "spawn.yml"  # refused before asking the host
    # Known by UUID, even under another domain name or after the instance was deleted.
    answer(fake, domain("renamed", uuid=booted["uuid"]))
    with pytest.raises(AlreadyExists) as caught:
        service.adopt(cloud, "h2", "renamed", name="other")
    assert caught.value.message == (
        f"domain renamed ({booted['uuid']}) is already known to cloudctl as instance web"
    )
    compute.delete(cloud, ["web"])
    with pytest.raises(AlreadyExists, match=r"as instance web \(deleted\)"):
        service.adopt(cloud, "h2", "renamed", name="other")


def test_a_name_already_taken_is_refused(cloud: Context, fake: FakeExecutor) -> None:
    compute.boot(cloud, compute.BootRequest(name="web", flavor="small", image="tiny"))
    answer(fake, domain())
    with pytest.raises(AlreadyExists, match="instance 'web' already exists"):
        service.adopt(cloud, "h1", "legacy-web", name="web")


def test_names_are_validated_before_the_host_is_asked(cloud: Context, fake: FakeExecutor) -> None:
    with pytest.raises(InvalidInput, match=r"domain name 'Legacy_Web' is not a valid instance"):
        service.adopt(cloud, "h1", "Legacy_Web")
    with pytest.raises(InvalidInput, match="instance name 'Web!'"):
        service.adopt(cloud, "h1", "legacy-web", name="Web!")
    with pytest.raises(InvalidInput, match=r"domain name '\.\./x' must match"):
        service.adopt(cloud, "h1", "../x", name="x")
    with pytest.raises(NotFound, match="host 'h9' not found"):
        service.adopt(cloud, "h9", "legacy-web")
    with pytest.raises(NotFound, match="flavor 'nope' not found"):
        service.adopt(cloud, "h1", "legacy-web", flavor="nope")
    assert fake.requests == []


def test_a_domain_name_that_is_no_instance_name_is_adopted_with_name(
    cloud: Context, fake: FakeExecutor
) -> None:
    answer(fake, domain("Legacy_Web"))
    view = service.adopt(cloud, "h1", "Legacy_Web", name="legacy")
    assert (view["name"], view["domain"]) == ("legacy", "Legacy_Web")


def test_a_missing_domain_is_not_found(cloud: Context, fake: FakeExecutor) -> None:
    answer(fake)
    with pytest.raises(NotFound, match="domain 'legacy-web' is not defined on host h1"):
        service.adopt(cloud, "h1", "legacy-web")


def test_a_transient_domain_is_refused(cloud: Context, fake: FakeExecutor) -> None:
    answer(fake, domain(persistent=False))
    with pytest.raises(InvalidInput, match="domain legacy-web on h1 is transient: define it"):
        service.adopt(cloud, "h1", "legacy-web")


def test_a_failed_play_fails_the_adoption(cloud: Context, fake: FakeExecutor) -> None:
    answer(fake, domain())
    fake.fail("domain_info.yml", host="h1", task="domain info", msg="cannot connect to libvirt")
    with pytest.raises(OperationFailed) as caught:
        service.adopt(cloud, "h1", "legacy-web")
    assert caught.value.message == (
        "adopt of instance 'legacy-web' failed: task 'domain info' on h1: cannot connect to libvirt"
    )
    with cloud.db.unit_of_work() as s:
        assert s.scalars(select(Instance)).all() == []


def test_the_flavor_is_the_one_of_the_guest_size(cloud: Context, fake: FakeExecutor) -> None:
    flavors.create_flavor(cloud, "big-disk", vcpus=1, memory_mb=512, root_gb=20)
    flavors.create_flavor(cloud, "two-cpu", vcpus=2, memory_mb=512, root_gb=1)
    answer(fake, domain())
    assert service.adopt(cloud, "h1", "legacy-web")["flavor"] == "small"  # the tightest disk


def test_a_bigger_disk_needs_a_bigger_flavor(cloud: Context, fake: FakeExecutor) -> None:
    flavors.create_flavor(cloud, "big-disk", vcpus=1, memory_mb=512, root_gb=20)
    big = domain()
    big["disks"][0]["virtual_size_bytes"] = 10 * GiB
    answer(fake, big)
    assert service.adopt(cloud, "h1", "legacy-web")["flavor"] == "big-disk"


def test_no_flavor_of_the_guest_size_asks_for_one(cloud: Context, fake: FakeExecutor) -> None:
    answer(fake, domain(vcpus=3, memory_mb=3000))
    with pytest.raises(InvalidInput) as caught:
        service.adopt(cloud, "h1", "legacy-web")
    assert caught.value.message == (
        "invalid input: no flavor fits domain legacy-web (3 vCPU(s), 3000 MiB, root disk "
        "1.00 GiB): pass --flavor"
    )


def test_two_flavors_of_the_same_size_ask_for_one(cloud: Context, fake: FakeExecutor) -> None:
    flavors.create_flavor(cloud, "small-too", vcpus=1, memory_mb=512, root_gb=1)
    answer(fake, domain())
    with pytest.raises(
        InvalidInput,
        match=r"several flavors fit domain legacy-web .*: small, small-too; pass --flavor",
    ):
        service.adopt(cloud, "h1", "legacy-web")
    assert service.adopt(cloud, "h1", "legacy-web", flavor="small-too")["flavor"] == "small-too"


def test_an_explicit_flavor_must_hold_the_guest(cloud: Context, fake: FakeExecutor) -> None:
    answer(fake, domain(vcpus=2, memory_mb=1024))
    with pytest.raises(InvalidInput) as caught:
        service.adopt(cloud, "h1", "legacy-web", flavor="small")
    assert caught.value.message == (
        "invalid input: flavor small (1 vCPU(s), 512 MiB, root disk 1 GiB) is smaller than "
        "domain legacy-web (2 vCPU(s), 1024 MiB, root disk 1.00 GiB)"
    )
    flavors.create_flavor(cloud, "medium", vcpus=2, memory_mb=2048, root_gb=5)
    view = service.adopt(cloud, "h1", "legacy-web", flavor="medium")  # bigger is fine
    assert (view["flavor"], view["vcpus"], view["ram"], view["disk"]) == ("medium", 2, 2048, 5)


def test_an_unknown_disk_size_does_not_block_the_choice(cloud: Context, fake: FakeExecutor) -> None:
    unknown = domain()
    unknown["disks"][0]["virtual_size_bytes"] = None
    answer(fake, unknown)
    assert service.adopt(cloud, "h1", "legacy-web")["flavor"] == "small"
    [act] = compute.action_list(cloud, "legacy-web")
    assert "root disk unknown" in act["events"][0]["details"]


def test_adoption_is_not_bounded_by_capacity(cloud: Context, fake: FakeExecutor) -> None:
    """The guest exists already: the ledger records it even past the host's capacity."""
    answer(fake, domain(memory_mb=8192))
    view = service.adopt(cloud, "h2", "legacy-web")  # h2 has 2048 MiB
    assert (view["host"], view["ram"]) == ("h2", 8192)
    with cloud.db.unit_of_work() as s:
        assert s.scalars(select(InstanceAction.action)).all() == ["adopt"]
