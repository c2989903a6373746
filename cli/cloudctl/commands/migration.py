"""``cloudctl migration``: instances' moves (cold, resize, live, evacuation) and their progress."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit
from cloudctl.services.compute import moves

app = typer.Typer(help="Migrations: list and show.", no_args_is_help=True)

COLUMNS = [
    ("ID", "id"),
    ("INSTANCE", "instance"),
    ("TYPE", "type"),
    ("STATUS", "status"),
    ("SOURCE", "source_host"),
    ("DEST", "dest_host"),
    ("OLD FLAVOR", "old_flavor"),
    ("NEW FLAVOR", "new_flavor"),
    ("MEM %", "memory_progress"),
    ("DISK %", "disk_progress"),
    ("UPDATED", "updated_at"),
]


@app.command("list")
def list_(
    instance: Annotated[str | None, typer.Option(help="Only this instance's.")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """List migrations, oldest first."""
    emit(moves.list_migrations(ctx_for(output), instance), output, COLUMNS)


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(metavar="ID", help="Migration id or UUID.")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Show one migration, with its progress."""
    emit(moves.show_migration(ctx_for(output), ref), output)
