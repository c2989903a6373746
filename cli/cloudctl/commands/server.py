"""Instance verbs: ``boot``, ``list``, ``show``, ``delete``, ``start``, ``stop``, ``reboot``,
``console``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit
from cloudctl.domain import validation
from cloudctl.errors import InvalidInput
from cloudctl.services import compute

LIST_COLUMNS = [
    ("NAME", "name"),
    ("STATUS", "status"),
    ("TASK", "task_state"),
    ("POWER", "power_state"),
    ("HOST", "host"),
    ("AZ", "availability_zone"),
    ("FLAVOR", "flavor"),
    ("IMAGE", "image"),
    ("ADDRESSES", "addresses"),
]

Names = Annotated[list[str], typer.Argument(help="Instance names or UUIDs.")]


def boot(
    name: Annotated[str, typer.Argument(help="Instance name (a DNS label).")],
    flavor: Annotated[str, typer.Option(help="Flavor name.")],
    image: Annotated[str, typer.Option(help="Image name.")],
    key: Annotated[str | None, typer.Option(help="Key pair to inject.")] = None,
    az: Annotated[str | None, typer.Option("--az", help="AZ, AZ:HOST or :HOST.")] = None,
    count: Annotated[int, typer.Option(help="Boot NAME-1..NAME-N.")] = 1,
    min_count: Annotated[
        int | None, typer.Option(help="With --count: boot at least M or none (default: all).")
    ] = None,
    user_data: Annotated[Path | None, typer.Option(help="User data file.")] = None,
    prop: Annotated[list[str] | None, typer.Option("--property", help="Metadata k=v.")] = None,
    group: Annotated[str | None, typer.Option(help="Server group to join.")] = None,
    hint: Annotated[
        list[str] | None,
        typer.Option(help="Scheduler hint same_host=NAME[,NAME] or different_host=NAME[,NAME]."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until ACTIVE (or ERROR).")] = True,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Boot instances: schedule, claim, and spawn them through Ansible."""
    data = None
    if user_data is not None:
        try:
            data = user_data.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(reason=f"cannot read user data {user_data}: {exc}") from exc
    req = compute.BootRequest(
        name=name,
        flavor=flavor,
        image=image,
        key_name=key,
        availability_zone=az,
        count=count,
        user_data=data,
        metadata=validation.properties(prop or []),
        group=group,
        hints=validation.properties(hint or []),
        min_count=min_count,
    )
    views = compute.boot(ctx_for(output), req, wait=wait)
    emit(views if count > 1 or output == OutputFormat.table else views[0], output, LIST_COLUMNS)


def list_(
    deleted: Annotated[bool, typer.Option(help="Include deleted instances.")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """List instances."""
    emit(compute.list_instances(ctx_for(output), include_deleted=deleted), output, LIST_COLUMNS)


def show(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Show one instance (with its fault when in ERROR)."""
    emit(compute.show_instance(ctx_for(output), name), output)


def delete(
    names: Names,
    wait: Annotated[bool, typer.Option(help="Wait until deleted.")] = True,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Delete instances: domain, disks, config drive, console log, IP and allocation."""
    ctx = ctx_for(output)
    if not wait:
        for n in names:
            compute.show_instance(ctx, n)
        compute.launch_worker(ctx.settings, ["delete", *names])
        emit(
            [{"name": n, "status": "DELETING"} for n in names],
            output,
            [("NAME", "name"), ("STATUS", "status")],
        )
        return
    emit(compute.delete(ctx, names), output, LIST_COLUMNS)


def start(names: Names, output: OutputOpt = OutputFormat.table) -> None:
    """Power on stopped instances."""
    emit(compute.power(ctx_for(output), names, "start"), output, LIST_COLUMNS)


def stop(names: Names, output: OutputOpt = OutputFormat.table) -> None:
    """Shut instances down (ACPI, then forced after the stop timeout)."""
    emit(compute.power(ctx_for(output), names, "stop"), output, LIST_COLUMNS)


def reboot(
    names: Names,
    hard: Annotated[bool, typer.Option(help="Power-cycle instead of a guest reboot.")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Reboot instances."""
    action = "reboot_hard" if hard else "reboot"
    emit(compute.power(ctx_for(output), names, action), output, LIST_COLUMNS)


def console(
    name: str,
    wait_for: Annotated[str | None, typer.Option(help="Wait until this regex appears.")] = None,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for --wait-for.")] = 60,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Print an instance's serial console log."""
    result = compute.console(
        ctx_for(output), name, wait_for=wait_for, timeout_s=timeout if wait_for else 0
    )
    if output == OutputFormat.table:
        sys.stdout.write(result["log"])
        return
    emit(result, output)


def build_worker(request_id: str, uuids: list[str]) -> None:
    """Internal: finish a ``boot --no-wait`` in a detached process."""
    ctx = ctx_for(OutputFormat.json)
    compute.build_instances(ctx, uuids, request_id)
