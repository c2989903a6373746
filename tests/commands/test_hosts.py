"""``host prepare``, ``host remove`` and the disabled reason through the real CLI entry point (a
fake executor behind it): output, one ``error:`` line and exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

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
from tests.services.test_hosts_manage import ROLE_TASKS, role_answer

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def fake() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture
def cli(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeExecutor,
) -> Iterator[Cli]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CLOUDCTL_HOME", str(home))
    monkeypatch.delenv("CLOUDCTL_DB", raising=False)
    settings = load_settings()
    db = Database(settings.db_url)
    db.ensure_schema()
    ctx = Context(settings=settings, db=db, executor_factory=lambda: fake)
    add_host(ctx, "h1", last_heartbeat=utcnow())
    add_host(ctx, "h2", last_heartbeat=utcnow())
    flavors.create_flavor(ctx, "small", vcpus=1, memory_mb=512, root_gb=1)
    add_image(ctx)
    db.dispose()
    fake.on("spawn.yml", running)
    monkeypatch.setattr(common, "AnsibleExecutor", lambda **_: fake)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = run(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke


def test_prepare_reports_counts_and_changed_tasks(cli: Cli, fake: FakeExecutor) -> None:
    fake.on("prepare_host.yml", role_answer(frozenset({"Set the managed lines of qemu.conf"})))
    code, out, err = cli("host", "prepare", "h1", "-o", "json")
    assert code == 0, err
    [report] = json.loads(out)
    assert (report["name"], report["ok"], report["changed"], report["failed"]) == (
        "h1",
        len(ROLE_TASKS),
        1,
        0,
    )
    assert report["changed_tasks"] == ["Set the managed lines of qemu.conf"]
    assert [r.playbook for r in fake.requests] == ["prepare_host.yml", "discover.yml"]

    code, out, err = cli("host", "prepare", "h1", "--check")
    assert code == 0, err
    assert "CHANGED TASKS" in out and "Set the managed lines of qemu.conf" in out
    assert fake.requests[-1].check is True and len(fake.requests) == 3


def test_a_failed_prepare_exits_1_with_one_error_line(cli: Cli, fake: FakeExecutor) -> None:
    fake.fail("prepare_host.yml", host="h1", task="Gathering Facts", msg="ssh: no route\nto host")
    code, out, err = cli("host", "prepare", "h1", "-o", "json")
    assert code == 1
    assert json.loads(out)[0]["failed"] == 1
    assert err == "error: prepare of host 'h1' failed: ssh: no route\n"
    code, _, err = cli("host", "prepare", "ghost")
    assert (code, err) == (2, "error: host 'ghost' not found\n")


def test_remove_refuses_a_host_with_guests_then_removes_an_empty_one(cli: Cli) -> None:
    code, out, err = cli("boot", "web", "--flavor", "small", "--image", "tiny", "-o", "json")
    assert code == 0, err
    busy = json.loads(out)["host"]
    idle = "h2" if busy == "h1" else "h1"

    code, out, err = cli("host", "remove", busy)
    assert code == 2 and out == ""
    assert err.startswith(f"error: host '{busy}' is in use: 1 instance(s) (web); ")
    assert err.count("\n") == 1

    code, out, err = cli("host", "remove", idle, "-o", "json")
    assert code == 0, err
    assert json.loads(out)["removed"] is True
    names = [h["name"] for h in json.loads(cli("host", "list", "-o", "json")[1])]
    assert names == [busy]


def test_the_disabled_reason_shows_in_list_and_show(cli: Cli) -> None:
    code, _, err = cli("host", "disable", "h1", "--reason", "disk replacement")
    assert code == 0, err
    code, out, _ = cli("host", "list")
    assert "REASON" in out and "disk replacement" in out
    code, out, _ = cli("host", "show", "h1")
    assert "disabled_reason" in out and "disk replacement" in out
    assert json.loads(cli("host", "show", "h1", "-o", "json")[1])["status"] == "disabled"
    assert cli("host", "enable", "h1")[0] == 0
    assert json.loads(cli("host", "show", "h1", "-o", "json")[1])["disabled_reason"] is None
