"""``cloudctl verify``, ``cloudctl reconcile`` and ``cloudctl agent``: keeping the books true."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Annotated, Any

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, message
from cloudctl.errors import InvalidInput
from cloudctl.services import reconcile as service

FINDING_COLUMNS = [
    ("CODE", "code"),
    ("SEVERITY", "severity"),
    ("KIND", "kind"),
    ("OBJECT", "object"),
    ("MESSAGE", "message"),
]
CORRECTION_COLUMNS = [
    ("TASK", "task"),
    ("CODE", "code"),
    ("OBJECT", "object"),
    ("HOST", "host"),
    ("RESULT", "result"),
    ("WHAT", "what"),
]


def verify(
    fix: Annotated[
        bool, typer.Option("--fix", help="Apply the safe repairs, then verify again.")
    ] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Compare SQL, the ledger, every host's domains and files; exit 1 on any error finding.

    Each finding has a stable code (ELEDGER, EDOMAIN, EPOWER, ESTATE, EHOST, EFILE), a severity
    (error or warning), the object and a message. With --fix the safe repairs run (the ledger,
    the books follow libvirt's power state, stuck tasks to ERROR, deleted guests' domains and
    orphaned files removed) and what remains is reported.
    """
    report = service.verify(ctx_for(output), fix=fix)
    if output == OutputFormat.table:
        if report["fixed"]:
            emit(report["fixed"], output, CORRECTION_COLUMNS, title="fixed")
        if report["findings"]:
            emit(report["findings"], output, FINDING_COLUMNS)
        message(f"{report['errors']} error(s), {report['warnings']} warning(s)")
    else:
        emit(report, output)
    if report["errors"]:
        raise typer.Exit(1)


def _summarise(view: Mapping[str, Any], output: OutputFormat) -> None:
    if output != OutputFormat.table:
        emit(dict(view), output)
        return
    if view["corrections"]:
        emit(view["corrections"], output, CORRECTION_COLUMNS)
    parts = [
        f"{len(view['hosts_up'])} host(s) up",
        f"{len(view['hosts_down'])} down"
        + (f" ({', '.join(view['hosts_down'])})" if view["hosts_down"] else ""),
        f"{len(view['findings'])} finding(s)",
        f"{len(view['corrections'])} correction(s), {view['failed']} failed",
    ]
    if view["reclaimed"]:
        parts.append(f"reclaimed {', '.join(view['reclaimed'])}")
    if view["confirmed"]:
        parts.append(f"confirmed resize of {', '.join(view['confirmed'])}")
    message("reconcile: " + "; ".join(parts))


def reconcile(output: OutputOpt = OutputFormat.table) -> None:
    """Run every periodic task once over all hosts (one play per task); exit 1 if a fix failed.

    Tasks, in order: update_available_resource (capacity, heartbeats, up/down),
    check_instance_timeouts, sync_power_states (sync_power_state_policy: report|restore),
    heal_allocations, cleanup_running_deleted_instances (running_deleted_instance_action:
    reap|log|noop), reclaim_queued_deletes, poll_unconfirmed_resizes, cleanup_orphaned_files.
    """
    report = service.reconcile(ctx_for(output))
    view = report.view()
    _summarise(view, output)
    if view["failed"]:
        raise typer.Exit(1)


class _StopFlag:
    """Set by SIGTERM/SIGINT: the agent finishes the task under way, then stops."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signals = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:  # a second signal: stop now
            raise KeyboardInterrupt
        message(f"agent: {signal.Signals(signum).name} received, stopping after this task")
        self.event.set()


def agent(
    interval: Annotated[
        float | None,
        typer.Option(help="Seconds between passes (default: reconcile_interval_s, 60)."),
    ] = None,
    passes: Annotated[
        int | None, typer.Option(help="Stop after this many passes (default: run until stopped).")
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Run reconcile passes every --interval seconds until SIGTERM or SIGINT.

    A signal lets the task under way finish and stops cleanly (exit 0); a second one stops at
    once. One summary line per pass (one JSON object per line with -o json).
    """
    ctx = ctx_for(output)
    every = ctx.settings.reconcile_interval_s if interval is None else interval
    if every <= 0:
        raise InvalidInput(reason="--interval must be more than 0 seconds")
    if passes is not None and passes < 1:
        raise InvalidInput(reason="--passes must be at least 1")
    stop = _StopFlag()
    previous = [signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)]
    done = 0
    try:
        message(f"agent: a pass every {every:g}s; SIGTERM or Ctrl-C stops it")
        while not stop.event.is_set():
            started = time.monotonic()
            report = service.reconcile(ctx, should_stop=stop.event.is_set)
            done += 1
            view = report.view()
            if output == OutputFormat.json:
                emit(view, output)
            else:
                _summarise(view, OutputFormat.table)
            if passes is not None and done >= passes:
                break
            stop.event.wait(max(0.0, every - (time.monotonic() - started)))
    finally:
        for s, handler in zip((signal.SIGTERM, signal.SIGINT), previous, strict=True):
            signal.signal(s, handler)
    message(f"agent: stopped after {done} pass(es)")
