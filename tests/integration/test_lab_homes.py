"""A lab belongs to its home, end to end: two ``CLOUDCTL_HOME``s on one database.

Home A brings up a one-host lab (``--connection local``) and boots a guest on it. Home B shares
A's database (``CLOUDCTL_DB``) but has no lab: its ``lab status`` and ``lab down`` leave A's host
and guest alone, and its ``lab up`` is refused with one line naming A's lab, before any namespace
is made. A's lab stays healthy, and A's own ``lab down`` cleans up.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudctl.services.lab_machine import Lab, lab_id_for
from tests.integration.conftest import Cli, make_home
from tests.integration.test_lab import links, netns

pytestmark = pytest.mark.integration


@dataclass
class SharedCli(Cli):
    """A home whose state is another home's database, as a second controller's would be."""

    db_url: str = ""

    def env(self) -> dict[str, str]:
        env = super().env()
        env["CLOUDCTL_DB"] = self.db_url
        return env


def domstate(lab: Lab, domain: str) -> str:
    [host] = lab.hosts()
    proc = subprocess.run(
        ["virsh", "-c", host.socket_uri, "domstate", domain],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip()


def test_a_second_home_on_the_same_database_leaves_the_first_homes_lab_alone(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    a = make_home(tmp_path_factory, "lab-home-a", "service_down_time_s: 3600\n")
    b_home = make_home(tmp_path_factory, "lab-home-b", "service_down_time_s: 3600\n")
    b = SharedCli(b_home.home, db_url=f"sqlite:///{a.home / 'state.db'}")
    a_lab, b_lab = Lab(a.home / "lab"), Lab(b.home / "lab")
    a.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1")
    a.run("image", "create-tiny", "tiny", timeout=900)
    ns_before, links_before = netns(), links()
    try:
        [up] = a.json("lab", "up", "--hosts", "1", "--connection", "local")
        assert (up["name"], up["lab_id"]) == ("lab-1", lab_id_for(a.home / "lab"))
        guest = a.json("boot", "g1", "--flavor", "m1.tiny", "--image", "tiny")
        assert (guest["host"], guest["status"]) == ("lab-1", "ACTIVE")
        assert b.json("host", "list")[0]["name"] == "lab-1"  # B really sees A's database

        # B has no lab: status shows nothing of A's, down has nothing to do.
        assert b.json("lab", "status") == []
        assert "this home has no lab" in b.run("lab", "status").stderr
        assert b.json("lab", "down") == {"hosts_removed": [], "guests_destroyed": 0}
        assert "1 host(s) of other labs left alone" in b.run("lab", "down").stderr

        # B's up is refused before anything is built: one line, naming A's lab and what to do.
        refused = b.run("lab", "up", "--hosts", "1", "--connection", "local", check=False)
        assert refused.returncode == 2, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith(
            f"error: lab: host 'lab-1' already exists and belongs to lab {a_lab.names.lab_id} "
            f"in {a_lab.root},"
        ), line
        assert "`cloudctl lab down` in that home first" in line
        assert not b_lab.root.exists()
        assert not {n for n in netns() if n.startswith(b_lab.names.prefix)}
        assert not {n for n in links() if n.startswith(b_lab.names.prefix)}

        # A's lab, host and guest are as they were.
        [host] = a.json("host", "list")
        assert (host["name"], host["state"], host["lab_id"]) == ("lab-1", "up", a_lab.names.lab_id)
        assert [(g["name"], g["status"]) for g in a.json("list")] == [("g1", "ACTIVE")]
        [row] = a.json("lab", "status")
        assert (row["healthy"], row["registered"], row["running_vms"]) == (True, True, 1)
        assert domstate(a_lab, guest["domain"]) == "running"
        assert a.run("verify", check=False).returncode == 0
    finally:
        a_down = a.run("lab", "down", "-o", "json", check=False)
        b.run("lab", "down", check=False)
    assert a_down.returncode == 0, a_down.stderr
    assert json.loads(a_down.stdout) == {"hosts_removed": ["lab-1"], "guests_destroyed": 1}
    assert a.json("host", "list") == [] and a.json("list") == []
    assert netns() <= ns_before and links() <= links_before
    assert not Path(a_lab.root).exists()
