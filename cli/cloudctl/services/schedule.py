"""``schedule explain`` and ``capacity``: the scheduler's reasoning, with nothing claimed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudctl.scheduler.pipeline import capacity as fit_capacity
from cloudctl.scheduler.pipeline import explain as explain_hosts
from cloudctl.services import hosts
from cloudctl.services.compute.boot import (
    build_request_spec,
    host_states,
    make_scheduler,
    parse_az,
)
from cloudctl.services.context import Context
from cloudctl.services.flavors import get_flavor
from cloudctl.services.images import get_image


def explain(
    ctx: Context,
    flavor: str,
    *,
    image: str | None = None,
    availability_zone: str | None = None,
    group: str | None = None,
    hints: Mapping[str, str] | None = None,
    host: str | None = None,
) -> list[dict[str, Any]]:
    """Every host: the filter that rejected it with the numbers, or its weights and rank."""
    az, forced = parse_az(availability_zone)
    with ctx.db.unit_of_work() as session:
        spec = build_request_spec(
            session,
            ctx.settings.project_id,
            get_flavor(session, flavor),
            get_image(session, image) if image else None,
            availability_zone=az,
            force_host=forced,
            group=group,
            hints=hints,
        )
        rows = hosts.list_hosts(session)
        if host is not None:
            rows = [hosts.get_host(session, host)]
        states = host_states(session, rows, ctx.clock(), ctx.settings.service_down_time_s)
    return [
        {
            "host": e.host,
            "result": "pass" if e.passed else "rejected",
            "filter": e.rejected_by,
            "reason": e.reason,
            "weights": {k: round(v, 6) for k, v in e.weights.items()},
            "weight": None if e.weight is None else round(e.weight, 6),
            "rank": e.rank,
        }
        for e in explain_hosts(make_scheduler(ctx), states, spec)
    ]


def capacity(ctx: Context, flavor: str, *, availability_zone: str | None = None) -> dict[str, Any]:
    """How many more of ``flavor`` fit, per host and in total (Ganeti's hspace)."""
    az, forced = parse_az(availability_zone)
    with ctx.db.unit_of_work() as session:
        spec = build_request_spec(
            session,
            ctx.settings.project_id,
            get_flavor(session, flavor),
            None,
            availability_zone=az,
            force_host=forced,
        )
        states = host_states(
            session, hosts.list_hosts(session), ctx.clock(), ctx.settings.service_down_time_s
        )
    fits = fit_capacity(make_scheduler(ctx), states, spec)
    return {
        "flavor": flavor,
        "availability_zone": az,
        "total": sum(fits.values()),
        "hosts": [{"host": name, "fits": n} for name, n in sorted(fits.items())],
    }
