"""Boot, in Nova's order: validate, create the instance (BUILDING), schedule and claim in one
transaction, then NETWORKING, BLOCK_DEVICE_MAPPING and SPAWNING on the host through Ansible, and
ACTIVE with the power state read back from libvirt. Each step is an instance action event; a
failure leaves the instance in ERROR with a fault, its claim and IP released and the host clean.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import Flavor, Host, Image, Instance, KeyPair, ServerGroupMember
from cloudctl.domain import validation
from cloudctl.domain.states import PowerState, TaskState, VmState
from cloudctl.errors import (
    AlreadyExists,
    ClaimConflict,
    CloudctlError,
    InvalidInput,
    NoValidHost,
    OperationFailed,
)
from cloudctl.executor.base import RunEvent, RunRequest, RunResult
from cloudctl.executor.events import guest_labels, rename_guests
from cloudctl.render import render_domain_xml
from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler
from cloudctl.scheduler.registry import (
    DEFAULT_FILTERS,
    DEFAULT_WEIGHERS,
    load_filters,
    load_weighers,
)
from cloudctl.services import actions, hosts, images, leases, network, quotas, server_groups
from cloudctl.services.compute import tasks
from cloudctl.services.compute.common import (
    base_files,
    by_uuid,
    config_drive_files,
    destroy_on_hosts,
    domain_spec,
    domain_states,
    failure_reason,
    get_instance,
    host_of,
    launch_worker,
)
from cloudctl.services.compute.views import show_instance
from cloudctl.services.context import Context
from cloudctl.services.flavors import get_flavor
from cloudctl.services.images import get_image
from cloudctl.services.keypairs import get_keypair

#: Compare-and-swap conflicts retried (with jitter) before a boot gives up.
CLAIM_RETRIES = 10


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
    group: str | None = None
    #: With ``count``: place at least this many or none (Nova's min_count); None = all or none.
    min_count: int | None = None
    #: Scheduler hints: same_host / different_host = instance names or UUIDs (comma-separated).
    hints: Mapping[str, str] = field(default_factory=dict)


HINTS = validation.SCHEDULER_HINTS


def _hint_hosts(
    session: Session, project_id: str, hints: Mapping[str, str]
) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for key, value in hints.items():
        if key not in HINTS:
            raise InvalidInput(reason=f"unknown scheduler hint {key!r}; known: {', '.join(HINTS)}")
        found = set()
        for ref in filter(None, (v.strip() for v in value.split(","))):
            inst = get_instance(session, project_id, ref)
            if inst.host is not None:
                found.add(inst.host.name)
        out[key] = frozenset(found)
    return out


def instance_names(req: BootRequest) -> list[str]:
    """``name`` for one instance, ``name-1 .. name-N`` for ``--count N`` (Nova's template)."""
    if req.count < 1:
        raise InvalidInput(reason=f"count must be >= 1, got {req.count}")
    if req.min_count is not None and not 1 <= req.min_count <= req.count:
        raise InvalidInput(reason=f"min count must be 1..{req.count}, got {req.min_count}")
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


def boot(ctx: Context, req: BootRequest, *, wait: bool = True) -> list[dict[str, Any]]:
    """Validate, create, schedule and claim; then build (inline, or in a detached worker)."""
    request_id = actions.new_request_id()
    hosts.refresh_stale(ctx)
    what = f"boot {req.name}" + (f" --count {req.count}" if req.count > 1 else "")
    with leases.command_lease(ctx, what, request_id=request_id) as lease:
        uuids = create_and_claim(ctx, req, request_id)
        if wait:
            build_instances(ctx, uuids, request_id)
        else:
            launch_worker(ctx.settings, ["_build", request_id, *uuids, "--lease", lease.uuid])
            lease.handed_off = True
    return [show_instance(ctx, u) for u in uuids]


def build_in_worker(
    ctx: Context, request_id: str, uuids: Sequence[str], lease_uuid: str | None
) -> None:
    """The ``boot --no-wait`` worker: carry on the parent's lease and build."""
    if lease_uuid is None:
        with leases.command_lease(ctx, "boot (worker)", request_id=request_id):
            build_instances(ctx, uuids, request_id)
        return
    with leases.carry_on(ctx, lease_uuid, "boot (worker)"):
        build_instances(ctx, uuids, request_id)


def create_and_claim(ctx: Context, req: BootRequest, request_id: str) -> list[str]:
    """Validate, create the instances (BUILDING) and claim their hosts; nothing spawned yet.

    ``apply`` creates many requests this way under one ``request_id`` and builds them all in
    one play with :func:`build_instances`. Compare-and-swap conflicts are retried. The
    instances are created in a task owned by the command's lease (``ctx.lease``).
    """
    if ctx.lease is None:
        raise AssertionError("create_and_claim runs under a command lease")
    names = instance_names(req)
    az, force_host = parse_az(req.availability_zone)
    user_data = validation.user_data(req.user_data) if req.user_data is not None else None
    for attempt in range(1, CLAIM_RETRIES + 1):
        try:
            return _create_and_claim(ctx, req, names, az, force_host, user_data, request_id)
        except ledger.GenerationConflict as exc:
            if attempt == CLAIM_RETRIES:
                raise ClaimConflict(host=exc.host, attempts=attempt) from exc
            ctx.progress.info(f"ledger changed on {exc.host}, scheduling again")
            time.sleep(ctx.rng.uniform(0.01, 0.05 * attempt))
    raise AssertionError("unreachable")


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
        images.require_image_files(image)
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
        quotas.check(session, s, len(names), flavor.vcpus, flavor.memory_mb)
        group = server_groups.get_group(session, s.project_id, req.group) if req.group else None
        _hint_hosts(session, s.project_id, req.hints)  # refuse unknown hints before writing
        net = network.ensure_default_network(session, s.network)
        request_spec = {
            "availability_zone": az,
            "force_host": force_host,
            "group": group.uuid if group else None,
            "hints": dict(req.hints),
        }

        spec = build_request_spec(
            session,
            s.project_id,
            flavor,
            image,
            availability_zone=az,
            force_host=force_host,
            group=group.uuid if group else None,
            hints=req.hints,
            count=len(names),
        )
        rows = {h.name: h for h in hosts.list_hosts(session)}
        states = host_states(session, rows.values(), now, s.service_down_time_s)
        ctx.progress.info(f"scheduling {len(names)} instance(s) over {len(states)} host(s)")
        selections = make_scheduler(ctx).select(states, spec, min_count=req.min_count)
        if len(selections) < len(names):
            ctx.progress.info(
                f"placed {len(selections)} of {len(names)} (--min-count {req.min_count})"
            )
            names = names[: len(selections)]
        resources = ledger.resources_for(
            flavor.vcpus, flavor.memory_mb, flavor.root_gb, flavor.ephemeral_gb, flavor.swap_mb
        )
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
                task_owner=ctx.lease.uuid if ctx.lease else None,
                power_state=PowerState.NOSTATE,
                availability_zone=az,
                key_name=key.name if key else None,
                user_data=user_data,
                instance_metadata=dict(req.metadata),
                reservation_id=reservation,
                launch_index=index,
                request_spec=request_spec,
                created_at=now,
            )
            session.add(inst)
            instances.append(inst)
            if group is not None:
                group.members.append(ServerGroupMember(instance_uuid=inst_uuid, created_at=now))
        session.flush()
        acts = {
            i.uuid: actions.start_action(session, i, "create", request_id, now) for i in instances
        }
        for inst in instances:
            actions.start_event(session, acts[inst.uuid], "schedule", now)
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


