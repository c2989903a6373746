"""``cloudctl adopt``: bring a libvirt guest cloudctl did not create into its books."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudctl.commands.common import OutputOpt, ctx_for
from cloudctl.console import OutputFormat, emit
from cloudctl.services import adopt as service


def adopt(
    host: Annotated[str, typer.Argument(help="The registered host the domain is defined on.")],
    domain: Annotated[str, typer.Argument(help="The libvirt domain name.")],
    name: Annotated[
        str | None, typer.Option(help="Instance name (default: the domain name).")
    ] = None,
    flavor: Annotated[
        str | None,
        typer.Option(help="Flavor to book it as (default: the one flavor of its size)."),
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Adopt an existing libvirt guest of HOST into cloudctl's books.

    The domain is read on its host (read-only); the instance gets its UUID and its allocation
    on HOST (no capacity check: the guest is there already), and an adopt action. Without
    --flavor: the one flavor whose vCPUs and RAM equal the guest's and whose root disk holds
    the guest's first disk.
    """
    emit(service.adopt(ctx_for(output), host, domain, name=name, flavor=flavor), output)
