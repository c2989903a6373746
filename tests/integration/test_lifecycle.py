"""The guest lifecycle on a real 2-host lab: pause, suspend (managed save), lock, rebuild, soft
delete, restore, reclaim, force delete and a delete after the host lost the domain.

Three tiny guests are booted once and reused by the tests in order; every state is checked where
it lives: libvirt's on the lab host (through its ``enter`` script), files on the lab host, the
guest's serial console, and cloudctl's own view.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from cloudctl.db.models import utcnow
from cloudctl.db.session import Database
from cloudctl.executor.ansible import AnsibleExecutor
from cloudctl.services import compute
from cloudctl.services.context import Context
from cloudctl.services.settings import load_settings
from tests.integration.conftest import Cli, make_home

pytestmark = pytest.mark.integration

MARKER = r"CLOUDCTL-GUEST-UP uuid=(\S+) hostname=(\S+)"
BOOT = "started /init"  # the first line the tiny guest's /init prints on every boot
INTERVAL = 3600


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = make_home(
        tmp_path_factory,
        "lifecycle-home",
        f"service_down_time_s: 3600\nstop_timeout_s: 10\nreclaim_instance_interval: {INTERVAL}\n",
    )
    c.run("lab", "up", "--hosts", "2", "--azs", "1", "--connection", "local")
    # 64 MiB is too little for the tiny guest's kernel to boot (it resets before printing).
    c.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1")
    c.run("image", "create-tiny", "tiny", timeout=900)
    yield c
    c.run("lab", "down", check=False)


@pytest.fixture(scope="module")
def guests(lab: Cli) -> dict[str, dict[str, Any]]:
    views = lab.json("boot", "lc", "--flavor", "m1.tiny", "--image", "tiny", "--count", "3")
    assert [v["status"] for v in views] == ["ACTIVE"] * 3
    return {v["name"]: v for v in views}


def on_host(c: Cli, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command inside a lab host's namespaces."""
    enter = c.home / "lab" / "hosts" / host / "enter"
    return subprocess.run(
        [str(enter), *argv], capture_output=True, text=True, check=False, timeout=60
    )


def virsh(c: Cli, host: str, *argv: str) -> str:
    return on_host(c, host, "virsh", "-c", "qemu:///system", *argv).stdout


def domstate(c: Cli, v: dict[str, Any]) -> str:
    return virsh(c, v["host"], "domstate", v["domain"]).strip()


def console(c: Cli, name: str, timeout: int = 150) -> str:
    out = c.json("console", name, "--wait-for", MARKER, "--timeout", str(timeout))
    assert out["found"], out["log"][-2000:]
    return str(out["log"])


def test_pause_and_unpause_stop_and_run_the_vcpus(lab: Cli, guests: dict[str, Any]) -> None:
    v = guests["lc-1"]
    console(lab, "lc-1")  # up, so suspend/resume below have a console to keep
    [paused] = lab.json("pause", "lc-1")
    assert (paused["status"], paused["power_state"]) == ("PAUSED", "PAUSED")
    assert domstate(lab, v) == "paused"
    refused = lab.run("pause", "lc-1", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: cannot pause instance lc-1: vm_state paused, task_state None (pause needs active)"
    )
    [running] = lab.json("unpause", "lc-1")
    assert (running["status"], running["power_state"]) == ("ACTIVE", "RUNNING")
    assert domstate(lab, v) == "running"


def test_suspend_saves_memory_and_resume_restores_it(lab: Cli, guests: dict[str, Any]) -> None:
    v = guests["lc-1"]
    [suspended] = lab.json("suspend", "lc-1")
    assert (suspended["status"], suspended["power_state"]) == ("SUSPENDED", "SHUTDOWN")
    assert domstate(lab, v) == "shut off"
    assert re.search(r"Managed save:\s+yes", virsh(lab, v["host"], "dominfo", v["domain"]))
    save = f"/var/lib/libvirt/qemu/save/{v['domain']}.save"
    assert on_host(lab, v["host"], "test", "-s", save).returncode == 0
    [resumed] = lab.json("resume", "lc-1")
    assert (resumed["status"], resumed["power_state"]) == ("ACTIVE", "RUNNING")
    assert domstate(lab, v) == "running"
    assert on_host(lab, v["host"], "test", "-e", save).returncode == 1
    log = console(lab, "lc-1", timeout=5)
    # The same guest carried on from its saved memory: still one boot on its console.
    assert log.count(BOOT) == 1 and len(re.findall(MARKER, log)) == 1
    assert [a["action"] for a in lab.json("action", "list", "lc-1")][-4:] == [
        "pause",
        "unpause",
        "suspend",
        "resume",
    ]


def test_a_locked_instance_refuses_until_unlocked(lab: Cli, guests: dict[str, Any]) -> None:
    v = guests["lc-2"]
    [locked] = lab.json("lock", "lc-2", "--reason", "legal hold")
    assert (locked["locked"], locked["locked_reason"]) == (True, "legal hold")
    for argv in (["stop", "lc-2"], ["delete", "lc-2"], ["delete", "--force", "lc-2"]):
        proc = lab.run(*argv, check=False)
        assert proc.returncode == 1, argv
        assert proc.stderr.strip() == "error: instance lc-2 is locked: legal hold", argv
    assert domstate(lab, v) == "running" and lab.json("show", "lc-2")["status"] == "ACTIVE"
    [unlocked] = lab.json("unlock", "lc-2")
    assert unlocked["locked"] is False


