"""Task state as the lock, in SQL (Nova's ``expected_task_state``), owned by a command lease.

A command that changes a guest claims it with :func:`claim`: one conditional UPDATE per
instance, in UUID order, inside the command's first short transaction::

    UPDATE instances SET task_state = :new, task_owner = :lease
     WHERE uuid = :u AND deleted = 0 AND vm_state IN (...) AND locked = false
       AND (task_state IS NULL OR task_owner = :lease)

When no row changes, the instance is read again and the command refuses with the usual one-line
reason (:class:`~cloudctl.errors.InstanceBusy` when another command holds it, naming that command
and whether its lease still lives). :func:`start` runs such a first step and, with ``wait_lock_s``
(``--wait-lock``), retries it until the other command is done. On PostgreSQL a row another
transaction holds makes the UPDATE wait for it and then look again, so two controllers never both
win; on SQLite the UPDATE takes the database's write lock.

Every later change of the task (:func:`advance`) and its end (:func:`finish`) is a
compare-and-swap on ``task_owner`` too: a command whose lease was taken over (it was thought
dead) finds it lost (:class:`~cloudctl.errors.LeaseLost`) and writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal, TypeVar

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cloudctl.db.models import CommandLease, Instance, InstanceAction
from cloudctl.domain.states import ACTION_STATES, Accepts, TaskState, refusal
from cloudctl.errors import InstanceBusy, InvalidState, LeaseLost, NotFound
from cloudctl.services.context import Context
from cloudctl.services.leases import Lease, lease_info, take_over

T = TypeVar("T")

#: ``claim``'s default for ``vm_states`` / ``task_states``: the action's row of ACTION_STATES.
FROM_TABLE: Literal["row"] = "row"
#: Seconds between two tries while waiting for another command (``--wait-lock``).
WAIT_POLL_S = 0.5


def _lease(ctx: Context) -> Lease:
    if ctx.lease is None:
        raise AssertionError("claiming an instance needs a command lease (leases.command_lease)")
    return ctx.lease


def accepts(
    action: str,
    vm_states: Collection[str] | Literal["row"] | None = FROM_TABLE,
    task_states: Collection[str | None] | Literal["row"] | None = FROM_TABLE,
) -> Accepts:
    """The action's row of ACTION_STATES with explicit ``vm_states`` / ``task_states`` (None =
    any) in its place; without a row: any vm_state and no task in progress."""
    row = ACTION_STATES.get(action, Accepts(None))
    return replace(
        row,
        vm_states=row.vm_states
        if vm_states == FROM_TABLE
        else (None if vm_states is None else frozenset(vm_states)),
        task_states=row.task_states
        if task_states == FROM_TABLE
        else (None if task_states is None else frozenset(task_states)),
    )


def check(
    session: Session,
    ctx: Context,
    inst: Instance,
    action: str,
    vm_states: Collection[str] | Literal["row"] | None = FROM_TABLE,
    *,
    task_states: Collection[str | None] | Literal["row"] | None = FROM_TABLE,
) -> None:
    """Refuse now what :func:`claim` would refuse (a read, for early one-line errors)."""
    row = accepts(action, vm_states, task_states)
    mine = ctx.lease is not None and inst.task_owner == ctx.lease.uuid
    _refuse(session, ctx, inst, action, row, mine, early=True)


def _refuse(
    session: Session,
    ctx: Context,
    inst: Instance,
    action: str,
    row: Accepts,
    mine: bool,
    *,
    early: bool = False,
) -> None:
    reason = refusal(
        action,
        name=inst.name,
        vm_state=inst.vm_state,
        task_state=None if mine else inst.task_state,
        locked=inst.locked,
        locked_reason=inst.locked_reason,
        accepts=row,
    )
    if reason is None:
        return
    held = not mine and inst.task_state is not None and not inst.locked
    if held and (row.task_states is None or inst.task_state not in row.task_states):
        if early and ctx.settings.wait_lock_s > 0:
            return  # the claim waits for it (--wait-lock) and checks again
        raise _busy(inst, action, f"{reason}; {holder_of(session, ctx, inst)}")
    raise InvalidState(
        reason,
        action=action,
        name=inst.name,
        vm_state=inst.vm_state,
        task_state=inst.task_state,
        locked=inst.locked,
    )


def _busy(inst: Instance, action: str, message: str) -> InstanceBusy:
    return InstanceBusy(
        message,
        action=action,
        name=inst.name,
        vm_state=inst.vm_state,
        task_state=inst.task_state,
        held_by=inst.task_owner,
    )


def holder_of(session: Session, ctx: Context, inst: Instance) -> str:
    """Who holds ``inst``'s task, for a refusal: a live command, a dead one, or nobody."""
    row = None
    if inst.task_owner is not None:
        row = session.scalars(
            select(CommandLease).where(CommandLease.uuid == inst.task_owner)
        ).first()
    if row is None:
        return "no live command holds it (`cloudctl reconcile` settles it)"
    info = lease_info(row)
    now = ctx.clock()
    if info.expired(now):
        return f"held by {info.describe(now)}: the command died; `cloudctl reconcile` settles it"
    return f"held by {info.describe(now)}; --wait-lock SECONDS waits for it"


