"""Plugins by name: entry points, the built-in fallback, unknown names, configuration."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import ClassVar

import pytest

from cloudctl.domain.settings import SchedulerSettings
from cloudctl.errors import ConfigError
from cloudctl.scheduler import registry
from cloudctl.scheduler.filters import PASS, FilterResult, HostFilter
from cloudctl.scheduler.filters.image import ImagePropertiesFilter
from cloudctl.scheduler.filters.load import IoOpsFilter, NumInstancesFilter
from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.registry import (
    BUILTIN_FILTERS,
    BUILTIN_WEIGHERS,
    DEFAULT_FILTERS,
    FILTER_GROUP,
    WEIGHER_GROUP,
    available_filters,
    available_weighers,
    load_filters,
    load_weighers,
)
from cloudctl.scheduler.weighers import HostWeigher


class GpuFilter(HostFilter):
    """A third party's filter, registered through an entry point in the tests below."""

    name = "GpuFilter"

    def __init__(self, *, max_io_ops_per_host: int = 0) -> None:
        self.max_io_ops_per_host = max_io_ops_per_host

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        return PASS


class GpuWeigher(HostWeigher):
    """A third party's weigher."""

    name = "GpuWeigher"
    default_multiplier: ClassVar[float] = 3.0

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return 0.0


class Misnamed(GpuFilter):
    name = "SomethingElse"


NotAPlugin = object()


def ep(name: str, target: str, group: str = FILTER_GROUP) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=f"{__name__}:{target}", group=group)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[metadata.EntryPoint]]:
    """Replace the installed entry points with a table the test fills."""
    table: dict[str, list[metadata.EntryPoint]] = {FILTER_GROUP: [], WEIGHER_GROUP: []}
    monkeypatch.setattr(registry, "entry_points", lambda group: tuple(table[group]))
    return table


@pytest.mark.parametrize(
    ("group", "builtin"), [(FILTER_GROUP, BUILTIN_FILTERS), (WEIGHER_GROUP, BUILTIN_WEIGHERS)]
)
def test_builtins_are_declared_as_entry_points(group: str, builtin: dict[str, type]) -> None:
    installed = {e.name: e for e in metadata.entry_points(group=group)}
    missing = set(builtin) - set(installed)
    assert not missing, f"not in the installed metadata (run `pip install -e .`): {missing}"
    for name, cls in builtin.items():
        assert installed[name].load() is cls


def test_default_filters_in_nova_order() -> None:
    assert DEFAULT_FILTERS == (
        "IgnoreHostsFilter",
        "ForcedHostFilter",
        "AvailabilityZoneFilter",
        "ComputeFilter",
        "RamFilter",
        "CoreFilter",
        "DiskFilter",
        "ImagePropertiesFilter",
        "ComputeCapabilitiesFilter",
        "AggregateInstanceExtraSpecsFilter",
        "ServerGroupAntiAffinityFilter",
        "ServerGroupAffinityFilter",
        "SameHostFilter",
        "DifferentHostFilter",
        "NumInstancesFilter",
        "IoOpsFilter",
    )
    assert [f.name for f in load_filters(DEFAULT_FILTERS)] == list(DEFAULT_FILTERS)


def test_unknown_names_list_the_available_ones() -> None:
    with pytest.raises(ConfigError) as exc:
        load_filters(["RamFilter", "NoSuchFilter"])
    assert "unknown scheduler filter(s) NoSuchFilter" in exc.value.message
    assert "available: AggregateInstanceExtraSpecsFilter, AvailabilityZoneFilter" in (
        exc.value.message
    )
    with pytest.raises(ConfigError, match=r"unknown scheduler weigher.*available: BuildFailure"):
        load_weighers({"Nope": 1.0})


