"""``cloudctl snapshot``: take, list, revert to and delete instance snapshots."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit
from cloudctl.services.compute import snapshot

app = typer.Typer(help="Instance snapshots: create, list, revert, delete.", no_args_is_help=True)
COLUMNS = [
    ("NAME", "name"),
    ("KIND", "kind"),
    ("STATUS", "status"),
    ("STATE", "state"),
    ("SIZE", "size"),
    ("CREATED", "created_at"),
    ("DESCRIPTION", "description"),
]
Server = Annotated[str, typer.Argument(help="Instance name or UUID.")]
Snap = Annotated[str, typer.Argument(help="Snapshot name.")]


@app.command("create")
def create(
    name: Server,
    snap: Snap,
    disk_only: Annotated[
        bool, typer.Option(help="External disk-only snapshot: an overlay next to the root disk.")
    ] = False,
    quiesce: Annotated[
        bool, typer.Option(help="Freeze the guest's filesystems (needs its guest agent).")
    ] = False,
    description: Annotated[str | None, typer.Option(help="One line about it.")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Take a snapshot: internal with the memory state of a running guest, or --disk-only."""
    view = snapshot.create_snapshot(
        ctx_for(output),
        name,
        snap,
        disk_only=disk_only,
        quiesce=quiesce,
        description=description,
    )
    emit(view, output)


@app.command("list")
def list_(
    name: Server,
    deleted: Annotated[
        bool, typer.Option(help="Include deleted snapshots (and those of a deleted instance).")
    ] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """List an instance's snapshots."""
    cols = [*COLUMNS, ("DELETED", "deleted_at")] if deleted else COLUMNS
    emit(snapshot.list_snapshots(ctx_for(output), name, include_deleted=deleted), output, cols)


@app.command("revert")
def revert(name: Server, snap: Snap, output: OutputOpt = OutputFormat.table) -> None:
    """Bring the instance back to a snapshot (a disk-only one: the newest only)."""
    emit(snapshot.revert_snapshot(ctx_for(output), name, snap), output)


@app.command("delete")
def delete(
    name: Server,
    snaps: Annotated[list[str], typer.Argument(help="Snapshot names.")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Delete snapshots (a disk-only one is committed back into the disk below it)."""
    emit(snapshot.delete_snapshots(ctx_for(output), name, snaps), output, COLUMNS)
