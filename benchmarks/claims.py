"""Concurrent claims: processes racing to schedule and claim into a cluster that fits only part.

Each claim reads the hosts and their usage in one transaction, schedules one instance with the
FilterScheduler, creates its Instance row (ACTIVE) and claims with :func:`cloudctl.ledger.claim`
(compare-and-swap on the host's generation). A :class:`~cloudctl.ledger.GenerationConflict`, or a
database lock/serialization error, rolls the transaction back and is retried a bounded number of
times; after that, or on NoValidHost, the claim is refused. Afterwards the ledger is checked:
no host over-committed, every claim committed or refused, allocations equal to the ACTIVE
instances' resources.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from cloudctl import ledger
from cloudctl.db.models import Allocation, Flavor, Host, Instance, utcnow
from cloudctl.db.session import Database
from cloudctl.domain.states import PowerState, VmState
from cloudctl.errors import NoValidHost
from cloudctl.scheduler.host_state import RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler
from cloudctl.scheduler.registry import (
    DEFAULT_FILTERS,
    DEFAULT_WEIGHERS,
    load_filters,
    load_weighers,
)
from cloudctl.services.compute import host_states

#: name -> (vcpus, memory_mb, root_gb)
FLAVORS: dict[str, tuple[int, int, int]] = {
    "b.small": (1, 2048, 20),
    "b.medium": (2, 4096, 40),
    "b.large": (4, 8192, 80),
    "b.xlarge": (8, 16384, 160),
}
#: Attempts per claim before it counts as refused (boot's CLAIM_RETRIES is 10 too).
CLAIM_RETRIES = 10
REPO = Path(__file__).resolve().parent.parent


@dataclass
class WorkerStats:
    """One process's counts."""

    committed: int = 0
    refused_no_valid_host: int = 0
    refused_conflicts: int = 0
    conflicts: int = 0
    db_errors: int = 0


def _populate(db: Database, hosts: int, seed: int) -> None:
    rng = random.Random(seed)
    now = utcnow()
    with db.unit_of_work() as s:
        for i in range(hosts):
            s.add(
                Host(
                    uuid=str(uuid.UUID(int=rng.getrandbits(128))),
                    name=f"cmp-{i:03d}",
                    libvirt_uri="qemu:///system",
                    instances_path="/var/lib/cloudctl/instances",
                    vcpus=rng.choice((16, 24, 32)),
                    memory_mb=rng.choice((32768, 65536)),
                    local_gb=rng.choice((500, 1000)),
                    cpu_allocation_ratio=1.0,
                    reserved_host_memory_mb=512,
                    availability_zone=f"az{i % 3 + 1}",
                    last_heartbeat=now,
                )
            )
        for name, (vcpus, memory_mb, root_gb) in FLAVORS.items():
            s.add(
                Flavor(
                    flavorid=str(uuid.UUID(int=rng.getrandbits(128))),
                    name=name,
                    vcpus=vcpus,
                    memory_mb=memory_mb,
                    root_gb=root_gb,
                )
            )


def _scheduler(rng: random.Random) -> FilterScheduler:
    return FilterScheduler(
        load_filters(DEFAULT_FILTERS), load_weighers(dict(DEFAULT_WEIGHERS)), rng=rng
    )


def _claim_once(
    db: Database, scheduler: FilterScheduler, flavor_name: str, worker: int, n: int
) -> None:
    """One attempt; raises NoValidHost, GenerationConflict or a DBAPIError to roll back."""
    with db.unit_of_work() as s:
        flavor = s.scalars(select(Flavor).where(Flavor.name == flavor_name)).one()
        rows = {h.name: h for h in s.scalars(select(Host).where(Host.deleted == 0))}
        states = host_states(s, rows.values(), utcnow(), 3600)
        spec = RequestSpec(
            vcpus=flavor.vcpus,
            memory_mb=flavor.memory_mb,
            disk_gb=flavor.root_gb,
            flavor_name=flavor.name,
        )
        [selection] = scheduler.select(states, spec, 1)
        host = rows[selection.host.name]
        inst_uuid = str(uuid.uuid4())
        s.add(
            Instance(
                uuid=inst_uuid,
                name=f"bench-{worker}-{n}",
                hostname=f"bench-{worker}-{n}",
                project_id="bench",
                user_id="bench",
                flavor=flavor,
                domain_name=f"instance-{inst_uuid}",
                vcpus=flavor.vcpus,
                memory_mb=flavor.memory_mb,
                root_gb=flavor.root_gb,
                vm_state=VmState.ACTIVE,
                power_state=PowerState.RUNNING,
                host=host,
                availability_zone=host.availability_zone,
            )
        )
        resources = ledger.resources_for(flavor.vcpus, flavor.memory_mb, flavor.root_gb, 0, 0)
        ledger.claim(s, host, inst_uuid, resources, selection.host.generation)


