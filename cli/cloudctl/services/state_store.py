"""The SQL side of ``cloudctl apply``: the state lock, the apply journal and resource ownership.

* **Lock**: one row per lock name in ``state_locks``. Taking the lock is inserting the row in its
  own short transaction; the unique name makes a second insert fail on SQLite and PostgreSQL
  alike, and the loser reads who holds it. The lock is a lease: its holder renews
  ``expires_at`` every third of ``command_lease_s`` (services/leases.py's keeper), and it is
  stale only once that time has passed, whoever looks and from whichever machine or PID
  namespace (a pid says nothing there). A stale lock is taken over with a compare-and-delete on
  its expiry; otherwise the caller waits, polling, up to its timeout. ``pid`` 0 marks a lock a
  person took with ``cloudctl state lock``: it never expires, ``cloudctl state unlock`` ends it.
* **Journal**: ``apply_runs`` (one row per apply) and ``apply_steps`` (one per step, written
  before and after the step runs), so that an apply killed at any point can be found and run
  again to convergence.
* **Ownership**: ``managed_resources`` records what an apply created from an estate's files;
  ``apply --prune`` deletes only those.

Every function is one short transaction (the ownership helpers can also join the caller's).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudctl.db.models import ApplyRun, ApplyStep, CommandLease, ManagedResource, StateLock
from cloudctl.errors import InvalidInput, LockHeld
from cloudctl.services import leases
from cloudctl.services.context import Context

DEFAULT_LOCK = "default"
DEFAULT_ESTATE = "default"
#: Seconds between two looks at a held lock.
POLL_S = 0.5
#: ``pid`` of a lock taken by a person (``cloudctl state lock``): no process to watch.
HUMAN_PID = 0

RUN_STATUSES = ("running", "done", "failed", "interrupted")
STEP_STATUSES = ("pending", "running", "done", "failed", "skipped")
_STEP_FINAL = frozenset({"done", "failed", "skipped"})
_STEP_OPEN = ("pending", "running", "failed")


# -- who we are: the lease's owner (services/leases.py) ----------------------------------------
hostname = leases.hostname
holder_name = leases.holder_name


# -- the lock ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock, since when, for what, and until when unless renewed."""

    name: str
    holder: str
    pid: int
    hostname: str
    operation: str
    acquired_at: datetime
    info: str | None = None
    boot_id: str | None = None
    pid_ns: str | None = None
    start_time: int | None = None
    heartbeat_at: datetime | None = None
    #: None: held by a person, never expires.
    expires_at: datetime | None = None

    @property
    def by_hand(self) -> bool:
        """Taken by ``cloudctl state lock``: held until ``state unlock``."""
        return self.pid == HUMAN_PID

    def stale(self, now: datetime) -> bool:
        """Its holder stopped renewing it: the process died (on whichever machine)."""
        return not self.by_hand and self.expires_at is not None and self.expires_at < now

    def describe(self) -> str:
        """``alice@ci-3 (pid 4242, apply since 2026-11-24T10:00:00+00:00: reason)``."""
        who = "by hand" if self.by_hand else f"pid {self.pid}"
        reason = f": {self.info}" if self.info else ""
        since = self.acquired_at.isoformat(timespec="seconds")
        return f"{self.holder} ({who}, {self.operation} since {since}{reason})"

    def view(self, now: datetime) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "name": self.name,
            "holder": self.holder,
            "pid": self.pid,
            "hostname": self.hostname,
            "boot_id": self.boot_id,
            "pid_ns": self.pid_ns,
            "operation": self.operation,
            "acquired_at": self.acquired_at.isoformat(),
            "heartbeat_at": self.heartbeat_at.isoformat() if self.heartbeat_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "info": self.info,
            "by_hand": self.by_hand,
            "stale": self.stale(now),
        }


def _lock_info(row: StateLock) -> LockInfo:
    return LockInfo(
        name=row.name,
        holder=row.holder,
        pid=row.pid,
        hostname=row.hostname,
        operation=row.operation,
        acquired_at=row.acquired_at,
        info=row.info,
        boot_id=row.boot_id,
        pid_ns=row.pid_ns,
        start_time=row.start_time,
        heartbeat_at=row.heartbeat_at,
        expires_at=row.expires_at,
    )


