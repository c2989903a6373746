"""Engine, schema upgrades and the unit of work.

Services open one short transaction per step with :meth:`Database.unit_of_work`; no transaction is
held open across an Ansible run.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the package's migrations; no alembic.ini needed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Database:
    """One database: SQLite file by default, any SQLAlchemy URL (PostgreSQL) for teams."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def current_revision(self) -> str | None:
        """The schema revision the database is at (None when empty)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        """The newest revision the package ships."""
        return ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision``."""
        with self._migration_lock():
            command.upgrade(alembic_config(self.url), revision)

    def ensure_schema(self) -> None:
        """Upgrade to head on first use or after an update (cheap when already current)."""
        if self.current_revision() != self.head_revision():
            self.upgrade()

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        # Two first-time commands at once must not both create the tables.
        parsed = make_url(self.url)
        if not (self.is_sqlite and parsed.database and parsed.database != ":memory:"):
            yield
            return
        lock_path = Path(parsed.database + ".migrate.lock")
        with lock_path.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One short transaction: commit on success, roll back on any exception."""
        with self._sessions.begin() as session:
            yield session

    def session(self) -> Session:
        """A plain session for read-only queries (caller closes it)."""
        return self._sessions()

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
