"""Compute hosts: register, prepare and discover through Ansible, enable/disable, remove, list."""

from __future__ import annotations

import os
import re
import shlex
import sys
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import Allocation, Host, HostEvent, Instance, Migration
from cloudctl.domain import validation
from cloudctl.domain.paths import DEFAULT_BRIDGE, DEFAULT_INSTANCES_PATH
from cloudctl.errors import (
    AlreadyExists,
    CloudctlError,
    ConfigError,
    ExecutorError,
    InUse,
    InvalidInput,
    NotFound,
)
from cloudctl.executor.base import HostTarget, RunRequest, RunResult
from cloudctl.services.context import Context
from cloudctl.services.lab_machine import LAB_LABEL, Lab

ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")
VIRT_TYPES = ("kvm", "qemu")
CPU_MODES = ("none", "host-model", "host-passthrough", "custom")
#: The playbook that applies roles/libvirt_host (``cloudctl host prepare``, ``make setup``).
PREPARE_PLAYBOOK = "prepare_host.yml"
#: Debian's own Python: a host whose modules run with it needs python3-libvirt from apt.
SYSTEM_PYTHON = "/usr/bin/python3"
#: The longest disable reason kept (the column's length).
MAX_REASON = 255
#: Names of a refused removal's blockers listed in its message, at most.
_BLOCKERS_SHOWN = 3
#: ssh options (lower case) that name files ssh reads on the controller, and what each file is.
_SSH_FILE_OPTIONS = {
    "identityfile": "ssh key",
    "userknownhostsfile": "known_hosts file",
    "globalknownhostsfile": "known_hosts file",
}
#: libvirt URI parameters that name files the libvirt client reads, and what each file is.
_URI_FILE_PARAMS = {"keyfile": "libvirt ssh key", "known_hosts": "libvirt known_hosts file"}


@dataclass(frozen=True)
class HostSpec:
    """What ``host add`` asks for."""

    name: str
    libvirt_uri: str
    connection: Literal["local", "ssh"] = "local"
    address: str | None = None
    availability_zone: str = "nova"
    virt_type: str = "kvm"
    cpu_mode: str = "none"
    cpu_model: str | None = None
    instances_path: str = DEFAULT_INSTANCES_PATH
    bridge: str = DEFAULT_BRIDGE
    python_interpreter: str | None = None
    ssh_user: str | None = None
    ssh_port: int | None = None
    ssh_private_key: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def validate_spec(spec: HostSpec) -> None:
    """Reject anything that would reach Ansible or libvirt malformed."""
    validation.object_name("host", spec.name)
    validation.availability_zone(spec.availability_zone)
    validation.libvirt_uri(spec.libvirt_uri)
    if spec.connection not in ("local", "ssh"):
        raise InvalidInput(reason=f"connection must be local or ssh, not {spec.connection!r}")
    if spec.connection == "ssh" and not spec.address:
        raise InvalidInput(reason="an ssh host needs --address")
    if spec.address is not None and not ADDRESS_RE.fullmatch(spec.address):
        raise InvalidInput(reason=f"address {spec.address!r} is not a host name or IP address")
    if spec.virt_type not in VIRT_TYPES:
        raise InvalidInput(reason=f"virt type must be one of {', '.join(VIRT_TYPES)}")
    if spec.cpu_mode not in CPU_MODES:
        raise InvalidInput(reason=f"cpu mode must be one of {', '.join(CPU_MODES)}")
    for label, value in (
        ("instances path", spec.instances_path),
        ("python interpreter", spec.python_interpreter),
        ("ssh key", spec.ssh_private_key),
    ):
        if value is not None:
            validation.host_path(label, value)
    if not validation.BRIDGE_RE.fullmatch(spec.bridge):
        raise InvalidInput(reason=f"bridge {spec.bridge!r} is not a valid interface name")
    if spec.ssh_user is not None and not re.fullmatch(r"^[a-z_][a-z0-9_-]{0,31}$", spec.ssh_user):
        raise InvalidInput(reason=f"ssh user {spec.ssh_user!r} is not a valid user name")
    if spec.ssh_port is not None and not 0 < spec.ssh_port < 65536:
        raise InvalidInput(reason=f"ssh port {spec.ssh_port} out of range")


