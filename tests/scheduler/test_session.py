"""The placement session decides exactly as FilterScheduler.select, only faster."""

from __future__ import annotations

import copy
import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from benchmarks import placement

from cloudctl.errors import NoValidHost
from cloudctl.scheduler import _kernel
from cloudctl.scheduler import session as session_module
from cloudctl.scheduler.filters import FilterResult, HostFilter
from cloudctl.scheduler.host_state import (
    CLASS_KEY_EXCLUDES,
    GroupState,
    HostState,
    RequestSpec,
    class_key,
)
from cloudctl.scheduler.pipeline import FilterScheduler, Selection
from cloudctl.scheduler.registry import DEFAULT_FILTERS, load_filters, load_weighers
from cloudctl.scheduler.session import PlacementSession
from tests.scheduler.factories import host

Outcome = list[tuple[str, tuple[str, ...], float, dict[str, float]]] | str


def cluster(n: int = 12, seed: int = 7) -> list[HostState]:
    """Varied hosts over two AZs, one disabled, one with a build failure."""
    rng = random.Random(seed)
    hosts = [
        host(
            f"h{i:02d}",
            availability_zone="az1" if i % 3 else "az2",
            vcpus_total=rng.choice((4, 8, 16)),
            memory_mb_total=rng.choice((4096, 8192, 16384)),
            disk_gb_total=rng.choice((100, 200)),
            cpu_allocation_ratio=rng.choice((1.0, 2.0)),
        )
        for i in range(n)
    ]
    hosts[4].enabled = False
    hosts[5].failed_builds = 1
    return hosts


def spec(**kw: Any) -> RequestSpec:
    base: dict[str, Any] = {"vcpus": 1, "memory_mb": 1024, "disk_gb": 10, "flavor_name": "m1"}
    base.update(kw)
    return RequestSpec(**base)


def outcome(call: Callable[[], list[Selection]]) -> Outcome:
    """What a select call decided, comparable across the two implementations."""
    try:
        return [
            (s.host.name, s.alternates, s.weighed[0].weight, dict(s.weighed[0].weights))
            for s in call()
        ]
    except NoValidHost as exc:
        return f"NoValidHost: {exc}"


def both(
    hosts: list[HostState],
    requests: Sequence[tuple[RequestSpec, dict[str, Any]]],
    make: Callable[[], FilterScheduler],
) -> tuple[list[Outcome], list[Outcome], list[HostState], list[HostState]]:
    """Run ``requests`` through the pipeline and through a session, each on its own copy."""
    ref_hosts, ref_requests = copy.deepcopy((hosts, requests))
    ses_hosts, ses_requests = copy.deepcopy((hosts, requests))
    ref_scheduler, ses_scheduler = make(), make()
    session = PlacementSession(ses_scheduler, ses_hosts)
    ref = [
        outcome(lambda r=r, kw=kw: ref_scheduler.select(ref_hosts, r, **kw))
        for r, kw in ref_requests
    ]
    ours = [outcome(lambda r=r, kw=kw: session.select(r, **kw)) for r, kw in ses_requests]
    return ref, ours, ref_hosts, ses_hosts


def default_scheduler(**kw: Any) -> Callable[[], FilterScheduler]:
    multipliers = kw.pop("multipliers", None)

    def make() -> FilterScheduler:
        weighers = load_weighers(
            multipliers
            or {
                "RAMWeigher": 1.0,
                "CPUWeigher": 1.0,
                "DiskWeigher": 1.0,
                "NumInstancesWeigher": 1.0,
                "IoOpsWeigher": 1.0,
                "ServerGroupSoftAffinityWeigher": 1.0,
                "ServerGroupSoftAntiAffinityWeigher": 1.0,
                "BuildFailureWeigher": 1_000_000.0,
            }
        )
        return FilterScheduler(load_filters(DEFAULT_FILTERS), weighers, rng=random.Random(3), **kw)

    return make


def anti(name: str, limit: int | None = None) -> GroupState:
    return GroupState(name, "anti-affinity", limit)


