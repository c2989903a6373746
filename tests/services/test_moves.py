"""Moves over the fake executor: cold migrate, resize, confirm/revert, live migration with its
checks and rollback, evacuate, drain; the ledger checked at every step (both hosts during a
move, one after, nothing left behind by a failure)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from cloudctl.db.models import Allocation, Host, Instance, InstanceFault, Migration
from cloudctl.domain.settings import Settings
from cloudctl.errors import (
    ExecutorError,
    InvalidInput,
    InvalidState,
    NoValidHost,
    OperationFailed,
    QuotaExceeded,
)
from cloudctl.executor.base import RunEvent, RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, flavors, quotas, reconcile
from cloudctl.services.compute import evacuate as evac
from cloudctl.services.compute import live_migrate as live
from cloudctl.services.compute import migrate as cold
from cloudctl.services.compute import moves
from cloudctl.services.compute.moves import CheckReport, HostFacts, live_migration_problems
from cloudctl.services.context import Context
from tests.conftest import NOW

FACTS = {"hypervisor_type": "QEMU", "hypervisor_version": 7002000, "libvirt_version": 9000000}


def checks(shared: bool = True, cpu: str = "identical", dest_version: int = 7002000) -> Any:
    def respond(req: RunRequest) -> dict[str, Any]:
        c = req.extravars["cloudctl_check"]
        return {
            c["dest"]: {
                "destination probe": {"changed": True, **FACTS},
                "destination checks": {
                    **FACTS,
                    "hypervisor_version": dest_version,
                    "cpu_compare": cpu,
                },
            },
            c["source"]: {"source facts": {**FACTS, "probe_found": shared}},
        }

    return respond


def spawned(req: RunRequest) -> dict[str, Any]:
    out: dict[str, Any] = {h.name: {} for h in req.hosts}
    for host, data in req.extravars.get("cloudctl_incoming", {}).items():
        out[host]["spawn"] = {
            "changed": True,
            "results": [
                {"name": d["name"], "state": "running" if d["state"] == "running" else "shutoff"}
                for d in data.get("domains", [])
            ],
        }
    return out


@pytest.fixture
def moving(cloud: Context, fake: FakeExecutor) -> Context:
    with cloud.db.unit_of_work() as s:
        s.execute(update(Host).where(Host.name == "h1").values(address="10.0.0.1"))
        s.execute(update(Host).where(Host.name == "h2").values(address="10.0.0.2"))
    flavors.create_flavor(cloud, "bigger", vcpus=2, memory_mb=1024, root_gb=2)
    compute.boot(cloud, compute.BootRequest(name="web", flavor="small", image="tiny"))
    fake.on("migrate_check.yml", checks())
    fake.on("migrate_cold.yml", spawned)
    return cloud


def allocations(ctx: Context) -> set[tuple[str, str, int]]:
    """(host, consumer kind, MEMORY_MB) of every allocation."""
    with ctx.db.unit_of_work() as s:
        inst = {i.uuid for i in s.scalars(select(Instance))}
        migs = {m.uuid for m in s.scalars(select(Migration))}
        hosts = {h.id: h.name for h in s.scalars(select(Host))}
        out = set()
        for a in s.scalars(select(Allocation).where(Allocation.resource_class == "MEMORY_MB")):
            kind = "inst" if a.consumer_uuid in inst else "mig" if a.consumer_uuid in migs else "?"
            out.add((hosts[a.host_id], kind, a.used))
        return out


def migration(ctx: Context) -> dict[str, Any]:
    return moves.list_migrations(ctx, "web")[-1]


def events(ctx: Context, index: int = -1) -> list[tuple[str, str]]:
    return [(e["event"], e["result"]) for e in compute.action_list(ctx, "web")[index]["events"]]


# --- cold migrate, resize, confirm, revert ----------------------------------------------------


def test_cold_migrate_holds_both_hosts_until_confirm(moving: Context, fake: FakeExecutor) -> None:
    view = cold.migrate(moving, "web")
    assert (view["status"], view["host"]) == ("VERIFY_RESIZE", "h2")
    assert allocations(moving) == {("h1", "mig", 512), ("h2", "inst", 512)}
    req = [r for r in fake.requests if r.playbook == "migrate_cold.yml"][-1]
    out = req.extravars["cloudctl_outgoing"]["h1"]
    assert out["stop"][0]["state"] == "shutdown" and out["stash"] == [{"uuid": view["uuid"]}]
    assert "dest_uri" not in out["copies"][0]  # shared storage: a local copy
    incoming = req.extravars["cloudctl_incoming"]["h2"]
    assert incoming["domains"][0]["state"] == "running"
    assert migration(moving)["status"] == "finished" and migration(moving)["shared_storage"]
    assert events(moving) == [
        ("schedule", "Success"),
        ("check", "Success"),
        ("resize_instance", "Success"),
        ("finish_resize", "Success"),
    ]
    confirmed = cold.confirm_resize(moving, "web")
    assert (confirmed["status"], confirmed["host"]) == ("ACTIVE", "h2")
    assert allocations(moving) == {("h2", "inst", 512)}
    assert fake.requests[-1].extravars["cloudctl_discard"] == {"h1": [{"uuid": view["uuid"]}]}
    assert migration(moving)["status"] == "confirmed"


def test_cold_migrate_without_shared_storage_streams_to_the_destination(
    moving: Context, fake: FakeExecutor
) -> None:
    fake.on("migrate_check.yml", checks(shared=False))
    cold.migrate(moving, "web")
    req = fake.requests[-1]
    copy = req.extravars["cloudctl_outgoing"]["h1"]["copies"][0]
    assert copy["dest_uri"] == "qemu+tcp://10.0.0.2/system"
    assert req.extravars["cloudctl_incoming"]["h2"]["base"]  # base files cached there


def test_resize_then_revert_restores_host_flavor_and_ledger(
    moving: Context, fake: FakeExecutor
) -> None:
    view = cold.resize(moving, "web", "bigger")
    assert (view["status"], view["flavor"], view["ram"], view["disk"]) == (
        "VERIFY_RESIZE",
        "bigger",
        1024,
        2,
    )
    assert allocations(moving) == {("h1", "mig", 512), ("h2", "inst", 1024)}
    disks = fake.requests[-1].extravars["cloudctl_incoming"]["h2"]["disks"]
    assert disks[0]["root_gb"] == 2
    assert (
        '<memory unit="MiB">1024</memory>'
        in (fake.requests[-1].extravars["cloudctl_incoming"]["h2"]["domains"][0]["xml"])
    )
    fake.on(
        "migrate_revert.yml",
        lambda req: {"h1": {"spawn": {"results": [{"name": view["domain"], "state": "running"}]}}},
    )
    back = cold.revert_resize(moving, "web")
    assert (back["status"], back["host"], back["flavor"], back["ram"]) == (
        "ACTIVE",
        "h1",
        "small",
        512,
    )
    assert allocations(moving) == {("h1", "inst", 512)}
    req = fake.requests[-1]
    assert req.extravars["cloudctl_dest"]["h2"]["domains"][0]["state"] == "absent"
    assert req.extravars["cloudctl_dest"]["h2"]["files"] == []  # shared: the source restores
    assert (
        '<memory unit="MiB">512</memory>'
        in req.extravars["cloudctl_source"]["h1"]["domains"][0]["xml"]
    )
    assert migration(moving)["status"] == "reverted"


def test_a_failed_cold_migration_is_undone(moving: Context, fake: FakeExecutor) -> None:
    fake.fail("migrate_cold.yml", host="h1", task="copy disks", msg="disk full")
    with pytest.raises(OperationFailed, match="disk full"):
        cold.migrate(moving, "web")
    view = compute.show_instance(moving, "web")
    assert (view["status"], view["host"], view["task_state"]) == ("ACTIVE", "h1", None)
    assert allocations(moving) == {("h1", "inst", 512)}
    assert fake.requests[-1].playbook == "migrate_revert.yml"
    assert migration(moving)["status"] == "error"
    assert ("resize_instance", "Error") in events(moving)
    with moving.db.unit_of_work() as s:
        assert "disk full" in s.scalars(select(InstanceFault)).one().message


def test_a_failed_undo_leaves_the_instance_in_error(moving: Context, fake: FakeExecutor) -> None:
    fake.fail("migrate_cold.yml", host="h2", task="spawn", msg="qemu died")
    fake.fail("migrate_revert.yml", host="h1", task="spawn", msg="still dead")
    with pytest.raises(OperationFailed):
        cold.migrate(moving, "web")
    assert compute.show_instance(moving, "web")["status"] == "ERROR"
    assert allocations(moving) == {("h1", "inst", 512)}


def test_same_host_resize_only_when_allowed(moving: Context, fake: FakeExecutor) -> None:
    with moving.db.unit_of_work() as s:
        s.execute(update(Host).where(Host.name == "h2").values(enabled=False))
    with pytest.raises(NoValidHost):
        cold.resize(moving, "web", "bigger")
    moving.settings = Settings(
        home=moving.settings.home, db_url=moving.settings.db_url, allow_resize_to_same_host=True
    )
    view = cold.resize(moving, "web", "bigger")
    assert view["host"] == "h1"
    assert allocations(moving) == {("h1", "mig", 512), ("h1", "inst", 1024)}
    assert [r.playbook for r in fake.requests][-1] == "migrate_cold.yml"  # no probe needed
    cold.confirm_resize(moving, "web")
    assert allocations(moving) == {("h1", "inst", 1024)}


@pytest.mark.parametrize(
    ("flavor", "reason"),
    [("small", "already has flavor"), ("tinier", "smaller root disk")],
)
def test_resize_refusals(moving: Context, flavor: str, reason: str) -> None:
    flavors.create_flavor(moving, "tinier", vcpus=1, memory_mb=256, root_gb=0)
    with pytest.raises(InvalidInput, match=reason):
        cold.resize(moving, "web", flavor)
    assert allocations(moving) == {("h1", "inst", 512)}


@pytest.mark.parametrize(
    ("limits", "resource"),
    [({"cores": 1, "ram": -1}, "cores"), ({"cores": -1, "ram": 1000}, "ram")],
)
def test_resize_checks_the_quota_for_its_growth(
    moving: Context, fake: FakeExecutor, limits: dict[str, int], resource: str
) -> None:
    quotas.set_limits(moving, {"cores": 1, "ram": 512})  # exactly what "web" uses
    cold.migrate(moving, "web")  # a move of the same size needs no quota
    cold.confirm_resize(moving, "web")
    quotas.set_limits(moving, limits)
    runs = len(fake.requests)
    with pytest.raises(QuotaExceeded, match=resource):
        cold.resize(moving, "web", "bigger")
    assert len(fake.requests) == runs  # refused before scheduling: no play, no claim
    assert allocations(moving) == {("h2", "inst", 512)}
    assert compute.show_instance(moving, "web")["task_state"] is None
    quotas.set_limits(moving, {"cores": 2, "ram": 1024})  # the growth fits exactly
    assert cold.resize(moving, "web", "bigger")["status"] == "VERIFY_RESIZE"


def test_confirm_and_revert_need_verify_resize(moving: Context) -> None:
    with pytest.raises(InvalidState):
        cold.confirm_resize(moving, "web")
    with pytest.raises(InvalidState):
        cold.revert_resize(moving, "web")


def test_confirm_due_resizes_after_the_window(moving: Context) -> None:
    cold.migrate(moving, "web")
    assert cold.confirm_due_resizes(moving, NOW + timedelta(hours=1)) == []  # 0 = off
    moving.settings = Settings(
        home=moving.settings.home, db_url=moving.settings.db_url, resize_confirm_window_s=600
    )
    with moving.db.unit_of_work() as s:
        finished = s.scalars(select(Migration)).one().updated_at
    assert finished is not None
    assert cold.confirm_due_resizes(moving, finished + timedelta(seconds=599)) == []
    assert cold.confirm_due_resizes(moving, finished + timedelta(seconds=600)) == ["web"]
    assert compute.show_instance(moving, "web")["status"] == "ACTIVE"
    assert allocations(moving) == {("h2", "inst", 512)}


# --- live migration ---------------------------------------------------------------------------


def live_responders(
    fake: FakeExecutor,
    seen: list[set[tuple[str, str, int]]],
    ctx: Context,
    *,
    fail: str | None = None,
) -> None:
    def respond(req: RunRequest) -> dict[str, Any]:
        seen.append(allocations(ctx))
        if fail:
            item = {"name": "x", "failed": True, "msg": fail}
            return {"h1": {"live migrate": {"failed": True, "msg": fail, "results": [item]}}}
        item = {"name": "x", "changed": True, "memory_total": 100, "memory_processed": 100}
        return {"h1": {"live migrate": {"changed": True, "results": [item]}}}

    fake.on("migrate_live.yml", respond)


def test_live_migration_moves_the_ledger_after_completion(
    moving: Context, fake: FakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[set[tuple[str, str, int]]] = []
    live_responders(fake, seen, moving)
    view = live.live_migrate(moving, "web")
    assert (view["status"], view["dest_host"], view["memory_progress"]) == ("completed", "h2", 100)
    assert seen[0] == {("h1", "mig", 512), ("h2", "inst", 512)}  # both hosts while it runs
    assert allocations(moving) == {("h2", "inst", 512)}
    inst = compute.show_instance(moving, "web")
    assert (inst["status"], inst["host"], inst["task_state"]) == ("ACTIVE", "h2", None)
    started = next(r for r in fake.requests if r.playbook == "migrate_live.yml")
    [guest] = started.extravars["cloudctl_outgoing"]["h1"]
    assert (guest["dest_uri"], guest["migrate_uri"], guest["block_migration"]) == (
        "qemu+tcp://10.0.0.2/system",
        "tcp://10.0.0.2",
        False,
    )
    assert started.extravars["cloudctl_incoming"]["h2"] == {}  # shared: nothing to prepare
    assert [e for e, _ in events(moving)] == [
        "schedule",
        "check_can_live_migrate",
        "live_migration",
        "post_live_migration",
    ]


def test_block_migration_prepares_disks_and_cleans_the_source(
    moving: Context, fake: FakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.on("migrate_check.yml", checks(shared=False))
    live_responders(fake, [], moving)
    view = live.live_migrate(moving, "web")
    assert view["block_migration"] and not view["shared_storage"]
    started = next(r for r in fake.requests if r.playbook == "migrate_live.yml")
    assert started.extravars["cloudctl_incoming"]["h2"]["disks"][0]["root_gb"] == 1
    assert started.extravars["cloudctl_outgoing"]["h1"][0]["disks"] == ["vda"]
    assert fake.requests[-1].playbook == "destroy.yml"
    assert list(fake.requests[-1].extravars["cloudctl_disks"]) == ["h1"]


def test_a_failed_live_migration_rolls_back(
    moving: Context, fake: FakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_responders(fake, [], moving, fail="live migration failed: connection reset")
    with pytest.raises(OperationFailed, match="connection reset"):
        live.live_migrate(moving, "web")
    inst = compute.show_instance(moving, "web")
    assert (inst["status"], inst["host"], inst["task_state"]) == ("ACTIVE", "h1", None)
    assert allocations(moving) == {("h1", "inst", 512)}
    mig = migration(moving)
    assert mig["status"] == "error" and "connection reset" in mig["error"]
    rollback = fake.requests[-1]
    assert rollback.playbook == "migrate_revert.yml"
    assert rollback.extravars["cloudctl_dest"]["h2"]["domains"][0]["state"] == "absent"
    assert rollback.extravars["cloudctl_dest"]["h2"]["files"] == []  # shared: not deleted
    assert rollback.extravars["cloudctl_source"]["h1"]["domains"][0]["state"] == "running"
    assert ("live_migration", "Error") in events(moving)
    assert ("rollback_live_migration", "Success") in events(moving)
    with moving.db.unit_of_work() as s:
        assert "connection reset" in s.scalars(select(InstanceFault)).one().message


class Lines:
    """A progress recorder: the service's info lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def run_event(self, event: RunEvent) -> None:
        """Ignore."""


