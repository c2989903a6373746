"""``cloudctl server-group``: affinity and anti-affinity between instances."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, message
from cloudctl.services import server_groups

app = typer.Typer(help="Server groups: create, list, show, delete.", no_args_is_help=True)
COLUMNS = [
    ("NAME", "name"),
    ("POLICY", "policy"),
    ("MAX/HOST", "max_per_host"),
    ("MEMBERS", "members"),
    ("HOSTS", "hosts"),
]


@app.command("create")
def create(
    name: str,
    policy: Annotated[
        str, typer.Option(help="affinity, anti-affinity, soft-affinity or soft-anti-affinity.")
    ],
    max_per_host: Annotated[
        int | None, typer.Option(help="Anti-affinity: at most N members per host.")
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Create a server group; boot into it with ``boot --group NAME``."""
    emit(server_groups.create_group(ctx_for(output), name, policy, max_per_host), output)


@app.command("list")
def list_(output: OutputOpt = OutputFormat.table) -> None:
    """List server groups with their members and hosts."""
    emit(server_groups.list_groups(ctx_for(output)), output, COLUMNS)


@app.command("show")
def show(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Show one server group."""
    emit(server_groups.show_group(ctx_for(output), name), output)


@app.command("delete")
def delete(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Delete a server group without live members."""
    server_groups.delete_group(ctx_for(output), name)
    if output == OutputFormat.table:
        message(f"server group {name} deleted")
    else:
        emit({"name": name, "deleted": True}, output)
