"""``cloudctl adopt`` on a real 1-host lab (reached over SSH, as a remote host).

A guest is booted, then removed from the books only (its instance row, allocation and address
deleted in SQL), which leaves a running domain cloudctl does not know - exactly what adopt is
for. It is adopted back, checked where it lives (libvirt on the lab host, the ledger, verify),
powered off and on, and deleted cleanly.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from cloudctl.db.models import (
    Allocation,
    FixedIP,
    Instance,
    InstanceAction,
    InstanceActionEvent,
)
from cloudctl.db.session import Database
from cloudctl.services.settings import load_settings
from tests.integration.conftest import Cli, make_home

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
HOST = "lab-1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = make_home(tmp_path_factory, "adopt-home", "service_down_time_s: 3600\nstop_timeout_s: 3\n")
    c.run("lab", "up", "--hosts", "1", timeout=600)
    c.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1")
    c.run("image", "create-tiny", "tiny", timeout=900)
    yield c
    c.run("lab", "down", check=False)


def on_host(c: Cli, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command inside the lab host's namespaces."""
    enter = c.home / "lab" / "hosts" / HOST / "enter"
    return subprocess.run(
        [str(enter), *argv], capture_output=True, text=True, check=False, timeout=60
    )


def virsh(c: Cli, *argv: str) -> str:
    return on_host(c, "virsh", "-c", "qemu:///system", *argv).stdout.strip()


def verify(c: Cli) -> tuple[int, dict[str, Any]]:
    proc = c.run("verify", "-o", "json", check=False, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def forget(c: Cli, uuid: str) -> None:
    """Remove an instance from the books only: the domain and its files stay on the host."""
    db = Database(load_settings(environ=c.env()).db_url)
    try:
        with db.unit_of_work() as s:
            actions = list(
                s.scalars(select(InstanceAction.id).where(InstanceAction.instance_uuid == uuid))
            )
            s.execute(delete(InstanceActionEvent).where(InstanceActionEvent.action_id.in_(actions)))
            s.execute(delete(InstanceAction).where(InstanceAction.id.in_(actions)))
            s.execute(delete(Allocation).where(Allocation.consumer_uuid == uuid))
            s.execute(
                update(FixedIP)
                .where(FixedIP.instance_uuid == uuid)
                .values(instance_uuid=None, mac=None, allocated=False)
            )
            s.execute(delete(Instance).where(Instance.uuid == uuid))
    finally:
        db.dispose()


def test_adopt_a_guest_cloudctl_forgot(lab: Cli) -> None:
    booted = lab.json("boot", "orig", "--flavor", "m1.tiny", "--image", "tiny")
    assert booted["status"] == "ACTIVE" and booted["host"] == HOST
    dom, uuid = booted["domain"], booted["uuid"]
    instance_dir = f"{lab.json('host', 'show', HOST)['instances_path']}/{uuid}"
    forget(lab, uuid)
    assert lab.json("list") == []
    assert virsh(lab, "domstate", dom) == "running"
    _, report = verify(lab)
    assert ("EDOMAIN004", dom) in {(f["code"], f["object"]) for f in report["findings"]}

    adopted = lab.json("adopt", HOST, dom, "--name", "adopted")
    assert (adopted["name"], adopted["uuid"], adopted["domain"]) == ("adopted", uuid, dom)
    assert (adopted["status"], adopted["power_state"], adopted["host"]) == (
        "ACTIVE",
        "RUNNING",
        HOST,
    )
    assert (adopted["flavor"], adopted["image"]) == ("m1.tiny", None)
    shown = lab.json("show", "adopted")
    assert (shown["status"], shown["host"]) == ("ACTIVE", HOST)
    usage = lab.json("host", "show", HOST)
    assert (usage["vcpus_used"], usage["memory_mb_used"], usage["local_gb_used"]) == (1, 128, 1)
    assert usage["running_vms"] == 1
    assert [a["action"] for a in lab.json("action", "list", "adopted")] == ["adopt"]
    rc, report = verify(lab)
    assert (rc, report["errors"]) == (0, 0), report
    assert not [f for f in report["findings"] if f["object"] in (dom, "adopted")], report

    again = lab.run("adopt", HOST, dom, "--name", "twice", check=False)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: domain {dom} on {HOST} is already instance adopted"

    # The verbs work on it as on any guest.
    [stopped] = lab.json("stop", "adopted")
    assert stopped["status"] == "SHUTOFF" and virsh(lab, "domstate", dom) == "shut off"
    [started] = lab.json("start", "adopted")
    assert started["status"] == "ACTIVE" and virsh(lab, "domstate", dom) == "running"

    lab.run("delete", "adopted")
    assert dom not in virsh(lab, "list", "--all", "--name").split()
    assert on_host(lab, "test", "-e", instance_dir).returncode == 1
    usage = lab.json("host", "show", HOST)
    assert (usage["vcpus_used"], usage["memory_mb_used"], usage["running_vms"]) == (0, 0, 0)
    rc, report = verify(lab)
    assert (rc, report["errors"]) == (0, 0), report


def test_a_foreign_domain_of_no_flavor_size_asks_for_one(lab: Cli, tmp_path: Path) -> None:
    """A domain defined by hand on the host: its disk is read there; no flavor has its size
    until one is made; deleting it undefines the domain and leaves its disk, which cloudctl
    did not create."""
    disk = "/var/lib/libvirt/images/cctest-foreign.qcow2"
    on_host(lab, "mkdir", "-p", "/var/lib/libvirt/images")
    made = on_host(lab, "qemu-img", "create", "-q", "-f", "qcow2", disk, "300M")
    assert made.returncode == 0, made.stderr
    xml = f"""<domain type='qemu'>
  <name>cctest-foreign</name>
  <memory unit='MiB'>96</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>"""
    path = tmp_path / "foreign.xml"
    path.write_text(xml)
    defined = on_host(lab, "virsh", "-c", "qemu:///system", "define", str(path))
    assert defined.returncode == 0, defined.stderr
    try:
        refused = lab.run("adopt", HOST, "cctest-foreign", check=False)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1] == (
            "error: invalid input: no flavor fits domain cctest-foreign (1 vCPU(s), 96 MiB, "
            "root disk 0.29 GiB): pass --flavor"
        )
        missing = lab.run("adopt", HOST, "cctest-none", check=False)
        assert missing.returncode == 2
        assert missing.stderr.splitlines()[-1] == (
            "error: domain 'cctest-none' is not defined on host lab-1"
        )
        assert lab.json("list") == []

        lab.run("flavor", "create", "m1.odd", "--vcpus", "1", "--ram", "96", "--disk", "1")
        adopted = lab.json("adopt", HOST, "cctest-foreign", "--name", "foreign")
        assert (adopted["status"], adopted["flavor"], adopted["domain"]) == (
            "SHUTOFF",
            "m1.odd",
            "cctest-foreign",
        )
        lab.run("delete", "foreign")
        assert "cctest-foreign" not in virsh(lab, "list", "--all", "--name").split()
        # Only the instance directory cloudctl made is its to remove: the adopted disk stays.
        assert on_host(lab, "test", "-f", disk).returncode == 0
    finally:
        virsh(lab, "undefine", "cctest-foreign")
        on_host(lab, "rm", "-f", disk)
