"""`schedule explain` and `capacity` from tables of hosts: same filters and weighers as select()."""

from __future__ import annotations

import random

import pytest

from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler, capacity, explain
from cloudctl.scheduler.registry import load_filters, load_weighers
from tests.scheduler.factories import host

FILTERS = ("ComputeFilter", "AvailabilityZoneFilter", "RamFilter", "CoreFilter", "DiskFilter")


def sched() -> FilterScheduler:
    return FilterScheduler(
        load_filters(FILTERS), load_weighers({"RAMWeigher": 1.0}), rng=random.Random(0)
    )


def test_explain_names_the_filter_and_numbers_and_ranks_the_rest() -> None:
    hosts = [
        host("small", memory_mb_total=1024),
        host("off", enabled=False, disabled_reason="maintenance"),
        host("big"),
        host("mid", memory_mb_used=2048),
        host("far", availability_zone="az2"),
    ]
    rows = {
        e.host: e
        for e in explain(sched(), hosts, RequestSpec(1, 2048, 10, availability_zone="az1"))
    }
    assert (rows["small"].rejected_by, rows["small"].passed) == ("RamFilter", False)
    assert "ram: needs 2048 MiB, 1024 free after ratio 1" in rows["small"].reason
    assert rows["off"].rejected_by == "ComputeFilter" and "maintenance" in rows["off"].reason
    assert rows["far"].rejected_by == "AvailabilityZoneFilter"
    assert (rows["big"].rank, rows["mid"].rank) == (1, 2)
    assert rows["big"].weights == {"RAMWeigher": 1.0} and rows["mid"].weight == 0.0
    assert [e.host for e in explain(sched(), hosts, RequestSpec(1, 2048, 10))][:3] == [
        "big",
        "far",
        "mid",
    ]


@pytest.mark.parametrize(
    ("hosts", "spec", "expected"),
    [
        ([host("a")], RequestSpec(1, 1024, 10), {"a": 4}),  # ram bound: 4096 / 1024
        (
            [host("a", vcpus_total=1, cpu_allocation_ratio=2.0)],
            RequestSpec(1, 128, 1),
            {"a": 2},
        ),  # vcpu bound
        ([host("a", disk_gb_total=25)], RequestSpec(1, 128, 10), {"a": 2}),  # disk bound
        ([host("a", memory_mb_used=4000)], RequestSpec(1, 1024, 1), {"a": 0}),
        (
            [host("a"), host("b", availability_zone="az2")],
            RequestSpec(1, 2048, 1, availability_zone="az2"),
            {"a": 0, "b": 2},
        ),
        ([host("a", is_up=False)], RequestSpec(1, 1, 1), {"a": 0}),
    ],
)
def test_capacity_per_host(
    hosts: list[HostState], spec: RequestSpec, expected: dict[str, int]
) -> None:
    before = [(h.memory_mb_used, h.num_instances) for h in hosts]
    assert capacity(sched(), hosts, spec) == expected
    assert [(h.memory_mb_used, h.num_instances) for h in hosts] == before  # nothing consumed