def build_request_spec(
    session: Session,
    project_id: str,
    flavor: Flavor,
    image: Image | None,
    *,
    availability_zone: str | None = None,
    force_host: str | None = None,
    group: str | None = None,
    hints: Mapping[str, str] | None = None,
    count: int = 1,
    ignore_hosts: frozenset[str] = frozenset(),
) -> RequestSpec:
    """The scheduler's view of a request (boot, reschedule, explain and capacity share it)."""
    resources = ledger.resources_for(
        flavor.vcpus, flavor.memory_mb, flavor.root_gb, flavor.ephemeral_gb, flavor.swap_mb
    )
    group_state = None
    if group:
        group_state = server_groups.group_state(
            session, server_groups.get_group(session, project_id, group)
        )
    hinted = _hint_hosts(session, project_id, hints or {})
    return RequestSpec(
        vcpus=resources[ledger.VCPU],
        memory_mb=resources[ledger.MEMORY_MB],
        disk_gb=resources[ledger.DISK_GB],
        availability_zone=availability_zone,
        force_host=force_host,
        num_instances=count,
        flavor_name=flavor.name,
        flavor_extra_specs=flavor.specs(),
        image_properties=image.props() if image else {},
        ignore_hosts=ignore_hosts,
        group=group_state,
        same_host=hinted.get("same_host", frozenset()),
        different_host=hinted.get("different_host", frozenset()),
    )


