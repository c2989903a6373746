"""The scheduler benchmark harness on tiny inputs: it runs, agrees with itself, checks the ledger."""

from __future__ import annotations

import pytest
from benchmarks import claims, placement, scheduler_workloads


def test_workload_is_deterministic() -> None:
    a = placement.make_workload(30, 50, seed=3)
    b = placement.make_workload(30, 50, seed=3)
    assert [h.name for h in a.hosts] == [h.name for h in b.hosts]
    assert [(r.flavor_name, r.availability_zone) for r in a.requests] == [
        (r.flavor_name, r.availability_zone) for r in b.requests
    ]
    assert any(r.group is not None for r in a.requests)
    assert any(r.availability_zone is not None for r in a.requests)


def test_reference_and_cloudctl_place_identically() -> None:
    workload = placement.make_workload(15, 400, seed=5)
    ref = placement.time_reference(workload, 400)
    ours = placement.time_cloudctl(workload)
    assert ours.placements == ref.placements
    assert None in ref.placements  # the small cluster fills up: NoValidHost is exercised
    # Hard anti-affinity held: no group has more members on a host than it allows.
    _hosts, requests = workload.fresh()
    for spec, host in zip(requests, ref.placements, strict=True):
        if spec.group is not None and host is not None:
            spec.group.members_per_host[host] += 1
            assert spec.group.members_per_host[host] <= (spec.group.max_server_per_host or 1)


def test_run_workload_row_has_the_recorded_fields() -> None:
    row = placement.run_workload("W1", 30, 40, 20, seed=1)
    for key in (
        "workload",
        "hosts",
        "requests",
        "decisions_per_s",
        "reference_decisions_per_s",
        "speedup",
        "identical_placements",
        "reference_requests",
    ):
        assert key in row
    assert row["identical_placements"] is True
    assert row["reference_requests"] == 20
    assert "W1" in scheduler_workloads.report([row])


def test_sqlite_claim_race_never_overcommits() -> None:
    row = claims.sqlite_race(processes=2, claims=15, hosts=2, seed=1)
    assert row["committed"] + row["refused"] == 30
    assert row["refused_no_valid_host"] > 0
    assert row["over_commit"] == 0
    assert row["allocations_match"] is True


@pytest.mark.integration
def test_postgres_claim_race_never_overcommits() -> None:
    row = claims.postgres_race(processes=2, claims=10, hosts=2, seed=1)
    assert row["committed"] + row["refused"] == 20
    assert row["over_commit"] == 0
    assert row["allocations_match"] is True
