"""Boot reports its spawn play to the progress per host and per server, by server name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cloudctl.console import ConsoleProgress
from cloudctl.executor.base import GuestOutcome, RunEvent, RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute
from cloudctl.services.compute import BootRequest
from cloudctl.services.compute.common import looked_up_progress
from cloudctl.services.context import Context
from tests.services.lifecycle import power_answer


@dataclass
class Recorder:
    """A progress that keeps the executor events it is given."""

    events: list[RunEvent] = field(default_factory=list)

    def info(self, message: str) -> None:
        """Ignore."""

    def run_event(self, event: RunEvent) -> None:
        self.events.append(event)

    def guests(self, task: str) -> dict[str, tuple[GuestOutcome, ...]]:
        """Host -> the guests of its last ``host_result`` for ``task``."""
        return {
            e.host or "": e.guests
            for e in self.events
            if e.kind == "host_result" and e.task == task
        }


def spawn_play(broken: set[str]) -> Callable[[RunRequest], dict[str, Any]]:
    """Answer spawn.yml as the real modules would; domains named in ``broken`` fail, once."""

    def respond(req: RunRequest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for host, domains in req.extravars["cloudctl_domains"].items():
            disks = req.extravars["cloudctl_disks"][host]
            base = req.extravars["cloudctl_base_files"][host]
            spawn = [
                {"name": d["name"], "changed": False, "failed": True, "msg": "qemu exploded"}
                if d["name"] in broken
                else {"name": d["name"], "uuid": None, "state": "running", "changed": True}
                for d in domains
            ]
            failed = [d["name"] for d in domains if d["name"] in broken]
            out[host] = {
                "cache base files": {
                    "changed": True,
                    "results": [
                        {"changed": True, "item": b, "ansible_loop_var": "item"} for b in base
                    ],
                },
                "disks": {
                    "changed": True,
                    "results": [{"uuid": d["uuid"], "changed": True} for d in disks],
                },
                "spawn": {"changed": True, "results": spawn}
                | ({"failed": True, "msg": "; ".join(failed)} if failed else {}),
            }
        broken.clear()
        return out

    return respond


@pytest.fixture
def recorder(cloud: Context) -> Recorder:
    cloud.progress = r = Recorder()
    return r


def test_the_progress_sees_every_server_by_name(
    cloud: Context, fake: FakeExecutor, recorder: Recorder
) -> None:
    fake.on("spawn.yml", spawn_play(set()))
    views = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny", count=3))
    host_of = {v["name"]: v["host"] for v in views}
    for task in ("disks", "spawn"):
        seen = {g.label: host for host, gs in recorder.guests(task).items() for g in gs}
        assert seen == host_of
    assert {g for gs in recorder.guests("spawn").values() for g in gs} == {
        GuestOutcome(name, "changed", "running") for name in host_of
    }
    assert all(not gs for gs in recorder.guests("cache base files").values())


def test_a_failed_server_reaches_the_progress_with_its_name_and_reason(
    cloud: Context, fake: FakeExecutor, recorder: Recorder
) -> None:
    broken: set[str] = set()

    def break_first_spawn(req: RunRequest) -> dict[str, Any]:
        if len(fake.requests) == 1:
            [domains] = req.extravars["cloudctl_domains"].values()
            broken.add(domains[0]["name"])
        return spawn_play(broken)(req)

    fake.on("spawn.yml", break_first_spawn)
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    assert view["status"] == "ACTIVE"  # rescheduled after the failure
    spawned = [e for e in recorder.events if e.kind == "host_result" and e.task == "spawn"]
    assert [(e.status, e.guests) for e in spawned] == [
        ("failed", (GuestOutcome("web", "failed", "qemu exploded"),)),
        ("changed", (GuestOutcome("web", "changed", "running"),)),
    ]


def test_the_console_prints_server_names(
    cloud: Context, fake: FakeExecutor, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.progress = ConsoleProgress()
    fake.on("spawn.yml", spawn_play(set()))
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    err = capsys.readouterr().err
    assert f"✓ {view['host']}  running: web\n" in err
    assert f"✓ {view['host']}  changed: web\n" in err  # the disks task
    assert "instance-" not in err and view["uuid"] not in err


def test_power_and_delete_name_their_servers_too(
    cloud: Context, fake: FakeExecutor, recorder: Recorder
) -> None:
    fake.on("spawn.yml", spawn_play(set()))
    fake.on("power.yml", power_answer)
    fake.on(
        "destroy.yml",
        lambda req: {
            host: {"undefine": {"changed": True, "results": [{"name": d["name"]} for d in doms]}}
            for host, doms in req.extravars["cloudctl_domains"].items()
        },
    )
    views = compute.boot(cloud, BootRequest(name="db", flavor="small", image="tiny", count=2))
    names = sorted(v["name"] for v in views)
    recorder.events.clear()
    compute.power(cloud, names, "stop")
    stopped = sorted(g.label for gs in recorder.guests("power").values() for g in gs)
    assert stopped == names
    recorder.events.clear()
    compute.delete(cloud, names, force=True)
    undefined = sorted(g.label for gs in recorder.guests("undefine").values() for g in gs)
    assert undefined == names


def test_plays_of_moves_look_the_names_up(
    cloud: Context, fake: FakeExecutor, recorder: Recorder
) -> None:
    fake.on("spawn.yml", spawn_play(set()))
    [view] = compute.boot(cloud, BootRequest(name="db", flavor="small", image="tiny"))
    handle = looked_up_progress(cloud)
    labels = (f"instance-{view['uuid']}", view["uuid"], "stranger")
    event = RunEvent(
        kind="host_result",
        playbook="migrate_live.yml",
        host="h1",
        status="changed",
        guests=tuple(GuestOutcome(label, "changed") for label in labels),
    )
    recorder.events.clear()
    handle(event)
    handle(event)  # the second time from what the first looked up
    assert [tuple(g.label for g in e.guests) for e in recorder.events] == [
        ("db", "db", "stranger"),
        ("db", "db", "stranger"),
    ]
