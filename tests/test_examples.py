"""The CI examples (examples/ci/): valid YAML, and every cloudctl command they run exists.

Each ``cloudctl ...`` line of a job is walked through the CLI's own command tree: the command
(and sub-command) must be listed by ``cloudctl --help`` and every option must be one of its own.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from cloudctl.main import app

CI = Path(__file__).resolve().parents[1] / "examples" / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"
#: Where a cloudctl invocation ends in a shell line.
_END = re.compile(r"\s(?:>|\||&&|\|\||;)|\)|$")


def _load(path: Path) -> dict[Any, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def github_scripts(doc: dict[Any, Any]) -> dict[str, list[str]]:
    """Job name -> the shell of its ``run`` steps."""
    return {
        name: [step["run"] for step in job["steps"] if "run" in step]
        for name, job in doc["jobs"].items()
    }


def gitlab_scripts(doc: dict[Any, Any]) -> dict[str, list[str]]:
    """Job name -> the lines of its scripts (keys that are not jobs have no ``script``)."""
    return {
        name: [*job.get("before_script", []), *job["script"]]
        for name, job in doc.items()
        if isinstance(job, dict) and "script" in job
    }


def invocations(scripts: list[str]) -> Iterator[list[str]]:
    """Each ``cloudctl`` command line's arguments, continuation lines joined."""
    for script in scripts:
        for line in script.replace("\\\n", " ").splitlines():
            for match in re.finditer(r"(?:^|[\s;&|(])cloudctl\s+(.*)", line):
                rest = match.group(1)
                yield shlex.split(rest[: _END.search(rest).start()])  # type: ignore[union-attr]


def _option(cmd: Any, name: str) -> TyperOption | None:
    for param in cmd.params:
        if isinstance(param, TyperOption) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def command_path(argv: list[str]) -> list[str]:
    """Walk ``argv`` through cloudctl's command tree; every option must belong where it is."""
    cmd: Any = typer.main.get_command(app)
    path: list[str] = []
    args = iter(argv)
    for arg in args:
        where = " ".join(["cloudctl", *path])
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            option = _option(cmd, name)
            assert option is not None, f"{where} has no option {name}"
            if not option.is_flag and "=" not in arg:
                next(args, None)  # its value
        elif isinstance(cmd, TyperGroup):
            sub = cmd.commands.get(arg)
            assert sub is not None and not sub.hidden, f"{where} has no command {arg!r}"
            cmd = sub
            path.append(arg)
    assert path, f"no command in cloudctl {' '.join(argv)}"
    return path


def test_the_ci_files_are_yaml() -> None:
    github, gitlab = _load(GITHUB), _load(GITLAB)
    # PyYAML reads GitHub's `on:` key as YAML 1.1's boolean true.
    triggers = github.get("on", github.get(True)) or {}
    assert set(triggers) >= {"pull_request", "push"}
    assert set(github["jobs"]) == {"plan", "apply"}
    assert gitlab["stages"] == ["validate", "plan", "apply"]
    assert set(gitlab_scripts(gitlab)) == {"validate", "plan", "apply"}


@pytest.mark.parametrize(
    ("path", "scripts"),
    [(GITHUB, github_scripts), (GITLAB, gitlab_scripts)],
    ids=["github", "gitlab"],
)
def test_every_cloudctl_command_exists(path: Path, scripts: Any) -> None:
    runner = CliRunner()
    top = runner.invoke(app, ["--help"], terminal_width=200)
    assert top.exit_code == 0
    seen = []
    for job, lines in scripts(_load(path)).items():
        for argv in invocations(lines):
            cmd_path = command_path(argv)
            assert re.search(rf"\b{re.escape(cmd_path[0])}\b", top.output), (job, argv)
            assert runner.invoke(app, [*cmd_path, "--help"]).exit_code == 0, (job, argv)
            seen.append((job, " ".join(argv)))
    assert {line.split()[0] for _, line in seen} == {"validate", "plan", "apply"}, seen
    pr_plan = next(line for job, line in seen if job == "plan" and line.startswith("plan"))
    for flag in ("-o markdown", "--detailed-exitcode", "--out plan.json"):
        assert flag in pr_plan
    assert any(job == "apply" and "--plan plan.json" in line for job, line in seen)


def test_the_walker_refuses_what_cloudctl_does_not_have() -> None:
    with pytest.raises(AssertionError, match="no command 'aply'"):
        command_path(["aply", "-f", "estate/"])
    with pytest.raises(AssertionError, match="has no option --detailed-exit"):
        command_path(["plan", "--detailed-exit"])
    assert command_path(["-q", "state", "unlock", "--force"]) == ["state", "unlock"]
    assert list(invocations(['x=$(cloudctl plan -f "a b" --out p.json > p.md)'])) == [
        ["plan", "-f", "a b", "--out", "p.json"]
    ]
