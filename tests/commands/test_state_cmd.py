"""``cloudctl state lock|unlock|show`` through the real CLI entry point: output and exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudctl.db.models import StateLock
from cloudctl.db.session import Database
from cloudctl.executor.fake import FakeExecutor
from cloudctl.main import run
from cloudctl.services import state_store
from cloudctl.services.context import Context
from cloudctl.services.settings import load_settings

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def service_ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    """The service context over the same home the CLI uses."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CLOUDCTL_HOME", str(home))
    monkeypatch.delenv("CLOUDCTL_DB", raising=False)
    settings = load_settings()
    db = Database(settings.db_url)
    db.ensure_schema()
    yield Context(settings=settings, db=db, executor_factory=FakeExecutor)
    db.dispose()


@pytest.fixture
def cli(service_ctx: Context, capsys: pytest.CaptureFixture[str]) -> Cli:
    def invoke(*argv: str) -> tuple[int, str, str]:
        code = run(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def json_of(cli: Cli, *argv: str) -> Any:
    code, out, err = cli(*argv, "-o", "json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def other_process() -> Iterator[int]:
    child = subprocess.Popen(["sleep", "60"])
    yield child.pid
    child.kill()
    child.wait()


def test_lock_by_hand_blocks_until_unlock(cli: Cli) -> None:
    held = json_of(cli, "state", "lock", "--reason", "db maintenance")
    assert (held["pid"], held["operation"], held["info"], held["by_hand"]) == (
        0,
        "manual",
        "db maintenance",
        True,
    )
    assert held["holder"] == state_store.holder_name()

    code, out, err = cli("state", "lock", "--timeout", "0.2")
    assert (code, out) == (1, "")
    waiting, failed = err.splitlines()
    assert waiting.startswith("• waiting up to 0.2s for state lock held by")
    assert failed.startswith(
        f"error: state lock 'default' is held by {state_store.holder_name()} (by hand, manual "
        "since "
    )
    assert failed.endswith(": db maintenance); waited 0.2s; `cloudctl state unlock` releases it")
    assert json_of(cli, "state", "show")["lock"]["info"] == "db maintenance"

    released = json_of(cli, "state", "unlock")["released"]
    assert released["pid"] == 0
    assert json_of(cli, "state", "show")["lock"] is None
    assert json_of(cli, "state", "unlock") == {"released": None}


def test_table_output(cli: Cli) -> None:
    code, out, err = cli("state", "lock", "--reason", "hold")
    assert (code, out) == (0, "")
    assert err.startswith(f"state lock 'default' taken by {state_store.holder_name()} (by hand")
    code, _, err = cli("state", "show")
    assert code == 0
    assert "state lock 'default': held by" in err and ": hold)" in err
    assert "no apply runs" in err and "no managed resources" in err
    code, _, err = cli("state", "unlock")
    assert code == 0 and err.startswith("state lock 'default' released (was held by")
    code, _, err = cli("state", "unlock")
    assert (code, err) == (0, "state lock 'default' was not held\n")


def test_unlock_refuses_a_running_apply_unless_forced(
    cli: Cli, service_ctx: Context, other_process: int
) -> None:
    state_store.acquire_lock(service_ctx, operation="apply", timeout_s=0, pid=other_process)
    code, _, err = cli("state", "unlock")
    assert code == 1
    assert f"(pid {other_process}, apply since" in err
    assert err.rstrip().endswith(
        "it is taken over once its holder stops renewing it; "
        "`cloudctl state unlock --force` breaks it"
    )
    assert json_of(cli, "state", "show")["lock"]["pid"] == other_process
    released = json_of(cli, "state", "unlock", "--force")["released"]
    assert released["pid"] == other_process
    assert json_of(cli, "state", "show")["lock"] is None


def test_unlock_releases_a_lock_whose_lease_expired(cli: Cli, service_ctx: Context) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    with service_ctx.db.unit_of_work() as s:
        s.add(
            StateLock(
                name="default",
                holder="ci@runner-7",
                pid=4242,
                hostname="runner-7",
                operation="apply",
                acquired_at=past,
                heartbeat_at=past,
                expires_at=past + timedelta(seconds=30),
            )
        )
    assert json_of(cli, "state", "show")["lock"]["stale"] is True
    assert json_of(cli, "state", "unlock")["released"]["pid"] == 4242


def test_show_lists_runs_unfinished_steps_and_managed_resources(
    cli: Cli, service_ctx: Context
) -> None:
    ctx = service_ctx
    done = state_store.start_run(ctx, "fp-1")
    state_store.record_step(ctx, done, 1, "flavor", "m1.small", "create", "done")
    state_store.finish_run(ctx, done, "done", {"created": 1})
    broken = state_store.start_run(ctx, "fp-2")
    state_store.record_step(ctx, broken, 1, "server", "web", "create", "done")
    state_store.record_step(ctx, broken, 2, "server", "db", "create", "running")
    state_store.record_owned(ctx, "Flavor", "m1.small", None, apply_uuid=done)
    state_store.record_owned(ctx, "Server", "web", "u-1", apply_uuid=broken)
    state_store.record_owned(ctx, "Server", "db", "u-2", "team-b", broken)

    view = json_of(cli, "state", "show")
    assert view["lock"] is None
    assert [(r["uuid"], r["status"], r["stale"]) for r in view["runs"]] == [
        (broken, "running", False),  # this process wrote it and is alive
        (done, "done", False),
    ]
    assert [s["name"] for s in view["runs"][0]["steps"]] == ["db"]
    assert view["runs"][1]["summary"] == {"created": 1}
    assert view["managed"] == {"default": {"Flavor": 1, "Server": 1}, "team-b": {"Server": 1}}
    assert [r["uuid"] for r in json_of(cli, "state", "show", "--runs", "1")["runs"]] == [broken]

    code, out, _ = cli("state", "show")
    assert code == 0
    assert "2:server/db create running" in out
    assert "team-b" in out and "Flavor" in out
