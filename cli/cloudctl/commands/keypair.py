"""``cloudctl keypair``: SSH public keys for guests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, message
from cloudctl.domain import validation
from cloudctl.errors import InvalidInput
from cloudctl.services import keypairs

app = typer.Typer(help="Key pairs: add, list, delete.", no_args_is_help=True)
COLUMNS = [("NAME", "name"), ("FINGERPRINT", "fingerprint"), ("TYPE", "type")]


@app.command("add")
def add(
    name: str,
    public_key: Annotated[Path, typer.Option("--public-key", help="An OpenSSH .pub file.")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Register a public key."""
    try:
        with public_key.open("rb") as fh:
            raw = fh.read(validation.MAX_PUBLIC_KEY + 1)  # never a huge file whole
    except OSError as exc:
        raise InvalidInput(reason=f"cannot read {public_key}: {exc.strerror}") from exc
    if len(raw) > validation.MAX_PUBLIC_KEY:
        raise InvalidInput(
            reason=f"{public_key} is larger than {validation.MAX_PUBLIC_KEY} bytes: "
            "not one public key"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(reason=f"{public_key} is not UTF-8 text: {exc.reason}") from exc
    emit(keypairs.add_keypair(ctx_for(output), name, text), output)


@app.command("list")
def list_(output: OutputOpt = OutputFormat.table) -> None:
    """List key pairs."""
    emit(keypairs.list_keypairs(ctx_for(output)), output, COLUMNS)


@app.command("delete")
def delete(name: str, output: OutputOpt = OutputFormat.table) -> None:
    """Delete a key pair."""
    keypairs.delete_keypair(ctx_for(output), name)
    if output == OutputFormat.table:
        message(f"key pair {name} deleted")
    else:
        emit({"name": name, "deleted": True}, output)
