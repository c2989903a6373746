"""Moves on real labs: live migration (and a failed one rolled back), cold migration, resize
confirm and revert, evacuation of a host whose libvirtd died, host drain, and block migration
between hosts that do not share their instances path.

Three hosts share their instances path (like NFS); two more hosts keep theirs local. Guests are
the tiny image under TCG; libvirt between lab hosts is qemu+tcp to the hosts' lab addresses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Cli, lab_virsh, make_home

pytestmark = pytest.mark.integration
MARKER = r"CLOUDCTL-GUEST-UP uuid=(\S+) hostname=(\S+)"
CONFIG = "service_down_time_s: 3600\nstop_timeout_s: 5\n"


def setup_lab(c: Cli, *args: str) -> None:
    c.run("lab", "up", "--connection", "local", *args, timeout=600)
    c.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1")
    c.run("flavor", "create", "m1.small", "--vcpus", "1", "--ram", "192", "--disk", "2")
    c.run("image", "create-tiny", "tiny", timeout=900)
    c.run("quota", "set", "--instances", "-1", "--cores", "-1", "--ram", "-1")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = make_home(tmp_path_factory, "moves-home", CONFIG)
    setup_lab(c, "--hosts", "3", "--storage", "shared")
    yield c
    c.run("lab", "down", check=False)


def virsh(c: Cli, host: str, *args: str) -> str:
    return lab_virsh(c, host, *args)


def running_on(c: Cli, host: str) -> set[str]:
    return set(virsh(c, host, "list", "--name").split())


def defined_on(c: Cli, host: str) -> set[str]:
    return set(virsh(c, host, "list", "--all", "--name").split())


def vms(c: Cli) -> dict[str, int]:
    return {h["name"]: h["running_vms"] for h in c.json("host", "list")}


def memory_used(c: Cli) -> dict[str, int]:
    return {h["name"]: h["memory_mb_used"] for h in c.json("host", "list")}


def domstate(c: Cli, host: str, domain: str) -> str:
    """libvirt's state of the domain on ``host``, with its reason, e.g. "running (migrated)"."""
    return virsh(c, host, "domstate", "--reason", domain).strip()


def guest_up(c: Cli, view: dict[str, str]) -> None:
    """The guest printed its marker, with its own uuid and hostname, to its console."""
    out = c.json("console", view["name"], "--wait-for", MARKER, "--timeout", "120")
    assert out["found"], out["log"][-1500:]
    found = re.search(MARKER, out["match"])
    assert found is not None and found.groups() == (view["uuid"], view["name"])


def clean(c: Cli) -> None:
    names = [i["name"] for i in c.json("list")]
    if names:
        c.run("delete", *names, check=False)


def boot(c: Cli, name: str, host: str) -> dict[str, str]:
    view = c.json("boot", name, "--flavor", "m1.tiny", "--image", "tiny", "--az", f":{host}")
    assert view["status"] == "ACTIVE" and view["host"] == host
    return view  # type: ignore[no-any-return]


def test_live_migration_moves_a_running_guest(lab: Cli) -> None:
    clean(lab)
    view = boot(lab, "lm", "lab-1")
    guest_up(lab, view)  # booted on the source before it moves
    mig = lab.json("live-migrate", "lm", "--host", "lab-2")
    assert (mig["status"], mig["source_host"], mig["dest_host"]) == ("completed", "lab-1", "lab-2")
    assert mig["shared_storage"] is True and mig["block_migration"] is False
    assert mig["memory_total"] and mig["memory_processed"] == mig["memory_total"]
    assert view["domain"] in running_on(lab, "lab-2")
    assert view["domain"] not in defined_on(lab, "lab-1")
    assert domstate(lab, "lab-2", view["domain"]).startswith("running")  # resumed there
    shown = lab.json("show", "lm")
    assert (shown["status"], shown["host"], shown["task_state"]) == ("ACTIVE", "lab-2", None)
    assert shown["power_state"] == "RUNNING"
    assert vms(lab) == {"lab-1": 0, "lab-2": 1, "lab-3": 0}
    assert memory_used(lab) == {"lab-1": 0, "lab-2": 128, "lab-3": 0}
    guest_up(lab, view)  # the console log, read from the destination now
    events = [e["event"] for e in lab.json("action", "list", "lm")[-1]["events"]]
    assert events[-1] == "post_live_migration"
    assert lab.json("migration", "list", "--instance", "lm")[-1]["status"] == "completed"


