"""validate / plan / apply on a real 4-host lab (2 AZs), issue 7's done-when.

The example estate is applied, applied again (nothing to do), changed (a replica count, a
flavor, a pinned host, a power state: each planned and applied as classified), pruned, and
applies are SIGKILLed at random moments: the next apply converges and ``verify`` finds nothing
leaked. Every guest is a real domain on the lab hosts' own libvirtds.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cli, make_home

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "estate"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = make_home(tmp_path_factory, "gitops-home", "stop_timeout_s: 5\nservice_down_time_s: 3600\n")
    c.run("lab", "up", "--hosts", "4", "--azs", "2", "--connection", "local", timeout=900)
    yield c
    c.run("lab", "down", check=False, timeout=600)


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("estate") / "estate"
    shutil.copytree(EXAMPLES, path)
    return path


def run(c: Cli, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return c.run(*args, check=False, timeout=timeout)


def plan(c: Cli, estate: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = run(c, "plan", "-f", str(estate), "-o", "json", "--detailed-exitcode", *extra)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def changes(view: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (c["kind"], c["name"]): (c["action"], c["impact"])
        for c in view["changes"]
        if c["action"] != "no-op"
    }


def apply(c: Cli, estate: Path, *extra: str) -> dict[str, Any]:
    proc = run(c, "apply", "-f", str(estate), "--auto-approve", "-o", "json", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def domains(c: Cli) -> dict[str, str]:
    """Every guest domain on the lab hosts: instance uuid -> host:state."""
    out = {}
    for host in ("lab-1", "lab-2", "lab-3", "lab-4"):
        enter = c.home / "lab" / "hosts" / host / "enter"
        listing = subprocess.run(
            [
                str(enter),
                "virsh",
                "-c",
                "qemu:///system",
                "list",
                "--all",
                "--uuid",
                "--state-running",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.split()
        every = subprocess.run(
            [str(enter), "virsh", "-c", "qemu:///system", "list", "--all", "--uuid"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.split()
        for u in every:
            out[u] = f"{host}:{'running' if u in listing else 'off'}"
    return out


def servers(c: Cli) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in c.json("list")}


def verify_clean(c: Cli) -> None:
    proc = run(c, "verify", "-o", "json", timeout=300)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["errors"] == 0, report["findings"]


def test_apply_the_examples_then_nothing_to_do(lab: Cli, estate: Path) -> None:
    assert run(lab, "validate", "-f", str(estate)).returncode == 0
    rc, view = plan(lab, estate)
    assert rc == 2
    planned = changes(view)
    assert planned[("Server", "db")] == ("create", "")
    hosts = {c["name"]: c["placement"]["host"] for c in view["changes"] if c.get("placement")}
    assert hosts["db"] == "lab-1"
    assert len({hosts["web-1"], hosts["web-2"], hosts["web-3"]}) == 3
    done = apply(lab, estate)
    assert done["failed"] == [], done
    seen = servers(lab)
    assert {n: s["host"] for n, s in seen.items() if n in hosts} == hosts  # exactly the plan
    running = domains(lab)
    for name, s in seen.items():
        want = "off" if name.startswith("batch-") else "running"
        assert running[s["uuid"]] == f"{s['host']}:{want}", name
    rc, view = plan(lab, estate)
    assert rc == 0 and changes(view) == {}
    second = run(lab, "apply", "-f", str(estate), "--auto-approve")
    assert second.returncode == 0 and "No changes" in second.stderr
    verify_clean(lab)


def virsh(c: Cli, host: str, *args: str, stdin: str | None = None) -> str:
    enter = c.home / "lab" / "hosts" / host / "enter"
    proc = subprocess.run(
        [str(enter), "virsh", "-c", "qemu:///system", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=True,
    )
    return proc.stdout


def test_a_domain_resized_behind_cloudctl_is_flavor_drift(lab: Cli, estate: Path) -> None:
    batch = servers(lab)["batch-01"]  # declared stopped: its definition is what libvirt reports
    host, dom = batch["host"], f"instance-{batch['uuid']}"
    original = virsh(lab, host, "dumpxml", "--inactive", dom)
    doubled, n = re.subn(
        r"<(memory|currentMemory) unit='KiB'>131072<", r"<\1 unit='KiB'>262144<", original
    )
    assert n == 2, original
    xml_file = lab.home / "doubled.xml"
    xml_file.write_text(doubled)
    try:
        virsh(lab, host, "define", str(xml_file))
        rc, view = plan(lab, estate)
        assert rc == 0 and changes(view) == {}  # drift is shown, never planned
        (drift,) = [d for d in view["drift"] if d["server"] == "batch-01"]
        assert (drift["kind"], drift["category"]) == ("flavor-mismatch", "config")
        assert drift["detail"].startswith(f"1 vCPU / 256 MiB on {host}, flavor m1.tiny has")
        table = run(lab, "plan", "-f", str(estate))
        assert "drift: batch-01: flavor-mismatch: 1 vCPU / 256 MiB" in " ".join(
            table.stderr.split()
        )
    finally:
        xml_file.write_text(original)
        virsh(lab, host, "define", str(xml_file))
    rc, view = plan(lab, estate)
    assert rc == 0 and not [d for d in view["drift"] if d["server"] == "batch-01"]


def test_each_change_is_planned_and_applied_as_classified(lab: Cli, estate: Path) -> None:
    servers_yaml = estate / "servers.yaml"
    text = servers_yaml.read_text()
    text = text.replace("replicas: 3", "replicas: 4")  # web: one more
    text = text.replace("host_name: lab-1", "host_name: lab-3")  # db: pinned elsewhere in az1
    text = text.replace("power_state: stopped", "power_state: running")  # batch: power on
    text = text.replace(
        "  name: cache\nspec:\n  flavor: m1.tiny", "  name: cache\nspec:\n  flavor: m1.small"
    )
    servers_yaml.write_text(text)
    rc, view = plan(lab, estate)
    assert rc == 2
    got = changes(view)
    assert got[("Server", "web-4")] == ("create", "")
    assert got[("Server", "db")] == ("move", "live")
    assert got[("Server", "cache")] == ("move", "needs-reboot")
    assert got[("Server", "batch-01")] == ("update", "live")
    before = servers(lab)
    md = run(lab, "plan", "-f", str(estate), "-o", "markdown")
    assert "| `->` move | Server | `db` | live |" in md.stdout
    done = apply(lab, estate)
    assert done["failed"] == [], done
    after = servers(lab)
    assert after["db"]["host"] == "lab-3" and after["db"]["uuid"] == before["db"]["uuid"]
    assert after["db"]["status"] == "ACTIVE"
    assert (
        after["cache"]["flavor"] == "m1.small" and after["cache"]["uuid"] == before["cache"]["uuid"]
    )
    assert after["batch-01"]["status"] == "ACTIVE" and after["web-4"]["status"] == "ACTIVE"
    live = [m for m in lab.json("migration", "list", "--instance", "db")]
    assert live and live[-1]["type"] == "live-migration" and live[-1]["status"] == "completed"
    running = domains(lab)
    assert running[after["db"]["uuid"]] == "lab-3:running"
    assert plan(lab, estate)[0] == 0
    verify_clean(lab)


def test_prune_deletes_only_what_the_files_created(lab: Cli, estate: Path) -> None:
    lab.run("boot", "hand-made", "--flavor", "m1.tiny", "--image", "tiny")
    servers_yaml = estate / "servers.yaml"
    docs = servers_yaml.read_text().split("\n---\n")
    servers_yaml.write_text("\n---\n".join(d for d in docs if "name: cache" not in d))
    rc, view = plan(lab, estate)
    assert rc == 0 and {"kind": "Server", "name": "cache"} in view["undeclared"]
    rc, view = plan(lab, estate, "--prune")
    assert rc == 2 and changes(view) == {("Server", "cache"): ("delete", "needs-recreate")}
    gone = servers(lab)["cache"]["uuid"]
    apply(lab, estate, "--prune")
    assert "cache" not in servers(lab) and "hand-made" in servers(lab)
    assert gone not in domains(lab)
    assert plan(lab, estate, "--prune")[0] == 0
    lab.run("delete", "hand-made")
    verify_clean(lab)


def left_running(runs: Path, within_s: float = 10.0) -> list[str]:
    """Command lines of processes still naming ``runs`` after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if str(runs) in args and "[mux]" not in args:
                    found.append(args)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_an_apply_killed_at_random_moments_converges(lab: Cli, estate: Path) -> None:
    rng = random.Random(7)
    extra = estate / "killed.yaml"
    for attempt in range(3):
        extra.write_text(
            "apiVersion: cloudctl.dev/v1\nkind: Server\nmetadata:\n"
            f"  name: k{attempt}\nspec:\n  replicas: 3\n  flavor: m1.tiny\n  image: tiny\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudctl", "apply", "-f", str(estate), "--auto-approve"],
            env=lab.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: ansible-playbook dies with it
        )
        time.sleep(rng.uniform(1.0, 8.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not left_running(lab.home / "runs"), "the killed apply's Ansible run lives on"
        done = apply(lab, estate, "--lock-timeout", "60")
        assert done["failed"] == [], done
        assert plan(lab, estate)[0] == 0
        verify_clean(lab)
        names = [n for n in servers(lab) if n.startswith(f"k{attempt}")]
        assert sorted(names) == [f"k{attempt}-1", f"k{attempt}-2", f"k{attempt}-3"]
    extra.unlink()
    apply(lab, estate, "--prune")
    assert not [n for n in servers(lab) if n.startswith("k")]
    verify_clean(lab)


def test_malformed_files_change_nothing(lab: Cli, tmp_path: Path) -> None:
    before = servers(lab)
    cases = {
        "bad.yaml": "kind: [unclosed\n",
        "kind.yaml": "apiVersion: cloudctl.dev/v1\nkind: Serverr\nmetadata: {name: x}\nspec: {}\n",
        "types.yaml": (
            "apiVersion: cloudctl.dev/v1\nkind: Server\nmetadata: {name: x}\n"
            "spec: {flavor: m1.tiny, image: tiny, replicas: three}\n"
        ),
        "dangling.yaml": (
            "apiVersion: cloudctl.dev/v1\nkind: Server\nmetadata: {name: x}\n"
            "spec: {flavor: m1.hge, image: tiny}\n"
        ),
        "dup.yaml": (
            "apiVersion: cloudctl.dev/v1\nkind: Flavor\nmetadata: {name: f}\n"
            "spec: {vcpus: 1, ram_mb: 128, disk_gb: 1}\n---\n"
            "apiVersion: cloudctl.dev/v1\nkind: Flavor\nmetadata: {name: f}\n"
            "spec: {vcpus: 1, ram_mb: 128, disk_gb: 1}\n"
        ),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        for verb in ("validate", "plan", "apply"):
            argv = [verb, "-f", str(path)] + (["--auto-approve"] if verb == "apply" else [])
            proc = run(lab, *argv)
            assert proc.returncode == 2, (name, verb, proc.stderr)
            assert proc.stderr.startswith(f"error: {path}:"), (name, verb, proc.stderr)
    assert "dangling.yaml:" in run(lab, "validate", "-f", str(tmp_path / "dangling.yaml")).stderr
    assert servers(lab) == before
