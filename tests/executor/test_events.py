"""Statuses, messages and events shared by both executors."""

from __future__ import annotations

from typing import Any

import pytest

from cloudctl.executor.base import TaskResult, TaskStatus
from cloudctl.executor.events import (
    clean_result,
    host_result_event,
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
