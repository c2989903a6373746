"""``cloudctl plan`` and ``cloudctl apply``: desired-state files, Terraform style."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudctl.commands import common
from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, error, message
from cloudctl.errors import InvalidInput
from cloudctl.services import gitops
from cloudctl.state import InvalidEstate

FileOpt = Annotated[
    Path | None, typer.Option("--file", "-f", help="A YAML file or a directory of them.")
]

CHANGE_COLUMNS = [
    ("ACTION", "action"),
    ("KIND", "kind"),
    ("NAME", "name"),
    ("IMPACT", "impact"),
    ("HOST", "host"),
    ("REASON", "reason"),
]
CAPACITY_COLUMNS = [
    ("HOST", "host"),
    ("VCPUS", "vcpus"),
    ("RAM MB", "ram"),
    ("DISK GB", "disk"),
]

_SYMBOL = {
    "create": "+",
    "delete": "-",
    "replace": "-/+",
    "move": "->",
    "update": "~",
    "no-op": " ",
}


def _rows(view: Mapping[str, Any], *, all_rows: bool = False) -> list[dict[str, Any]]:
    rows = []
    for c in view["changes"]:
        if c["action"] == "no-op" and not all_rows:
            continue
        placed = c.get("placement") or {}
        host = placed.get("host")
        if c.get("from_host") and host and host != c["from_host"]:
            host = f"{c['from_host']} -> {host}"
        rows.append({**c, "host": host or c.get("from_host") or ""})
    return rows


def _summary_line(view: Mapping[str, Any]) -> str:
    s = view["summary"]
    if not any(s[a] for a in ("create", "update", "replace", "move", "delete")):
        return "No changes. The hosts match the files."
    return (
        f"Plan: {s['create']} to create, {s['update']} to update, {s['move']} to move, "
        f"{s['replace']} to replace, {s['delete']} to delete."
    )


def _capacity_rows(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for h in view["capacity"]:
        b, a = h["before"], h["after"]

        def cell(rc: str, total: int, b: Mapping[str, int] = b, a: Mapping[str, int] = a) -> str:
            before, after = b.get(rc, 0), a.get(rc, 0)
            return f"{before}/{total}" if before == after else f"{before} -> {after}/{total}"

        out.append(
            {
                "host": h["host"],
                "vcpus": cell("VCPU", h["vcpus"]),
                "ram": cell("MEMORY_MB", h["memory_mb"]),
                "disk": cell("DISK_GB", h["disk_gb"]),
            }
        )
    return out


#: Drift sections in the order shown: the hosts against the books, then placement.
_DRIFT_TITLES = {
    "config": "Drift: the hosts differ from the books",
    "placement": "Placement drift: servers not on the host they prefer",
}


def markdown(view: Mapping[str, Any]) -> str:
    """The plan as Markdown, for a merge-request comment."""
    lines = ["### cloudctl plan", "", f"**{_summary_line(view)}**", ""]
    rows = _rows(view)
    if rows:
        lines += ["| | kind | name | impact | host | why |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| `{_SYMBOL[r['action']]}` {r['action']} | {r['kind']} | `{r['name']}` | "
                f"{r['impact'] or ''} | {r['host']} | {r['reason']} |"
            )
        lines.append("")
    placed = [c for c in view["changes"] if c.get("placement")]
    if placed:
        lines += ["<details><summary>Placement: weights and alternates</summary>", ""]
        for c in placed:
            p = c["placement"]
            weights = ", ".join(f"{h} {w}" for h, w in p["weights"])
            alts = ", ".join(p["alternates"]) or "none"
            lines.append(
                f"- `{c['name']}` -> **{p['host']}** (weights: {weights}; alternates: {alts})"
            )
        lines += ["", "</details>", ""]
    cap = _capacity_rows(view)
    if cap:
        lines += ["| host | vCPUs | RAM MB | disk GB |", "|---|---|---|---|"]
        lines += [f"| {r['host']} | {r['vcpus']} | {r['ram']} | {r['disk']} |" for r in cap]
        lines.append("")
    for category, title in _DRIFT_TITLES.items():
        drift = [d for d in view["drift"] if d.get("category", "config") == category]
        if drift:
            lines += [f"**{title}** (not changed by apply):", ""]
            lines += [f"- `{d['server']}`: {d['kind']}: {d['detail']}" for d in drift]
            lines.append("")
    for e in view["errors"]:
        lines.append(f"- :x: {e}")
    return "\n".join(lines).rstrip() + "\n"


def _show(view: Mapping[str, Any], output: str) -> None:
    if output == "markdown":
        sys.stdout.write(markdown(view))
        return
    if output != "table":
        emit(dict(view), OutputFormat(output))
        return
    rows = _rows(view)
    if rows:
        emit(rows, OutputFormat.table, CHANGE_COLUMNS)
    for c in view["changes"]:
        p = c.get("placement")
        if p:
            weights = ", ".join(f"{h} {w}" for h, w in p["weights"])
            message(f"  {c['name']} -> {p['host']}  (weights: {weights})")
    if any(h["before"] != h["after"] for h in view["capacity"]):
        emit(_capacity_rows(view), OutputFormat.table, CAPACITY_COLUMNS, title="capacity")
    for category in _DRIFT_TITLES:
        for d in view["drift"]:
            if d.get("category", "config") == category:
                label = "placement drift" if category == "placement" else "drift"
                message(f"{label}: {d['server']}: {d['kind']}: {d['detail']}")
    for e in view["errors"]:
        message(f"error: {e}")
    message(_summary_line(view))


def _problems(exc: InvalidEstate) -> typer.Exit:
    """Every problem of the files on its own ``error: file:line: ...`` line, exit 2."""
    for problem in exc.problems:
        error(str(problem))
    return typer.Exit(2)


def plan(
    file: FileOpt = None,
    out: Annotated[Path | None, typer.Option(help="Save the plan for apply --plan.")] = None,
    prune: Annotated[
        bool, typer.Option(help="Plan deleting what the files no longer declare.")
    ] = False,
    refresh: Annotated[
        bool, typer.Option(help="Ask the hosts first (one play) and show their drift.")
    ] = True,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0 = no changes, 1 = error, 2 = changes."),
    ] = False,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table, json, yaml or markdown.")
    ] = "table",
) -> None:
    """Show what apply would do: each change, its impact, where new servers land and why."""
    if file is None:
        raise InvalidInput(reason="give the desired state with -f PATH")
    if output not in ("table", "json", "yaml", "markdown"):
        raise InvalidInput(reason=f"--output must be table, json, yaml or markdown, not {output!r}")
    ctx = ctx_for(OutputFormat.table if output in ("table", "markdown") else OutputFormat.json)
    try:
        result = gitops.make_plan(ctx, file, prune=prune, refresh=refresh)
    except InvalidEstate as exc:
        raise _problems(exc) from None
    view = result.view()
    _show(view, output)
    if out is not None:
        gitops.save_plan(result, out, file, prune)
        message(f"plan saved to {out}: apply it with cloudctl apply --plan {out}")
    if result.errors:
        raise typer.Exit(1)
    if detailed_exitcode and result.has_changes:
        raise typer.Exit(2)


def apply(
    file: FileOpt = None,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="Apply a plan saved with plan --out.")
    ] = None,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Do not ask before applying.")
    ] = False,
    prune: Annotated[bool, typer.Option(help="Delete what the files no longer declare.")] = False,
    parallel: Annotated[int, typer.Option(help="Hosts worked on at once (Ansible forks).")] = 10,
    lock_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for another apply's state lock.")
    ] = 0.0,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Make the hosts match the files: exactly the plan shown (or saved), under the state lock."""
    if (file is None) == (plan_file is None):
        raise InvalidInput(reason="give either -f PATH or --plan FILE")
    if parallel < 1:
        raise InvalidInput(reason="--parallel must be at least 1")
    ctx = ctx_for(output)
    runs_dir = ctx.settings.runs_dir
    ctx.executor_factory = lambda: common.make_executor(runs_dir, forks=parallel)

    def approve(p: gitops.Plan) -> bool:
        if output == OutputFormat.table:
            _show(p.view(), "table")
        if auto_approve or plan_file is not None:
            return True
        if not sys.stdin.isatty():
            raise InvalidInput(reason="not a terminal: pass --auto-approve (or apply a saved plan)")
        return typer.confirm("Apply these changes?", default=False)

    def on_step(state: str, what: str) -> None:
        if output == OutputFormat.table and state != "start":
            message(f"{'✓' if state == 'done' else '✗'} {what}")

    try:
        result, report = gitops.run_apply(
            ctx,
            file,
            plan_file=plan_file,
            prune=prune,
            lock_timeout_s=lock_timeout,
            approve=approve,
            on_step=on_step,
        )
    except InvalidEstate as exc:
        raise _problems(exc) from None
    if report is None:
        message("apply cancelled: nothing changed")
        raise typer.Exit(1)
    view = {"plan": result.view()["summary"], **report.view()}
    if output != OutputFormat.table:
        emit(view, output)
    elif not result.has_changes:
        message("No changes. The hosts match the files.")
    else:
        message(f"apply: {len(report.done)} step(s) done, {len(report.failed)} failed")
    if report.failed:
        raise typer.Exit(1)
