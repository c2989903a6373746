"""Schema upgrades, SQLite pragmas, soft-delete uniqueness, unusable state files and URLs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from cloudctl.db.models import Flavor
from cloudctl.db.session import Database, display_url
from cloudctl.errors import StateUnavailable
from cloudctl.main import run


def test_first_use_upgrades_and_is_cheap_after(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x' / 'state.db'}")
    assert db.current_revision() is None
    db.ensure_schema()
    assert db.current_revision() == db.head_revision() == "0008"
    db.ensure_schema()
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_soft_deleted_name_can_be_reused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    db.ensure_schema()
    with db.unit_of_work() as s:
        f = Flavor(flavorid="1", name="m1", vcpus=1, memory_mb=1, root_gb=1)
        s.add(f)
        s.flush()
        f.deleted = f.id
    with db.unit_of_work() as s:
        s.add(Flavor(flavorid="2", name="m1", vcpus=1, memory_mb=1, root_gb=1))
    with pytest.raises(IntegrityError), db.unit_of_work() as s:
        s.add(Flavor(flavorid="3", name="m1", vcpus=1, memory_mb=1, root_gb=1))


def test_db_upgrade_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run(["--db", url, "db", "upgrade", "-o", "json"]) == 0
    assert '"revision": "0008"' in capsys.readouterr().out


def test_upgrade_from_an_older_revision_keeps_rows(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    db.upgrade("0001")
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO flavors (flavorid, name, vcpus, memory_mb, root_gb, ephemeral_gb, swap_mb, is_public, disabled, created_at, deleted) VALUES ('1', 'kept', 1, 1, 1, 0, 0, 1, 0, '2026-01-01', 0)"
            )
        )
    db.ensure_schema()
    assert db.current_revision() == "0008"
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM flavors")).scalar() == "kept"
        conn.execute(text("SELECT ssh_common_args FROM hosts"))


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    """A model change without its Alembic migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from cloudctl.db.models import Base

    db = Database(f"sqlite:///{tmp_path / 'drift.db'}")
    db.ensure_schema()
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


# --- a state file that exists is a state, or refused --------------------------------------------

#: (what the state file holds, the one-line error; None: a new state starts).
STATE_FILES: list[tuple[str, bytes | None, str | None]] = [
    ("missing", None, None),
    (
        "empty",
        b"",
        "the file is empty (0 bytes), not a cloudctl state; only a missing file starts a new "
        "one (restore it from a backup, or remove it)",
    ),
    ("text", b"garbage\n", "the file is not a SQLite database, so not a cloudctl state"),
    ("short", b"SQLite", "the file is not a SQLite database, so not a cloudctl state"),
]


@pytest.mark.parametrize(
    ("content", "error"), [c[1:] for c in STATE_FILES], ids=[c[0] for c in STATE_FILES]
)
def test_only_a_missing_state_file_starts_a_new_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, error: str | None
) -> None:
    path = tmp_path / "state.db"
    if content is not None:
        path.write_bytes(content)
    url = f"sqlite:///{path}"
    code = run(["--db", url, "flavor", "list", "-o", "json"])
    err = capsys.readouterr().err
    if error is None:
        assert (code, err) == (0, "")
        assert Database(url).current_revision() == "0008"
        return
    assert (code, err) == (1, f"error: state database {url}: {error}\n")
    assert path.read_bytes() == content  # untouched: no schema written into it
    assert not Path(f"{path}-wal").exists()
    with pytest.raises(StateUnavailable):
        Database(url).current_revision()
    with pytest.raises(StateUnavailable):
        Database(url).upgrade()


def test_version_of_a_missing_state_creates_nothing(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    assert db.current_revision() is None
    assert not (tmp_path / "state.db").exists()


FIRST_USE = """
import sys, time
from pathlib import Path
from cloudctl.db.session import Database
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
Database(sys.argv[1]).ensure_schema()
"""


def test_first_use_of_a_sqlite_state_by_several_commands_at_once(tmp_path: Path) -> None:
    """A 0-byte file another command is creating under the migration lock is no error."""
    url, go = f"sqlite:///{tmp_path / 'state.db'}", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", FIRST_USE, url, str(go)], stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    time.sleep(2)
    go.touch()
    assert [(p.wait(timeout=60), p.communicate()[1]) for p in procs] == [(0, b"")] * 6
    assert Database(url).current_revision() == "0008"


# --- database URLs: never a password in a message ----------------------------------------------

URLS = [
    (
        "postgresql+psycopg://u:s3cret@db.example.org/cloudctl",
        "postgresql+psycopg://u:***@db.example.org/cloudctl",
    ),
    ("sqlite:////var/lib/cloudctl/state.db", "sqlite:////var/lib/cloudctl/state.db"),
    ("not a url u:s3cret@x", "not a url u:s3cret@x"),
    ("nosuch://u:s3cret@x/db", "nosuch://u:***@x/db"),
]


@pytest.mark.parametrize(("url", "shown"), URLS)
def test_display_url_hides_the_password(url: str, shown: str) -> None:
    assert display_url(url) == shown


BAD_URLS = [
    (
        "postgres://u:s3cret@h/db",
        "configuration error: postgres://u:***@h/db is not a database URL cloudctl can use: Can't load plugin: sqlalchemy.dialects:postgres",
        2,
    ),
    (
        "postgresql+psycopg://u:s3cret@h:port/db",
        "configuration error: postgresql+psycopg://u:***@h:port/db is not a database URL cloudctl can use:",
        2,
    ),
    # nothing listens on port 1: the driver's refusal, on one line, the URL masked
    (
        "postgresql+psycopg://u:s3cret@127.0.0.1:1/db",
        "state database postgresql+psycopg://u:***@127.0.0.1:1/db: connection failed:",
        1,
    ),
]


@pytest.mark.parametrize(("url", "error", "code"), BAD_URLS)
def test_unusable_urls_are_one_line_without_the_password(
    url: str, error: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["host", "list"], ["db", "upgrade"], ["db", "version"]):
        assert run(["--db", url, *argv]) == code
        err = capsys.readouterr().err
        assert err.startswith(f"error: {error}"), err
        assert err.count("\n") == 1 and "s3cret" not in err
