"""AnsibleExecutor against localhost: real ansible-runner, real ansible-playbook of this venv.

The integration tests run small playbooks from a temporary playbooks dir, with a tiny custom module
(and module_utils) in a temporary library, on one or two local hosts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.errors import ConfigError, ExecutorError
from cloudctl.executor.ansible import AnsibleExecutor, ansible_bin_dir
from cloudctl.executor.base import Executor, HostTarget, RunEvent, RunRequest, RunResult
from cloudctl.executor.fake import FakeExecutor

PLAYBOOKS: dict[str, str] = {
    "ping.yml": """
- hosts: compute
  gather_facts: false
  tasks:
    - name: ping
      ansible.builtin.ping:
""",
    "facts.yml": """
- hosts: compute
  gather_facts: false
  tasks:
    - name: where
      ansible.builtin.debug:
        msg:
          playbook_python: "{{ ansible_playbook_python }}"
          check: "{{ ansible_check_mode }}"
          diff: "{{ ansible_diff_mode }}"
          libvirt_uri: "{{ libvirt_uri }}"
          virt_type: "{{ cloudctl_virt_type | default('none') }}"
    - name: would change
      ansible.builtin.copy:
        content: "x"
        dest: "{{ scratch }}/{{ inventory_hostname }}.txt"
        mode: "0600"
""",
    "guests.yml": """
- hosts: compute
  gather_facts: false
  tasks:
    - name: echo guests
      cloudctl_echo:
        guests: "{{ cloudctl_guests[inventory_hostname] }}"
        uri: "{{ libvirt_uri }}"
    - name: loop
      ansible.builtin.debug:
        msg: "{{ item }}"
      loop: "{{ cloudctl_guests[inventory_hostname] }}"
""",
    "fail.yml": """
- hosts: compute
  gather_facts: false
  tasks:
    - name: first
      ansible.builtin.debug:
        msg: hello
    - name: ignored failure
      ansible.builtin.fail:
        msg: ignored on purpose
      ignore_errors: true
    - name: skipped on h1
      ansible.builtin.debug:
        msg: only h2
      when: inventory_hostname == 'h2'
    - name: break h2
      ansible.builtin.fail:
        msg: "boom on {{ inventory_hostname }}"
      when: inventory_hostname == 'h2'
    - name: after
      ansible.builtin.debug:
        msg: still here
""",
    "ignored.yml": """
- hosts: compute
  gather_facts: false
  tasks:
    - name: ignored failure
      ansible.builtin.fail:
        msg: ignored on purpose
      ignore_errors: true
""",
    "sleep.yml": """
- hosts: compute
  gather_facts: false
  tasks:
    - name: sleep
      ansible.builtin.command: "sleep {{ sleep_s }}"
""",
    "broken.yml": """
