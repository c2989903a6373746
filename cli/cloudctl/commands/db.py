"""``cloudctl db``: schema migrations."""

from __future__ import annotations

import typer

from cloudctl.commands.common import STATE, OutputOpt
from cloudctl.console import OutputFormat, emit
from cloudctl.db.session import Database
from cloudctl.services.settings import load_settings

app = typer.Typer(help="Database schema: upgrade, version.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(output: OutputOpt = OutputFormat.table) -> None:
    """Apply Alembic migrations up to the newest revision."""
    db = Database(load_settings(db_url=STATE.db_url).db_url)
    db.upgrade()
    emit({"revision": db.current_revision(), "head": db.head_revision()}, output)


@app.command("version")
def version(output: OutputOpt = OutputFormat.table) -> None:
    """Show the schema revision."""
    db = Database(load_settings(db_url=STATE.db_url).db_url)
    emit({"revision": db.current_revision(), "head": db.head_revision()}, output)
