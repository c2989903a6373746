"""The state lock, the apply journal and resource ownership (services/state_store.py)."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text, update

from cloudctl.db.models import ApplyRun, StateLock
from cloudctl.db.session import Database
from cloudctl.domain.settings import Settings
from cloudctl.errors import LockHeld
from cloudctl.executor.base import RunEvent
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import leases
from cloudctl.services import state_store as store
from cloudctl.services.context import Context
from tests.conftest import NOW


@dataclass
class Notes:
    """A progress that keeps what services say."""

    lines: list[str] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.lines.append(message)

    def run_event(self, event: RunEvent) -> None:
        """Ignore."""


@pytest.fixture
def notes(ctx: Context) -> Notes:
    ctx.progress = n = Notes()
    return n


@pytest.fixture
def other_process() -> Iterator[int]:
    """The pid of a live process that is not this one (a sleeping child)."""
    child = subprocess.Popen(["sleep", "60"])
    yield child.pid
    child.kill()
    child.wait()


def put_lock(
    ctx: Context,
    *,
    hostname: str = "runner-7",
    pid: int = 4242,
    expires_in_s: int = 20,
    pid_ns: str = "4026531836",
) -> None:
    """A state lock another process holds (its lease expiring ``expires_in_s`` after NOW)."""
    with ctx.db.unit_of_work() as s:
        s.add(
            StateLock(
                name="default",
                holder=f"ci@{hostname}",
                pid=pid,
                hostname=hostname,
                operation="apply",
                acquired_at=NOW - timedelta(seconds=60),
                boot_id="another-boot",
                pid_ns=pid_ns,
                start_time=1,
                heartbeat_at=NOW + timedelta(seconds=expires_in_s - 30),
                expires_at=NOW + timedelta(seconds=expires_in_s),
            )
        )


# -- the lock ------------------------------------------------------------------------------------
def test_acquire_then_release(ctx: Context) -> None:
    assert store.lock_status(ctx) is None
    held = store.acquire_lock(ctx, operation="apply", timeout_s=0)
    assert (held.pid, held.hostname, held.operation) == (os.getpid(), store.hostname(), "apply")
    status = store.lock_status(ctx)
    assert status is not None
    me = leases.Owner.current()
    assert status == {
        "name": "default",
        "holder": store.holder_name(),
        "pid": os.getpid(),
        "hostname": store.hostname(),
        "boot_id": me.boot_id,
        "pid_ns": me.pid_ns,
        "operation": "apply",
        "acquired_at": NOW.isoformat(),
        "heartbeat_at": NOW.isoformat(),
        "expires_at": (NOW + timedelta(seconds=ctx.settings.command_lease_s)).isoformat(),
        "info": None,
        "by_hand": False,
        "stale": False,
    }
    assert store.release_lock(ctx) == held
    assert store.lock_status(ctx) is None
    assert store.release_lock(ctx) is None  # nothing to release is fine


def test_locks_are_per_name(ctx: Context) -> None:
    store.acquire_lock(ctx, operation="apply", timeout_s=0)
    other = store.acquire_lock(ctx, operation="apply", timeout_s=0, name="estate-b")
    assert other.name == "estate-b"
    assert store.lock_status(ctx, "estate-b") is not None
    store.release_lock(ctx, "estate-b")
    store.release_lock(ctx)


def test_a_second_acquirer_times_out_with_who_holds_it(ctx: Context, notes: Notes) -> None:
    store.acquire_lock(ctx, operation="apply", timeout_s=0, info="merge !42")
    started = time.monotonic()
    with pytest.raises(LockHeld) as caught:
        store.acquire_lock(ctx, operation="apply", timeout_s=0.6)
    assert time.monotonic() - started >= 0.6
    assert caught.value.message == (
        f"state lock 'default' is held by {store.holder_name()} (pid {os.getpid()}, apply "
        f"since {NOW.isoformat(timespec='seconds')}: merge !42); waited 0.6s; it is taken "
        "over once its holder stops renewing it; `cloudctl state unlock --force` breaks it"
    )
    assert caught.value.exit_code == 1
    assert caught.value.kwargs["pid"] == os.getpid()
    assert notes.lines == [
        f"waiting up to 0.6s for state lock held by {store.holder_name()} (pid {os.getpid()}, "
        f"apply since {NOW.isoformat(timespec='seconds')}: merge !42)"
    ]
    store.release_lock(ctx)


def test_a_waiter_gets_the_lock_once_it_is_released(ctx: Context) -> None:
    store.acquire_lock(ctx, operation="apply", timeout_s=0)
    timer = threading.Timer(0.4, store.release_lock, args=(ctx,))
    timer.start()
    try:
        held = store.acquire_lock(ctx, operation="plan", timeout_s=10)
    finally:
        timer.join()
    assert held.operation == "plan"
    assert (store.lock_status(ctx) or {})["operation"] == "plan"
    store.release_lock(ctx)


@pytest.mark.parametrize("hostname", ["runner-7", store.hostname()])
def test_a_holder_whose_lease_expired_is_taken_over_from_any_machine(
    ctx: Context, notes: Notes, hostname: str
) -> None:
    """A runner killed on another machine does not keep the lock for ever."""
    put_lock(ctx, hostname=hostname, expires_in_s=-1)
    assert (store.lock_status(ctx) or {})["stale"] is True
    held = store.acquire_lock(ctx, operation="apply", timeout_s=0)
    assert held.pid == os.getpid()
    assert notes.lines == [
        f"state lock 'default': holder ci@{hostname} (pid 4242, apply) stopped renewing it; "
        "taking the lock over"
    ]
    store.release_lock(ctx)


def test_a_live_holder_is_never_taken_over_whatever_its_pid_says_here(ctx: Context) -> None:
    """Same hostname, a pid that does not exist in this PID namespace: another namespace's
    live apply. Only its lease decides, and it is renewed."""
    put_lock(ctx, hostname=store.hostname(), pid=2**22 - 7, pid_ns="another-namespace")
    with pytest.raises(LockHeld, match=r"held by ci@.* \(pid 4194297, apply since"):
        store.acquire_lock(ctx, operation="apply", timeout_s=0)
    assert (store.lock_status(ctx) or {})["stale"] is False
    with pytest.raises(LockHeld):
        store.release_lock(ctx)
    assert store.release_lock(ctx, force=True) is not None


def test_the_holder_renews_its_lease(ctx: Context) -> None:
    now = [NOW]
    ctx.clock = lambda: now[0]
    ctx.settings = replace(ctx.settings, command_lease_s=1)
    with store.state_lock(ctx, "apply", 0):
        first = (store.lock_status(ctx) or {})["expires_at"]
        now[0] = NOW + timedelta(seconds=100)
        deadline = time.monotonic() + 5
        while (store.lock_status(ctx) or {})["expires_at"] == first:
            assert time.monotonic() < deadline, "the lock was not renewed"
            time.sleep(0.05)
        assert (store.lock_status(ctx) or {})["expires_at"] == (
            NOW + timedelta(seconds=101)
        ).isoformat()
        assert (store.lock_status(ctx) or {})["stale"] is False
    assert store.lock_status(ctx) is None


def test_only_the_holder_releases_unless_forced(ctx: Context, other_process: int) -> None:
    store.acquire_lock(ctx, operation="apply", timeout_s=0, pid=other_process)
    with pytest.raises(LockHeld) as caught:
        store.release_lock(ctx)
    assert f"(pid {other_process}, apply since" in caught.value.message
    assert store.lock_status(ctx) is not None
    released = store.release_lock(ctx, force=True)
    assert released is not None and released.pid == other_process
    assert store.lock_status(ctx) is None


def test_a_lock_taken_by_hand_is_held_until_state_unlock(ctx: Context) -> None:
    store.acquire_lock(
        ctx, operation="manual", timeout_s=0, pid=store.HUMAN_PID, info="db maintenance"
    )
    status = store.lock_status(ctx) or {}
    assert (status["pid"], status["by_hand"], status["stale"]) == (0, True, False)
    with pytest.raises(LockHeld) as caught:
        store.acquire_lock(ctx, operation="apply", timeout_s=0)
    assert "(by hand, manual since" in caught.value.message
    assert "`cloudctl state unlock` releases it" in caught.value.message
    with pytest.raises(LockHeld):
        store.release_lock(ctx)  # a process is not the person who took it
    assert store.release_lock(ctx, pid=store.HUMAN_PID) is not None


def test_state_lock_releases_on_exit_and_on_error(ctx: Context) -> None:
    with store.state_lock(ctx, "apply", 0) as held:
        assert (store.lock_status(ctx) or {})["pid"] == held.pid == os.getpid()
    assert store.lock_status(ctx) is None
    with pytest.raises(RuntimeError), store.state_lock(ctx, "apply", 0):
        raise RuntimeError("boom")
    assert store.lock_status(ctx) is None


def test_state_lock_leaves_a_lock_someone_else_took_after_breaking_it(
    ctx: Context, notes: Notes, other_process: int
) -> None:
    with store.state_lock(ctx, "apply", 0):
        store.release_lock(ctx, force=True)
        store.acquire_lock(ctx, operation="apply", timeout_s=0, pid=other_process)
    assert (store.lock_status(ctx) or {})["pid"] == other_process
    assert notes.lines[-1] == "state lock 'default' was broken while apply ran"
    store.release_lock(ctx, force=True)


# -- the journal ---------------------------------------------------------------------------------
def _set_lease(ctx: Context, run_uuid: str, lease_uuid: str | None) -> None:
    with ctx.db.unit_of_work() as s:
        s.execute(update(ApplyRun).where(ApplyRun.uuid == run_uuid).values(lease_uuid=lease_uuid))


def test_journal_round_trip(ctx: Context) -> None:
    run = store.start_run(ctx, "sha256:abc")
    store.record_step(ctx, run, 1, "flavor", "m1.small", "create", "running")
    store.record_step(ctx, run, 1, "flavor", "m1.small", "create", "done")
    store.record_step(ctx, run, 2, "server", "web", "create", "pending", instance_uuids=["u1"])
    store.record_step(
        ctx, run, 2, "server", "web", "create", "running", "spawning", instance_uuids=["u2", "u1"]
    )
    store.record_step(ctx, run, 3, "server", "db", "delete", "failed", "host h2 unreachable")
    store.record_step(ctx, run, 4, "server", "old", "delete", "skipped")
    steps = store.run_steps(ctx, run)
    assert [(s["seq"], s["status"]) for s in steps] == [
        (1, "done"),
        (2, "running"),
        (3, "failed"),
        (4, "skipped"),
    ]
    assert steps[0]["started_at"] == steps[0]["finished_at"] == NOW.isoformat()
    assert steps[1]["instance_uuids"] == ["u1", "u2"]
    assert (steps[1]["detail"], steps[1]["finished_at"]) == ("spawning", None)

    with leases.command_lease(ctx, "apply") as lease:
        _set_lease(ctx, run, lease.uuid)
        assert store.unfinished_runs(ctx) == []  # its command (this one) holds a live lease
    # The lease is gone with its command (or expired: see below): the run died.
    [unfinished] = store.unfinished_runs(ctx)
    assert (unfinished["uuid"], unfinished["status"], unfinished["plan_fingerprint"]) == (
        run,
        "running",
        "sha256:abc",
    )
    assert [(s["seq"], s["name"], s["status"]) for s in unfinished["steps"]] == [
        (2, "web", "running"),
        (3, "db", "failed"),
    ]
    store.mark_interrupted(ctx, run)
    assert store.unfinished_runs(ctx) == []
    [last] = store.recent_runs(ctx)
    assert (last["status"], last["finished_at"]) == ("interrupted", NOW.isoformat())

    second = store.start_run(ctx, None)
    store.finish_run(ctx, second, "done", {"created": 3, "deleted": 1})
    newest, oldest = store.recent_runs(ctx)
    assert (newest["uuid"], newest["status"], newest["summary"], newest["steps"]) == (
        second,
        "done",
        {"created": 3, "deleted": 1},
        [],
    )
    assert oldest["uuid"] == run
    with pytest.raises(LookupError):
        store.finish_run(ctx, str(uuid.uuid4()), "done", {})


def test_a_run_whose_lease_expired_is_dead_on_any_machine(ctx: Context) -> None:
    run = store.start_run(ctx, "fp")
    with leases.command_lease(ctx, "apply") as lease:
        _set_lease(ctx, run, lease.uuid)
        assert store.unfinished_runs(ctx, holding_lock=True) == []
        later = NOW + timedelta(seconds=ctx.settings.command_lease_s + 1)
        ctx.clock = lambda: later  # nobody renewed it since
        assert [r["uuid"] for r in store.unfinished_runs(ctx)] == [run]


def test_runs_of_an_older_cloudctl_count_only_under_the_lock(ctx: Context) -> None:
    run = store.start_run(ctx, "fp")
    _set_lease(ctx, run, None)
    assert store.unfinished_runs(ctx) == []
    assert [r["uuid"] for r in store.unfinished_runs(ctx, holding_lock=True)] == [run]


def test_bad_statuses_are_refused(ctx: Context) -> None:
    run = store.start_run(ctx, "fp")
    with pytest.raises(Exception, match="step status 'ok' is not one of pending"):
        store.record_step(ctx, run, 1, "server", "web", "create", "ok")
    with pytest.raises(Exception, match="run status 'finished' is not one of running"):
        store.finish_run(ctx, run, "finished", {})


# -- ownership -----------------------------------------------------------------------------------
def test_ownership_round_trip(ctx: Context) -> None:
    run = store.start_run(ctx, "fp")
    store.record_owned(ctx, "Flavor", "m1.small", None, "default", run)
    store.record_owned(ctx, "Server", "web-1", "u-1", "default", run)
    with ctx.db.unit_of_work() as session:  # inside the caller's transaction
        store.record_owned(session, "Server", "web-2", "u-2", "default", run)
    store.record_owned(ctx, "Server", "web-1", "u-1b", "default", run)  # re-created: new uuid
    store.record_owned(ctx, "Server", "web-1", "u-9", "team-b", run)
    assert store.owned(ctx) == {
        "Flavor": {"m1.small": None},
        "Server": {"web-1": "u-1b", "web-2": "u-2"},
    }
    assert store.owned(ctx, "team-b") == {"Server": {"web-1": "u-9"}}
    assert store.owned(ctx, "nobody") == {}
    assert store.owned_counts(ctx) == {
        "default": {"Flavor": 1, "Server": 2},
        "team-b": {"Server": 1},
    }
    assert store.forget_owned(ctx, "Server", "web-2") is True
    assert store.forget_owned(ctx, "Server", "web-2") is False
    with ctx.db.unit_of_work() as session:
        assert store.forget_owned(session, "Flavor", "m1.small") is True
    assert store.owned(ctx) == {"Server": {"web-1": "u-1b"}}


def test_state_view(ctx: Context) -> None:
    store.acquire_lock(ctx, operation="apply", timeout_s=0)
    run = store.start_run(ctx, "fp")
    store.record_step(ctx, run, 1, "server", "web", "create", "pending")
    store.record_owned(ctx, "Server", "web", "u-1", apply_uuid=run)
    view = store.state_view(ctx)
    assert view["lock"]["pid"] == os.getpid()
    assert [(r["uuid"], [s["name"] for s in r["steps"]]) for r in view["runs"]] == [(run, ["web"])]
    assert view["managed"] == {"default": {"Server": 1}}
    store.release_lock(ctx)


# -- the same lock on PostgreSQL -----------------------------------------------------------------
PG_URL = os.environ.get(
    "CLOUDCTL_TEST_PG_URL", "postgresql+psycopg://cloudctl:cloudctl@127.0.0.1:5432/cloudctl_test"
)


@pytest.fixture
def pg_ctx(tmp_path: Path) -> Iterator[Context]:
    """A context over a private schema of the local PostgreSQL (scripts/ensure-postgres.sh)."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    db = Database(f"{PG_URL}?options=-csearch_path%3D{schema}")
    db.ensure_schema()
    yield Context(
        settings=Settings(home=tmp_path, db_url=db.url),
        db=db,
        executor_factory=FakeExecutor,
        clock=lambda: NOW,
        rng=random.Random(0),
    )
    db.dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.mark.integration
def test_the_lock_on_postgres(pg_ctx: Context) -> None:
    ctx = pg_ctx
    put_lock(ctx, expires_in_s=-1)
    held = store.acquire_lock(ctx, operation="apply", timeout_s=0)  # stale: taken over
    with pytest.raises(LockHeld, match=rf"\(pid {os.getpid()}, apply since"):
        store.acquire_lock(ctx, operation="apply", timeout_s=0.5)
    assert store.release_lock(ctx) == held

    # Eight threads race for the lock: exactly one holds it at any time.
    holders: list[int] = []
    inside = threading.Semaphore(1)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with store.state_lock(ctx, f"apply-{i}", 30):
                if not inside.acquire(blocking=False):
                    raise AssertionError("two holders at once")
                holders.append(i)
                time.sleep(0.05)
                inside.release()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(holders) == list(range(8))
    assert store.lock_status(ctx) is None
