"""A lab belongs to its home: two ``CLOUDCTL_HOME``s sharing one SQLite database.

Every lab names its hosts ``lab-1..N``. Home A brings a lab up and boots a guest on it; home B,
on the same database, must not unregister A's hosts, forget A's guests, report A's hosts as its
own or take their names. The namespaces and daemons are faked (:class:`FakeMachine` replaces
``Lab.up``, ``Lab.down`` and ``Lab.status``); the state file, the SQL and the fake executor are
real.
"""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudctl.db.models import Host, Instance
from cloudctl.db.session import Database
from cloudctl.domain.settings import Settings
from cloudctl.errors import AlreadyExists, ConfigError
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, flavors, hosts, lab
from cloudctl.services.compute import BootRequest
from cloudctl.services.context import Context
from cloudctl.services.lab_machine import (
    HostHealth,
    Lab,
    LabHost,
    LabSpec,
    LabState,
    lab_id_for,
    plan_hosts,
)
from tests.conftest import NOW, add_host
from tests.services.conftest import add_image, running

FACTS = {"vcpus": 4, "memory_mb": 4096, "disk_gb": 100, "disk_free_gb": 90, "domains": []}


def facts(req: RunRequest) -> dict[str, Any]:
    """discover.yml: every host answers with its capacity."""
    return {t.name: {"host facts": {"host_facts": FACTS}} for t in req.hosts}


class FakeMachine:
    """Stands in for the namespaces and daemons of every lab: records what each lab was asked.

    ``up`` writes the lab's real state file (and the files a host row names: the local hosts'
    python wrappers, the ssh key and known_hosts), so ``Lab.hosts()`` and the host rows are
    exactly what the real lab gives.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, Path]] = []

    def up(self, the_lab: Lab, spec: LabSpec, progress: Any = None) -> list[LabHost]:
        self.calls.append(("up", the_lab.root))
        network = ipaddress.IPv4Network("10.213.7.0/24")
        state = LabState(
            lab_id=the_lab.names.lab_id,
            root=str(the_lab.root),
            network=str(network),
            python=sys.executable,
            spec=spec,
            hosts=plan_hosts(spec, network, the_lab.root),
        )
        the_lab.root.mkdir(parents=True, exist_ok=True)
        the_lab.state_file.write_text(json.dumps(state.to_dict()))
        the_lab.private_key.write_text("key\n")
        the_lab.known_hosts.write_text("")
        out = the_lab.hosts()
        for h in out:
            python = Path(h.python_interpreter)
            if spec.connection == "local" and not python.exists():
                python.parent.mkdir(parents=True)
                python.symlink_to(sys.executable)
        return out

    def down(self, the_lab: Lab, progress: Any = None) -> None:
        self.calls.append(("down", the_lab.root))
        shutil.rmtree(the_lab.root, ignore_errors=True)

    def status(self, the_lab: Lab) -> list[HostHealth]:
        self.calls.append(("status", the_lab.root))
        return [HostHealth(h.name, True, ()) for h in the_lab.hosts()]


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    m = FakeMachine()
    monkeypatch.setattr(Lab, "up", lambda self, spec, progress=None: m.up(self, spec, progress))
    monkeypatch.setattr(Lab, "down", lambda self, progress=None: m.down(self, progress))
    monkeypatch.setattr(Lab, "status", lambda self: m.status(self))
    return m


@pytest.fixture
def home_a(ctx: Context, fake: FakeExecutor, machine: FakeMachine) -> Context:
    """Home A (the ``ctx`` fixture: its ledger is checked after the test) with a flavor/image."""
    fake.on("discover.yml", facts)
    fake.on("spawn.yml", running)
    flavors.create_flavor(ctx, "small", vcpus=1, memory_mb=512, root_gb=1)
    add_image(ctx)
    return ctx


@pytest.fixture
def home_b(home_a: Context, tmp_path: Path) -> Iterator[Context]:
    """Home B: another CLOUDCTL_HOME (another controller) on home A's database."""
    fake = FakeExecutor()
    fake.on("discover.yml", facts)
    settings = Settings(home=tmp_path / "home-b", db_url=home_a.settings.db_url)
    db = Database(settings.db_url)
    yield Context(
        settings=settings,
        db=db,
        executor_factory=lambda: fake,
        clock=lambda: NOW,
        rng=random.Random(7),
    )
    db.dispose()


