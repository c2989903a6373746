"""An in-memory executor for unit tests: records requests, answers from responders.

    fake = FakeExecutor()
    fake.on("spawn.yml", lambda req: {"h1": {"spawn guests": {"changed": True, "guests": [...]}}})
    fake.fail("spawn.yml", host="h2", task="spawn guests", msg="boom")
    result = fake.run(request, events.append)
    fake.requests[-1].extravars["cloudctl_guests"]

A responder returns either a :class:`RunResult` (used as it is) or a mapping
``host -> {task name: module result dict}``; a result's status follows Ansible's keys
(``unreachable``, ``failed``, ``skipped``, ``changed``, else ok). Without a responder every host of
the request gets one task, :data:`DEFAULT_TASK`, ok with an empty result. As in Ansible, the tasks
after a failed or unreachable one do not run on that host. Events follow the real executor's order:
run_start, play_start, then per task task_start and one host_result per host, run_end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudctl.errors import ExecutorError
from cloudctl.executor.base import EventHandler, RunEvent, RunRequest, RunResult, TaskResult
from cloudctl.executor.events import host_result_event, result_message, run_end_event, status_of
from cloudctl.executor.inventory import render_inventory

#: The one task every host runs when no responder is registered for a playbook.
DEFAULT_TASK = "fake"

#: A responder's plain answer: host -> task name -> module result dict.
HostResults = Mapping[str, Mapping[str, Mapping[str, Any]]]
#: What ``FakeExecutor.on`` registers: request in, canned answer out.
Responder = Callable[[RunRequest], RunResult | HostResults]


@dataclass
class _Failure:
    host: str
    task: str
    result: dict[str, Any]
    remaining: int | None  # runs left to fail; None: every run


class FakeExecutor:
    """Records every :class:`RunRequest` and answers with canned results; see the module doc.

    With ``playbooks_dir`` set, a request for a playbook that does not exist there raises
    :class:`ExecutorError` as the real executor does, which catches typos in service code.
    Requests are checked like the real inventory (names, duplicates, reserved hostvars).
    """

    def __init__(self, *, playbooks_dir: Path | None = None) -> None:
        self.playbooks_dir = playbooks_dir
        self.requests: list[RunRequest] = []
        self.results: list[RunResult] = []
        self.events: list[RunEvent] = []
        self._responders: dict[str, Responder] = {}
        self._failures: dict[str, list[_Failure]] = {}

    def on(self, playbook: str, responder: Responder) -> None:
        """Answer runs of ``playbook`` with ``responder(request)`` (replaces an earlier one)."""
        self._responders[playbook] = responder

    def fail(
        self,
        playbook: str,
        *,
        host: str,
        task: str = DEFAULT_TASK,
        msg: str = "boom",
        unreachable: bool = False,
        times: int | None = None,
    ) -> None:
        """Make ``task`` fail on ``host`` in runs of ``playbook`` (the next ``times`` runs, or all).

        The task is added to that host's tasks when the responder did not produce it. Failures
        apply to mapping answers; a responder returning a ``RunResult`` is taken as it is.
        """
        result: dict[str, Any] = {"msg": msg, "changed": False}
        result["unreachable" if unreachable else "failed"] = True
        self._failures.setdefault(playbook, []).append(_Failure(host, task, result, times))

    def run(self, request: RunRequest, on_event: EventHandler | None = None) -> RunResult:
        """Record ``request`` and return the canned result, emitting the real executor's events."""
        if self.playbooks_dir is not None and not (self.playbooks_dir / request.playbook).is_file():
            raise ExecutorError(
                f"cannot run {request.playbook!r}: no such playbook in {self.playbooks_dir}",
                playbook=request.playbook,
                reason="playbook not found",
            )
        render_inventory(request.hosts)  # the same validation as a real run
        self.requests.append(request)

        def emit(event: RunEvent) -> None:
            self.events.append(event)
            if on_event is not None:
                on_event(event)

        emit(RunEvent(kind="run_start", playbook=request.playbook, message=request.description))
        responder = self._responders.get(request.playbook)
        answer: RunResult | HostResults = (
            responder(request) if responder else {h.name: {DEFAULT_TASK: {}} for h in request.hosts}
        )
        if isinstance(answer, RunResult):
            result = answer
        else:
            result = self._result(request, self._with_failures(request, answer))
        emit(RunEvent(kind="play_start", playbook=request.playbook, message="compute"))
        previous: str | None = None
        for task in result.tasks:
            if task.task != previous:
                previous = task.task
                emit(RunEvent(kind="task_start", playbook=request.playbook, task=task.task))
            emit(host_result_event(request.playbook, task))
        emit(run_end_event(request.playbook, result.ok, result.tasks))
        self.results.append(result)
        return result

    def reap_orphans(self) -> list[int]:
        """Nothing to reap: fake runs start no process."""
        return []

    # -- helpers ----------------------------------------------------------------------------

    def _with_failures(
        self, request: RunRequest, answer: HostResults
    ) -> dict[str, dict[str, Mapping[str, Any]]]:
        names = {h.name for h in request.hosts}
        unknown = set(answer) - names
        if unknown:
            raise ValueError(f"responder answered for hosts not in the request: {sorted(unknown)}")
        per_host = {h: dict(answer.get(h, {})) for h in sorted(names, key=_order(request))}
        for failure in self._failures.get(request.playbook, []):
            if failure.host in per_host and failure.remaining != 0:
                per_host[failure.host][failure.task] = failure.result
                if failure.remaining is not None:
                    failure.remaining -= 1
        return per_host

    @staticmethod
    def _result(
        request: RunRequest, per_host: Mapping[str, Mapping[str, Mapping[str, Any]]]
    ) -> RunResult:
        # Tasks run in the order they first appear across hosts; each task covers every host
        # that has it, and a host stops at its first failure, as with Ansible's linear strategy.
        order: list[str] = []
        for tasks in per_host.values():
            order.extend(t for t in tasks if t not in order)
        stopped: set[str] = set()
        results: list[TaskResult] = []
        for name in order:
            for host, tasks in per_host.items():
                if name not in tasks or host in stopped:
                    continue
                res = dict(tasks[name])
                status = status_of(res)
                results.append(
                    TaskResult(host=host, task=name, action="fake", status=status, result=res)
                )
                if status in ("failed", "unreachable"):
                    stopped.add(host)
        failed = [t for t in results if t.status in ("failed", "unreachable")]
        rc = 4 if any(t.status == "unreachable" for t in failed) else 2 if failed else 0
        tail = "\n".join(
            f"fatal: [{t.host}]: {'UNREACHABLE' if t.status == 'unreachable' else 'FAILED'}! "
            f"=> {result_message(t.result)}"
            for t in failed
        )
        return RunResult(
            playbook=request.playbook,
            ok=not failed,
            rc=rc,
            tasks=tuple(results),
            duration_s=0.0,
            artifacts_dir=None,
            stdout_tail=tail,
        )


def _order(request: RunRequest) -> Callable[[str], int]:
    index = {h.name: i for i, h in enumerate(request.hosts)}
    return lambda name: index[name]
