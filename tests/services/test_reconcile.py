"""verify / reconcile over the fake executor: the survey read, each fix applied and recorded."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from cloudctl import ledger
from cloudctl.db.models import Allocation, CommandLease, HostEvent, Instance, InstanceAction
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, leases, reconcile
from cloudctl.services.compute import BootRequest
from cloudctl.services.context import Context
from tests.conftest import NOW
from tests.services.lifecycle import another, faults, hold, power_answer, row

pytestmark = pytest.mark.ledger_edited  # some tests break the ledger on purpose, then heal it

OLD = (NOW - timedelta(days=3)).timestamp()


class Hosts:
    """What the fake hosts hold: domains, instance dirs and base files; None = unreachable."""

    def __init__(self) -> None:
        self.domains: dict[str, dict[str, tuple[str, str]]] = {"h1": {}, "h2": {}}
        self.dirs: dict[str, list[dict[str, Any]]] = {"h1": [], "h2": []}
        self.base: dict[str, list[dict[str, Any]]] = {"h1": [], "h2": []}
        self.down: set[str] = set()

    def answer(self, req: RunRequest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in req.hosts:
            if t.name in self.down:
                out[t.name] = {"host facts": {"unreachable": True, "msg": "ssh: no route"}}
                continue
            doms = [
                {"name": name, "uuid": uuid, "state": state}
                for name, (uuid, state) in sorted(self.domains[t.name].items())
            ]
            out[t.name] = {
                "host facts": {
                    "host_facts": {
                        "vcpus": 4,
                        "memory_mb": 4096,
                        "disk_gb": 100,
                        "disk_free_gb": 90,
                        "domains": doms,
                        "files": {
                            "instance_dirs": self.dirs[t.name],
                            "base_files": self.base[t.name],
                        },
                    }
                }
            }
        return out

    def destroy(self, req: RunRequest) -> dict[str, Any]:
        """destroy.yml: the named domains and directories go."""
        for host, guests in req.extravars.get("cloudctl_domains", {}).items():
            for g in guests:
                self.domains[host].pop(g["name"], None)
        for host, disks in req.extravars.get("cloudctl_disks", {}).items():
            gone = {d["uuid"] for d in disks}
            self.dirs[host] = [d for d in self.dirs[host] if d["uuid"] not in gone]
        return {t.name: {"undefine": {"changed": True}} for t in req.hosts}

    def sync(self, ctx: Context) -> None:
        """Every live instance's domain where the books say, in the state they say."""
        with ctx.db.unit_of_work() as s:
            for inst in s.scalars(select(Instance).where(Instance.deleted == 0)):
                if inst.host is not None:
                    state = {"active": "running", "stopped": "shutoff"}.get(
                        inst.vm_state, "running"
                    )
                    self.domains[inst.host.name][inst.domain_name] = (inst.uuid, state)
                    here = self.dirs[inst.host.name]
                    if not any(d["name"] == inst.uuid for d in here):
                        here.append(
                            {"name": inst.uuid, "uuid": inst.uuid, "kind": "instance", "mtime": 0}
                        )


@pytest.fixture
def hosts(cloud: Context, fake: FakeExecutor) -> Hosts:
    h = Hosts()
    fake.on("discover.yml", h.answer)
    fake.on("power.yml", power_answer)
    fake.on("destroy.yml", h.destroy)
    return h


def boot(ctx: Context, name: str, host: str = "h1") -> str:
    req = BootRequest(name=name, flavor="small", image="tiny", availability_zone=f"nova:{host}")
    [view] = compute.boot(ctx, req)
    return str(view["uuid"])


def codes(ctx: Context) -> list[tuple[str, str]]:
    return [(f["code"], f["object"]) for f in reconcile.verify(ctx)["findings"]]


def test_clean_estate_verifies_clean_and_reconcile_changes_nothing(
    cloud: Context, hosts: Hosts, fake: FakeExecutor
) -> None:
    boot(cloud, "web")
    hosts.sync(cloud)
    report = reconcile.verify(cloud)
    assert report["findings"] == [] and report["errors"] == 0
    passed = reconcile.reconcile(cloud)
    assert passed.corrections == [] and passed.tasks_run == list(reconcile.TASKS)
    survey = [r for r in fake.requests if r.playbook == "discover.yml"][-1]
    assert survey.extravars == {"cloudctl_survey_files": True}
    assert {t.name for t in survey.hosts} == {"h1", "h2"}  # one play, every host


