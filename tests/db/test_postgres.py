"""The same schema and ledger on a real PostgreSQL server (started by ``make setup``).

The server is installed and started by scripts/ensure-postgres.sh; a missing server is a
failure, not a skip.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from cloudctl import ledger
from cloudctl.db.models import Allocation, Host
from cloudctl.db.session import Database
from cloudctl.domain.settings import Settings
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, flavors
from cloudctl.services.context import Context
from tests.conftest import NOW, add_host
from tests.services.conftest import add_image, running

PG_URL = os.environ.get(
    "CLOUDCTL_TEST_PG_URL", "postgresql+psycopg://cloudctl:cloudctl@127.0.0.1:5432/cloudctl_test"
)
pytestmark = pytest.mark.integration


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Database]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    db = Database(url)
    yield db
    db.dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_migrations_and_boot_flow_on_postgres(pg: Database, tmp_path: Path) -> None:
    pg.ensure_schema()
    assert pg.current_revision() == pg.head_revision()
    fake = FakeExecutor()
    fake.on("spawn.yml", running)
    ctx = Context(
        settings=Settings(home=tmp_path, db_url=pg.url),
        db=pg,
        executor_factory=lambda: fake,
        clock=lambda: NOW,
        rng=random.Random(0),
    )
    add_host(ctx, "h1")
    flavors.create_flavor(ctx, "small", vcpus=1, memory_mb=512, root_gb=1)
    add_image(ctx)
    views = compute.boot(
        ctx, compute.BootRequest(name="web", flavor="small", image="tiny", count=3)
    )
    assert [v["status"] for v in views] == ["ACTIVE"] * 3
    compute.delete(ctx, ["web-1", "web-2", "web-3"])
    with pg.unit_of_work() as s:
        assert s.scalars(select(Allocation)).all() == []


def test_concurrent_claims_never_overcommit(pg: Database, tmp_path: Path) -> None:
    """Eight threads race for a host that fits four: exactly four claims win."""
    pg.ensure_schema()
    ctx = Context(
        settings=Settings(home=tmp_path, db_url=pg.url), db=pg, executor_factory=FakeExecutor
    )
    add_host(ctx, "h1", memory_mb=2048, vcpus=64)
    res = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for _ in range(20):
            try:
                with pg.unit_of_work() as s:
                    host = s.scalars(select(Host)).one()
                    used = ledger.usage_by_host(s).get(host.id, ledger.HostUsage()).memory_mb
                    if used + 512 > host.memory_mb:
                        return
                    ledger.claim(s, host, f"c{n}", res, host.generation)
                wins.append(f"c{n}")
                return
            except ledger.GenerationConflict:
                continue

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pg.unit_of_work() as s:
        assert ledger.usage_by_host(s)[s.scalars(select(Host.id)).one()].memory_mb == 2048
    assert len(wins) == 4