def get_host(session: Session, name: str) -> Host:
    """A live host by name."""
    host = session.scalars(select(Host).where(Host.name == name, Host.deleted == 0)).first()
    if host is None:
        raise NotFound(kind="host", name=name)
    return host


def list_hosts(session: Session) -> list[Host]:
    """Every live host, by name."""
    return list(session.scalars(select(Host).where(Host.deleted == 0).order_by(Host.name)))


@dataclass(frozen=True)
class ControllerFile:
    """A file on the controller that reaching a host needs; any one of ``paths`` will do."""

    what: str
    paths: tuple[str, ...]
    executable: bool = False

    def present(self) -> bool:
        """Whether one of the paths is there, readable (and executable if it must be)."""
        mode = os.X_OK if self.executable else os.R_OK
        return any(os.access(p, mode) and not os.path.isdir(p) for p in self.paths)


def _ssh_arg_files(args: str) -> list[ControllerFile]:
    """The files ``ansible_ssh_common_args`` make ssh read: ``-i``, ``-o IdentityFile=`` and
    the known_hosts options (a list of files, of which ssh needs one)."""
    try:
        words = shlex.split(args)
    except ValueError:
        return []  # ssh would refuse the arguments themselves, with its own message
    out = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-o", "-i") and i + 1 < len(words):
            flag, value, i = word, words[i + 1], i + 2
        elif word[:2] in ("-o", "-i") and len(word) > 2:
            flag, value, i = word[:2], word[2:], i + 1
        else:
            i += 1
            continue
        if flag == "-i":
            what, files = "ssh key", [value]
        else:
            key, sep, rest = value.partition("=")
            if not sep:
                key, _, rest = value.strip().partition(" ")
            what, files = _SSH_FILE_OPTIONS.get(key.strip().lower(), ""), rest.split()
        # ssh expands ~ and %-tokens and reads relative names from its cwd: only plain absolute
        # paths can be checked here.
        paths = tuple(os.path.expanduser(f) for f in files if f.lower() != "none" and "%" not in f)
        paths = tuple(p for p in paths if os.path.isabs(p))
        if what and paths:
            out.append(ControllerFile(what, paths))
    return out


def controller_files(host: Host) -> list[ControllerFile]:
    """The files on this controller that reaching ``host`` reads.

    Ansible and ssh run on the controller, so the ssh key and the known_hosts files a host row
    names must exist on every controller that uses the row; for a ``local`` host the Python
    interpreter (and files the libvirt URI names) too. A remote host's interpreter lives on
    that host and is not checked here.
    """
    out = []
    if host.connection == "ssh":
        if host.ssh_private_key:
            out.append(ControllerFile("ssh key", (host.ssh_private_key,)))
        out += _ssh_arg_files(host.ssh_common_args or "")
    else:
        if host.python_interpreter:
            out.append(
                ControllerFile("python interpreter", (host.python_interpreter,), executable=True)
            )
        for key, value in parse_qsl(urlsplit(host.libvirt_uri).query):
            if key in _URI_FILE_PARAMS and os.path.isabs(value):
                out.append(ControllerFile(_URI_FILE_PARAMS[key], (value,)))
    return out


def missing_controller_file(host: Host) -> ConfigError | None:
    """The error for the first file of :func:`controller_files` this controller lacks, if any."""
    for f in controller_files(host):
        if not f.present():
            there = os.path.exists(f.paths[0])
            state = "is not executable" if f.executable and there else "is missing"
            return ConfigError(
                reason=f"host {host.name!r} needs the {f.what} {' or '.join(f.paths)}, which "
                f"{state} on this controller: every controller sharing the database reads the "
                "same host row, so put the file at that path here (or run the command from the "
                "controller that registered the host)",
                host=host.name,
                path=f.paths[0],
            )
    return None


