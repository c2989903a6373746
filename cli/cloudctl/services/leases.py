"""Command leases: which command holds what, and whether it still lives, told through SQL alone.

The database is the only thing several controllers share, so a command's liveness is written
there too. Every command that changes a guest holds one lease (a ``command_leases`` row) for its
whole run: its request id, who it is (:class:`Owner`: hostname, boot id, PID namespace, pid and
the process's start time) and a heartbeat. The instances it claimed name the lease in
``instances.task_owner`` (see :mod:`cloudctl.services.compute.tasks`).

One :class:`Keeper` thread per process renews every lease (and state lock) the process holds
every third of ``command_lease_s``, also while Ansible runs. Any controller tells a live command
from a dead one by ``expires_at`` alone: a pid says nothing on another machine, or in another
PID namespace of the same one. A lease whose ``expires_at`` has passed belongs to a dead command;
``reconcile`` takes it over (:func:`take_over`) and settles what it left.

A command that ends normally deletes its lease. One that ends with instances still in a task it
set (an error it could not record, Ctrl-C between two steps) leaves the lease expired at once, so
that the next reconcile settles them by what the hosts show rather than guess here.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from cloudctl.db.models import CommandLease, Instance
from cloudctl.executor.base import add_stop_check, remove_stop_check
from cloudctl.services.context import Context

log = logging.getLogger(__name__)

#: The shortest pause between two renewals, whatever ``command_lease_s`` says.
MIN_RENEW_INTERVAL_S = 0.2
#: A command stops its plays once its lease went unrenewed for this share of its length.
FENCE_AT = 0.8


# -- who we are ----------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def boot_id() -> str:
    """This kernel's boot id (a pid is only meaningful within one boot)."""
    return _read("/proc/sys/kernel/random/boot_id").strip() or "unknown"


def pid_namespace() -> str:
    """The inode of this process's PID namespace (a pid is only meaningful within it)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "unknown"


def process_start_time(pid: int) -> int:
    """The process's start time in clock ticks after boot (0 if unknown): a reused pid differs."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def hostname() -> str:
    """This machine's name, as leases, locks and runs record it."""
    return socket.gethostname()


def holder_name() -> str:
    """``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{hostname()}"


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: enough to tell one process from every other, on any machine."""

    holder: str
    hostname: str
    boot_id: str
    pid_ns: str
    pid: int
    start_time: int

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        pid = os.getpid()
        return cls(
            holder=holder_name(),
            hostname=hostname(),
            boot_id=boot_id(),
            pid_ns=pid_namespace(),
            pid=pid,
            start_time=process_start_time(pid),
        )

    def describe(self) -> str:
        """``root@ci-3, pid 4242``."""
        return f"{self.holder}, pid {self.pid}"