SCENARIOS: dict[str, tuple[list[tuple[RequestSpec, dict[str, Any]]], dict[str, Any]]] = {
    "spread": ([(spec(), {"count": 1})] * 20, {}),
    "flavors and azs": (
        [
            (spec(vcpus=v, memory_mb=m, availability_zone=az), {"count": 1})
            for v, m, az in [(1, 512, None), (4, 4096, "az1"), (2, 2048, "az2"), (8, 8192, None)]
            * 5
        ],
        {},
    ),
    "pack with negative multipliers": (
        [(spec(memory_mb=2048), {"count": 1})] * 15,
        {"multipliers": {"RAMWeigher": -1.0, "NumInstancesWeigher": -1.0}},
    ),
    "anti-affinity, max 2 per host": (
        [(spec(group=g), {"count": 1}) for g in [anti("g", 2)] * 12],
        {},
    ),
    "anti-affinity runs out of hosts": (
        [(spec(group=anti("g")), {"count": 12})],
        {},
    ),
    "anti-affinity down to min_count": (
        [(spec(group=anti("g")), {"count": 12, "min_count": 3})],
        {},
    ),
    "affinity": ([(spec(group=GroupState("a", "affinity")), {"count": 3})] * 2, {}),
    "soft anti-affinity (opaque weigher, full pipeline)": (
        [(spec(group=GroupState("s", "soft-anti-affinity")), {"count": 5})],
        {},
    ),
    "forced host, still capacity-checked": (
        [(spec(force_host="h02", memory_mb=3000), {"count": 1})] * 4,
        {},
    ),
    "hints and ignored hosts": (
        [
            (spec(same_host=frozenset({"h01", "h02"})), {"count": 2}),
            (spec(different_host=frozenset({"h01", "h02"})), {"count": 2}),
            (spec(ignore_hosts=frozenset({"h00", "h01", "h03"})), {"count": 2}),
        ],
        {},
    ),
    "multi-create": ([(spec(vcpus=2), {"count": 6})], {}),
    "nothing fits": ([(spec(memory_mb=1_000_000), {"count": 1})], {}),
    "random among the best three": ([(spec(), {"count": 1})] * 15, {"host_subset_size": 3}),
    "more alternates": ([(spec(), {"count": 2})] * 4, {"max_alternates": 5}),
}