def test_third_party_plugins_load_by_name(
    plugins: dict[str, list[metadata.EntryPoint]],
) -> None:
    plugins[FILTER_GROUP].append(ep("GpuFilter", "GpuFilter"))
    plugins[WEIGHER_GROUP].append(ep("GpuWeigher", "GpuWeigher", WEIGHER_GROUP))
    assert "GpuFilter" in available_filters()
    assert "GpuWeigher" in available_weighers()
    filters = load_filters(["ComputeFilter", "GpuFilter"])
    assert [type(f) for f in filters][1] is GpuFilter
    ((weigher, multiplier),) = load_weighers({"GpuWeigher": None})
    assert isinstance(weigher, GpuWeigher)
    assert multiplier == 3.0


def test_builtins_win_a_name_clash(plugins: dict[str, list[metadata.EntryPoint]]) -> None:
    plugins[FILTER_GROUP].append(ep("RamFilter", "GpuFilter"))
    assert type(load_filters(["RamFilter"])[0]) is BUILTIN_FILTERS["RamFilter"]


def test_builtins_work_without_metadata(plugins: dict[str, list[metadata.EntryPoint]]) -> None:
    assert available_filters() == sorted(BUILTIN_FILTERS)
    assert len(load_filters(DEFAULT_FILTERS)) == len(DEFAULT_FILTERS)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (ep("Broken", "DoesNotExist"), "scheduler filter 'Broken'"),
        (ep("NotAPlugin", "NotAPlugin"), "is not a HostFilter subclass"),
        (ep("GpuFilter", "Misnamed"), "registered as 'GpuFilter' is named 'SomethingElse'"),
    ],
    ids=["import error", "not a filter", "name mismatch"],
)
def test_bad_plugins_stop_start_up(
    plugins: dict[str, list[metadata.EntryPoint]], entry: metadata.EntryPoint, needle: str
) -> None:
    plugins[FILTER_GROUP].append(entry)
    with pytest.raises(ConfigError) as exc:
        load_filters([entry.name])
    assert needle in exc.value.message


def test_a_broken_plugin_that_is_not_enabled_is_not_loaded(
    plugins: dict[str, list[metadata.EntryPoint]],
) -> None:
    plugins[FILTER_GROUP].append(ep("Broken", "DoesNotExist"))
    assert len(load_filters(["RamFilter"])) == 1


@dataclass(frozen=True)
class TunedSettings(SchedulerSettings):
    """SchedulerSettings with the fields the load filters read (until the lead adds them)."""

    max_instances_per_host: int = 3
    max_io_ops_per_host: int = 2
    image_properties_default_architecture: str | None = "aarch64"


def test_settings_reach_constructor_keywords() -> None:
    num, io, image = load_filters(
        ["NumInstancesFilter", "IoOpsFilter", "ImagePropertiesFilter"], TunedSettings()
    )
    assert isinstance(num, NumInstancesFilter) and num.max_instances_per_host == 3
    assert isinstance(io, IoOpsFilter) and io.max_io_ops_per_host == 2
    assert isinstance(image, ImagePropertiesFilter) and image.default_architecture == "aarch64"


def test_third_party_plugins_get_settings_too(
    plugins: dict[str, list[metadata.EntryPoint]],
) -> None:
    plugins[FILTER_GROUP].append(ep("GpuFilter", "GpuFilter"))
    (gpu,) = load_filters(["GpuFilter"], TunedSettings())
    assert isinstance(gpu, GpuFilter) and gpu.max_io_ops_per_host == 2


@pytest.mark.parametrize("settings", [None, SchedulerSettings()], ids=["none", "no fields"])
def test_without_settings_fields_defaults_stand(settings: SchedulerSettings | None) -> None:
    num, io = load_filters(["NumInstancesFilter", "IoOpsFilter"], settings)
    assert isinstance(num, NumInstancesFilter) and num.max_instances_per_host == 50
    assert isinstance(io, IoOpsFilter) and io.max_io_ops_per_host == 8


def test_weigher_multipliers_default_when_none() -> None:
    loaded = load_weighers({"RAMWeigher": -2, "BuildFailureWeigher": None}, SchedulerSettings())
    assert [(w.name, m) for w, m in loaded] == [
        ("RAMWeigher", -2.0),
        ("BuildFailureWeigher", 1_000_000.0),
    ]
