"""Every weigher: raw scores from a table, then pick order through the FilterScheduler."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from cloudctl.scheduler.host_state import GroupState, HostState, RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler
from cloudctl.scheduler.registry import (
    BUILTIN_WEIGHERS,
    DEFAULT_FILTERS,
    DEFAULT_WEIGHERS,
    load_filters,
    load_weighers,
)
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
from tests.scheduler.factories import host

SPEC = RequestSpec(vcpus=1, memory_mb=512, disk_gb=10)


def grouped(policy: str, members: dict[str, int]) -> RequestSpec:
    return RequestSpec(1, 512, 10, group=GroupState("web", policy, None, Counter(members)))


# (id, weigher, host, spec, raw score)
RAW: list[tuple[str, HostWeigher, HostState, RequestSpec, float]] = [
    ("ram free", RAMWeigher(), host(memory_mb_used=1024), SPEC, 3072.0),
    ("ram reserved", RAMWeigher(), host(reserved_memory_mb=512), SPEC, 3584.0),
    ("cpu free after ratio", CPUWeigher(), host(vcpus_used=6), SPEC, 10.0),
    ("cpu reserved", CPUWeigher(), host(cpu_allocation_ratio=1.0, reserved_cpus=1), SPEC, 3.0),
    ("disk free", DiskWeigher(), host(disk_gb_used=30), SPEC, 70.0),
    ("disk ratio", DiskWeigher(), host(disk_allocation_ratio=2.0), SPEC, 200.0),
    ("instances none", NumInstancesWeigher(), host(), SPEC, 0.0),
    ("instances three", NumInstancesWeigher(), host(num_instances=3), SPEC, -3.0),
    ("io ops two", IoOpsWeigher(), host(num_io_ops=2), SPEC, -2.0),
    ("build failures", BuildFailureWeigher(), host(failed_builds=4), SPEC, -4.0),
    (
        "soft affinity members",
        ServerGroupSoftAffinityWeigher(),
        host("a"),
        grouped("soft-affinity", {"a": 2}),
        2.0,
    ),
    (
        "soft affinity other policy",
        ServerGroupSoftAffinityWeigher(),
        host("a"),
        grouped("soft-anti-affinity", {"a": 2}),
        0.0,
    ),
    ("soft affinity no group", ServerGroupSoftAffinityWeigher(), host("a"), SPEC, 0.0),
    (
        "soft anti-affinity members",
        ServerGroupSoftAntiAffinityWeigher(),
        host("a"),
        grouped("soft-anti-affinity", {"a": 2}),
        -2.0,
    ),
    (
        "soft anti-affinity other host",
        ServerGroupSoftAntiAffinityWeigher(),
        host("b"),
        grouped("soft-anti-affinity", {"a": 2}),
        0.0,
    ),
    (
        "soft anti-affinity other policy",
        ServerGroupSoftAntiAffinityWeigher(),
        host("a"),
        grouped("anti-affinity", {"a": 2}),
        0.0,
    ),
]


@pytest.mark.parametrize(("label", "weigher", "h", "spec", "raw"), RAW, ids=[r[0] for r in RAW])
def test_raw_score(
    label: str, weigher: HostWeigher, h: HostState, spec: RequestSpec, raw: float
) -> None:
    assert weigher.weigh(h, spec) == raw


# (weigher, host "a" kwargs, host "b" kwargs, group policy and members or None): "a" is the host
# a positive multiplier prefers (spread / avoid), "b" the one a negative multiplier picks (pack).
ORDER: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, dict[str, int]] | None]] = [
    ("RAMWeigher", {}, {"memory_mb_used": 2048}, None),
    ("CPUWeigher", {}, {"vcpus_used": 8}, None),
    ("DiskWeigher", {}, {"disk_gb_used": 50}, None),
    ("NumInstancesWeigher", {"num_instances": 1}, {"num_instances": 5}, None),
    ("IoOpsWeigher", {}, {"num_io_ops": 3}, None),
    ("BuildFailureWeigher", {}, {"failed_builds": 2}, None),
    ("ServerGroupSoftAffinityWeigher", {}, {}, ("soft-affinity", {"a": 1})),
    ("ServerGroupSoftAntiAffinityWeigher", {}, {}, ("soft-anti-affinity", {"b": 1})),
]


@pytest.mark.parametrize(("weigher", "a", "b", "group"), ORDER, ids=[o[0] for o in ORDER])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["spread", "pack"])
def test_pick_order(
    weigher: str,
    a: dict[str, Any],
    b: dict[str, Any],
    group: tuple[str, dict[str, int]] | None,
    sign: float,
) -> None:
    # A fresh spec each run: the pipeline adds every pick to the group's members.
    spec = SPEC if group is None else grouped(*group)
    sched = FilterScheduler(
        load_filters(DEFAULT_FILTERS),
        load_weighers({weigher: sign * BUILTIN_WEIGHERS[weigher].default_multiplier}),
        rng=random.Random(0),
    )
    picked = sched.select([host("b", **b), host("a", **a)], spec, count=1)[0]
    assert picked.host.name == ("a" if sign > 0 else "b")
    # Won on weight, not on the name tie-break.
    assert picked.weighed[0].weight > picked.weighed[1].weight


def test_every_weigher_has_rows() -> None:
    assert {type(r[1]).__name__ for r in RAW} == set(BUILTIN_WEIGHERS)
    assert {o[0] for o in ORDER} == set(BUILTIN_WEIGHERS)


def test_default_weighers_and_multipliers() -> None:
    assert DEFAULT_WEIGHERS == {
        "RAMWeigher": 1.0,
        "CPUWeigher": 1.0,
        "DiskWeigher": 1.0,
        "NumInstancesWeigher": 1.0,
        "IoOpsWeigher": 1.0,
        "ServerGroupSoftAffinityWeigher": 1.0,
        "ServerGroupSoftAntiAffinityWeigher": 1.0,
        "BuildFailureWeigher": 1_000_000.0,
    }


def test_one_build_failure_outweighs_every_other_default_weigher() -> None:
    hosts = [host("busy", memory_mb_used=3000, num_instances=9), host("flaky", failed_builds=1)]
    sched = FilterScheduler(load_filters(DEFAULT_FILTERS), load_weighers(DEFAULT_WEIGHERS))
    picked = sched.select(hosts, SPEC)[0]
    assert picked.host.name == "busy"
    flaky = next(w for w in picked.weighed if w.host == "flaky")
    assert flaky.weights["BuildFailureWeigher"] == 0.0
    assert flaky.weights["RAMWeigher"] == 1.0


def test_default_weighers_spread_a_multi_create() -> None:
    hosts = [host("a"), host("b"), host("c")]
    sched = FilterScheduler(load_filters(DEFAULT_FILTERS), load_weighers(DEFAULT_WEIGHERS))
    picks = sched.select(hosts, RequestSpec(1, 512, 10, num_instances=3))
    assert sorted(p.host.name for p in picks) == ["a", "b", "c"]