def test_failed_live_migration_rolls_back_to_the_source(lab: Cli) -> None:
    clean(lab)
    view = boot(lab, "lmfail", "lab-1")
    config = lab.home / "config.yaml"
    config.write_text(CONFIG + "live_migration_bandwidth_mib: 1\n")  # slow enough to kill
    try:
        mig = lab.json("live-migrate", "lmfail", "--host", "lab-3", "--no-wait")
        pidfile = lab.home / "lab" / "hosts" / "lab-3" / "run" / "libvirt" / "qemu"
        pidfile = pidfile / f"{view['domain']}.pid"
        deadline = time.monotonic() + 120
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert pidfile.exists(), lab.json("migration", "show", str(mig["id"]))
        live = lab.json("migration", "show", str(mig["id"]))
        while live["memory_total"] is None and time.monotonic() < deadline:
            time.sleep(1)  # progress samples are written while it runs
            live = lab.json("migration", "show", str(mig["id"]))
        assert live["status"] == "running" and live["memory_total"], live
        assert live["memory_processed"] is not None
        os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)  # the destination dies
        while time.monotonic() < deadline:
            shown = lab.json("migration", "show", str(mig["id"]))
            if shown["status"] in ("error", "failed", "completed"):
                break
            time.sleep(1)
    finally:
        config.write_text(CONFIG)
    assert shown["status"] == "error" and shown["error"], shown
    inst = lab.json("show", "lmfail")
    assert (inst["status"], inst["host"], inst["task_state"]) == ("ACTIVE", "lab-1", None)
    assert inst["power_state"] == "RUNNING"
    assert view["domain"] in running_on(lab, "lab-1")
    assert domstate(lab, "lab-1", view["domain"]).startswith("running")  # not left paused
    assert view["domain"] not in defined_on(lab, "lab-3")
    lab3 = lab.home / "lab" / "hosts" / "lab-3"
    assert not (lab3 / "run" / "libvirt" / "qemu" / f"{view['domain']}.xml").exists()
    assert (lab.home / "lab" / "shared" / "instances" / view["uuid"] / "disk").is_file()
    assert vms(lab) == {"lab-1": 1, "lab-2": 0, "lab-3": 0}
    assert memory_used(lab) == {"lab-1": 128, "lab-2": 0, "lab-3": 0}
    with sqlite3.connect(lab.home / "state.db") as db:
        faults = db.execute(
            "SELECT message FROM instance_faults WHERE instance_uuid = ?", (view["uuid"],)
        ).fetchall()
    assert [m for (m,) in faults if "live-migration failed" in m], faults
    events = {(e["event"], e["result"]) for e in lab.json("action", "list", "lmfail")[-1]["events"]}
    assert ("live_migration", "Error") in events
    assert ("rollback_live_migration", "Success") in events
    assert lab.json("live-migrate", "lmfail", "--host", "lab-3")["status"] == "completed"
    assert view["domain"] in running_on(lab, "lab-3")


def test_cold_migrate_confirm_and_resize_revert(lab: Cli) -> None:
    clean(lab)
    view = boot(lab, "cm", "lab-2")
    moved = lab.json("migrate", "cm", "--host", "lab-3")
    assert (moved["status"], moved["host"]) == ("VERIFY_RESIZE", "lab-3")
    assert vms(lab) == {"lab-1": 0, "lab-2": 1, "lab-3": 1}  # both held until confirmed
    assert view["domain"] in running_on(lab, "lab-3")
    assert view["domain"] not in defined_on(lab, "lab-2")
    assert lab.json("resize-confirm", "cm")["status"] == "ACTIVE"
    assert vms(lab) == {"lab-1": 0, "lab-2": 0, "lab-3": 1}

    resized = lab.json("resize", "cm", "--flavor", "m1.small")
    assert (resized["status"], resized["flavor"], resized["ram"], resized["disk"]) == (
        "VERIFY_RESIZE",
        "m1.small",
        192,
        2,
    )
    dest = resized["host"]
    assert dest != "lab-3" and view["domain"] in running_on(lab, dest)
    assert "<memory unit='KiB'>196608</memory>" in virsh(lab, dest, "dumpxml", view["domain"])
    reverted = lab.json("resize-revert", "cm")
    assert (reverted["status"], reverted["host"], reverted["flavor"]) == (
        "ACTIVE",
        "lab-3",
        "m1.tiny",
    )
    assert view["domain"] in running_on(lab, "lab-3")
    assert view["domain"] not in defined_on(lab, dest)
    assert vms(lab) == {"lab-1": 0, "lab-2": 0, "lab-3": 1}
    statuses = [m["status"] for m in lab.json("migration", "list", "--instance", "cm")]
    assert statuses == ["confirmed", "reverted"]


