"""Plugins by name; an unknown name stops start-up with a clear error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cloudctl.errors import ConfigError
from cloudctl.scheduler.filters import HostFilter
from cloudctl.scheduler.filters.compute import ComputeFilter
from cloudctl.scheduler.filters.placement import (
    AvailabilityZoneFilter,
    ForcedHostFilter,
    IgnoreHostsFilter,
)
from cloudctl.scheduler.filters.resources import CoreFilter, DiskFilter, RamFilter
from cloudctl.scheduler.weighers import HostWeigher
from cloudctl.scheduler.weighers.resources import RAMWeigher

FILTERS: dict[str, type[HostFilter]] = {
    cls.name: cls
    for cls in (
        ComputeFilter,
        IgnoreHostsFilter,
        ForcedHostFilter,
        AvailabilityZoneFilter,
        RamFilter,
        CoreFilter,
        DiskFilter,
    )
}
WEIGHERS: dict[str, type[HostWeigher]] = {cls.name: cls for cls in (RAMWeigher,)}

DEFAULT_FILTERS: tuple[str, ...] = tuple(FILTERS)
DEFAULT_WEIGHERS: dict[str, float] = {"RAMWeigher": 1.0}


def load_filters(names: Sequence[str]) -> list[HostFilter]:
    """Instantiate the enabled filters in order."""
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise ConfigError(
            reason=f"unknown scheduler filter(s) {', '.join(unknown)}; "
            f"available: {', '.join(sorted(FILTERS))}"
        )
    return [FILTERS[n]() for n in names]


def load_weighers(multipliers: Mapping[str, float]) -> list[tuple[HostWeigher, float]]:
    """Instantiate the enabled weighers with their multipliers."""
    unknown = [n for n in multipliers if n not in WEIGHERS]
    if unknown:
        raise ConfigError(
            reason=f"unknown scheduler weigher(s) {', '.join(unknown)}; "
            f"available: {', '.join(sorted(WEIGHERS))}"
        )
    return [(WEIGHERS[n](), float(m)) for n, m in multipliers.items()]
