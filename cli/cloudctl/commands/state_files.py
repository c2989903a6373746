"""``cloudctl validate`` and ``cloudctl schema``: desired-state files checked, and their schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cloudctl.commands.common import STATE, OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit, error, message
from cloudctl.services import desired
from cloudctl.state import json_schema


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def validate(
    file: Annotated[
        Path,
        typer.Option("--file", "-f", help="A YAML file or a directory of *.yaml/*.yml files."),
    ],
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Do not read cloudctl's database: references are checked only "
            "against the files, and image files are not looked for.",
        ),
    ] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Check desired-state files; every problem as file:line, exit 2 when there is any."""
    ctx = None if offline else ctx_for(output)
    estate, problems = desired.validate_path(ctx, file, check_files=not offline)
    servers = len(estate.desired_servers())
    summary = {
        "valid": not problems,
        "files": len(estate.files),
        "documents": len(estate.documents),
        "servers": servers,
        "problems": [p.to_dict() for p in problems],
    }
    if output != OutputFormat.table:
        emit(summary, output)
    else:
        for problem in problems:
            error(str(problem))
        counts = ", ".join(
            _count(n, noun)
            for n, noun in (
                (len(estate.files), "file"),
                (len(estate.documents), "document"),
                (servers, "server"),
            )
        )
        if not STATE.quiet or problems:
            message(f"{counts}: " + (_count(len(problems), "problem") if problems else "valid"))
    if problems:
        raise typer.Exit(2)


def schema() -> None:
    """Print the JSON Schema of a desired-state document (for editors and CI)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
