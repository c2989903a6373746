"""Fixtures of the inventory plugin tests: a state DB under a cloudctl home, and a runner for the
real ``ansible-inventory`` / ``ansible`` commands with the plugin found as the README says."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudctl.db.session import Database
from cloudctl.domain.settings import Settings
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services.context import Context

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORY = REPO / "inventory" / "cloudctl.yml"


def now() -> datetime:
    """The plugin judges heartbeats against the real clock, so the state uses it too."""
    return datetime.now(UTC)


@pytest.fixture
def state(tmp_path: Path, fake: FakeExecutor) -> Iterator[Context]:
    """A context whose SQLite state is ``$CLOUDCTL_HOME/state.db``, where the plugin looks."""
    home = tmp_path / "home"
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'state.db'}")
    db = Database(settings.db_url)
    db.ensure_schema()
    yield Context(
        settings=settings,
        db=db,
        executor_factory=lambda: fake,
        clock=now,
        rng=random.Random(42),
    )
    db.dispose()


def run_ansible(
    args: Sequence[str], tmp_path: Path, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an Ansible command from the repo root, venv first on PATH, no user config."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANSIBLE_", "CLOUDCTL_")) and k != "PATH"
    }
    base.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_INVENTORY_PLUGINS="inventory/plugins",
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
        ANSIBLE_NOCOLOR="1",
        CLOUDCTL_HOME=str(tmp_path / "home"),
    )
    base.update(env or {})
    return subprocess.run(
        list(args), cwd=REPO, env=base, capture_output=True, text=True, timeout=120, check=False
    )


def inventory_list(
    source: Path, tmp_path: Path, *, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``ansible-inventory -i SOURCE --list`` as JSON; fails the test on any error."""
    proc = run_ansible(["ansible-inventory", "-i", str(source), "--list"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data
