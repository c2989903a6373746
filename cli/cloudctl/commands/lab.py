"""``cloudctl lab``: several real compute hosts on this machine, reached like remote ones."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudctl.commands.common import HOST_COLUMNS, OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit
from cloudctl.errors import InvalidInput
from cloudctl.services import lab
from cloudctl.services.lab_machine import LabSpec

app = typer.Typer(
    help="A lab of N real libvirt hosts in namespaces: up, status, down.", no_args_is_help=True
)
STATUS_COLUMNS = [
    ("HOST", "name"),
    ("HEALTHY", "healthy"),
    ("STATE", "state"),
    ("AZ", "availability_zone"),
    ("ADDRESS", "address"),
    ("VMS", "running_vms"),
    ("PROBLEMS", "problems"),
]


@app.command("up")
def up(
    hosts: Annotated[int, typer.Option(help="Number of hosts (lab-1..lab-N).")] = 3,
    azs: Annotated[int, typer.Option(help="Spread hosts over az1..azK.")] = 1,
    virt_type: Annotated[str, typer.Option(help="qemu (TCG) or kvm.")] = "qemu",
    connection: Annotated[str, typer.Option(help="ssh (like remote hosts) or local.")] = "ssh",
    storage: Annotated[str, typer.Option(help="shared (like NFS) or local per host.")] = "shared",
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Create the lab, or reconcile it (restart what died); then register and discover it."""
    for opt, value, choices in (
        ("--virt-type", virt_type, ("qemu", "kvm")),
        ("--connection", connection, ("ssh", "local")),
        ("--storage", storage, ("shared", "local")),
    ):
        if value not in choices:
            raise InvalidInput(reason=f"{opt} must be one of {', '.join(choices)}")
    if not 1 <= hosts <= 16 or not 1 <= azs <= hosts:
        raise InvalidInput(reason="--hosts must be 1..16 and --azs 1..hosts")
    spec = LabSpec(
        hosts=hosts,
        azs=azs,
        virt_type="kvm" if virt_type == "kvm" else "qemu",
        connection="local" if connection == "local" else "ssh",
        storage="local" if storage == "local" else "shared",
    )
    emit(lab.lab_up(ctx_for(output), spec), output, HOST_COLUMNS)


@app.command("status")
def status(output: OutputOpt = OutputFormat.table) -> None:
    """Health of every lab host; exit 1 when one is unhealthy."""
    rows = lab.lab_status(ctx_for(output))
    emit(rows, output, STATUS_COLUMNS)
    if any(not r["healthy"] for r in rows):
        raise typer.Exit(1)


@app.command("down")
def down(output: OutputOpt = OutputFormat.table) -> None:
    """Destroy the lab's guests, daemons, namespaces, links and mounts; unregister its hosts."""
    emit(lab.lab_down(ctx_for(output)), output)
