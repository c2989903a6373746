"""``cloudctl state``: the apply state lock by hand, and what the apply journal says."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, message
from cloudctl.services import state_store

app = typer.Typer(help="The apply state: lock, unlock, show.", no_args_is_help=True)

LockName = Annotated[str, typer.Option("--name", help="Lock name (one per estate).")]

RUN_COLUMNS = [
    ("RUN", "uuid"),
    ("STATUS", "status"),
    ("STARTED", "started_at"),
    ("FINISHED", "finished_at"),
    ("HOLDER", "holder"),
    ("PID", "pid"),
    ("UNFINISHED STEPS", "open"),
]


@app.command("lock")
def lock(
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for a holder to finish.")
    ] = 0.0,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown to others).")] = None,
    name: LockName = state_store.DEFAULT_LOCK,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Take the state lock by hand: no apply runs until `cloudctl state unlock`."""
    ctx = ctx_for(output)
    held = state_store.acquire_lock(
        ctx,
        operation="manual",
        timeout_s=timeout,
        name=name,
        info=reason,
        pid=state_store.HUMAN_PID,
    )
    if output == OutputFormat.table:
        message(f"state lock {name!r} taken by {held.describe()}")
    else:
        emit(held.view(ctx.clock()), output)


@app.command("unlock")
def unlock(
    force: Annotated[
        bool, typer.Option("--force", help="Break a lock a running apply holds.")
    ] = False,
    name: LockName = state_store.DEFAULT_LOCK,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Release the state lock taken by hand (or one whose process is gone); --force breaks any."""
    ctx = ctx_for(output)
    released = state_store.release_lock(ctx, name, force=force, pid=state_store.HUMAN_PID)
    if output != OutputFormat.table:
        emit({"released": released.view(ctx.clock()) if released else None}, output)
    elif released is None:
        message(f"state lock {name!r} was not held")
    else:
        message(f"state lock {name!r} released (was held by {released.describe()})")


def _step_line(step: dict[str, Any]) -> str:
    return f"{step['seq']}:{step['kind']}/{step['name']} {step['action']} {step['status']}"


@app.command("show")
def show(
    runs: Annotated[int, typer.Option("--runs", help="How many recent applies to show.")] = 5,
    name: LockName = state_store.DEFAULT_LOCK,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Show the lock, the last apply runs (unfinished steps too) and the managed resources."""
    view = state_store.state_view(ctx_for(output), name=name, runs=runs)
    if output != OutputFormat.table:
        emit(view, output)
        return
    held = view["lock"]
    if held is None:
        message(f"state lock {name!r}: free")
    else:
        message(
            f"state lock {name!r}: held by {held['holder']} "
            + ("(by hand" if held["by_hand"] else f"(pid {held['pid']}")
            + f", {held['operation']} since {held['acquired_at']}"
            + (f": {held['info']}" if held["info"] else "")
            + (", its process is gone" if held["stale"] else "")
            + ")"
        )
    rows = [
        {
            **r,
            "status": f"{r['status']} (process gone)" if r["stale"] else r["status"],
            "open": [_step_line(s) for s in r["steps"]],
        }
        for r in view["runs"]
    ]
    if rows:
        emit(rows, output, RUN_COLUMNS, title="apply runs")
    else:
        message("no apply runs")
    managed = [
        {"estate": estate, "kind": kind, "count": count}
        for estate, kinds in view["managed"].items()
        for kind, count in kinds.items()
    ]
    if managed:
        emit(managed, output, [("ESTATE", "estate"), ("KIND", "kind"), ("COUNT", "count")])
    else:
        message("no managed resources")
