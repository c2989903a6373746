"""``cloudctl schedule explain`` and ``cloudctl capacity``."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit
from cloudctl.domain import validation
from cloudctl.services import schedule

app = typer.Typer(help="Ask the scheduler why: explain.", no_args_is_help=True)
EXPLAIN_COLUMNS = [
    ("RANK", "rank"),
    ("HOST", "host"),
    ("RESULT", "result"),
    ("FILTER", "filter"),
    ("REASON", "reason"),
    ("WEIGHT", "weight"),
    ("WEIGHTS", "weights"),
]


@app.command("explain")
def explain(
    flavor: Annotated[str, typer.Option(help="Flavor to place.")],
    image: Annotated[str | None, typer.Option(help="Image (its properties filter).")] = None,
    az: Annotated[str | None, typer.Option("--az", help="AZ, AZ:HOST or :HOST.")] = None,
    group: Annotated[str | None, typer.Option(help="Server group.")] = None,
    hint: Annotated[
        list[str] | None, typer.Option(help="same_host=... / different_host=...")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Explain this host only.")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Every host with the filter that rejected it (and the numbers), or its weights and rank."""
    rows = schedule.explain(
        ctx_for(output),
        flavor,
        image=image,
        availability_zone=az,
        group=group,
        hints=validation.properties(hint or []),
        host=host,
    )
    emit(rows, output, EXPLAIN_COLUMNS)


def capacity(
    flavor: Annotated[str, typer.Option(help="Flavor to count.")],
    az: Annotated[str | None, typer.Option("--az", help="Only this AZ.")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """How many more of a flavor fit, per host and in total."""
    result = schedule.capacity(ctx_for(output), flavor, availability_zone=az)
    if output != OutputFormat.table:
        emit(result, output)
        return
    emit(
        result["hosts"] + [{"host": "TOTAL", "fits": result["total"]}],
        output,
        [("HOST", "host"), ("FITS", "fits")],
        title=f"capacity for {flavor}",
    )