def _worker(url: str, worker: int, claims: int, seed: int, start: Any, out: Any) -> None:
    db = Database(url)
    rng = random.Random(seed * 1000 + worker)
    scheduler = _scheduler(rng)
    stats = WorkerStats()
    flavor_names = list(FLAVORS)
    start.wait()
    for n in range(claims):
        flavor_name = rng.choice(flavor_names)
        for attempt in range(1, CLAIM_RETRIES + 1):
            try:
                _claim_once(db, scheduler, flavor_name, worker, n)
            except NoValidHost:
                stats.refused_no_valid_host += 1
                break
            except (ledger.GenerationConflict, DBAPIError) as exc:
                if isinstance(exc, ledger.GenerationConflict):
                    stats.conflicts += 1
                else:
                    stats.db_errors += 1
                if attempt == CLAIM_RETRIES:
                    stats.refused_conflicts += 1
                    break
                time.sleep(rng.uniform(0.0, 0.002 * attempt))
            else:
                stats.committed += 1
                break
    db.dispose()
    out.put((worker, asdict(stats)))


@dataclass(frozen=True)
class Verification:
    """What the ledger looks like after the race."""

    over_commit: int
    allocations_match: bool
    active_instances: int


def verify(db: Database) -> Verification:
    """Over-committed hosts, and whether allocations equal the ACTIVE instances' resources."""
    with db.unit_of_work() as s:
        hosts = list(s.scalars(select(Host)))
        usage = ledger.usage_by_host(s)
        over = 0
        for h in hosts:
            u = usage.get(h.id, ledger.HostUsage())
            limits = (
                h.vcpus * h.cpu_allocation_ratio - h.reserved_host_cpus,
                h.memory_mb * h.ram_allocation_ratio - h.reserved_host_memory_mb,
                h.local_gb * h.disk_allocation_ratio - h.reserved_host_disk_gb,
            )
            used = (u.vcpus, u.memory_mb, u.disk_gb)
            if any(amount > limit for amount, limit in zip(used, limits, strict=True)):
                over += 1
        expected: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
        active = s.scalars(
            select(Instance).where(Instance.deleted == 0, Instance.vm_state == VmState.ACTIVE)
        ).all()
        for inst in active:
            assert inst.host_id is not None
            res = ledger.resources_for(inst.vcpus, inst.memory_mb, inst.root_gb, 0, 0)
            expected[(inst.host_id, inst.uuid)] = {k: v for k, v in res.items() if v}
        actual: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
        for a in s.scalars(select(Allocation)):
            actual[(a.host_id, a.consumer_uuid)][a.resource_class] = a.used
        return Verification(over, dict(expected) == dict(actual), len(active))


def race(url: str, *, processes: int, claims: int, hosts: int, seed: int) -> dict[str, Any]:
    """Populate ``url``, run the processes, verify; one result row (backend added by caller)."""
    db = Database(url)
    db.ensure_schema()
    _populate(db, hosts, seed)
    db.dispose()
    ctx = mp.get_context("fork")
    start = ctx.Event()
    out: Any = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, w, claims, seed, start, out))
        for w in range(processes)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let every process import and connect before the gun
    began = time.perf_counter()
    start.set()
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - began
    for p in procs:
        p.join()
    totals = WorkerStats()
    for _, stats in results:
        for key, value in stats.items():
            setattr(totals, key, getattr(totals, key) + value)
    db = Database(url)
    checked = verify(db)
    db.dispose()
    refused = totals.refused_no_valid_host + totals.refused_conflicts
    total = processes * claims
    return {
        "processes": processes,
        "claims": total,
        "hosts": hosts,
        "committed": totals.committed,
        "refused": refused,
        "refused_no_valid_host": totals.refused_no_valid_host,
        "refused_after_retries": totals.refused_conflicts,
        "generation_conflicts": totals.conflicts,
        "db_lock_errors": totals.db_errors,
        "all_accounted": totals.committed + refused == total,
        "claims_per_s": round(total / elapsed, 1),
        "seconds": round(elapsed, 3),
        "over_commit": checked.over_commit,
        "allocations_match": checked.allocations_match
        and checked.active_instances == totals.committed,
    }


def sqlite_race(processes: int, claims: int, hosts: int, seed: int) -> dict[str, Any]:
    """The race on a temporary SQLite file (WAL, as cloudctl configures it)."""
    with tempfile.TemporaryDirectory() as tmp:
        row = race(
            f"sqlite:///{Path(tmp) / 'claims.db'}",
            processes=processes,
            claims=claims,
            hosts=hosts,
            seed=seed,
        )
    return {"workload": "claims-sqlite", "kind": "claims", "backend": "sqlite", **row}


def postgres_url() -> str:
    """CLOUDCTL_TEST_PG_URL, else what scripts/ensure-postgres.sh (installs and) prints."""
    url = os.environ.get("CLOUDCTL_TEST_PG_URL")
    if url:
        return url
    done = subprocess.run(
        [str(REPO / "scripts" / "ensure-postgres.sh")], check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def private_schema(base_url: str) -> Iterator[str]:
    """A throw-away schema; yields a URL whose search_path is that schema."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def postgres_race(processes: int, claims: int, hosts: int, seed: int) -> dict[str, Any]:
    """The race on PostgreSQL, in a private schema dropped afterwards."""
    with private_schema(postgres_url()) as url:
        row = race(url, processes=processes, claims=claims, hosts=hosts, seed=seed)
    return {"workload": "claims-postgresql", "kind": "claims", "backend": "postgresql", **row}
