"""The instance lifecycle of the walking skeleton: boot, delete, start/stop/reboot, console.

Nova's order for a boot: validate, create the instance (BUILDING), schedule and claim in one
transaction, then NETWORKING, BLOCK_DEVICE_MAPPING and SPAWNING on the host through Ansible, and
ACTIVE with the power state read back from libvirt. Each step is an instance action event; a
failure leaves the instance in ERROR with a fault, its claim and IP released and the host clean.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import Host, Image, Instance, InstanceAction, InstanceFault, KeyPair, Quota
from cloudctl.domain import validation
from cloudctl.domain.settings import Settings
from cloudctl.domain.states import PowerState, TaskState, VmState, display_status
from cloudctl.errors import (
    AlreadyExists,
    ClaimConflict,
    CloudctlError,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
    QuotaExceeded,
)
from cloudctl.executor.base import RunEvent, RunRequest, RunResult
from cloudctl.render import render_config_drive, render_domain_xml
from cloudctl.render.spec import ConfigDriveSpec, DiskSpec, DomainSpec, NetworkConfigNic, NicSpec
from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler
from cloudctl.scheduler.registry import load_filters, load_weighers
from cloudctl.services import actions, hosts, network
from cloudctl.services.context import Context
from cloudctl.services.flavors import get_flavor
from cloudctl.services.images import get_image
from cloudctl.services.keypairs import get_keypair

CLAIM_RETRIES = 3


@dataclass(frozen=True)
class BootRequest:
    """What ``cloudctl boot`` asks for."""

    name: str
    flavor: str
    image: str
    key_name: str | None = None
    availability_zone: str | None = None
    count: int = 1
    user_data: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- lookups


def get_instance(session: Session, project_id: str, name_or_uuid: str) -> Instance:
    """A live instance of the project by name or UUID."""
    column = Instance.uuid if validation.is_uuid(name_or_uuid) else Instance.name
    inst = session.scalars(
        select(Instance).where(
            column == name_or_uuid, Instance.project_id == project_id, Instance.deleted == 0
        )
    ).first()
    if inst is None:
        raise NotFound(kind="instance", name=name_or_uuid)
    return inst


def instance_names(req: BootRequest) -> list[str]:
    """``name`` for one instance, ``name-1 .. name-N`` for ``--count N`` (Nova's template)."""
    if req.count < 1:
        raise InvalidInput(reason=f"count must be >= 1, got {req.count}")
    if req.count == 1:
        return [validation.instance_name(req.name)]
    return [validation.instance_name(f"{req.name}-{i}") for i in range(1, req.count + 1)]


def parse_az(value: str | None) -> tuple[str | None, str | None]:
    """``AZ``, ``AZ:HOST`` or ``:HOST`` -> (az, forced host)."""
    if not value:
        return None, None
    az, _, host = value.partition(":")
    return (validation.availability_zone(az) if az else None), (
        validation.object_name("host", host) if host else None
    )


# --------------------------------------------------------------------------- boot


def boot(ctx: Context, req: BootRequest, *, wait: bool = True) -> list[dict[str, Any]]:
    """Validate, create, schedule and claim; then build (inline, or in a detached worker)."""
    names = instance_names(req)
    az, force_host = parse_az(req.availability_zone)
    user_data = validation.user_data(req.user_data) if req.user_data is not None else None
    request_id = actions.new_request_id()
    for attempt in range(1, CLAIM_RETRIES + 1):
        try:
            uuids = _create_and_claim(ctx, req, names, az, force_host, user_data, request_id)
            break
        except ledger.GenerationConflict as exc:
            if attempt == CLAIM_RETRIES:
                raise ClaimConflict(host=exc.host, attempts=attempt) from exc
            ctx.progress.info(f"ledger changed on {exc.host}, scheduling again")
    if wait:
        build_instances(ctx, uuids, request_id)
    else:
        launch_worker(ctx.settings, ["_build", request_id, *uuids])
    return [show_instance(ctx, u) for u in uuids]


def _create_and_claim(
    ctx: Context,
    req: BootRequest,
    names: Sequence[str],
    az: str | None,
    force_host: str | None,
    user_data: str | None,
    request_id: str,
) -> list[str]:
    s = ctx.settings
    now = ctx.clock()
    with ctx.db.unit_of_work() as session:
        flavor = get_flavor(session, req.flavor)
        image = get_image(session, req.image)
        _check_image_fits(image, flavor.memory_mb, flavor.root_gb)
        key: KeyPair | None = (
            get_keypair(session, s.user_id, req.key_name) if req.key_name else None
        )
        if force_host is not None:
            hosts.get_host(session, force_host)
        taken = session.scalars(
            select(Instance.name).where(
                Instance.project_id == s.project_id,
                Instance.deleted == 0,
                Instance.name.in_(list(names)),
            )
        ).all()
        if taken:
            raise AlreadyExists(kind="instance", name=taken[0])
        _check_quota(session, s, len(names), flavor.vcpus, flavor.memory_mb)
        net = network.ensure_default_network(session, s.network)

        instances: list[Instance] = []
        reservation = f"r-{uuid.uuid4().hex[:8]}"
        for index, name in enumerate(names):
            inst_uuid = str(uuid.uuid4())
            inst = Instance(
                uuid=inst_uuid,
                name=name,
                hostname=name,
                project_id=s.project_id,
                user_id=s.user_id,
                flavor=flavor,
                image=image,
                domain_name=f"instance-{inst_uuid}",
                vcpus=flavor.vcpus,
                memory_mb=flavor.memory_mb,
                root_gb=flavor.root_gb,
                ephemeral_gb=flavor.ephemeral_gb,
                swap_mb=flavor.swap_mb,
                vm_state=VmState.BUILDING,
                task_state=TaskState.SCHEDULING,
                power_state=PowerState.NOSTATE,
                availability_zone=az,
                key_name=key.name if key else None,
                user_data=user_data,
                instance_metadata=dict(req.metadata),
                reservation_id=reservation,
                launch_index=index,
                created_at=now,
            )
            session.add(inst)
            instances.append(inst)
        session.flush()
        acts = {
            i.uuid: actions.start_action(session, i, "create", request_id, now) for i in instances
        }
        for inst in instances:
            actions.start_event(session, acts[inst.uuid], "schedule", now)

        resources = ledger.resources_for(
            flavor.vcpus, flavor.memory_mb, flavor.root_gb, flavor.ephemeral_gb, flavor.swap_mb
        )
        spec = RequestSpec(
            vcpus=resources[ledger.VCPU],
            memory_mb=resources[ledger.MEMORY_MB],
            disk_gb=resources[ledger.DISK_GB],
            availability_zone=az,
            force_host=force_host,
            num_instances=len(instances),
            flavor_name=flavor.name,
            flavor_extra_specs=flavor.specs(),
            image_properties=image.props(),
        )
        rows = {h.name: h for h in hosts.list_hosts(session)}
        states = host_states(session, rows.values(), now, s.service_down_time_s)
        ctx.progress.info(f"scheduling {len(instances)} instance(s) over {len(states)} host(s)")
        selections = make_scheduler(ctx).select(states, spec)
        generations = {h.name: h.generation for h in states}
        for inst, sel in zip(instances, selections, strict=True):
            host = rows[sel.host.name]
            # Claims made earlier in this transaction moved the generation on.
            expected = generations[host.name]
            generations[host.name] = ledger.claim(session, host, inst.uuid, resources, expected)
            inst.host = host
            inst.availability_zone = host.availability_zone
            done = ctx.clock()
            actions.finish_event(session, acts[inst.uuid], "schedule", done, host=host.name)
            inst.task_state = TaskState.NETWORKING
            actions.start_event(session, acts[inst.uuid], "networking", done, host=host.name)
            network.allocate_fixed_ip(session, net, inst.uuid, ctx.rng)
            actions.finish_event(session, acts[inst.uuid], "networking", ctx.clock())
            inst.task_state = TaskState.BLOCK_DEVICE_MAPPING
            actions.start_event(
                session, acts[inst.uuid], "block_device_mapping", ctx.clock(), host.name
            )
            ctx.progress.info(f"{inst.name}: placed on {host.name}")
        return [i.uuid for i in instances]


def _check_image_fits(image: Image, memory_mb: int, root_gb: int) -> None:
    if image.min_ram_mb and memory_mb < image.min_ram_mb:
        raise InvalidInput(
            reason=f"flavor ram {memory_mb} MiB is below the image's min_ram {image.min_ram_mb} MiB"
        )
    if root_gb and image.min_disk_gb and root_gb < image.min_disk_gb:
        raise InvalidInput(
            reason=f"flavor disk {root_gb} GiB is below the image's "
            f"min_disk {image.min_disk_gb} GiB"
        )
    if root_gb and image.virtual_size_bytes > root_gb * 1024**3:
        raise InvalidInput(
            reason=f"flavor disk {root_gb} GiB is smaller than the image "
            f"({image.virtual_size_bytes / 1024**3:.2f} GiB)"
        )


def _check_quota(session: Session, s: Settings, count: int, vcpus: int, memory_mb: int) -> None:
    limits = {"instances": s.quota_instances, "cores": s.quota_cores, "ram": s.quota_ram_mb}
    for row in session.scalars(select(Quota).where(Quota.project_id == s.project_id)):
        limits[row.resource] = row.hard_limit
    used_instances, used_cores, used_ram = session.execute(
        select(
            func.count(Instance.id),
            func.coalesce(func.sum(Instance.vcpus), 0),
            func.coalesce(func.sum(Instance.memory_mb), 0),
        ).where(Instance.project_id == s.project_id, Instance.deleted == 0)
    ).one()
    wanted = {"instances": count, "cores": count * vcpus, "ram": count * memory_mb}
    used = {"instances": used_instances, "cores": used_cores, "ram": used_ram}
    for res, amount in wanted.items():
        limit = limits[res]
        if limit >= 0 and used[res] + amount > limit:
            raise QuotaExceeded(resource=res, requested=amount, used=used[res], limit=limit)


def host_states(
    session: Session, rows: Iterable[Host], now: Any, service_down_time_s: int
) -> list[HostState]:
    """Scheduler views of hosts, usage from the ledger."""
    rows = list(rows)
    usage = ledger.usage_by_host(session, [h.id for h in rows])
    out = []
    for h in rows:
        u = usage.get(h.id, ledger.HostUsage())
        out.append(
            HostState(
                name=h.name,
                uuid=h.uuid,
                availability_zone=h.availability_zone,
                enabled=h.enabled,
                is_up=hosts.is_up(h, now, service_down_time_s),
                disabled_reason=h.disabled_reason,
                vcpus_total=h.vcpus,
                memory_mb_total=h.memory_mb,
                disk_gb_total=h.local_gb,
                cpu_allocation_ratio=h.cpu_allocation_ratio,
                ram_allocation_ratio=h.ram_allocation_ratio,
                disk_allocation_ratio=h.disk_allocation_ratio,
                reserved_cpus=h.reserved_host_cpus,
                reserved_memory_mb=h.reserved_host_memory_mb,
                reserved_disk_gb=h.reserved_host_disk_gb,
                vcpus_used=u.vcpus,
                memory_mb_used=u.memory_mb,
                disk_gb_used=u.disk_gb,
                num_instances=len(u.consumers),
                labels=dict(h.labels or {}),
                generation=h.generation,
            )
        )
    return out


def make_scheduler(ctx: Context) -> FilterScheduler:
    """The filter scheduler configured from settings."""
    sched = ctx.settings.scheduler
    return FilterScheduler(
        load_filters(sched.enabled_filters),
        load_weighers(sched.weighers),
        host_subset_size=sched.host_subset_size,
        max_alternates=max(0, sched.max_attempts - 1),
        rng=ctx.rng,
    )


# --------------------------------------------------------------------------- build on hosts


def _disk_paths(host: Host, inst: Instance) -> dict[str, str]:
    base = f"{host.instances_path}/{inst.uuid}"
    return {
        "root": f"{base}/disk",
        "eph": f"{base}/disk.eph0",
        "swap": f"{base}/disk.swap",
        "config": f"{base}/disk.config",
        "console": f"{base}/console.log",
    }


def domain_spec(session: Session, inst: Instance) -> DomainSpec:
    """The libvirt domain an instance should be, from SQL."""
    host = inst.host
    if host is None:
        raise InvalidState(action="render", name=inst.name, vm_state=inst.vm_state, task_state=None)
    paths = _disk_paths(host, inst)
    disks = [DiskSpec(path=paths["root"], target="vda", format="qcow2", serial=inst.uuid[:20])]
    letters = iter("bcdefgh")
    if inst.ephemeral_gb:
        disks.append(DiskSpec(path=paths["eph"], target=f"vd{next(letters)}", format="qcow2"))
    if inst.swap_mb:
        disks.append(DiskSpec(path=paths["swap"], target=f"vd{next(letters)}", format="qcow2"))
    disks.append(
        DiskSpec(path=paths["config"], target=f"vd{next(letters)}", format="raw", readonly=True)
    )
    nics = tuple(
        NicSpec(
            mac=ip.mac or "", kind="bridge", source=host.bridge or ip.network.bridge, ip=ip.address
        )
        for ip in network.fixed_ips_of(session, inst.uuid)
    )
    image = inst.image
    base = f"{host.instances_path}/_base"
    return DomainSpec(
        name=inst.domain_name,
        uuid=inst.uuid,
        hostname=inst.hostname,
        memory_mb=inst.memory_mb,
        vcpus=inst.vcpus,
        virt_type="qemu" if host.virt_type == "qemu" else "kvm",
        cpu_mode=host.cpu_mode,  # type: ignore[arg-type]
        cpu_model=host.cpu_model if host.cpu_mode == "custom" else None,
        disks=tuple(disks),
        nics=nics,
        console_log=paths["console"],
        kernel=f"{base}/{image.kernel_checksum}" if image and image.kernel_checksum else None,
        initrd=f"{base}/{image.initrd_checksum}" if image and image.initrd_checksum else None,
        cmdline=image.cmdline if image and image.kernel_checksum else None,
        metadata={
            "name": inst.name,
            "project": inst.project_id,
            "user": inst.user_id,
            "flavor": inst.flavor.name,
            "image": image.name if image else "",
            "created_at": inst.created_at.isoformat(),
        },
    )


def config_drive_files(session: Session, inst: Instance) -> dict[str, str]:
    """NoCloud files for an instance: identity, keys, user data and its fixed IPs."""
    keys: tuple[str, ...] = ()
    if inst.key_name:
        kp = session.scalars(
            select(KeyPair).where(KeyPair.user_id == inst.user_id, KeyPair.name == inst.key_name)
        ).first()
        keys = (kp.public_key,) if kp else ()
    nics = []
    for ip in network.fixed_ips_of(session, inst.uuid):
        subnet = ipaddress.ip_network(ip.network.cidr)
        nics.append(
            NetworkConfigNic(
                mac=ip.mac or "",
                ip=ip.address,
                prefix=subnet.prefixlen,
                gateway=ip.network.gateway,
                dns=tuple(ip.network.dns or ()),
            )
        )
    return render_config_drive(
        ConfigDriveSpec(
            uuid=inst.uuid,
            hostname=inst.hostname,
            user_data=inst.user_data,
            public_keys=keys,
            network=tuple(nics),
            metadata={str(k): str(v) for k, v in (inst.instance_metadata or {}).items()},
        )
    )


def build_instances(ctx: Context, uuids: Sequence[str], request_id: str) -> None:
    """Spawn claimed instances on their hosts, one play for all, and record the outcome."""
    per_host: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"disks": [], "drives": [], "domains": [], "base": []}
    )
    targets = {}
    names: dict[str, str] = {}
    with ctx.db.unit_of_work() as session:
        for u in uuids:
            inst = _by_uuid(session, u)
            host = inst.host
            assert host is not None
            names[u] = inst.name
            targets[host.name] = hosts.host_target(host)
            bucket = per_host[host.name]
            image = inst.image
            assert image is not None
            for src, checksum in (
                (image.path, image.checksum),
                (image.kernel_path, image.kernel_checksum),
                (image.initrd_path, image.initrd_checksum),
            ):
                entry = {"src": src, "checksum": checksum}
                if src and checksum and entry not in bucket["base"]:
                    bucket["base"].append(entry)
            bucket["disks"].append(
                {
                    "uuid": inst.uuid,
                    "image": {"checksum": image.checksum, "format": image.disk_format}
                    if image.checksum
                    else None,
                    "root_gb": inst.root_gb,
                    "ephemeral_gb": inst.ephemeral_gb,
                    "swap_mb": inst.swap_mb,
                }
            )
            bucket["drives"].append({"uuid": inst.uuid, "files": config_drive_files(session, inst)})
            bucket["domains"].append(
                {
                    "name": inst.domain_name,
                    "xml": render_domain_xml(domain_spec(session, inst)),
                    "state": "running",
                }
            )
    extravars = {
        "cloudctl_base_files": {h: b["base"] for h, b in per_host.items()},
        "cloudctl_disks": {h: b["disks"] for h, b in per_host.items()},
        "cloudctl_config_drives": {h: b["drives"] for h, b in per_host.items()},
        "cloudctl_domains": {h: b["domains"] for h, b in per_host.items()},
    }
    ctx.progress.info(f"spawning {len(uuids)} instance(s) on {len(targets)} host(s)")

    def on_event(event: RunEvent) -> None:
        ctx.progress.run_event(event)
        if event.kind == "task_start" and event.task == "spawn":
            _mark_spawning(ctx, uuids, request_id)

    try:
        result = ctx.executor.run(
            RunRequest(
                playbook="spawn.yml",
                hosts=tuple(targets.values()),
                extravars=extravars,
                description=f"spawn {', '.join(names.values())}",
            ),
            on_event,
        )
    except CloudctlError as exc:
        _fail_build(ctx, uuids, request_id, str(exc), None)
        raise
    failed_hosts = result.failed_hosts()
    good = [u for u in uuids if _host_of(ctx, u) not in failed_hosts]
    bad = [u for u in uuids if u not in good]
    _finish_build(ctx, good, request_id, result)
    hosts.touch_hosts(ctx, set(targets) - failed_hosts)
    if bad:
        reason = _failure_reason(result)
        _fail_build(ctx, bad, request_id, reason, result)
        raise OperationFailed(action="build", name=", ".join(names[u] for u in bad), reason=reason)


