"""Idempotence of roles/libvirt_host on this machine (Molecule's converge + idempotence steps).

Converge once, then a check-mode run and a second real run must both report changed=0: the
community.libvirt triad (real, check, real) applied to the host role.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import ansible_runner
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def run_role(tmp_path: Path, name: str, *, check: bool) -> tuple[dict[str, Any], list[str]]:
    """Run playbooks/prepare_host.yml against localhost; return (stats, names of changed tasks)."""
    (tmp_path / name).mkdir()
    runner = ansible_runner.run(
        private_data_dir=str(tmp_path / name),
        playbook=str(REPO / "playbooks" / "prepare_host.yml"),
        inventory={
            "all": {
                "hosts": {
                    "localhost": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                    }
                }
            }
        },
        envvars={
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            # ansible-runner runs `ansible-playbook` from PATH: the venv's.
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        cmdline="--check" if check else None,
        quiet=True,
    )
    changed = [
        f"{event['event_data'].get('task')} ({event['event_data'].get('res', {}).get('item', '')})"
        for event in runner.events
        if event.get("event") in ("runner_on_ok", "runner_item_on_ok")
        and event["event_data"].get("res", {}).get("changed")
    ]
    assert runner.rc == 0, f"{name}: ansible-playbook exited {runner.rc}:\n{runner.stdout.read()}"
    return runner.stats or {}, changed


def totals(stats: dict[str, Any], key: str) -> int:
    return sum(stats.get(key, {}).values())


def test_prepare_host_is_idempotent(tmp_path: Path) -> None:
    """Converge, then check mode and a second run change nothing (and libvirtd answers)."""
    stats, _ = run_role(tmp_path, "converge", check=False)
    assert totals(stats, "failures") == 0 and totals(stats, "dark") == 0

    stats, changed = run_role(tmp_path, "check", check=True)
    assert totals(stats, "failures") == 0
    assert totals(stats, "changed") == 0, f"check mode after converge would change: {changed}"

    stats, changed = run_role(tmp_path, "idempotence", check=False)
    assert totals(stats, "failures") == 0
    assert totals(stats, "changed") == 0, f"second run changed: {changed}"
    assert totals(stats, "ok") > 0
