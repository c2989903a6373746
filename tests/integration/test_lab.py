"""`cloudctl lab` end to end: three hosts in namespaces, reached over SSH, across AZs.

The issue's acceptance run: up -> hosts registered, up, with discovered capacity; guests booted
into az2 land on the az2 host and print their marker (console read over SSH); a killed libvirtd
is reported by `lab status` and brought back by `lab up`; `lab down` leaves no process,
namespace, link or mount behind and unregisters the hosts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Cli, make_home

pytestmark = pytest.mark.integration
MARKER = r"CLOUDCTL-GUEST-UP uuid=(\S+) hostname=(\S+)"


def netns() -> set[str]:
    out = subprocess.run(
        ["ip", "-json", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return {n["name"] for n in json.loads(out or "[]")}


def links() -> set[str]:
    out = subprocess.run(["ip", "-json", "link"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
        except OSError:
            continue
        if text in cmd and pid != str(os.getpid()):
            found.append(f"{pid}: {cmd[:120]}")
    return found


@pytest.fixture(scope="module")
def lab_cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    c = make_home(tmp_path_factory, "lab-home", "service_down_time_s: 3600\n")
    c.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1")
    c.run("image", "create-tiny", "tiny", timeout=900)
    return c


def test_lab_up_boot_across_azs_reconcile_and_down(lab_cli: Cli) -> None:
    c = lab_cli
    lab_root = c.home / "lab"
    ns_before, links_before = netns(), links()
    try:
        up = c.json("lab", "up", "--hosts", "3", "--azs", "3")
        assert [h["name"] for h in up] == ["lab-1", "lab-2", "lab-3"]
        hosts = {h["name"]: h for h in c.json("host", "list")}
        assert set(hosts) == {"lab-1", "lab-2", "lab-3"}
        for h in hosts.values():
            assert (h["state"], h["status"], h["connection"]) == ("up", "enabled", "ssh")
            assert h["vcpus"] > 0 and h["memory_mb"] > 0 and h["local_gb"] > 0
        assert {h["availability_zone"] for h in hosts.values()} == {"az1", "az2", "az3"}
        [az2_host] = [n for n, h in hosts.items() if h["availability_zone"] == "az2"]
        assert len(netns() - ns_before) == 3

        # Re-running up on a healthy lab changes nothing and keeps the hosts.
        assert [h["name"] for h in c.json("lab", "up", "--hosts", "3", "--azs", "3")] == [
            "lab-1",
            "lab-2",
            "lab-3",
        ]

        views = c.json(
            "boot", "azg", "--flavor", "m1.tiny", "--image", "tiny", "--az", "az2", "--count", "2"
        )
        assert {v["host"] for v in views} == {az2_host}
        assert all(v["status"] == "ACTIVE" for v in views)
        for v in views:
            out = c.json("console", v["name"], "--wait-for", MARKER, "--timeout", "120")
            assert out["found"], out["log"][-1500:]
            assert re.search(MARKER, out["match"]).groups() == (v["uuid"], v["name"])  # type: ignore[union-attr]

        # Kill the az2 host's libvirtd: status says which host and why; up brings it back.
        pidfile = next((lab_root / "hosts" / az2_host).rglob("libvirtd.pid"))
        os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        proc = c.run("lab", "status", "-o", "json", check=False)
        assert proc.returncode == 1
        sick = {r["name"]: r for r in json.loads(proc.stdout)}
        assert not sick[az2_host]["healthy"] and "libvirtd" in " ".join(sick[az2_host]["problems"])
        assert all(sick[n]["healthy"] for n in sick if n != az2_host)
        c.json("lab", "up", "--hosts", "3", "--azs", "3")
        assert all(r["healthy"] for r in c.json("lab", "status"))
        # The guests outlived their libvirtd and are seen again by the new one.
        c.run("stop", "azg-1")
        assert c.json("show", "azg-1")["power_state"] == "SHUTDOWN"
    finally:
        down = c.run("lab", "down", "-o", "json", check=False)
    assert down.returncode == 0, down.stderr
    assert sorted(json.loads(down.stdout)["hosts_removed"]) == ["lab-1", "lab-2", "lab-3"]
    assert netns() <= ns_before
    assert links() <= links_before
    assert str(lab_root) not in Path("/proc/self/mountinfo").read_text()
    assert processes_mentioning(str(lab_root)) == []
    assert c.json("host", "list") == []
    assert c.json("list") == []
    # down is idempotent
    assert c.run("lab", "down", check=False).returncode == 0


def test_live_migration_between_lab_hosts_over_their_addresses(tmp_path: Path) -> None:
    """The lab is fit for the lifecycle issue: shared storage and lab addresses carry a migration."""
    import uuid

    from cloudctl.render import DomainSpec, render_domain_xml
    from cloudctl.services.lab_machine import Lab, LabSpec

    lab = Lab(tmp_path / "lab")
    src, dst = lab.up(LabSpec(hosts=2, connection="local"))
    try:
        spec = DomainSpec(
            name="ccmig",
            uuid=str(uuid.uuid4()),
            hostname="mig",
            memory_mb=64,
            vcpus=1,
            virt_type="qemu",
            cpu_mode="none",
            console_log=str(lab.shared_instances / "mig.log"),
            vnc=False,
        )
        xml = tmp_path / "mig.xml"
        xml.write_text(render_domain_xml(spec))

        def virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["virsh", "-c", uri, *args], capture_output=True, text=True, check=False
            )

        assert virsh(src.socket_uri, "define", str(xml)).returncode == 0
        assert virsh(src.socket_uri, "start", "ccmig").returncode == 0
        moved = virsh(
            src.socket_uri,
            "migrate",
            "--live",
            "--persistent",
            "--undefinesource",
            "ccmig",
            dst.socket_uri,
            f"tcp://{dst.address}",
        )
        assert moved.returncode == 0, moved.stderr
        assert "running" in virsh(dst.socket_uri, "domstate", "ccmig").stdout
        assert "ccmig" not in virsh(src.socket_uri, "list", "--all", "--name").stdout
    finally:
        lab.down()
    assert processes_mentioning(str(tmp_path / "lab")) == []