def _read_lock(ctx: Context, name: str) -> LockInfo | None:
    with ctx.db.unit_of_work() as session:
        row = session.scalars(select(StateLock).where(StateLock.name == name)).first()
        return _lock_info(row) if row is not None else None


def _same(held: LockInfo) -> list[Any]:
    return [
        StateLock.name == held.name,
        StateLock.pid == held.pid,
        StateLock.hostname == held.hostname,
        StateLock.holder == held.holder,
        StateLock.acquired_at == held.acquired_at,
    ]


def _delete_lock(ctx: Context, held: LockInfo, *, expired_by: datetime | None = None) -> bool:
    """Remove the lock only if it is still exactly ``held`` (compare-and-delete), and with
    ``expired_by`` only if it is still expired then (not renewed meanwhile)."""
    conds = _same(held)
    if expired_by is not None:
        conds += [StateLock.expires_at.is_not(None), StateLock.expires_at < expired_by]
    with ctx.db.unit_of_work() as session:
        result = session.execute(delete(StateLock).where(*conds))
        return bool(getattr(result, "rowcount", 0))


def _renewer(ctx: Context, held: LockInfo) -> Any:
    lease_s = max(1, int(ctx.settings.command_lease_s))

    def renew() -> bool:
        now = ctx.clock()
        with ctx.db.unit_of_work() as session:
            result = session.execute(
                update(StateLock)
                .where(*_same(held))
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=lease_s))
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    return renew


def _keeper_key(held: LockInfo) -> str:
    return f"state-lock:{held.name}:{held.acquired_at.isoformat()}"


def _held_error(held: LockInfo, waited_s: float | None = None) -> LockHeld:
    waited = f"; waited {waited_s:g}s" if waited_s else ""
    hint = (
        "`cloudctl state unlock` releases it"
        if held.by_hand
        else "it is taken over once its holder stops renewing it; "
        "`cloudctl state unlock --force` breaks it"
    )
    return LockHeld(
        f"state lock {held.name!r} is held by {held.describe()}{waited}; {hint}",
        name=held.name,
        holder=held.holder,
        pid=held.pid,
        hostname=held.hostname,
        operation=held.operation,
        since=held.acquired_at.isoformat(),
    )


def acquire_lock(
    ctx: Context,
    *,
    operation: str,
    timeout_s: float,
    name: str = DEFAULT_LOCK,
    info: str | None = None,
    pid: int | None = None,
) -> LockInfo:
    """Take lock ``name`` for ``operation``, waiting up to ``timeout_s`` seconds.

    ``pid`` defaults to this process, which then renews the lock as a lease (services/
    leases.py) until it releases it; :data:`HUMAN_PID` (0) takes it for a person until
    ``state unlock``, with no expiry. A holder whose lease expired is taken over (said through
    ``ctx.progress``). Raises :class:`LockHeld` naming holder, pid and since when.
    """
    if timeout_s < 0:
        raise InvalidInput(reason=f"lock timeout must be >= 0, got {timeout_s:g}")
    human = pid == HUMAN_PID
    owner = leases.Owner.current()
    lease_s = max(1, int(ctx.settings.command_lease_s))
    me = LockInfo(
        name=name,
        holder=owner.holder,
        pid=owner.pid if pid is None else pid,
        hostname=owner.hostname,
        operation=operation,
        acquired_at=ctx.clock(),
        info=info,
        boot_id=None if human else owner.boot_id,
        pid_ns=None if human else owner.pid_ns,
        start_time=None if human else owner.start_time,
    )
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        now = ctx.clock()
        me = replace(
            me,
            acquired_at=now,
            heartbeat_at=None if human else now,
            expires_at=None if human else now + timedelta(seconds=lease_s),
        )
        try:
            with ctx.db.unit_of_work() as session:
                session.add(
                    StateLock(
                        name=me.name,
                        holder=me.holder,
                        pid=me.pid,
                        hostname=me.hostname,
                        operation=me.operation,
                        acquired_at=me.acquired_at,
                        info=me.info,
                        boot_id=me.boot_id,
                        pid_ns=me.pid_ns,
                        start_time=me.start_time,
                        heartbeat_at=me.heartbeat_at,
                        expires_at=me.expires_at,
                    )
                )
            if not human:
                leases.KEEPER.register(_keeper_key(me), _renewer(ctx, me), lease_s / 3)
            return me
        except IntegrityError:
            pass
        held = _read_lock(ctx, name)
        if held is None:
            continue  # released between our insert and our read: try again at once
        if held.stale(ctx.clock()):
            ctx.progress.info(
                f"state lock {name!r}: holder {held.holder} (pid {held.pid}, "
                f"{held.operation}) stopped renewing it; taking the lock over"
            )
            _delete_lock(ctx, held, expired_by=ctx.clock())
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise _held_error(held, timeout_s)
        if not told:
            ctx.progress.info(
                f"waiting up to {timeout_s:g}s for state lock held by {held.describe()}"
            )
            told = True
        time.sleep(min(POLL_S, left))


