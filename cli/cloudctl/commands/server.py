"""Instance verbs: ``boot``, ``list``, ``show``, ``delete``, ``restore``, ``start``, ``stop``,
``reboot``, ``pause``, ``unpause``, ``suspend``, ``resume``, ``lock``, ``unlock``, ``rebuild``,
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
from cloudctl.services.compute import evacuate as evacuate_service
from cloudctl.services.compute import live_migrate as live_service
from cloudctl.services.compute import migrate as migrate_service

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
            with user_data.open("rb") as fh:
                raw = fh.read(validation.MAX_USER_DATA + 1)  # never a huge file whole
        except OSError as exc:
            raise InvalidInput(reason=f"cannot read user data {user_data}: {exc}") from exc
        data = validation.user_data_bytes(raw)
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
    force: Annotated[
        bool, typer.Option(help="Delete now, even when soft delete is on or already done.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait until deleted.")] = True,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Delete instances: domain, disks, config drive, console log, IP and allocation.

    With reclaim_instance_interval set, a soft delete: powered off and kept until restore or
    the interval ends.
    """
    ctx = ctx_for(output)
    if not wait:
        for n in names:
            compute.show_instance(ctx, n)
        compute.launch_worker(ctx.settings, ["delete", *names, *(["--force"] if force else [])])
        emit(
            [{"name": n, "status": "DELETING"} for n in names],
            output,
            [("NAME", "name"), ("STATUS", "status")],
        )
        return
    emit(compute.delete(ctx, names, force=force), output, LIST_COLUMNS)


def restore(names: Names, output: OutputOpt = OutputFormat.table) -> None:
    """Bring soft-deleted instances back (powered on)."""
    emit(compute.restore(ctx_for(output), names), output, LIST_COLUMNS)


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


def pause(names: Names, output: OutputOpt = OutputFormat.table) -> None:
    """Pause instances: their vCPUs stop, their memory stays in the host's RAM."""
    emit(compute.power(ctx_for(output), names, "pause"), output, LIST_COLUMNS)


def unpause(names: Names, output: OutputOpt = OutputFormat.table) -> None:
    """Unpause paused instances."""
    emit(compute.power(ctx_for(output), names, "unpause"), output, LIST_COLUMNS)


def suspend(names: Names, output: OutputOpt = OutputFormat.table) -> None:
    """Suspend instances: memory saved to disk on the host (managed save), then stopped."""
    emit(compute.power(ctx_for(output), names, "suspend"), output, LIST_COLUMNS)


def resume(names: Names, output: OutputOpt = OutputFormat.table) -> None:
    """Resume suspended instances from their saved memory."""
    emit(compute.power(ctx_for(output), names, "resume"), output, LIST_COLUMNS)


def lock(
    names: Names,
    reason: Annotated[str | None, typer.Option(help="Why (shown when refusing).")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Lock instances: every action but unlock is refused until then."""
    emit(compute.lock(ctx_for(output), names, reason=reason), output, LIST_COLUMNS)


def unlock(names: Names, output: OutputOpt = OutputFormat.table) -> None:
    """Unlock instances."""
    emit(compute.unlock(ctx_for(output), names), output, LIST_COLUMNS)


def rebuild(
    name: str,
    image: Annotated[str | None, typer.Option(help="Image (default: the current one).")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Rebuild an instance from an image: new disks, same UUID, IP, flavor and host."""
    emit(compute.rebuild(ctx_for(output), name, image=image), output)


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


def build_worker(
    request_id: str,
    uuids: list[str],
    lease: Annotated[str | None, typer.Option(help="The parent's command lease.")] = None,
) -> None:
    """Internal: finish a ``boot --no-wait`` in a detached process."""
    ctx = ctx_for(OutputFormat.json)
    compute.build_in_worker(ctx, request_id, uuids, lease)


def migrate(
    name: str,
    host: Annotated[str | None, typer.Option(help="Destination (still capacity-checked).")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Cold-migrate an instance; it waits in VERIFY_RESIZE for resize-confirm or -revert."""
    emit(migrate_service.migrate(ctx_for(output), name, host=host), output)


def resize(
    name: str,
    flavor: Annotated[str, typer.Option(help="The new flavor.")],
    host: Annotated[str | None, typer.Option(help="Destination (still capacity-checked).")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Resize an instance to another flavor; it waits in VERIFY_RESIZE."""
    emit(migrate_service.resize(ctx_for(output), name, flavor, host=host), output)


def resize_confirm(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Keep a resize or cold migration: the source's files and allocation are freed."""
    emit(migrate_service.confirm_resize(ctx_for(output), name), output)


def resize_revert(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Undo a resize or cold migration: back to the old host and flavor."""
    emit(migrate_service.revert_resize(ctx_for(output), name), output)


def live_migrate(
    name: str,
    host: Annotated[str | None, typer.Option(help="Destination (still capacity-checked).")] = None,
    block_migrate: Annotated[
        str, typer.Option(help="auto (when storage is not shared), yes or no.")
    ] = "auto",
    wait: Annotated[bool, typer.Option(help="Wait until it completes (or rolls back).")] = True,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Live-migrate a running instance (progress in `migration show`)."""
    view = live_service.live_migrate(
        ctx_for(output), name, host=host, block_migrate=block_migrate, wait=wait
    )
    emit(view, output)


def evacuate(
    name: str,
    host: Annotated[str | None, typer.Option(help="Destination (still capacity-checked).")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Rebuild an instance of a down host elsewhere (refused while its host is up)."""
    emit(evacuate_service.evacuate(ctx_for(output), name, host=host), output)


def live_migrate_worker(
    request_id: str,
    migration: str,
    host: Annotated[str | None, typer.Option()] = None,
    block_migrate: Annotated[str, typer.Option()] = "auto",
    lease: Annotated[str | None, typer.Option(help="The parent's command lease.")] = None,
) -> None:
    """Internal: run a ``live-migrate --no-wait`` in a detached process."""
    ctx = ctx_for(OutputFormat.json)
    live_service.live_migrate_in_worker(
        ctx, request_id, migration, lease, host=host, block_migrate=block_migrate
    )