def claim(
    session: Session,
    ctx: Context,
    uuids: Iterable[str],
    action: str,
    task_state: str,
    vm_states: Collection[str] | Literal["row"] | None = FROM_TABLE,
    *,
    task_states: Collection[str | None] | Literal["row"] | None = FROM_TABLE,
    now: datetime | None = None,
) -> list[Instance]:
    """Set ``task_state`` on ``uuids`` for this command, each with one conditional UPDATE.

    In UUID order (two commands claiming overlapping sets cannot deadlock). The first instance
    refused raises; the caller's transaction then rolls the others back. Returns the instances
    (in the order given), with their task_state set.
    """
    lease = _lease(ctx)
    row = accepts(action, vm_states, task_states)
    order = list(dict.fromkeys(uuids))
    stamp = now or ctx.clock()
    session.flush()
    for u in sorted(order):
        conds: list[ColumnElement[bool]] = [Instance.uuid == u, Instance.deleted == 0]
        if row.vm_states is not None:
            conds.append(Instance.vm_state.in_(sorted(row.vm_states)))
        if not row.when_locked:
            conds.append(Instance.locked.is_(False))
        if row.task_states is not None:
            named = sorted(t for t in row.task_states if t is not None)
            free: ColumnElement[bool] = Instance.task_state.is_(None)
            if named:
                listed = Instance.task_state.in_(named)
                free = or_(free, listed) if None in row.task_states else listed
            conds.append(or_(free, Instance.task_owner == lease.uuid))
        result = session.execute(
            update(Instance)
            .where(*conds)
            .values(task_state=task_state, task_owner=lease.uuid, updated_at=stamp)
            .execution_options(synchronize_session=False)
        )
        if not getattr(result, "rowcount", 0):
            inst = _fresh(session, u)
            if inst.deleted:
                raise NotFound(kind="instance", name=inst.name)
            mine = inst.task_owner == lease.uuid
            _refuse(session, ctx, inst, action, row, mine)
            # Allowed now, though the UPDATE matched nothing: it changed under us. Refuse
            # rather than loop: the caller's transaction is rolled back and may be tried again.
            label = row.label or action
            raise _busy(
                inst, action, f"cannot {label} instance {inst.name}: it changed while claimed"
            )
    return [_fresh(session, u) for u in order]


def _fresh(session: Session, uuid: str) -> Instance:
    inst = session.scalars(
        select(Instance).where(Instance.uuid == uuid).execution_options(populate_existing=True)
    ).first()
    if inst is None:
        raise NotFound(kind="instance", name=uuid)
    return inst


