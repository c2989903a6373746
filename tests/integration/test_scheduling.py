"""The scheduler on a real lab: groups, AZs, reschedule after a spawn failure, racing processes.

One lab of three hosts (az1: lab-1 + lab-3, az2: lab-2), reached through the local fast path;
guests are the tiny image under TCG. Every placement here went through Ansible and libvirt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Cli, make_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = make_home(tmp_path_factory, "sched-home", "service_down_time_s: 3600\n")
    c.run("lab", "up", "--hosts", "3", "--azs", "2", "--connection", "local")
    c.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "64", "--disk", "1")
    c.run("image", "create-tiny", "tiny", timeout=900)
    c.run("quota", "set", "--instances", "-1", "--cores", "-1", "--ram", "-1")
    yield c
    c.run("lab", "down", check=False)


def clean(c: Cli) -> None:
    names = [i["name"] for i in c.json("list")]
    if names:
        c.run("delete", *names)


def hosts_of(c: Cli, prefix: str) -> list[str]:
    return [i["host"] for i in c.json("list") if i["name"].startswith(prefix)]


def test_anti_affinity_spreads_and_refuses_a_fourth(lab: Cli) -> None:
    clean(lab)
    lab.run("server-group", "create", "spread", "--policy", "anti-affinity")
    views = lab.json(
        "boot",
        "anti",
        "--flavor",
        "m1.tiny",
        "--image",
        "tiny",
        "--count",
        "3",
        "--group",
        "spread",
    )
    assert sorted(v["host"] for v in views) == ["lab-1", "lab-2", "lab-3"]
    proc = lab.run(
        "boot", "anti-4", "--flavor", "m1.tiny", "--image", "tiny", "--group", "spread", check=False
    )
    assert proc.returncode == 1 and "ServerGroupAntiAffinityFilter removed 3" in proc.stderr
    assert "anti-4" not in [i["name"] for i in lab.json("list")]
    explained = {
        r["host"]: r
        for r in lab.json("schedule", "explain", "--flavor", "m1.tiny", "--group", "spread")
    }
    assert {r["filter"] for r in explained.values()} == {"ServerGroupAntiAffinityFilter"}
    clean(lab)


def test_affinity_packs_onto_one_host_across_boots(lab: Cli) -> None:
    clean(lab)
    lab.run("server-group", "create", "pack", "--policy", "affinity")
    first = lab.json(
        "boot", "aff", "--flavor", "m1.tiny", "--image", "tiny", "--count", "2", "--group", "pack"
    )
    later = lab.json(
        "boot", "aff-late", "--flavor", "m1.tiny", "--image", "tiny", "--group", "pack"
    )
    assert len({v["host"] for v in first} | {later["host"]}) == 1
    clean(lab)


def test_az_and_capacity(lab: Cli) -> None:
    clean(lab)
    views = lab.json(
        "boot", "inaz2", "--flavor", "m1.tiny", "--image", "tiny", "--az", "az2", "--count", "2"
    )
    assert {v["host"] for v in views} == {"lab-2"}
    cap = lab.json("capacity", "--flavor", "m1.tiny", "--az", "az2")
    per_host = {h["host"]: h["fits"] for h in cap["hosts"]}
    assert per_host["lab-1"] == per_host["lab-3"] == 0 and per_host["lab-2"] > 0
    assert cap["total"] == per_host["lab-2"]
    table = lab.run("capacity", "--flavor", "m1.tiny", "--az", "az2").stdout
    assert "TOTAL" in table and str(cap["total"]) in table
    explained = lab.run("schedule", "explain", "--flavor", "m1.tiny", "--az", "az2").stdout
    assert "AvailabilityZoneFilter" in explained and "RANK" in explained and "lab-2" in explained
    rows = lab.json("schedule", "explain", "--flavor", "m1.tiny", "--az", "az2")
    assert [(r["host"], r["rank"]) for r in rows if r["result"] == "pass"] == [("lab-2", 1)]
    assert {r["host"]: r["filter"] for r in rows if r["result"] == "rejected"} == {
        "lab-1": "AvailabilityZoneFilter",
        "lab-3": "AvailabilityZoneFilter",
    }
    clean(lab)


def test_spawn_failure_is_rescheduled_to_another_host(lab: Cli) -> None:
    clean(lab)
    lab_root = lab.home / "lab" / "hosts"
    # Break lab-1 for real: its guest bridge disappears, libvirt cannot start a guest there.
    subprocess.run([str(lab_root / "lab-1" / "enter"), "ip", "link", "del", "cloudbr0"], check=True)
    # az1 = lab-1 + lab-3, equally free: lab-1 wins the name tie-break, fails, lab-3 takes over.
    view = lab.json("boot", "resched", "--flavor", "m1.tiny", "--image", "tiny", "--az", "az1")
    assert view["status"] == "ACTIVE" and view["host"] == "lab-3"
    events = [
        (e["event"], e["result"], e["host"])
        for e in lab.json("action", "list", "resched")[0]["events"]
    ]
    assert ("spawn", "Error", "lab-1") in events and ("reschedule", "Success", "lab-3") in events
    assert lab.json("host", "show", "lab-1")["running_vms"] == 0
    # Forced onto the broken host: no alternate is allowed, so ERROR with the attempt in the fault.
    proc = lab.run(
        "boot", "forced", "--flavor", "m1.tiny", "--image", "tiny", "--az", "az1:lab-1", check=False
    )
    assert proc.returncode == 1
    forced = lab.json("show", "forced")
    assert forced["status"] == "ERROR" and "lab-1: " in forced["fault"]["message"]
    lab.run(
        "lab", "up", "--hosts", "3", "--azs", "2", "--connection", "local"
    )  # repairs the bridge
    clean(lab)


def test_concurrent_boots_from_several_processes_never_over_commit(lab: Cli) -> None:
    clean(lab)
    hosts = lab.json("host", "list")
    # A flavor of which exactly two fit per host (RAM after the reserved 512 MiB, ratio 1.0).
    per_host_ram = min(h["memory_mb"] for h in hosts) - 512
    ram = per_host_ram // 2 - 16
    lab.run("flavor", "create", "m1.half", "--vcpus", "1", "--ram", str(ram), "--disk", "1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloudctl",
                "boot",
                f"race{n}",
                "--flavor",
                "m1.half",
                "--image",
                "tiny",
                "--count",
                "2",
                "-o",
                "json",
            ],
            env=lab.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    results = [
        (
            p.wait(timeout=600),
            p.stdout.read() if p.stdout else "",
            p.stderr.read() if p.stderr else "",
        )
        for p in procs
    ]
    ok = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] != 0]
    assert len(ok) == 3 and len(refused) == 1, results
    assert "no valid host" in refused[0][2]
    active = [i for i in lab.json("list") if i["name"].startswith("race")]
    assert len(active) == 6 and all(i["status"] == "ACTIVE" for i in active)
    assert Counter(i["host"] for i in active) == {"lab-1": 2, "lab-2": 2, "lab-3": 2}
    for h in lab.json("host", "list"):
        assert h["memory_mb_used"] <= h["memory_mb"] - 512
    assert json.loads(ok[0][1])[0]["status"] == "ACTIVE"
    clean(lab)
