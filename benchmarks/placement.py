"""Placement throughput: cloudctl's FilterScheduler versus a straightforward reference.

Both place the same seeded stream of one-instance boot requests over the same seeded hosts, each
on its own copy, and must make identical placements. The reference is the shape of Nova's
FilterScheduler written as plainly as possible: per request, every host through every filter,
every passing host through every weigher, normalise each weigher 0..1 over the passing hosts,
multiply, sum, take the best (ties by host name) and consume it.

Builds are not instantaneous: each placed instance counts as a build in flight on its host
(``num_io_ops``) until :data:`BUILD_WINDOW` later requests have been placed, the same for both.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloudctl.errors import NoValidHost
from cloudctl.scheduler.filters import HostFilter
from cloudctl.scheduler.host_state import GroupState, HostState, RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler
from cloudctl.scheduler.registry import (
    DEFAULT_FILTERS,
    DEFAULT_WEIGHERS,
    load_filters,
    load_weighers,
)
from cloudctl.scheduler.session import PlacementSession, warm_up
from cloudctl.scheduler.weighers import HostWeigher

AZS = ("az1", "az2", "az3")
#: name -> (vcpus, memory_mb, disk_gb)
FLAVORS: dict[str, tuple[int, int, int]] = {
    "m1.small": (1, 2048, 20),
    "m1.medium": (2, 4096, 40),
    "m1.large": (4, 8192, 80),
    "m1.xlarge": (8, 16384, 160),
}
#: Requests placed before an instance's build counts as finished (its io_op released).
BUILD_WINDOW = 200
#: Share of requests that name an AZ, and that belong to an anti-affinity group.
AZ_SHARE = 0.3
GROUP_SHARE = 0.15

Placement = str | None  # host name, or None when no host was valid


@dataclass
class Workload:
    """Seeded hosts and requests; :meth:`fresh` gives an independent copy to place into."""

    hosts: list[HostState]
    requests: list[RequestSpec]

    def fresh(self) -> tuple[list[HostState], list[RequestSpec]]:
        """Deep copies of hosts and requests; group states are shared within one copy only."""
        copied: Any = copy.deepcopy((self.hosts, self.requests))
        hosts: list[HostState] = copied[0]
        requests: list[RequestSpec] = copied[1]
        return hosts, requests


def make_hosts(n: int, rng: random.Random) -> list[HostState]:
    """``n`` hosts over three AZs with varied capacity; a few disabled, down or reserved."""
    hosts = []
    for i in range(n):
        hosts.append(
            HostState(
                name=f"cmp-{i:05d}",
                uuid=f"00000000-0000-0000-0000-{i:012d}",
                availability_zone=AZS[rng.randrange(len(AZS))],
                enabled=rng.random() > 0.02,
                is_up=rng.random() > 0.02,
                vcpus_total=rng.choice((16, 24, 32, 48, 64)),
                memory_mb_total=rng.choice((65536, 131072, 196608, 262144)),
                disk_gb_total=rng.choice((500, 1000, 2000, 4000)),
                cpu_allocation_ratio=rng.choice((1.0, 2.0, 4.0)),
                ram_allocation_ratio=rng.choice((1.0, 1.0, 1.5)),
                reserved_memory_mb=rng.choice((0, 512, 4096)),
                reserved_cpus=rng.choice((0, 0, 2)),
                failed_builds=1 if rng.random() < 0.01 else 0,
            )
        )
    return hosts


def make_requests(n: int, rng: random.Random) -> list[RequestSpec]:
    """``n`` one-instance requests over four flavors; some with an AZ, some in groups of 3..10."""
    names = list(FLAVORS)
    requests: list[RequestSpec] = []
    open_groups: list[tuple[GroupState, int]] = []  # group, members still to come
    made = 0
    for _ in range(n):
        flavor = rng.choice(names)
        vcpus, memory_mb, disk_gb = FLAVORS[flavor]
        az = rng.choice(AZS) if rng.random() < AZ_SHARE else None
        group: GroupState | None = None
        if rng.random() < GROUP_SHARE:
            if open_groups and rng.random() < 0.8:
                index = rng.randrange(len(open_groups))
                group, left = open_groups[index]
                if left <= 1:
                    open_groups.pop(index)
                else:
                    open_groups[index] = (group, left - 1)
            else:
                made += 1
                group = GroupState(
                    name=f"grp-{made:05d}",
                    policy="anti-affinity",
                    max_server_per_host=rng.choice((None, 1, 2)),
                )
                open_groups.append((group, rng.randint(2, 9)))
        requests.append(
            RequestSpec(
                vcpus=vcpus,
                memory_mb=memory_mb,
                disk_gb=disk_gb,
                availability_zone=az,
                flavor_name=flavor,
                group=group,
            )
        )
    return requests


def make_workload(hosts: int, requests: int, seed: int) -> Workload:
    """Deterministic inputs for one workload."""
    rng = random.Random(seed)
    return Workload(make_hosts(hosts, rng), make_requests(requests, rng))


def make_filters() -> list[HostFilter]:
    """The default filters, as a deployment without configuration runs them."""
    return load_filters(DEFAULT_FILTERS)


def make_weighers() -> list[tuple[HostWeigher, float]]:
    """The default weighers with their default multipliers."""
    return load_weighers(dict(DEFAULT_WEIGHERS))


class BuildTracker:
    """Releases each placement's io_op after :data:`BUILD_WINDOW` more requests (both sides).

    ``on_change`` hears of each host whose build finished (a placement session must know).
    """

    def __init__(
        self,
        hosts: Sequence[HostState],
        window: int = BUILD_WINDOW,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.by_name = {h.name: h for h in hosts}
        self.window = window
        self.on_change = on_change
        self.in_flight: deque[Placement] = deque()

    def placed(self, host: Placement) -> None:
        """Record one request's outcome; finish the build that is now old enough."""
        self.in_flight.append(host)
        if len(self.in_flight) > self.window:
            done = self.in_flight.popleft()
            if done is not None:
                self.by_name[done].num_io_ops -= 1
                if self.on_change is not None:
                    self.on_change(done)


