"""verify / reconcile / agent / host events through the real CLI entry point (fake executor)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from sqlalchemy import delete

from cloudctl.commands import common
from cloudctl.commands.reconcile import _StopFlag
from cloudctl.db.models import Allocation, utcnow
from cloudctl.db.session import Database
from cloudctl.executor.fake import FakeExecutor
from cloudctl.main import run
from cloudctl.services.context import Context
from cloudctl.services.settings import load_settings
from tests.conftest import add_host


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CLOUDCTL_HOME", str(home))
    monkeypatch.delenv("CLOUDCTL_DB", raising=False)
    settings = load_settings()
    db = Database(settings.db_url)
    db.ensure_schema()
    fake = FakeExecutor()
    fake.on(
        "discover.yml",
        lambda req: {
            t.name: {"host facts": {"host_facts": {"vcpus": 4, "memory_mb": 4096, "domains": []}}}
            for t in req.hosts
        },
    )
    ctx = Context(settings=settings, db=db, executor_factory=lambda: fake)
    add_host(ctx, "h1", last_heartbeat=utcnow())
    db.dispose()
    monkeypatch.setattr(common, "AnsibleExecutor", lambda **_: fake)
    return settings.db_url


def test_verify_exit_codes_follow_error_findings(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["verify", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []
    db = Database(db_url)
    with db.unit_of_work() as s:
        s.add(Allocation(host_id=1, consumer_uuid="ghost", resource_class="VCPU", used=1))
    assert run(["verify"]) == 1
    out, err = capsys.readouterr()
    assert "ELEDGER002" in out and "1 error(s), 0 warning(s)" in err + out
    assert run(["verify", "--fix", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in report["fixed"]] == ["ELEDGER002"]
    with db.unit_of_work() as s:
        s.execute(delete(Allocation))
    db.dispose()


def test_reconcile_and_host_events(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["reconcile", "-o", "json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["tasks"][0] == "update_available_resource" and view["hosts_up"] == ["h1"]
    assert run(["host", "events", "h1", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(["host", "events", "nope"]) != 0


def test_agent_runs_the_passes_asked_for(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["agent", "--interval", "0.01", "--passes", "2", "-o", "json"]) == 0
    out, err = capsys.readouterr()
    assert out.count('"request_id"') == 2
    assert "agent: stopped after 2 pass(es)" in err
    assert run(["agent", "--interval", "0"]) == 2


def test_a_signal_stops_after_the_task_and_a_second_one_at_once() -> None:
    flag = _StopFlag()
    flag(signal.SIGTERM, None)
    assert flag.event.is_set()
    with pytest.raises(KeyboardInterrupt):
        flag(signal.SIGINT, None)
