"""The progress lines of ConsoleProgress (cloudctl/console.py) on stderr."""

from __future__ import annotations

import pytest

from cloudctl.console import ConsoleProgress, guest_summary
from cloudctl.executor.base import GuestOutcome, RunEvent


def host_result(host: str, *guests: GuestOutcome, failed: bool = False) -> RunEvent:
    """A spawn result of ``host``; a failed one carries the module's summary message."""
    return RunEvent(
        kind="host_result",
        playbook="spawn.yml",
        host=host,
        task="spawn",
        status="failed" if failed else "changed",
        message="guest web-2: qemu exploded" if failed else "",
        guests=guests,
    )


def test_host_results_list_their_servers_and_each_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = ConsoleProgress()
    progress.run_event(RunEvent(kind="task_start", playbook="spawn.yml", task="spawn"))
    progress.run_event(
        host_result(
            "lab-1",
            GuestOutcome("web-1", "changed", "running"),
            GuestOutcome("web-3", "changed", "running"),
        )
    )
    progress.run_event(
        host_result(
            "lab-2",
            GuestOutcome("web-2", "failed", "qemu exploded: [Errno 28] no space"),
            GuestOutcome("web-4", "ok", "running"),
            GuestOutcome("web-5", "failed", "listed twice"),
            failed=True,
        )
    )
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "  ▸ spawn.yml: spawn",
        "    ✓ lab-1  running: web-1, web-3",
        "    ✓ lab-2  running: web-4",
        "    ✗ lab-2  web-2: qemu exploded: [Errno 28] no space",
        "    ✗ lab-2  web-5: listed twice",
    ]


def test_events_without_guests_keep_the_host_lines(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ConsoleProgress()
    progress.run_event(RunEvent(kind="host_result", playbook="p", host="h1", status="changed"))
    progress.run_event(RunEvent(kind="host_result", playbook="p", host="h2", status="ok"))
    progress.run_event(
        RunEvent(kind="host_result", playbook="p", host="h3", status="unreachable", message="no\nx")
    )
    assert capsys.readouterr().err.splitlines() == ["    ✓ h1 changed", "    ✗ h3 no"]


def test_a_failed_host_without_failed_guests_still_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = RunEvent(
        kind="host_result",
        playbook="p",
        host="h1",
        status="failed",
        message="module crashed",
        guests=(GuestOutcome("web-1", "ok", "running"),),
    )
    ConsoleProgress().run_event(event)
    assert capsys.readouterr().err.splitlines() == [
        "    ✓ h1  running: web-1",
        "    ✗ h1 module crashed",
    ]


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleProgress(quiet=True).run_event(
        host_result("lab-1", GuestOutcome("web-1", "failed", "boom"), failed=True)
    )
    assert capsys.readouterr() == ("", "")


SUMMARY_TABLE: list[tuple[str, list[GuestOutcome], str]] = [
    ("states", [GuestOutcome("a", "changed", "running")], "running: a"),
    (
        "status when no state",
        [GuestOutcome("a", "changed"), GuestOutcome("b", "ok"), GuestOutcome("c", "changed")],
        "changed: a, c; ok: b",
    ),
    (
        "counted beyond the limit",
        [GuestOutcome(f"web-{i}", "changed", "running") for i in range(1, 51)],
        "running: web-1, web-2, web-3 and 47 more",
    ),
    (
        "at the limit",
        [GuestOutcome(f"web-{i}", "ok", "shutoff") for i in range(1, 4)],
        "shutoff: web-1, web-2, web-3",
    ),
]


@pytest.mark.parametrize(
    ("guests", "line"), [(g, s) for _, g, s in SUMMARY_TABLE], ids=[c for c, _, _ in SUMMARY_TABLE]
)
def test_guest_summary(guests: list[GuestOutcome], line: str) -> None:
    assert guest_summary(guests, limit=3) == line
