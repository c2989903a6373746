"""Snapshots and images from snapshots for real: a one-host lab, the tiny guest under TCG.

The tiny guest keeps a boot counter on its root disk and prints ``CLOUDCTL-DISK boots=<n>`` at
every boot (templates/tiny_image/init), so a boot shows which disk state it started from: the
revert tests boot again after reverting, and the images made from snapshots must start with the
snapshot's count. One guest, ``snap``, goes through the whole story in order.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Cli, make_home

pytestmark = pytest.mark.integration
MARKER = r"CLOUDCTL-GUEST-UP uuid=(\S+) hostname=(\S+)"
BOOTS = re.compile(r"CLOUDCTL-DISK boots=(\d+)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    started = time.monotonic()
    c = make_home(tmp_path_factory, "snap-home", "service_down_time_s: 3600\nstop_timeout_s: 3\n")
    c.run("lab", "up", "--hosts", "1", "--connection", "local")
    # 128 MiB: the tiny guest's kernel does not come up in 64 MiB here.
    c.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1")
    c.run("image", "create-tiny", "tiny", timeout=900)
    print(f"\n[snapshots] lab up, flavor, image: {time.monotonic() - started:.0f} s")
    yield c
    c.run("lab", "down", check=False)


def guest_dir(c: Cli, view: dict[str, str]) -> Path:
    """An instance's directory: with shared storage the controller sees the hosts' files."""
    return c.home / "lab" / "shared" / "instances" / view["uuid"]


def boots(c: Cli, view: dict[str, str]) -> list[int]:
    """The boot counts the guest printed so far, in order (the console log accumulates)."""
    log = guest_dir(c, view) / "console.log"
    return [int(n) for n in BOOTS.findall(log.read_text(errors="replace"))] if log.exists() else []


def wait_boots(c: Cli, view: dict[str, str], count: int, timeout: float = 120) -> list[int]:
    """Wait until the guest printed ``count`` boot lines; return them."""
    deadline = time.monotonic() + timeout
    while True:
        seen = boots(c, view)
        if len(seen) >= count or time.monotonic() > deadline:
            assert len(seen) >= count, f"{view['name']}: {count} boots expected, saw {seen}"
            return seen
        time.sleep(0.5)


def on_host(c: Cli, *argv: str) -> str:
    enter = c.home / "lab" / "hosts" / "lab-1" / "enter"
    return subprocess.run(
        [str(enter), *argv], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def libvirt_snapshots(c: Cli, domain: str) -> list[str]:
    out = on_host(c, "virsh", "-c", "qemu:///system", "snapshot-list", domain, "--name")
    return [line.strip() for line in out.splitlines() if line.strip()]


def root_source(c: Cli, domain: str) -> str:
    out = on_host(c, "virsh", "-c", "qemu:///system", "domblklist", domain)
    [line] = [ln for ln in out.splitlines() if ln.strip().startswith("vda")]
    return line.split()[1]


def test_snapshots_revert_images_and_cleanup(lab: Cli) -> None:
    c = lab
    started = time.monotonic()
    snap = c.json("boot", "snap", "--flavor", "m1.tiny", "--image", "tiny")
    domain, disk_dir = snap["domain"], guest_dir(c, snap)
    assert wait_boots(c, snap, 1) == [1]

    # Internal snapshot of the running guest (memory state included), recorded in SQL.
    s1 = c.json("snapshot", "create", "snap", "s1", "--description", "after the first boot")
    assert (s1["kind"], s1["status"], s1["state"], s1["host"]) == (
        "internal",
        "available",
        "running",
        "lab-1",
    )
    assert s1["size"] > 0
    table = c.run("snapshot", "list", "snap").stdout
    assert "s1" in table and "internal" in table and "available" in table
    assert libvirt_snapshots(c, domain) == ["s1"]

    # The disk moves on, then the revert brings the guest back: still running, and a boot
    # after it counts from the snapshot's disk again (2, not 3).
    c.json("reboot", "snap", "--hard")
    assert wait_boots(c, snap, 2) == [1, 2]
    reverted = c.json("snapshot", "revert", "snap", "s1")
    assert (reverted["status"], reverted["power_state"], reverted["task_state"]) == (
        "ACTIVE",
        "RUNNING",
        None,
    )
    c.json("reboot", "snap", "--hard")
    assert wait_boots(c, snap, 3) == [1, 2, 2]
    actions = [(a["action"], [(e["event"], e["result"]) for e in a["events"]]) for a in c.json("action", "list", "snap")]  # fmt: skip
    assert ("snapshot", [("snapshot_create", "Success")]) in actions
    assert ("revertSnapshot", [("snapshot_revert", "Success")]) in actions
    print(f"\n[snapshots] internal snapshot, revert: {time.monotonic() - started:.0f} s")

    # An image from the snapshot boots, from the snapshot's disk (its count was 1).
    image = c.json("image", "create-from", "snap", "s1", "snap-s1")
    assert (image["disk_format"], image["kernel"], image["initrd"]) == ("qcow2", True, True)
    assert image["properties"]["image_type"] == "snapshot"
    assert image["properties"]["instance_uuid"] == snap["uuid"]
    child = c.json("boot", "child", "--flavor", "m1.tiny", "--image", "snap-s1")
    out = c.json("console", "child", "--wait-for", MARKER, "--timeout", "120")
    assert re.search(MARKER, out["match"]).groups() == (child["uuid"], "child")  # type: ignore[union-attr]
    assert BOOTS.findall(out["log"]) == ["2"]
    print(f"[snapshots] image from it booted: {time.monotonic() - started:.0f} s")

    # --quiesce needs the guest agent, which the tiny guest has not: one clear error line,
    # and nothing left in SQL, in libvirt or on disk.
    for extra in ([], ["--disk-only"]):
        refused = c.run("snapshot", "create", "child", "q1", "--quiesce", *extra, check=False)
        assert refused.returncode == 1, refused.stderr
        errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "guest agent is not responding" in errors[0], refused.stderr
    assert c.json("snapshot", "list", "child") == []
    assert libvirt_snapshots(c, child["domain"]) == []
    assert [p.name for p in guest_dir(c, child).iterdir() if ".snap-" in p.name] == []
    assert c.json("show", "child")["status"] == "ACTIVE"

    # Kinds are not mixed; deleting s1 removes it from libvirt.
    mixed = c.run("snapshot", "create", "snap", "d1", "--disk-only", check=False)
    assert mixed.returncode == 2 and "are not mixed" in mixed.stderr
    [gone] = c.json("snapshot", "delete", "snap", "s1")
    assert gone["status"] == "deleted"
    assert c.json("snapshot", "list", "snap") == [] and libvirt_snapshots(c, domain) == []
    print(f"[snapshots] quiesce refused, s1 deleted: {time.monotonic() - started:.0f} s")

    # Disk-only: an overlay next to the disk takes the writes; the disk below keeps the state
    # (the count of the last boot, 2).
    d1 = c.json("snapshot", "create", "snap", "d1", "--disk-only")
    assert (d1["kind"], d1["status"], d1["state"]) == ("external", "available", "disk-snapshot")
    overlay = disk_dir / "disk.snap-d1"
    assert d1["file"].endswith(f"{snap['uuid']}/disk.snap-d1") and overlay.is_file()
    assert root_source(c, domain).endswith("disk.snap-d1")
    c.json("reboot", "snap", "--hard")
    assert wait_boots(c, snap, 4) == [1, 2, 2, 3]
    c.json("snapshot", "revert", "snap", "d1")  # a fresh overlay: the guest boots from d1's disk
    assert wait_boots(c, snap, 5)[-1] == 3
    assert c.json("show", "snap")["power_state"] == "RUNNING"

    image2 = c.json("image", "create-from", "snap", "d1", "snap-d1")
    assert image2["properties"]["snapshot"] == "d1"
    child2 = c.json("boot", "child2", "--flavor", "m1.tiny", "--image", "snap-d1")
    assert wait_boots(c, child2, 1) == [3]
    print(f"[snapshots] disk-only, revert, image: {time.monotonic() - started:.0f} s")

    # Deleting d1 commits the overlay back: the guest runs on its disk, which still works.
    c.json("snapshot", "delete", "snap", "d1")
    assert not overlay.exists()
    assert root_source(c, domain).endswith(f"{snap['uuid']}/disk")
    c.json("reboot", "snap", "--hard")
    assert wait_boots(c, snap, 6)[-1] == 4

    # Deleting an instance deletes its snapshots: rows marked deleted, libvirt's metadata gone.
    keep = c.json("snapshot", "create", "child2", "keep")
    assert libvirt_snapshots(c, child2["domain"]) == ["keep"]
    c.json("delete", "child2", "snap", "child")
    [kept] = c.json("snapshot", "list", "child2", "--deleted")
    assert (kept["id"], kept["status"]) == (keep["id"], "deleted") and kept["deleted_at"]
    on_libvirt = on_host(c, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
    assert child2["domain"] not in on_libvirt and not guest_dir(c, child2).exists()
    for name in ("snap-s1", "snap-d1"):
        c.run("image", "delete", name)
    print(f"[snapshots] whole story in {time.monotonic() - started:.0f} s")
