"""Managing hosts over the fake executor: ``host prepare`` (the role's run) and ``host remove``."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudctl.db.models import Allocation, Host, Instance, Migration
from cloudctl.domain.paths import PLAYBOOKS_DIR
from cloudctl.errors import InUse, InvalidInput, NotFound
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, hosts
from cloudctl.services.compute import BootRequest
from cloudctl.services.context import Context
from cloudctl.services.lab_machine import HostRecord, LabError, LabSpec, LabState
from tests.conftest import NOW, add_host

ROLE_TASKS = (
    "Gathering Facts",
    "Find the packages that are not installed yet",
    "Set the managed lines of qemu.conf",
    "Start virtlogd and libvirtd unless they run already",
    "Create the guest bridge, up and without any address",
)


def role_answer(changed: frozenset[str] = frozenset()) -> Any:
    """A prepare run in which the tasks named in ``changed`` changed something, on every host."""

    def respond(req: RunRequest) -> dict[str, Any]:
        return {
            h.name: {task: {"changed": task in changed} for task in ROLE_TASKS} for h in req.hosts
        }

    return respond


def host_row(ctx: Context, name: str) -> Host:
    with ctx.db.unit_of_work() as s:
        row = s.scalars(select(Host).where(Host.name == name)).one()
        s.expunge(row)
        return row


# --- host prepare --------------------------------------------------------------------------


def test_prepare_runs_the_role_with_the_hosts_own_variables(
    ctx: Context, fake: FakeExecutor, tmp_path: Path
) -> None:
    fake.playbooks_dir = PLAYBOOKS_DIR  # the playbook must exist
    python = tmp_path / "opt" / "venv" / "bin" / "python"  # a local host's must exist here
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    add_host(
        ctx,
        "h1",
        instances_path="/srv/guests",
        bridge="br-guests",
        libvirt_uri="qemu+unix:///system?socket=/srv/h1/libvirt-sock",
        python_interpreter=str(python),
        last_heartbeat=None,
    )
    fake.on("prepare_host.yml", role_answer(frozenset({"Set the managed lines of qemu.conf"})))

    [report] = hosts.prepare_hosts(ctx, ["h1"])

    req = fake.requests[0]
    assert (req.playbook, req.check, req.diff) == ("prepare_host.yml", False, False)
    [target] = req.hosts
    assert target.python_interpreter == str(python)
    assert {k: v for k, v in target.hostvars.items() if k.startswith("libvirt_host_")} == {
        "libvirt_host_instances_path": "/srv/guests",
        "libvirt_host_bridge": "br-guests",
        "libvirt_host_uri": "qemu+unix:///system?socket=/srv/h1/libvirt-sock",
        "libvirt_host_install_python_libvirt": False,
    }
    assert report == {
        "name": "h1",
        "check": False,
        "ok": len(ROLE_TASKS),
        "changed": 1,
        "failed": 0,
        "skipped": 0,
        "unreachable": False,
        "changed_tasks": ["Set the managed lines of qemu.conf"],
        "error": None,
    }
    # A successful prepare is a heartbeat, then the facts are read again.
    assert [r.playbook for r in fake.requests] == ["prepare_host.yml", "discover.yml"]
    assert host_row(ctx, "h1").last_heartbeat == NOW


def test_prepare_check_mode_changes_nothing_and_skips_discovery(
    ctx: Context, fake: FakeExecutor
) -> None:
    add_host(ctx, "h1", last_heartbeat=None)
    fake.on("prepare_host.yml", role_answer(frozenset(ROLE_TASKS[2:4])))

    [report] = hosts.prepare_hosts(ctx, ["h1"], check=True)

    [req] = fake.requests
    assert (req.playbook, req.check, req.diff) == ("prepare_host.yml", True, True)
    assert (report["check"], report["changed"], report["ok"]) == (True, 2, len(ROLE_TASKS))
    assert report["changed_tasks"] == list(ROLE_TASKS[2:4])
    # The host answered: that is a heartbeat, also in check mode.
    assert host_row(ctx, "h1").last_heartbeat == NOW


def test_a_second_run_reports_no_change(ctx: Context, fake: FakeExecutor) -> None:
    add_host(ctx, "h1")
    fake.on("prepare_host.yml", role_answer())
    [report] = hosts.prepare_hosts(ctx, ["h1"])
    assert (report["changed"], report["changed_tasks"], report["error"]) == (0, [], None)


def test_a_failed_prepare_is_reported_without_heartbeat_or_discovery(
    ctx: Context, fake: FakeExecutor
) -> None:
    add_host(ctx, "h1", last_heartbeat=None)
    fake.on("prepare_host.yml", role_answer())
    fake.fail(
        "prepare_host.yml",
        host="h1",
        task="Start virtlogd and libvirtd unless they run already",
        msg="libvirtd did not come up in 60 s: probe exited 1\nmore detail",
    )

    [report] = hosts.prepare_hosts(ctx, ["h1"])

    assert report["failed"] == 1 and report["unreachable"] is False
    assert report["error"] == "libvirtd did not come up in 60 s: probe exited 1"
    assert [r.playbook for r in fake.requests] == ["prepare_host.yml"]
    assert host_row(ctx, "h1").last_heartbeat is None


def test_an_unreachable_host_is_a_failure(ctx: Context, fake: FakeExecutor) -> None:
    add_host(ctx, "h1")
    fake.fail(
        "prepare_host.yml", host="h1", task="Gathering Facts", msg="ssh: timeout", unreachable=True
    )
    [report] = hosts.prepare_hosts(ctx, ["h1"])
    assert (report["failed"], report["unreachable"], report["error"]) == (1, True, "ssh: timeout")


def test_prepare_refuses_unknown_hosts_and_empty_lists(ctx: Context, fake: FakeExecutor) -> None:
    with pytest.raises(NotFound):
        hosts.prepare_hosts(ctx, ["ghost"])
    with pytest.raises(InvalidInput):
        hosts.prepare_hosts(ctx, [])
    assert fake.requests == []


def test_a_host_on_debians_python_gets_python3_libvirt(ctx: Context, fake: FakeExecutor) -> None:
    add_host(ctx, "remote", connection="ssh", address="192.0.2.10", python_interpreter=None)
    hosts.prepare_hosts(ctx, ["remote"], check=True)
    [target] = fake.requests[0].hosts
    assert target.python_interpreter == hosts.SYSTEM_PYTHON
    assert target.hostvars["libvirt_host_install_python_libvirt"] is True


def write_lab_state(ctx: Context) -> Path:
    root = ctx.settings.lab_dir.resolve()
    root.mkdir(parents=True)
    state = LabState(
        lab_id="abcdef",
        root=str(root),
        network="10.213.0.0/24",
        python=sys.executable,
        spec=LabSpec(hosts=1),
        hosts=(HostRecord("lab-1", 1, "az1", "10.213.0.11", str(uuid.uuid4())),),
    )
    (root / "state.json").write_text(json.dumps(state.to_dict()))
    return root


def test_a_lab_host_is_prepared_with_its_own_daemons_and_config(
    ctx: Context, fake: FakeExecutor
) -> None:
    root = write_lab_state(ctx)
    add_host(ctx, "lab-1", connection="ssh", address="10.213.0.11", labels={"lab": "true"})
    add_host(ctx, "lab-2", connection="ssh", address="10.213.0.12", labels={"lab": "true"})

    hosts.prepare_hosts(ctx, ["lab-1"], check=True)

    hv = fake.requests[0].hosts[0].hostvars
    run = root / "hosts" / "lab-1" / "run"
    assert hv["libvirt_host_virtlogd_pidfile"] == str(run / "virtlogd.pid")
    assert hv["libvirt_host_libvirtd_pidfile"] == str(run / "libvirtd.pid")
    assert (hv["libvirt_host_virtlogd_args"], hv["libvirt_host_libvirtd_args"]) == (
        [],
        ["--listen"],
    )
    assert hv["libvirt_host_run_dir"] == "/run/libvirt"
    assert hv["libvirt_host_qemu_conf_extra"] == {
        "user": "root",
        "group": "root",
        "security_driver": "none",
        "cgroup_controllers": [],
    }
    # A host the lab does not know is an error, not a run against the machine's daemons.
    with pytest.raises(LabError, match="lab-2 is not a host of the lab"):
        hosts.prepare_hosts(ctx, ["lab-2"])
    assert len(fake.requests) == 1


# --- host remove ----------------------------------------------------------------------------


def test_remove_soft_deletes_an_empty_host(ctx: Context) -> None:
    add_host(ctx, "h1")
    host_id = host_row(ctx, "h1").id

    view = hosts.remove_host(ctx, "h1")

    assert (view["name"], view["removed"], view["deleted_at"]) == ("h1", True, NOW.isoformat())
    row = host_row(ctx, "h1")
    assert (row.deleted, row.deleted_at) == (host_id, NOW)
    with ctx.db.unit_of_work() as s:
        assert hosts.list_hosts(s) == []
        with pytest.raises(NotFound):
            hosts.get_host(s, "h1")
    with pytest.raises(NotFound):
        hosts.remove_host(ctx, "h1")
    # The name is free again (the unique constraint includes `deleted`).
    hosts.add_host(ctx, hosts.HostSpec(name="h1", libvirt_uri="qemu:///system"), discover=False)


def set_vm_state(ctx: Context, name: str, vm_state: str) -> None:
    with ctx.db.unit_of_work() as s:
        s.scalars(select(Instance).where(Instance.name == name)).one().vm_state = vm_state


@pytest.mark.parametrize("vm_state", ["active", "stopped", "soft-delete", "error"])
def test_remove_is_refused_while_a_live_instance_is_on_the_host(
    cloud: Context, vm_state: str
) -> None:
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    set_vm_state(cloud, "web", vm_state)

    with pytest.raises(InUse) as caught:
        hosts.remove_host(cloud, view["host"])

    assert caught.value.exit_code != 0
    assert str(caught.value).startswith(f"host {view['host']!r} is in use: 1 instance(s) (web)")
    assert "\n" not in str(caught.value)
    assert host_row(cloud, view["host"]).deleted == 0


def test_the_refusal_lists_a_few_names_and_counts_the_rest(cloud: Context) -> None:
    hosts.set_enabled(cloud, "h2", False, "keep the guests on h1")
    views = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny", count=5))
    assert {v["host"] for v in views} == {"h1"}
    with pytest.raises(InUse, match=r"5 instance\(s\) \(web-1, web-2, web-3, \+2 more\)"):
        hosts.remove_host(cloud, "h1")


@pytest.mark.ledger_edited
def test_remove_is_refused_while_the_ledger_holds_an_allocation(ctx: Context) -> None:
    add_host(ctx, "h1")
    with ctx.db.unit_of_work() as s:
        s.add(
            Allocation(
                host_id=hosts.get_host(s, "h1").id,
                consumer_uuid="22222222-2222-4222-8222-222222222222",
                resource_class="MEMORY_MB",
                used=512,
            )
        )
    with pytest.raises(InUse, match=r"1 allocation consumer\(s\) \(22222222-"):
        hosts.remove_host(ctx, "h1")
    assert host_row(ctx, "h1").deleted == 0


def add_migration(ctx: Context, status: str, source: str | None, dest: str | None) -> str:
    mig_uuid = str(uuid.uuid4())
    with ctx.db.unit_of_work() as s:
        s.add(
            Migration(
                uuid=mig_uuid,
                instance_uuid=str(uuid.uuid4()),
                source_host=source,
                dest_host=dest,
                migration_type="live-migration",
                status=status,
            )
        )
    return mig_uuid


@pytest.mark.parametrize(("source", "dest"), [("h1", "h2"), ("h2", "h1")])
def test_remove_is_refused_while_a_migration_from_or_to_it_is_under_way(
    ctx: Context, source: str, dest: str
) -> None:
    add_host(ctx, "h1")
    add_host(ctx, "h2")
    mig = add_migration(ctx, "running", source, dest)
    with pytest.raises(InUse, match=rf"1 migration\(s\) under way \({mig}\)"):
        hosts.remove_host(ctx, "h1")
    assert host_row(ctx, "h1").deleted == 0


def test_finished_migrations_do_not_keep_a_host(ctx: Context) -> None:
    add_host(ctx, "h1")
    for status in ("completed", "confirmed", "reverted", "error", "failed", "done", "cancelled"):
        add_migration(ctx, status, "h1", "h2")
    add_migration(ctx, "running", "h2", "h3")  # another host's move
    assert hosts.remove_host(ctx, "h1")["removed"] is True


def test_disable_records_only_the_reason_and_enable_clears_it(ctx: Context) -> None:
    add_host(ctx, "h1")
    before = {c.key: getattr(host_row(ctx, "h1"), c.key) for c in Host.__table__.columns}
    view = hosts.set_enabled(ctx, "h1", False, "disk replacement")
    assert (view["status"], view["disabled_reason"]) == ("disabled", "disk replacement")
    after = {c.key: getattr(host_row(ctx, "h1"), c.key) for c in Host.__table__.columns}
    assert {k for k in before if before[k] != after[k]} <= {
        "enabled",
        "disabled_reason",
        "updated_at",
    }
    view = hosts.set_enabled(ctx, "h1", True)
    assert (view["status"], view["disabled_reason"]) == ("enabled", None)