def release_lock(
    ctx: Context, name: str = DEFAULT_LOCK, *, force: bool = False, pid: int | None = None
) -> LockInfo | None:
    """Release lock ``name``; returns what was released (None if nobody held it).

    Only its holder releases it: the same process (``pid``, default this one: same pid, boot
    and PID namespace), anyone for a lock taken by hand when ``pid`` is :data:`HUMAN_PID`, or
    anyone once its lease expired. ``force`` breaks any lock. Raises :class:`LockHeld` otherwise.
    """
    me = leases.Owner.current()
    mine = me.pid if pid is None else pid
    while True:
        held = _read_lock(ctx, name)
        if held is None:
            return None
        same_process = (
            held.pid == mine
            and held.hostname == me.hostname
            and held.boot_id in (None, me.boot_id)
            and held.pid_ns in (None, me.pid_ns)
        )
        own = held.pid == mine and (held.by_hand or same_process)
        if not (force or own or held.stale(ctx.clock())):
            raise _held_error(held)
        if _delete_lock(ctx, held):
            leases.KEEPER.unregister(_keeper_key(held))
            return held
        # Changed under us (released, or taken by someone else): look again.


def lock_status(ctx: Context, name: str = DEFAULT_LOCK) -> dict[str, Any] | None:
    """The lock's holder as a dict (with ``stale``), or None when free."""
    held = _read_lock(ctx, name)
    return held.view(ctx.clock()) if held is not None else None


@contextlib.contextmanager
def state_lock(
    ctx: Context, operation: str, timeout_s: float, name: str = DEFAULT_LOCK
) -> Iterator[LockInfo]:
    """Hold lock ``name`` around a block; released on exit unless someone broke it meanwhile."""
    held = acquire_lock(ctx, operation=operation, timeout_s=timeout_s, name=name)
    try:
        yield held
    finally:
        leases.KEEPER.unregister(_keeper_key(held))
        if not _delete_lock(ctx, held):
            ctx.progress.info(f"state lock {name!r} was broken while {operation} ran")