def watched(moving: Context, fake: FakeExecutor, polls: int) -> threading.Event:
    """A migrate_live.yml that runs until ``polls`` progress plays have run (or 10 s)."""
    moving.settings = dataclasses.replace(moving.settings, live_migration_progress_interval_s=0.01)
    polled = threading.Event()

    def respond(req: RunRequest) -> dict[str, Any]:
        polled.wait(10)
        item = {"name": "x", "changed": True, "memory_total": 4 * MIB, "memory_processed": 5 * MIB}
        return {"h1": {"live migrate": {"changed": True, "results": [item]}}}

    def count(fake_run: Any) -> Any:
        def run(request: RunRequest, on_event: Any = None) -> Any:
            try:
                return fake_run(request, on_event)
            finally:
                if sum(r.playbook == "migrate_progress.yml" for r in fake.requests) >= polls:
                    polled.set()

        return run

    fake.on("migrate_live.yml", respond)
    fake.run = count(fake.run)  # type: ignore[method-assign]
    return polled


MIB = 2**20


def test_live_migration_records_and_shows_progress_while_it_runs(
    moving: Context, fake: FakeExecutor
) -> None:
    lines = Lines()
    moving.progress = lines
    watched(moving, fake, polls=3)
    rows: list[tuple[str, int | None, int | None]] = []
    samples = iter([(0, 0), (MIB, 0), (3 * MIB, MIB)])

    def progress(req: RunRequest) -> dict[str, Any]:
        assert req.extravars["cloudctl_progress"] == {"h1": [{"name": guest_domain(moving)}]}
        with moving.db.unit_of_work() as s:
            mig = s.scalars(select(Migration)).one()
            rows.append((mig.status, mig.memory_processed, mig.disk_processed))
        memory, disk = next(samples, (3 * MIB, MIB))
        item = {
            "name": "x",
            "active": True,
            "memory_total": 4 * MIB,
            "memory_processed": memory,
            "disk_total": 2 * MIB,
            "disk_processed": disk,
        }
        return {"h1": {"migration progress": {"changed": False, "results": [item]}}}

    fake.on("migrate_progress.yml", progress)
    view = live.live_migrate(moving, "web")
    assert (view["status"], view["memory_total"], view["memory_processed"]) == (
        "completed",
        4 * MIB,
        5 * MIB,
    )
    assert view["disk_total"] == 2 * MIB  # from the samples: the final result had none
    polls = [r for r in fake.requests if r.playbook == "migrate_progress.yml"]
    assert {tuple(h.name for h in r.hosts) for r in polls} == {("h1",)}  # the source only
    # each poll sees what the one before it wrote, the migration still running
    assert rows[:3] == [("running", None, None), ("running", 0, 0), ("running", MIB, 0)]
    assert "live-migrate web: 25% of 4 MiB, disk 0% of 2 MiB" in lines.lines
    assert "live-migrate web: 75% of 4 MiB, disk 50% of 2 MiB" in lines.lines
    progress_lines = [line for line in lines.lines if line.startswith("live-migrate web:")]
    assert len(progress_lines) == len(set(progress_lines))  # a line only when it changes