def _by_uuid(session: Session, inst_uuid: str) -> Instance:
    inst = session.scalars(select(Instance).where(Instance.uuid == inst_uuid)).first()
    if inst is None:
        raise NotFound(kind="instance", name=inst_uuid)
    return inst


def _host_of(ctx: Context, inst_uuid: str) -> str | None:
    with ctx.db.unit_of_work() as session:
        host = _by_uuid(session, inst_uuid).host
        return host.name if host else None


def _mark_spawning(ctx: Context, uuids: Sequence[str], request_id: str) -> None:
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = _by_uuid(session, u)
            if inst.task_state == TaskState.BLOCK_DEVICE_MAPPING:
                act = actions.current_action(session, u, request_id)
                host = inst.host.name if inst.host else None
                actions.finish_event(session, act, "block_device_mapping", now, host=host)
                inst.task_state = TaskState.SPAWNING
                actions.start_event(session, act, "spawn", now, host)


def _domain_states(result: RunResult, task: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for t in result.tasks:
        if t.task == task:
            for item in t.result.get("results", []) or []:
                if isinstance(item, Mapping) and "name" in item:
                    states[str(item["name"])] = str(item.get("state", "nostate"))
    return states


def _finish_build(ctx: Context, uuids: Sequence[str], request_id: str, result: RunResult) -> None:
    states = _domain_states(result, "spawn")
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = _by_uuid(session, u)
            act = actions.current_action(session, u, request_id)
            host = inst.host.name if inst.host else None
            actions.finish_event(session, act, "block_device_mapping", now, host=host)
            actions.finish_event(session, act, "spawn", now, host=host)
            actions.finish_action(act, now)
            inst.vm_state = VmState.ACTIVE
            inst.task_state = None
            inst.power_state = PowerState.from_libvirt(states.get(inst.domain_name, "nostate"))
            inst.launched_at = now


def _failure_reason(result: RunResult) -> str:
    failed = result.failed()
    if not failed:
        return f"{result.playbook} failed (rc {result.rc})"
    t = failed[0]
    return f"task {t.task!r} on {t.host}: {t.message or 'failed'}".splitlines()[0][:400]


def _fail_build(
    ctx: Context, uuids: Sequence[str], request_id: str, reason: str, result: RunResult | None
) -> None:
    cleanup_note = ""
    try:
        cleanup = _destroy_on_hosts(ctx, uuids)
        if not cleanup.ok:
            cleanup_note = f"\ncleanup failed: {_failure_reason(cleanup)}"
    except CloudctlError as exc:
        cleanup_note = f"\ncleanup failed: {exc}"
    details = reason + cleanup_note
    if result is not None and result.stdout_tail:
        details += "\n--- ansible output ---\n" + result.stdout_tail
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = _by_uuid(session, u)
            host = inst.host.name if inst.host else None
            act = actions.current_action(session, u, request_id)
            event = "spawn" if inst.task_state == TaskState.SPAWNING else "block_device_mapping"
            actions.finish_event(session, act, event, now, actions.ERROR, details, host)
            actions.finish_action(act, now, message="Error")
            actions.add_fault(session, inst, f"Build failed: {reason}", details, now, host)
            ledger.release(session, u)
            network.release_fixed_ips(session, u)
            inst.vm_state = VmState.ERROR
            inst.task_state = None
            inst.power_state = PowerState.NOSTATE


def _destroy_on_hosts(ctx: Context, uuids: Sequence[str]) -> RunResult:
    """Remove domains and files of instances from their hosts (missing ones are fine)."""
    domains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    files: dict[str, list[dict[str, Any]]] = defaultdict(list)
    targets = {}
    with ctx.db.unit_of_work() as session:
        for u in uuids:
            inst = _by_uuid(session, u)
            if inst.host is None:
                continue
            targets[inst.host.name] = hosts.host_target(inst.host)
            domains[inst.host.name].append({"name": inst.domain_name, "state": "absent"})
            files[inst.host.name].append({"uuid": inst.uuid})
    if not targets:
        return RunResult(playbook="destroy.yml", ok=True, rc=0, tasks=(), duration_s=0.0)
    return ctx.executor.run(
        RunRequest(
            playbook="destroy.yml",
            hosts=tuple(targets.values()),
            extravars={"cloudctl_domains": dict(domains), "cloudctl_disks": dict(files)},
            description="destroy instances",
        ),
        ctx.progress.run_event,
    )


# --------------------------------------------------------------------------- delete


def delete(ctx: Context, names: Sequence[str]) -> list[dict[str, Any]]:
    """Delete instances: domain, disks, config drive, console log, IP and allocation."""
    request_id = actions.new_request_id()
    uuids: list[str] = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        found = [get_instance(session, ctx.settings.project_id, n) for n in names]
        for inst in found:
            _check_state(ctx, inst, "delete", vm_states=None)
        for inst in found:
            inst.task_state = TaskState.DELETING
            act = actions.start_action(session, inst, "delete", request_id, now)
            actions.start_event(
                session, act, "terminate", now, inst.host.name if inst.host else None
            )
            uuids.append(inst.uuid)
    ctx.progress.info(f"deleting {len(uuids)} instance(s)")
    try:
        result = _destroy_on_hosts(ctx, uuids)
    except CloudctlError as exc:
        _fail_action(ctx, uuids, request_id, "terminate", str(exc), None)
        raise
    failed_hosts = result.failed_hosts()
    views = []
    bad = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = _by_uuid(session, u)
            if inst.host is not None and inst.host.name in failed_hosts:
                bad.append(u)
                continue
            act = actions.current_action(session, u, request_id)
            actions.finish_event(session, act, "terminate", now)
            actions.finish_action(act, now)
            ledger.release(session, u)
            network.release_fixed_ips(session, u)
            inst.vm_state = VmState.DELETED
            inst.task_state = None
            inst.power_state = PowerState.NOSTATE
            inst.terminated_at = now
            inst.deleted_at = now
            inst.deleted = inst.id
            session.flush()
            views.append(instance_view(session, inst))
    if bad:
        reason = _failure_reason(result)
        _fail_action(ctx, bad, request_id, "terminate", reason, result)
        raise OperationFailed(action="delete", name=", ".join(bad), reason=reason)
    return views


def _fail_action(
    ctx: Context,
    uuids: Sequence[str],
    request_id: str,
    event: str,
    reason: str,
    result: RunResult | None,
    *,
    to_error: bool = True,
) -> None:
    details = reason + ("\n--- ansible output ---\n" + result.stdout_tail if result else "")
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = _by_uuid(session, u)
            host = inst.host.name if inst.host else None
            act = actions.current_action(session, u, request_id)
            actions.finish_event(session, act, event, now, actions.ERROR, details, host)
            actions.finish_action(act, now, message="Error")
            actions.add_fault(session, inst, f"{act.action} failed: {reason}", details, now, host)
            inst.task_state = None
            if to_error:
                inst.vm_state = VmState.ERROR


def _check_state(
    ctx: Context, inst: Instance, action: str, vm_states: Sequence[str] | None
) -> None:
    """Nova's check_instance_state: refuse actions the instance's state does not allow."""
    stale = inst.updated_at is not None and ctx.clock() - inst.updated_at > timedelta(
        seconds=ctx.settings.spawn_timeout_s
    )
    if (inst.task_state is not None and not stale) or (
        vm_states is not None and inst.vm_state not in vm_states
    ):
        raise InvalidState(
            action=action, name=inst.name, vm_state=inst.vm_state, task_state=inst.task_state
        )


# --------------------------------------------------------------------------- power

_POWER = {
    # action: (allowed vm_states, task_state, [domain states in order], vm_state after)
    "start": ((VmState.STOPPED,), TaskState.POWERING_ON, ["running"], VmState.ACTIVE),
    "stop": (
        (VmState.ACTIVE, VmState.ERROR),
        TaskState.POWERING_OFF,
        ["shutdown"],
        VmState.STOPPED,
    ),
    "reboot": ((VmState.ACTIVE,), TaskState.REBOOTING, ["shutdown", "running"], VmState.ACTIVE),
    "reboot_hard": (
        (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR),
        TaskState.REBOOTING_HARD,
        ["destroyed", "running"],
        VmState.ACTIVE,
    ),
}


def power(ctx: Context, names: Sequence[str], action: str) -> list[dict[str, Any]]:
    """start / stop / reboot / reboot_hard, one play for all the named instances."""
    allowed, task_state, steps, after = _POWER[action]
    request_id = actions.new_request_id()
    uuids: list[str] = []
    per_host: dict[str, list[list[dict[str, Any]]]] = defaultdict(lambda: [[] for _ in steps])
    targets = {}
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        found = [get_instance(session, ctx.settings.project_id, n) for n in names]
        for inst in found:
            _check_state(ctx, inst, action.replace("_", " "), allowed)
            if inst.host is None:
                raise InvalidState(
                    action=action, name=inst.name, vm_state=inst.vm_state, task_state=None
                )
        for inst in found:
            assert inst.host is not None
            xml = render_domain_xml(domain_spec(session, inst))
            for i, state in enumerate(steps):
                per_host[inst.host.name][i].append(
                    {"name": inst.domain_name, "xml": xml, "state": state}
                )
            targets[inst.host.name] = hosts.host_target(inst.host)
            inst.task_state = task_state
            act = actions.start_action(session, inst, action.split("_")[0], request_id, now)
            actions.start_event(session, act, action, now, inst.host.name)
            uuids.append(inst.uuid)
    extravars = {
        "cloudctl_domains": {h: steps_[0] for h, steps_ in per_host.items()},
        "cloudctl_domains_after": {
            h: steps_[1] if len(steps_) > 1 else [] for h, steps_ in per_host.items()
        },
        "cloudctl_stop_timeout": ctx.settings.stop_timeout_s,
    }
    try:
        result = ctx.executor.run(
            RunRequest(
                playbook="power.yml",
                hosts=tuple(targets.values()),
                extravars=extravars,
                description=action,
            ),
            ctx.progress.run_event,
        )
    except CloudctlError as exc:
        _fail_action(ctx, uuids, request_id, action, str(exc), None, to_error=False)
        raise
    states = _domain_states(result, "power")
    states.update(_domain_states(result, "power again"))
    failed_hosts = result.failed_hosts()
    bad = []
    views = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = _by_uuid(session, u)
            assert inst.host is not None
            if inst.host.name in failed_hosts:
                bad.append(u)
                continue
            act = actions.current_action(session, u, request_id)
            actions.finish_event(session, act, action, now)
            actions.finish_action(act, now)
            inst.task_state = None
            inst.vm_state = after
            inst.power_state = PowerState.from_libvirt(states.get(inst.domain_name, "nostate"))
            session.flush()
            views.append(instance_view(session, inst))
    hosts.touch_hosts(ctx, set(targets) - failed_hosts)
    if bad:
        reason = _failure_reason(result)
        _fail_action(ctx, bad, request_id, action, reason, result, to_error=False)
        raise OperationFailed(action=action, name=", ".join(bad), reason=reason)
    return views


# --------------------------------------------------------------------------- console


def console(
    ctx: Context, name: str, *, wait_for: str | None = None, timeout_s: int = 0
) -> dict[str, Any]:
    """The serial console log of an instance (optionally waiting for a regex to appear)."""
    with ctx.db.unit_of_work() as session:
        inst = get_instance(session, ctx.settings.project_id, name)
        if inst.host is None:
            raise InvalidState(
                action="read the console of",
                name=inst.name,
                vm_state=inst.vm_state,
                task_state=inst.task_state,
            )
        target = hosts.host_target(inst.host)
        guest: dict[str, Any] = {"uuid": inst.uuid}
        if wait_for:
            guest["pattern"] = wait_for
    result = ctx.executor.run(
        RunRequest(
            playbook="console.yml",
            hosts=(target,),
            extravars={
                "cloudctl_consoles": {target.name: [guest]},
                "cloudctl_console_timeout": timeout_s,
            },
            description=f"console {name}",
        ),
        ctx.progress.run_event,
    )
    data = result.result("console", target.name) or {}
    items = list(data.get("results") or [])
    item: Mapping[str, Any] = items[0] if items else {}
    out = {
        "name": name,
        "found": bool(item.get("found")),
        "match": item.get("match"),
        "log": str(item.get("log") or ""),
    }
    if not result.ok:
        raise OperationFailed(action="console", name=name, reason=_failure_reason(result))
    return out


# --------------------------------------------------------------------------- views


def list_instances(ctx: Context, *, include_deleted: bool = False) -> list[dict[str, Any]]:
    """The project's instances."""
    with ctx.db.unit_of_work() as session:
        stmt = select(Instance).where(Instance.project_id == ctx.settings.project_id)
        if not include_deleted:
            stmt = stmt.where(Instance.deleted == 0)
        rows = session.scalars(stmt.order_by(Instance.created_at, Instance.launch_index))
        return [instance_view(session, i) for i in rows]


def show_instance(ctx: Context, name_or_uuid: str) -> dict[str, Any]:
    """One instance, with its latest fault when in ERROR."""
    with ctx.db.unit_of_work() as session:
        if validation.is_uuid(name_or_uuid):
            inst = _by_uuid(session, name_or_uuid)
        else:
            inst = get_instance(session, ctx.settings.project_id, name_or_uuid)
        return instance_view(session, inst, detail=True)


def instance_view(session: Session, inst: Instance, *, detail: bool = False) -> dict[str, Any]:
    """An instance as the CLI shows it (JSON-friendly)."""
    view: dict[str, Any] = {
        "name": inst.name,
        "uuid": inst.uuid,
        "status": display_status(inst.vm_state, inst.task_state),
        "vm_state": inst.vm_state,
        "task_state": inst.task_state,
        "power_state": PowerState(inst.power_state).name,
        "host": inst.host.name if inst.host else None,
        "availability_zone": inst.availability_zone,
        "domain": inst.domain_name,
        "flavor": inst.flavor.name,
        "image": inst.image.name if inst.image else None,
        "addresses": [
            {"network": ip.network.name, "address": ip.address, "mac": ip.mac}
            for ip in network.fixed_ips_of(session, inst.uuid)
        ],
        "key_name": inst.key_name,
        "created_at": inst.created_at.isoformat(),
        "launched_at": inst.launched_at.isoformat() if inst.launched_at else None,
        "terminated_at": inst.terminated_at.isoformat() if inst.terminated_at else None,
    }
    if detail:
        view["vcpus"] = inst.vcpus
        view["ram"] = inst.memory_mb
        view["disk"] = inst.root_gb
        view["metadata"] = inst.instance_metadata
        view["project_id"] = inst.project_id
        view["user_id"] = inst.user_id
        view["locked"] = inst.locked
        view["allocations"] = {
            str(k): v for k, v in ledger.allocations_of(session, inst.uuid).items()
        }
        fault = session.scalars(
            select(InstanceFault)
            .where(InstanceFault.instance_uuid == inst.uuid)
            .order_by(InstanceFault.id.desc())
        ).first()
        if fault is not None and inst.vm_state == VmState.ERROR:
            view["fault"] = {
                "message": fault.message,
                "code": fault.code,
                "details": fault.details,
                "created": fault.created_at.isoformat(),
            }
    return view


def action_list(ctx: Context, name: str) -> list[dict[str, Any]]:
    """An instance's action history with events (deleted instances included)."""
    with ctx.db.unit_of_work() as session:
        column = Instance.uuid if validation.is_uuid(name) else Instance.name
        inst = session.scalars(
            select(Instance)
            .where(column == name, Instance.project_id == ctx.settings.project_id)
            .order_by(Instance.deleted, Instance.id.desc())
        ).first()
        if inst is None:
            raise NotFound(kind="instance", name=name)
        rows = session.scalars(
            select(InstanceAction)
            .where(InstanceAction.instance_uuid == inst.uuid)
            .order_by(InstanceAction.id)
        )
        return [
            {
                "action": a.action,
                "request_id": a.request_id,
                "start_time": a.start_time.isoformat(),
                "finish_time": a.finish_time.isoformat() if a.finish_time else None,
                "message": a.message,
                "events": [
                    {
                        "event": e.event,
                        "result": e.result,
                        "host": e.host,
                        "start_time": e.start_time.isoformat(),
                        "finish_time": e.finish_time.isoformat() if e.finish_time else None,
                        "details": e.details,
                    }
                    for e in a.events
                ],
            }
            for a in rows
        ]


# --------------------------------------------------------------------------- background


def launch_worker(settings: Settings, args: Sequence[str]) -> None:
    """Run ``cloudctl <args>`` detached (``--no-wait``): it outlives this command."""
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "worker.log").open("ab")
    subprocess.Popen(
        [sys.executable, "-m", "cloudctl", "--db", settings.db_url, *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        cwd=str(Path.home()),
    )
    log.close()
