"""What the instance use cases share: lookups, state checks, rendering, host cleanup."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, object_session

from cloudctl.db.models import Host, Image, Instance, KeyPair, Snapshot
from cloudctl.domain import validation
from cloudctl.domain.settings import Settings
from cloudctl.domain.states import VmState
from cloudctl.errors import (
    CloudctlError,
    InvalidState,
    NotFound,
)
from cloudctl.executor.base import EventHandler, RunEvent, RunRequest, RunResult
from cloudctl.executor.events import rename_guests
from cloudctl.render import render_config_drive
from cloudctl.render.spec import ConfigDriveSpec, DiskSpec, DomainSpec, NetworkConfigNic, NicSpec
from cloudctl.services import actions, hosts, images, network
from cloudctl.services.compute import tasks
from cloudctl.services.context import Context


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


def base_files(image: Image | None) -> list[dict[str, Any]]:
    """The files a host caches in ``_base`` for ``image``: disk, kernel and initrd, each once.

    ``size`` (bytes, from the controller's copy) lets the host take a cached file of that
    name and size as present without hashing it again (``cloudctl_base_files``).
    """
    out: list[dict[str, Any]] = []
    if image is None:
        return out
    images.require_image_files(image)  # one clear line on a controller that lacks them
    for src, checksum in (
        (image.path, image.checksum),
        (image.kernel_path, image.kernel_checksum),
        (image.initrd_path, image.initrd_checksum),
    ):
        if not src or not checksum or any(e["checksum"] == checksum for e in out):
            continue
        out.append({"src": src, "checksum": checksum, "size": Path(src).stat().st_size})
    return out


def disk_paths(host: Host, inst: Instance) -> dict[str, str]:
    base = f"{host.instances_path}/{inst.uuid}"
    return {
        "root": f"{base}/disk",
        "eph": f"{base}/disk.eph0",
        "swap": f"{base}/disk.swap",
        "config": f"{base}/disk.config",
        "console": f"{base}/console.log",
    }


def root_disk_file(session: Session, host: Host, inst: Instance) -> str:
    """The root disk's active file: ``disk``, or the overlay of the newest disk-only snapshot
    (services/compute/snapshot.py), which takes the writes until that snapshot is deleted."""
    root = disk_paths(host, inst)["root"]
    newest = session.scalars(
        select(Snapshot.name)
        .where(
            Snapshot.instance_uuid == inst.uuid,
            Snapshot.deleted == 0,
            Snapshot.kind == "external",
            Snapshot.file.is_not(None),
        )
        .order_by(Snapshot.id.desc())
    ).first()
    return f"{root}.snap-{newest}" if newest else root


def domain_spec(session: Session, inst: Instance) -> DomainSpec:
    """The libvirt domain an instance should be, from SQL."""
    host = inst.host
    if host is None:
        raise InvalidState(action="render", name=inst.name, vm_state=inst.vm_state, task_state=None)
    paths = disk_paths(host, inst)
    root = root_disk_file(session, host, inst)
    disks = [DiskSpec(path=root, target="vda", format="qcow2", serial=inst.uuid[:20])]
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


def by_uuid(session: Session, inst_uuid: str) -> Instance:
    inst = session.scalars(select(Instance).where(Instance.uuid == inst_uuid)).first()
    if inst is None:
        raise NotFound(kind="instance", name=inst_uuid)
    return inst


def host_of(ctx: Context, inst_uuid: str) -> str | None:
    with ctx.db.unit_of_work() as session:
        host = by_uuid(session, inst_uuid).host
        return host.name if host else None


def domain_states(result: RunResult, task: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for t in result.tasks:
        if t.task == task:
            for item in t.result.get("results", []) or []:
                if isinstance(item, Mapping) and "name" in item:
                    states[str(item["name"])] = str(item.get("state", "nostate"))
    return states


def failure_reason(result: RunResult) -> str:
    failed = result.failed()
    if not failed:
        return f"{result.playbook} failed (rc {result.rc})"
    t = failed[0]
    return f"task {t.task!r} on {t.host}: {t.message or 'failed'}".splitlines()[0][:400]


def run_error(exc: BaseException) -> str:
    """Why a run raised, for a fault: cloudctl's own message, else the exception's type too."""
    if isinstance(exc, CloudctlError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted while the play ran; the guest's state on its host is unknown"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def named_progress(ctx: Context, labels: Mapping[str, str]) -> EventHandler:
    """``ctx.progress.run_event`` with the modules' guest labels (an instance's uuid or domain
    name, see :func:`guest_label_names`) shown as server names."""

    def handle(event: RunEvent) -> None:
        ctx.progress.run_event(rename_guests(event, labels))

    return handle


def looked_up_progress(ctx: Context) -> EventHandler:
    """``ctx.progress.run_event`` with guest labels shown as server names found in the books.

    For plays whose caller does not hold the names at hand (moves, evacuations): the first
    event naming a label looks it up in one short read; a label no instance has stays as it is.
    """
    names: dict[str, str] = {}

    def handle(event: RunEvent) -> None:
        if event.guests:
            unknown = {g.label for g in event.guests} - names.keys()
            if unknown:
                names.update(_server_names(ctx, unknown))
            event = rename_guests(event, names)
        ctx.progress.run_event(event)

    return handle


def _server_names(ctx: Context, labels: Collection[str]) -> dict[str, str]:
    found = {label: label for label in labels}
    with ctx.db.unit_of_work() as session:
        for uuid, domain, name in session.execute(
            select(Instance.uuid, Instance.domain_name, Instance.name).where(
                or_(Instance.uuid.in_(list(labels)), Instance.domain_name.in_(list(labels)))
            )
        ):
            for key in (uuid, domain):
                if key in found:
                    found[key] = name
    return found


def guest_label_names(inst: Instance, labels: dict[str, str]) -> None:
    """Add ``inst``'s labels (uuid, domain name) -> its name to ``labels``."""
    labels[inst.uuid] = inst.name
    labels[inst.domain_name] = inst.name