@pytest.mark.parametrize(
    ("policy", "vm_state", "power_play"),
    [("report", "stopped", None), ("restore", "active", "running")],
)
def test_guest_stopped_behind_our_back(
    cloud: Context,
    hosts: Hosts,
    fake: FakeExecutor,
    policy: str,
    vm_state: str,
    power_play: str | None,
) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    name = next(iter(hosts.domains["h1"]))
    hosts.domains["h1"][name] = (uuid, "shutoff")
    assert codes(cloud) == [("EPOWER001", "web")]
    cloud.settings = replace(cloud.settings, sync_power_state_policy=policy)
    before = len(fake.requests)
    report = reconcile.reconcile(cloud)
    assert [(c.code, c.ok) for c in report.corrections] == [("EPOWER001", True)]
    assert row(cloud, "web").vm_state == vm_state
    plays = [r for r in fake.requests[before:] if r.playbook == "power.yml"]
    if power_play is None:
        assert plays == []
        assert row(cloud, "web").power_state == 4
    else:
        [play] = plays
        assert [g["state"] for g in play.extravars["cloudctl_domains"]["h1"]] == [power_play]
    with cloud.db.unit_of_work() as s:
        acts = s.scalars(select(InstanceAction).where(InstanceAction.instance_uuid == uuid))
        recon = [a for a in acts if a.action == "reconcile"]
        assert len(recon) == 1
        assert [e.event for e in recon[0].events] == ["sync_power_states"]
        assert "EPOWER001" in (recon[0].events[0].details or "")


def dead(ctx: Context, uuid: str, vm_state: str, task_state: str) -> str:
    """Leave ``uuid`` as a command that died mid-task would: in its task, its lease expired."""
    with ctx.db.unit_of_work() as s:
        s.execute(update(Instance).where(Instance.uuid == uuid).values(vm_state=vm_state))
    return hold(ctx, uuid, task_state, expires_in_s=-1, command="boot web")


def leases_left(ctx: Context) -> list[str]:
    with ctx.db.unit_of_work() as s:
        return list(s.scalars(select(CommandLease.command)))


def test_a_dead_build_without_its_domain_is_rolled_back(cloud: Context, hosts: Hosts) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    hosts.domains["h1"].clear()  # killed before the spawn defined it
    dead(cloud, uuid, "building", "block_device_mapping")
    assert codes(cloud) == [("ELEASE001", "boot web"), ("ESTATE002", "web")]
    report = reconcile.reconcile(cloud)
    assert [(c.code, c.ok) for c in report.corrections] == [
        ("ESTATE002", True),
        ("ELEASE001", True),
    ]
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state, inst.task_owner) == ("error", None, None)
    assert faults(cloud, "web")[-1].startswith("Build interrupted: it does not run on h1")
    assert hosts.dirs["h1"] == []  # its directory was cleaned
    with cloud.db.unit_of_work() as s:
        assert ledger.allocations_of(s, uuid) == {}
        assert reconcile.ledger_findings(s, NOW) == []
    assert leases_left(cloud) == []
    assert codes(cloud) == []


def test_a_dead_build_whose_guest_runs_is_rolled_forward(cloud: Context, hosts: Hosts) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    dead(cloud, uuid, "building", "spawning")
    reconcile.reconcile(cloud)
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state, inst.power_state) == ("active", None, 1)
    with cloud.db.unit_of_work() as s:
        assert list(ledger.allocations_of(s, uuid).values()) != []
        acts = s.scalars(select(InstanceAction).where(InstanceAction.instance_uuid == uuid))
        settled = [e for a in acts for e in a.events if e.event == "settle"]
        assert [e.details for e in settled] == ["build forward: it runs on h1"]
    assert codes(cloud) == []


@pytest.mark.parametrize(
    ("task_state", "domain", "vm_state"),
    [
        ("powering-off", "shutoff", "stopped"),  # done before it died
        ("powering-off", "running", "active"),  # not done: back as it was
        ("pausing", "paused", "paused"),
        ("rebooting", "running", "active"),
    ],
)
def test_a_dead_power_command_is_settled_by_the_domain(
    cloud: Context, hosts: Hosts, task_state: str, domain: str, vm_state: str
) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    hosts.domains["h1"][row(cloud, "web").domain_name] = (uuid, domain)
    dead(cloud, uuid, "active", task_state)
    reconcile.reconcile(cloud)
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state) == (vm_state, None)
    assert codes(cloud) == []


def test_a_dead_delete_is_finished(cloud: Context, hosts: Hosts) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    dead(cloud, uuid, "active", "deleting")
    reconcile.reconcile(cloud)
    assert row(cloud, "web").deleted
    assert hosts.domains["h1"] == {}
    with cloud.db.unit_of_work() as s:
        assert ledger.allocations_of(s, uuid) == {}
    assert codes(cloud) == []