def host_target(host: Host, *, check_files: bool = True) -> HostTarget:
    """How the executor reaches ``host``.

    Raises ConfigError, before any Ansible run, when the row names a file (ssh key, known_hosts
    file, local interpreter) that this controller does not have; ``check_files=False`` skips
    that check for callers that only list hosts (the Ansible inventory).
    """
    missing = missing_controller_file(host) if check_files else None
    if missing is not None:
        raise missing
    interpreter = host.python_interpreter or (
        sys.executable if host.connection == "local" else "/usr/bin/python3"
    )
    return HostTarget(
        name=host.name,
        connection="ssh" if host.connection == "ssh" else "local",
        libvirt_uri=host.libvirt_uri,
        python_interpreter=interpreter,
        address=host.address,
        ssh_user=host.ssh_user,
        ssh_port=host.ssh_port,
        ssh_private_key=host.ssh_private_key,
        ssh_common_args=host.ssh_common_args,
        hostvars={"instances_path": host.instances_path, "bridge": host.bridge or DEFAULT_BRIDGE},
    )


def is_up(host: Host, now: datetime, service_down_time_s: int) -> bool:
    """Nova's servicegroup check: heartbeat within ``service_down_time``."""
    if host.last_heartbeat is None:
        return False
    return now - host.last_heartbeat <= timedelta(seconds=service_down_time_s)


def add_host(ctx: Context, spec: HostSpec, *, discover: bool = True) -> dict[str, Any]:
    """Register a host and discover its capacity; a host that cannot be reached is not kept."""
    validate_spec(spec)
    s = ctx.settings
    with ctx.db.unit_of_work() as session:
        if session.scalars(
            select(Host.id).where(Host.name == spec.name, Host.deleted == 0)
        ).first():
            raise AlreadyExists(kind="host", name=spec.name)
        host = Host(
            uuid=str(uuid.uuid4()),
            name=spec.name,
            connection=spec.connection,
            address=spec.address,
            libvirt_uri=spec.libvirt_uri,
            instances_path=spec.instances_path,
            bridge=spec.bridge,
            python_interpreter=spec.python_interpreter,
            ssh_user=spec.ssh_user,
            ssh_port=spec.ssh_port,
            ssh_private_key=spec.ssh_private_key,
            virt_type=spec.virt_type,
            cpu_mode=spec.cpu_mode,
            cpu_model=spec.cpu_model,
            availability_zone=spec.availability_zone,
            labels=dict(spec.labels),
            cpu_allocation_ratio=s.cpu_allocation_ratio,
            ram_allocation_ratio=s.ram_allocation_ratio,
            disk_allocation_ratio=s.disk_allocation_ratio,
            reserved_host_memory_mb=s.reserved_host_memory_mb,
            created_at=ctx.clock(),
        )
        session.add(host)
    if discover:
        try:
            discover_hosts(ctx, [spec.name])
        except Exception:
            with ctx.db.unit_of_work() as session:
                session.delete(get_host(session, spec.name))
            raise
    with ctx.db.unit_of_work() as session:
        return host_view(session, get_host(session, spec.name), ctx.clock(), s.service_down_time_s)