@pytest.mark.parametrize("how", ["task fails", "run raises", "no job"])
def test_a_failing_progress_poll_does_not_fail_the_live_migration(
    moving: Context, fake: FakeExecutor, how: str
) -> None:
    lines = Lines()
    moving.progress = lines
    watched(moving, fake, polls=2)
    if how == "task fails":
        fake.fail("migrate_progress.yml", host="h1", task="migration progress", msg="no libvirt")
    elif how == "run raises":

        def broken(req: RunRequest) -> dict[str, Any]:
            raise ExecutorError("ansible-runner failed to start", reason="boom")

        fake.on("migrate_progress.yml", broken)
    else:
        idle = {"name": "x", "active": False, "memory_total": 9, "memory_processed": 9}
        fake.on("migrate_progress.yml", lambda req: {"h1": {"migration progress": idle}})
    view = live.live_migrate(moving, "web")
    assert (view["status"], view["memory_total"], view["disk_total"]) == (
        "completed",
        4 * MIB,
        None,
    )
    assert sum(r.playbook == "migrate_progress.yml" for r in fake.requests) >= 2
    assert not [line for line in lines.lines if line.startswith("live-migrate web:")]
    assert allocations(moving) == {("h2", "inst", 512)}


@pytest.mark.ledger_edited  # the interrupted migration keeps its claims, as before
def test_ctrl_c_while_live_migrating_aborts_the_job_on_the_source(
    moving: Context, fake: FakeExecutor
) -> None:
    moving.settings = dataclasses.replace(moving.settings, live_migration_progress_interval_s=0.01)
    aborted = threading.Event()

    def migrate(req: RunRequest) -> dict[str, Any]:
        assert aborted.wait(10)
        return {
            "h1": {"live migrate": {"failed": True, "msg": "migration job: canceled by client"}}
        }

    def progress(req: RunRequest) -> dict[str, Any]:
        if req.extravars.get("cloudctl_job_state") == "aborted":
            assert req.extravars["cloudctl_progress"] == {"h1": [{"name": guest_domain(moving)}]}
            aborted.set()
            return {"h1": {"migration progress": {"changed": True}}}
        raise KeyboardInterrupt  # Ctrl-C while a poll runs in the calling thread

    fake.on("migrate_live.yml", migrate)
    fake.on("migrate_progress.yml", progress)
    with pytest.raises(KeyboardInterrupt):
        live.live_migrate(moving, "web")
    assert aborted.is_set()
    assert [r.playbook for r in fake.requests][-3:] == [
        "migrate_live.yml",
        "migrate_progress.yml",
        "migrate_progress.yml",
    ]
    assert migration(moving)["status"] == "running"  # as before, an interrupt leaves its state