def rows(ctx: Context) -> dict[str, tuple[str | None, int]]:
    """Live host rows: name -> (lab_id, id)."""
    with ctx.db.unit_of_work() as s:
        return {
            h.name: (h.lab_id, h.id)
            for h in s.scalars(select(Host).where(Host.deleted == 0).order_by(Host.name))
        }


def live_guests(ctx: Context) -> dict[str, str]:
    """Live instances: name -> vm_state."""
    with ctx.db.unit_of_work() as s:
        return {
            i.name: i.vm_state for i in s.scalars(select(Instance).where(Instance.deleted == 0))
        }


def up(ctx: Context, n: int = 2, connection: str = "local") -> list[dict[str, Any]]:
    return lab.lab_up(ctx, LabSpec(hosts=n, connection="ssh" if connection == "ssh" else "local"))


def a_with_guest(home_a: Context) -> str:
    """Home A's lab of two hosts with one running guest; returns A's lab id."""
    up(home_a)
    compute.boot(home_a, BootRequest(name="web", flavor="small", image="tiny"))
    assert live_guests(home_a) == {"web": "active"}
    return lab_id_for(home_a.settings.lab_dir)


# --- ownership ---------------------------------------------------------------------------------


def test_lab_hosts_carry_their_labs_id_and_the_label(home_a: Context) -> None:
    up(home_a, 2)
    lab_id = lab_id_for(home_a.settings.lab_dir)
    assert rows(home_a) == {"lab-1": (lab_id, 1), "lab-2": (lab_id, 2)}
    with home_a.db.unit_of_work() as s:
        assert {h.labels["lab"] for h in s.scalars(select(Host))} == {"true"}
    assert {v["lab_id"] for v in hosts.discover_hosts(home_a)} == {lab_id}
    # The id is the home's: a second up keeps it, and the rows.
    up(home_a, 2)
    assert rows(home_a) == {"lab-1": (lab_id, 1), "lab-2": (lab_id, 2)}


def test_down_from_a_home_without_a_lab_touches_no_host_or_guest_of_another(
    home_a: Context, home_b: Context, machine: FakeMachine
) -> None:
    lab_id = a_with_guest(home_a)
    before = rows(home_a)

    assert lab.lab_down(home_b) == {"hosts_removed": [], "guests_destroyed": 0}

    assert rows(home_a) == before
    assert live_guests(home_a) == {"web": "active"}
    assert {lab_id} == {v[0] for v in before.values()}
    # B only ever brought down its own (absent) lab.
    assert [c for c in machine.calls if c[0] == "down"] == [
        ("down", home_b.settings.lab_dir.resolve())
    ]
    # A's own down still does its job.
    assert lab.lab_down(home_a) == {"hosts_removed": ["lab-1", "lab-2"], "guests_destroyed": 1}
    assert rows(home_a) == {} and live_guests(home_a) == {}


def test_status_shows_only_the_homes_own_lab(home_a: Context, home_b: Context) -> None:
    a_with_guest(home_a)

    assert lab.lab_status(home_b) == []

    status = {r["name"]: r for r in lab.lab_status(home_a)}
    assert set(status) == {"lab-1", "lab-2"}
    assert all(r["healthy"] and r["registered"] and r["state"] == "up" for r in status.values())
    assert sum(r["running_vms"] for r in status.values()) == 1

    # B with namespaces of its own (never registered: A holds the names) does not take A's
    # rows for its hosts: its lab-1 is unregistered and says why.
    FakeMachine().up(Lab(home_b.settings.lab_dir), LabSpec(hosts=1, connection="local"))
    [b1] = lab.lab_status(home_b)
    assert (b1["name"], b1["registered"], b1["healthy"], b1["running_vms"]) == (
        "lab-1",
        False,
        False,
        0,
    )
    assert b1["problems"] == ["the database's lab-1 is not this lab's (lab up refuses)"]


def test_up_refuses_another_homes_lab_before_building_anything(
    home_a: Context, home_b: Context, machine: FakeMachine
) -> None:
    lab_id = a_with_guest(home_a)
    before = rows(home_a)
    b_lab = home_b.settings.lab_dir

    with pytest.raises(AlreadyExists) as err:
        up(home_b, 1)

    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("lab: host 'lab-1' already exists and belongs to lab " + lab_id)
    assert str(home_a.settings.lab_dir.resolve()) in msg
    assert "`cloudctl lab down` in that home first" in msg
    assert err.value.exit_code == 2
    assert ("up", b_lab.resolve()) not in machine.calls and not b_lab.exists()
    assert rows(home_a) == before and live_guests(home_a) == {"web": "active"}