def test_rebuild_makes_new_disks_and_boots_afresh(lab: Cli, guests: dict[str, Any]) -> None:
    v = guests["lc-1"]
    lab.run("image", "create-tiny", "tiny2", timeout=900)
    root = f"{lab.json('host', 'show', v['host'])['instances_path']}/{v['uuid']}/disk"
    inode_before = on_host(lab, v["host"], "stat", "-c", "%i %Y", root).stdout
    refused = lab.run("rebuild", "lc-1", "--image", "nope", check=False)
    assert refused.returncode == 2 and "image 'nope' not found" in refused.stderr
    rebuilt = lab.json("rebuild", "lc-1", "--image", "tiny2")
    assert (rebuilt["status"], rebuilt["vm_state"], rebuilt["task_state"]) == (
        "ACTIVE",
        "active",
        None,
    )
    for key in ("uuid", "host", "addresses", "flavor", "domain"):
        assert rebuilt[key] == v[key], key
    assert rebuilt["image"] == "tiny2"
    assert on_host(lab, v["host"], "stat", "-c", "%i %Y", root).stdout != inode_before
    log = console(lab, "lc-1")
    # A fresh boot on a fresh console log, with the same identity from the new config drive.
    assert log.count(BOOT) == 1
    [(uuid, hostname)] = re.findall(MARKER, log)
    assert (uuid, hostname) == (v["uuid"], "lc-1")
    assert f"eth0 {v['addresses'][0]['address']}/24" in log
    last = lab.json("action", "list", "lc-1")[-1]
    assert last["action"] == "rebuild"
    assert [(e["event"], e["result"]) for e in last["events"]] == [("rebuild", "Success")]


def test_soft_delete_restore_and_reclaim(lab: Cli, guests: dict[str, Any]) -> None:
    v = guests["lc-2"]
    uuid = v["uuid"]
    disk = f"{lab.json('host', 'show', v['host'])['instances_path']}/{uuid}/disk"
    [gone] = lab.json("delete", "lc-2")
    assert (gone["status"], gone["power_state"]) == ("SOFT_DELETED", "SHUTDOWN")
    assert domstate(lab, v) == "shut off"
    assert on_host(lab, v["host"], "test", "-f", disk).returncode == 0
    shown = lab.json("show", "lc-2")
    assert shown["addresses"] == v["addresses"] and shown["allocations"]
    again = lab.run("delete", "lc-2", check=False)
    assert again.returncode == 1 and "soft-deleted already" in again.stderr
    [back] = lab.json("restore", "lc-2")
    assert (back["status"], back["power_state"]) == ("ACTIVE", "RUNNING")
    assert domstate(lab, v) == "running"
    lab.json("delete", "lc-2")

    # The reclaim loop is a service function (a later reconcile loop calls it): run it here
    # against the lab with a clock past the interval.
    settings = load_settings(environ={"CLOUDCTL_HOME": str(lab.home)})
    db = Database(settings.db_url)
    ctx = Context(
        settings=settings,
        db=db,
        executor_factory=lambda: AnsibleExecutor(runs_dir=settings.runs_dir),
    )
    try:
        assert compute.reclaim_soft_deleted(ctx, utcnow()) == []
        [reclaimed] = compute.reclaim_soft_deleted(ctx, utcnow() + timedelta(seconds=INTERVAL))
    finally:
        db.dispose()
    assert (reclaimed["name"], reclaimed["status"]) == ("lc-2", "DELETED")
    assert v["domain"] not in virsh(lab, v["host"], "list", "--all", "--name")
    assert on_host(lab, v["host"], "test", "-e", disk.rsplit("/", 1)[0]).returncode == 1
    assert [a["action"] for a in lab.json("action", "list", "lc-2")][-4:] == [
        "delete",
        "restore",
        "delete",
        "delete",
    ]


def test_force_delete_of_a_soft_deleted_instance(lab: Cli, guests: dict[str, Any]) -> None:
    v = guests["lc-1"]
    assert lab.json("delete", "lc-1")[0]["status"] == "SOFT_DELETED"
    [gone] = lab.json("delete", "--force", "lc-1")
    assert gone["status"] == "DELETED" and gone["addresses"] == []
    assert v["domain"] not in virsh(lab, v["host"], "list", "--all", "--name")


def test_delete_after_the_host_lost_the_domain(lab: Cli, guests: dict[str, Any]) -> None:
    v = guests["lc-3"]
    virsh(lab, v["host"], "destroy", v["domain"])
    virsh(lab, v["host"], "undefine", v["domain"])
    assert v["domain"] not in virsh(lab, v["host"], "list", "--all", "--name")
    [gone] = lab.json("delete", "--force", "lc-3")
    assert gone["status"] == "DELETED"
    directory = f"{lab.json('host', 'show', v['host'])['instances_path']}/{v['uuid']}"
    assert on_host(lab, v["host"], "test", "-e", directory).returncode == 1
    assert lab.json("list") == []
    for h in lab.json("host", "list"):
        assert (h["vcpus_used"], h["memory_mb_used"], h["running_vms"]) == (0, 0, 0), h