def request_spec_for(
    session: Session, inst: Instance, count: int, ignore_hosts: frozenset[str] = frozenset()
) -> RequestSpec:
    """An instance's request, from its stored request spec (its own flavor copy for sizes)."""
    rs = inst.request_spec or {}
    spec = build_request_spec(
        session,
        inst.project_id,
        inst.flavor,
        inst.image,
        availability_zone=rs.get("availability_zone"),
        force_host=rs.get("force_host"),
        group=rs.get("group"),
        hints=rs.get("hints") or {},
        count=count,
        ignore_hosts=ignore_hosts,
    )
    resources = ledger.resources_for(
        inst.vcpus, inst.memory_mb, inst.root_gb, inst.ephemeral_gb, inst.swap_mb
    )
    return replace(
        spec,
        vcpus=resources[ledger.VCPU],
        memory_mb=resources[ledger.MEMORY_MB],
        disk_gb=resources[ledger.DISK_GB],
    )


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


def host_states(
    session: Session, rows: Iterable[Host], now: Any, service_down_time_s: int
) -> list[HostState]:
    """Scheduler views of hosts, usage from the ledger."""
    rows = list(rows)
    usage = ledger.usage_by_host(session, [h.id for h in rows])
    building = dict(
        session.execute(
            select(Instance.host_id, func.count(Instance.id))
            .where(Instance.deleted == 0, Instance.vm_state == VmState.BUILDING)
            .group_by(Instance.host_id)
        ).all()
    )
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
                hypervisor_type=h.hypervisor_type,
                hypervisor_version=h.hypervisor_version,
                virt_types=frozenset((h.cpu_info or {}).get("virt_types") or ()),
                cpu_arch=(h.cpu_info or {}).get("arch"),
                cpu_model=(h.cpu_info or {}).get("model"),
                cpu_features=frozenset((h.cpu_info or {}).get("features") or ()),
                num_io_ops=int(building.get(h.id, 0)),
                failed_builds=h.failed_builds,
            )
        )
    return out


def make_scheduler(ctx: Context) -> FilterScheduler:
    """The filter scheduler configured from settings."""
    sched = ctx.settings.scheduler
    return FilterScheduler(
        load_filters(sched.enabled_filters or DEFAULT_FILTERS, sched),
        load_weighers(DEFAULT_WEIGHERS if sched.weighers is None else sched.weighers, sched),
        host_subset_size=sched.host_subset_size,
        max_alternates=max(0, sched.max_attempts - 1),
        rng=ctx.rng,
    )