# -- the heartbeat -------------------------------------------------------------------------------
class Keeper:
    """One daemon thread renewing every lease and lock this process holds.

    ``renew`` callables are registered under a key; each is called every ``interval`` seconds
    (the shortest interval registered) until unregistered. A renewal that raises is logged and
    tried again next time: a database that does not answer for longer than the lease makes the
    lease expire, which is the truth (nobody can tell this command lives).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[Callable[[], Any], float]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, key: str, renew: Callable[[], Any], interval: float) -> None:
        """Renew ``renew`` every ``interval`` seconds from now on."""
        with self._lock:
            self._jobs[key] = (renew, max(MIN_RENEW_INTERVAL_S, interval))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="cloudctl-lease-keeper", daemon=True
                )
                self._thread.start()
            self._wake.set()

    def unregister(self, key: str) -> None:
        """Stop renewing ``key`` (a renewal under way finishes)."""
        with self._lock:
            self._jobs.pop(key, None)
            self._wake.set()

    def _loop(self) -> None:
        due: dict[str, float] = {}
        while True:
            with self._lock:
                jobs = dict(self._jobs)
                self._wake.clear()
                if not jobs:
                    self._thread = None
                    return
            now = time.monotonic()
            for key in list(due):
                if key not in jobs:
                    del due[key]
            for key, (_, interval) in jobs.items():
                due.setdefault(key, now + interval)
            for key, when in list(due.items()):
                if when > now:
                    continue
                renew, interval = jobs[key]
                try:
                    renew()
                except Exception:
                    log.warning("lease %s not renewed", key, exc_info=True)
                due[key] = time.monotonic() + interval
            self._wake.wait(max(0.0, min(due.values()) - time.monotonic()))


#: The process's keeper.
KEEPER = Keeper()


# -- a command's lease ---------------------------------------------------------------------------
@dataclass
class Lease:
    """The lease of one running command (see the module's docstring)."""

    uuid: str
    request_id: str
    command: str
    lease_s: int
    owner: Owner
    ctx: Context
    #: Set once the heartbeat found the row gone or taken over: the command lost its lease.
    lost: bool = False
    #: A detached worker carries the lease on (``--no-wait``): this process must not end it.
    handed_off: bool = False
    holds: dict[str, list[str]] = field(default_factory=dict)
    #: When the lease was last renewed (``time.monotonic``).
    renewed: float = field(default_factory=time.monotonic)

    def fenced(self) -> str | None:
        """Why this command must stop acting on hosts now (None: it may go on).

        Once its lease could not be renewed for most of its length (the database does not
        answer), another controller may soon take it for dead and settle its instances: its
        plays stop before that can happen (the executors ask, see executor/base.py).
        """
        if self.lost:
            return f"{self.command}: its lease was taken over by another controller"
        quiet = time.monotonic() - self.renewed
        if quiet > FENCE_AT * self.lease_s:
            return f"{self.command}: its lease could not be renewed for {quiet:.0f}s"
        return None

    def renew(self) -> bool:
        """Push ``expires_at`` a lease further; False (and ``lost``) if the row is not ours."""
        now = self.ctx.clock()
        with self.ctx.db.unit_of_work() as session:
            result = session.execute(
                update(CommandLease)
                .where(CommandLease.uuid == self.uuid, CommandLease.taken_over_by.is_(None))
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=self.lease_s))
                .execution_options(synchronize_session=False)
            )
            ok = bool(getattr(result, "rowcount", 0))
        if ok:
            self.renewed = time.monotonic()
        if not ok and not self.lost:
            log.warning("command lease %s of %s was taken over", self.uuid, self.command)
            self.lost = True
        return ok

    def hold(self, kind: str, values: Iterable[str]) -> None:
        """Record what else the command holds (``hosts``, ``migrations``, ``snapshots``...)."""
        known = self.holds.setdefault(kind, [])
        new = [v for v in values if v not in known]
        if not new:
            return
        known.extend(new)
        with self.ctx.db.unit_of_work() as session:
            session.execute(
                update(CommandLease)
                .where(CommandLease.uuid == self.uuid)
                .values(holds=dict(self.holds))
                .execution_options(synchronize_session=False)
            )

    def owns_instances(self) -> list[str]:
        """The instances still in a task this command set."""
        with self.ctx.db.unit_of_work() as session:
            return list(
                session.scalars(select(Instance.uuid).where(Instance.task_owner == self.uuid))
            )

    def end(self) -> None:
        """Delete the lease (and the dead ones it took over: what they held became its own);
        if it still owns instances, leave it expired for reconcile."""
        KEEPER.unregister(self.uuid)
        remove_stop_check(self.fenced)
        if self.handed_off:
            return
        now = self.ctx.clock()
        with self.ctx.db.unit_of_work() as session:
            session.execute(delete(CommandLease).where(CommandLease.taken_over_by == self.uuid))
            left = session.scalar(
                select(func.count(Instance.id)).where(Instance.task_owner == self.uuid)
            )
            if left:
                # Expire it now: what is left is for reconcile to settle by the hosts.
                session.execute(
                    update(CommandLease)
                    .where(CommandLease.uuid == self.uuid, CommandLease.taken_over_by.is_(None))
                    .values(expires_at=now - timedelta(seconds=1))
                    .execution_options(synchronize_session=False)
                )
            else:
                session.execute(delete(CommandLease).where(CommandLease.uuid == self.uuid))
        if left:
            log.warning(
                "%s ended with %d instance(s) in a task it set; reconcile settles them",
                self.command,
                left,
            )


def _insert(ctx: Context, command: str, request_id: str, owner: Owner) -> Lease:
    lease_s = max(1, int(ctx.settings.command_lease_s))
    lease = Lease(
        uuid=str(uuidlib.uuid4()),
        request_id=request_id,
        command=command[:255],
        lease_s=lease_s,
        owner=owner,
        ctx=ctx,
    )
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        session.add(
            CommandLease(
                uuid=lease.uuid,
                request_id=request_id,
                command=lease.command,
                holder=owner.holder[:255],
                hostname=owner.hostname[:255],
                boot_id=owner.boot_id[:64],
                pid_ns=owner.pid_ns[:64],
                pid=owner.pid,
                start_time=owner.start_time,
                lease_s=lease_s,
                created_at=now,
                heartbeat_at=now,
                expires_at=now + timedelta(seconds=lease_s),
                holds={},
            )
        )
    return lease


@contextlib.contextmanager
def command_lease(ctx: Context, command: str, *, request_id: str | None = None) -> Iterator[Lease]:
    """Hold a lease for the block: the command's, or the one ``ctx`` holds already (nested).

    Commands call into each other (delete powers off, apply boots, drain live-migrates): the
    outermost one's lease covers them all.
    """
    if ctx.lease is not None:
        yield ctx.lease
        return
    from cloudctl.services import actions  # late: actions is a leaf, but keep imports light

    lease = _insert(ctx, command, request_id or actions.new_request_id(), Owner.current())
    with _held(ctx, lease):
        yield lease


