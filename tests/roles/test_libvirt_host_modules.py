"""Unit tests of the role's own modules (roles/libvirt_host/library): pure decisions from data."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "roles" / "libvirt_host" / "library"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, LIBRARY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bridge = load("libvirt_host_bridge")
daemon = load("libvirt_host_daemon")


def link(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ifname": "br0",
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "linkinfo": {"info_kind": "bridge"},
        "addr_info": [],
        "_ipv6_disabled": True,
    }
    base.update(kw)
    return base


ADD = ["link", "add", "name", "br0", "type", "bridge"]
UP = ["link", "set", "dev", "br0", "up"]
FLUSH = ["addr", "flush", "dev", "br0"]
V6 = {"family": "inet6", "local": "fe80::1", "prefixlen": 64}
V4 = {"family": "inet", "local": "10.9.9.1", "prefixlen": 24}


@pytest.mark.parametrize(
    ("current", "disable_ipv6", "expected"),
    [
        (None, True, [ADD, "1", UP]),
        (None, False, [ADD, UP]),
        (link(), True, []),
        (link(flags=["BROADCAST", "MULTICAST"]), True, [UP]),
        (link(addr_info=[V6], _ipv6_disabled=False), True, ["1"]),
        (link(addr_info=[V6], _ipv6_disabled=False), False, [FLUSH]),
        (link(addr_info=[V4, V6], _ipv6_disabled=False), True, ["1", FLUSH]),
        (link(addr_info=[V4]), True, [FLUSH]),
    ],
)
def test_bridge_plan(
    current: dict[str, Any] | None, disable_ipv6: bool, expected: list[Any]
) -> None:
    steps = bridge.plan(current, "br0", disable_ipv6, "present")
    assert [step.get("ip", step.get("sysctl")) for step in steps] == expected
    assert all(step["why"] for step in steps)


def test_bridge_plan_refuses_a_link_that_is_not_a_bridge() -> None:
    with pytest.raises(ValueError, match="not a bridge"):
        bridge.plan(link(linkinfo={"info_kind": "veth"}), "br0", True, "present")


def test_bridge_plan_absent() -> None:
    assert bridge.plan(None, "br0", True, "absent") == []
    steps = bridge.plan(link(), "br0", True, "absent")
    assert [s["ip"] for s in steps] == [["link", "del", "dev", "br0"]]


def test_find_daemon_by_pidfile_by_scan_and_stale(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleep.pid"
    proc = subprocess.Popen(["sleep", "30"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":  # until exec() is done
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        pidfile.write_text(f"{proc.pid}\n")
        assert daemon.find_daemon("sleep", str(pidfile)) == (proc.pid, "pidfile")
        pidfile.write_text("999999999\n")  # stale: falls back to a scan of /proc
        pid, how = daemon.find_daemon("sleep", str(pidfile))
        assert how == "scan" and pid is not None
    finally:
        proc.kill()
        proc.wait()
    assert daemon.find_daemon("no-such-daemon-x", str(pidfile)) == (None, "none")


def test_alive_ignores_other_names() -> None:
    assert daemon._alive(1, "surely-not-pid-1", None) is False
    assert sys.executable  # the module imports ansible's AnsibleModule: the venv has it
