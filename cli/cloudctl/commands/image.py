"""``cloudctl image``: register images, build the tiny test image, images from snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, message
from cloudctl.domain import validation
from cloudctl.services import images
from cloudctl.services.compute import snapshot

app = typer.Typer(
    help="Images: add, create-tiny, create-from, list, show, delete.", no_args_is_help=True
)
COLUMNS = [
    ("NAME", "name"),
    ("ID", "id"),
    ("FORMAT", "disk_format"),
    ("SIZE", "size"),
    ("KERNEL", "kernel"),
    ("STATUS", "status"),
]


@app.command("add")
def add(
    name: str,
    file: Annotated[Path | None, typer.Option(help="Disk image (qcow2 or raw).")] = None,
    kernel: Annotated[Path | None, typer.Option(help="Kernel for direct boot.")] = None,
    initrd: Annotated[Path | None, typer.Option(help="Initrd for direct boot.")] = None,
    cmdline: Annotated[str | None, typer.Option(help="Kernel command line.")] = None,
    min_ram: Annotated[int, typer.Option(help="Minimum RAM (MiB).")] = 0,
    min_disk: Annotated[int, typer.Option(help="Minimum disk (GiB).")] = 0,
    prop: Annotated[list[str] | None, typer.Option("--property", help="Property k=v.")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Register an image from a disk file and/or kernel + initrd."""
    view = images.add_image(
        ctx_for(output),
        name,
        file=file,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        properties=validation.properties(prop or []),
        min_ram_mb=min_ram,
        min_disk_gb=min_disk,
    )
    emit(view, output)


@app.command("create-tiny")
def create_tiny(
    name: Annotated[str, typer.Argument(help="Image name.")] = "tiny",
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Build (from Debian packages, cached) and register a kernel + busybox test image."""
    emit(images.create_tiny(ctx_for(output), name, force=force), output)


@app.command("create-from")
def create_from(
    server: Annotated[str, typer.Argument(help="Instance name or UUID.")],
    snap: Annotated[str, typer.Argument(help="Snapshot of the instance.")],
    name: Annotated[str, typer.Argument(help="Name of the new image.")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Register a bootable image from a snapshot: the root disk as it was then, flattened."""
    emit(snapshot.create_image(ctx_for(output), server, snap, name), output)


@app.command("list")
def list_(output: OutputOpt = OutputFormat.table) -> None:
    """List images."""
    emit(images.list_images(ctx_for(output)), output, COLUMNS)


@app.command("show")
def show(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Show one image."""
    emit(images.show_image(ctx_for(output), name), output)


@app.command("delete")
def delete(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Delete an image no instance uses."""
    images.delete_image(ctx_for(output), name)
    if output == OutputFormat.table:
        message(f"image {name} deleted")
    else:
        emit({"name": name, "deleted": True}, output)
