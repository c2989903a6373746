"""The walking skeleton for real: boot, console marker, power, delete on the local libvirtd."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Cli, virsh

pytestmark = pytest.mark.integration
INSTANCES = Path("/var/lib/cloudctl/instances")
MARKER = r"CLOUDCTL-GUEST-UP uuid=(\S+) hostname=(\S+)"


def host_usage(cli: Cli) -> tuple[int, int, int, int]:
    h = cli.json("host", "show", "local")
    return h["vcpus_used"], h["memory_mb_used"], h["local_gb_used"], h["running_vms"]


def test_boot_two_guests_print_their_identity_then_delete_leaves_nothing(cli: Cli) -> None:
    before = host_usage(cli)
    views = cli.json("boot", "web", "--flavor", "m1.tiny", "--image", "tiny", "--count", "2")
    assert [v["name"] for v in views] == ["web-1", "web-2"]
    for v in views:
        assert (v["status"], v["power_state"], v["host"]) == ("ACTIVE", "RUNNING", "local")
        assert v["domain"] == f"instance-{v['uuid']}"
        assert "running" in virsh("domstate", v["domain"])
        assert (INSTANCES / v["uuid"] / "disk").is_file()
        assert (INSTANCES / v["uuid"] / "disk.config").is_file()
    assert host_usage(cli)[3] == before[3] + 2

    for v in views:
        out = cli.json("console", v["name"], "--wait-for", MARKER, "--timeout", "120")
        assert out["found"], out["log"][-2000:]
        uuid, hostname = re.search(MARKER, out["match"]).groups()  # type: ignore[union-attr]
        assert (uuid, hostname) == (v["uuid"], v["name"])
        assert f"eth0 {v['addresses'][0]['address']}/24" in out["log"]

    show = cli.json("show", "web-1")
    for key in (
        "name",
        "uuid",
        "status",
        "vm_state",
        "task_state",
        "power_state",
        "host",
        "domain",
        "flavor",
        "image",
        "addresses",
        "created_at",
    ):
        assert key in show
    assert show["allocations"]

    gone = cli.json("delete", "web-1", "web-2")
    assert [g["status"] for g in gone] == ["DELETED", "DELETED"]
    for v in views:
        assert v["domain"] not in virsh("list", "--all", "--name")
        assert not (INSTANCES / v["uuid"]).exists()
    assert host_usage(cli) == before
    assert cli.json("list") == []
    actions = cli.json("action", "list", "web-1")
    assert [a["action"] for a in actions] == ["create", "delete"]
    assert [e["event"] for e in actions[0]["events"]] == [
        "schedule",
        "networking",
        "block_device_mapping",
        "spawn",
    ]
    assert all(e["result"] == "Success" for a in actions for e in a["events"])
    deleted = [i for i in cli.json("list", "--deleted") if i["name"] in ("web-1", "web-2")]
    assert {i["status"] for i in deleted} == {"DELETED"} and all(
        not i["addresses"] for i in deleted
    )


def test_stop_start_reboot_read_power_back_from_libvirt(cli: Cli) -> None:
    [v] = [cli.json("boot", "pwr", "--flavor", "m1.tiny", "--image", "tiny")]
    # busybox init ignores ACPI: stop falls back to a forced power-off after stop_timeout_s.
    [s] = cli.json("stop", "pwr")
    assert (s["status"], s["power_state"]) == ("SHUTOFF", "SHUTDOWN")
    assert "shut off" in virsh("domstate", v["domain"])
    [s] = cli.json("start", "pwr")
    assert (s["status"], s["power_state"]) == ("ACTIVE", "RUNNING")
    [s] = cli.json("reboot", "pwr", "--hard")
    assert (s["status"], s["power_state"]) == ("ACTIVE", "RUNNING")
    refused = cli.run("start", "pwr", check=False)
    assert (
        refused.returncode == 1 and "cannot start instance pwr: vm_state active" in refused.stderr
    )
    assert [a["action"] for a in cli.json("action", "list", "pwr")] == [
        "create",
        "stop",
        "start",
        "reboot",
    ]
    cli.run("delete", "pwr")


def test_no_wait_returns_build_then_worker_finishes(cli: Cli) -> None:
    v = cli.json("boot", "bg", "--flavor", "m1.tiny", "--image", "tiny", "--no-wait")
    assert v["status"] == "BUILD" and v["host"] == "local"
    deadline = time.monotonic() + 180
    while cli.json("show", "bg")["status"] == "BUILD" and time.monotonic() < deadline:
        time.sleep(1)
    assert cli.json("show", "bg")["status"] == "ACTIVE"
    cli.run("delete", "bg")


def test_spawn_failure_goes_error_and_cleans_the_host(cli: Cli) -> None:
    # Same libvirtd, but NICs on a bridge that does not exist: libvirt refuses to start the guest.
    cli.run(
        "host",
        "add",
        "nobridge",
        "--uri",
        "qemu:///system",
        "--virt-type",
        "qemu",
        "--bridge",
        "nobr0",
        "--az",
        "broken",
    )
    before = cli.json("host", "show", "nobridge")
    proc = cli.run(
        "boot", "doomed", "--flavor", "m1.tiny", "--image", "tiny", "--az", "broken", check=False
    )
    assert proc.returncode == 1
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "build of instance 'doomed' failed" in error and "nobr0" in error
    show = cli.json("show", "doomed")
    assert show["status"] == "ERROR"
    assert "nobr0" in show["fault"]["message"] + (show["fault"]["details"] or "")
    assert show["addresses"] == [] and show["allocations"] == {}
    assert show["domain"] not in virsh("list", "--all", "--name")
    assert not (INSTANCES / show["uuid"]).exists()
    after = cli.json("host", "show", "nobridge")
    assert (after["vcpus_used"], after["memory_mb_used"], after["running_vms"]) == (
        before["vcpus_used"],
        before["memory_mb_used"],
        0,
    )
    events = cli.json("action", "list", "doomed")[0]["events"]
    assert events[-1]["result"] == "Error"
    cli.run("delete", "doomed")
    cli.run("host", "disable", "nobridge", "--reason", "test done")


BAD_INPUTS = [
    (["boot", "Bad_Name", "--flavor", "m1.tiny", "--image", "tiny"], 2, "must match"),
    (["boot", "x" * 64, "--flavor", "m1.tiny", "--image", "tiny"], 2, "at most 63"),
    (["boot", "ok", "--flavor", "nope", "--image", "tiny"], 2, "flavor 'nope' not found"),
    (["boot", "ok", "--flavor", "m1.tiny", "--image", "nope"], 2, "image 'nope' not found"),
    (
        ["boot", "ok", "--flavor", "m1.tiny", "--image", "tiny", "--count", "0"],
        2,
        "count must be >= 1",
    ),
    (
        ["boot", "ok", "--flavor", "m1.tiny", "--image", "tiny", "--az", "nova:ghost"],
        2,
        "host 'ghost' not found",
    ),
    (["boot", "ok", "--flavor", "m1.huge", "--image", "tiny"], 1, "RamFilter removed"),
    (
        ["boot", "ok", "--flavor", "m1.tiny", "--image", "tiny", "--az", "nowhere"],
        1,
        "AvailabilityZoneFilter removed",
    ),
    (
        ["flavor", "create", "neg", "--vcpus", "1", "--ram", "-1", "--disk", "1"],
        2,
        "ram must be >= 1",
    ),
    (
        ["flavor", "create", "neg", "--vcpus", "1", "--ram", "64", "--disk", "-3"],
        2,
        "disk must be >= 0",
    ),
    (["flavor", "create", "a/b", "--vcpus", "1", "--ram", "64", "--disk", "1"], 2, "flavor name"),
    (["host", "add", "h;rm", "--uri", "qemu:///system"], 2, "host name"),
    (["host", "add", "hx", "--uri", "qemu:///system'><x"], 2, "libvirt URI"),
    (["image", "add", "img", "--file", "/nonexistent"], 2, "does not exist"),
    (["boot", "ok", "--flavor", "m1.tiny"], 2, "Missing option"),
    (["show", "ghost"], 2, "instance 'ghost' not found"),
]


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    BAD_INPUTS,
    ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _, _) in enumerate(BAD_INPUTS)],
)
def test_bad_input_one_line_error_and_nothing_left(
    cli: Cli, argv: list[str], code: int, needle: str
) -> None:
    if not any(f["name"] == "m1.huge" for f in cli.json("flavor", "list")):
        cli.run("flavor", "create", "m1.huge", "--vcpus", "1", "--ram", "40000", "--disk", "1")
    domains = virsh("list", "--all", "--name")
    files = sorted(p.name for p in INSTANCES.iterdir())
    proc = cli.run(*argv, check=False)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr
    if "Missing" not in needle:  # click prints usage errors in its own box
        [error] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert needle in error
    assert "Traceback" not in proc.stderr
    assert [i for i in cli.json("list") if i["name"] in ("ok", "Bad_Name")] == []
    assert all(h["running_vms"] == 0 for h in cli.json("host", "list"))
    # Other suites may use the same libvirtd: assert that nothing new appeared.
    ours = {d for d in virsh("list", "--all", "--name").split() if d.startswith("instance-")}
    assert ours <= set(domains.split())
    assert {p.name for p in INSTANCES.iterdir()} <= set(files)
    assert not any(f["name"] == "neg" for f in cli.json("flavor", "list"))


def test_user_values_are_never_templated_by_ansible(cli: Cli, tmp_path: Path) -> None:
    pub = tmp_path / "k.pub"
    pub.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@example\n"
    )
    cli.run("keypair", "add", "opkey", "--public-key", str(pub))
    ud = tmp_path / "ud"
    ud.write_text("#cloud-config\n# {{ lookup('pipe', 'id') }}\n")
    v = cli.json(
        "boot",
        "lit",
        "--flavor",
        "m1.tiny",
        "--image",
        "tiny",
        "--user-data",
        str(ud),
        "--property",
        "note={{ 7*7 }}",
        "--key",
        "opkey",
    )
    iso = INSTANCES / v["uuid"] / "disk.config"
    user_data = subprocess.run(
        ["isoinfo", "-i", str(iso), "-J", "-x", "/user-data"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    meta = subprocess.run(
        ["isoinfo", "-i", str(iso), "-J", "-x", "/meta-data"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "{{ lookup('pipe', 'id') }}" in user_data and "uid=" not in user_data
    assert "note: '{{ 7*7 }}'" in meta.splitlines()[-1] and "note: 49" not in meta
    assert (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@example"
        in meta
    )
    assert cli.json("show", "lit")["key_name"] == "opkey"
    cli.run("delete", "lit")
