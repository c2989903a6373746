"""Plugins by name; an unknown name stops start-up with a clear error.

Filters and weighers are found through Python entry points, groups :data:`FILTER_GROUP` and
:data:`WEIGHER_GROUP`, so another distribution can add its own by declaring, in its
pyproject.toml::

    [project.entry-points."cloudctl.scheduler.filters"]
    GpuFilter = "acme_sched.filters:GpuFilter"

The entry-point name must equal the class's ``name``. cloudctl declares its built-ins the same
way, and also keeps them in :data:`BUILTIN_FILTERS` / :data:`BUILTIN_WEIGHERS`, which win on a
name clash and still work when the installed metadata is stale (a checkout not reinstalled).

Configuration reaches a plugin through its constructor: every keyword-only parameter named
like a :class:`~cloudctl.domain.settings.SchedulerSettings` field receives that field's value;
the others keep their defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar, cast

from cloudctl.domain.settings import SchedulerSettings
from cloudctl.errors import ConfigError
from cloudctl.scheduler.filters import HostFilter
from cloudctl.scheduler.filters.affinity import (
    DifferentHostFilter,
    SameHostFilter,
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from cloudctl.scheduler.filters.aggregate import AggregateInstanceExtraSpecsFilter
from cloudctl.scheduler.filters.capabilities import ComputeCapabilitiesFilter
from cloudctl.scheduler.filters.compute import ComputeFilter
from cloudctl.scheduler.filters.image import ImagePropertiesFilter
from cloudctl.scheduler.filters.load import IoOpsFilter, NumInstancesFilter
from cloudctl.scheduler.filters.placement import (
    AvailabilityZoneFilter,
    ForcedHostFilter,
    IgnoreHostsFilter,
)
from cloudctl.scheduler.filters.resources import CoreFilter, DiskFilter, RamFilter
from cloudctl.scheduler.weighers import HostWeigher
from cloudctl.scheduler.weighers.affinity import (
    ServerGroupSoftAffinityWeigher,
    ServerGroupSoftAntiAffinityWeigher,
)
from cloudctl.scheduler.weighers.load import (
    BuildFailureWeigher,
    IoOpsWeigher,
    NumInstancesWeigher,
)
from cloudctl.scheduler.weighers.resources import CPUWeigher, DiskWeigher, RAMWeigher

FILTER_GROUP = "cloudctl.scheduler.filters"
WEIGHER_GROUP = "cloudctl.scheduler.weighers"

#: Built-in filters, in the default order: where the request may go, whether the host works,
#: capacity, what the image and flavor need, where its siblings are, how busy the host is.
_DEFAULT_FILTER_CLASSES: tuple[type[HostFilter], ...] = (
    IgnoreHostsFilter,
    ForcedHostFilter,
    AvailabilityZoneFilter,
    ComputeFilter,
    RamFilter,
    CoreFilter,
    DiskFilter,
    ImagePropertiesFilter,
    ComputeCapabilitiesFilter,
    AggregateInstanceExtraSpecsFilter,
    ServerGroupAntiAffinityFilter,
    ServerGroupAffinityFilter,
    SameHostFilter,
    DifferentHostFilter,
    NumInstancesFilter,
    IoOpsFilter,
)
_DEFAULT_WEIGHER_CLASSES: tuple[type[HostWeigher], ...] = (
    RAMWeigher,
    CPUWeigher,
    DiskWeigher,
    NumInstancesWeigher,
    IoOpsWeigher,
    ServerGroupSoftAffinityWeigher,
    ServerGroupSoftAntiAffinityWeigher,
    BuildFailureWeigher,
)

BUILTIN_FILTERS: dict[str, type[HostFilter]] = {c.name: c for c in _DEFAULT_FILTER_CLASSES}
BUILTIN_WEIGHERS: dict[str, type[HostWeigher]] = {c.name: c for c in _DEFAULT_WEIGHER_CLASSES}

#: Enabled filters when the configuration names none, in evaluation order.
DEFAULT_FILTERS: tuple[str, ...] = tuple(BUILTIN_FILTERS)
#: Enabled weighers and their multipliers when the configuration names none.
DEFAULT_WEIGHERS: dict[str, float] = {
    c.name: c.default_multiplier for c in _DEFAULT_WEIGHER_CLASSES
}

P = TypeVar("P", HostFilter, HostWeigher)


@dataclass(frozen=True)
class _Kind(Generic[P]):
    """One plugin family: its entry-point group, base class and built-in table."""

    label: str
    group: str
    base: type  # HostFilter or HostWeigher; abstract, so not type[P] (mypy's type-abstract)
    builtin: Mapping[str, type[P]]

    def installed(self) -> dict[str, metadata.EntryPoint]:
        """Entry points of the group by name; built-ins are not loaded through them."""
        return {ep.name: ep for ep in entry_points(self.group) if ep.name not in self.builtin}

    def available(self) -> list[str]:
        """Every name this family can load, sorted."""
        return sorted({*self.builtin, *self.installed()})

    def classes(self, names: Sequence[str]) -> list[type[P]]:
        """The classes for ``names``; raises :class:`ConfigError` naming the unknown ones."""
        installed = self.installed()
        unknown = [n for n in names if n not in self.builtin and n not in installed]
        if unknown:
            raise ConfigError(
                reason=f"unknown scheduler {self.label}(s) {', '.join(unknown)}; "
                f"available: {', '.join(self.available())}"
            )
        return [self.builtin.get(n) or self._load(installed[n]) for n in names]

    def _load(self, ep: metadata.EntryPoint) -> type[P]:
        try:
            loaded = ep.load()
        except Exception as exc:  # any import-time error of a third-party plugin
            raise ConfigError(
                reason=f"scheduler {self.label} {ep.name!r} ({ep.value}) failed to load: {exc}"
            ) from exc
        if not (isinstance(loaded, type) and issubclass(loaded, self.base)):
            raise ConfigError(
                reason=f"scheduler {self.label} {ep.name!r} ({ep.value}) is not a "
                f"{self.base.__name__} subclass"
            )
        plugin = cast("type[P]", loaded)
        if plugin.name != ep.name:
            raise ConfigError(
                reason=f"scheduler {self.label} registered as {ep.name!r} is named "
                f"{plugin.name!r}; the two must agree"
            )
        return plugin


_FILTERS: _Kind[HostFilter] = _Kind("filter", FILTER_GROUP, HostFilter, BUILTIN_FILTERS)
_WEIGHERS: _Kind[HostWeigher] = _Kind("weigher", WEIGHER_GROUP, HostWeigher, BUILTIN_WEIGHERS)


def entry_points(group: str) -> Sequence[metadata.EntryPoint]:
    """The installed entry points of ``group`` (a seam for tests)."""
    return tuple(metadata.entry_points(group=group))


def available_filters() -> list[str]:
    """Names :func:`load_filters` accepts: built-ins plus installed plugins."""
    return _FILTERS.available()


def available_weighers() -> list[str]:
    """Names :func:`load_weighers` accepts: built-ins plus installed plugins."""
    return _WEIGHERS.available()


def plugin_options(cls: type, settings: SchedulerSettings | None) -> dict[str, Any]:
    """The constructor keywords of ``cls`` that ``settings`` has a field for, with its values."""
    if settings is None:
        return {}
    values = dataclasses.asdict(settings)
    params = inspect.signature(cls).parameters.values()
    return {
        p.name: values[p.name]
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in values
    }


def load_filters(
    names: Sequence[str], settings: SchedulerSettings | None = None
) -> list[HostFilter]:
    """Instantiate the enabled filters in order, configured from ``settings``."""
    return [cls(**plugin_options(cls, settings)) for cls in _FILTERS.classes(names)]


def load_weighers(
    multipliers: Mapping[str, float | None], settings: SchedulerSettings | None = None
) -> list[tuple[HostWeigher, float]]:
    """Instantiate the enabled weighers with their multipliers (``None``: the weigher's default)."""
    classes = _WEIGHERS.classes(list(multipliers))
    return [
        (cls(**plugin_options(cls, settings)), float(cls.default_multiplier if m is None else m))
        for cls, m in zip(classes, multipliers.values(), strict=True)
    ]
