"""Schema upgrades, SQLite pragmas and soft-delete uniqueness."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from cloudctl.db.models import Flavor
from cloudctl.db.session import Database
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