def build_instances(ctx: Context, uuids: Sequence[str], request_id: str) -> None:
    """Spawn claimed instances, one play for all; reschedule failures onto other hosts.

    A spawn failure cleans the host, releases the claim, counts a build failure against the host
    and places the instance again without the hosts it already failed on, up to
    ``max_attempts``; when attempts run out the instance goes to ERROR with a fault that lists
    every attempt.
    """
    attempts: dict[str, list[str]] = {u: [] for u in uuids}
    names: dict[str, str] = {}
    pending = list(uuids)
    lost: list[str] = []
    last_reason = ""
    while pending:
        result, bad, reason = _spawn(ctx, pending, request_id, names)
        if not bad:
            break
        last_reason = reason
        cleanup_note = _clean_hosts(ctx, bad)
        retry: list[str] = []
        for u in bad:
            host = _record_attempt(ctx, u, request_id, reason + cleanup_note, result)
            attempts[u].append(f"{host}: {reason}")
            if len(attempts[u]) < max(1, ctx.settings.scheduler.max_attempts) and _reschedule(
                ctx, u, request_id, attempts[u]
            ):
                retry.append(u)
            else:
                lost.append(u)
        pending = retry
    if lost:
        for u in lost:
            _fail_build(ctx, [u], request_id, "; ".join(attempts[u]), None, cleaned=True)
        raise OperationFailed(
            action="build", name=", ".join(names[u] for u in lost), reason=last_reason
        )


def _spawn(
    ctx: Context, uuids: Sequence[str], request_id: str, names: dict[str, str]
) -> tuple[RunResult | None, list[str], str]:
    """One spawn play for ``uuids``; returns the run, the instances that failed and why."""
    per_host: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"disks": [], "drives": [], "domains": [], "base": []}
    )
    targets = {}
    with ctx.db.unit_of_work() as session:
        for u in uuids:
            inst = by_uuid(session, u)
            host = inst.host
            assert host is not None
            names[u] = inst.name
            targets[host.name] = hosts.host_target(host)
            bucket = per_host[host.name]
            image = inst.image
            assert image is not None
            for entry in base_files(image):
                if entry not in bucket["base"]:
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
        ctx.progress.run_event(rename_guests(event, guest_labels(names)))
        if event.kind == "task_start" and event.task == "spawn":
            _mark_spawning(ctx, uuids, request_id)

    try:
        result = ctx.executor.run(
            RunRequest(
                playbook="spawn.yml",
                hosts=tuple(targets.values()),
                extravars=extravars,
                description=f"spawn {', '.join(names[u] for u in uuids)}",
            ),
            on_event,
        )
    except CloudctlError as exc:
        return None, list(uuids), str(exc)
    failed_hosts = result.failed_hosts()
    good = [u for u in uuids if host_of(ctx, u) not in failed_hosts]
    bad = [u for u in uuids if u not in good]
    _finish_build(ctx, good, request_id, result)
    hosts.touch_hosts(ctx, set(targets) - failed_hosts)
    return result, bad, failure_reason(result) if bad else ""


def _clean_hosts(ctx: Context, uuids: Sequence[str]) -> str:
    """Remove what a failed spawn left on its host; a note when even that failed."""
    try:
        cleanup = destroy_on_hosts(ctx, uuids)
    except CloudctlError as exc:
        return f"\ncleanup failed: {exc}"
    return "" if cleanup.ok else f"\ncleanup failed: {failure_reason(cleanup)}"


def _record_attempt(
    ctx: Context, inst_uuid: str, request_id: str, details: str, result: RunResult | None
) -> str:
    """Close the failed step as an Error event, free the claim, count a failure on the host."""
    if result is not None and result.stdout_tail:
        details += "\n--- ansible output ---\n" + result.stdout_tail
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        inst = by_uuid(session, inst_uuid)
        host = inst.host
        act = actions.current_action(session, inst_uuid, request_id)
        event = "spawn" if inst.task_state == TaskState.SPAWNING else "block_device_mapping"
        actions.finish_event(
            session, act, event, now, actions.ERROR, details, host.name if host else None
        )
        ledger.release(session, inst_uuid)
        if host is not None:
            host.failed_builds += 1
        return host.name if host is not None else "-"


