"""The real executor: ansible-runner running ``ansible-playbook`` of this very environment.

This is the only module of cloudctl that imports ``ansible_runner`` (lazily, so commands that never
run a playbook do not pay for the import). One run is one private data directory under
``runs_dir``::

    <runs_dir>/<UTC time>-<playbook>-<random>/      mode 0700
        owner                                       the cloudctl process running it (0600)
        supervise.py                                starts ansible-playbook (see below)
        ansible.cfg                                 empty: the run's only configuration file
        inventory/hosts.json                        rendered from RunRequest.hosts (0600)
        env/extravars                               RunRequest.extravars as JSON (0600)
        env/settings                                runner settings (poll interval)
        artifacts/run/{stdout,rc,status,command,job_events/}

Templates in inventory variables and extra vars are never evaluated (see
:func:`~cloudctl.executor.inventory.protect_templates`); extra vars travel in a file, not on the
command line, so they do not show in ``ps``. Only the newest ``keep_runs`` directories are kept.

Every setting of a run comes from :meth:`AnsibleExecutor._envvars`: ``ANSIBLE_CONFIG`` names the
run's own empty ``ansible.cfg``, so neither an ``ansible.cfg`` in the working directory (the
repository's, meant for runs by hand) nor ``~/.ansible.cfg`` or ``/etc/ansible/ansible.cfg``
(nor an ``ANSIBLE_CONFIG`` of the caller's) changes what cloudctl's runs do.

A run dies with cloudctl, even with a SIGKILL that no handler sees. ansible-runner starts
``supervise.py`` (standalone: ``python -I -S``, standard library only) in place of
ansible-playbook, in its own session as pexpect does. The supervisor asks the kernel for a SIGTERM
when cloudctl dies (``PR_SET_PDEATHSIG``; it checks that cloudctl is still its parent once armed),
becomes the "child subreaper" of everything below it, then forks ansible-playbook, itself armed to
get a SIGKILL when the supervisor dies. Ansible's workers call ``setsid()`` and would outlive
ansible-playbook, but as orphans they are re-parented to the supervisor: on that SIGTERM it
freezes and kills its whole tree, then exits. The parent death signal follows the *thread* that
forked: ansible-runner forks from the thread calling :meth:`AnsibleExecutor.run`, which waits for
the child, so it cannot fire while the run goes on. What escapes anyway (a supervisor killed with
SIGKILL by hand, runs of an older cloudctl) is found from the ``owner`` file by
:meth:`AnsibleExecutor.reap_orphans`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from cloudctl.domain.paths import LIBRARY_DIR, MODULE_UTILS_DIR, PLAYBOOKS_DIR, ROLES_DIR
from cloudctl.errors import ConfigError, ExecutorError
from cloudctl.executor.base import (
    EventHandler,
    RunEvent,
    RunRequest,
    RunResult,
    TaskResult,
    TaskStatus,
    stop_reason,
)
from cloudctl.executor.events import clean_result, host_result_event, run_end_event, short
from cloudctl.executor.inventory import protect_templates, render_inventory

log = logging.getLogger(__name__)

#: Lines of ansible-playbook output kept in ``RunResult.stdout_tail``.
STDOUT_TAIL_LINES = 40
#: How often (s) the runner's loop wakes up to check for a timeout or a cancel (Ctrl-C).
POLL_INTERVAL_S = 0.5
#: ansible-runner's artifact sub-directory name (its ``ident``) inside a run directory.
ARTIFACTS_IDENT = "run"
#: A run directory without a final status is pruned only when older than this (s): it may
#: belong to a run still going on in another process.
STALE_RUN_S = 24 * 3600
#: Names of the run directories this executor makes: ``<UTC time>-<playbook>-<random>``.
_RUN_DIR_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-.+-[^-]+$")
#: The file of a run directory naming the process that runs it: ``{"pid", "start", "boot"}``, its
#: start time (clock ticks after boot, from ``/proc/<pid>/stat``) and the boot id, so that a pid
#: used again by another process is not taken for the owner.
OWNER_FILE = "owner"
#: The file of a run directory holding :data:`_SUPERVISOR`.
SUPERVISOR_FILE = "supervise.py"
#: Files of a run directory that its supervisor, ansible-playbook and workers have among their
#: arguments (ansible-runner gives ``-i <run dir>/inventory/hosts.json``).
_RUN_FILES = (SUPERVISOR_FILE, os.path.join("inventory", "hosts.json"))

#: The program ansible-runner starts for a run: ``python -I -S supervise.py <cloudctl pid>
#: <ansible-playbook> <its arguments>``; see the module docstring. Standard library only, no site
#: packages: it starts in a few milliseconds.
_SUPERVISOR = r'''"""cloudctl: run ansible-playbook; when cloudctl dies, kill the whole run."""

import _signal as signal  # signal without its enums: they would double our start-up time
import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LIBC = ctypes.CDLL(None, use_errno=True)


def prctl(option, value):
    if LIBC.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def shared_ssh_master(pid):
    # ssh ControlPersist masters daemonize (so they end up below us) but serve every run to their
    # host, other cloudctl processes' included; they exit by themselves once idle.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().rstrip(b"\0")
    except OSError:
        return False
    return cmdline.startswith(b"ssh: ") and cmdline.endswith(b"[mux]")


def descendants():
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid not in found and not shared_ssh_master(pid):
                found.add(pid)
                todo.append(pid)
    return found


def stop(signum, frame):
    # Freeze first, until no new process appears: nothing forks or moves out of reach meanwhile.
    stopped = set()
    for _ in range(5):
        new = descendants() - stopped
        if not new:
            break
        for pid in new:
            kill(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        kill(pid, signal.SIGKILL)
    os._exit(128 + signum)


def kill(pid, signum):
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def main(owner, argv):
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != owner:  # cloudctl died before we were armed
        return 128 + signal.SIGTERM
    me = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == me:
                os.execv(argv[0], argv)
        except OSError as exc:
            sys.stderr.write(f"cloudctl: cannot run {argv[0]}: {exc}\n")
        finally:
            os._exit(127)
    while True:
        pid, status = os.waitpid(-1, 0)  # also reaps the orphans re-parented to us
        if pid == child:
            break
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # end the way ansible-playbook did, as ansible-runner would have seen it
        if -code in (signal.SIGTERM, signal.SIGINT):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(me, -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2:]))
'''

_RESULT_EVENTS: Mapping[str, TaskStatus] = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}
_TASK_START_EVENTS = frozenset({"playbook_on_task_start", "playbook_on_handler_task_start"})


def ansible_bin_dir() -> Path:
    """The directory of the ``ansible-playbook`` that belongs to this Python environment.

    ansible-runner starts ``ansible-playbook`` through ``PATH``; putting this directory first means
    a run never picks up another installation (or none, when the venv is not activated).
    """
    candidates = [Path(sysconfig.get_path("scripts"))]
    found = shutil.which("ansible-playbook")
    if found:
        candidates.append(Path(found).parent)
    for directory in candidates:
        if os.access(directory / "ansible-playbook", os.X_OK):
            return directory
    raise ExecutorError(
        "ansible-playbook not found (is ansible-core installed in this environment?)",
        reason="ansible-playbook not found",
    )


class AnsibleExecutor:
    """Runs playbooks from ``playbooks_dir`` with ansible-runner; see the module docstring.

    Several threads may run at once: each run gets its own private data directory (so its own
    inventory, extra vars and artifacts), and only the main thread's run catches signals.
    """

    def __init__(
        self,
        *,
        runs_dir: Path,
        playbooks_dir: Path = PLAYBOOKS_DIR,
        library_dir: Path = LIBRARY_DIR,
        roles_dir: Path = ROLES_DIR,
        module_utils_dir: Path = MODULE_UTILS_DIR,
        keep_runs: int = 20,
        forks: int = 10,
        timeout_s: int | None = None,
    ) -> None:
        if keep_runs < 1:
            raise ConfigError(reason=f"keep_runs must be at least 1, not {keep_runs}")
        if forks < 1:
            raise ConfigError(reason=f"forks must be at least 1, not {forks}")
        if timeout_s is not None and timeout_s < 1:
            raise ConfigError(reason=f"timeout_s must be at least 1, not {timeout_s}")
        self.runs_dir = Path(runs_dir)
        self.playbooks_dir = Path(playbooks_dir)
        self.library_dir = Path(library_dir)
        self.roles_dir = Path(roles_dir)
        self.module_utils_dir = Path(module_utils_dir)
        self.keep_runs = keep_runs
        self.forks = forks
        self.timeout_s = timeout_s
        # Run directories of this executor's runs still going on (several threads may run at
        # once): prune() leaves them alone even when newer runs push them out of keep_runs.
        self._running: set[str] = set()
        self._lock = threading.Lock()

    # -- the Executor protocol ---------------------------------------------------------------

    def run(self, request: RunRequest, on_event: EventHandler | None = None) -> RunResult:
        """Run ``request``; a failed play is a ``RunResult`` with ``ok=False``, never an exception.

        Raises :class:`ExecutorError` only when the run cannot start at all (unknown playbook,
        no ``ansible-playbook``, ansible-runner refusing its configuration), and
        :class:`~cloudctl.errors.InvalidInput` for hosts that cannot form an inventory.
        A SIGINT/SIGTERM during the run stops ansible-playbook, then is re-delivered to the
        handler that was in place before (so Ctrl-C still raises ``KeyboardInterrupt``).
        """
        playbook_path = self._playbook_path(request.playbook)
        bin_dir = ansible_bin_dir()
        inventory = protect_templates(render_inventory(request.hosts))
        extravars = protect_templates(dict(request.extravars))
        data_dir = self._new_run_dir(request.playbook)
        try:
            return self._run_in(
                data_dir, request, on_event, playbook_path, bin_dir, inventory, extravars
            )
        finally:
            with self._lock:
                self._running.discard(data_dir.name)

    def _run_in(
        self,
        data_dir: Path,
        request: RunRequest,
        on_event: EventHandler | None,
        playbook_path: Path,
        bin_dir: Path,
        inventory: dict[str, Any],
        extravars: dict[str, Any],
    ) -> RunResult:
        import ansible_runner  # the one import of ansible_runner in cloudctl

        config_path = data_dir / "ansible.cfg"
        config_path.write_text("# cloudctl: every setting of this run is in its environment\n")
        inventory_path = data_dir / "inventory" / "hosts.json"
        _write_private_json(inventory_path, inventory)
        _write_private_json(data_dir / "env" / "extravars", extravars)
        # ansible-runner reads settings only from this file (its `settings=` argument is dropped
        # when the file is missing).
        _write_private_json(data_dir / "env" / "settings", {"pexpect_timeout": POLL_INTERVAL_S})

        collector = _Collector(request.playbook, on_event)
        collector.emit(
            RunEvent(kind="run_start", playbook=request.playbook, message=request.description)
        )
        binary, *launch_args = self._launcher(data_dir, bin_dir)
        flags = [
            flag
            for flag, wanted in (("--check", request.check), ("--diff", request.diff))
            if wanted
        ]
        started = time.monotonic()
        with _watchdog(data_dir, self.timeout_s) as watchdog:
            try:
                # With `binary`, ansible-runner leaves the playbook out of the command: it goes
                # on the command line, after the launcher's own arguments.
                runner = ansible_runner.run(
                    private_data_dir=str(data_dir),
                    ident=ARTIFACTS_IDENT,
                    binary=binary,
                    cmdline=shlex.join([*launch_args, *flags, str(playbook_path)]),
                    inventory=str(inventory_path),
                    envvars=self._envvars(bin_dir, config_path),
                    forks=self.forks,
                    quiet=True,
                    suppress_env_files=True,  # envvars stay in memory, not in env/envvars
                    fact_cache_type="memory",  # no per-run jsonfile fact cache
                    event_handler=collector.handle,
                    cancel_callback=watchdog.should_stop,
                )
            except Exception as exc:  # ansible-runner's configuration errors and the like
                raise ExecutorError(
                    f"cannot run {request.playbook}: ansible-runner failed to start: {exc}",
                    playbook=request.playbook,
                    reason=str(exc),
                ) from exc
        duration = time.monotonic() - started

        artifacts_dir = Path(runner.config.artifact_dir)
        tail = _tail(artifacts_dir / "stdout", STDOUT_TAIL_LINES)
        status, rc = str(runner.status), int(runner.rc if runner.rc is not None else -1)
        if rc == 127 and not collector.saw_events:
            raise ExecutorError(
                f"cannot run {request.playbook}: ansible-playbook did not start: {tail}",
                playbook=request.playbook,
                reason=tail,
            )
        if watchdog.timed_out:
            tail += f"\ncloudctl: the run timed out after {self.timeout_s} s and was stopped"
        elif watchdog.fenced is not None:
            tail += f"\ncloudctl: the run was stopped: {watchdog.fenced}"
        elif status == "canceled":
            tail += "\ncloudctl: the run was interrupted and stopped"
        ok = status == "successful" and rc == 0
        result = RunResult(
            playbook=request.playbook,
            ok=ok,
            rc=rc,
            tasks=tuple(collector.tasks),
            duration_s=duration,
            artifacts_dir=str(artifacts_dir),
            stdout_tail=tail.strip("\n"),
        )
        collector.emit(
            run_end_event(
                request.playbook,
                ok,
                result.tasks,
                ignored=collector.ignored,
                fallback=_last_line(tail) or f"{status} (rc={rc})",
            )
        )
        self.prune()
        watchdog.redeliver()
        return result

    # -- helpers ----------------------------------------------------------------------------

    def prune(self) -> list[Path]:
        """Delete run directories beyond the newest ``keep_runs``; returns what was deleted.

        A directory whose run has not recorded a final status may belong to a run still going on
        in another process: it is deleted only once older than a day, and never while a process
        of the run is left (:meth:`reap_orphans` finds those by their directory, so it must stay).
        The directories of this executor's runs still going on (in other threads) are never
        deleted.
        """
        if not self.runs_dir.is_dir():
            return []
        runs = sorted(
            (p for p in self.runs_dir.iterdir() if p.is_dir() and _RUN_DIR_RE.match(p.name)),
            key=lambda p: p.name,
        )
        removed: list[Path] = []
        now = time.time()
        with self._lock:
            running = set(self._running)
        doomed: list[Path] = []
        unfinished: list[Path] = []
        for path in runs[: max(0, len(runs) - self.keep_runs)]:
            if path.name in running:
                continue
            if (path / "artifacts" / ARTIFACTS_IDENT / "status").exists():
                doomed.append(path)
                continue
            try:
                if now - path.stat().st_mtime > STALE_RUN_S:
                    unfinished.append(path)
            except OSError:
                continue
        if unfinished:
            busy = _run_members(unfinished, _scan_processes())
            doomed += [path for path in unfinished if path not in busy]
        for path in sorted(doomed, key=lambda p: p.name):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        return removed

    def reap_orphans(self) -> list[int]:
        """Kill what is left of the runs in ``runs_dir`` whose cloudctl process died; their pids.

        A run's processes are its supervisor, ansible-playbook and Ansible's workers (working
        directory the run directory, the run's ``supervise.py`` or inventory file among their
        arguments), with all their descendants (the modules they run). Its owner is named in its
        ``owner`` file; a run without one (started by an older cloudctl) counts as orphaned only
        once its processes all hang off init (pid 1). Each orphaned tree is frozen (SIGSTOP), then
        killed (SIGKILL). The processes of a run whose owner lives, this process and its
        ancestors are never touched, nor a shell or a ``tail`` that merely looks into a run
        directory, nor anything outside ``runs_dir``.
        """
        if not self.runs_dir.is_dir():
            return []
        runs = [p for p in self.runs_dir.iterdir() if p.is_dir() and _RUN_DIR_RE.match(p.name)]
        procs = _scan_processes()
        if not runs or not procs:
            return []
        children = _children_of({pid: proc.ppid for pid, proc in procs.items()})
        spare = _ancestors(os.getpid(), procs)
        doomed: set[int] = set()
        for run, members in _run_members(runs, procs).items():
            tree = _subtree(members, children, procs)
            if _orphaned(run, tree, procs):
                doomed |= tree
            else:
                spare |= tree
        killed = _kill_trees(doomed - spare, spare) if doomed - spare else []
        if killed:
            log.info("killed %d processes of runs whose cloudctl died: %s", len(killed), killed)
        return killed

    def _playbook_path(self, playbook: str) -> Path:
        root = self.playbooks_dir.resolve()
        path = (root / playbook).resolve()
        if not playbook or not path.is_relative_to(root) or not path.is_file():
            raise ExecutorError(
                f"cannot run {playbook!r}: no such playbook in {root}",
                playbook=playbook,
                reason="playbook not found",
            )
        return path

    def _new_run_dir(self, playbook: str) -> Path:
        self.runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        stem = Path(playbook).stem.replace("-", "_") or "run"
        path = Path(tempfile.mkdtemp(prefix=f"{stamp}-{stem}-", dir=self.runs_dir))
        with self._lock:
            self._running.add(path.name)
        path.chmod(0o700)
        # before any process of the run exists: reap_orphans() never sees one without its owner
        _write_private_json(path / OWNER_FILE, _owner_record(os.getpid()))
        return path

    def _launcher(self, data_dir: Path, bin_dir: Path) -> list[str]:
        """The command starting ansible-playbook for the run in ``data_dir``; its arguments follow.

        On Linux, :data:`_SUPERVISOR` between ansible-runner and ansible-playbook; elsewhere
        (no ``prctl``, no ``/proc``), ansible-playbook itself.
        """
        ansible_playbook = str(bin_dir / "ansible-playbook")
        if not sys.platform.startswith("linux"):
            return [ansible_playbook]
        script = data_dir / SUPERVISOR_FILE
        _write_private_text(script, _SUPERVISOR)
        return [sys.executable, "-I", "-S", str(script), str(os.getpid()), ansible_playbook]

    def _envvars(self, bin_dir: Path, config_path: Path) -> dict[str, str]:
        return {
            "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", os.defpath)]),
            # this run's own (empty) ansible.cfg, whatever the working directory or the caller's
            # environment holds
            "ANSIBLE_CONFIG": str(config_path),
            "ANSIBLE_LIBRARY": str(self.library_dir),
            "ANSIBLE_ROLES_PATH": str(self.roles_dir),
            "ANSIBLE_MODULE_UTILS": str(self.module_utils_dir),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            # our inventory is one JSON file: load only the plugin that reads it
            "ANSIBLE_INVENTORY_ENABLED": "yaml",
            # one ssh round trip per task instead of put + chmod + exec (we are root: no sudo tty)
            "ANSIBLE_PIPELINING": "True",
        }


class _Collector:
    """Turns ansible-runner's event dicts into TaskResults and RunEvents."""

    def __init__(self, playbook: str, on_event: EventHandler | None) -> None:
        self.playbook = playbook
        self.on_event = on_event
        self.tasks: list[TaskResult] = []
        self.ignored: list[TaskResult] = []
        self.saw_events = False
        self._handler_failed = False

    def emit(self, event: RunEvent) -> None:
        """Give ``event`` to the caller's handler; a failing handler never breaks the run."""
        if self.on_event is None or self._handler_failed:
            return
        try:
            self.on_event(event)
        except Exception:
            # Stopping ansible-playbook half-way because a progress display broke would leave
            # hosts in a worse state than finishing the run: log, then stop calling the handler.
            self._handler_failed = True
            log.exception("the run event handler failed; no more events for this run")

    def handle(self, raw: Mapping[str, Any]) -> bool:
        """ansible-runner's ``event_handler``; True keeps the event in ``job_events/``."""
        self.saw_events = True
        kind = raw.get("event")
        data = raw.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.emit(
                RunEvent(
                    kind="play_start", playbook=self.playbook, message=str(data.get("play") or "")
                )
            )
        elif kind in _TASK_START_EVENTS:
            self.emit(
                RunEvent(
                    kind="task_start", playbook=self.playbook, task=str(data.get("task") or "")
                )
            )
        elif isinstance(kind, str) and kind in _RESULT_EVENTS:
            self._host_result(_RESULT_EVENTS[kind], data)
        return True

    def _host_result(self, status: TaskStatus, data: Mapping[str, Any]) -> None:
        res = clean_result(data.get("res"))
        if status == "ok" and res.get("changed"):
            status = "changed"
        task = TaskResult(
            host=str(data.get("host") or ""),
            task=str(data.get("task") or ""),
            action=str(data.get("task_action") or ""),
            status=status,
            result=res,
            started=_parse_time(data.get("start")),
            ended=_parse_time(data.get("end")),
        )
        ignored = status == "failed" and bool(data.get("ignore_errors"))
        self.tasks.append(task)
        if ignored:
            self.ignored.append(task)
        self.emit(host_result_event(self.playbook, task, ignored=ignored))


