"""What the real and the fake executor share: module results -> statuses, messages and events.

Both executors report through these helpers so a test written against :class:`FakeExecutor`
sees the same event sequence and the same messages as a real Ansible run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cloudctl.executor.base import RunEvent, TaskResult, TaskStatus

#: Events carry at most this many characters of a module's message.
MAX_EVENT_MESSAGE = 300


def clean_result(res: Mapping[str, Any] | None) -> dict[str, Any]:
    """A module result without Ansible's bookkeeping (``_ansible_*`` keys, ``invocation``)."""
    if not res:
        return {}
    out: dict[str, Any] = {}
    for key, value in res.items():
        if key.startswith("_ansible") or key == "invocation":
            continue
        if key == "results" and isinstance(value, list):
            value = [clean_result(v) if isinstance(v, Mapping) else v for v in value]
        out[key] = value
    return out


def status_of(res: Mapping[str, Any]) -> TaskStatus:
    """The status a plain module result dict stands for (used by the fake's responders)."""
    if res.get("unreachable"):
        return "unreachable"
    if res.get("failed"):
        return "failed"
    if res.get("skipped"):
        return "skipped"
    if res.get("changed"):
        return "changed"
    return "ok"


def result_message(res: Mapping[str, Any]) -> str:
    """The module's message; for a loop whose items failed, the first failed item's too."""
    msg = str(res.get("msg") or res.get("stderr") or "").strip()
    items = res.get("results")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping) and item.get("failed"):
                detail = str(item.get("msg") or item.get("stderr") or "").strip()
                if detail and detail != msg:
                    msg = f"{msg}: {detail}" if msg else detail
                break
    return msg


def short(text: str, limit: int = MAX_EVENT_MESSAGE) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def host_result_event(playbook: str, task: TaskResult, *, ignored: bool = False) -> RunEvent:
    """The ``host_result`` event for one finished task on one host."""
    message = result_message(task.result) if task.status in ("failed", "unreachable") else ""
    if ignored:
        message = f"{message} (ignored)" if message else "(ignored)"
    return RunEvent(
        kind="host_result",
        playbook=playbook,
        host=task.host,
        task=task.task,
        status=task.status,
        message=short(message),
    )


def run_end_event(
    playbook: str,
    ok: bool,
    tasks: Iterable[TaskResult],
    *,
    ignored: Iterable[TaskResult] = (),
    fallback: str = "",
) -> RunEvent:
    """The closing event: counts per status when ok, else the first failure (or ``fallback``).

    ``ignored`` are failures under ``ignore_errors``: counted, never named as the cause.
    """
    tasks = tuple(tasks)
    ignored_ids = {id(t) for t in ignored}
    if ok:
        counts = {s: 0 for s in ("ok", "changed", "failed", "skipped", "unreachable")}
        for t in tasks:
            counts[t.status] += 1
        hosts = len({t.host for t in tasks})
        message = f"{hosts} host(s): " + " ".join(f"{k}={v}" for k, v in counts.items())
        return RunEvent(kind="run_end", playbook=playbook, status="ok", message=message)
    failed = [
        t for t in tasks if t.status in ("failed", "unreachable") and id(t) not in ignored_ids
    ]
    if failed:
        first = failed[0]
        message = f"{first.host}: {first.task}: {result_message(first.result) or first.status}"
    else:
        message = fallback or "the run failed"
    return RunEvent(kind="run_end", playbook=playbook, status="failed", message=short(message))
