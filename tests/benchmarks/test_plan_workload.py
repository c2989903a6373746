"""The plan benchmark's builders at a small size: the books and files agree, the drift is exact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks import plan as bench

from cloudctl.services import gitops, reconcile


@pytest.fixture
def books(tmp_path: Path) -> Iterator[bench.Books]:
    built = bench.build_books(tmp_path, hosts=20, servers=100)
    yield built
    built.ctx.db.dispose()


def test_the_books_match_the_files_so_the_plan_is_a_no_op(books: bench.Books) -> None:
    plan = gitops.make_plan(books.ctx, books.path)
    assert plan.errors == []
    assert bench.changes_of(plan) == {}
    assert not plan.has_changes
    assert plan.diff.unmanaged == () and plan.diff.undeclared == ()
    assert sum(1 for c in plan.diff.changes if c.kind == "Server") == 100
    assert len(plan.capacity) == 20
    with books.ctx.db.unit_of_work() as session:  # allocations = what the servers hold
        assert reconcile.ledger_findings(session, books.ctx.clock()) == []


def test_the_drift_plan_shows_exactly_the_intended_changes(books: bench.Books) -> None:
    drift = bench.add_drift(books, 10)
    actions = list(drift.expected.values())
    assert (actions.count("create"), actions.count("update")) == (8, 2)
    plan = gitops.make_plan(books.ctx, books.path)
    assert plan.errors == []
    assert bench.changes_of(plan) == dict(drift.expected)
    creates = {name for (_, name), action in drift.expected.items() if action == "create"}
    assert set(plan.placements) == creates  # the placement session placed every one
    updates = [c for c in plan.diff.changes if c.action == "update"]
    assert sorted(f.field for c in updates for f in c.fields) == ["metadata", "power_state"]
    assert {c.impact for c in updates} == {"live"}
    zones = {h: f"az{i % 4 + 1}" for i, h in enumerate(f"cmp-{i:05d}" for i in range(20))}
    for doc in bench.DOCS:  # a document's AZ is honoured by the new replicas
        for name, placed in plan.placements.items():
            if name.startswith(f"{doc.name}-") and doc.availability_zone:
                assert zones[placed.host] == doc.availability_zone


def test_measure_reports_rows_growth_and_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench.measure((50, 100), hosts=20, runs=1)
    rows = result["rows"]
    assert [(r["workload"], r["servers"]) for r in rows] == [
        ("no-op", 50),
        ("no-op", 100),
        ("drift-1%", 100),
    ]
    assert all(r["changes_as_intended"] for r in rows)
    assert [r["changes"] for r in rows] == [0, 0, 10]
    assert all(r["target_met"] is None for r in rows)  # the targets are for 10,000 servers
    assert result["growth"]["seconds_per_1000_servers"] is not None
    table = bench.report(result)
    assert "drift-1%" in table and "growth:" in table
    capsys.readouterr()