def guest_domain(ctx: Context) -> str:
    with ctx.db.unit_of_work() as s:
        return s.scalars(select(Instance)).one().domain_name


@pytest.mark.parametrize(
    ("responder", "reason"),
    [
        (checks(cpu="incompatible"), "CPU is incompatible"),
        (checks(dest_version=6000000), "older than the source"),
    ],
)
def test_failed_prechecks_leave_nothing_behind(
    moving: Context, fake: FakeExecutor, responder: Any, reason: str
) -> None:
    fake.on("migrate_check.yml", responder)
    with pytest.raises(OperationFailed, match=reason):
        live.live_migrate(moving, "web")
    assert allocations(moving) == {("h1", "inst", 512)}
    assert migration(moving)["status"] == "failed"
    assert compute.show_instance(moving, "web")["status"] == "ACTIVE"
    assert "migrate_live.yml" not in [r.playbook for r in fake.requests]


def test_live_migration_refusals(moving: Context) -> None:
    with pytest.raises(InvalidInput, match="is on h1 already"):
        live.live_migrate(moving, "web", host="h1")
    assert migration(moving)["status"] == "failed"
    with pytest.raises(InvalidInput, match="block-migrate"):
        live.live_migrate(moving, "web", block_migrate="maybe")
    compute.power(moving, ["web"], "stop")
    with pytest.raises(InvalidState):
        live.live_migrate(moving, "web")
    assert allocations(moving) == {("h1", "inst", 512)}


