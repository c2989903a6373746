"""Hosts with a stale heartbeat are asked before a command schedules, and surveys are heartbeats.

cloudctl has no always-on compute service: without ``cloudctl agent`` a quiet minute would make
every host look down. Over the fake executor and a fixed clock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cloudctl.db.models import Host, HostEvent
from cloudctl.errors import ExecutorError, InvalidInput, NoValidHost
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, hosts, reconcile
from cloudctl.services.compute import BootRequest
from cloudctl.services.compute import evacuate as evac
from cloudctl.services.context import Context
from tests.conftest import NOW, add_host

STALE = NOW - timedelta(hours=1)
FACTS = {"vcpus": 4, "memory_mb": 4096, "disk_gb": 100, "disk_free_gb": 90, "domains": []}


def answering(*names: str) -> Any:
    """discover.yml as hosts answer it: those in ``names`` with facts, the others unreachable."""

    def respond(req: RunRequest) -> dict[str, Any]:
        return {
            t.name: {"host facts": {"host_facts": FACTS}}
            if t.name in names
            else {"host facts": {"unreachable": True, "msg": "ssh: no route"}}
            for t in req.hosts
        }

    return respond


def beats(ctx: Context) -> dict[str, Any]:
    with ctx.db.unit_of_work() as s:
        return {h.name: h.last_heartbeat for h in s.scalars(select(Host).order_by(Host.name))}


def asked(fake: FakeExecutor) -> list[list[str]]:
    return [[t.name for t in r.hosts] for r in fake.requests if r.playbook == "discover.yml"]


# (hosts as (name, heartbeat, enabled, latest up/down event), answering, asked, back up)
REFRESH_CASES = [
    ("all fresh: no play", [("a", NOW, True, None), ("b", NOW, True, None)], {"a", "b"}, [], []),
    (
        "only the stale host is asked",
        [("a", NOW, True, None), ("b", STALE, True, None)],
        {"a", "b"},
        [["b"]],
        ["b"],
    ),
    ("never seen counts as stale", [("a", None, True, None)], {"a"}, [["a"]], ["a"]),
    ("a disabled host is not asked", [("a", STALE, False, None)], {"a"}, [], []),
    (
        "a host reconcile recorded down is left to reconcile",
        [("a", STALE, True, "down"), ("b", STALE, True, "up")],
        {"a", "b"},
        [["b"]],
        ["b"],
    ),
    (
        "a silent host stays down",
        [("a", STALE, True, None), ("b", STALE, True, None)],
        {"a"},
        [["a", "b"]],
        ["a"],
    ),
]


@pytest.mark.parametrize(
    ("hosts_", "answers", "want_asked", "want_up"),
    [c[1:] for c in REFRESH_CASES],
    ids=[c[0] for c in REFRESH_CASES],
)
def test_refresh_stale(
    ctx: Context,
    fake: FakeExecutor,
    hosts_: list[tuple[str, Any, bool, str | None]],
    answers: set[str],
    want_asked: list[list[str]],
    want_up: list[str],
) -> None:
    for name, beat, enabled, event in hosts_:
        add_host(ctx, name, last_heartbeat=beat, enabled=enabled)
        if event is not None:
            with ctx.db.unit_of_work() as s:
                s.add(HostEvent(host=name, event=event, created_at=STALE))
    before = beats(ctx)
    fake.on("discover.yml", answering(*answers))
    assert hosts.refresh_stale(ctx) == want_up
    assert asked(fake) == want_asked
    after = beats(ctx)
    for name, _, _, _ in hosts_:
        assert after[name] == (NOW if name in want_up else before[name])


def test_refresh_leaves_out_the_excluded(ctx: Context, fake: FakeExecutor) -> None:
    add_host(ctx, "a", last_heartbeat=STALE)
    add_host(ctx, "b", last_heartbeat=STALE)
    fake.on("discover.yml", answering("a", "b"))
    assert hosts.refresh_stale(ctx, exclude={"a"}) == ["b"]
    assert asked(fake) == [["b"]]


def test_refresh_survives_an_executor_error(ctx: Context, fake: FakeExecutor) -> None:
    add_host(ctx, "a", last_heartbeat=STALE)

    def boom(req: RunRequest) -> dict[str, Any]:
        raise ExecutorError("ansible-runner died")

    fake.on("discover.yml", boom)
    assert hosts.refresh_stale(ctx) == []
    assert beats(ctx)["a"] == STALE


def test_boot_after_a_quiet_hour_asks_the_hosts_first(cloud: Context, fake: FakeExecutor) -> None:
    with cloud.db.unit_of_work() as s:
        for h in s.scalars(select(Host)):
            h.last_heartbeat = STALE
    fake.on("discover.yml", answering("h1", "h2"))
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    assert view["status"] == "ACTIVE"
    assert [r.playbook for r in fake.requests][:2] == ["discover.yml", "spawn.yml"]


def test_boot_still_fails_when_no_host_answers(cloud: Context, fake: FakeExecutor) -> None:
    with cloud.db.unit_of_work() as s:
        for h in s.scalars(select(Host)):
            h.last_heartbeat = STALE
    fake.on("discover.yml", answering())
    with pytest.raises(NoValidHost, match="host is down"):
        compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    assert [r.playbook for r in fake.requests] == ["discover.yml"]
    assert compute.list_instances(cloud) == []


def test_a_survey_is_a_heartbeat_for_the_hosts_that_answered(
    ctx: Context, fake: FakeExecutor
) -> None:
    add_host(ctx, "a", last_heartbeat=STALE)
    add_host(ctx, "b", last_heartbeat=STALE)
    fake.on("discover.yml", answering("a"))
    reconcile.survey(ctx)
    assert beats(ctx) == {"a": NOW, "b": STALE}


def test_evacuate_is_refused_when_a_stale_source_still_answers(
    cloud: Context, fake: FakeExecutor
) -> None:
    """A stale heartbeat is not a dead host: rebuilding its guests would make two copies."""
    compute.boot(
        cloud, BootRequest(name="web", flavor="small", image="tiny", availability_zone="nova:h1")
    )
    with cloud.db.unit_of_work() as s:
        s.scalars(select(Host).where(Host.name == "h1")).one().last_heartbeat = STALE
    fake.on("discover.yml", answering("h1", "h2"))
    with pytest.raises(InvalidInput, match="host h1 is up"):
        evac.evacuate(cloud, "web")
