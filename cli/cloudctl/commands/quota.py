"""``cloudctl quota``: per-project limits on instances, cores and RAM."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit
from cloudctl.errors import InvalidInput
from cloudctl.services import quotas

app = typer.Typer(help="Quotas: show, set.", no_args_is_help=True)
COLUMNS = [
    ("PROJECT", "project"),
    ("RESOURCE", "resource"),
    ("LIMIT", "limit"),
    ("IN USE", "in_use"),
]
Project = Annotated[str | None, typer.Option(help="Project (default: yours).")]


@app.command("show")
def show(project: Project = None, output: OutputOpt = OutputFormat.table) -> None:
    """Limits and usage of a project."""
    emit(quotas.show(ctx_for(output), project), output, COLUMNS)


@app.command("set")
def set_(
    project: Project = None,
    instances: Annotated[int | None, typer.Option(help="Max instances (-1 unlimited).")] = None,
    cores: Annotated[int | None, typer.Option(help="Max vCPUs (-1 unlimited).")] = None,
    ram: Annotated[int | None, typer.Option(help="Max RAM in MiB (-1 unlimited).")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Set hard limits of a project."""
    values = {
        k: v for k, v in (("instances", instances), ("cores", cores), ("ram", ram)) if v is not None
    }
    if not values:
        raise InvalidInput(reason="give at least one of --instances, --cores, --ram")
    emit(quotas.set_limits(ctx_for(output), values, project), output, COLUMNS)