def _cas(session: Session, ctx: Context, inst: Instance, task_state: str | None) -> None:
    lease = _lease(ctx)
    session.flush()
    owner = None if task_state is None else lease.uuid
    result = session.execute(
        update(Instance)
        .where(Instance.id == inst.id, Instance.task_owner == lease.uuid)
        .values(task_state=task_state, task_owner=owner, updated_at=ctx.clock())
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        raise LeaseLost(command=lease.command, name=inst.name)
    set_committed_value(inst, "task_state", task_state)
    set_committed_value(inst, "task_owner", owner)


def advance(session: Session, ctx: Context, inst: Instance, task_state: str) -> None:
    """Move a claimed instance to its next task_state (compare-and-swap on the owner)."""
    _cas(session, ctx, inst, task_state)


def finish(session: Session, ctx: Context, inst: Instance) -> None:
    """End this command's task on ``inst``: task_state and owner cleared, if still ours.

    Raises :class:`LeaseLost` when another controller took the command's lease over: then it
    settles the instance, and this command must write nothing more about it.
    """
    _cas(session, ctx, inst, None)


def owned(session: Session, ctx: Context, inst: Instance) -> bool:
    """Whether this command holds ``inst``'s task."""
    return ctx.lease is not None and inst.task_owner == ctx.lease.uuid


def start(ctx: Context, step: Callable[[Session], T]) -> T:
    """Run a command's first step (claims included) in one transaction.

    With ``wait_lock_s`` > 0 (``--wait-lock``), an :class:`InstanceBusy` refusal is retried in a
    fresh transaction until the other command lets go or the time is up.
    """
    deadline = time.monotonic() + max(0.0, ctx.settings.wait_lock_s)
    told = False
    while True:
        try:
            with ctx.db.unit_of_work() as session:
                return step(session)
        except InstanceBusy as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            if not told:
                ctx.progress.info(f"waiting up to {ctx.settings.wait_lock_s:g}s: {exc.message}")
                told = True
            time.sleep(min(WAIT_POLL_S, left))


def owned_by(session: Session, lease_uuid: str) -> Sequence[Instance]:
    """The instances whose task ``lease_uuid`` holds."""
    return list(session.scalars(select(Instance).where(Instance.task_owner == lease_uuid)))


# -- dead commands' instances ----------------------------------------------------------------------
def take_dead(ctx: Context, inst_uuid: str) -> tuple[bool, str | None]:
    """Make ``inst_uuid`` this command's if the command holding its task is dead.

    Its expired lease is taken over whole (:func:`cloudctl.services.leases.take_over`: its
    other instances become this command's too); an instance no lease names is taken with a
    compare-and-swap on the owner it has, while no live lease owns it. Returns (taken, the
    request id of the instance's open action, else the dead command's).
    """
    mine = _lease(ctx)
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        inst = session.scalars(select(Instance).where(Instance.uuid == inst_uuid)).first()
        if inst is None or inst.deleted:
            return False, None
        owner = inst.task_owner
        row = (
            session.scalars(select(CommandLease).where(CommandLease.uuid == owner)).first()
            if owner
            else None
        )
        dead_request = row.request_id if row is not None else None
    if owner != mine.uuid:
        if row is not None:
            take_over(ctx, row.uuid, mine)
        else:
            live = exists().where(
                CommandLease.uuid == Instance.task_owner, CommandLease.expires_at >= now
            )
            owner_is = (
                Instance.task_owner.is_(None) if owner is None else Instance.task_owner == owner
            )
            with ctx.db.unit_of_work() as session:
                session.execute(
                    update(Instance)
                    .where(Instance.uuid == inst_uuid, Instance.deleted == 0, owner_is, ~live)
                    .values(task_owner=mine.uuid, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
    with ctx.db.unit_of_work() as session:
        inst = session.scalars(select(Instance).where(Instance.uuid == inst_uuid)).first()
        taken = inst is not None and inst.task_owner == mine.uuid
        if taken and inst is not None and inst.task_state is None:
            inst.task_state = TaskState.SETTLING  # a build left with no task: ours now
        if inst is not None:
            # The step's own action (a command nested in apply has a request id of its own).
            dead_request = open_request(session, inst) or dead_request
    return taken, dead_request


def open_request(session: Session, inst: Instance) -> str | None:
    """The request id of the instance's newest unfinished action (None if none)."""
    act = session.scalars(
        select(InstanceAction)
        .where(InstanceAction.instance_uuid == inst.uuid, InstanceAction.finish_time.is_(None))
        .order_by(InstanceAction.id.desc())
    ).first()
    return act.request_id if act is not None else None