- hosts: compute
  tasks: [this is not a task
""",
}

ECHO_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_echo_util import shout


def main():
    module = AnsibleModule(
        argument_spec={"guests": {"type": "list", "elements": "raw", "required": True},
                       "uri": {"type": "str", "required": True}},
        supports_check_mode=True,
    )
    guests = module.params["guests"]
    module.exit_json(changed=bool(guests), guests=guests, uri=shout(module.params["uri"]))


if __name__ == "__main__":
    main()
"""
ECHO_UTIL = "def shout(text):\n    return text.upper()\n"


@pytest.fixture(scope="module")
def ansible_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """playbooks/, library/ and library/module_utils/ for the tests."""
    root = tmp_path_factory.mktemp("ansible_tree")
    (root / "playbooks").mkdir()
    for name, text in PLAYBOOKS.items():
        (root / "playbooks" / name).write_text(text.lstrip())
    (root / "library" / "module_utils").mkdir(parents=True)
    (root / "library" / "cloudctl_echo.py").write_text(ECHO_MODULE)
    (root / "library" / "module_utils" / "cloudctl_echo_util.py").write_text(ECHO_UTIL)
    (root / "roles").mkdir()
    return root


def make_executor(tree: Path, runs_dir: Path, **kwargs: Any) -> AnsibleExecutor:
    """An executor on the test tree."""
    return AnsibleExecutor(
        runs_dir=runs_dir,
        playbooks_dir=tree / "playbooks",
        library_dir=tree / "library",
        roles_dir=tree / "roles",
        module_utils_dir=tree / "library" / "module_utils",
        **kwargs,
    )


def local(name: str, **kwargs: Any) -> HostTarget:
    """A host that Ansible reaches with the local connection, running this venv's Python."""
    return HostTarget(
        name=name,
        connection="local",
        libvirt_uri="qemu:///system",
        python_interpreter=sys.executable,
        **kwargs,
    )


@pytest.fixture
def executor(ansible_tree: Path, tmp_path: Path) -> AnsibleExecutor:
    """A fresh executor with its own runs dir."""
    return make_executor(ansible_tree, tmp_path / "runs")


def cmdlines() -> Iterator[tuple[int, str]]:
    """(pid, command line) of every live process but this one."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = (Path("/proc") / entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        yield int(entry), cmdline.decode("utf-8", "replace")


def leftovers(*markers: str, wait_s: float = 3.0) -> list[str]:
    """Command lines of live processes that mention any marker (after up to ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [text for _, text in cmdlines() if any(m in text for m in markers)]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def run(executor: Executor, request: RunRequest) -> tuple[RunResult, list[RunEvent]]:
    """Run and collect the events."""
    events: list[RunEvent] = []
    result = executor.run(request, events.append)
    return result, events


def assert_well_ordered(events: list[RunEvent], playbook: str) -> None:
    """run_start first, run_end last, a play before tasks, a task_start before its results."""
    assert events[0].kind == "run_start"
    assert events[-1].kind == "run_end"
    assert [e.kind for e in events].count("run_start") == 1
    assert [e.kind for e in events].count("run_end") == 1
    assert all(e.playbook == playbook for e in events)
    current_task: str | None = None
    seen_play = False
    for e in events[1:-1]:
        if e.kind == "play_start":
            seen_play = True
        elif e.kind == "task_start":
            assert seen_play
            current_task = e.task
        elif e.kind == "host_result":
            assert e.task == current_task
            assert e.host is not None and e.status is not None


# -- unit tests (no ansible-playbook run) -----------------------------------------------------


def test_is_an_executor(tmp_path: Path) -> None:
    executor: Executor = AnsibleExecutor(runs_dir=tmp_path)
    assert executor is not None


@pytest.mark.parametrize("kwargs", [{"keep_runs": 0}, {"forks": 0}, {"timeout_s": 0}])
def test_rejects_bad_settings(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        AnsibleExecutor(runs_dir=tmp_path, **kwargs)


@pytest.mark.parametrize("playbook", ["missing.yml", "../ping.yml", "", "/etc/passwd"])
def test_unknown_playbook_raises_before_creating_anything(
    executor: AnsibleExecutor, playbook: str
) -> None:
    with pytest.raises(ExecutorError, match="no such playbook"):
        executor.run(RunRequest(playbook=playbook, hosts=(local("h1"),)))
    assert not executor.runs_dir.exists()


def test_ansible_bin_dir_is_this_environments() -> None:
    assert (ansible_bin_dir() / "ansible-playbook").is_file()
    assert ansible_bin_dir() == Path(sys.executable).parent


def test_prune_keeps_the_newest_finished_runs_and_young_unfinished_ones(tmp_path: Path) -> None:
    executor = AnsibleExecutor(runs_dir=tmp_path, keep_runs=2)
    names = [f"2026010{i}T000000.000000Z-spawn-abc{i}" for i in range(1, 6)]
    for name in names:
        (tmp_path / name / "artifacts" / "run").mkdir(parents=True)
    for name in names[1:]:
        (tmp_path / name / "artifacts" / "run" / "status").write_text("successful")
    (tmp_path / "not-a-run").mkdir()
    removed = executor.prune()
    # names[0] never finished and is young: it may still be running elsewhere
    assert sorted(p.name for p in removed) == names[1:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], *names[3:], "not-a-run"])
    old = time.time() - 2 * 24 * 3600
    os.utime(tmp_path / names[0], (old, old))
    assert [p.name for p in executor.prune()] == [names[0]]


def test_prune_keeps_an_old_unfinished_run_while_its_processes_live(tmp_path: Path) -> None:
    """reap_orphans finds a dead apply's leftovers by their run directory: it must not go first."""
    dead_apply = AnsibleExecutor(runs_dir=tmp_path)  # the run dirs of another process
    run_dir = dead_apply._new_run_dir("spawn.yml")
    dead_apply._new_run_dir("newer.yml")  # the one run kept anyway
    executor = AnsibleExecutor(runs_dir=tmp_path, keep_runs=1)
    old = time.time() - 2 * 24 * 3600
    os.utime(run_dir, (old, old))
    leftover = fake_run_process(run_dir)
    try:
        assert wait_until(lambda: children_of(leftover.pid), 10)
        assert executor.prune() == []
        assert run_dir.is_dir()
    finally:
        os.killpg(leftover.pid, signal.SIGKILL)
        leftover.wait(10)
    assert executor.prune() == [run_dir]


def test_concurrent_runs_have_their_own_dirs_and_survive_each_others_prune(
    ansible_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long run (a live migration) and a short one (its progress poll) at once, keep_runs=1."""
    import ansible_runner

    executor = make_executor(ansible_tree, tmp_path / "runs", keep_runs=1)
    inside, release = threading.Event(), threading.Event()

    def fake_run(*, private_data_dir: str, ident: str, **kwargs: Any) -> Any:
        artifacts = Path(private_data_dir) / "artifacts" / ident
        artifacts.mkdir(parents=True)
        (artifacts / "stdout").write_text("ok\n")
        # ansible-runner writes status, then rc: a prune in between must not take the dir away
        (artifacts / "status").write_text("successful")
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            release.wait(10)
        (artifacts / "rc").write_text("0")
        config = type("Config", (), {"artifact_dir": str(artifacts)})
        return type("Runner", (), {"config": config, "status": "successful", "rc": 0})

    monkeypatch.setattr(ansible_runner, "run", fake_run)
    request = RunRequest(playbook="ping.yml", hosts=(local("h1"),))
    results: list[RunResult] = []
    long_run = threading.Thread(target=lambda: results.append(executor.run(request)))
    long_run.start()
    assert inside.wait(10)
    short = executor.run(request)  # prunes: the long run's dir is the older one
    release.set()
    long_run.join(10)
    [long] = results
    assert long.ok and short.ok
    assert long.artifacts_dir != short.artifacts_dir
    assert Path(short.artifacts_dir or "").is_dir()
    assert (Path(long.artifacts_dir or "") / "rc").read_text() == "0"
    assert len(list(executor.runs_dir.iterdir())) == 2
    executor.prune()  # neither is running any more: back to keep_runs
    assert len(list(executor.runs_dir.iterdir())) == 1


# -- integration tests --------------------------------------------------------------------------


@pytest.mark.integration
def test_one_host_ping_events_and_result(executor: AnsibleExecutor) -> None:
    req = RunRequest(playbook="ping.yml", hosts=(local("h1"),), description="ping it")
    result, events = run(executor, req)
    assert (result.ok, result.rc, result.playbook) == (True, 0, "ping.yml")
    (task,) = result.tasks
    assert (task.host, task.task, task.action, task.status) == (
        "h1",
        "ping",
        "ansible.builtin.ping",
        "ok",
    )
    assert task.result["ping"] == "pong"
    assert "_ansible_no_log" not in task.result and "invocation" not in task.result
    assert task.started is not None and task.ended is not None
    assert task.started <= task.ended
    assert [(e.kind, e.host, e.task, e.status) for e in events] == [
        ("run_start", None, None, None),
        ("play_start", None, None, None),
        ("task_start", None, "ping", None),
        ("host_result", "h1", "ping", "ok"),
        ("run_end", None, None, "ok"),
    ]
    assert events[0].message == "ping it"
    assert result.duration_s > 0
    assert result.artifacts_dir is not None
    assert "PLAY RECAP" in result.stdout_tail
    assert "\x1b[" not in result.stdout_tail  # no colour codes


@pytest.mark.integration
def test_run_dir_is_private_and_holds_inventory_and_extravars(executor: AnsibleExecutor) -> None:
    req = RunRequest(
        playbook="ping.yml",
        hosts=(local("h1", hostvars={"cloudctl_x": 1}),),
        extravars={"secret": "s3cret"},
    )
    result, _ = run(executor, req)
    assert result.ok and result.artifacts_dir is not None
    run_dir = Path(result.artifacts_dir).parents[1]
    assert run_dir.parent == executor.runs_dir
    assert run_dir.name.split("-")[1] == "ping"
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    inventory = run_dir / "inventory" / "hosts.json"
    extravars = run_dir / "env" / "extravars"
    for f in (inventory, extravars):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    hosts = json.loads(inventory.read_text())["all"]["children"]["compute"]["hosts"]
    assert hosts["h1"]["ansible_python_interpreter"] == sys.executable
    assert hosts["h1"]["cloudctl_x"] == 1
    assert json.loads(extravars.read_text()) == {"secret": "s3cret"}
    assert not (run_dir / "env" / "envvars").exists()  # suppress_env_files
    # extra vars travel in a file, not on the command line
    command = json.loads((Path(result.artifacts_dir) / "command").read_text())["command"]
    assert "s3cret" not in " ".join(command)


@pytest.mark.integration
def test_uses_this_venvs_ansible_even_without_it_on_path(
    ansible_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    executor = make_executor(ansible_tree, tmp_path / "runs")
    req = RunRequest(
        playbook="facts.yml", hosts=(local("h1"),), extravars={"scratch": str(tmp_path)}, check=True
    )
    result, _ = run(executor, req)
    assert result.ok, result.stdout_tail
    msg = result.result("where", "h1")["msg"]  # type: ignore[index]
    assert Path(msg["playbook_python"]).parent == Path(sys.executable).parent


@pytest.mark.integration
def test_two_hosts_extravars_keyed_by_host_custom_module_and_loop(
    executor: AnsibleExecutor,
) -> None:
    guests = {"h1": ["g-a", "g-b"], "h2": []}
    req = RunRequest(
        playbook="guests.yml",
        hosts=(local("h1"), local("h2")),
        extravars={"cloudctl_guests": guests},
    )
    result, events = run(executor, req)
    assert result.ok, result.stdout_tail
    assert_well_ordered(events, "guests.yml")
    echo = {t.host: t for t in result.tasks if t.task == "echo guests"}
    assert echo["h1"].status == "changed" and echo["h2"].status == "ok"
    assert echo["h1"].action == "cloudctl_echo"
    assert echo["h1"].result["guests"] == ["g-a", "g-b"]
    assert echo["h2"].result["guests"] == []
    assert echo["h1"].result["uri"] == "QEMU:///SYSTEM"  # module_utils found
    # loop items are folded into one final result per host
    loops = [t for t in result.tasks if t.task == "loop"]
    assert sorted(t.host for t in loops) == ["h1", "h2"]
    h1_loop = result.result("loop", "h1")
    assert h1_loop is not None
    assert [r["msg"] for r in h1_loop["results"]] == ["g-a", "g-b"]
    # an empty loop is reported as skipped
    assert next(t for t in loops if t.host == "h2").status == "skipped"


@pytest.mark.integration
def test_templates_in_extravars_and_hostvars_are_not_evaluated(executor: AnsibleExecutor) -> None:
    evil = "{{ lookup('ansible.builtin.pipe', 'echo pwned') }}"
    req = RunRequest(
        playbook="guests.yml",
        hosts=(local("h1", hostvars={"cloudctl_note": evil}),),
        extravars={"cloudctl_guests": {"h1": [evil, {"user_data": "#{% raw %}"}]}},
    )
    result, _ = run(executor, req)
    assert result.ok, result.stdout_tail
    assert result.result("echo guests", "h1")["guests"] == [  # type: ignore[index]
        evil,
        {"user_data": "#{% raw %}"},
    ]


@pytest.mark.integration
def test_failure_on_one_host_is_reported_per_host(executor: AnsibleExecutor) -> None:
    req = RunRequest(playbook="fail.yml", hosts=(local("h1"), local("h2")))
    result, events = run(executor, req)
    assert (result.ok, result.rc) == (False, 2)
    assert_well_ordered(events, "fail.yml")
    by = {(t.host, t.task): t.status for t in result.tasks}
    assert by == {
        ("h1", "first"): "ok",
        ("h2", "first"): "ok",
        ("h1", "ignored failure"): "failed",
        ("h2", "ignored failure"): "failed",
        ("h1", "skipped on h1"): "skipped",
        ("h2", "skipped on h1"): "ok",
        ("h1", "break h2"): "skipped",
        ("h2", "break h2"): "failed",
        ("h1", "after"): "ok",  # h2 stopped at its failure
    }
    assert result.failed_hosts() == {"h1", "h2"}  # ignore_errors failures count as failed
    broken = next(t for t in result.failed() if t.task == "break h2")
    assert broken.message == "boom on h2"
    assert "boom on h2" in result.stdout_tail
    ignored_event = next(e for e in events if e.task == "ignored failure" and e.host == "h1")
    assert ignored_event.message == "ignored on purpose (ignored)"
    assert events[-1].status == "failed"
    assert events[-1].message == "h2: break h2: boom on h2"


@pytest.mark.integration
def test_ignored_failures_do_not_fail_the_run(executor: AnsibleExecutor) -> None:
    result, events = run(executor, RunRequest(playbook="ignored.yml", hosts=(local("h1"),)))
    assert (result.ok, result.rc) == (True, 0)
    assert [t.status for t in result.tasks] == ["failed"]
    assert result.tasks[0].message == "ignored on purpose"
    assert events[-1].status == "ok"


@pytest.mark.integration
@pytest.mark.parametrize(("check", "diff"), [(False, False), (True, False), (True, True)])
def test_check_and_diff_flags(
    executor: AnsibleExecutor, tmp_path: Path, check: bool, diff: bool
) -> None:
    req = RunRequest(
        playbook="facts.yml",
        hosts=(local("h1", hostvars={"cloudctl_virt_type": "qemu"}),),
        extravars={"scratch": str(tmp_path)},
        check=check,
        diff=diff,
    )
    result, _ = run(executor, req)
    assert result.ok, result.stdout_tail
    msg = result.result("where", "h1")["msg"]  # type: ignore[index]
    assert (msg["check"], msg["diff"]) == (check, diff)
    assert (msg["libvirt_uri"], msg["virt_type"]) == ("qemu:///system", "qemu")
    written = (tmp_path / "h1.txt").exists()
    assert written is not check
    assert result.result("would change", "h1")["changed"] is True  # type: ignore[index]


@pytest.mark.integration
def test_unreachable_host(executor: AnsibleExecutor) -> None:
    # a closed port on loopback: refused at once
    dead = HostTarget(
        name="dead",
        connection="ssh",
        libvirt_uri="qemu:///system",
        python_interpreter="/usr/bin/python3",
        address="127.0.0.1",
        ssh_port=1,
        ssh_user="root",
        ssh_common_args="-o ConnectTimeout=5",
    )
    result, events = run(executor, RunRequest(playbook="ping.yml", hosts=(dead, local("h1"))))
    assert result.ok is False and result.rc == 4
    statuses = {t.host: t.status for t in result.tasks}
    assert statuses == {"dead": "unreachable", "h1": "ok"}
    (failure,) = result.failed()
    assert "127.0.0.1" in failure.message or "refused" in failure.message.lower()
    assert events[-1].message.startswith("dead: ping: ")


@pytest.mark.integration
def test_playbook_syntax_error_is_a_failed_run_not_an_exception(
    executor: AnsibleExecutor,
) -> None:
    result, events = run(executor, RunRequest(playbook="broken.yml", hosts=(local("h1"),)))
    assert result.ok is False and result.rc != 0
    assert result.tasks == ()
    assert "ERROR" in result.stdout_tail
    assert [e.kind for e in events] == ["run_start", "run_end"]
    assert events[-1].status == "failed" and events[-1].message


@pytest.mark.integration
def test_keeps_only_the_newest_runs(ansible_tree: Path, tmp_path: Path) -> None:
    executor = make_executor(ansible_tree, tmp_path / "runs", keep_runs=2)
    dirs = []
    for _ in range(3):
        result = executor.run(RunRequest(playbook="ping.yml", hosts=(local("h1"),)))
        assert result.ok and result.artifacts_dir is not None
        dirs.append(Path(result.artifacts_dir).parents[1])
    assert sorted(p.name for p in executor.runs_dir.iterdir()) == [d.name for d in dirs[1:]]


@pytest.mark.integration
def test_timeout_stops_the_run(ansible_tree: Path, tmp_path: Path) -> None:
    executor = make_executor(ansible_tree, tmp_path / "runs", timeout_s=2)
    started = time.monotonic()
    sleep_s = "59.4711"
    result, events = run(
        executor,
        RunRequest(playbook="sleep.yml", hosts=(local("h1"),), extravars={"sleep_s": sleep_s}),
    )
    assert time.monotonic() - started < 15
    assert result.ok is False
    assert "timed out after 2 s" in result.stdout_tail
    assert events[-1].status == "failed"
    # ansible's workers run in their own sessions: the whole tree must be gone, module included
    assert leftovers(f"sleep {sleep_s}", str(executor.runs_dir)) == []


@pytest.mark.integration
def test_a_broken_event_handler_does_not_break_the_run(executor: AnsibleExecutor) -> None:
    calls: list[str] = []

    def handler(event: RunEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("console broke")

    result = executor.run(RunRequest(playbook="ping.yml", hosts=(local("h1"),)), handler)
    assert result.ok
    assert calls == ["run_start"]


@pytest.mark.integration
def test_sigint_stops_the_run_then_raises_keyboard_interrupt(executor: AnsibleExecutor) -> None:
    before = signal.getsignal(signal.SIGINT)
    seen: list[RunEvent] = []
    on_event: Callable[[RunEvent], None] = seen.append

    def interrupt_when_sleeping() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(e.kind == "task_start" for e in seen):
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=interrupt_when_sleeping)
    killer.start()
    started = time.monotonic()
    sleep_s = "59.4712"
    with pytest.raises(KeyboardInterrupt):
        executor.run(
            RunRequest(playbook="sleep.yml", hosts=(local("h1"),), extravars={"sleep_s": sleep_s}),
            on_event,
        )
    killer.join()
    assert time.monotonic() - started < 20
    assert leftovers(f"sleep {sleep_s}", str(executor.runs_dir)) == []
    assert signal.getsignal(signal.SIGINT) is before
    assert seen[-1].kind == "run_end" and seen[-1].status == "failed"


# -- parent death and orphaned runs -------------------------------------------------------------

#: A cloudctl stand-in: runs sleep.yml with the test tree, in its main thread or another one.
CHILD = """
import sys, threading
from pathlib import Path
from cloudctl.executor.ansible import AnsibleExecutor
from cloudctl.executor.base import HostTarget, RunRequest

tree, runs_dir, sleep_s, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
executor = AnsibleExecutor(
    runs_dir=runs_dir,
    playbooks_dir=tree / "playbooks",
    library_dir=tree / "library",
    roles_dir=tree / "roles",
    module_utils_dir=tree / "library" / "module_utils",
)
host = HostTarget(
    name="h1", connection="local", libvirt_uri="qemu:///system", python_interpreter=sys.executable
)
request = RunRequest(playbook="sleep.yml", hosts=(host,), extravars={"sleep_s": sleep_s})
if where == "thread":
    worker = threading.Thread(target=executor.run, args=(request,))
    worker.start()
    worker.join()
else:
    executor.run(request)
"""


def pids_mentioning(*markers: str) -> list[int]:
    """Live processes (not this one) whose command line mentions any marker."""
    return [pid for pid, text in cmdlines() if any(m in text for m in markers)]


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = (Path("/proc") / entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def wait_until(check: Callable[[], Any], timeout_s: float) -> Any:
    """Poll ``check`` until it returns something true (then return it) or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL every pid that is still there (test cleanup)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def still_alive(pids: list[int], wait_s: float = 10.0) -> list[int]:
    """Which of ``pids`` still run (zombies do not count) after up to ``wait_s``."""

    def running() -> list[int]:
        found = []
        for pid in pids:
            try:
                stat = (Path("/proc") / str(pid) / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2] not in "ZX":
                found.append(pid)
        return found

    deadline = time.monotonic() + wait_s
    while (found := running()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_the_fake_executor_reaps_nothing() -> None:
    assert FakeExecutor().reap_orphans() == []


def test_reap_orphans_without_runs_dir(tmp_path: Path) -> None:
    assert AnsibleExecutor(runs_dir=tmp_path / "missing").reap_orphans() == []


@pytest.mark.integration
@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_run_dies_with_its_sigkilled_process(
    ansible_tree: Path, tmp_path: Path, where: str
) -> None:
    """kill -9 of the process group of a cloudctl mid-task: nothing of its run may live on."""
    import cloudctl

    runs_dir = tmp_path / "runs"
    sleep_s = "59.4714" if where == "main" else "59.4715"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(cloudctl.__file__).parents[1]), env.get("PYTHONPATH")])
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ansible_tree), str(runs_dir), sleep_s, where],
        start_new_session=True,
        env=env,
    )
    try:
        # the task runs: ansible-playbook, a worker (its own session) and the module's sleep
        assert wait_until(lambda: pids_mentioning(f"sleep {sleep_s}"), 120), "the task never ran"
        assert any("ansible-playbook" in c for c in leftovers(str(runs_dir), wait_s=0))
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
        assert leftovers(str(runs_dir), f"sleep {sleep_s}", wait_s=10) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
        kill_all(pids_mentioning(str(runs_dir), f"sleep {sleep_s}"))


