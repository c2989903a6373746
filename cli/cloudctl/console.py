"""Presentation: tables, JSON/YAML output, progress lines and one-line errors (rich)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloudctl.executor.base import GuestOutcome, RunEvent

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
stdout = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(StrEnum):
    """``-o`` values."""

    table = "table"
    json = "json"
    yaml = "yaml"


Columns = Sequence[tuple[str, str]]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, Mapping):
        if set(value) >= {"address"}:
            return str(value["address"])
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def emit(data: Any, output: OutputFormat, columns: Columns | None = None, title: str = "") -> None:
    """Print ``data`` (a dict or a list of dicts) as a table, JSON or YAML on stdout."""
    if output == OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    if output == OutputFormat.yaml:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
        return
    if isinstance(data, Mapping):
        table = Table(show_header=False, title=title or None, box=None, pad_edge=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in data.items():
            if key == "log":
                continue
            table.add_row(escape(key), escape(_cell(value)))
        stdout.print(table)
        return
    rows = list(data)
    cols = list(columns or [(k, k) for k in (rows[0].keys() if rows else [])])
    table = Table(title=title or None)
    for header, _ in cols:
        table.add_column(header)
    for row in rows:
        table.add_row(*(escape(_cell(row.get(key))) for _, key in cols))
    stdout.print(table)


def message(text: str) -> None:
    """A human note on stderr (keeps stdout clean for machines)."""
    stderr.print(escape(text))


def error(text: str) -> None:
    """The one-line error of a failed command."""
    stderr.print(f"[bold red]error:[/] {escape(text)}")


#: Servers named per state on a host's progress line; beyond this they are counted.
MAX_GUEST_NAMES = 10


def guest_summary(guests: Sequence[GuestOutcome], limit: int = MAX_GUEST_NAMES) -> str:
    """``running: web-1, web-3; ok: web-4``: guests grouped by state (else by status).

    Each group names at most ``limit`` guests and counts the rest, so that a host with dozens
    of guests still fits on a line or two.
    """
    groups: dict[str, list[str]] = {}
    for guest in guests:
        groups.setdefault(guest.detail or guest.status, []).append(guest.label)
    parts = []
    for word, labels in groups.items():
        shown = ", ".join(labels[:limit])
        rest = len(labels) - limit
        parts.append(f"{word}: {shown}" + (f" and {rest} more" if rest > 0 else ""))
    return "; ".join(parts)


class ConsoleProgress:
    """Progress of long work on stderr: service steps, per-host and per-server task results."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def info(self, text: str) -> None:
        """A step of the use case."""
        if not self.quiet:
            stderr.print(f"[cyan]•[/] {escape(text)}")

    def run_event(self, event: RunEvent) -> None:
        """An Ansible event: task starts, non-ok host results and every host's servers."""
        if self.quiet:
            return
        if event.kind == "task_start" and event.task:
            stderr.print(f"  [dim]▸ {escape(event.playbook)}: {escape(event.task)}[/]")
        elif event.kind == "host_result" and event.guests:
            self._guests(event)
        elif event.kind == "host_result" and event.status in ("failed", "unreachable"):
            first = event.message.splitlines()[0] if event.message else ""
            stderr.print(f"    [red]✗ {escape(event.host or '?')}[/] {escape(first)}")
        elif event.kind == "host_result" and event.status == "changed":
            stderr.print(f"    [green]✓ {escape(event.host or '?')}[/] changed")

    @staticmethod
    def _guests(event: RunEvent) -> None:
        """One line for the servers that are fine, one per failed server with its reason."""
        host = escape(event.host or "?")
        fine = [g for g in event.guests if g.status != "failed"]
        failed = [g for g in event.guests if g.status == "failed"]
        if fine:
            colour = "green" if any(g.status == "changed" for g in fine) else "dim"
            stderr.print(f"    [{colour}]✓ {host}[/]  {escape(guest_summary(fine))}")
        for guest in failed:
            stderr.print(f"    [red]✗ {host}[/]  {escape(guest.label)}: {escape(guest.detail)}")
        if not failed and event.status in ("failed", "unreachable"):
            first = event.message.splitlines()[0] if event.message else event.status
            stderr.print(f"    [red]✗ {host}[/] {escape(first)}")
