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
from cloudctl.domain.secrets import mask_passwords
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
    wait_lock: Annotated[
        float | None,
        typer.Option(
            "--wait-lock",
            metavar="SECONDS",
            min=0,
            envvar="CLOUDCTL_WAIT_LOCK",
            help="Wait up to SECONDS for an instance another command holds, instead of "
            "refusing at once (default: the wait_lock_s setting, 0).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """cloudctl: Nova's scheduler, ledger and action history, with Ansible as the hands."""
    STATE.reset(db_url=db_url, verbose=verbose, quiet=quiet, wait_lock=wait_lock)


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
    cloudctl raises on purpose is a :class:`CloudctlError` with its own exit code. A password
    in a URL (a driver's message may quote the database URL) is shown as ``***``.
    """
    try:
        app(args=lift_global_options(sys.argv[1:] if argv is None else argv), prog_name="cloudctl")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except CloudctlError as exc:
        _traceback()
        error(_one_line(exc.message or type(exc).__name__))
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as exc:  # the last resort: one line, traceback only with -v
        _traceback()
        error(_one_line(f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


#: Global options also accepted after the command (``cloudctl stop web --wait-lock 30``).
_LIFTED = ("--wait-lock",)


def lift_global_options(argv: list[str]) -> list[str]:
    """Move the global options of :data:`_LIFTED` written after the command to the front.

    Only before a ``--`` (what follows it is an argument, whatever it looks like).
    """
    end = argv.index("--") if "--" in argv else len(argv)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < end:
        arg = argv[i]
        if arg in _LIFTED and i + 1 < end:
            front += argv[i : i + 2]
            i += 2
            continue
        if any(arg.startswith(f"{opt}=") for opt in _LIFTED):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest + argv[end:]


def _one_line(text: str) -> str:
    lines = text.splitlines()
    return mask_passwords(lines[0] if lines else text)


def _traceback() -> None:
    if STATE.verbose:
        sys.stderr.write(mask_passwords(traceback.format_exc()))


def entry() -> None:
    """Console-script entry."""
    code = run()
    # The collector would otherwise walk every object left at interpreter exit: seconds after
    # an apply or a large plan, measured by benchmarks/apply.py.
    gc.freeze()
    sys.exit(code)
