"""Schema upgrades on a real PostgreSQL: any number of controllers may use an empty database (or
schema) for the first time at once, because the upgrade holds an advisory lock.

Each controller is a process of its own, started together and released at the same instant, as
CI runners sharing one database are.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cloudctl.db.session import Database
from cloudctl.main import run

PG_URL = os.environ.get(
    "CLOUDCTL_TEST_PG_URL", "postgresql+psycopg://cloudctl:cloudctl@127.0.0.1:5432/cloudctl_test"
)
CONTROLLERS = 6
pytestmark = pytest.mark.integration

#: One controller's first use: import everything, wait for the start signal, upgrade. With
#: NO_LOCK set the migration lock is switched off, to show what the lock prevents.
FIRST_USE = """
import contextlib, os, sys, time
from pathlib import Path
from cloudctl.db.session import Database
if os.environ.get("NO_LOCK"):
    Database._migration_lock = lambda self: contextlib.nullcontext()
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
Database(os.environ["CLOUDCTL_DB"]).ensure_schema()
"""


@contextmanager
def new_schema() -> Iterator[str]:
    """The URL of a new, empty schema (dropped afterwards)."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def empty_schema() -> Iterator[str]:
    """The URL of a new, empty schema."""
    with new_schema() as url:
        yield url


def first_use_at_once(url: str, tmp_path: Path, *, lock: bool = True) -> list[tuple[int, str]]:
    """(exit code, last stderr line) of CONTROLLERS processes upgrading ``url`` at one instant."""
    go = tmp_path / f"go-{uuid.uuid4().hex}"
    env = {**os.environ, "CLOUDCTL_DB": url}
    if not lock:
        env["NO_LOCK"] = "1"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_USE, str(go)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(CONTROLLERS)
    ]
    time.sleep(3)  # every process has imported cloudctl and waits
    go.touch()
    out = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        lines = err.strip().splitlines()
        out.append((proc.returncode, lines[-1] if lines else ""))
    return out


def test_controllers_using_an_empty_database_at_once_all_succeed(
    empty_schema: str, tmp_path: Path
) -> None:
    results = first_use_at_once(empty_schema, tmp_path)
    assert results == [(0, "")] * CONTROLLERS
    db = Database(empty_schema)
    assert db.current_revision() == db.head_revision()
    db.dispose()


def test_without_the_lock_the_same_start_fails(tmp_path: Path) -> None:
    """The test above would catch the old behaviour: without the lock one controller's
    CREATE TABLE or version insert collides with another's (a race: a few tries)."""
    failures: list[str] = []
    for _ in range(3):
        with new_schema() as url:
            results = first_use_at_once(url, tmp_path, lock=False)
        failures = [line for code, line in results if code != 0]
        if failures:
            break
    assert failures, "no collision in 3 tries without the lock"
    # e.g. "duplicate key value violates unique constraint" or "relation ... already exists"
    assert all("duplicate key" in f or "already exists" in f for f in failures), failures


def test_the_cli_on_an_empty_database_from_six_controllers(
    empty_schema: str, tmp_path: Path
) -> None:
    env = {**os.environ, "CLOUDCTL_DB": empty_schema}
    procs = []
    for i in range(CONTROLLERS):
        home = tmp_path / f"home{i}"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cloudctl", "host", "list", "-o", "json"],
                env={**env, "CLOUDCTL_HOME": str(home)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    assert results == [(0, "")] * CONTROLLERS
    db = Database(empty_schema)
    assert db.current_revision() == db.head_revision()
    db.dispose()


def test_a_wrong_password_is_one_line_with_the_password_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = make_url(PG_URL).set(password="wr0ng-pa55")
    shown = url.render_as_string(hide_password=True)
    for argv in (["host", "list"], ["db", "upgrade"], ["db", "version"]):
        code = run(["--db", url.render_as_string(hide_password=False), *argv])
        err = capsys.readouterr().err
        assert code == 1
        assert err.startswith(f"error: state database {shown}: ")
        assert "password authentication failed" in err
        assert err.count("\n") == 1 and "wr0ng-pa55" not in err and ":***@" in err
