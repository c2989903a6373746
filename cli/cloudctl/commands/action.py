"""``cloudctl action``: an instance's action history."""

from __future__ import annotations

from typing import Any

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit
from cloudctl.services import compute

app = typer.Typer(help="Instance action history.", no_args_is_help=True)


@app.command("list")
def list_(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """List the actions and their events of an instance (deleted ones included)."""
    acts = compute.action_list(ctx_for(output), name)
    if output != OutputFormat.table:
        emit(acts, output)
        return
    rows: list[dict[str, Any]] = []
    for a in acts:
        for e in a["events"] or [{}]:
            rows.append(
                {
                    "action": a["action"],
                    "request_id": a["request_id"],
                    "event": e.get("event"),
                    "result": e.get("result"),
                    "host": e.get("host"),
                    "start": e.get("start_time"),
                    "finish": e.get("finish_time"),
                }
            )
    emit(
        rows,
        output,
        [
            ("ACTION", "action"),
            ("REQUEST", "request_id"),
            ("EVENT", "event"),
            ("RESULT", "result"),
            ("HOST", "host"),
            ("START", "start"),
            ("FINISH", "finish"),
        ],
    )


@app.command("show")
def show(name: str, request_id: str, output: OutputOpt = OutputFormat.table) -> None:
    """Show one action (REQUEST_ID, or a unique prefix of it): its events with details."""
    act = compute.action_show(ctx_for(output), name, request_id)
    if output != OutputFormat.table:
        emit(act, output)
        return
    typer.echo(
        f"{act['action']} {act['request_id']}: {act['message'] or 'in progress'} "
        f"({act['start_time']} - {act['finish_time'] or '...'})"
    )
    rows = [
        {**e, "details": (e.get("details") or "").strip().splitlines()[-1:] or [""]}
        for e in act["events"]
    ]
    for r in rows:
        r["details"] = r["details"][0][:100]
    emit(
        rows,
        output,
        [
            ("EVENT", "event"),
            ("RESULT", "result"),
            ("HOST", "host"),
            ("START", "start_time"),
            ("FINISH", "finish_time"),
            ("DETAILS", "details"),
        ],
    )