@pytest.mark.integration
def test_a_run_from_another_thread_is_not_cut_short(executor: AnsibleExecutor) -> None:
    """The parent death signal follows the forking thread: that thread lives as long as the run."""
    results: list[RunResult] = []
    request = RunRequest(playbook="sleep.yml", hosts=(local("h1"),), extravars={"sleep_s": "2"})
    worker = threading.Thread(target=lambda: results.append(executor.run(request)))
    worker.start()
    worker.join(120)
    [result] = results
    assert result.ok, result.stdout_tail
    assert result.result("sleep", "h1")["rc"] == 0  # type: ignore[index]


def fake_run_process(run_dir: Path) -> subprocess.Popen[bytes]:
    """A shell with a ``sleep`` child, looking like a run's ansible-playbook to reap_orphans.

    It works in the run directory and has the run's inventory among its arguments.
    """
    inventory = str(run_dir / "inventory" / "hosts.json")
    return subprocess.Popen(
        ["sh", "-c", "sleep 300; exit 0", "ansible-playbook", "-i", inventory],
        cwd=run_dir,
        start_new_session=True,
    )


def test_reap_orphans_kills_the_runs_of_dead_owners_only(tmp_path: Path) -> None:
    executor = AnsibleExecutor(runs_dir=tmp_path / "runs")
    mine = executor._new_run_dir("mine.yml")  # owner: this process
    record = json.loads((mine / "owner").read_text())
    assert record["pid"] == os.getpid()

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = executor._new_run_dir("dead.yml")
    (dead / "owner").write_text(json.dumps({**record, "pid": gone.pid}))
    # our pid, but another start time: the owner's pid was used again by an unrelated process
    reused = executor._new_run_dir("reused.yml")
    (reused / "owner").write_text(json.dumps({**record, "start": record["start"] - 1}))
    legacy = executor._new_run_dir("legacy.yml")  # an older cloudctl's run, its owner alive
    (legacy / "owner").unlink()
    elsewhere = tmp_path / "elsewhere" / dead.name  # not in runs_dir
    elsewhere.mkdir(parents=True)
    (elsewhere / "owner").write_text((dead / "owner").read_text())

    doomed = {"dead": fake_run_process(dead), "reused": fake_run_process(reused)}
    spared = {
        "mine": fake_run_process(mine),
        "legacy": fake_run_process(legacy),
        "elsewhere": fake_run_process(elsewhere),
        # a shell cd-ed into a dead run's directory, a tail of its output: not part of the run
        "shell": subprocess.Popen(
            ["sh", "-c", "sleep 300; exit 0"], cwd=dead, start_new_session=True
        ),
        "tail": subprocess.Popen(
            ["sh", "-c", "sleep 300; exit 0", "tail", str(dead / "artifacts" / "run" / "stdout")],
            cwd=tmp_path,
            start_new_session=True,
        ),
    }
    started = [*doomed.values(), *spared.values()]
    try:
        sleeps = {
            name: wait_until(lambda p=p: children_of(p.pid), 10) for name, p in doomed.items()
        }
        assert all(sleeps.values())
        killed = executor.reap_orphans()
        expected = {p.pid for p in doomed.values()} | {pid for s in sleeps.values() for pid in s}
        assert sorted(killed) == sorted(expected)
        for p in doomed.values():
            assert p.wait(10) == -signal.SIGKILL
        assert still_alive([p for s in sleeps.values() for p in s]) == []
        for name, p in spared.items():
            assert p.poll() is None, name
        assert executor.reap_orphans() == []
    finally:
        for p in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_reap_orphans_of_an_older_cloudctl_once_re_parented_to_init(tmp_path: Path) -> None:
    """Without an owner file, a run is orphaned when what is left of it hangs off init."""
    executor = AnsibleExecutor(runs_dir=tmp_path / "runs")
    legacy = executor._new_run_dir("legacy.yml")
    (legacy / "owner").unlink()
    inventory = str(legacy / "inventory" / "hosts.json")
    # the outer shell exits at once: its background child (our "ansible-playbook") is orphaned
    launcher = subprocess.Popen(
        [
            "sh",
            "-c",
            'sh -c "sleep 300; exit 0" ansible-playbook -i "$1" & exit 0',
            "sh",
            inventory,
        ],
        cwd=legacy,
        start_new_session=True,
    )
    launcher.wait(10)

    def orphan_and_sleep() -> tuple[int, int] | None:
        for pid in pids_mentioning(inventory):
            for child in children_of(pid):
                if (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0") == [
                    b"sleep",
                    b"300",
                    b"",
                ]:
                    return pid, child
        return None

    try:
        found = wait_until(orphan_and_sleep, 10)
        assert found is not None
        orphan, sleep = found
        stat = (Path("/proc") / str(orphan) / "stat").read_text()
        if int(stat[stat.rfind(")") + 2 :].split()[1]) != 1:
            pytest.skip("orphans go to a subreaper here, not to init")
        assert sorted(executor.reap_orphans()) == sorted([orphan, sleep])
        assert still_alive([orphan, sleep]) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
