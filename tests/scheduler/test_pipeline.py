"""The filter scheduler, from tables of hosts and requests to expected placements."""

from __future__ import annotations

import random

import pytest

from cloudctl.errors import ConfigError, NoValidHost
from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler, normalize
from cloudctl.scheduler.registry import (
    DEFAULT_FILTERS,
    DEFAULT_WEIGHERS,
    load_filters,
    load_weighers,
)
from tests.scheduler.factories import host


def scheduler(multiplier: float = 1.0, subset: int = 1) -> FilterScheduler:
    return FilterScheduler(
        load_filters(DEFAULT_FILTERS),
        load_weighers({"RAMWeigher": multiplier}),
        host_subset_size=subset,
        rng=random.Random(1),
    )


SPEC = RequestSpec(vcpus=1, memory_mb=1024, disk_gb=10)

PLACEMENTS: list[tuple[str, list[HostState], RequestSpec, list[str]]] = [
    ("spread to most free RAM", [host("a", memory_mb_used=2048), host("b")], SPEC, ["b"]),
    (
        "disabled host skipped",
        [host("a", enabled=False), host("b", memory_mb_used=3000)],
        SPEC,
        ["b"],
    ),
    ("down host skipped", [host("a", is_up=False), host("b", memory_mb_used=3000)], SPEC, ["b"]),
    (
        "az filter",
        [
            host("a", availability_zone="az1"),
            host("b", availability_zone="az2", memory_mb_used=3000),
        ],
        RequestSpec(vcpus=1, memory_mb=512, disk_gb=1, availability_zone="az2"),
        ["b"],
    ),
    (
        "forced host still wins over weight",
        [host("a"), host("b", memory_mb_used=2048)],
        RequestSpec(vcpus=1, memory_mb=512, disk_gb=1, force_host="b"),
        ["b"],
    ),
    (
        "consume between picks spreads a count of 4",
        [host("a"), host("b")],
        RequestSpec(vcpus=1, memory_mb=1024, disk_gb=1, num_instances=4),
        ["a", "b", "a", "b"],
    ),
    (
        "cpu ratio lets 8 vcpus fit on 4 cores",
        [host("a", vcpus_total=2, cpu_allocation_ratio=4.0)],
        RequestSpec(vcpus=8, memory_mb=128, disk_gb=1),
        ["a"],
    ),
    (
        "reserved memory counts",
        [host("a", reserved_memory_mb=3500), host("b", memory_mb_used=2000)],
        SPEC,
        ["b"],
    ),
]


@pytest.mark.parametrize(
    ("label", "hosts", "spec", "expected"), PLACEMENTS, ids=[p[0] for p in PLACEMENTS]
)
def test_placements(
    label: str, hosts: list[HostState], spec: RequestSpec, expected: list[str]
) -> None:
    picks = scheduler().select(hosts, spec)
    assert [p.host.name for p in picks] == expected


def test_negative_multiplier_packs() -> None:
    hosts = [host("a", memory_mb_used=2048), host("b")]
    assert scheduler(-1.0).select(hosts, SPEC)[0].host.name == "a"


REJECTIONS: list[tuple[str, list[HostState], RequestSpec, str]] = [
    ("ram", [host("a", memory_mb_total=1024)], RequestSpec(1, 4096, 1), "RamFilter removed 1"),
    (
        "ram numbers",
        [host("a", memory_mb_total=1024)],
        RequestSpec(1, 4096, 1),
        "needs 4096 MiB, 1024 free after ratio 1",
    ),
    (
        "vcpu",
        [host("a", vcpus_total=1, cpu_allocation_ratio=1.0)],
        RequestSpec(2, 1, 1),
        "CoreFilter removed 1",
    ),
    ("disk", [host("a", disk_gb_total=5)], RequestSpec(1, 1, 10), "DiskFilter removed 1"),
    (
        "disabled",
        [host("a", enabled=False, disabled_reason="maint")],
        SPEC,
        "host is disabled: maint",
    ),
    ("no hosts", [], SPEC, "no compute hosts registered"),
    (
        "count exceeds capacity",
        [host("a", memory_mb_total=2048)],
        RequestSpec(1, 1024, 1, num_instances=3),
        "placed 2 of 3 instance(s)",
    ),
]


@pytest.mark.parametrize(
    ("label", "hosts", "spec", "needle"), REJECTIONS, ids=[r[0] for r in REJECTIONS]
)
def test_no_valid_host_says_why(
    label: str, hosts: list[HostState], spec: RequestSpec, needle: str
) -> None:
    with pytest.raises(NoValidHost) as exc:
        scheduler().select(hosts, spec)
    assert needle in exc.value.message


def test_alternates_and_weights_are_reported() -> None:
    picks = scheduler().select(
        [host("a"), host("b", memory_mb_used=1000), host("c", memory_mb_used=2000)], SPEC
    )
    assert picks[0].host.name == "a"
    assert picks[0].alternates == ("b", "c")
    assert [w.host for w in picks[0].weighed] == ["a", "b", "c"]
    assert picks[0].weighed[0].weights["RAMWeigher"] == 1.0


def test_host_subset_size_is_seedable() -> None:
    hosts = [host(n) for n in "abcd"]
    first = [
        p.host.name
        for p in scheduler(subset=4).select(hosts, RequestSpec(1, 1, 1, num_instances=3))
    ]
    hosts = [host(n) for n in "abcd"]
    again = [
        p.host.name
        for p in scheduler(subset=4).select(hosts, RequestSpec(1, 1, 1, num_instances=3))
    ]
    assert first == again


@pytest.mark.parametrize(
    ("values", "expected"), [([], []), ([5, 5], [0.0, 0.0]), ([0, 5, 10], [0.0, 0.5, 1.0])]
)
def test_normalize(values: list[float], expected: list[float]) -> None:
    assert normalize(values) == expected


def test_unknown_plugin_names_fail_at_start() -> None:
    with pytest.raises(ConfigError, match="unknown scheduler filter"):
        load_filters(["RamFilter", "NoSuchFilter"])
    with pytest.raises(ConfigError, match="unknown scheduler weigher"):
        load_weighers({"Nope": 1.0})
    assert DEFAULT_WEIGHERS["RAMWeigher"] == 1.0


@pytest.mark.parametrize(
    ("min_count", "placed"),
    [(None, None), (2, 2), (3, None), (1, 2)],
)
def test_min_count_places_as_many_as_fit_or_none(min_count: int | None, placed: int | None) -> None:
    """Two fit; all-or-nothing by default, down to min_count when asked."""
    hosts = [host("a", memory_mb_total=2048)]
    spec = RequestSpec(1, 1024, 1, num_instances=3)
    if placed is None:
        with pytest.raises(NoValidHost, match="placed 2 of 3"):
            scheduler().select(hosts, spec, min_count=min_count)
    else:
        assert len(scheduler().select(hosts, spec, min_count=min_count)) == placed
