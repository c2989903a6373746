"""``cloudctl host``: register, discover and manage compute hosts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import typer

from cloudctl.commands.common import HOST_COLUMNS, OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, error, message
from cloudctl.domain import validation
from cloudctl.domain.paths import DEFAULT_BRIDGE, DEFAULT_INSTANCES_PATH
from cloudctl.errors import InvalidInput
from cloudctl.services import hosts
from cloudctl.services import reconcile as reconcile_service
from cloudctl.services.compute import evacuate as evacuate_service

app = typer.Typer(
    help="Compute hosts: add, prepare, discover, list, enable, disable, remove.",
    no_args_is_help=True,
)

#: ``host list``: the shared host columns plus why a host is disabled.
COLUMNS = [*HOST_COLUMNS, ("REASON", "disabled_reason")]
PREPARE_COLUMNS = [
    ("HOST", "name"),
    ("OK", "ok"),
    ("CHANGED", "changed"),
    ("FAILED", "failed"),
    ("SKIPPED", "skipped"),
    ("CHANGED TASKS", "changed_tasks"),
]


@app.command("add")
def add(
    name: str,
    uri: Annotated[str, typer.Option("--uri", help="libvirt URI, e.g. qemu:///system")],
    connection: Annotated[
        str, typer.Option(help="How Ansible reaches it: local or ssh.")
    ] = "local",
    address: Annotated[str | None, typer.Option(help="Address for ssh.")] = None,
    az: Annotated[str, typer.Option("--az", help="Availability zone.")] = "nova",
    virt_type: Annotated[str, typer.Option(help="kvm or qemu (TCG).")] = "kvm",
    cpu_mode: Annotated[
        str, typer.Option(help="none, host-model, host-passthrough, custom.")
    ] = "none",
    instances_path: Annotated[
        str, typer.Option(help="Guest files on the host.")
    ] = DEFAULT_INSTANCES_PATH,
    bridge: Annotated[str, typer.Option(help="Bridge guests' NICs attach to.")] = DEFAULT_BRIDGE,
    python: Annotated[str | None, typer.Option(help="Python interpreter on the host.")] = None,
    ssh_user: Annotated[str | None, typer.Option(help="SSH user.")] = None,
    ssh_port: Annotated[int | None, typer.Option(help="SSH port.")] = None,
    ssh_key: Annotated[str | None, typer.Option(help="SSH private key file.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Host label k=v (repeatable).")] = None,
    discover: Annotated[bool, typer.Option(help="Read capacity now.")] = True,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Register a compute host and discover its capacity through Ansible."""
    if connection not in ("local", "ssh"):
        raise InvalidInput(reason=f"--connection must be local or ssh, not {connection!r}")
    spec = hosts.HostSpec(
        name=name,
        libvirt_uri=uri,
        connection="ssh" if connection == "ssh" else "local",
        address=address,
        availability_zone=az,
        virt_type=virt_type,
        cpu_mode=cpu_mode,
        instances_path=instances_path,
        bridge=bridge,
        python_interpreter=python,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        ssh_private_key=ssh_key,
        labels=validation.properties(label or []),
    )
    emit(hosts.add_host(ctx_for(output), spec, discover=discover), output)


@app.command("discover")
def discover(
    name: Annotated[str | None, typer.Argument(help="Host to discover.")] = None,
    all_hosts: Annotated[bool, typer.Option("--all", help="Discover every host.")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Refresh capacity, hypervisor facts and heartbeat of hosts (one play for all)."""
    if (name is None) == (not all_hosts):
        raise InvalidInput(reason="give a host NAME or --all")
    emit(
        hosts.discover_hosts(ctx_for(output), None if all_hosts else [name or ""]), output, COLUMNS
    )


@app.command("prepare")
def prepare(
    name: Annotated[str, typer.Argument(help="Host to prepare.")],
    check: Annotated[
        bool, typer.Option("--check", help="Report what would change; change nothing.")
    ] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Apply the libvirt_host role (packages, qemu.conf, directories, daemons, bridge) to a host.

    Idempotent: a run on a prepared host changes nothing. Then the host's facts are rediscovered
    (not with --check). Exit 1, with one error line, when the role failed on the host.
    """
    reports = hosts.prepare_hosts(ctx_for(output), [name], check=check)
    emit(reports, output, PREPARE_COLUMNS)
    failed = [r for r in reports if r["error"] is not None]
    if failed:
        error(f"prepare of host {failed[0]['name']!r} failed: {failed[0]['error']}")
        raise typer.Exit(1)


@app.command("list")
def list_(output: OutputOpt = OutputFormat.table) -> None:
    """List hosts with their state and usage from the ledger."""
    ctx = ctx_for(output)
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        rows = [
            hosts.host_view(session, h, now, ctx.settings.service_down_time_s)
            for h in hosts.list_hosts(session)
        ]
    emit(rows, output, COLUMNS)


@app.command("show")
def show(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Show one host."""
    ctx = ctx_for(output)
    with ctx.db.unit_of_work() as session:
        view = hosts.host_view(
            session, hosts.get_host(session, name), ctx.clock(), ctx.settings.service_down_time_s
        )
    emit(view, output)


@app.command("enable")
def enable(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Let the scheduler place guests on a host again."""
    emit(hosts.set_enabled(ctx_for(output), name, True), output)


@app.command("disable")
def disable(
    name: str,
    reason: Annotated[str | None, typer.Option(help="Why (shown in host list).")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Stop scheduling guests on a host (its guests keep running)."""
    emit(hosts.set_enabled(ctx_for(output), name, False, reason), output)


@app.command("remove")
def remove(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Unregister a host that holds no guest, allocation or move any more (soft delete)."""
    emit(hosts.remove_host(ctx_for(output), name), output)


def _guest_progress(output: OutputFormat) -> Callable[[int, int, Mapping[str, Any]], None] | None:
    if output != OutputFormat.table:
        return None

    def show(done: int, total: int, outcome: Mapping[str, Any]) -> None:
        width = 20
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        where = f"-> {outcome['host']}" if outcome["result"] == "moved" else outcome["reason"]
        message(f"[{bar}] {done}/{total} {outcome['name']}: {outcome['result']} {where}")

    return show


def _summarise(summary: Mapping[str, Any], output: OutputFormat) -> None:
    if output == OutputFormat.table:
        columns = [("NAME", "name"), ("RESULT", "result"), ("HOST", "host"), ("REASON", "reason")]
        emit(list(summary["guests"]), output, columns)
        message(f"{summary['host']}: {summary['moved']} moved, {summary['failed']} failed")
    else:
        emit(dict(summary), output)
    if summary["failed"]:
        raise typer.Exit(1)


@app.command("evacuate")
def evacuate(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Rebuild every guest of a down host elsewhere; exit 1 if any failed."""
    ctx = ctx_for(output)
    _summarise(evacuate_service.host_evacuate(ctx, name, on_guest=_guest_progress(output)), output)


@app.command("drain")
def drain(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Disable a host (reason "draining") and live-migrate its guests off; exit 1 if any failed."""
    ctx = ctx_for(output)
    _summarise(evacuate_service.drain(ctx, name, on_guest=_guest_progress(output)), output)


@app.command("events")
def events(
    name: str,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """What reconcile saw of or did to a host: up/down, reaped domains, removed files."""
    ctx = ctx_for(output)
    with ctx.db.unit_of_work() as session:
        hosts.get_host(session, name)
    columns = [("TIME", "time"), ("EVENT", "event"), ("MESSAGE", "message")]
    emit(reconcile_service.host_events(ctx, name, limit), output, columns)
