"""What every command shares: the app state, ``-o``, and building a service context."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from cloudctl.console import ConsoleProgress, OutputFormat
from cloudctl.db.session import Database
from cloudctl.executor.ansible import AnsibleExecutor
from cloudctl.executor.base import Executor
from cloudctl.services.context import Context
from cloudctl.services.settings import load_settings

HOST_COLUMNS = [
    ("NAME", "name"),
    ("STATE", "state"),
    ("STATUS", "status"),
    ("AZ", "availability_zone"),
    ("VCPUS", "vcpus"),
    ("VCPUS USED", "vcpus_used"),
    ("RAM MB", "memory_mb"),
    ("RAM USED", "memory_mb_used"),
    ("DISK GB", "local_gb"),
    ("VMS", "running_vms"),
    ("VIRT", "virt_type"),
]

OutputOpt = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="Output format: table, json or yaml.")
]


@dataclass
class AppState:
    """Global options, set by the main callback."""

    db_url: str | None = None
    verbose: bool = False
    quiet: bool = False
    wait_lock: float | None = None
    _ctx: Context | None = None

    def reset(
        self, *, db_url: str | None, verbose: bool, quiet: bool, wait_lock: float | None = None
    ) -> None:
        """Start an invocation afresh (several may run in one process, e.g. in tests)."""
        if self._ctx is not None:
            self._ctx.db.dispose()
        self.db_url, self.verbose, self.quiet, self._ctx = db_url, verbose, quiet, None
        self.wait_lock = wait_lock

    def context(self, *, quiet: bool | None = None) -> Context:
        """The service context for this invocation (schema upgraded on first use)."""
        if self._ctx is None:
            settings = load_settings(db_url=self.db_url)
            if self.wait_lock is not None:
                settings = replace(settings, wait_lock_s=self.wait_lock)
            db = Database(settings.db_url)
            db.ensure_schema()

            def executor() -> Executor:
                return make_executor(settings.runs_dir)

            self._ctx = Context(
                settings=settings,
                db=db,
                executor_factory=executor,
                progress=ConsoleProgress(quiet=self.quiet if quiet is None else quiet),
            )
        return self._ctx


def make_executor(runs_dir: Path, forks: int = 10) -> Executor:
    """The Ansible executor (looked up at call time: tests swap ``AnsibleExecutor``)."""
    return AnsibleExecutor(runs_dir=runs_dir, forks=forks)


STATE = AppState()


def ctx_for(output: OutputFormat) -> Context:
    """A context whose progress goes quiet when the output is for machines... unless -v."""
    quiet = STATE.quiet or (output != OutputFormat.table and not STATE.verbose)
    return STATE.context(quiet=quiet)
