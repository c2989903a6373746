"""plan / apply through the CLI entry point (fake executor): exit codes, formats, refusals."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudctl.commands import common
from cloudctl.commands.gitops_cmd import markdown
from cloudctl.db.models import utcnow
from cloudctl.db.session import Database
from cloudctl.executor.fake import FakeExecutor
from cloudctl.main import run
from cloudctl.services.context import Context
from cloudctl.services.settings import load_settings
from tests.conftest import add_host
from tests.services.conftest import add_image, running
from tests.services.lifecycle import power_answer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "estate"
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CLOUDCTL_HOME", str(home))
    monkeypatch.delenv("CLOUDCTL_DB", raising=False)
    settings = load_settings()
    db = Database(settings.db_url)
    db.ensure_schema()
    fake = FakeExecutor()
    fake.on("spawn.yml", running)
    fake.on("power.yml", power_answer)
    ctx = Context(settings=settings, db=db, executor_factory=lambda: fake)
    for i in range(1, 5):
        add_host(
            ctx,
            f"lab-{i}",
            availability_zone="az1" if i % 2 else "az2",
            memory_mb=8192,
            last_heartbeat=utcnow(),
        )
    add_image(ctx)
    db.dispose()
    monkeypatch.setattr(common, "AnsibleExecutor", lambda **_: fake)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = run(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def estate(tmp_path: Path) -> Path:
    path = tmp_path / "estate"
    shutil.copytree(EXAMPLES, path)
    return path


def test_detailed_exit_codes_and_formats(cli: Cli, estate: Path, tmp_path: Path) -> None:
    code, out, _ = cli("plan", "-f", str(estate), "--detailed-exitcode", "-o", "json")
    assert code == 2
    view = json.loads(out)
    assert view["summary"]["create"] > 0
    code, out, _ = cli("plan", "-f", str(estate), "-o", "markdown")
    assert code == 0 and out.startswith("### cloudctl plan")
    assert "| `+` create | Server | `db` |" in out and "Placement: weights" in out
    saved = tmp_path / "plan.json"
    assert cli("plan", "-f", str(estate), "--out", str(saved))[0] == 0
    code, out, err = cli("apply", "--plan", str(saved), "-o", "json")
    assert code == 0, out + err
    assert json.loads(out)["failed"] == []
    assert cli("plan", "-f", str(estate), "--detailed-exitcode")[0] == 0
    code, _, err = cli("apply", "--plan", str(saved))
    assert code == 2 and "changed since" in err  # the books moved on: plan again


def test_apply_needs_approval_off_a_terminal(cli: Cli, estate: Path) -> None:
    code, _, err = cli("apply", "-f", str(estate))
    assert code == 2 and "--auto-approve" in err
    code, out, _ = cli("list", "-o", "json")
    assert json.loads(out) == []


def test_malformed_files_exit_2_with_file_and_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: cloudctl.dev/v1\nkind: Server\nmetadata: {name: x}\n"
        "spec: {flavor: m1.hge, image: tiny, replicas: three}\n"
    )
    for argv in (("plan", "-f", str(bad)), ("apply", "-f", str(bad), "--auto-approve")):
        code, _, err = cli(*argv)
        assert code == 2
        lines = err.strip().splitlines()
        assert all(line.startswith(f"error: {bad}:4: spec.") for line in lines), err
        assert any('unknown flavor "m1.hge"' in line for line in lines)
    code, out, _ = cli("list", "-o", "json")
    assert json.loads(out) == []


def test_markdown_shows_placement_drift_apart() -> None:
    view = {
        "summary": {"create": 0, "update": 0, "replace": 0, "move": 0, "delete": 0},
        "changes": [],
        "capacity": [],
        "errors": [],
        "unmanaged": [],
        "undeclared": [],
        "drift": [
            {"server": "db", "kind": "flavor-mismatch", "detail": "2 vCPU", "category": "config"},
            {"server": "web-1", "kind": "placement", "detail": "on lab-3", "category": "placement"},
        ],
    }
    text = markdown(view)
    config = text.index("**Drift: the hosts differ from the books**")
    placement = text.index("**Placement drift: servers not on the host they prefer**")
    assert config < text.index("`db`: flavor-mismatch") < placement < text.index("`web-1`")