SRC_OK = HostFacts(hypervisor_type="QEMU", hypervisor_version=7, probe_found=True)
DST_OK = HostFacts(hypervisor_type="QEMU", hypervisor_version=7, cpu_compare="identical")


@pytest.mark.parametrize(
    ("source", "dest", "up", "block", "problems", "uses_block"),
    [
        (SRC_OK, DST_OK, (True, True), "auto", [], False),
        (SRC_OK, DST_OK, (True, True), "yes", ["block migration asked for"], True),
        (HostFacts("QEMU", 7, probe_found=False), DST_OK, (True, True), "auto", [], True),
        (
            HostFacts("QEMU", 7, probe_found=False),
            DST_OK,
            (True, True),
            "no",
            ["not shared"],
            False,
        ),
        (
            SRC_OK,
            HostFacts("Xen", 7, cpu_compare="identical"),
            (True, True),
            "auto",
            ["hypervisor types differ"],
            False,
        ),
        (
            SRC_OK,
            HostFacts("QEMU", 6, cpu_compare="superset"),
            (True, True),
            "auto",
            ["older than"],
            False,
        ),
        (
            SRC_OK,
            HostFacts("QEMU", 8, cpu_compare="incompatible"),
            (True, True),
            "auto",
            ["incompatible"],
            False,
        ),
        (SRC_OK, DST_OK, (False, True), "auto", ["source host a is down"], False),
        (SRC_OK, DST_OK, (True, False), "auto", ["destination host b is down"], False),
    ],
)
def test_live_migration_checks_table(
    source: HostFacts,
    dest: HostFacts,
    up: tuple[bool, bool],
    block: str,
    problems: list[str],
    uses_block: bool,
) -> None:
    found, use_block = live_migration_problems(
        source="a",
        dest="b",
        source_up=up[0],
        dest_up=up[1],
        report=CheckReport(source=source, dest=dest),
        block_migrate=block,
    )
    assert len(found) == len(problems)
    for want, got in zip(problems, found, strict=True):
        assert want in got
    assert use_block == uses_block


