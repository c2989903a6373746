#!/usr/bin/python
# Copyright: cloudctl contributors
# Apache License 2.0
"""Ansible module: start or restart a libvirt daemon on a host without an init system."""

from __future__ import annotations

import os
import signal
import socket as socketlib
import subprocess
import tempfile
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: libvirt_host_daemon
short_description: Start (or restart) virtlogd / libvirtd on a host that has no init system
description:
  - Decides whether the daemon runs from its pid file, or failing that from a process of that name
    in the module's own mount namespace (so a second libvirtd in another mount namespace, as lab
    hosts use, is not mistaken for this host's).
  - Starts it with C(--daemon --pid-file PIDFILE) when it does not run, then waits until its socket
    accepts connections and the probe command exits 0.
  - C(state=restarted) sends SIGTERM, waits for the process to go, and starts it again. For libvirtd
    running guests survive this: their QEMU processes are not its children and it reconnects.
options:
  name:
    description: Process name (as in /proc/PID/comm); also the executable unless I(executable) says.
    type: str
    required: true
  executable:
    description: Path or name of the daemon's executable.
    type: str
  pidfile:
    description: Pid file passed as C(--pid-file) and read to find the running daemon.
    type: path
    required: true
  args:
    description: Extra arguments after C(--daemon --pid-file PIDFILE).
    type: list
    elements: str
    default: []
  socket:
    description: UNIX socket that must accept connections before the daemon counts as up.
    type: path
  probe:
    description: Command (argv) that must exit 0 before the daemon counts as up.
    type: list
    elements: str
    default: []
  environment:
    description: Extra environment for the daemon (it otherwise gets a minimal PATH, HOME and LANG).
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for the daemon to come up or to go away.
    type: int
    default: 60
  state:
    description: C(started) starts it only when not running; C(restarted) always (re)starts it.
    type: str
    choices: [started, restarted]
    default: started
  start_if_stopped:
    description:
      - With C(state=restarted), whether a daemon that does not run is started (C(true)) or left
        alone (C(false)), e.g. by a handler that only applies new configuration to a running daemon.
    type: bool
    default: true
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Start libvirtd unless it runs
  libvirt_host_daemon:
    name: libvirtd
    pidfile: /run/libvirtd.pid
    socket: /var/run/libvirt/libvirt-sock
    probe: [virsh, -c, "qemu:///system", version]
"""

RETURN = r"""
pid:
  description: Pid of the daemon after the run (none in check mode when it would be started).
  type: int
  returned: always
found_by:
  description: How the running daemon was found before any action (pidfile, scan) or none.
  type: str
  returned: always
action:
  description: What was done (none, started, restarted), with "would " prefixed in check mode.
  type: str
  returned: always
probe_stdout:
  description: Output of the probe command, when one ran.
  type: str
  returned: when a probe ran