@pytest.fixture(params=["scan", "incremental"])
def kernel_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both kernels: the plain scan, and the incremental one (big classes) on every class."""
    mode: str = request.param
    if mode == "incremental":
        monkeypatch.setattr(session_module, "INCREMENTAL_FROM", 0)
    return mode


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_session_decides_as_the_pipeline(
    name: str, kernel_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests, kw = SCENARIOS[name]
    scans: list[str] = []
    for name_ in ("scan", "place"):
        compiled = getattr(_kernel, name_)

        def counting(*args: Any, _fn: Any = compiled, _name: str = name_) -> int:
            scans.append(_name)
            return int(_fn(*args))

        monkeypatch.setattr(_kernel, name_, counting)
    ref, ours, ref_hosts, ses_hosts = both(cluster(), requests, default_scheduler(**kw))
    # Only soft policies (an opaque weigher) leave the compiled path.
    assert bool(scans) == ("opaque" not in name)
    assert ours == ref
    assert [dataclasses.asdict(h) for h in ses_hosts] == [dataclasses.asdict(h) for h in ref_hosts]


def test_no_hosts_gives_the_pipelines_error() -> None:
    ref, ours, _, _ = both([], [(spec(), {"count": 1})], default_scheduler())
    assert ours == ref
    assert "no compute hosts" in str(ours[0])


class OddNameFilter(HostFilter):
    """A third-party filter the session knows nothing about."""

    name = "OddNameFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        return FilterResult(int(host.name[-1]) % 2 == 1, "even")


def test_an_opaque_filter_takes_the_pipeline() -> None:
    def make() -> FilterScheduler:
        return FilterScheduler(
            [*load_filters(DEFAULT_FILTERS), OddNameFilter()],
            load_weighers({"RAMWeigher": 1.0}),
        )

    ref, ours, _, _ = both(cluster(), [(spec(), {"count": 1})] * 6, make)
    assert ours == ref
    assert all(isinstance(o, list) and int(o[0][0][-1]) % 2 for o in ours)


def test_host_changed_is_seen_by_the_next_pick(kernel_mode: str) -> None:
    hosts = [host("a", memory_mb_total=8192), host("b", memory_mb_total=8192)]
    session = PlacementSession(default_scheduler()(), hosts)
    [first] = session.select(spec(), 1)
    assert first.host.name == "a"  # a tie, broken by name
    hosts[0].memory_mb_used = 0
    hosts[0].vcpus_used = hosts[0].disk_gb_used = hosts[0].num_instances = 0
    hosts[0].num_io_ops = 0
    hosts[1].num_io_ops = 5
    session.host_changed("a")
    session.host_changed("b")
    [second] = session.select(spec(), 1)
    assert second.host.name == "a"
    hosts[0].enabled = False
    session.host_changed("a", facts=True)
    assert session.select(spec(), 1)[0].host.name == "b"


def test_the_benchmark_stream_is_placed_identically(kernel_mode: str) -> None:
    """Hundreds of hosts, builds finishing, groups and AZs: the same hosts, request by request."""
    workload = placement.make_workload(50, 2000, seed=11)
    ref = placement.time_reference(workload, 2000).placements
    ours = placement.time_cloudctl(workload).placements
    assert ours == ref
    assert sum(p is None for p in ref) > 0  # the stream runs the cluster full
    assert len(Counter(ref)) > 40


def test_class_key_covers_every_request_field() -> None:
    """A field added to RequestSpec must reach the key (or be excluded on purpose)."""
    changed = {
        "vcpus": 2,
        "memory_mb": 2,
        "disk_gb": 2,
        "availability_zone": "az9",
        "force_host": "x",
        "flavor_name": "f",
        "flavor_extra_specs": {"k": "v"},
        "image_properties": {"k": "v"},
        "ignore_hosts": frozenset({"x"}),
        "same_host": frozenset({"x"}),
        "different_host": frozenset({"x"}),
    }
    fields = {f.name for f in dataclasses.fields(RequestSpec)}
    assert fields - CLASS_KEY_EXCLUDES == set(changed)
    base = spec(vcpus=1, memory_mb=1, disk_gb=1)
    for name, value in changed.items():
        assert class_key(dataclasses.replace(base, **{name: value})) != class_key(base), name
    assert class_key(dataclasses.replace(base, group=anti("g"))) != class_key(base)


def test_compiled_scan_matches_plain_python() -> None:
    rng = np.random.default_rng(5)
    n, n_w, keep = 300, 4, 3
    raw = np.round(rng.random((n, n_w)) * 50)  # many ties
    cols = rng.random((n, 2)) * 10
    extra = rng.random(n) > 0.1
    candidates = np.flatnonzero(rng.random(n) > 0.2)
    plan = np.array([n_w, 1, 1, len(candidates), keep, 0, 1, 2, 3, 0, 1, *candidates])
    limits = np.array([1.0, -2.0, 0.5, 1e6, 3.0, 8.0])
    results = []
    for fn in (_kernel.scan_py, _kernel.scan):
        out = np.zeros(3 * n_w + keep * (n_w + 2))
        out_idx = np.zeros(keep, dtype=np.int64)
        passed = fn(raw, cols, extra, plan, limits, out, out_idx)
        results.append((passed, out.tolist(), out_idx.tolist()))
    assert results[0] == results[1]
    assert results[0][0] > 0


def test_a_full_change_log_rebuilds_the_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The incremental kernel replays a bounded log; when it fills, classes start afresh."""
    monkeypatch.setattr(session_module, "INCREMENTAL_FROM", 0)
    workload = placement.make_workload(40, 1500, seed=4)
    hosts, requests = workload.fresh()
    ref_hosts, ref_requests = workload.fresh()
    scheduler = FilterScheduler(placement.make_filters(), placement.make_weighers())
    session = PlacementSession(scheduler, hosts)
    session._log = session._log[:64]  # wraps every few dozen picks
    ours, ref = [], []
    for spec, ref_spec in zip(requests, ref_requests, strict=True):
        ours.append(outcome(lambda spec=spec: session.select(spec, 1)))
        ref.append(outcome(lambda s=ref_spec: scheduler.select(ref_hosts, s, 1)))
    assert ours == ref
