"""Compute hosts: register, prepare and discover through Ansible, enable/disable, remove, list."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import Allocation, Host, HostEvent, Instance, Migration
from cloudctl.domain import validation
from cloudctl.domain.paths import DEFAULT_BRIDGE, DEFAULT_INSTANCES_PATH
from cloudctl.errors import (
    AlreadyExists,
    CloudctlError,
    ExecutorError,
    InUse,
    InvalidInput,
    NotFound,
)
from cloudctl.executor.base import HostTarget, RunRequest, RunResult
from cloudctl.services.context import Context
from cloudctl.services.lab_machine import LAB_LABEL, Lab

LIBVIRT_URI_RE = re.compile(r"^(qemu|test)(\+(ssh|unix|tcp|tls|libssh2?))?://[^\s'\"<>\\]*$")
ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*$")
VIRT_TYPES = ("kvm", "qemu")
CPU_MODES = ("none", "host-model", "host-passthrough", "custom")
#: The playbook that applies roles/libvirt_host (``cloudctl host prepare``, ``make setup``).
PREPARE_PLAYBOOK = "prepare_host.yml"
#: Debian's own Python: a host whose modules run with it needs python3-libvirt from apt.
SYSTEM_PYTHON = "/usr/bin/python3"
#: Names of a refused removal's blockers listed in its message, at most.
_BLOCKERS_SHOWN = 3


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
    if not LIBVIRT_URI_RE.match(spec.libvirt_uri):
        raise InvalidInput(reason=f"libvirt URI {spec.libvirt_uri!r} is not a qemu:// URI")
    if spec.connection not in ("local", "ssh"):
        raise InvalidInput(reason=f"connection must be local or ssh, not {spec.connection!r}")
    if spec.connection == "ssh" and not spec.address:
        raise InvalidInput(reason="an ssh host needs --address")
    if spec.address is not None and not ADDRESS_RE.match(spec.address):
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
        if value is not None and not SAFE_PATH_RE.match(value):
            raise InvalidInput(reason=f"{label} {value!r} must be an absolute plain path")
    if not validation.BRIDGE_RE.match(spec.bridge):
        raise InvalidInput(reason=f"bridge {spec.bridge!r} is not a valid interface name")
    if spec.ssh_user is not None and not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", spec.ssh_user):
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


def host_target(host: Host) -> HostTarget:
    """How the executor reaches ``host``."""
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
        targets = tuple(host_target(h) for h in stale if latest.get(h.name) != "down")
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
    that host's own daemons and configuration, not the machine's.
    """
    interpreter = host_target(host).python_interpreter
    role_vars: dict[str, Any] = {
        "libvirt_host_instances_path": host.instances_path,
        "libvirt_host_bridge": host.bridge or DEFAULT_BRIDGE,
        "libvirt_host_uri": host.libvirt_uri,
        "libvirt_host_install_python_libvirt": interpreter == SYSTEM_PYTHON,
    }
    if (host.labels or {}).get(LAB_LABEL) == "true" and lab_dir is not None:
        role_vars.update(Lab(lab_dir).role_vars(host.name))
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
        "instances_path": host.instances_path,
        "last_heartbeat": host.last_heartbeat.isoformat() if host.last_heartbeat else None,
    }