def reference_place(
    hosts: list[HostState],
    requests: Sequence[RequestSpec],
    filters: Sequence[HostFilter],
    weighers: Sequence[tuple[HostWeigher, float]],
) -> list[Placement]:
    """The straightforward FilterScheduler: full filter and weigh pass per request."""
    tracker = BuildTracker(hosts)
    out: list[Placement] = []
    for spec in requests:
        passing = [h for h in hosts if all(f.host_passes(h, spec).passed for f in filters)]
        if not passing:
            out.append(None)
            tracker.placed(None)
            continue
        totals = [0.0] * len(passing)
        for weigher, multiplier in weighers:
            raw = [weigher.weigh(h, spec) for h in passing]
            lo, hi = min(raw), max(raw)
            if hi == lo:
                continue  # every host scores 0 for this weigher
            span = hi - lo
            for i, value in enumerate(raw):
                totals[i] += (value - lo) / span * multiplier
        best = min(range(len(passing)), key=lambda i: (-totals[i], passing[i].name))
        chosen = passing[best]
        chosen.consume(spec)
        if spec.group is not None:
            spec.group.members_per_host[chosen.name] += 1
        out.append(chosen.name)
        tracker.placed(chosen.name)
    return out


def cloudctl_place(
    scheduler: FilterScheduler,
    hosts: list[HostState],
    requests: Sequence[RequestSpec],
    deadline: float | None = None,
) -> list[Placement]:
    """Each request through a :class:`PlacementSession` (one instance each), as plan does.

    Stops early (returning fewer placements) once ``deadline`` (``time.perf_counter``) passes.
    """
    session = PlacementSession(scheduler, hosts)
    tracker = BuildTracker(hosts, on_change=session.host_changed)
    out: list[Placement] = []
    for spec in requests:
        if deadline is not None and time.perf_counter() > deadline:
            break
        try:
            [selection] = session.select(spec, 1)
            name: Placement = selection.host.name
        except NoValidHost:
            name = None
        out.append(name)
        tracker.placed(name)
    return out


