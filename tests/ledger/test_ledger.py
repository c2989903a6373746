"""Ledger claims are compare-and-swap on the host generation; releases free the capacity."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cloudctl import ledger
from cloudctl.db.models import Allocation, Host
from cloudctl.services.context import Context
from tests.conftest import add_host

# These tests write allocations for made-up consumers on purpose.
pytestmark = pytest.mark.ledger_edited

RES = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}


def test_claim_then_usage_then_release(ctx: Context) -> None:
    add_host(ctx, "h1")
    with ctx.db.unit_of_work() as s:
        h = s.scalars(select(Host)).one()
        gen = ledger.claim(s, h, "c1", RES, h.generation)
        ledger.claim(s, h, "c2", RES, gen)
    with ctx.db.unit_of_work() as s:
        h = s.scalars(select(Host)).one()
        usage = ledger.usage_by_host(s)[h.id]
        assert (usage.vcpus, usage.memory_mb, usage.disk_gb) == (2, 1024, 2)
        assert usage.consumers == {"c1", "c2"}
        assert h.generation == 2
        assert ledger.release(s, "c1") == 3
    with ctx.db.unit_of_work() as s:
        assert {a.consumer_uuid for a in s.scalars(select(Allocation))} == {"c2"}
        assert s.scalars(select(Host)).one().generation == 3


def test_stale_generation_is_refused(ctx: Context) -> None:
    add_host(ctx, "h1")
    with ctx.db.unit_of_work() as s:
        h = s.scalars(select(Host)).one()
        stale = h.generation
        ledger.claim(s, h, "c1", RES, stale)
    with pytest.raises(ledger.GenerationConflict), ctx.db.unit_of_work() as s:
        h = s.scalars(select(Host)).one()
        ledger.claim(s, h, "c2", RES, stale)
    with ctx.db.unit_of_work() as s:
        assert [a.consumer_uuid for a in s.scalars(select(Allocation))] == ["c1"] * 3


@pytest.mark.parametrize(
    ("flavor", "expected"),
    [
        ((1, 512, 1, 0, 0), (1, 512, 1)),
        ((2, 1024, 10, 5, 1), (2, 1024, 16)),
        ((1, 64, 0, 0, 1025), (1, 64, 2)),
    ],
)
def test_resources_for(
    flavor: tuple[int, int, int, int, int], expected: tuple[int, int, int]
) -> None:
    r = ledger.resources_for(*flavor)
    assert (r["VCPU"], r["MEMORY_MB"], r["DISK_GB"]) == expected
