"""Filter, weigh, normalise, pick, consume: Nova's FilterScheduler, with an explain trace."""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cloudctl.errors import NoValidHost
from cloudctl.scheduler.filters import HostFilter
from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.weighers import HostWeigher


@dataclass(frozen=True)
class Rejection:
    """A host a filter removed, and why."""

    host: str
    filter: str
    reason: str


@dataclass(frozen=True)
class WeighedHost:
    """A host that passed every filter, with its per-weigher and total weights."""

    host: str
    weight: float
    weights: Mapping[str, float]


@dataclass(frozen=True)
class Selection:
    """The host chosen for one instance, the runners-up, and the trace behind the choice."""

    host: HostState
    alternates: tuple[str, ...]
    weighed: tuple[WeighedHost, ...]
    rejections: tuple[Rejection, ...]


def normalize(values: Sequence[float]) -> list[float]:
    """Scale to 0..1 (Nova's weights.normalize); all-equal values become 0."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.0 for _ in values]
    span = hi - lo
    return [(v - lo) / span for v in values]


class FilterScheduler:
    """Pick hosts for a request; pure, deterministic given ``rng``."""

    def __init__(
        self,
        filters: Sequence[HostFilter],
        weighers: Sequence[tuple[HostWeigher, float]],
        *,
        host_subset_size: int = 1,
        max_alternates: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        self.filters = list(filters)
        self.weighers = list(weighers)
        self.host_subset_size = max(1, host_subset_size)
        self.max_alternates = max_alternates
        self.rng = rng or random.Random()

    def filter_hosts(
        self, hosts: Sequence[HostState], spec: RequestSpec, *, first: bool = True
    ) -> tuple[list[HostState], list[Rejection]]:
        """Run the filters in order; return survivors and the rejections."""
        survivors = list(hosts)
        rejections: list[Rejection] = []
        for flt in self.filters:
            if flt.run_filter_once_per_request and not first:
                continue
            kept: list[HostState] = []
            for host in survivors:
                verdict = flt.host_passes(host, spec)
                if verdict.passed:
                    kept.append(host)
                else:
                    rejections.append(Rejection(host.name, flt.name, verdict.reason))
            survivors = kept
            if not survivors:
                break
        return survivors, rejections

    def weigh_hosts(self, hosts: Sequence[HostState], spec: RequestSpec) -> list[WeighedHost]:
        """Normalise each weigher's raw scores to 0..1, multiply and sum; best first."""
        totals = [0.0] * len(hosts)
        per_host: list[dict[str, float]] = [{} for _ in hosts]
        for weigher, multiplier in self.weighers:
            raw = [weigher.weigh(h, spec) for h in hosts]
            for i, value in enumerate(normalize(raw)):
                weighted = value * multiplier
                per_host[i][weigher.name] = weighted
                totals[i] += weighted
        weighed = [WeighedHost(h.name, totals[i], per_host[i]) for i, h in enumerate(hosts)]
        # Stable tie-break on name keeps placements reproducible in tests and plans.
        weighed.sort(key=lambda w: (-w.weight, w.host))
        return weighed

    def _filter_pass(
        self,
        hosts: Sequence[HostState],
        filters: Sequence[HostFilter],
        spec: RequestSpec,
        blame: dict[str, list[Any]],
    ) -> list[HostState]:
        """Hosts passing every filter, in order; rejections only counted, one reason kept each."""
        survivors = list(hosts)
        for flt in filters:
            kept: list[HostState] = []
            for host in survivors:
                verdict = flt.host_passes(host, spec)
                if verdict.passed:
                    kept.append(host)
                else:
                    entry = blame.get(flt.name)
                    if entry is None:
                        blame[flt.name] = [1, host.name, verdict.reason]
                    else:
                        entry[0] += 1
            survivors = kept
            if not survivors:
                break
        return survivors

    def _weigh_top(
        self,
        hosts: Sequence[HostState],
        spec: RequestSpec,
        weighers: Sequence[tuple[HostWeigher, float]],
        keep: int,
    ) -> list[WeighedHost]:
        """The ``keep`` best hosts, scored exactly as :meth:`weigh_hosts` scores them."""
        totals = [0.0] * len(hosts)
        columns: list[tuple[str, list[float]]] = []
        for weigher, multiplier in weighers:
            weighted = [v * multiplier for v in normalize([weigher.weigh(h, spec) for h in hosts])]
            for i, w in enumerate(weighted):
                totals[i] += w
            columns.append((weigher.name, weighted))
        best = heapq.nsmallest(keep, range(len(hosts)), key=lambda i: (-totals[i], hosts[i].name))
        return [
            WeighedHost(hosts[i].name, totals[i], {name: col[i] for name, col in columns})
            for i in best
        ]

    def select(
        self,
        hosts: Sequence[HostState],
        spec: RequestSpec,
        count: int | None = None,
        *,
        min_count: int | None = None,
    ) -> list[Selection]:
        """Place ``count`` (default ``spec.num_instances``) instances, consuming as it goes.

        All or nothing, unless ``min_count``: then as many as fit if that is at least
        ``min_count``. Raises :class:`NoValidHost` naming how many hosts each filter removed.
        Filters and weighers that cannot act on ``spec`` are skipped (they would pass every
        host or score every host the same); placements are those of the full pipeline.
        """
        wanted = spec.num_instances if count is None else count
        by_name = {h.name: h for h in hosts}
        filters = [f for f in self.filters if f.applies(spec)]
        per_pick = [f for f in filters if not f.run_filter_once_per_request]
        weighers = [(w, m) for w, m in self.weighers if w.applies(spec)]
        keep = max(self.host_subset_size, self.max_alternates + 1)
        candidates: Sequence[HostState] = hosts
        selections: list[Selection] = []
        for index in range(wanted):
            blame: dict[str, list[Any]] = {}
            if index == 0:
                survivors = self._filter_pass(hosts, filters, spec, blame)
                # Once-per-request verdicts hold for every instance: keep only their survivors.
                once = [f for f in filters if f.run_filter_once_per_request]
                candidates = self._filter_pass(hosts, once, spec, {}) if per_pick else survivors
            else:
                survivors = self._filter_pass(candidates, per_pick, spec, blame)
            if not survivors:
                if min_count is not None and index >= min_count:
                    return selections
                _, rejections = self.filter_hosts(candidates if index else hosts, spec)
                raise NoValidHost(
                    reason=describe_rejections(len(hosts), rejections, index, wanted),
                    rejections=[(r.host, r.filter, r.reason) for r in rejections],
                )
            weighed = self._weigh_top(survivors, spec, weighers, keep)
            subset = weighed[: self.host_subset_size]
            chosen = subset[0] if len(subset) == 1 else self.rng.choice(subset)
            host = by_name[chosen.host]
            host.consume(spec)
            if spec.group is not None:
                # The next instance of this request sees this one as a group member.
                spec.group.members_per_host[host.name] += 1
            alternates = tuple(w.host for w in weighed if w.host != chosen.host)[
                : self.max_alternates
            ]
            selections.append(Selection(host, alternates, tuple(weighed), ()))
        return selections


