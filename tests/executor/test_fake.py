"""FakeExecutor: records requests, answers from responders, fails on demand, emits events."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudctl.errors import ExecutorError, InvalidInput
from cloudctl.executor.base import Executor, HostTarget, RunEvent, RunRequest, RunResult
from cloudctl.executor.fake import DEFAULT_TASK, FakeExecutor


def _host(name: str) -> HostTarget:
    return HostTarget(
        name=name,
        connection="local",
        libvirt_uri="qemu:///system",
        python_interpreter="/usr/bin/python3",
    )


H1, H2 = _host("h1"), _host("h2")
REQ = RunRequest(
    playbook="spawn.yml",
    hosts=(H1, H2),
    extravars={"cloudctl_guests": {"h1": ["g1"], "h2": ["g2"]}},
)


def _kinds(events: list[RunEvent]) -> list[tuple[str, str | None, str | None, str | None]]:
    return [(e.kind, e.host, e.task, e.status) for e in events]


def test_is_an_executor() -> None:
    executor: Executor = FakeExecutor()
    assert executor.run(REQ).ok


def test_default_every_host_ok_and_requests_recorded() -> None:
    fake = FakeExecutor()
    events: list[RunEvent] = []
    result = fake.run(REQ, events.append)
    assert fake.requests == [REQ]
    assert fake.results == [result]
    assert (result.ok, result.rc, result.playbook) == (True, 0, "spawn.yml")
    assert [(t.host, t.task, t.status, dict(t.result)) for t in result.tasks] == [
        ("h1", DEFAULT_TASK, "ok", {}),
        ("h2", DEFAULT_TASK, "ok", {}),
    ]
    assert _kinds(events) == [
        ("run_start", None, None, None),
        ("play_start", None, None, None),
        ("task_start", None, DEFAULT_TASK, None),
        ("host_result", "h1", DEFAULT_TASK, "ok"),
        ("host_result", "h2", DEFAULT_TASK, "ok"),
        ("run_end", None, None, "ok"),
    ]
    assert fake.events == events


def test_responder_mapping_per_host_and_task() -> None:
    fake = FakeExecutor()

    def spawn(req: RunRequest) -> dict[str, dict[str, dict[str, object]]]:
        guests = req.extravars["cloudctl_guests"]
        return {
            h: {"define": {"changed": True, "guests": guests[h]}, "start": {"changed": False}}
            for h in guests
        }

    fake.on("spawn.yml", spawn)
    events: list[RunEvent] = []
    result = fake.run(REQ, events.append)
    assert result.ok
    assert result.result("define", "h2") == {"changed": True, "guests": ["g2"]}
    assert [(t.host, t.task, t.status) for t in result.tasks] == [
        ("h1", "define", "changed"),
        ("h2", "define", "changed"),
        ("h1", "start", "ok"),
        ("h2", "start", "ok"),
    ]
    assert [e.kind for e in events] == [
        "run_start",
        "play_start",
        "task_start",
        "host_result",
        "host_result",
        "task_start",
        "host_result",
        "host_result",
        "run_end",
    ]


def test_fail_stops_that_host_only_and_reports_the_message() -> None:
    fake = FakeExecutor()
    fake.on("spawn.yml", lambda req: {h.name: {"define": {}, "start": {}} for h in req.hosts})
    fake.fail("spawn.yml", host="h1", task="define", msg="no space left")
    events: list[RunEvent] = []
    result = fake.run(REQ, events.append)
    assert (result.ok, result.rc) == (False, 2)
    assert [(t.host, t.task, t.status) for t in result.tasks] == [
        ("h1", "define", "failed"),
        ("h2", "define", "ok"),
        ("h2", "start", "ok"),
    ]
    assert result.failed_hosts() == {"h1"}
    assert result.failed()[0].message == "no space left"
    assert "fatal: [h1]: FAILED! => no space left" in result.stdout_tail
    assert events[-1] == RunEvent(
        kind="run_end", playbook="spawn.yml", status="failed", message="h1: define: no space left"
    )
    failed_event = next(e for e in events if e.status == "failed")
    assert (failed_event.host, failed_event.message) == ("h1", "no space left")


def test_fail_adds_the_task_and_can_be_unreachable_and_limited() -> None:
    fake = FakeExecutor()
    fake.fail("spawn.yml", host="h2", task="connect", unreachable=True, msg="no route", times=1)
    first = fake.run(REQ)
    assert (first.ok, first.rc) == (False, 4)
    assert [(t.host, t.task, t.status) for t in first.tasks] == [
        ("h1", DEFAULT_TASK, "ok"),
        ("h2", DEFAULT_TASK, "ok"),
        ("h2", "connect", "unreachable"),
    ]
    assert "UNREACHABLE" in first.stdout_tail
    assert fake.run(REQ).ok  # times=1: the second run succeeds


def test_fail_of_the_default_task() -> None:
    fake = FakeExecutor()
    fake.fail("spawn.yml", host="h2")
    result = fake.run(REQ)
    assert [(t.host, t.status, t.message) for t in result.tasks] == [
        ("h1", "ok", ""),
        ("h2", "failed", "boom"),
    ]
    assert fake.run(RunRequest(playbook="other.yml", hosts=(H2,))).ok


def test_responder_may_return_a_run_result() -> None:
    fake = FakeExecutor()
    canned = RunResult(
        playbook="spawn.yml",
        ok=False,
        rc=1,
        tasks=(),
        duration_s=0.0,
        stdout_tail="ERROR! syntax error",
    )
    fake.on("spawn.yml", lambda req: canned)
    events: list[RunEvent] = []
    assert fake.run(REQ, events.append) is canned
    assert [e.kind for e in events] == ["run_start", "play_start", "run_end"]
    assert events[-1].status == "failed"


def test_responder_for_unknown_host_is_a_test_bug() -> None:
    fake = FakeExecutor()
    fake.on("spawn.yml", lambda req: {"h9": {"t": {}}})
    with pytest.raises(ValueError, match="h9"):
        fake.run(REQ)


def test_playbooks_dir_catches_unknown_playbooks(tmp_path: Path) -> None:
    (tmp_path / "spawn.yml").write_text("- hosts: compute\n  tasks: []\n")
    fake = FakeExecutor(playbooks_dir=tmp_path)
    assert fake.run(REQ).ok
    with pytest.raises(ExecutorError, match="no such playbook"):
        fake.run(RunRequest(playbook="spwan.yml", hosts=(H1,)))
    assert len(fake.requests) == 1


def test_invalid_hosts_are_rejected_like_the_real_inventory() -> None:
    with pytest.raises(InvalidInput, match="twice"):
        FakeExecutor().run(RunRequest(playbook="spawn.yml", hosts=(H1, H1)))