# --- evacuate and drain -----------------------------------------------------------------------


def test_evacuate_is_refused_while_the_host_answers(moving: Context) -> None:
    with pytest.raises(InvalidInput, match="host h1 is up"):
        evac.evacuate(moving, "web")


def test_evacuate_a_down_host_rebuilds_elsewhere(moving: Context, fake: FakeExecutor) -> None:
    fake.fail("discover.yml", host="h1", task="host facts", unreachable=True, msg="no libvirtd")
    fake.on(
        "spawn.yml",
        lambda req: {
            "h2": {
                "disks": {"results": [{"uuid": "u", "actions": []}]},
                "spawn": {
                    "results": [
                        {
                            "name": req.extravars["cloudctl_domains"]["h2"][0]["name"],
                            "state": "running",
                        }
                    ]
                },
            }
        },
    )
    view = evac.evacuate(moving, "web")
    assert (view["status"], view["host"]) == ("ACTIVE", "h2")
    assert allocations(moving) == {("h2", "inst", 512)}
    mig = migration(moving)
    assert (mig["type"], mig["status"], mig["shared_storage"]) == ("evacuation", "done", True)
    assert "left on h1" in mig["error"]


def test_failed_evacuation_keeps_a_shared_disk(moving: Context, fake: FakeExecutor) -> None:
    fake.fail("discover.yml", host="h1", task="host facts", unreachable=True)
    fake.on("spawn.yml", lambda req: {"h2": {"disks": {"results": [{"uuid": "u", "actions": []}]}}})
    fake.fail("spawn.yml", host="h2", task="spawn", msg="no bridge")
    with pytest.raises(OperationFailed, match="no bridge"):
        evac.evacuate(moving, "web")
    assert fake.requests[-1].playbook == "destroy.yml"
    assert fake.requests[-1].extravars["cloudctl_disks"] == {"h2": []}
    assert compute.show_instance(moving, "web")["status"] == "ERROR"
    assert allocations(moving) == set()


