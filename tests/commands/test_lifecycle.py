"""The lifecycle verbs through the real CLI entry point (a fake executor behind it): ``-o json``,
one ``error:`` line and exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudctl.commands import common
from cloudctl.db.models import utcnow
from cloudctl.db.session import Database
from cloudctl.executor.fake import FakeExecutor
from cloudctl.main import run
from cloudctl.services import flavors
from cloudctl.services.context import Context
from cloudctl.services.settings import load_settings
from tests.conftest import add_host
from tests.services.conftest import add_image, running
from tests.services.lifecycle import power_answer, rebuild_answer

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("reclaim_instance_interval: 3600\n")
    monkeypatch.setenv("CLOUDCTL_HOME", str(home))
    monkeypatch.delenv("CLOUDCTL_DB", raising=False)
    settings = load_settings()
    db = Database(settings.db_url)
    db.ensure_schema()
    fake = FakeExecutor()
    fake.on("spawn.yml", running)
    fake.on("power.yml", power_answer)
    fake.on("rebuild.yml", rebuild_answer)
    ctx = Context(settings=settings, db=db, executor_factory=lambda: fake)
    add_host(ctx, "h1", last_heartbeat=utcnow())
    flavors.create_flavor(ctx, "small", vcpus=1, memory_mb=512, root_gb=1)
    add_image(ctx)
    db.dispose()
    monkeypatch.setattr(common, "AnsibleExecutor", lambda **_: fake)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = run(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def json_of(cli: Cli, *argv: str) -> Any:
    code, out, err = cli(*argv, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def test_lifecycle_verbs(cli: Cli) -> None:
    json_of(cli, "boot", "web", "--flavor", "small", "--image", "tiny")
    assert [v["status"] for v in json_of(cli, "pause", "web")] == ["PAUSED"]
    code, _, err = cli("suspend", "web")
    assert code == 1
    assert err == (
        "error: cannot suspend instance web: vm_state paused, task_state None "
        "(suspend needs active)\n"
    )
    assert [v["status"] for v in json_of(cli, "unpause", "web")] == ["ACTIVE"]
    assert [v["status"] for v in json_of(cli, "suspend", "web")] == ["SUSPENDED"]
    assert [v["status"] for v in json_of(cli, "resume", "web")] == ["ACTIVE"]
    [locked] = json_of(cli, "lock", "web", "--reason", "maintenance window")
    assert (locked["locked"], locked["locked_reason"]) == (True, "maintenance window")
    for argv in (
        ["stop", "web"],
        ["delete", "web"],
        ["delete", "--force", "web"],
        ["rebuild", "web"],
    ):
        code, _, err = cli(*argv)
        assert (code, err) == (1, "error: instance web is locked: maintenance window\n"), argv
    assert json_of(cli, "show", "web")["locked"] is True
    assert [v["locked"] for v in json_of(cli, "unlock", "web")] == [False]
    rebuilt = json_of(cli, "rebuild", "web", "--image", "tiny")
    assert rebuilt["status"] == "ACTIVE"
    assert [v["status"] for v in json_of(cli, "delete", "web")] == ["SOFT_DELETED"]
    code, _, err = cli("delete", "web")
    assert code == 1 and err.startswith("error: instance web is soft-deleted already")
    assert [v["status"] for v in json_of(cli, "restore", "web")] == ["ACTIVE"]
    assert [v["status"] for v in json_of(cli, "delete", "--force", "web")] == ["DELETED"]
    actions = [a["action"] for a in json_of(cli, "action", "list", "web")]
    assert actions == [
        "create",
        "pause",
        "unpause",
        "suspend",
        "resume",
        "lock",
        "unlock",
        "rebuild",
        "delete",
        "restore",
        "forceDelete",
    ]
    code, out, _ = cli("list")
    assert code == 0 and "web" not in out


def test_action_show_gives_one_action_with_its_events(cli: Cli) -> None:
    json_of(cli, "boot", "web", "--flavor", "small", "--image", "tiny")
    json_of(cli, "pause", "web")
    pause = next(a for a in json_of(cli, "action", "list", "web") if a["action"] == "pause")
    shown = json_of(cli, "action", "show", "web", pause["request_id"][:12])
    assert shown == pause
    assert [e["event"] for e in shown["events"]] == ["pause"]
    code, out, _ = cli("action", "show", "web", pause["request_id"])
    assert code == 0 and "EVENT" in out and "Success" in out
    code, _, err = cli("action", "show", "web", "req-nope")
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1
