"""Placing a multi-create over many hosts: cloudctl's one read + in-memory consume versus the
naive reference that re-reads the ledger from SQL and claims once per instance (what a scheduler
without ``consume_from_request`` does)."""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from cloudctl import ledger
from cloudctl.db.models import Host, utcnow
from cloudctl.db.session import Database
from cloudctl.scheduler.host_state import RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler
from cloudctl.scheduler.registry import DEFAULT_FILTERS, load_filters, load_weighers
from cloudctl.services.compute import host_states

RES = {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20}
SPEC = RequestSpec(vcpus=2, memory_mb=2048, disk_gb=20)


def _scheduler() -> FilterScheduler:
    return FilterScheduler(load_filters(DEFAULT_FILTERS), load_weighers({"RAMWeigher": 1.0}))


def _populate(db: Database, hosts: int, existing: int, seed: int) -> None:
    rng = random.Random(seed)
    now = utcnow()
    with db.unit_of_work() as s:
        rows = [
            Host(
                uuid=str(uuid.UUID(int=rng.getrandbits(128))),
                name=f"cmp-{i:05d}",
                libvirt_uri="qemu:///system",
                instances_path="/var/lib/cloudctl/instances",
                vcpus=64,
                memory_mb=262144,
                local_gb=2000,
                reserved_host_memory_mb=0,
                availability_zone=f"az{i % 3 + 1}",
                last_heartbeat=now,
            )
            for i in range(hosts)
        ]
        s.add_all(rows)
        s.flush()
        for _ in range(existing):
            h = rows[rng.randrange(hosts)]
            ledger.claim(s, h, str(uuid.UUID(int=rng.getrandbits(128))), RES, h.generation)


def _cloudctl(db: Database, count: int) -> list[str]:
    with db.unit_of_work() as s:
        rows = {h.name: h for h in s.scalars(select(Host))}
        states = host_states(s, rows.values(), utcnow(), 3600)
        picks = _scheduler().select(states, SPEC, count)
        gens = {h.name: h.generation for h in states}
        for p in picks:
            gens[p.host.name] = ledger.claim(
                s, rows[p.host.name], str(uuid.uuid4()), RES, gens[p.host.name]
            )
        return [p.host.name for p in picks]


def _naive(db: Database, count: int) -> list[str]:
    placed = []
    for _ in range(count):
        with db.unit_of_work() as s:
            rows = {h.name: h for h in s.scalars(select(Host))}
            states = host_states(s, rows.values(), utcnow(), 3600)
            [pick] = _scheduler().select(states, SPEC, 1)
            host = rows[pick.host.name]
            ledger.claim(s, host, str(uuid.uuid4()), RES, host.generation)
            placed.append(host.name)
    return placed


def run(hosts: int = 1000, existing: int = 5000, count: int = 50) -> dict[str, float]:
    """Time both over identical fresh databases; placements must agree."""
    timings: dict[str, float] = {}
    results: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, fn in (("naive", _naive), ("cloudctl", _cloudctl)):
            db = Database(f"sqlite:///{Path(tmp) / label}.db")
            db.ensure_schema()
            _populate(db, hosts, existing, seed=7)
            start = time.perf_counter()
            results[label] = fn(db, count)
            timings[label] = time.perf_counter() - start
            db.dispose()
    assert results["naive"] == results["cloudctl"], "placements differ"
    print(
        f"scheduler: place {count} instances over {hosts} hosts ({existing} allocations): "
        f"cloudctl {timings['cloudctl'] * 1000:.0f} ms, naive per-instance re-read "
        f"{timings['naive'] * 1000:.0f} ms, ratio {timings['naive'] / timings['cloudctl']:.1f}x"
    )
    return timings
