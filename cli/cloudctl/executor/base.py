"""The executor's typed interface: what a run asks for, what it reports, what it returns.

Services build a :class:`RunRequest` (a playbook from ``playbooks/``, the target hosts and extra
vars), hand it to an :class:`Executor`, and read the :class:`RunResult`. Per-host inputs travel in
extra vars keyed by inventory host name (e.g. ``cloudctl_guests: {host: [...]}``) so one play covers
every host and a module loops over that host's guests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

#: Asked by the executors while a run goes on; a check that answers a reason stops the run.
#: A command whose lease could not be renewed for most of its length registers one: another
#: controller may soon take its instances over, so its plays must not go on acting on them.
_STOP_CHECKS: list[Callable[[], str | None]] = []


def add_stop_check(check: Callable[[], str | None]) -> None:
    """Stop every run of this process once ``check()`` answers a reason (not None)."""
    _STOP_CHECKS.append(check)


def remove_stop_check(check: Callable[[], str | None]) -> None:
    """Forget a check added with :func:`add_stop_check`."""
    if check in _STOP_CHECKS:
        _STOP_CHECKS.remove(check)


def stop_reason() -> str | None:
    """Why the runs of this process must stop now, or None."""
    for check in list(_STOP_CHECKS):
        reason = check()
        if reason:
            return reason
    return None


TaskStatus = Literal["ok", "changed", "failed", "skipped", "unreachable"]
GuestStatus = Literal["ok", "changed", "failed"]
EventKind = Literal[
    "run_start",
    "play_start",
    "task_start",
    "host_result",
    "run_end",
]


@dataclass(frozen=True)
class HostTarget:
    """One compute host as the inventory shows it to Ansible."""

    name: str
    connection: Literal["local", "ssh"]
    libvirt_uri: str
    python_interpreter: str
    address: str | None = None
    ssh_user: str | None = None
    ssh_port: int | None = None
    ssh_private_key: str | None = None
    ssh_common_args: str | None = None
    hostvars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRequest:
    """A playbook run: ``playbook`` is a file name in ``playbooks/``."""

    playbook: str
    hosts: tuple[HostTarget, ...]
    extravars: Mapping[str, Any] = field(default_factory=dict)
    check: bool = False
    diff: bool = False
    description: str = ""


@dataclass(frozen=True)
class TaskResult:
    """What one task did on one host; ``result`` is the module's returned dict."""

    host: str
    task: str
    action: str
    status: TaskStatus
    result: Mapping[str, Any]
    started: datetime | None = None
    ended: datetime | None = None

    @property
    def message(self) -> str:
        """The module's failure or status message, if any."""
        msg = self.result.get("msg") or self.result.get("stderr") or ""
        return str(msg).strip()


@dataclass(frozen=True)
class GuestOutcome:
    """What a batched module did to one guest of a host: one entry of its ``results``.

    ``label`` is the module's key for the guest (a domain name or an instance UUID) until a
    service renames it to the server name; ``detail`` is the guest's state or why it failed.
    """

    label: str
    status: GuestStatus
    detail: str = ""


@dataclass(frozen=True)
class RunEvent:
    """Progress while a run goes on, for the console and for task_state updates.

    ``guests`` holds the per-guest outcomes of a ``host_result`` from a batched module.
    """

    kind: EventKind
    playbook: str
    host: str | None = None
    task: str | None = None
    status: TaskStatus | None = None
    message: str = ""
    guests: tuple[GuestOutcome, ...] = ()


@dataclass(frozen=True)
class RunResult:
    """The outcome of a run, host by host and task by task."""

    playbook: str
    ok: bool
    rc: int
    tasks: tuple[TaskResult, ...]
    duration_s: float
    artifacts_dir: str | None = None
    stdout_tail: str = ""

    def failed(self) -> tuple[TaskResult, ...]:
        """Tasks that failed or whose host was unreachable."""
        return tuple(t for t in self.tasks if t.status in ("failed", "unreachable"))

    def failed_hosts(self) -> frozenset[str]:
        """Hosts on which anything failed."""
        return frozenset(t.host for t in self.failed())

    def result(self, task: str, host: str) -> Mapping[str, Any] | None:
        """The module result of the last run of ``task`` on ``host`` (None if it did not run)."""
        found: Mapping[str, Any] | None = None
        for t in self.tasks:
            if t.task == task and t.host == host:
                found = t.result
        return found


EventHandler = Callable[[RunEvent], None]


class Executor(Protocol):
    """Runs a playbook from ``playbooks/`` against some hosts and returns structured results."""

    def run(self, request: RunRequest, on_event: EventHandler | None = None) -> RunResult:
        """Run ``request``; never raises for a failed play (read ``RunResult.ok``)."""
        ...

    def reap_orphans(self) -> list[int]:
        """Kill the processes left by runs whose cloudctl process died; returns their pids."""
        ...