def describe_rejections(
    total: int, rejections: Sequence[Rejection], index: int = 0, wanted: int = 1
) -> str:
    """One line: how many hosts each filter removed, with a sample reason each."""
    if total == 0:
        return "there are no compute hosts registered"
    counts: dict[str, int] = {}
    sample: dict[str, str] = {}
    for r in rejections:
        counts[r.filter] = counts.get(r.filter, 0) + 1
        sample.setdefault(r.filter, f"{r.host}: {r.reason}")
    parts = [f"{name} removed {n} ({sample[name]})" for name, n in counts.items()]
    prefix = f"{total} host(s) considered"
    if wanted > 1:
        prefix = f"placed {index} of {wanted} instance(s); {prefix}"
    return prefix + "; " + "; ".join(parts)


@dataclass(frozen=True)
class HostExplanation:
    """One host in ``schedule explain``: why it was rejected, or its weights and rank."""

    host: str
    passed: bool
    rejected_by: str | None
    reason: str
    weights: Mapping[str, float]
    weight: float | None
    rank: int | None


def explain(
    scheduler: FilterScheduler, hosts: Sequence[HostState], spec: RequestSpec
) -> list[HostExplanation]:
    """Every host with the first filter that rejected it (and the numbers), or its weights.

    Uses the same filters and weighers as :meth:`FilterScheduler.select`; nothing is consumed.
    """
    out: dict[str, HostExplanation] = {}
    passing: list[HostState] = []
    for host in hosts:
        verdict = next(
            (
                (f.name, r.reason)
                for f in scheduler.filters
                if not (r := f.host_passes(host, spec)).passed
            ),
            None,
        )
        if verdict is None:
            passing.append(host)
        else:
            out[host.name] = HostExplanation(
                host.name, False, verdict[0], verdict[1], {}, None, None
            )
    for rank, w in enumerate(scheduler.weigh_hosts(passing, spec), start=1):
        out[w.host] = HostExplanation(w.host, True, None, "", dict(w.weights), w.weight, rank)
    return sorted(out.values(), key=lambda e: (e.rank is None, e.rank or 0, e.host))


def capacity(
    scheduler: FilterScheduler, hosts: Sequence[HostState], spec: RequestSpec, limit: int = 100_000
) -> dict[str, int]:
    """How many more instances of ``spec`` each host takes (Ganeti's hspace), by consuming a copy.

    Counts per host independently: the total is what fits if every host is filled.
    """
    fits: dict[str, int] = {}
    single = replace(spec, num_instances=1)
    for original in hosts:
        host = replace(original)
        n = 0
        while n < limit and all(f.host_passes(host, single).passed for f in scheduler.filters):
            host.consume(single)
            host.num_io_ops = original.num_io_ops  # builds finish; capacity counts what stays
            n += 1
        fits[original.name] = n
    return fits
