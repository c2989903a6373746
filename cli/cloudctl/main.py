"""The ``cloudctl`` entry point: wires the commands and maps errors to exit codes.

Exit codes: 0 ok, 1 the operation failed, 2 usage or validation error. Errors are one line on
stderr; the traceback only with ``-v``.
"""

from __future__ import annotations

import gc
import sys
import traceback
from typing import Annotated

import typer

from cloudctl import __version__
from cloudctl.commands import (
    action,
    adopt_cmd,
    db,
    flavor,
    gitops_cmd,
    host,
    image,
    keypair,
    lab,
    migration,
    quota,
    reconcile,
    schedule,
    server,
    server_group,
    snapshot,
    state_cmd,
    state_files,
)
from cloudctl.commands.common import STATE
from cloudctl.console import error
from cloudctl.errors import CloudctlError

app = typer.Typer(
    name="cloudctl",
    help="A small Nova for KVM hosts: schedule, claim and run guests through Ansible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cloudctl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    db_url: Annotated[
        str | None, typer.Option("--db", envvar="CLOUDCTL_DB", help="SQLAlchemy URL of the state.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks, progress.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """cloudctl: Nova's scheduler, ledger and action history, with Ansible as the hands."""
    STATE.reset(db_url=db_url, verbose=verbose, quiet=quiet)


app.command("boot")(server.boot)
app.command("list")(server.list_)
app.command("show")(server.show)
app.command("delete")(server.delete)
app.command("start")(server.start)
app.command("stop")(server.stop)
app.command("reboot")(server.reboot)
app.command("pause")(server.pause)
app.command("unpause")(server.unpause)
app.command("suspend")(server.suspend)
app.command("resume")(server.resume)
app.command("lock")(server.lock)
app.command("unlock")(server.unlock)
app.command("restore")(server.restore)
app.command("rebuild")(server.rebuild)
app.command("console")(server.console)
app.command("_build", hidden=True)(server.build_worker)
app.command("migrate")(server.migrate)
app.command("resize")(server.resize)
app.command("resize-confirm")(server.resize_confirm)
app.command("resize-revert")(server.resize_revert)
app.command("live-migrate")(server.live_migrate)
app.command("evacuate")(server.evacuate)
app.command("_live_migrate", hidden=True)(server.live_migrate_worker)
app.add_typer(migration.app, name="migration")
app.add_typer(host.app, name="host")
app.add_typer(flavor.app, name="flavor")
app.add_typer(image.app, name="image")
app.add_typer(snapshot.app, name="snapshot")
app.add_typer(keypair.app, name="keypair")
app.add_typer(action.app, name="action")
app.add_typer(server_group.app, name="server-group")
app.add_typer(quota.app, name="quota")
app.add_typer(schedule.app, name="schedule")
app.command("capacity")(schedule.capacity)
app.command("verify")(reconcile.verify)
app.command("reconcile")(reconcile.reconcile)
app.command("agent")(reconcile.agent)
app.command("adopt")(adopt_cmd.adopt)
app.add_typer(lab.app, name="lab")
app.add_typer(db.app, name="db")
app.add_typer(state_cmd.app, name="state")
app.command("validate")(state_files.validate)
app.command("schema")(state_files.schema)
app.command("plan")(gitops_cmd.plan)
app.command("apply")(gitops_cmd.apply)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script calls ``sys.exit`` on it).

    Typer's standalone mode handles usage errors (exit 2), ``--help`` and Ctrl-C; everything
    cloudctl raises on purpose is a :class:`CloudctlError` with its own exit code.
    """
    try:
        app(args=argv, prog_name="cloudctl")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except CloudctlError as exc:
        if STATE.verbose:
            traceback.print_exc()
        error(exc.message.splitlines()[0] if exc.message else type(exc).__name__)
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as exc:  # the last resort: one line, traceback only with -v
        if STATE.verbose:
            traceback.print_exc()
        error(f"{type(exc).__name__}: {exc}".splitlines()[0])
        return 1
    return 0


def entry() -> None:
    """Console-script entry."""
    code = run()
    # The collector would otherwise walk every object left at interpreter exit: seconds after
    # an apply or a large plan, measured by benchmarks/apply.py.
    gc.freeze()
    sys.exit(code)