# -- the journal ---------------------------------------------------------------------------------
def _check(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInput(reason=f"{kind} {value!r} is not one of {', '.join(allowed)}")


def start_run(ctx: Context, fingerprint: str | None) -> str:
    """Open an apply run (status running) for this process's command lease; returns its UUID."""
    run_uuid = str(uuidlib.uuid4())
    with ctx.db.unit_of_work() as session:
        session.add(
            ApplyRun(
                uuid=run_uuid,
                started_at=ctx.clock(),
                status="running",
                plan_fingerprint=fingerprint,
                holder=holder_name(),
                pid=os.getpid(),
                hostname=hostname(),
                lease_uuid=ctx.lease.uuid if ctx.lease is not None else None,
            )
        )
    return run_uuid


def record_step(
    ctx: Context,
    run_uuid: str,
    seq: int,
    kind: str,
    name: str,
    action: str,
    status: str,
    detail: str | None = None,
    instance_uuids: Iterable[str] = (),
) -> None:
    """Write step ``seq`` of a run (insert, or update the step already written).

    ``running`` stamps its start, a final status (done, failed, skipped) its end; the instance
    UUIDs given are added to those already recorded, so a step can note the guests it creates
    before it creates them.
    """
    _check("step status", status, STEP_STATUSES)
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        step = session.scalars(
            select(ApplyStep).where(ApplyStep.apply_uuid == run_uuid, ApplyStep.seq == seq)
        ).first()
        if step is None:
            step = ApplyStep(apply_uuid=run_uuid, seq=seq, instance_uuids=[])
            session.add(step)
        step.kind, step.name, step.action, step.status = kind, name, action, status
        if detail is not None:
            step.detail = detail
        known = list(step.instance_uuids or [])
        step.instance_uuids = known + [u for u in instance_uuids if u not in known]
        if status == "running" and step.started_at is None:
            step.started_at = now
        if status in _STEP_FINAL:
            step.started_at = step.started_at or now
            step.finished_at = now


def finish_run(
    ctx: Context, run_uuid: str, status: str, summary: dict[str, Any] | None = None
) -> None:
    """Close a run: done, failed or interrupted, with its summary."""
    _check("run status", status, RUN_STATUSES)
    with ctx.db.unit_of_work() as session:
        run = _run(session, run_uuid)
        run.status = status
        run.finished_at = None if status == "running" else ctx.clock()
        if summary is not None:
            run.summary = summary


def mark_interrupted(ctx: Context, run_uuid: str) -> None:
    """A run whose process died: interrupted (its steps stay as they were written)."""
    with ctx.db.unit_of_work() as session:
        run = _run(session, run_uuid)
        if run.status == "running":
            run.status = "interrupted"
            run.finished_at = ctx.clock()


def _run(session: Session, run_uuid: str) -> ApplyRun:
    run = session.scalars(select(ApplyRun).where(ApplyRun.uuid == run_uuid)).first()
    if run is None:
        raise LookupError(f"no apply run {run_uuid}")
    return run


def _step_view(step: ApplyStep) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "kind": step.kind,
        "name": step.name,
        "action": step.action,
        "status": step.status,
        "started_at": step.started_at.isoformat() if step.started_at else None,
        "finished_at": step.finished_at.isoformat() if step.finished_at else None,
        "detail": step.detail,
        "instance_uuids": list(step.instance_uuids or []),
    }


def _run_view(
    session: Session, run: ApplyRun, now: datetime, *, open_steps_only: bool = True
) -> dict[str, Any]:
    stmt = select(ApplyStep).where(ApplyStep.apply_uuid == run.uuid)
    if open_steps_only:
        stmt = stmt.where(ApplyStep.status.in_(_STEP_OPEN))
    return {
        "uuid": run.uuid,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "plan_fingerprint": run.plan_fingerprint,
        "holder": run.holder,
        "pid": run.pid,
        "hostname": run.hostname,
        "summary": run.summary,
        "lease_uuid": run.lease_uuid,
        "stale": run.status == "running" and _run_dead(session, run, now, holding_lock=False),
        "steps": [_step_view(s) for s in session.scalars(stmt.order_by(ApplyStep.seq))],
    }


def _run_dead(session: Session, run: ApplyRun, now: datetime, *, holding_lock: bool) -> bool:
    """A running run whose command lease is gone or expired: its apply died (anywhere)."""
    if run.lease_uuid is None:
        # Written by an older cloudctl: no lease to ask; under the state lock no apply runs.
        return holding_lock
    row = session.scalars(select(CommandLease).where(CommandLease.uuid == run.lease_uuid)).first()
    return row is None or row.expires_at < now


def unfinished_runs(ctx: Context, *, holding_lock: bool = False) -> list[dict[str, Any]]:
    """Runs still marked running whose process is gone, oldest first, with their open steps.

    A run of another machine counts only with ``holding_lock`` (the caller holds the state lock,
    so no apply can be running anywhere). Open steps are those pending, running or failed.
    """
    with ctx.db.unit_of_work() as session:
        runs = session.scalars(
            select(ApplyRun).where(ApplyRun.status == "running").order_by(ApplyRun.id)
        )
        now = ctx.clock()
        return [
            _run_view(session, r, now)
            for r in runs
            if _run_dead(session, r, now, holding_lock=holding_lock)
        ]


