"""``cloudctl flavor``: hardware templates."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, message
from cloudctl.domain import validation
from cloudctl.services import flavors

app = typer.Typer(help="Flavors: create, list, show, delete.", no_args_is_help=True)
COLUMNS = [
    ("NAME", "name"),
    ("VCPUS", "vcpus"),
    ("RAM", "ram"),
    ("DISK", "disk"),
    ("EPHEMERAL", "ephemeral"),
    ("SWAP", "swap"),
    ("PROPERTIES", "properties"),
]


@app.command("create")
def create(
    name: str,
    vcpus: Annotated[int, typer.Option(help="Virtual CPUs.")],
    ram: Annotated[int, typer.Option(help="Memory in MiB.")],
    disk: Annotated[int, typer.Option(help="Root disk in GiB (0 = image size).")],
    ephemeral: Annotated[int, typer.Option(help="Ephemeral disk in GiB.")] = 0,
    swap: Annotated[int, typer.Option(help="Swap disk in MiB.")] = 0,
    prop: Annotated[list[str] | None, typer.Option("--property", help="Extra spec k=v.")] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Create a flavor."""
    view = flavors.create_flavor(
        ctx_for(output),
        name,
        vcpus=vcpus,
        memory_mb=ram,
        root_gb=disk,
        ephemeral_gb=ephemeral,
        swap_mb=swap,
        extra_specs=validation.properties(prop or []),
        description=description,
    )
    emit(view, output)


@app.command("list")
def list_(output: OutputOpt = OutputFormat.table) -> None:
    """List flavors."""
    emit(flavors.list_flavors(ctx_for(output)), output, COLUMNS)


@app.command("show")
def show(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Show one flavor."""
    emit(flavors.show_flavor(ctx_for(output), name), output)


@app.command("delete")
def delete(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Delete a flavor no instance uses."""
    flavors.delete_flavor(ctx_for(output), name)
    if output == OutputFormat.table:
        message(f"flavor {name} deleted")
    else:
        emit({"name": name, "deleted": True}, output)