def destroy_on_hosts(ctx: Context, uuids: Sequence[str]) -> RunResult:
    """Remove domains and files of instances from their hosts (missing ones are fine)."""
    domains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    files: dict[str, list[dict[str, Any]]] = defaultdict(list)
    targets = {}
    labels: dict[str, str] = {}
    with ctx.db.unit_of_work() as session:
        for u in uuids:
            inst = by_uuid(session, u)
            if inst.host is None:
                continue
            guest_label_names(inst, labels)
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
        named_progress(ctx, labels),
    )


def destroy_on(
    ctx: Context, host_name: str, inst_uuid: str, *, keep_files: bool, description: str
) -> str | None:
    """Remove one instance's domain (and, unless ``keep_files``, its files) from ``host_name``,
    whatever the books say its host is; None when done, else why not (a host that lost them
    already is fine)."""
    with ctx.db.unit_of_work() as session:
        inst = by_uuid(session, inst_uuid)
        target = hosts.host_target(hosts.get_host(session, host_name))
        domain = inst.domain_name
    try:
        result = ctx.executor.run(
            RunRequest(
                playbook="destroy.yml",
                hosts=(target,),
                extravars={
                    "cloudctl_domains": {target.name: [{"name": domain, "state": "absent"}]},
                    "cloudctl_disks": {target.name: [] if keep_files else [{"uuid": inst_uuid}]},
                },
                description=description,
            ),
            looked_up_progress(ctx),
        )
    except CloudctlError as exc:
        return str(exc)
    return None if result.ok else failure_reason(result)


def fail_action(
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
            inst = by_uuid(session, u)
            if not tasks.owned(session, ctx, inst):
                continue  # its lease was taken over: the controller settling it records it
            host = inst.host.name if inst.host else None
            act = actions.current_action(session, u, request_id)
            actions.finish_event(session, act, event, now, actions.ERROR, details, host)
            actions.finish_action(act, now, message="Error")
            actions.add_fault(session, inst, f"{act.action} failed: {reason}", details, now, host)
            tasks.finish(session, ctx, inst)
            if to_error:
                inst.vm_state = VmState.ERROR


#: ``check_state``'s default: the action's row of ``ACTION_STATES`` (domain/states.py).
FROM_TABLE: Final = tasks.FROM_TABLE


def check_state(
    ctx: Context,
    inst: Instance,
    action: str,
    vm_states: Collection[str] | Literal["row"] | None = FROM_TABLE,
    *,
    task_states: Collection[str | None] | Literal["row"] | None = FROM_TABLE,
) -> None:
    """Nova's check_instance_state and check_instance_lock: refuse what the state does not allow.

    ``action`` names a row of :data:`~cloudctl.domain.states.ACTION_STATES`; explicit
    ``vm_states`` / ``task_states`` (``None`` = any) replace the row's, and without a row they
    default to any vm_state and no task in progress. This is a read, for an early one-line
    error; what decides is the claim (:func:`cloudctl.services.compute.tasks.claim`). Raises
    :class:`InvalidState` (:class:`InstanceBusy` when another command holds the task).
    """
    session = object_session(inst)
    assert session is not None, "check_state needs an instance of a session"
    tasks.check(session, ctx, inst, action, vm_states, task_states=task_states)


def launch_worker(settings: Settings, args: Sequence[str]) -> None:
    """Run ``cloudctl <args>`` detached (``--no-wait``): it outlives this command.

    The database URL (its password included) goes in the worker's environment, which only its
    user and root can read, never on its command line, which every local user can (``ps``).
    """
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "worker.log").open("ab")
    env = {
        **os.environ,
        "CLOUDCTL_DB": settings.db_url,
        # absolute: the worker runs from the home directory
        "CLOUDCTL_HOME": str(settings.home.absolute()),
    }
    subprocess.Popen(
        [sys.executable, "-m", "cloudctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        cwd=str(Path.home()),
        env=env,
    )
    log.close()
