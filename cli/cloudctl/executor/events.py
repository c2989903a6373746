"""What the real and the fake executor share: module results -> statuses, messages and events.

Both executors report through these helpers so a test written against :class:`FakeExecutor`
sees the same event sequence and the same messages as a real Ansible run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from cloudctl.executor.base import GuestOutcome, GuestStatus, RunEvent, TaskResult, TaskStatus

#: Events carry at most this many characters of a module's message.
MAX_EVENT_MESSAGE = 300

#: The keys by which cloudctl's batched modules name a guest in ``results``, in order of preference.
GUEST_LABEL_KEYS = ("name", "uuid")
#: Keys of the items of Ansible's own ``loop:`` results (``item`` is the default loop variable).
_LOOP_ITEM_KEYS = ("ansible_loop_var", "item")


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


def guest_outcomes(res: Mapping[str, Any]) -> tuple[GuestOutcome, ...]:
    """The per-guest outcomes in a batched module's ``results``; none for anything else.

    Items of Ansible's own loops (they carry the loop variable) are not guests, and entries
    without a label are left out rather than guessed at.
    """
    items = res.get("results")
    if not isinstance(items, list):
        return ()
    outcomes: list[GuestOutcome] = []
    for item in items:
        if not isinstance(item, Mapping) or any(k in item for k in _LOOP_ITEM_KEYS):
            continue
        labels = [item.get(k) for k in GUEST_LABEL_KEYS]
        label = next((v for v in labels if isinstance(v, str) and v), None)
        if label is None:
            continue
        status: GuestStatus
        if item.get("failed"):
            status = "failed"
            detail = str(item.get("msg") or item.get("stderr") or "failed")
        else:
            status = "changed" if item.get("changed") else "ok"
            state = item.get("state")
            detail = state if isinstance(state, str) else ""
        outcomes.append(GuestOutcome(label=label, status=status, detail=short(detail)))
    return tuple(outcomes)


def guest_labels(names: Mapping[str, str]) -> dict[str, str]:
    """``{instance uuid: server name}`` -> ``{label: server name}`` for :func:`rename_guests`.

    Batched modules label a guest by its instance UUID (disks, config drive) or by its domain
    name, which for the instances cloudctl builds is ``instance-<uuid>``.
    """
    labels: dict[str, str] = {}
    for uuid, name in names.items():
        labels[uuid] = name
        labels[f"instance-{uuid}"] = name
    return labels


def rename_guests(event: RunEvent, labels: Mapping[str, str]) -> RunEvent:
    """``event`` with its guests' labels replaced by ``labels[label]`` (unknown ones kept)."""
    if not event.guests:
        return event
    guests = tuple(replace(g, label=labels.get(g.label, g.label)) for g in event.guests)
    return replace(event, guests=guests)


def host_result_event(playbook: str, task: TaskResult, *, ignored: bool = False) -> RunEvent:
    """The ``host_result`` event for one finished task on one host, with its guests if any."""
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
        guests=guest_outcomes(task.result),
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