@dataclass(frozen=True)
class Timed:
    """Placements and the seconds they took."""

    placements: list[Placement]
    seconds: float

    @property
    def rate(self) -> float:
        """Decisions per second."""
        return len(self.placements) / self.seconds if self.seconds > 0 else float("inf")


def time_reference(workload: Workload, k: int) -> Timed:
    """The reference over the first ``k`` requests of a fresh copy."""
    hosts, requests = workload.fresh()
    filters, weighers = make_filters(), make_weighers()
    start = time.perf_counter()
    placements = reference_place(hosts, requests[:k], filters, weighers)
    return Timed(placements, time.perf_counter() - start)


def time_cloudctl(workload: Workload, k: int | None = None, budget_s: float | None = None) -> Timed:
    """cloudctl over the first ``k`` (default all) requests of a fresh copy."""
    hosts, requests = workload.fresh()
    scheduler = FilterScheduler(make_filters(), make_weighers(), rng=random.Random(0))
    start = time.perf_counter()
    deadline = None if budget_s is None else start + budget_s
    placements = cloudctl_place(scheduler, hosts, requests[:k], deadline)
    return Timed(placements, time.perf_counter() - start)


@dataclass(frozen=True)
class Target:
    """The issue's goal for one workload."""

    decisions_per_s: float
    speedup: float


TARGETS = {"W1": Target(20_000, 10), "W2": Target(5_000, 20)}


def run_workload(
    label: str,
    hosts: int,
    requests: int,
    reference_requests: int,
    *,
    seed: int,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Place ``requests`` with cloudctl and the first ``reference_requests`` with both; compare."""
    workload = make_workload(hosts, requests, seed)
    jit_s = warm_up()  # once per process; not a per-decision cost
    k = min(reference_requests, requests)
    ref = time_reference(workload, k)
    ours_prefix = time_cloudctl(workload, k)
    ours = ours_prefix if k == requests else time_cloudctl(workload, None, budget_s)
    identical = ours_prefix.placements == ref.placements
    pairs = zip(ours_prefix.placements, ref.placements, strict=False)  # lengths may differ
    first_diff = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
    target = TARGETS.get(label)
    speedup = ours_prefix.rate / ref.rate
    result: dict[str, Any] = {
        "workload": label,
        "kind": "placement",
        "hosts": hosts,
        "requests": requests,
        "requests_placed_by_cloudctl": len(ours.placements),
        "completed": len(ours.placements) == requests,
        "decisions_per_s": round(ours.rate, 1),
        "seconds": round(ours.seconds, 3),
        "prefix_decisions_per_s": round(ours_prefix.rate, 1),
        "reference_requests": k,
        "reference_decisions_per_s": round(ref.rate, 1),
        "reference_seconds": round(ref.seconds, 3),
        "speedup": round(speedup, 2),
        "identical_placements": identical,
        "kernel_compile_s": round(jit_s, 3),
        "first_difference": first_diff,
        "no_valid_host": sum(p is None for p in ours.placements),
        "anti_affinity_requests": sum(r.group is not None for r in workload.requests),
        "az_requests": sum(r.availability_zone is not None for r in workload.requests),
        "seed": seed,
        "filters": list(DEFAULT_FILTERS),
        "weighers": dict(DEFAULT_WEIGHERS),
        "target_decisions_per_s": target.decisions_per_s if target else None,
        "target_speedup": target.speedup if target else None,
    }
    if target is not None:
        result["target_met"] = (
            ours.rate >= target.decisions_per_s and speedup >= target.speedup and identical
        )
    return result


def spread(placements: Sequence[Placement]) -> Counter[str]:
    """Instances per host (for the smoke test)."""
    return Counter(p for p in placements if p is not None)