"""

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _alive(pid: int, name: str, mnt_ns: str | None) -> bool:
    """True when PID is a live (non-zombie) NAME process in mount namespace MNT_NS."""
    comm = _read(f"/proc/{pid}/comm")
    if comm is None or comm.strip() != name[:15]:
        return False
    stat = _read(f"/proc/{pid}/stat") or ""
    state = stat.rpartition(")")[2].split()[:1]
    if state == ["Z"]:
        return False
    if mnt_ns is not None:
        try:
            return os.readlink(f"/proc/{pid}/ns/mnt") == mnt_ns
        except OSError:
            return False
    return True


def find_daemon(name: str, pidfile: str) -> tuple[int | None, str]:
    """Return (pid, how it was found) of the running daemon, or (None, "none")."""
    try:
        mnt_ns: str | None = os.readlink("/proc/self/ns/mnt")
    except OSError:
        mnt_ns = None
    text = (_read(pidfile) or "").strip()
    if text.isdigit() and _alive(int(text), name, mnt_ns):
        return int(text), "pidfile"
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _alive(int(entry), name, mnt_ns):
            return int(entry), "scan"
    return None, "none"


def _socket_accepts(path: str) -> bool:
    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _daemon_env(extra: dict[str, Any]) -> dict[str, str]:
    env = {"PATH": SAFE_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C"}
    env.update({str(key): str(value) for key, value in extra.items()})
    return env


def start(module: AnsibleModule, executable: str) -> None:
    """Run EXECUTABLE --daemon --pid-file PIDFILE ARGS; fail the module when it exits non-zero."""
    params = module.params
    argv = [executable, "--daemon", "--pid-file", params["pidfile"], *params["args"]]
    # Output goes to a file, not a pipe: a daemonised child holding a pipe open would block us.
    with tempfile.TemporaryFile() as output:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=_daemon_env(params["environment"]),
            cwd="/",
            check=False,
            start_new_session=True,
        )
        output.seek(0)
        text = output.read().decode("utf-8", errors="replace")
    if result.returncode != 0:
        module.fail_json(msg=f"{' '.join(argv)} exited {result.returncode}", output=text, cmd=argv)


def wait_up(module: AnsibleModule) -> tuple[int, str]:
    """Wait for the pid, the socket and the probe; return (pid, probe output)."""
    params = module.params
    deadline = time.monotonic() + params["timeout"]
    last = "daemon not found"
    while True:
        pid, _ = find_daemon(params["name"], params["pidfile"])
        if pid is None:
            last = "no running process"
        elif params["socket"] and not _socket_accepts(params["socket"]):
            last = f"socket {params['socket']} does not accept connections"
        else:
            if not params["probe"]:
                return pid, ""
            probe = subprocess.run(
                params["probe"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=_daemon_env({}),
                timeout=30,
                check=False,
            )
            if probe.returncode == 0:
                return pid, probe.stdout
            last = f"probe exited {probe.returncode}: {probe.stderr.strip()}"
        if time.monotonic() > deadline:
            name, timeout = params["name"], params["timeout"]
            module.fail_json(msg=f"{name} did not come up in {timeout} s: {last}")
        time.sleep(0.2)


def stop(module: AnsibleModule, pid: int) -> None:
    """SIGTERM PID and wait for it to go (SIGKILL after the timeout)."""
    params = module.params
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + params["timeout"]
    while _alive(pid, params["name"], None):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "executable": {"type": "str"},
            "pidfile": {"type": "path", "required": True},
            "args": {"type": "list", "elements": "str", "default": []},
            "socket": {"type": "path"},
            "probe": {"type": "list", "elements": "str", "default": []},
            "environment": {"type": "dict", "default": {}},
            "timeout": {"type": "int", "default": 60},
            "state": {"type": "str", "choices": ["started", "restarted"], "default": "started"},
            "start_if_stopped": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    pid, found_by = find_daemon(params["name"], params["pidfile"])
    result: dict[str, Any] = {"changed": False, "pid": pid, "found_by": found_by, "action": "none"}

    action = "none"
    if params["state"] == "restarted" and pid is not None:
        action = "restarted"
    elif pid is None and (params["state"] == "started" or params["start_if_stopped"]):
        action = "started"
    elif pid is None:
        module.exit_json(**result)  # restart wanted only if it runs, and it does not

    if action != "none":
        result.update(changed=True, action=action)
        if module.check_mode:
            result.update(action=f"would {action}", pid=None)
            module.exit_json(**result)
        executable = params["executable"] or params["name"]
        if os.sep not in executable:
            executable = module.get_bin_path(
                executable, required=True, opt_dirs=SAFE_PATH.split(":")
            )
        if pid is not None:
            stop(module, pid)
        start(module, executable)

    # Also when it was running already (read-only, so in check mode too): a daemon whose process
    # lives but does not answer is an error, not a success.
    result["pid"], result["probe_stdout"] = wait_up(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
