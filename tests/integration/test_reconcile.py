"""Keeping the books true on a real 2-host lab: verify, reconcile, the agent, host up/down.

Everything is done behind cloudctl's back the way it happens in real life (``virsh destroy`` on
the lab host, a delete that died after the books were written, a libvirtd killed, an instance
left BUILDING, ledger rows edited by hand), then ``verify`` must report it with its code and
``reconcile`` (or ``verify --fix``) must put the books and the hosts back in agreement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from cloudctl.db.models import Allocation, Host, Instance, utcnow
from cloudctl.db.session import Database
from cloudctl.services.settings import load_settings
from tests.integration.conftest import Cli, make_home

pytestmark = pytest.mark.integration

CONFIG = "stop_timeout_s: 5\norphan_files_min_age_s: 0\nremove_unused_base_images_min_age_s: 0\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = make_home(tmp_path_factory, "reconcile-home", CONFIG + "service_down_time_s: 3600\n")
    c.run("lab", "up", "--hosts", "2", "--azs", "1", "--connection", "ssh", timeout=600)
    c.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1")
    c.run("image", "create-tiny", "tiny", timeout=900)
    yield c
    c.run("lab", "down", check=False)


def db(c: Cli) -> Database:
    return Database(load_settings(environ=c.env()).db_url)


def config(c: Cli, extra: str = "") -> None:
    down = "" if "service_down_time_s" in extra else "service_down_time_s: 3600\n"
    (c.home / "config.yaml").write_text(CONFIG + down + extra)


def on_host(c: Cli, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    enter = c.home / "lab" / "hosts" / host / "enter"
    return subprocess.run(
        [str(enter), *argv], capture_output=True, text=True, check=False, timeout=60
    )


def virsh(c: Cli, host: str, *argv: str) -> str:
    return on_host(c, host, "virsh", "-c", "qemu:///system", *argv).stdout.strip()


def boot(c: Cli, name: str, host: str) -> dict[str, Any]:
    view = c.json("boot", name, "--flavor", "m1.tiny", "--image", "tiny", "--az", f"az1:{host}")
    view = view[0] if isinstance(view, list) else view
    assert view["status"] == "ACTIVE", view
    return dict(view)


def verify(c: Cli, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = c.run("verify", "-o", "json", *extra, check=False, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def codes(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["code"], f["object"]) for f in report["findings"]}


def reconcile(c: Cli) -> dict[str, Any]:
    proc = c.run("reconcile", "-o", "json", check=False, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    return dict(json.loads(proc.stdout))


def instances_path(c: Cli, host: str) -> str:
    return str(c.json("host", "show", host)["instances_path"])


def test_a_clean_lab_verifies_clean(lab: Cli) -> None:
    boot(lab, "clean-1", "lab-1")
    rc, report = verify(lab)
    assert (rc, report["errors"]) == (0, 0), report
    assert reconcile(lab)["corrections"] == []
    lab.run("delete", "clean-1")


@pytest.mark.parametrize("policy", ["report", "restore"])
def test_virsh_destroy_behind_our_back(lab: Cli, policy: str) -> None:
    config(lab, f"sync_power_state_policy: {policy}\n")
    name = f"pw-{policy}"
    view = boot(lab, name, "lab-1")
    try:
        on_host(lab, "lab-1", "virsh", "-c", "qemu:///system", "destroy", view["domain"])
        rc, report = verify(lab)
        assert rc == 1 and ("EPOWER001", name) in codes(report), report
        [finding] = [f for f in report["findings"] if f["code"] == "EPOWER001"]
        assert finding["message"] == "active in the books but shutoff on lab-1"
        summary = reconcile(lab)
        assert [(c["code"], c["result"]) for c in summary["corrections"]] == [("EPOWER001", "done")]
        shown = lab.json("show", name)
        if policy == "report":
            assert (shown["status"], shown["power_state"]) == ("SHUTOFF", "SHUTDOWN")
            assert virsh(lab, "lab-1", "domstate", view["domain"]) == "shut off"
            lab.run("start", name)  # the books are right: a plain start works
        else:
            assert shown["status"] == "ACTIVE"
        assert virsh(lab, "lab-1", "domstate", view["domain"]) == "running"
        actions = [a["action"] for a in lab.json("action", "list", name)]
        assert "reconcile" in actions
        assert verify(lab)[0] == 0
    finally:
        config(lab)
        lab.run("delete", name)


def test_a_lost_delete_and_leftover_files_are_found_and_removed(lab: Cli) -> None:
    view = boot(lab, "lost", "lab-2")
    base = instances_path(lab, "lab-2")
    # The delete's books were written, then the process died before the host was told.
    with db(lab).unit_of_work() as s:
        inst = s.scalars(select(Instance).where(Instance.uuid == view["uuid"])).one()
        s.execute(delete(Allocation).where(Allocation.consumer_uuid == inst.uuid))
        inst.vm_state, inst.deleted, inst.deleted_at = "deleted", inst.id, utcnow()
    orphan = str(uuidlib.uuid4())
    assert on_host(lab, "lab-2", "mkdir", "-p", f"{base}/{orphan}").returncode == 0
    on_host(lab, "lab-2", "truncate", "-s", "1M", f"{base}/{orphan}/disk")
    stale = "f" * 64
    on_host(lab, "lab-2", "truncate", "-s", "1M", f"{base}/_base/{stale}")
    rc, report = verify(lab)
    assert rc == 1
    found = codes(report)
    assert ("EDOMAIN003", view["domain"]) in found
    # The lab's storage is shared: both hosts see the orphan, it is reported (and removed) once.
    assert [c for c, o in found if o.endswith(f":{orphan}")] == ["EFILE001"]
    assert [c for c, o in found if o.endswith(f":_base/{stale}")] == ["EFILE003"]
    summary = reconcile(lab)
    done = {(c["code"], c["result"]) for c in summary["corrections"]}
    assert {("EDOMAIN003", "done"), ("EFILE001", "done"), ("EFILE003", "done")} <= done
    assert view["domain"] not in virsh(lab, "lab-2", "list", "--all", "--name")
    for path in (f"{base}/{view['uuid']}", f"{base}/{orphan}", f"{base}/_base/{stale}"):
        assert on_host(lab, "lab-2", "test", "-e", path).returncode == 1, path
    events = lab.json("host", "events", "lab-1") + lab.json("host", "events", "lab-2")
    assert {"cleanup_running_deleted_instances", "cleanup_orphaned_files"} <= {
        e["event"] for e in events
    }
    assert verify(lab)[0] == 0


def test_an_instance_a_dead_command_left_building_is_settled_by_its_host(lab: Cli) -> None:
    view = boot(lab, "stuck", "lab-1")
    with db(lab).unit_of_work() as s:  # as a boot killed after its spawn play leaves it
        s.execute(
            update(Instance)
            .where(Instance.uuid == view["uuid"])
            .values(vm_state="building", task_state="spawning", task_owner=None)
        )
    rc, report = verify(lab)
    assert rc == 1 and ("ESTATE002", "stuck") in codes(report)
    reconcile(lab)
    shown = lab.json("show", "stuck")
    # Its domain runs on lab-1: the build is rolled forward, and it stays charged there.
    assert (shown["status"], shown["task_state"], shown["host"]) == ("ACTIVE", None, "lab-1")
    assert "settle" in [
        e["event"] for a in lab.json("action", "list", "stuck") for e in a["events"]
    ]
    assert verify(lab)[0] == 0
    lab.run("delete", "stuck")
    assert verify(lab)[0] == 0


def test_ledger_rows_edited_wrong_are_found_and_healed(lab: Cli) -> None:
    a = boot(lab, "led-a", "lab-1")
    b = boot(lab, "led-b", "lab-2")
    with db(lab).unit_of_work() as s:
        s.execute(
            update(Allocation)
            .where(Allocation.consumer_uuid == a["uuid"], Allocation.resource_class == "MEMORY_MB")
            .values(used=1)
        )
        s.execute(delete(Allocation).where(Allocation.consumer_uuid == b["uuid"]))
        lab1 = s.scalars(select(Host).where(Host.name == "lab-1")).one()
        s.add(
            Allocation(
                host_id=lab1.id, consumer_uuid=str(uuidlib.uuid4()), resource_class="VCPU", used=2
            )
        )
    rc, report = verify(lab)
    assert rc == 1
    assert {c for c, _ in codes(report)} >= {"ELEDGER002", "ELEDGER003", "ELEDGER004"}
    rc, fixed = verify(lab, "--fix")
    assert rc == 0, fixed
    assert {f["code"] for f in fixed["fixed"]} == {"ELEDGER002", "ELEDGER003", "ELEDGER004"}
    hosts = {h["name"]: h for h in lab.json("host", "list")}
    assert hosts["lab-1"]["memory_mb_used"] == 128 and hosts["lab-2"]["memory_mb_used"] == 128
    lab.run("delete", "led-a", "led-b")


def test_a_host_whose_libvirtd_stopped_goes_down_and_is_skipped(lab: Cli) -> None:
    config(lab, "service_down_time_s: 8\n")
    reconcile(lab)  # fresh heartbeats for both
    pidfile = lab.home / "lab" / "hosts" / "lab-2" / "run" / "libvirtd.pid"
    os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
    try:
        first = reconcile(lab)
        assert "lab-2" in first["hosts_up"]  # silent, but not for service_down_time yet
        assert ("EHOST002", "lab-2") in codes(first)
        time.sleep(9)
        second = reconcile(lab)
        assert second["hosts_down"] == ["lab-2"]
        assert ("EHOST001", "lab-2") in codes(second)
        assert {h["name"]: h["state"] for h in lab.json("host", "list")}["lab-2"] == "down"
        # lab-2 is empty and lab-1 is not: only a down lab-2 makes the scheduler pick lab-1.
        boot(lab, "keep-1", "lab-1")
        placed = lab.json("boot", "placed", "--flavor", "m1.tiny", "--image", "tiny")
        assert placed["host"] == "lab-1"
        rc, _ = verify(lab)
        assert rc == 1
    finally:
        lab.run("lab", "up", "--hosts", "2", "--azs", "1", "--connection", "ssh", timeout=600)
    third = reconcile(lab)
    config(lab)
    assert "lab-2" in third["hosts_up"]
    assert [
        e["event"] for e in lab.json("host", "events", "lab-2") if e["event"] in ("up", "down")
    ][:2] == ["up", "down"]
    lab.run("delete", "keep-1", "placed")


def test_agent_runs_passes_and_stops_cleanly_on_sigterm(lab: Cli) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudctl", "agent", "--interval", "1"],
        env=lab.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        passes = 0
        deadline = time.monotonic() + 120
        while passes < 2 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if line.startswith("reconcile:"):
                passes += 1
        assert passes == 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped after" in err


def test_the_inventory_plugin_lists_the_lab_and_pings_its_hosts(lab: Cli) -> None:
    view = boot(lab, "inv-1", "lab-1")
    env = lab.env()
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    repo = Path(__file__).resolve().parents[2]

    def ansible(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    graph = ansible("ansible-inventory", "--graph")  # ansible.cfg names inventory/cloudctl.yml
    assert graph.returncode == 0, graph.stderr
    for name in ("@cloudctl_hosts", "lab-1", "lab-2", "@guests_on_lab_1", "inv-1"):
        assert name in graph.stdout, graph.stdout
    guest = json.loads(ansible("ansible-inventory", "--host", "inv-1").stdout)
    assert guest["cloudctl_uuid"] == view["uuid"] and guest["cloudctl_host"] == "lab-1"
    ping = ansible("ansible", "cloudctl_hosts", "-m", "ping")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ping.stdout.count('"ping": "pong"') == 2
    # Really inside each lab host (its own UTS namespace), over ssh at its lab address.
    names = ansible("ansible", "cloudctl_hosts", "-m", "command", "-a", "hostname")
    assert names.returncode == 0, names.stdout + names.stderr
    said = names.stdout.splitlines()
    for host in ("lab-1", "lab-2"):  # each answers with its own UTS name
        at = said.index(next(line for line in said if line.startswith(f"{host} | CHANGED")))
        assert said[at + 1].strip() == host, names.stdout
    lab.run("delete", "inv-1")