@contextlib.contextmanager
def carry_on(ctx: Context, lease_uuid: str, command: str) -> Iterator[Lease]:
    """Carry on the lease a parent handed off (the ``--no-wait`` worker): this process is its
    owner from now on. Raises LookupError if the lease is gone (taken over meanwhile)."""
    owner = Owner.current()
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        row = session.scalars(
            select(CommandLease).where(
                CommandLease.uuid == lease_uuid, CommandLease.taken_over_by.is_(None)
            )
        ).first()
        if row is None:
            raise LookupError(f"command lease {lease_uuid} is gone")
        row.holder, row.hostname, row.boot_id = owner.holder, owner.hostname, owner.boot_id
        row.pid_ns, row.pid, row.start_time = owner.pid_ns, owner.pid, owner.start_time
        row.heartbeat_at = now
        row.expires_at = now + timedelta(seconds=row.lease_s)
        lease = Lease(
            uuid=row.uuid,
            request_id=row.request_id,
            command=command,
            lease_s=row.lease_s,
            owner=owner,
            ctx=ctx,
            holds={k: list(v) for k, v in (row.holds or {}).items()},
        )
    with _held(ctx, lease):
        yield lease


@contextlib.contextmanager
def _held(ctx: Context, lease: Lease) -> Iterator[None]:
    """``lease`` is ``ctx``'s, renewed and watched, until the block ends (then ended)."""
    ctx.lease = lease
    KEEPER.register(lease.uuid, lease.renew, lease.lease_s / 3)
    add_stop_check(lease.fenced)
    try:
        yield
    finally:
        ctx.lease = None
        try:
            lease.end()
        except Exception:  # the database is gone: the lease expires by itself
            log.warning("command lease %s not ended", lease.uuid, exc_info=True)


# -- what any controller can tell ----------------------------------------------------------------
@dataclass(frozen=True)
class LeaseInfo:
    """A lease as any controller reads it."""

    uuid: str
    request_id: str
    command: str
    owner: Owner
    created_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    holds: dict[str, list[str]]
    taken_over_by: str | None

    def expired(self, now: datetime) -> bool:
        """Its command is dead: nobody renewed it in time."""
        return self.expires_at < now

    def describe(self, now: datetime) -> str:
        """``live-migrate web (root@ci-3, pid 4242; renewed 3s ago)``."""
        ago = int((now - self.heartbeat_at).total_seconds())
        state = (
            f"lease expired {int((now - self.expires_at).total_seconds())}s ago"
            if self.expired(now)
            else f"renewed {ago}s ago"
        )
        return f"{self.command} ({self.owner.describe()}; {state})"

    def view(self, now: datetime) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "uuid": self.uuid,
            "request_id": self.request_id,
            "command": self.command,
            "holder": self.owner.holder,
            "hostname": self.owner.hostname,
            "pid": self.owner.pid,
            "boot_id": self.owner.boot_id,
            "pid_ns": self.owner.pid_ns,
            "created_at": self.created_at.isoformat(),
            "heartbeat_at": self.heartbeat_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "expired": self.expired(now),
            "holds": self.holds,
            "taken_over_by": self.taken_over_by,
        }


def lease_info(row: CommandLease) -> LeaseInfo:
    """The row as a :class:`LeaseInfo`."""
    return LeaseInfo(
        uuid=row.uuid,
        request_id=row.request_id,
        command=row.command,
        owner=Owner(
            holder=row.holder,
            hostname=row.hostname,
            boot_id=row.boot_id,
            pid_ns=row.pid_ns,
            pid=row.pid,
            start_time=row.start_time,
        ),
        created_at=row.created_at,
        heartbeat_at=row.heartbeat_at,
        expires_at=row.expires_at,
        holds={k: list(v) for k, v in (row.holds or {}).items()},
        taken_over_by=row.taken_over_by,
    )


def all_leases(session: Any) -> dict[str, LeaseInfo]:
    """Every lease in the books, by uuid."""
    return {row.uuid: lease_info(row) for row in session.scalars(select(CommandLease))}


def take_over(ctx: Context, dead: str, mine: Lease) -> bool:
    """Take the expired lease ``dead`` over for ``mine`` (compare-and-swap); its instances
    become ``mine``'s. False if it is not expired, or another controller took it first."""
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        result = session.execute(
            update(CommandLease)
            .where(
                CommandLease.uuid == dead,
                CommandLease.expires_at < now,
                CommandLease.taken_over_by.is_(None),
            )
            .values(taken_over_by=mine.uuid)
            .execution_options(synchronize_session=False)
        )
        if not getattr(result, "rowcount", 0):
            return False
        session.execute(
            update(Instance)
            .where(Instance.task_owner == dead)
            .values(task_owner=mine.uuid)
            .execution_options(synchronize_session=False)
        )
    return True


def forget_expired(ctx: Context, uuids: Iterable[str]) -> None:
    """Delete the leases of ``uuids`` that expired and that no instance names any more."""
    keys = list(uuids)
    if not keys:
        return
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        named = set(
            session.scalars(select(Instance.task_owner).where(Instance.task_owner.in_(keys)))
        )
        gone = [k for k in keys if k not in named]
        if gone:
            session.execute(
                delete(CommandLease).where(
                    CommandLease.uuid.in_(gone), CommandLease.expires_at < now
                )
            )
