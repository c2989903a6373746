"""Shared fixtures for the tests of the custom Ansible modules in ``library/``.

* importing ``helpers`` extends ``ansible.module_utils`` with ``library/module_utils``, so
  test modules may import ``ansible.module_utils.cloudctl_*`` at their top.
* ``load_module`` imports a module file from ``library/`` for unit tests.
* ``ansible_play`` runs a list of tasks on localhost through ``ansible_runner`` (the real
  ``ansible-playbook``) and returns each task's module result, in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import ansible_runner
import pytest

from tests.library.helpers import (
    LIBRARY,
    LIBVIRT_URI,
    MODULE_UTILS,
    PYTHON,
    PlayRunner,
    ansible_bin_dir,
    load_library_module,
)


@pytest.fixture(scope="session")
def load_module() -> Callable[[str], ModuleType]:
    """Import ``library/<name>.py`` (cached per session)."""
    cache: dict[str, ModuleType] = {}

    def load(name: str) -> ModuleType:
        if name not in cache:
            cache[name] = load_library_module(name)
        return cache[name]

    return load


@pytest.fixture
def ansible_play(tmp_path: Path) -> PlayRunner:
    """Run tasks in one play on localhost; return the result dict of every task, in order.

    Each task is a dict as written in a playbook (``check_mode: true`` per task gives the
    check-mode runs). ``diff=True`` passes ``--diff``. Failed tasks are returned with
    ``failed: true`` only if they had ``ignore_errors: true``; otherwise the play stops and
    this helper raises with the runner's output.
    """
    counter = iter(range(1000))

    def play(tasks: list[dict[str, Any]], diff: bool = True) -> list[dict[str, Any]]:
        run_dir = tmp_path / f"runner-{next(counter)}"
        (run_dir / "project").mkdir(parents=True)
        (run_dir / "inventory").mkdir()
        # JSON is YAML: no templating surprises from a YAML dumper.
        playbook = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
        (run_dir / "project" / "play.yml").write_text(json.dumps(playbook, indent=1))
        (run_dir / "inventory" / "hosts").write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={PYTHON}\n"
        )
        runner = ansible_runner.run(
            private_data_dir=str(run_dir),
            playbook="play.yml",
            cmdline="--diff" if diff else None,
            envvars={
                "ANSIBLE_LIBRARY": str(LIBRARY),
                "ANSIBLE_MODULE_UTILS": str(MODULE_UTILS),
                "ANSIBLE_PYTHON_INTERPRETER": str(PYTHON),
                "ANSIBLE_NOCOLOR": "1",
                # ansible_runner looks ansible-playbook up in PATH: use the venv's
                "PATH": f"{ansible_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            quiet=True,
        )
        results = []
        for event in runner.events:
            if event.get("event") in ("runner_on_ok", "runner_on_failed"):
                data = event["event_data"]
                # ansible strips "failed" from the result; the event name carries it
                failed = event["event"] == "runner_on_failed"
                results.append(
                    {
                        **data["res"],
                        "failed": failed,
                        "_task": data.get("task"),
                        "_duration": data.get("duration"),
                    }
                )
        if runner.rc != 0 or len(results) != len(tasks):
            stdout = runner.stdout.read() if runner.stdout else ""
            raise AssertionError(f"play failed (rc={runner.rc}):\n{stdout}")
        return results

    return play


@pytest.fixture(scope="session")
def libvirt_conn() -> Iterator[Any]:
    """A read-write connection to the real daemon (the integration tests need it)."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        pytest.fail(
            f"libvirtd is not serving {LIBVIRT_URI} (start: virtlogd -d; libvirtd -d): {exc}"
        )
    yield conn
    conn.close()


def _remove_domain(conn: Any, name: str) -> None:
    import libvirt

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )


@pytest.fixture
def domain_names(libvirt_conn: Any) -> Iterator[Callable[[], str]]:
    """Factory of unique ``cctest-`` domain names; every such domain is removed afterwards."""
    names: list[str] = []

    def new_name() -> str:
        name = f"cctest-{uuid.uuid4().hex[:12]}"
        names.append(name)
        return name

    yield new_name
    for name in names:
        _remove_domain(libvirt_conn, name)


@pytest.fixture
def instances_path(tmp_path: Path) -> Path:
    """A private instances directory with its ``_base`` cache."""
    path = tmp_path / "instances"
    (path / "_base").mkdir(parents=True)
    return path
