"""Command leases (services/leases.py): who holds what, the heartbeat, take-over and fencing."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from cloudctl.db.models import CommandLease
from cloudctl.executor.base import stop_reason
from cloudctl.services import leases
from cloudctl.services.context import Context
from tests.conftest import NOW
from tests.services.lifecycle import another, foreign_lease


def rows(ctx: Context) -> list[CommandLease]:
    with ctx.db.unit_of_work() as s:
        return list(s.scalars(select(CommandLease)))


def test_a_lease_names_its_process_and_goes_with_its_command(ctx: Context) -> None:
    with leases.command_lease(ctx, "stop web") as lease:
        [row] = rows(ctx)
        me = leases.Owner.current()
        assert (row.uuid, row.command, row.pid, row.hostname) == (
            lease.uuid,
            "stop web",
            os.getpid(),
            me.hostname,
        )
        assert (row.boot_id, row.pid_ns, row.start_time) == (me.boot_id, me.pid_ns, me.start_time)
        assert me.start_time > 0 and me.boot_id != "unknown" and me.pid_ns != "unknown"
        assert row.expires_at == NOW + timedelta(seconds=ctx.settings.command_lease_s)
        assert ctx.lease is lease
    assert ctx.lease is None
    assert rows(ctx) == []


def test_nested_commands_share_the_outer_lease(ctx: Context) -> None:
    with leases.command_lease(ctx, "delete web") as outer:
        with leases.command_lease(ctx, "stop web") as inner:
            assert inner is outer
        assert len(rows(ctx)) == 1 and ctx.lease is outer
    assert rows(ctx) == []


def test_the_keeper_renews_while_the_command_runs(ctx: Context) -> None:
    now = [NOW]
    ctx.clock = lambda: now[0]
    ctx.settings = replace(ctx.settings, command_lease_s=1)
    with leases.command_lease(ctx, "live-migrate web"):
        now[0] = NOW + timedelta(minutes=5)  # e.g. a long play runs
        deadline = time.monotonic() + 5
        while rows(ctx)[0].expires_at != NOW + timedelta(minutes=5, seconds=1):
            assert time.monotonic() < deadline, "not renewed"
            time.sleep(0.05)


def test_a_taken_over_lease_is_lost_and_its_plays_stop(ctx: Context) -> None:
    other = another(ctx)
    with leases.command_lease(ctx, "resize web") as lease:
        assert stop_reason() is None
        with other.db.unit_of_work() as s:  # as reconcile does once it expired
            s.get(CommandLease, rows(ctx)[0].id).taken_over_by = "someone"  # type: ignore[union-attr]
        assert lease.renew() is False
        assert lease.lost
        assert stop_reason() == "resize web: its lease was taken over by another controller"
    assert stop_reason() is None


def test_a_command_that_cannot_renew_stops_its_plays_before_it_expires(ctx: Context) -> None:
    ctx.settings = replace(ctx.settings, command_lease_s=1)
    with leases.command_lease(ctx, "boot web") as lease:
        lease.renewed -= 0.9  # as if no renewal got through for 0.9 s of a 1 s lease
        reason = stop_reason()
        assert reason is not None and reason.startswith("boot web: its lease could not be renewed")


def test_take_over_is_a_compare_and_swap(ctx: Context) -> None:
    first, second = ctx, another(ctx)
    with leases.command_lease(first, "dead command") as dead:
        pass_time = NOW + timedelta(seconds=ctx.settings.command_lease_s + 1)
    # the dead command's row, as if its process was killed: left behind, not renewed
    foreign_lease(ctx, command="dead command", lease_uuid=dead.uuid)
    with leases.command_lease(second, "reconcile") as mine:
        assert not leases.take_over(second, dead.uuid, mine)  # not expired yet
        second.clock = lambda: pass_time
        assert leases.take_over(second, dead.uuid, mine)
        assert not leases.take_over(second, dead.uuid, mine)  # taken already
        [row] = [r for r in rows(ctx) if r.uuid == dead.uuid]
        assert row.taken_over_by == mine.uuid
    assert rows(ctx) == []  # what it took over went with the taker's end


def test_a_command_ending_with_instances_in_its_task_leaves_its_lease_expired(
    cloud: Context,
) -> None:
    from cloudctl.db.models import Flavor, Instance

    ctx = cloud
    with ctx.db.unit_of_work() as s:
        flavor_id = s.scalars(select(Flavor.id)).first()
    with leases.command_lease(ctx, "boot web") as lease, ctx.db.unit_of_work() as s:
        s.add(
            Instance(
                uuid="00000000-0000-4000-8000-000000000001",
                name="web",
                hostname="web",
                project_id="default",
                user_id="admin",
                flavor_id=flavor_id,
                domain_name="instance-1",
                vcpus=1,
                memory_mb=1,
                root_gb=1,
                vm_state="building",
                task_state="spawning",
                task_owner=lease.uuid,
            )
        )
    [row] = rows(ctx)
    assert row.expires_at < NOW  # reconcile settles it at once, no lease time to wait


def test_carry_on_makes_the_worker_the_owner(ctx: Context) -> None:
    with leases.command_lease(ctx, "boot web --no-wait") as lease:
        lease.handed_off = True
    worker = another(ctx)
    with leases.carry_on(worker, lease.uuid, "boot (worker)") as carried:
        assert carried.uuid == lease.uuid
        assert rows(ctx)[0].pid == os.getpid()
    assert rows(ctx) == []
    with pytest.raises(LookupError), leases.carry_on(worker, lease.uuid, "boot (worker)"):
        pass
