"""plan / apply over the fake executor: the example estate, then each kind of change."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cloudctl.db.models import ApplyRun, CommandLease
from cloudctl.errors import InvalidInput, LockHeld
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import desired, gitops, leases, reconcile, state_store
from cloudctl.services.context import Context
from tests.conftest import NOW, add_host
from tests.services.conftest import add_image, running
from tests.services.lifecycle import another, power_answer, row

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "estate"


@pytest.fixture
def lab(ctx: Context, fake: FakeExecutor, tmp_path: Path) -> Path:
    for i in range(1, 5):
        add_host(ctx, f"lab-{i}", availability_zone="az1" if i % 2 else "az2", memory_mb=8192)
    add_image(ctx)
    fake.on("spawn.yml", running)
    fake.on("power.yml", power_answer)
    estate = tmp_path / "estate"
    shutil.copytree(EXAMPLES, estate)
    return estate


def actions_of(plan: gitops.Plan) -> dict[tuple[str, str], str]:
    return {(c.kind, c.name): c.action for c in plan.diff.changes if c.is_change}


def test_apply_the_examples_then_nothing_to_do(ctx: Context, lab: Path, fake: FakeExecutor) -> None:
    plan = gitops.make_plan(ctx, lab)
    assert plan.errors == []
    planned = actions_of(plan)
    assert planned[("Server", "web-1")] == "create" and planned[("Flavor", "m1.small")] == "create"
    hosts = {n: p.host for n, p in plan.placements.items()}
    assert len({hosts["web-1"], hosts["web-2"], hosts["web-3"]}) == 3  # anti-affinity
    assert hosts["db"] == "lab-1"  # pinned
    assert hosts["cache"] == "lab-4"  # preferred, and not db's host
    _, report = gitops.run_apply(ctx, lab)
    assert report is not None and report.failed == [], report.failed
    spawns = [r for r in fake.requests if r.playbook == "spawn.yml"]
    assert len(spawns) == 1  # every server built in one play
    assert row(ctx, "batch-01").vm_state == "stopped"
    assert row(ctx, "db").host_id is not None
    again = gitops.make_plan(ctx, lab)
    assert not again.has_changes, actions_of(again)
    owned = state_store.owned(ctx)
    assert set(owned["Server"]) == {
        "web-1",
        "web-2",
        "web-3",
        "db",
        "batch-01",
        "batch-02",
        "cache",
    }


def test_replicas_power_metadata_and_prune(ctx: Context, lab: Path, fake: FakeExecutor) -> None:
    gitops.run_apply(ctx, lab)
    servers = lab / "servers.yaml"
    text = servers.read_text()
    text = text.replace("replicas: 3", "replicas: 4").replace("role: web", "role: frontend")
    text = text.replace("power_state: stopped", "power_state: running")
    servers.write_text(text)
    plan = gitops.make_plan(ctx, lab)
    got = actions_of(plan)
    assert got[("Server", "web-4")] == "create"
    assert got[("Server", "web-1")] == "update"  # metadata: live
    assert got[("Server", "batch-01")] == "update"  # power: live
    assert {c.impact for c in plan.diff.changes if c.kind == "Server" and c.action == "update"} == {
        "live"
    }
    _, report = gitops.run_apply(ctx, lab)
    assert report is not None and not report.failed, report.failed
    assert row(ctx, "batch-02").vm_state == "active"
    assert row(ctx, "web-2").instance_metadata == {"role": "frontend"}
    # cache is dropped from the files: kept without --prune, deleted with it
    servers.write_text(
        servers.read_text().split("kind: Server\nmetadata:\n  name: cache")[0].rsplit("---", 1)[0]
    )
    assert ("Server", "cache") not in actions_of(gitops.make_plan(ctx, lab))
    fake.on("destroy.yml", lambda req: {})
    plan = gitops.make_plan(ctx, lab, prune=True)
    assert actions_of(plan)[("Server", "cache")] == "delete"
    gitops.run_apply(ctx, lab, prune=True)
    assert row(ctx, "cache").vm_state == "deleted"
    assert not gitops.make_plan(ctx, lab, prune=True).has_changes


def test_a_saved_plan_is_refused_once_the_books_moved(
    ctx: Context, lab: Path, tmp_path: Path
) -> None:
    plan = gitops.make_plan(ctx, lab)
    saved = tmp_path / "plan.json"
    gitops.save_plan(plan, saved, lab, False)
    add_host(ctx, "lab-5", availability_zone="az1")
    with pytest.raises(InvalidInput, match="changed since"):
        gitops.run_apply(ctx, None, plan_file=saved)


def test_a_second_apply_waits_for_the_lock_then_gives_up(ctx: Context, lab: Path) -> None:
    with state_store.state_lock(ctx, "apply", 0), pytest.raises(LockHeld):
        gitops.run_apply(ctx, lab, lock_timeout_s=0.2)


def test_an_apply_killed_mid_build_is_cleaned_up_by_the_next(
    ctx: Context, lab: Path, fake: FakeExecutor
) -> None:
    plan = gitops.make_plan(ctx, lab)
    estate, _ = gitops.load(ctx, lab)

    def die(req: object) -> dict[str, object]:
        raise KeyboardInterrupt  # the process dies while the spawn play runs

    fake.on("spawn.yml", die)
    with pytest.raises(KeyboardInterrupt), leases.command_lease(ctx, "apply"):
        gitops.apply(ctx, plan, estate)
    assert row(ctx, "web-1").vm_state == "building"
    with ctx.db.unit_of_work() as s:  # as if its process were gone: its run never finished
        s.execute(update(ApplyRun).values(status="running"))
        # and nobody renews its lease any more (it was left expired: instances in a task)
        assert s.scalars(select(CommandLease.expires_at)).one() < NOW
    fake.on("spawn.yml", running)
    fake.on("destroy.yml", lambda req: {})
    _, report = gitops.run_apply(ctx, lab)
    assert report is not None and "web-1" in report.cleaned and not report.failed
    assert row(ctx, "web-1").vm_state == "active"
    with ctx.db.unit_of_work() as s:  # the dead apply's lease went with what it held
        assert s.scalars(select(CommandLease)).all() == []
    with ctx.db.unit_of_work() as s:
        assert reconcile.ledger_findings(s, NOW) == []
    assert not gitops.make_plan(ctx, lab).has_changes


def test_refresh_shows_what_the_hosts_say_apart_from_changes(
    ctx: Context, lab: Path, fake: FakeExecutor
) -> None:
    gitops.run_apply(ctx, lab)
    web1, web2 = row(ctx, "web-1"), row(ctx, "web-2")

    def survey(req: RunRequest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in req.hosts:
            domains: list[dict[str, Any]] = []
            if t.name == "lab-1":  # where it runs does not matter to drift
                domains.append(
                    {
                        "name": web2.domain_name,
                        "uuid": web2.uuid,
                        "state": "running",
                        "vcpus": 7,
                        "memory_mb": 999,
                    }
                )
            if t.name == "lab-2":
                domains.append(
                    {
                        "name": "stranger",
                        "uuid": "5e1b4c1e-0000-4000-8000-00000000000a",
                        "state": "running",
                    }
                )
            out[t.name] = {"host facts": {"host_facts": {"domains": domains}}}
        return out

    fake.on("discover.yml", survey)
    plan = gitops.make_plan(ctx, lab, refresh=True)
    assert not plan.has_changes  # drift is shown, never planned
    kinds = {(d.server, d.kind) for d in plan.diff.drift}
    assert (web1.name, "domain-missing") in kinds
    assert ("stranger", "unknown-domain") in kinds
    (mismatch,) = [d for d in plan.diff.drift if d.kind == "flavor-mismatch"]
    assert mismatch.server == "web-2"
    assert mismatch.detail.startswith("7 vCPU / 999 MiB on ")
    assert {d["category"] for d in plan.view()["drift"]} == {"config"}
    assert not gitops.make_plan(ctx, lab).diff.drift or all(
        d.kind == "placement" for d in gitops.make_plan(ctx, lab).diff.drift
    )


def test_networks_are_created_replaced_and_pruned(ctx: Context, lab: Path) -> None:
    doc = (
        "apiVersion: cloudctl.dev/v1\nkind: Network\nmetadata: {name: storage}\n"
        "spec: {cidr: 10.77.0.0/24, gateway: 10.77.0.1, dns: [10.77.0.53]}\n"
    )
    (lab / "net.yaml").write_text(doc)
    assert actions_of(gitops.make_plan(ctx, lab))[("Network", "storage")] == "create"
    gitops.run_apply(ctx, lab)
    (lab / "net.yaml").write_text(doc.replace("10.77.0.53", "10.77.0.54"))
    assert actions_of(gitops.make_plan(ctx, lab)) == {("Network", "storage"): "replace"}
    _, report = gitops.run_apply(ctx, lab)
    assert report is not None and not report.failed
    assert not gitops.make_plan(ctx, lab).has_changes
    (lab / "net.yaml").unlink()
    assert actions_of(gitops.make_plan(ctx, lab, prune=True)) == {("Network", "storage"): "delete"}
    gitops.run_apply(ctx, lab, prune=True)
    assert not gitops.make_plan(ctx, lab, prune=True).has_changes


def test_a_plan_saved_from_a_relative_path_applies(
    ctx: Context, lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(lab.parent)
    plan = gitops.make_plan(ctx, lab.name)
    saved = tmp_path / "plan.json"
    gitops.save_plan(plan, saved, lab.name, False)
    _, report = gitops.run_apply(ctx, None, plan_file=saved)
    assert report is not None and not report.failed


def test_an_image_file_swapped_for_a_link_out_of_the_tree_after_planning_is_not_read(
    ctx: Context, tmp_path: Path
) -> None:
    estate = tmp_path / "estate"
    estate.mkdir()
    (estate / "kernel").write_bytes(b"kernel")
    (estate / "images.yaml").write_text(
        "apiVersion: cloudctl.dev/v1\nkind: Image\nmetadata:\n  name: k\n"
        "spec:\n  kernel: kernel\n  cmdline: console=ttyS0\n"
    )
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    plan = gitops.make_plan(ctx, estate)
    files = desired.read_files(estate.resolve())
    loaded, _ = gitops.load(ctx, estate)
    (estate / "kernel").unlink()
    (estate / "kernel").symlink_to(secret)  # swapped after validation, before the copy
    with leases.command_lease(ctx, "apply"):
        report = gitops.apply(ctx, plan, loaded, root=files.root)
    [failed] = report.failed
    assert "resolves outside" in failed["error"]
    assert not (ctx.settings.images_dir).exists() or not any(ctx.settings.images_dir.iterdir())


def test_a_killed_applys_lease_is_waited_for_once_its_state_lock_expired(ctx: Context) -> None:
    """The dead apply's state lock ran out a few seconds before its command lease: the next
    apply waits for that lease rather than take its servers for a live command's."""
    now = [NOW]
    ctx.clock = lambda: now[0]
    with leases.command_lease(another(ctx), "apply (killed)") as dead:
        run = state_store.start_run(another(ctx), "fp")
        with ctx.db.unit_of_work() as s:
            s.execute(update(ApplyRun).where(ApplyRun.uuid == run).values(lease_uuid=dead.uuid))
        assert state_store.live_runs_of_others(ctx) == [run]
        timer = threading.Timer(0.6, lambda: now.__setitem__(0, NOW + timedelta(minutes=5)))
        timer.start()
        started = time.monotonic()
        gitops._await_dead_runs(ctx)
        timer.join()
        assert 0.5 < time.monotonic() - started < 5
        assert state_store.live_runs_of_others(ctx) == []
        dead.handed_off = True  # as if killed: its row stays