def live_runs_of_others(ctx: Context) -> list[str]:
    """Runs still marked running, not this command's, whose lease has not expired yet.

    Under the state lock none of them can be applying: their holder's state lock expired (the
    same keeper renews both), so their command lease is about to. The caller waits for it.
    """
    mine = ctx.lease.uuid if ctx.lease is not None else None
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        runs = session.scalars(select(ApplyRun).where(ApplyRun.status == "running"))
        return [
            r.uuid
            for r in runs
            if r.lease_uuid is not None
            and r.lease_uuid != mine
            and not _run_dead(session, r, now, holding_lock=False)
        ]


def recent_runs(ctx: Context, limit: int = 5) -> list[dict[str, Any]]:
    """The last ``limit`` runs, newest first, each with its open steps."""
    with ctx.db.unit_of_work() as session:
        runs = session.scalars(select(ApplyRun).order_by(ApplyRun.id.desc()).limit(limit))
        return [_run_view(session, r, ctx.clock()) for r in runs]


def run_steps(ctx: Context, run_uuid: str) -> list[dict[str, Any]]:
    """Every step of a run, in order."""
    with ctx.db.unit_of_work() as session:
        _run(session, run_uuid)
        steps = session.scalars(
            select(ApplyStep).where(ApplyStep.apply_uuid == run_uuid).order_by(ApplyStep.seq)
        )
        return [_step_view(s) for s in steps]


# -- ownership -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _session_of(target: Session | Context) -> Iterator[Session]:
    if isinstance(target, Session):
        yield target
        target.flush()
    else:
        with target.db.unit_of_work() as session:
            yield session


def record_owned(
    target: Session | Context,
    kind: str,
    name: str,
    uuid: str | None,
    estate: str = DEFAULT_ESTATE,
    apply_uuid: str | None = None,
) -> None:
    """Record that ``estate``'s files own ``kind``/``name`` (insert, or update its uuid).

    Pass the session that creates the object to record both in one transaction.
    """
    with _session_of(target) as session:
        row = session.scalars(
            select(ManagedResource).where(
                ManagedResource.kind == kind,
                ManagedResource.name == name,
                ManagedResource.estate == estate,
            )
        ).first()
        if row is None:
            session.add(
                ManagedResource(
                    kind=kind, name=name, uuid=uuid, estate=estate, apply_uuid=apply_uuid
                )
            )
        else:
            row.uuid = uuid
            row.apply_uuid = apply_uuid or row.apply_uuid


def forget_owned(
    target: Session | Context, kind: str, name: str, estate: str = DEFAULT_ESTATE
) -> bool:
    """Drop an ownership record (after the object was deleted); False if there was none."""
    with _session_of(target) as session:
        result = session.execute(
            delete(ManagedResource).where(
                ManagedResource.kind == kind,
                ManagedResource.name == name,
                ManagedResource.estate == estate,
            )
        )
        return bool(getattr(result, "rowcount", 0))


def owned(ctx: Context, estate: str = DEFAULT_ESTATE) -> dict[str, dict[str, str | None]]:
    """What ``estate`` owns: kind -> name -> uuid (None for objects without one)."""
    out: dict[str, dict[str, str | None]] = defaultdict(dict)
    with ctx.db.unit_of_work() as session:
        rows = session.execute(
            select(ManagedResource.kind, ManagedResource.name, ManagedResource.uuid)
            .where(ManagedResource.estate == estate)
            .order_by(ManagedResource.kind, ManagedResource.name)
        )
        for kind, name, uuid in rows:
            out[kind][name] = uuid
    return dict(out)


def owned_counts(ctx: Context) -> dict[str, dict[str, int]]:
    """Managed resources per estate and kind: estate -> kind -> count."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with ctx.db.unit_of_work() as session:
        rows = session.execute(
            select(ManagedResource.estate, ManagedResource.kind, func.count(ManagedResource.id))
            .group_by(ManagedResource.estate, ManagedResource.kind)
            .order_by(ManagedResource.estate, ManagedResource.kind)
        )
        for estate, kind, count in rows:
            out[estate][kind] = int(count)
    return dict(out)


# -- what ``cloudctl state show`` prints ---------------------------------------------------------
def state_view(ctx: Context, *, name: str = DEFAULT_LOCK, runs: int = 5) -> dict[str, Any]:
    """The lock, the last runs (with their unfinished steps) and the managed resources."""
    return {
        "lock": lock_status(ctx, name),
        "runs": recent_runs(ctx, runs),
        "managed": owned_counts(ctx),
    }