def discover_hosts(ctx: Context, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Read capacity and hypervisor facts of hosts (all when ``names`` is None), one play."""
    with ctx.db.unit_of_work() as session:
        hosts = [get_host(session, n) for n in names] if names else list_hosts(session)
        targets = tuple(host_target(h) for h in hosts)
    if not targets:
        return []
    ctx.progress.info(f"discovering {len(targets)} host(s)")
    result = ctx.executor.run(
        RunRequest(playbook="discover.yml", hosts=targets, description="discover hosts"),
        ctx.progress.run_event,
    )
    apply_facts(ctx, result)
    failed = result.failed()
    if failed:
        first = failed[0]
        raise ExecutorError(
            playbook="discover.yml", host=first.host, reason=first.message or result.stdout_tail
        )
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        return [
            host_view(session, get_host(session, t.name), now, ctx.settings.service_down_time_s)
            for t in targets
        ]


def apply_facts(ctx: Context, result: RunResult) -> list[str]:
    """Store what the host-facts module reported, refresh those hosts' heartbeats; their names."""
    now = ctx.clock()
    answered: list[str] = []
    with ctx.db.unit_of_work() as session:
        for task in result.tasks:
            if task.task != "host facts" or task.status not in ("ok", "changed"):
                continue
            facts = task.result.get("host_facts") or {}
            host = get_host(session, task.host)
            host.vcpus = int(facts.get("vcpus", 0))
            host.memory_mb = int(facts.get("memory_mb", 0))
            host.local_gb = int(facts.get("disk_gb", 0))
            host.disk_available_gb = int(facts.get("disk_free_gb", 0))
            host.hypervisor_type = facts.get("hypervisor_type")
            host.hypervisor_version = facts.get("hypervisor_version")
            host.libvirt_version = facts.get("libvirt_version")
            host.hypervisor_hostname = facts.get("hostname")
            host.host_uuid = facts.get("host_uuid")
            host.cpu_info = {
                "arch": facts.get("cpu_arch"),
                "model": facts.get("cpu_model"),
                "vendor": facts.get("cpu_vendor"),
                "features": facts.get("cpu_features", []),
                "virt_types": facts.get("virt_types", []),
            }
            host.last_heartbeat = now
            answered.append(host.name)
    return sorted(answered)


def touch_hosts(ctx: Context, names: Iterable[str]) -> None:
    """A successful Ansible contact counts as a heartbeat."""
    names = set(names)
    if not names:
        return
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        for host in session.scalars(select(Host).where(Host.name.in_(names), Host.deleted == 0)):
            host.last_heartbeat = now


def refresh_stale(ctx: Context, *, exclude: Collection[str] = ()) -> list[str]:
    """Ask the enabled hosts without a recent heartbeat whether they answer; returns those that did.

    cloudctl has no always-on compute service: without ``cloudctl agent`` the heartbeats come
    from the commands that reach the hosts, so after a quiet minute every host would look down
    and nothing could be scheduled. Commands that schedule call this first: one discover play
    over just those hosts, and the ones that answer are up again (capacity refreshed too). Hosts
    whose latest recorded up/down event says down are left to reconcile, the agent or ``host
    discover``, so that a dead host does not cost every command a connection timeout.
    """
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        down_after = ctx.settings.service_down_time_s
        stale = [
            h
            for h in list_hosts(session)
            if h.enabled and h.name not in exclude and not is_up(h, now, down_after)
        ]
        if not stale:
            return []
        latest: dict[str, str] = {}
        for host_name, event in session.execute(
            select(HostEvent.host, HostEvent.event)
            .where(HostEvent.host.in_([h.name for h in stale]), HostEvent.event.in_(("up", "down")))
            .order_by(HostEvent.id)
        ):
            latest[host_name] = event
        asked = [h for h in stale if latest.get(h.name) != "down"]
        # A host this controller cannot reach (a file of its row is missing here) stays as it
        # is: one such host must not stop every command that schedules.
        unreachable = {h.name: e for h in asked if (e := missing_controller_file(h)) is not None}
        for error in unreachable.values():
            ctx.progress.info(f"not asking: {error.message}")
        targets = tuple(host_target(h) for h in asked if h.name not in unreachable)
    if not targets:
        return []
    ctx.progress.info(
        f"asking {len(targets)} host(s) with no heartbeat for {down_after}s: "
        + ", ".join(t.name for t in targets)
    )
    try:
        result = ctx.executor.run(
            RunRequest(playbook="discover.yml", hosts=targets, description="refresh heartbeats"),
            ctx.progress.run_event,
        )
    except CloudctlError:
        return []  # they stay down; scheduling says so
    return apply_facts(ctx, result)


def set_enabled(
    ctx: Context, name: str, enabled: bool, reason: str | None = None
) -> dict[str, Any]:
    """Enable or disable a host for scheduling (existing guests keep running)."""
    if reason is not None and len(reason) > MAX_REASON:
        raise InvalidInput(reason=f"a disable reason is at most {MAX_REASON} characters")
    with ctx.db.unit_of_work() as session:
        host = get_host(session, name)
        host.enabled = enabled
        host.disabled_reason = None if enabled else (reason or "disabled by operator")
        session.flush()
        return host_view(session, host, ctx.clock(), ctx.settings.service_down_time_s)


def prepare_vars(host: Host, lab_dir: Path | None = None) -> dict[str, Any]:
    """The variables of ``roles/libvirt_host`` for ``host``, derived from its row.

    A lab host (label ``lab=true``) also gets what the lab runs it with (its daemons' pid files
    and arguments, its qemu.conf keys), read from the lab under ``lab_dir``, so the role manages
    that host's own daemons and configuration, not the machine's. A host of another home's lab
    (another ``lab_id``) is refused with ConfigError: only its own home knows how it runs.
    """
    interpreter = host_target(host).python_interpreter
    role_vars: dict[str, Any] = {
        "libvirt_host_instances_path": host.instances_path,
        "libvirt_host_bridge": host.bridge or DEFAULT_BRIDGE,
        "libvirt_host_uri": host.libvirt_uri,
        "libvirt_host_install_python_libvirt": interpreter == SYSTEM_PYTHON,
    }
    is_lab = host.lab_id is not None or (host.labels or {}).get(LAB_LABEL) == "true"
    if is_lab and lab_dir is not None:
        lab = Lab(lab_dir)
        if host.lab_id is not None and host.lab_id != lab.names.lab_id:
            raise ConfigError(
                reason=f"host {host.name!r} belongs to lab {host.lab_id} of another cloudctl "
                f"home (this home's lab is {lab.names.lab_id}): prepare it from that home",
                host=host.name,
            )
        role_vars.update(lab.role_vars(host.name))
    return role_vars


def prepare_hosts(
    ctx: Context, names: Sequence[str], *, check: bool = False
) -> list[dict[str, Any]]:
    """Apply ``roles/libvirt_host`` to hosts (one play); a report per host, in ``names`` order.

    Each report counts tasks as Ansible's recap does (``ok`` includes ``changed``) and names the
    changed ones; ``error`` is the first failure's message (None when the host succeeded). With
    ``check`` nothing changes on the hosts (Ansible's check mode, with diffs in the results).
    A host that succeeded gets a heartbeat (a successful contact, also in check mode) and, after a
    real run, its facts rediscovered; a failing rediscovery raises ExecutorError.
    """
    if not names:
        raise InvalidInput(reason="give at least one host to prepare")
    with ctx.db.unit_of_work() as session:
        targets = []
        for name in dict.fromkeys(names):
            row = get_host(session, name)
            target = host_target(row)
            role_vars = prepare_vars(row, ctx.settings.lab_dir)
            targets.append(replace(target, hostvars={**target.hostvars, **role_vars}))
    ctx.progress.info(
        f"preparing {len(targets)} host(s)" + (" (check mode: nothing changes)" if check else "")
    )
    result = ctx.executor.run(
        RunRequest(
            playbook=PREPARE_PLAYBOOK,
            hosts=tuple(targets),
            check=check,
            diff=check,
            description="prepare hosts" + (" (check)" if check else ""),
        ),
        ctx.progress.run_event,
    )
    reports = [prepare_report(result, t.name, check=check) for t in targets]
    succeeded = [r["name"] for r in reports if r["error"] is None]
    touch_hosts(ctx, succeeded)
    if succeeded and not check:
        discover_hosts(ctx, succeeded)
    return reports


def prepare_report(result: RunResult, host: str, *, check: bool) -> dict[str, Any]:
    """One host's part of a prepare run: task counts, changed task names, first error."""
    tasks = [t for t in result.tasks if t.host == host]
    changed = [t.task for t in tasks if t.status == "changed"]
    failed = [t for t in tasks if t.status in ("failed", "unreachable")]
    error: str | None = None
    if failed:
        error = (failed[0].message or failed[0].status).splitlines()[0]
    elif not result.ok and not result.failed():
        # ansible-playbook failed without a failed task (a play or syntax error): every host did.
        last = result.stdout_tail.strip().splitlines()
        error = last[-1] if last else f"{result.playbook} exited {result.rc}"
    return {
        "name": host,
        "check": check,
        "ok": sum(1 for t in tasks if t.status in ("ok", "changed")),
        "changed": len(changed),
        "failed": len(failed),
        "skipped": sum(1 for t in tasks if t.status == "skipped"),
        "unreachable": any(t.status == "unreachable" for t in failed),
        "changed_tasks": list(dict.fromkeys(changed)),
        "error": error,
    }


def removal_blockers(session: Session, host: Host) -> list[str]:
    """Why ``host`` cannot be removed yet (empty: it can): guests, allocations, moves under way."""
    # A function-level import: services.compute imports this module.
    from cloudctl.services.compute.moves import DONE_STATUSES

    def some(kind: str, names: Sequence[str]) -> str:
        shown = ", ".join(names[:_BLOCKERS_SHOWN])
        more = f", +{len(names) - _BLOCKERS_SHOWN} more" if len(names) > _BLOCKERS_SHOWN else ""
        return f"{len(names)} {kind} ({shown}{more})"

    blockers = []
    guests = list(
        session.scalars(
            select(Instance.name)
            .where(Instance.host_id == host.id, Instance.deleted == 0)
            .order_by(Instance.name)
        )
    )
    if guests:
        blockers.append(some("instance(s)", guests))
    consumers = list(
        session.scalars(
            select(Allocation.consumer_uuid)
            .where(Allocation.host_id == host.id)
            .distinct()
            .order_by(Allocation.consumer_uuid)
        )
    )
    if consumers:
        blockers.append(some("allocation consumer(s)", consumers))
    moves = list(
        session.scalars(
            select(Migration.uuid)
            .where(
                or_(Migration.source_host == host.name, Migration.dest_host == host.name),
                Migration.status.not_in(sorted(DONE_STATUSES)),
            )
            .order_by(Migration.id)
        )
    )
    if moves:
        blockers.append(some("migration(s) under way", moves))
    return blockers


def remove_host(ctx: Context, name: str) -> dict[str, Any]:
    """Unregister a host that holds nothing any more: its row is soft-deleted (Nova-style).

    Refused with InUse, nothing changed, while the host has a live instance (any vm_state, also
    soft-deleted or in error), an allocation in the ledger, or a migration not yet final from or to
    it. Nothing runs on the host: its guests' files and its daemons are left as they are.
    """
    with ctx.db.unit_of_work() as session:
        host = get_host(session, name)
        blockers = removal_blockers(session, host)
        if blockers:
            raise InUse(kind="host", name=name, reason="; ".join(blockers))
        now = ctx.clock()
        host.deleted = host.id
        host.deleted_at = now
        return {
            "name": host.name,
            "uuid": host.uuid,
            "removed": True,
            "deleted_at": now.isoformat(),
        }


def host_view(session: Session, host: Host, now: datetime, down_after_s: int) -> dict[str, Any]:
    """A host as the CLI shows it (JSON-friendly)."""
    usage = ledger.usage_by_host(session, [host.id]).get(host.id, ledger.HostUsage())
    return {
        "name": host.name,
        "uuid": host.uuid,
        "state": "up" if is_up(host, now, down_after_s) else "down",
        "status": "enabled" if host.enabled else "disabled",
        "disabled_reason": host.disabled_reason,
        "availability_zone": host.availability_zone,
        "connection": host.connection,
        "address": host.address,
        "libvirt_uri": host.libvirt_uri,
        "virt_type": host.virt_type,
        "cpu_mode": host.cpu_mode,
        "hypervisor_type": host.hypervisor_type,
        "hypervisor_version": host.hypervisor_version,
        "hypervisor_hostname": host.hypervisor_hostname,
        "cpu_info": host.cpu_info,
        "vcpus": host.vcpus,
        "vcpus_used": usage.vcpus,
        "memory_mb": host.memory_mb,
        "memory_mb_used": usage.memory_mb,
        "local_gb": host.local_gb,
        "local_gb_used": usage.disk_gb,
        "disk_available_gb": host.disk_available_gb,
        "running_vms": len(usage.consumers),
        "cpu_allocation_ratio": host.cpu_allocation_ratio,
        "ram_allocation_ratio": host.ram_allocation_ratio,
        "disk_allocation_ratio": host.disk_allocation_ratio,
        "reserved_host_memory_mb": host.reserved_host_memory_mb,
        "labels": host.labels,
        "lab_id": host.lab_id,
        "instances_path": host.instances_path,
        "last_heartbeat": host.last_heartbeat.isoformat() if host.last_heartbeat else None,
    }