def _reschedule(ctx: Context, inst_uuid: str, request_id: str, tried: list[str]) -> bool:
    """Place a failed instance again, away from the hosts it failed on; False if nowhere."""
    ignore = frozenset(t.split(":", 1)[0] for t in tried)
    for _ in range(CLAIM_RETRIES):
        try:
            with ctx.db.unit_of_work() as session:
                now = ctx.clock()
                inst = by_uuid(session, inst_uuid)
                act = actions.current_action(session, inst_uuid, request_id)
                inst.host = None
                session.flush()
                spec = request_spec_for(session, inst, 1, ignore)
                rows = {h.name: h for h in hosts.list_hosts(session)}
                states = host_states(session, rows.values(), now, ctx.settings.service_down_time_s)
                actions.start_event(session, act, "reschedule", now)
                [sel] = make_scheduler(ctx).select(states, spec, 1)
                host = rows[sel.host.name]
                resources = ledger.resources_for(
                    inst.vcpus, inst.memory_mb, inst.root_gb, inst.ephemeral_gb, inst.swap_mb
                )
                ledger.claim(session, host, inst.uuid, resources, sel.host.generation)
                inst.host = host
                inst.availability_zone = host.availability_zone
                tasks.advance(session, ctx, inst, TaskState.BLOCK_DEVICE_MAPPING)
                actions.finish_event(session, act, "reschedule", ctx.clock(), host=host.name)
                actions.start_event(session, act, "block_device_mapping", ctx.clock(), host.name)
                ctx.progress.info(f"{inst.name}: rescheduled to {host.name}")
                return True
        except ledger.GenerationConflict:
            continue
        except NoValidHost as exc:
            tried.append(f"reschedule: {exc.message}")
            return False
    return False


def _mark_spawning(ctx: Context, uuids: Sequence[str], request_id: str) -> None:
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = by_uuid(session, u)
            if inst.task_state == TaskState.BLOCK_DEVICE_MAPPING and tasks.owned(
                session, ctx, inst
            ):
                act = actions.current_action(session, u, request_id)
                host = inst.host.name if inst.host else None
                actions.finish_event(session, act, "block_device_mapping", now, host=host)
                tasks.advance(session, ctx, inst, TaskState.SPAWNING)
                actions.start_event(session, act, "spawn", now, host)


def _finish_build(ctx: Context, uuids: Sequence[str], request_id: str, result: RunResult) -> None:
    states = domain_states(result, "spawn")
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = by_uuid(session, u)
            act = actions.current_action(session, u, request_id)
            host = inst.host.name if inst.host else None
            actions.finish_event(session, act, "block_device_mapping", now, host=host)
            actions.finish_event(session, act, "spawn", now, host=host)
            actions.finish_action(act, now)
            tasks.finish(session, ctx, inst)
            if inst.host is not None:
                inst.host.failed_builds = 0
            inst.vm_state = VmState.ACTIVE
            inst.power_state = PowerState.from_libvirt(states.get(inst.domain_name, "nostate"))
            inst.launched_at = now


def _fail_build(
    ctx: Context,
    uuids: Sequence[str],
    request_id: str,
    reason: str,
    result: RunResult | None,
    *,
    cleaned: bool = False,
) -> None:
    """ERROR with a fault; claim and IP released; the host cleaned unless already done."""
    cleanup_note = "" if cleaned else _clean_hosts(ctx, uuids)
    details = reason + cleanup_note
    if result is not None and result.stdout_tail:
        details += "\n--- ansible output ---\n" + result.stdout_tail
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for u in uuids:
            inst = by_uuid(session, u)
            if not tasks.owned(session, ctx, inst):
                continue  # its lease was taken over: the controller settling it records it
            host = inst.host.name if inst.host else None
            act = actions.current_action(session, u, request_id)
            for event in ("spawn", "block_device_mapping", "reschedule"):
                if any(e.event == event and e.finish_time is None for e in act.events):
                    actions.finish_event(session, act, event, now, actions.ERROR, details, host)
            actions.finish_action(act, now, message="Error")
            actions.add_fault(session, inst, f"Build failed: {reason}", details, now, host)
            ledger.release(session, u)
            network.release_fixed_ips(session, u)
            tasks.finish(session, ctx, inst)
            inst.vm_state = VmState.ERROR
            inst.power_state = PowerState.NOSTATE
