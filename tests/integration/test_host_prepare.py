"""`cloudctl host prepare` on a lab host: the community.libvirt triad (check, real, real again).

The issue's acceptance: prepare on a fresh lab host converges and a second run changes nothing.
The lab host's libvirtd is stopped first, as on a host whose daemons never ran: the check-mode run
says it would start it and starts nothing; the first real run starts it (inside that host's
namespaces, with the lab's own pid file, so `lab status` finds it healthy); the second real run and
a last check-mode run change nothing; the host is then discovered as before.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cli, make_home

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
HOST = "lab-1"
START_DAEMONS = "Start virtlogd and libvirtd unless they run already"
QEMU_CONF = "Set the managed lines of qemu.conf"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = make_home(tmp_path_factory, "prepare-home", "service_down_time_s: 3600\n")
    try:
        c.json("lab", "up", "--hosts", "1")
        yield c
    finally:
        down = c.run("lab", "down", check=False)
        assert down.returncode == 0, down.stderr


def pidfile(c: Cli) -> Path:
    return c.home / "lab" / "hosts" / HOST / "run" / "libvirtd.pid"


def libvirtd_pid(c: Cli) -> int | None:
    """The lab host's libvirtd, if its pid file names a live one."""
    try:
        pid = int(pidfile(c).read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == "libvirtd" and state != "Z" else None


def stop_libvirtd(c: Cli) -> None:
    pid = libvirtd_pid(c)
    assert pid is not None, "the lab host's libvirtd should run after lab up"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while libvirtd_pid(c) is not None:
        assert time.monotonic() < deadline, "libvirtd did not stop"
        time.sleep(0.1)


def prepare(c: Cli, *args: str) -> dict[str, Any]:
    [report] = c.json("host", "prepare", HOST, *args)
    assert report["name"] == HOST
    assert (report["failed"], report["error"]) == (0, None), report
    return dict(report)


def test_prepare_on_a_lab_host_converges_then_changes_nothing(lab: Cli) -> None:
    c = lab
    stop_libvirtd(c)

    check = prepare(c, "--check")
    assert check["check"] is True
    assert START_DAEMONS in check["changed_tasks"], check
    assert libvirtd_pid(c) is None, "check mode started libvirtd"

    first = prepare(c)
    assert START_DAEMONS in first["changed_tasks"], first
    # The lab writes the host's qemu.conf as the role would: nothing to rewrite, no restart.
    assert QEMU_CONF not in first["changed_tasks"], first
    assert libvirtd_pid(c) is not None

    second = prepare(c)
    assert second["changed"] == 0, f"second run changed: {second['changed_tasks']}"
    assert second["ok"] > 0
    again = prepare(c, "--check")
    assert again["changed"] == 0, f"check after converge would change: {again['changed_tasks']}"

    # The host still works: the lab sees its daemons as its own, discovery reads it.
    status = c.json("lab", "status")
    assert [(r["name"], r["healthy"]) for r in status] == [(HOST, True)], status
    [view] = c.json("host", "discover", HOST)
    assert (view["state"], view["status"]) == ("up", "enabled")
    assert view["vcpus"] > 0 and view["memory_mb"] > 0