def test_a_task_with_no_owner_is_settled_too(cloud: Context, hosts: Hosts) -> None:
    """Rows written before leases (or by a bug): nobody owns the task, so nobody is waited for."""
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    with cloud.db.unit_of_work() as s:
        s.execute(update(Instance).where(Instance.uuid == uuid).values(task_state="rebooting"))
    assert codes(cloud) == [("ESTATE002", "web")]
    reconcile.reconcile(cloud)
    assert row(cloud, "web").task_state is None
    assert codes(cloud) == []


def test_a_dead_command_whose_host_is_silent_waits(cloud: Context, hosts: Hosts) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    dead(cloud, uuid, "active", "rebooting")
    hosts.down.add("h1")
    report = reconcile.reconcile(cloud)
    assert [c.code for c in report.corrections if c.code == "ESTATE002"] == []
    assert row(cloud, "web").task_state == "rebooting"  # not guessed
    hosts.down.clear()
    reconcile.reconcile(cloud)
    assert row(cloud, "web").task_state is None


def test_a_second_controller_never_settles_what_the_first_took(
    cloud: Context, hosts: Hosts
) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    lease = dead(cloud, uuid, "active", "rebooting")
    first, second = cloud, another(cloud)
    with leases.command_lease(first, "reconcile") as mine:
        assert leases.take_over(first, lease, mine)
        assert not leases.take_over(second, lease, mine)  # compare-and-swap: taken already
        report = reconcile.reconcile(second)  # sees the instance busy (a live lease holds it)
        assert report.corrections == []
        assert row(second, "web").task_owner == mine.uuid


def test_ledger_rows_edited_wrong_are_found_and_healed(cloud: Context, hosts: Hosts) -> None:
    web = boot(cloud, "web")
    db = boot(cloud, "db", host="h2")
    hosts.sync(cloud)
    with cloud.db.unit_of_work() as s:
        s.execute(
            update(Allocation)
            .where(Allocation.consumer_uuid == web, Allocation.resource_class == "MEMORY_MB")
            .values(used=1)
        )
        s.query(Allocation).filter(Allocation.consumer_uuid == db).delete()
        h1 = s.scalars(select(Instance).where(Instance.uuid == web)).one().host
        assert h1 is not None
        s.add(Allocation(host_id=h1.id, consumer_uuid="ghost", resource_class="VCPU", used=3))
    assert sorted(codes(cloud)) == [
        ("ELEDGER002", "ghost"),
        ("ELEDGER003", "db"),
        ("ELEDGER004", "web"),
    ]
    report = reconcile.reconcile(cloud)
    assert all(c.ok for c in report.corrections) and len(report.corrections) == 3
    assert codes(cloud) == []
    with cloud.db.unit_of_work() as s:
        events = list(s.scalars(select(HostEvent).where(HostEvent.event == "heal_allocations")))
        assert [e.message.split(" ")[0] for e in events if e.message] == ["ELEDGER002"]


def test_deleted_guests_domain_is_reaped_and_orphan_files_removed(
    cloud: Context, hosts: Hosts, fake: FakeExecutor
) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    fake.on("destroy.yml", lambda req: {"h1": {"undefine": {"changed": True, "results": []}}})
    compute.delete(cloud, ["web"])  # the fake host keeps the domain and files: a lost delete
    orphan = "0badc0de-0000-4000-8000-000000000001"
    hosts.dirs["h1"] = [
        {"name": uuid, "uuid": uuid, "kind": "instance", "mtime": OLD},
        {"name": orphan + "_resize", "uuid": orphan, "kind": "resize", "mtime": OLD},
        {"name": "lost+found", "uuid": None, "kind": "other", "mtime": OLD},
    ]
    hosts.base["h1"] = [
        {"name": "a" * 64, "mtime": OLD, "in_use": False, "size_bytes": 1},
        {"name": "b" * 64, "mtime": OLD, "in_use": True, "size_bytes": 1},
    ]
    found = codes(cloud)
    # the deleted guest's own directory goes with its domain (destroy.yml), not as an orphan
    assert [c for c, _ in found] == ["EDOMAIN003", "EFILE002", "EFILE003"]
    fake.on("destroy.yml", lambda req: {"h1": {"undefine": {"changed": True, "results": []}}})
    path = "/var/lib/cloudctl/instances"
    fake.on(
        "cleanup_files.yml",
        lambda req: {
            "h1": {
                "cleanup files": {
                    "changed": True,
                    "results": [
                        {"path": f"{path}/{orphan}_resize", "removed": True},
                        {"path": f"{path}/_base/{'a' * 64}", "removed": True},
                    ],
                }
            }
        },
    )
    report = reconcile.reconcile(cloud)
    assert [(c.code, c.ok) for c in report.corrections] == [
        ("EDOMAIN003", True),
        ("EFILE002", True),
        ("EFILE003", True),
    ]
    destroy = next(r for r in fake.requests if r.playbook == "destroy.yml")
    assert destroy.extravars["cloudctl_domains"]["h1"][0]["state"] == "absent"
    assert destroy.extravars["cloudctl_disks"] == {"h1": [{"uuid": uuid}]}
    cleanup = next(r for r in fake.requests if r.playbook == "cleanup_files.yml")
    assert cleanup.extravars["cloudctl_cleanup"] == {
        "h1": {
            "instance_dirs": [{"uuid": orphan, "kind": "resize"}],
            "base_files": ["a" * 64],
        }
    }
    with cloud.db.unit_of_work() as s:
        events = [e.event for e in s.scalars(select(HostEvent).where(HostEvent.host == "h1"))]
    assert events.count("cleanup_orphaned_files") == 2
    assert events.count("cleanup_running_deleted_instances") == 1