class _Watchdog:
    """Stops a run on SIGINT/SIGTERM or after ``timeout_s``, killing the whole process tree.

    ansible-runner's own stop (``timeout=``, its signal handler) SIGKILLs the process group of
    ansible-playbook only, but Ansible's workers call ``setsid()``: they and the modules they run
    (a ``sleep``, a ``virsh``) would live on as orphans. We freeze and kill every descendant.
    The caught signal is re-delivered, after the run, to the handler that was in place before
    (so Ctrl-C still ends in ``KeyboardInterrupt``); ansible-runner's handlers, which it never
    removes, are not installed at all because we pass our own ``cancel_callback``.
    """

    def __init__(self, run_dir: Path, timeout_s: int | None) -> None:
        self.run_dir = str(run_dir)
        self.timeout_s = timeout_s
        self.signum: int | None = None
        self.timed_out = False
        #: Why a stop check (executor/base.py) stopped the run.
        self.fenced: str | None = None
        self._started = time.monotonic()
        self._stopped = False
        self._previous: dict[int, Any] = {}

    def should_stop(self) -> bool:
        """ansible-runner's ``cancel_callback``, polled every ``POLL_INTERVAL_S``."""
        if self._stopped:
            return True
        if self.timeout_s is not None and time.monotonic() - self._started > self.timeout_s:
            self.timed_out = True
        if self.signum is None and not self.timed_out:
            self.fenced = stop_reason()
            if self.fenced is None:
                return False
        self._stopped = True
        _kill_trees(_children_running(self.run_dir))
        return True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def install(self) -> None:
        """Catch SIGINT and SIGTERM (main thread only; elsewhere signals are not ours)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def redeliver(self) -> None:
        """Raise the caught signal again, now that the previous handler is back."""
        if self.signum is not None:
            signum, self.signum = self.signum, None
            signal.raise_signal(signum)


@contextmanager
def _watchdog(run_dir: Path, timeout_s: int | None) -> Iterator[_Watchdog]:
    watchdog = _Watchdog(run_dir, timeout_s)
    watchdog.install()
    try:
        yield watchdog
    finally:
        watchdog.restore()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3 on of ``/proc/<pid>/stat`` (state, ppid, ..., start time at [19]); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            line = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    fields = line[line.rfind(")") + 2 :].split()
    return fields if len(fields) > 19 else None


def _process_table() -> dict[int, int]:
    """pid -> parent pid of every process we can see (Linux ``/proc``; empty elsewhere)."""
    table: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                table[int(entry)] = int(fields[1])
    return table


def _children_of(parents: Mapping[int, int]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    return children


def _cmdline(pid: int) -> tuple[str, ...]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ()
    # a process that rewrote its title (ssh's "[mux]") may leave no NUL at the end
    return tuple(os.fsdecode(arg) for arg in raw.rstrip(b"\0").split(b"\0")) if raw else ()


def _is_shared_ssh_master(args: tuple[str, ...]) -> bool:
    """An ssh ControlPersist master (``ssh: <control path> [mux]``).

    Started by one run, it serves every run to its host (other cloudctl processes' included) and
    exits by itself once idle: killing it would break a run going on elsewhere.
    """
    text = " ".join(args)
    return text.startswith("ssh: ") and text.endswith("[mux]")


def _children_running(marker: str) -> list[int]:
    """Our child processes whose command line mentions ``marker`` (the run directory)."""
    me = os.getpid()
    return [
        pid
        for pid, ppid in _process_table().items()
        if ppid == me and any(marker in arg for arg in _cmdline(pid))
    ]


def _kill_trees(roots: Iterable[int], spare: Collection[int] = ()) -> list[int]:
    """SIGSTOP ``roots`` and their descendants until no new ones appear, then SIGKILL them all.

    Freezing first means nothing forks or moves out of reach in between. What is in ``spare``
    (with what runs below it) and shared ssh masters are left alone. Returns the pids killed.
    """
    roots = list(roots)
    stopped: set[int] = set()
    passed: set[int] = set(spare)
    for _ in range(5):
        children = _children_of(_process_table())
        tree: set[int] = set()
        todo = list(roots)
        while todo:
            pid = todo.pop()
            if pid in tree or pid in passed:
                continue
            if pid not in stopped and _is_shared_ssh_master(_cmdline(pid)):
                passed.add(pid)
                continue
            tree.add(pid)
            todo.extend(children.get(pid, []))
        new = tree - stopped
        if not new:
            break
        for pid in new:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= new
    killed = []
    for pid in sorted(stopped):
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


# -- orphaned runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    """What reap_orphans needs to know of a process."""

    ppid: int
    args: tuple[str, ...]
    cwd: str


def _scan_processes() -> dict[int, _Proc]:
    """Every process we can see (Linux ``/proc``; empty elsewhere)."""
    procs: dict[int, _Proc] = {}
    for pid, ppid in _process_table().items():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        procs[pid] = _Proc(ppid=ppid, args=_cmdline(pid), cwd=cwd)
    return procs


def _run_members(runs: Iterable[Path], procs: Mapping[int, _Proc]) -> dict[Path, set[int]]:
    """A run's own processes: working in its directory, with one of :data:`_RUN_FILES` to run.

    Both conditions, so that a shell ``cd``-ed into a run directory or a ``tail -f`` of its
    output is not taken for a part of the run.
    """
    by_cwd: dict[str, tuple[Path, frozenset[str]]] = {}
    for run in runs:
        files = frozenset(
            os.path.join(base, name)
            for base in (str(run), os.path.realpath(run))
            for name in _RUN_FILES
        )
        by_cwd[os.path.realpath(run)] = (run, files)
    members: dict[Path, set[int]] = {}
    for pid, proc in procs.items():
        found = by_cwd.get(proc.cwd)
        if found is not None and not found[1].isdisjoint(proc.args):
            members.setdefault(found[0], set()).add(pid)
    return members


def _subtree(
    roots: Iterable[int], children: Mapping[int, list[int]], procs: Mapping[int, _Proc]
) -> set[int]:
    tree: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in tree and pid in procs and not _is_shared_ssh_master(procs[pid].args):
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return tree


def _ancestors(pid: int, procs: Mapping[int, _Proc]) -> set[int]:
    """``pid`` and its ancestors."""
    found: set[int] = set()
    while pid > 0 and pid not in found:
        found.add(pid)
        pid = procs[pid].ppid if pid in procs else 0
    return found


def _orphaned(run: Path, tree: set[int], procs: Mapping[int, _Proc]) -> bool:
    alive = _owner_alive(run)
    if alive is not None:
        return not alive
    # An older cloudctl's run (no owner file): orphaned once everything of it hangs off init.
    return all(procs[pid].ppid == 1 for pid in tree if procs[pid].ppid not in tree)


def _owner_record(pid: int) -> dict[str, Any]:
    """What :data:`OWNER_FILE` holds for process ``pid``."""
    fields = _stat_fields(pid)
    return {"pid": pid, "start": int(fields[19]) if fields else None, "boot": _boot_id()}


def _owner_alive(run_dir: Path) -> bool | None:
    """Whether the process named in the run's owner file lives; None without a readable one."""
    try:
        owner = json.loads((run_dir / OWNER_FILE).read_text(encoding="utf-8"))
        pid, start, boot = int(owner["pid"]), owner.get("start"), str(owner.get("boot") or "")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if boot and boot != _boot_id():
        return False
    fields = _stat_fields(pid)
    if fields is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True  # there, but its /proc entry is hidden from us: assume it is the owner
    if fields[0] in ("Z", "X"):  # exited, not yet waited for
        return False
    return start is None or int(fields[19]) == start


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _write_private_json(path: Path, data: Any) -> None:
    try:
        text = json.dumps(data, indent=1, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ExecutorError(
            f"cannot write {path.name}: value is not JSON serialisable: {exc}",
            reason=str(exc),
        ) from exc
    _write_private_text(path, text)


def _write_private_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            kept = deque((line.rstrip("\n") for line in f), maxlen=lines)
    except OSError:
        return ""
    while kept and not kept[0].strip():
        kept.popleft()
    return "\n".join(kept)


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return short(line.strip())
    return ""


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