def test_drain_moves_everything_and_reports(
    moving: Context, fake: FakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    compute.boot(moving, compute.BootRequest(name="db", flavor="small", image="tiny"))
    compute.boot(moving, compute.BootRequest(name="off", flavor="small", image="tiny"))
    compute.power(moving, ["off"], "stop")
    live_responders(fake, [], moving)
    on_h1 = [i["name"] for i in compute.list_instances(moving) if i["host"] == "h1"]
    assert "off" in on_h1 and len(on_h1) >= 2
    seen: list[tuple[int, int, str]] = []
    summary = evac.drain(moving, "h1", on_guest=lambda d, t, o: seen.append((d, t, o["result"])))
    n = len(on_h1)
    assert (summary["moved"], summary["failed"]) == (n, 0)
    assert seen == [(i, n, "moved") for i in range(1, n + 1)]
    assert {i["host"] for i in compute.list_instances(moving)} == {"h2"}
    assert compute.show_instance(moving, "off")["status"] == "SHUTOFF"
    with moving.db.unit_of_work() as s:
        assert s.scalars(select(Host).where(Host.name == "h1")).one().disabled_reason == "draining"
    assert {a[0] for a in allocations(moving)} == {"h2"}


def test_migration_list_and_show(moving: Context) -> None:
    cold.migrate(moving, "web")
    [row] = moves.list_migrations(moving)
    assert moves.show_migration(moving, str(row["id"]))["uuid"] == row["uuid"]
    assert moves.show_migration(moving, row["uuid"])["instance"] == "web"


# --- a move whose command died, settled by reconcile ----------------------------------------------


def die(req: RunRequest) -> dict[str, Any]:
    raise KeyboardInterrupt  # the command is killed while this play runs


def survey(ctx: Context, where: dict[str, str]) -> Any:
    """discover.yml answered with web's domain in ``where`` (host -> libvirt state)."""
    inst = row(ctx)

    def respond(req: RunRequest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in req.hosts:
            doms = []
            if t.name in where:
                doms.append({"name": inst.domain_name, "uuid": inst.uuid, "state": where[t.name]})
            out[t.name] = {
                "host facts": {
                    "host_facts": {"vcpus": 4, "memory_mb": 4096, "disk_gb": 100, "domains": doms}
                }
            }
        return out

    return respond


def row(ctx: Context) -> Instance:
    with ctx.db.unit_of_work() as s:
        inst = s.scalars(select(Instance).where(Instance.name == "web")).one()
        s.expunge(inst)
        return inst


def dead_after(ctx: Context) -> None:
    """The killed command's lease, seen once its time is up."""
    later = NOW + timedelta(seconds=ctx.settings.command_lease_s + 1)
    ctx.clock = lambda: later


def test_a_dead_live_migration_is_completed_where_the_guest_runs(
    moving: Context, fake: FakeExecutor
) -> None:
    fake.on("migrate_live.yml", die)
    with pytest.raises(KeyboardInterrupt):
        live.live_migrate(moving, "web", host="h2")
    assert (row(moving).task_state, migration(moving)["status"]) == ("migrating", "running")
    dead_after(moving)
    fake.on("discover.yml", survey(moving, {"h2": "running"}))
    reconcile.reconcile(moving)
    inst = row(moving)
    assert (inst.task_state, inst.task_owner, inst.vm_state) == (None, None, "active")
    assert compute.show_instance(moving, "web")["host"] == "h2"
    assert migration(moving)["status"] == "completed"
    assert allocations(moving) == {("h2", "inst", 512)}


def test_a_dead_live_migration_is_rolled_back_when_the_guest_is_on_the_source(
    moving: Context, fake: FakeExecutor
) -> None:
    fake.on("migrate_live.yml", die)
    with pytest.raises(KeyboardInterrupt):
        live.live_migrate(moving, "web", host="h2")
    dead_after(moving)
    fake.on("discover.yml", survey(moving, {"h1": "running", "h2": "paused"}))
    reconcile.reconcile(moving)
    inst = row(moving)
    assert (inst.task_state, inst.vm_state) == (None, "active")
    assert compute.show_instance(moving, "web")["host"] == "h1"
    assert migration(moving)["status"] == "error"
    assert allocations(moving) == {("h1", "inst", 512)}
    revert = [r for r in fake.requests if r.playbook == "migrate_revert.yml"][-1]
    assert revert.extravars["cloudctl_dest"]["h2"]["domains"][0]["state"] == "absent"
    assert revert.extravars["cloudctl_dest"]["h2"]["files"] == []  # shared: never its disk


def test_a_dead_resize_is_rolled_back_to_the_source(moving: Context, fake: FakeExecutor) -> None:
    fake.on("migrate_cold.yml", die)
    with pytest.raises(KeyboardInterrupt):
        cold.resize(moving, "web", "bigger")
    assert row(moving).task_state == "resize_migrating"
    dead_after(moving)
    fake.on("discover.yml", survey(moving, {"h2": "shutoff"}))
    reconcile.reconcile(moving)
    inst = row(moving)
    assert (inst.task_state, inst.vm_state, inst.memory_mb) == (None, "active", 512)
    assert compute.show_instance(moving, "web")["host"] == "h1"
    assert migration(moving)["status"] == "error"
    assert allocations(moving) == {("h1", "inst", 512)}
    assert any(r.playbook == "migrate_revert.yml" for r in fake.requests)


@pytest.mark.parametrize(
    ("verb", "playbook", "status", "host", "memory"),
    [
        ("confirm", "migrate_confirm.yml", "confirmed", "h2", 1024),
        ("revert", "migrate_revert.yml", "reverted", "h1", 512),
    ],
)
def test_a_dead_confirm_or_revert_is_finished(
    moving: Context,
    fake: FakeExecutor,
    verb: str,
    playbook: str,
    status: str,
    host: str,
    memory: int,
) -> None:
    cold.resize(moving, "web", "bigger")
    fake.on(playbook, die)
    with pytest.raises(KeyboardInterrupt):
        (cold.confirm_resize if verb == "confirm" else cold.revert_resize)(moving, "web")
    dead_after(moving)
    fake.on(playbook, lambda req: {h.name: {} for h in req.hosts})
    fake.on("discover.yml", survey(moving, {"h2": "running"}))
    reconcile.reconcile(moving)
    inst = row(moving)
    assert (inst.task_state, inst.vm_state, inst.memory_mb) == (None, "active", memory)
    assert compute.show_instance(moving, "web")["host"] == host
    assert migration(moving)["status"] == status
    assert allocations(moving) == {(host, "inst", memory)}


def test_deleting_a_resized_guest_releases_both_hosts(moving: Context, fake: FakeExecutor) -> None:
    view = cold.resize(moving, "web", "bigger")
    assert allocations(moving) == {("h1", "mig", 512), ("h2", "inst", 1024)}
    compute.delete(moving, ["web"])
    assert allocations(moving) == set()
    assert moves.list_migrations(moving, view["uuid"])[-1]["status"] == "deleted"