def test_a_failed_removal_is_reported_not_hidden(
    cloud: Context, hosts: Hosts, fake: FakeExecutor
) -> None:
    orphan = "0badc0de-0000-4000-8000-000000000002"
    hosts.dirs["h2"] = [{"name": orphan, "uuid": orphan, "kind": "instance", "mtime": OLD}]
    fake.fail("cleanup_files.yml", host="h2", task="cleanup files", msg="permission denied")
    report = reconcile.reconcile(cloud)
    [corr] = report.corrections
    assert not corr.ok and "permission denied" in corr.what
    assert report.view()["failed"] == 1


def test_host_silent_past_service_down_time_goes_down_once(cloud: Context, hosts: Hosts) -> None:
    hosts.down.add("h2")
    report = reconcile.reconcile(cloud)
    assert report.hosts_down == []  # its heartbeat is still fresh: a warning only
    assert ("EHOST002", "h2") in [(f.code, f.object) for f in report.findings]
    cloud.clock = lambda: NOW + timedelta(seconds=cloud.settings.service_down_time_s + 1)
    report = reconcile.reconcile(cloud)
    assert report.hosts_down == ["h2"] and report.hosts_up == ["h1"]
    assert ("EHOST001", "h2") in [(f.code, f.object) for f in report.findings]
    reconcile.reconcile(cloud)
    hosts.down.clear()
    reconcile.reconcile(cloud)
    events = [(e["event"]) for e in reconcile.host_events(cloud, "h2")]
    assert events == ["up", "down"]  # newest first; recorded on change only


def test_an_instance_a_live_command_holds_is_left_alone(cloud: Context, hosts: Hosts) -> None:
    uuid = boot(cloud, "web")
    hosts.sync(cloud)
    name = next(iter(hosts.domains["h1"]))
    hosts.domains["h1"][name] = (uuid, "shutoff")
    hold(cloud, uuid, "powering-off", expires_in_s=20)  # on another controller, alive
    report = reconcile.reconcile(cloud)
    assert report.corrections == []
    assert row(cloud, "web").vm_state == "active"


def test_should_stop_ends_the_pass_between_tasks(cloud: Context, hosts: Hosts) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    report = reconcile.reconcile(cloud, should_stop=stop)
    assert report.stopped
    assert report.tasks_run == list(reconcile.TASKS[:3])


def test_verify_fix_heals_then_reports_what_is_left(cloud: Context, hosts: Hosts) -> None:
    web = boot(cloud, "web")
    hosts.sync(cloud)
    with cloud.db.unit_of_work() as s:
        s.query(Allocation).filter(Allocation.consumer_uuid == web).delete()
    hosts.domains["h2"]["stranger"] = ("5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00", "running")
    report = reconcile.verify(cloud, fix=True)
    assert [f["code"] for f in report["fixed"]] == ["ELEDGER003"]
    assert [f["code"] for f in report["findings"]] == ["EDOMAIN004"]  # a warning: exit 0
    assert report["errors"] == 0 and report["warnings"] == 1
    with cloud.db.unit_of_work() as s:
        assert ledger.allocations_of(s, web) != {}


def test_a_pass_reclaims_expired_soft_deletes(
    cloud: Context, hosts: Hosts, fake: FakeExecutor
) -> None:
    cloud.settings = replace(cloud.settings, reclaim_instance_interval=60)
    boot(cloud, "web")
    hosts.sync(cloud)
    compute.delete(cloud, ["web"])  # soft: powered off, kept
    name = next(iter(hosts.domains["h1"]))
    hosts.domains["h1"][name] = (hosts.domains["h1"][name][0], "shutoff")
    assert reconcile.reconcile(cloud).reclaimed == []
    cloud.clock = lambda: NOW + timedelta(seconds=61)
    report = reconcile.reconcile(cloud)
    assert report.reclaimed == ["web"]
    assert fake.requests[-1].playbook == "destroy.yml"
    assert row(cloud, "web").vm_state == "deleted"
