"""Tests of library/cloudctl_console.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.library.helpers import PlayRunner


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_console")


def _watch(mod: ModuleType, path: Path, pattern: str | None) -> Any:
    import re

    return mod.LogWatch(uuid="u", path=str(path), pattern=re.compile(pattern) if pattern else None)


# --- unit ----------------------------------------------------------------------------------


def test_watch_matches_lines_incrementally(mod: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watch = _watch(mod, log, r"login:")
    watch.poll()
    assert not watch.exists and not watch.done

    log.write_bytes(b"SeaBIOS\r\nLinux version 6.1\r\nlog")
    watch.poll()
    assert watch.exists and watch.match is None
    with log.open("ab") as handle:
        handle.write(b"in: ")  # the prompt has no newline
    watch.poll()
    assert watch.match == "login: "
    assert watch.done


def test_watch_restarts_after_truncation_and_survives_bad_utf8(
    mod: ModuleType, tmp_path: Path
) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"x" * 100 + b"\n")
    watch = _watch(mod, log, r"^ready \d+$")
    watch.poll()
    log.write_bytes(b"\xff\xfe garbage\nready 42\r\n")  # rotated: smaller than the offset
    watch.poll()
    assert watch.match == "ready 42"


def test_watch_without_pattern_is_done(mod: ModuleType, tmp_path: Path) -> None:
    watch = _watch(mod, tmp_path / "none.log", None)
    watch.poll()
    assert watch.done and watch.match is None and not watch.exists


def test_read_tail(mod: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes("abcdé".encode() + b"\xff")
    assert mod.read_tail(str(log), 1000) == "abcdé\ufffd"
    assert mod.read_tail(str(log), 3) == "é\ufffd"
    assert mod.read_tail(str(log), 2) == "\ufffd\ufffd"  # cut inside "é": replaced, no error
    assert mod.read_tail(str(log), 0) == ""
    assert mod.read_tail(str(tmp_path / "missing"), 10) == ""


def test_watch_all_polls_until_all_match(mod: ModuleType, tmp_path: Path) -> None:
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    watches = [_watch(mod, logs[0], "A up"), _watch(mod, logs[1], "B up")]
    logs[0].write_text("A up\n")

    def later() -> None:
        time.sleep(0.6)
        logs[1].write_text("booting\nB up\n")

    writer = threading.Thread(target=later)
    writer.start()
    started = time.monotonic()
    mod.watch_all(watches, timeout=10)
    writer.join()
    assert [w.match for w in watches] == ["A up", "B up"]
    assert time.monotonic() - started < 3


def test_watch_all_gives_up_at_timeout(mod: ModuleType, tmp_path: Path) -> None:
    now = [0.0]
    watches = [_watch(mod, tmp_path / "never.log", "x")]
    mod.watch_all(
        watches, timeout=2, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    assert now[0] == pytest.approx(2.0) and watches[0].match is None


# --- integration ---------------------------------------------------------------------------


def _task(
    instances_path: Path, guests: list[dict[str, Any]], check: bool = False, **params: Any
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "cloudctl_console": {"instances_path": str(instances_path), "guests": guests, **params}
    }
    if check:
        task["check_mode"] = True
    task["ignore_errors"] = True
    return task


@pytest.mark.integration
def test_console_through_ansible(ansible_play: PlayRunner, instances_path: Path) -> None:
    booted, silent, missing = (str(uuid.uuid4()) for _ in range(3))
    for name, text in ((booted, "SeaBIOS\r\nWelcome\r\nvm login: "), (silent, "SeaBIOS\r\n")):
        (instances_path / name).mkdir()
        (instances_path / name / "console.log").write_text(text)
    guests = [
        {"uuid": booted, "pattern": r"login:\s*$"},
        {"uuid": silent},
        {"uuid": missing},
    ]
    waiting = [
        {"uuid": booted, "pattern": "login:"},
        {"uuid": silent, "pattern": "login:"},
        {"uuid": missing, "pattern": "login:"},
    ]
    check, real, real2, timed_out = ansible_play(
        [
            _task(instances_path, guests, check=True),
            _task(instances_path, guests, tail_bytes=8),
            _task(instances_path, guests),
            _task(instances_path, waiting, timeout=1),
        ]
    )
    for run in (check, real, real2):
        assert run["failed"] is False and run["changed"] is False
        assert [(r["exists"], r["found"]) for r in run["results"]] == [
            (True, True),
            (True, False),
            (False, False),
        ]
        assert run["results"][0]["match"] == "vm login: "
    assert real["results"][0]["log"] == "m login: "[-8:]
    assert real2["results"][1]["log"] == "SeaBIOS\r\n"
    assert timed_out["failed"] is True
    assert timed_out["failed_guests"] == [silent, missing]
    assert f"guest {silent}: pattern 'login:' not found within 1 s" in timed_out["msg"]
    assert "console.log does not exist" in timed_out["msg"]
    assert timed_out["results"][0]["found"] is True
    assert sorted(p.name for p in instances_path.iterdir()) == sorted(["_base", booted, silent])
