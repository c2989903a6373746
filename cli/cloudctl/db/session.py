"""Engine, schema upgrades and the unit of work.

Services open one short transaction per step with :meth:`Database.unit_of_work`; no transaction is
held open across an Ansible run. Schema upgrades hold a database-wide lock (an flock beside a
SQLite file, an advisory lock on PostgreSQL), so any number of controllers may use a new database
for the first time at once. A database that cannot be used is one line
(:class:`~cloudctl.errors.StateUnavailable`), its URL shown without the password.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from cloudctl.domain.secrets import mask_passwords
from cloudctl.errors import ConfigError, StateUnavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The PostgreSQL advisory lock schema upgrades hold (``cloudct1`` in ASCII). One key per
#: database: upgrades of different schemas of one database wait for each other, which is harmless.
MIGRATION_LOCK_KEY = 0x636C6F7564637431
#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def display_url(url: str) -> str:
    """``url`` as messages and logs may show it: the password as ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return mask_passwords(url)


def _first_line(exc: BaseException) -> str:
    """The driver's own message, on one line and without any password."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [" ".join(line.split()) for line in str(orig).splitlines() if line.strip()]
    return mask_passwords(lines[0] if lines else type(orig).__name__)


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
        try:
            parsed = make_url(url)
            self.is_sqlite = parsed.get_backend_name() == "sqlite"
            #: The SQLite database file (None for PostgreSQL or an in-memory database).
            self.sqlite_file: Path | None = None
            kwargs: dict[str, Any] = {"echo": echo, "future": True}
            if self.is_sqlite:
                if parsed.database and parsed.database != ":memory:":
                    self.sqlite_file = Path(parsed.database)
                    self.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            else:
                kwargs["pool_pre_ping"] = True
            self.engine: Engine = create_engine(url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise ConfigError(
                reason=f"{display_url(url)} is not a database URL cloudctl can use: "
                f"{_first_line(exc)}"
            ) from exc
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def current_revision(self) -> str | None:
        """The schema revision the database is at (None when empty or, for SQLite, missing).

        An existing SQLite file that is empty or not a SQLite database raises
        StateUnavailable; a missing one is not created.
        """
        return self._revision(empty_ok=False)

    def _revision(self, *, empty_ok: bool) -> str | None:
        if self.sqlite_file is not None and self._sqlite_file_state(empty_ok=empty_ok) != "ok":
            return None
        with self._reachable(), self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        """The newest revision the package ships."""
        return ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (under the migration lock)."""
        with self._reachable(), self._migration_lock():
            if self.sqlite_file is not None:
                self._sqlite_file_state(empty_ok=False)
            command.upgrade(alembic_config(self.url), revision)

    def ensure_schema(self) -> None:
        """Upgrade to head on first use or after an update (cheap when already current).

        Only a missing SQLite file starts a new state: an existing file that is empty or not a
        SQLite database is refused (StateUnavailable), never taken for a new, empty cloud.
        """
        head = self.head_revision()
        # A 0-byte file may be one another command is creating under the lock right now: it is
        # judged under the lock.
        if self._revision(empty_ok=True) == head:
            return
        with self._reachable(), self._migration_lock():
            # Another controller may have upgraded it while this one waited for the lock.
            if self._revision(empty_ok=False) != head:
                command.upgrade(alembic_config(self.url), "head")

    def _sqlite_file_state(self, *, empty_ok: bool) -> Literal["missing", "empty", "ok"]:
        """``missing``, ``empty`` (only with ``empty_ok``) or ``ok``; else StateUnavailable."""
        assert self.sqlite_file is not None
        try:
            with self.sqlite_file.open("rb") as fh:
                header = fh.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise StateUnavailable(url=display_url(self.url), reason=exc.strerror) from exc
        if not header:
            if empty_ok:
                return "empty"
            raise StateUnavailable(
                url=display_url(self.url),
                reason="the file is empty (0 bytes), not a cloudctl state; only a missing file "
                "starts a new one (restore it from a backup, or remove it)",
            )
        if header != SQLITE_HEADER:
            raise StateUnavailable(
                url=display_url(self.url),
                reason="the file is not a SQLite database, so not a cloudctl state",
            )
        return "ok"

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Driver errors (refused, wrong password, not a database) as one StateUnavailable."""
        try:
            yield
        except DBAPIError as exc:
            raise StateUnavailable(url=display_url(self.url), reason=_first_line(exc)) from exc

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        # Two first-time commands at once must not both create the tables.
        if self.sqlite_file is not None:
            lock_path = Path(f"{self.sqlite_file}.migrate.lock")
            with lock_path.open("w") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        elif self.engine.dialect.name == "postgresql":
            # A session-level lock on a connection of its own, outside any transaction: Alembic
            # migrates on another connection, and a dead holder's lock goes with its session.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
        else:
            yield

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
