"""The ``--no-wait`` worker gets the database URL through its environment, never its argv."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloudctl.db.session import Database
from cloudctl.domain.settings import Settings
from cloudctl.services import flavors
from cloudctl.services.compute import common

URL = "postgresql+psycopg://cloudctl:s3cret@db.example.org/cloudctl"


def launch(
    settings: Settings, args: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A real ``launch_worker`` (with ``env`` set in the caller's environment); its process."""
    procs: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def popen(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        procs.append(real(argv, **kw))
        return procs[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common.subprocess, "Popen", popen)
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        common.launch_worker(settings, args)
    [proc] = procs
    return proc


def test_the_worker_reads_the_database_url_from_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[list[str], dict[str, Any]]] = []

    def popen(argv: list[str], **kw: Any) -> None:
        started.append((argv, kw))

    monkeypatch.setattr(common.subprocess, "Popen", popen)
    settings = Settings(home=tmp_path / "home", db_url=URL)
    common.launch_worker(settings, ["_build", "req-1", "uuid-1"])
    [(argv, kw)] = started
    assert argv[-3:] == ["_build", "req-1", "uuid-1"]
    assert "--db" not in argv and not any("s3cret" in a for a in argv)
    assert kw["env"]["CLOUDCTL_DB"] == URL
    assert kw["env"]["CLOUDCTL_HOME"] == str(tmp_path / "home")
    assert kw["start_new_session"] is True and kw["stdin"] is subprocess.DEVNULL


def test_a_real_worker_sees_the_url_only_in_its_environment(tmp_path: Path) -> None:
    """/proc shows no password while the worker runs; it logs the URL masked when it fails.

    The worker's database is a socket that accepts and never answers, so it is alive (waiting
    for PostgreSQL's greeting) while its command line is read, and fails once it is closed.
    """
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        url = f"postgresql+psycopg://cloudctl:s3cret@127.0.0.1:{port}/cloudctl?connect_timeout=60"
        settings = Settings(home=tmp_path / "home", db_url=url)
        proc = launch(settings, ["list"])
        conn, _ = server.accept()  # the worker is connecting: it has started
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        conn.close()
    assert proc.wait(timeout=60) == 1
    assert b"-m\x00cloudctl\x00list" in cmdline and b"s3cret" not in cmdline
    assert f"CLOUDCTL_DB={url}".encode() in environ.split(b"\x00")
    log = (tmp_path / "home" / "logs" / "worker.log").read_text()
    assert f"cloudctl:***@127.0.0.1:{port}/cloudctl" in log and "s3cret" not in log


def test_the_worker_uses_the_callers_database(tmp_path: Path) -> None:
    """Whatever CLOUDCTL_DB the caller's environment had, the worker uses the caller's state."""
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    settings = Settings(home=tmp_path / "home", db_url=db_url)
    proc = launch(
        settings,
        ["flavor", "create", "w1", "--vcpus", "1", "--ram", "64", "--disk", "1"],
        env={"CLOUDCTL_DB": f"sqlite:///{tmp_path / 'other.db'}"},
    )
    assert proc.wait(timeout=60) == 0
    db = Database(db_url)
    with db.unit_of_work() as session:
        assert flavors.get_flavor(session, "w1").vcpus == 1
    db.dispose()
    assert not (tmp_path / "other.db").exists()
