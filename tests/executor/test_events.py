"""Statuses, messages and events shared by both executors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cloudctl.executor.base import GuestOutcome, RunEvent, TaskResult, TaskStatus
from cloudctl.executor.events import (
    MAX_EVENT_MESSAGE,
    clean_result,
    guest_labels,
    guest_outcomes,
    host_result_event,
    rename_guests,
    result_message,
    run_end_event,
    short,
    status_of,
)

STATUS_TABLE: list[tuple[dict[str, Any], TaskStatus]] = [
    ({}, "ok"),
    ({"changed": False}, "ok"),
    ({"changed": True}, "changed"),
    ({"skipped": True}, "skipped"),
    ({"failed": True, "changed": True}, "failed"),
    ({"unreachable": True, "failed": True}, "unreachable"),
]


@pytest.mark.parametrize(("res", "status"), STATUS_TABLE)
def test_status_of(res: dict[str, Any], status: TaskStatus) -> None:
    assert status_of(res) == status


MESSAGE_TABLE: list[tuple[dict[str, Any], str]] = [
    ({}, ""),
    ({"msg": " boom \n"}, "boom"),
    ({"stderr": "no such file"}, "no such file"),
    (
        {
            "msg": "One or more items failed",
            "results": [{"msg": "fine"}, {"failed": True, "msg": "item 2 broke"}],
        },
        "One or more items failed: item 2 broke",
    ),
    ({"results": [{"failed": True, "stderr": "e"}]}, "e"),
]


@pytest.mark.parametrize(("res", "message"), MESSAGE_TABLE)
def test_result_message(res: dict[str, Any], message: str) -> None:
    assert result_message(res) == message


def test_clean_result_drops_ansible_bookkeeping() -> None:
    res = {
        "changed": True,
        "_ansible_no_log": False,
        "invocation": {"module_args": {}},
        "results": [{"item": 1, "_ansible_item_label": 1}, "raw"],
    }
    assert clean_result(res) == {"changed": True, "results": [{"item": 1}, "raw"]}
    assert clean_result(None) == {}


def test_short_is_one_line_and_bounded() -> None:
    assert short("a\n b\tc") == "a b c"
    assert len(short("x" * 1000)) == 300
    assert short("x" * 1000).endswith("...")


def _task(host: str, status: TaskStatus, msg: str = "") -> TaskResult:
    return TaskResult(
        host=host, task="t", action="a", status=status, result={"msg": msg} if msg else {}
    )


def test_host_result_event_carries_the_message_of_failures_only() -> None:
    assert host_result_event("p.yml", _task("h1", "ok", "all good")).message == ""
    ev = host_result_event("p.yml", _task("h1", "failed", "boom"))
    assert (ev.kind, ev.host, ev.task, ev.status, ev.message) == (
        "host_result",
        "h1",
        "t",
        "failed",
        "boom",
    )
    assert (
        host_result_event("p.yml", _task("h1", "failed", "boom"), ignored=True).message
        == "boom (ignored)"
    )


def test_run_end_event() -> None:
    ok = run_end_event("p.yml", True, [_task("h1", "ok"), _task("h2", "changed")])
    assert (ok.status, ok.message) == (
        "ok",
        "2 host(s): ok=1 changed=1 failed=0 skipped=0 unreachable=0",
    )
    ignored = _task("h1", "failed", "ignored one")
    bad = run_end_event(
        "p.yml", False, [ignored, _task("h2", "unreachable", "no route")], ignored=[ignored]
    )
    assert (bad.status, bad.message) == ("failed", "h2: t: no route")
    assert run_end_event("p.yml", False, [], fallback="syntax error").message == "syntax error"


UUID_A = "5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00"
UUID_B = "9a7f0d2e-3c4b-4e5f-8a6b-1c2d3e4f5a6b"

GUESTS_TABLE: list[tuple[str, dict[str, Any], tuple[GuestOutcome, ...]]] = [
    (
        "domain module",
        {
            "changed": True,
            "results": [
                {"name": f"instance-{UUID_A}", "uuid": UUID_A, "state": "running", "changed": True},
                {
                    "name": f"instance-{UUID_B}",
                    "uuid": UUID_B,
                    "state": "shutoff",
                    "changed": False,
                },
            ],
        },
        (
            GuestOutcome(f"instance-{UUID_A}", "changed", "running"),
            GuestOutcome(f"instance-{UUID_B}", "ok", "shutoff"),
        ),
    ),
    (
        "disks module",
        {
            "changed": True,
            "results": [
                {"uuid": UUID_A, "changed": True, "files": ["/x/disk"], "actions": ["create"]},
                {"uuid": UUID_B, "changed": False, "files": ["/y/disk"], "actions": []},
            ],
        },
        (GuestOutcome(UUID_A, "changed"), GuestOutcome(UUID_B, "ok")),
    ),
    (
        "a failed guest",
        {
            "failed": True,
            "msg": f"guest {UUID_B}: qemu-img create failed",
            "failed_guests": [UUID_B],
            "results": [
                {"uuid": UUID_A, "changed": True, "files": [], "actions": []},
                {"uuid": UUID_B, "changed": False, "failed": True, "msg": "no\n  space left"},
            ],
        },
        (GuestOutcome(UUID_A, "changed"), GuestOutcome(UUID_B, "failed", "no space left")),
    ),
    (
        "domain check mode: no uuid yet",
        {"results": [{"name": "instance-x", "uuid": None, "state": "absent", "changed": True}]},
        (GuestOutcome("instance-x", "changed", "absent"),),
    ),
    (
        "an Ansible copy loop",
        {
            "changed": True,
            "msg": "All items completed",
            "results": [
                {"item": {"src": "/i/disk", "checksum": "a" * 64}, "ansible_loop_var": "item"},
                {"changed": True, "dest": "/b/aaa", "item": {"src": "/i/k"}, "failed": False},
            ],
        },
        (),
    ),
    (
        "a loop with its own loop_var",
        {"results": [{"name": "x", "guest": {"name": "x"}, "ansible_loop_var": "guest"}]},
        (),
    ),
    ("no results", {"changed": True, "msg": "done"}, ()),
    ("results that are not dicts", {"results": ["a", 1, None]}, ()),
    ("an entry without a label", {"results": [{"changed": True}, {"name": "", "uuid": 3}]}, ()),
    (
        "an empty name falls back to the uuid",
        {"results": [{"name": "", "uuid": UUID_A, "changed": False}]},
        (GuestOutcome(UUID_A, "ok"),),
    ),
]


@pytest.mark.parametrize(
    ("res", "guests"), [(r, g) for _, r, g in GUESTS_TABLE], ids=[c for c, _, _ in GUESTS_TABLE]
)
def test_guest_outcomes(res: dict[str, Any], guests: tuple[GuestOutcome, ...]) -> None:
    assert guest_outcomes(res) == guests
    task = TaskResult(host="h1", task="t", action="a", status=status_of(res), result=res)
    assert host_result_event("p.yml", task).guests == guests


def test_failed_guest_detail_is_bounded() -> None:
    [guest] = guest_outcomes({"results": [{"uuid": UUID_A, "failed": True, "msg": "x" * 1000}]})
    assert len(guest.detail) == MAX_EVENT_MESSAGE


NAMES = {UUID_A: "web-1", UUID_B: "web-2"}

RENAME_TABLE: list[tuple[str, tuple[GuestOutcome, ...], tuple[GuestOutcome, ...]]] = [
    (
        "domain names",
        (GuestOutcome(f"instance-{UUID_A}", "changed", "running"),),
        (GuestOutcome("web-1", "changed", "running"),),
    ),
    (
        "uuids",
        (GuestOutcome(UUID_A, "ok"), GuestOutcome(UUID_B, "failed", "boom")),
        (GuestOutcome("web-1", "ok"), GuestOutcome("web-2", "failed", "boom")),
    ),
    (
        "unknown labels stay",
        (GuestOutcome("instance-other", "ok"), GuestOutcome(UUID_B, "ok")),
        (GuestOutcome("instance-other", "ok"), GuestOutcome("web-2", "ok")),
    ),
    ("no guests", (), ()),
]


@pytest.mark.parametrize(
    ("guests", "renamed"),
    [(g, r) for _, g, r in RENAME_TABLE],
    ids=[c for c, _, _ in RENAME_TABLE],
)
def test_rename_guests(guests: tuple[GuestOutcome, ...], renamed: tuple[GuestOutcome, ...]) -> None:
    event = RunEvent(
        kind="host_result", playbook="spawn.yml", host="h1", task="spawn", guests=guests
    )
    out = rename_guests(event, guest_labels(NAMES))
    assert out == replace(event, guests=renamed)


def test_guest_labels_map_uuid_and_domain_name() -> None:
    assert guest_labels({UUID_A: "web-1"}) == {UUID_A: "web-1", f"instance-{UUID_A}": "web-1"}


def test_rename_guests_leaves_events_without_guests_alone() -> None:
    event = RunEvent(kind="task_start", playbook="spawn.yml", task="spawn")
    assert rename_guests(event, guest_labels(NAMES)) is event
