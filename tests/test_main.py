"""The entry point's argv handling (cloudctl/main.py)."""

from __future__ import annotations

import pytest

from cloudctl.main import lift_global_options


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["stop", "web"], ["stop", "web"]),
        (["--wait-lock", "30", "stop", "web"], ["--wait-lock", "30", "stop", "web"]),
        (["stop", "web", "--wait-lock", "30"], ["--wait-lock", "30", "stop", "web"]),
        (["stop", "--wait-lock=5", "web"], ["--wait-lock=5", "stop", "web"]),
        (
            ["-v", "delete", "a", "b", "--wait-lock", "2"],
            ["--wait-lock", "2", "-v", "delete", "a", "b"],
        ),
        # after `--` everything is an argument, whatever it looks like
        (["boot", "--", "--wait-lock", "3"], ["boot", "--", "--wait-lock", "3"]),
        # a trailing option with no value is left for typer to refuse
        (["stop", "web", "--wait-lock"], ["stop", "web", "--wait-lock"]),
    ],
)
def test_wait_lock_is_accepted_after_the_command(argv: list[str], want: list[str]) -> None:
    assert lift_global_options(argv) == want