def test_evacuate_a_host_whose_libvirtd_died(lab: Cli) -> None:
    clean(lab)
    view = boot(lab, "ev", "lab-3")
    proc = lab.run("evacuate", "ev", check=False)
    assert proc.returncode == 2 and "is up" in proc.stderr
    run_dir = lab.home / "lab" / "hosts" / "lab-3" / "run"
    qemu = run_dir / "libvirt" / "qemu" / f"{view['domain']}.pid"
    guest_pid = int(qemu.read_text().strip())
    os.kill(int((run_dir / "libvirtd.pid").read_text().strip()), signal.SIGKILL)
    os.kill(guest_pid, signal.SIGKILL)  # fenced: the host is gone with its guest
    try:
        moved = lab.json("evacuate", "ev")
        assert moved["status"] == "ACTIVE" and moved["host"] in ("lab-1", "lab-2")
        assert view["domain"] in running_on(lab, moved["host"])
        [mig] = lab.json("migration", "list", "--instance", "ev")
        assert (mig["type"], mig["status"], mig["shared_storage"]) == ("evacuation", "done", True)
        assert vms(lab)["lab-3"] == 0
    finally:
        lab.run("lab", "up", "--hosts", "3", "--storage", "shared", "--connection", "local")


def test_host_drain_moves_every_guest(lab: Cli) -> None:
    clean(lab)
    for name in ("dr-a", "dr-b"):
        boot(lab, name, "lab-1")
    lab.run("pause", "dr-b")  # a paused guest cannot be live-migrated: the drain goes on
    proc = lab.run("host", "drain", "lab-1", "-o", "json", check=False)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["moved"], summary["failed"]) == (1, 1)
    outcome = {g["name"]: (g["result"], g["host"]) for g in summary["guests"]}
    assert outcome["dr-a"][0] == "moved" and outcome["dr-a"][1] in ("lab-2", "lab-3")
    assert outcome["dr-b"] == ("failed", "lab-1")
    assert lab.json("show", "dr-b")["status"] == "PAUSED"
    lab.run("unpause", "dr-b")
    summary = lab.json("host", "drain", "lab-1")
    assert (summary["moved"], summary["failed"]) == (1, 0)
    for name in ("dr-a", "dr-b"):
        [mig] = lab.json("migration", "list", "--instance", name)
        assert (mig["type"], mig["status"], mig["source_host"]) == (
            "live-migration",
            "completed",
            "lab-1",
        )
    host = lab.json("host", "show", "lab-1")
    assert (host["status"], host["disabled_reason"], host["running_vms"]) == (
        "disabled",
        "draining",
        0,
    )
    assert running_on(lab, "lab-1") == set()
    assert {i["host"] for i in lab.json("list")} <= {"lab-2", "lab-3"}
    assert memory_used(lab)["lab-1"] == 0
    lab.run("host", "enable", "lab-1")
    clean(lab)


@pytest.fixture(scope="module")
def local_lab(tmp_path_factory: pytest.TempPathFactory, lab: Cli) -> Iterator[Cli]:
    lab.run("lab", "down", check=False)  # one lab at a time on this small machine
    c = make_home(tmp_path_factory, "moves-local", CONFIG)
    setup_lab(c, "--hosts", "2", "--storage", "local")
    yield c
    c.run("lab", "down", check=False)


def test_block_migration_between_local_disks(local_lab: Cli) -> None:
    c = local_lab
    view = boot(c, "bm", "lab-1")
    mig = c.json("live-migrate", "bm")
    assert (mig["status"], mig["dest_host"], mig["block_migration"]) == ("completed", "lab-2", True)
    assert view["domain"] in running_on(c, "lab-2")
    assert view["domain"] not in defined_on(c, "lab-1")
    hosts = c.home / "lab" / "hosts"
    assert not (hosts / "lab-1" / "instances" / view["uuid"]).exists()
    assert (hosts / "lab-2" / "instances" / view["uuid"] / "disk").exists()
    assert vms(c) == {"lab-1": 0, "lab-2": 1}
    # A cold migration back streams the disk through libvirt between the hosts.
    assert c.json("migrate", "bm")["host"] == "lab-1"
    c.run("resize-confirm", "bm")
    assert (hosts / "lab-1" / "instances" / view["uuid"] / "disk").exists()
    assert not Path(hosts / "lab-2" / "instances" / f"{view['uuid']}_resize").exists()
    assert view["domain"] in running_on(c, "lab-1")
    c.run("delete", "bm")
