"""AggregateInstanceExtraSpecsFilter: flavor extra specs against the host's labels.

Nova matches them against host-aggregate metadata; cloudctl's hosts carry the same key/value
pairs directly as ``labels``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cloudctl.scheduler.filters import PASS, FilterResult, HostFilter
from cloudctl.scheduler.filters.extra_specs import matches
from cloudctl.scheduler.host_state import HostState, RequestSpec

SCOPE = "aggregate_instance_extra_specs"


def label_values(raw: Any) -> list[str]:
    """A label's value as the strings it offers: ``"ssd,nvme"`` and ``["ssd", "nvme"]`` give two.

    Booleans render as ``true``/``false`` (YAML's spelling), so ``ssd: true`` matches ``"true"``.
    """
    if raw is None:
        return []
    if isinstance(raw, bool):
        return ["true" if raw else "false"]
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, Iterable):
        return [v for item in raw for v in label_values(item)]
    return [str(raw)]


class AggregateInstanceExtraSpecsFilter(HostFilter):
    """Pass hosts whose labels satisfy the flavor's ``aggregate_instance_extra_specs:*`` specs.

    Keys with that scope, and keys with no ``:`` scope at all (Nova's backward compatibility),
    name a label; other scopes (``hw:``, ``capabilities:``, ...) are not this filter's. The
    requirement uses the operators of :mod:`cloudctl.scheduler.filters.extra_specs` (plain
    equality, ``<in>``, ``<or>``, ``s==``, ``>=``, ...) and passes when ANY of the label's
    values (a comma list or a YAML list) matches. A missing or empty label rejects the host.
    """

    name = "AggregateInstanceExtraSpecsFilter"
    session_kind = "static"
    run_filter_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return any(":" not in k or k.partition(":")[0] == SCOPE for k in spec.flavor_extra_specs)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Check every label-scoped extra spec against the host's labels."""
        for key, requirement in spec.flavor_extra_specs.items():
            scope, sep, rest = key.partition(":")
            if sep and scope != SCOPE:
                continue
            label = rest if sep else key
            values = label_values(host.labels.get(label))
            if not values:
                return FilterResult(
                    False, f"extra spec {key}={requirement!r}: host has no label {label!r}"
                )
            if not any(matches(v, requirement) for v in values):
                return FilterResult(
                    False,
                    f"extra spec {key}={requirement!r}: host label {label}="
                    f"{','.join(values)!r} does not match",
                )
        return PASS