def test_up_refuses_a_host_added_by_hand_with_a_lab_name(
    home_a: Context, machine: FakeMachine
) -> None:
    add_host(home_a, "lab-2")
    with pytest.raises(AlreadyExists, match=r"'lab-2' already exists and was added by hand"):
        up(home_a, 3)
    assert machine.calls == []
    assert rows(home_a) == {"lab-2": (None, 1)}
    # A smaller lab that does not need the name is fine.
    up(home_a, 1)
    assert set(rows(home_a)) == {"lab-1", "lab-2"}
    assert rows(home_a)["lab-2"] == (None, 1)
    # And down leaves the hand-made host alone.
    assert lab.lab_down(home_a)["hosts_removed"] == ["lab-1"]
    assert rows(home_a) == {"lab-2": (None, 1)}


def test_a_smaller_lab_unregisters_only_its_own_hosts(home_a: Context, home_b: Context) -> None:
    up(home_a, 3)
    ids = rows(home_a)
    up(home_a, 2)
    assert rows(home_a) == {"lab-1": ids["lab-1"], "lab-2": ids["lab-2"]}


def test_after_the_first_home_is_down_the_second_can_have_the_names(
    home_a: Context, home_b: Context
) -> None:
    a_with_guest(home_a)
    lab.lab_down(home_a)
    up(home_b, 1)
    assert rows(home_b) == {"lab-1": (lab_id_for(home_b.settings.lab_dir), 3)}


def test_prepare_refuses_another_homes_lab_host(home_a: Context, home_b: Context) -> None:
    up(home_a, 1, connection="ssh")
    with pytest.raises(ConfigError, match=r"'lab-1' belongs to lab \w+ of another cloudctl home"):
        hosts.prepare_hosts(home_b, ["lab-1"], check=True)


# --- rows an older cloudctl wrote (label lab=true, no lab_id) -----------------------------------


def make_legacy(ctx: Context) -> None:
    """Turn the live lab rows into what an older cloudctl wrote: no lab_id."""
    with ctx.db.unit_of_work() as s:
        for h in s.scalars(select(Host).where(Host.deleted == 0)):
            h.lab_id = None


def test_legacy_rows_this_homes_lab_knows_are_adopted(home_a: Context, home_b: Context) -> None:
    lab_id = a_with_guest(home_a)
    ids = {name: row_id for name, (_, row_id) in rows(home_a).items()}
    make_legacy(home_a)

    # Home B's state file does not know them: B leaves them alone and may not take them.
    assert lab.lab_down(home_b)["hosts_removed"] == []
    assert lab.lab_status(home_b) == []
    with pytest.raises(AlreadyExists, match="registered by an older cloudctl's lab"):
        up(home_b, 1)

    # Home A's does: status counts them as its own, up adopts the same rows.
    assert {r["name"] for r in lab.lab_status(home_a) if r["registered"]} == {"lab-1", "lab-2"}
    up(home_a, 2)
    assert rows(home_a) == {name: (lab_id, row_id) for name, row_id in ids.items()}
    assert live_guests(home_a) == {"web": "active"}


def test_a_legacy_row_of_another_home_is_not_taken_for_ours_by_its_name(
    home_a: Context, home_b: Context
) -> None:
    # Both homes had a lab with the old cloudctl; the database holds A's lab-1.
    up(home_b, 1)
    lab.lab_down(home_b)  # B's rows go; B's lab state goes too
    up(home_a, 1)
    make_legacy(home_a)
    # B's lab state knows a "lab-1" again, but not this one (A's paths and libvirt uuid).
    home_b.settings.lab_dir.mkdir(parents=True)
    b = Lab(home_b.settings.lab_dir)
    FakeMachine().up(b, LabSpec(hosts=1, connection="local"))

    assert lab.lab_down(home_b)["guests_destroyed"] == 0
    assert set(rows(home_a)) == {"lab-1"}
    status = lab.lab_status(home_a)
    assert [(r["name"], r["registered"]) for r in status] == [("lab-1", True)]


def test_down_in_a_home_without_a_lab_says_there_is_nothing_to_do(
    home_a: Context, home_b: Context
) -> None:
    said: list[str] = []

    class Say:
        def info(self, message: str) -> None:
            said.append(message)

        def run_event(self, event: Any) -> None:
            pass

    a_with_guest(home_a)
    home_b.progress = Say()
    lab.lab_down(home_b)
    assert any(
        "this home has no lab" in m and "2 host(s) of other labs left alone" in m for m in said
    )
