"""``cloudctl adopt HOST DOMAIN``: bring a libvirt guest cloudctl did not create into the books.

Two short transactions around one read-only play (``domain_info.yml``): check the host and the
names; read the domain on its host (UUID, state, size, disks, MACs); then, re-checking that
nobody booked it meanwhile, create the instance row (its UUID and domain name are the domain's),
pick its flavor, set its allocation on the host (a heal: the guest is there whether the host has
room or not) and record an ``adopt`` instance action.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.db.models import Flavor, Instance
from cloudctl.domain import validation
from cloudctl.domain.states import VM_STATE_OF_DOMAIN, PowerState, VmState
from cloudctl.errors import AlreadyExists, InvalidInput, NotFound, OperationFailed
from cloudctl.executor.base import HostTarget, RunRequest
from cloudctl.services import actions, hosts
from cloudctl.services.compute.common import failure_reason
from cloudctl.services.compute.views import show_instance
from cloudctl.services.context import Context
from cloudctl.services.flavors import get_flavor

PLAYBOOK = "domain_info.yml"
TASK = "domain info"
GiB = 1024**3
#: libvirt domain names cloudctl passes to its modules (as library/module_utils checks them).
DOMAIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class DomainInfo:
    """What the host reported about the domain to adopt."""

    name: str
    uuid: str
    state: str
    has_managed_save: bool
    persistent: bool
    vcpus: int
    memory_mb: int
    root_bytes: int | None
    disks: tuple[Mapping[str, Any], ...]
    macs: tuple[str, ...]

    @classmethod
    def from_result(cls, raw: Mapping[str, Any]) -> DomainInfo:
        """Parse one entry of the module's ``domains``."""
        disks = tuple(d for d in raw.get("disks") or () if isinstance(d, Mapping))
        root = root_disk(disks)
        size = root.get("virtual_size_bytes") if root is not None else None
        return cls(
            name=str(raw["name"]),
            uuid=str(raw["uuid"]).lower(),
            state=str(raw.get("state", "nostate")),
            has_managed_save=bool(raw.get("has_managed_save")),
            persistent=bool(raw.get("persistent", True)),
            vcpus=int(raw["vcpus"]),
            memory_mb=int(raw["memory_mb"]),
            root_bytes=int(size) if size is not None else None,
            disks=disks,
            macs=tuple(str(m) for m in raw.get("macs") or ()),
        )

    @property
    def vm_state(self) -> str:
        """The instance's vm_state from the domain's (managed save = suspended)."""
        if self.state in ("shutoff", "shutdown") and self.has_managed_save:
            return VmState.SUSPENDED
        return VM_STATE_OF_DOMAIN.get(self.state, VmState.STOPPED)

    def size(self) -> str:
        """``2 vCPU(s), 2048 MiB, root disk 10.00 GiB``."""
        disk = f"{self.root_bytes / GiB:.2f} GiB" if self.root_bytes is not None else "unknown"
        return f"{self.vcpus} vCPU(s), {self.memory_mb} MiB, root disk {disk}"


def root_disk(disks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first writable disk device (CD-ROMs and read-only disks such as a config drive are
    not the root)."""
    return next(
        (d for d in disks if d.get("device", "disk") == "disk" and not d.get("readonly")), None
    )


def adopt(
    ctx: Context,
    host: str,
    domain: str,
    *,
    name: str | None = None,
    flavor: str | None = None,
) -> dict[str, Any]:
    """Book the libvirt domain ``domain`` of ``host`` as an instance; returns its view."""
    if not DOMAIN_NAME_RE.match(domain):
        raise InvalidInput(reason=f"domain name {domain!r} must match {DOMAIN_NAME_RE.pattern}")
    inst_name = _instance_name(name, domain)
    with ctx.db.unit_of_work() as session:
        host_row = hosts.get_host(session, host)
        target = hosts.host_target(host_row)
        _check_free(session, ctx.settings.project_id, host, domain, inst_name)
        if flavor is not None:
            get_flavor(session, flavor)
    ctx.progress.info(f"reading domain {domain} on {host}")
    info = _read_domain(ctx, target, domain)
    if not info.persistent:
        raise InvalidInput(
            reason=f"domain {domain} on {host} is transient: define it first "
            f"(virsh dumpxml {domain} > {domain}.xml; virsh define {domain}.xml)"
        )
    if not validation.is_uuid(info.uuid):
        raise OperationFailed(action="adopt", name=domain, reason=f"bad uuid {info.uuid!r}")
    request_id = actions.new_request_id()
    try:
        inst_uuid = _book(ctx, host, domain, inst_name, info, flavor, request_id)
    except IntegrityError as exc:
        # Another controller booked the same domain (or name) between our check and our insert:
        # the unique uuid and name of instances stop the second one.
        raise AlreadyExists(
            f"domain {domain} ({info.uuid}) or instance {inst_name} was booked by another "
            "command meanwhile",
            kind="instance",
            name=inst_name,
        ) from exc
    return show_instance(ctx, inst_uuid)


def _book(
    ctx: Context,
    host: str,
    domain: str,
    inst_name: str,
    info: DomainInfo,
    flavor: str | None,
    request_id: str,
) -> str:
    """The books' side of an adoption, in one transaction; returns the new instance's uuid."""
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        host_row = hosts.get_host(session, host)
        _check_free(session, ctx.settings.project_id, host, domain, inst_name)
        known = session.scalars(select(Instance).where(Instance.uuid == info.uuid)).first()
        if known is not None:
            raise AlreadyExists(
                f"domain {domain} ({info.uuid}) is already known to cloudctl as instance "
                f"{known.name}" + (" (deleted)" if known.deleted else ""),
                kind="instance",
                name=known.name,
            )
        chosen = _pick_flavor(session, info, flavor)
        inst = Instance(
            uuid=info.uuid,
            name=inst_name,
            hostname=inst_name,
            project_id=ctx.settings.project_id,
            user_id=ctx.settings.user_id,
            flavor=chosen,
            image=None,
            host=host_row,
            domain_name=info.name,
            vcpus=chosen.vcpus,
            memory_mb=chosen.memory_mb,
            root_gb=chosen.root_gb,
            ephemeral_gb=chosen.ephemeral_gb,
            swap_mb=chosen.swap_mb,
            vm_state=info.vm_state,
            task_state=None,
            power_state=PowerState.from_libvirt(info.state),
            availability_zone=host_row.availability_zone,
            request_spec={
                "availability_zone": None,
                "force_host": None,
                "group": None,
                "hints": {},
                "adopted": {
                    "host": host,
                    "domain": info.name,
                    "disks": [dict(d) for d in info.disks],
                    "macs": list(info.macs),
                },
            },
            created_at=now,
            launched_at=now,
        )
        session.add(inst)
        session.flush()
        ledger.set_allocation(
            session,
            host_row,
            inst.uuid,
            ledger.resources_for(
                chosen.vcpus, chosen.memory_mb, chosen.root_gb, chosen.ephemeral_gb, chosen.swap_mb
            ),
        )
        act = actions.start_action(session, inst, "adopt", request_id, now)
        actions.finish_event(
            session,
            act,
            "adopt",
            ctx.clock(),
            details=f"domain {info.name} ({info.state}; {info.size()}) on {host} booked as "
            f"flavor {chosen.name}",
            host=host,
            started=now,
        )
        actions.finish_action(act, ctx.clock())
        ctx.progress.info(f"{inst_name}: adopted on {host} as flavor {chosen.name}")
        return inst.uuid


def _instance_name(name: str | None, domain: str) -> str:
    if name is not None:
        return validation.instance_name(name)
    try:
        return validation.instance_name(domain)
    except InvalidInput as exc:
        raise InvalidInput(
            reason=f"domain name {domain!r} is not a valid instance name "
            "(lowercase letters, digits and '-', at most 63 characters): pass --name"
        ) from exc


def _check_free(session: Session, project_id: str, host: str, domain: str, name: str) -> None:
    """Refuse a domain a live instance on ``host`` already is, and a name already taken."""
    live = select(Instance).where(Instance.deleted == 0)
    for inst in session.scalars(live.where(Instance.domain_name == domain)):
        if inst.host is not None and inst.host.name == host:
            raise AlreadyExists(
                f"domain {domain} on {host} is already instance {inst.name}",
                kind="instance",
                name=inst.name,
            )
    if session.scalars(
        live.where(Instance.project_id == project_id, Instance.name == name)
    ).first():
        raise AlreadyExists(kind="instance", name=name)


def _read_domain(ctx: Context, target: HostTarget, domain: str) -> DomainInfo:
    """One read-only play on the domain's host; the domain as it reported it."""
    host = target.name
    request = RunRequest(
        playbook=PLAYBOOK,
        hosts=(target,),
        extravars={"cloudctl_domains": {host: [domain]}},
        description=f"describe domain {domain}",
    )
    result = ctx.executor.run(request, ctx.progress.run_event)
    if not result.ok:
        raise OperationFailed(action="adopt", name=domain, reason=failure_reason(result))
    reported = result.result(TASK, host) or {}
    entry = next(
        (
            d
            for d in reported.get("domains") or ()
            if isinstance(d, Mapping) and d.get("name") == domain
        ),
        None,
    )
    if entry is None or not entry.get("found"):
        raise NotFound(
            f"domain {domain!r} is not defined on host {host}", kind="domain", name=domain
        )
    try:
        return DomainInfo.from_result(entry)
    except (KeyError, TypeError, ValueError) as exc:
        raise OperationFailed(
            action="adopt", name=domain, reason=f"unreadable domain info: {exc!r}"
        ) from exc


def _fits(flavor: Flavor, info: DomainInfo) -> bool:
    return info.root_bytes is None or flavor.root_gb * GiB >= info.root_bytes


def _pick_flavor(session: Session, info: DomainInfo, name: str | None) -> Flavor:
    """``--flavor`` if it is at least the guest's size; else the one flavor of its size."""
    if name is not None:
        flavor = get_flavor(session, name)
        if (
            flavor.vcpus < info.vcpus
            or flavor.memory_mb < info.memory_mb
            or not _fits(flavor, info)
        ):
            raise InvalidInput(
                reason=f"flavor {flavor.name} ({flavor.vcpus} vCPU(s), {flavor.memory_mb} MiB, "
                f"root disk {flavor.root_gb} GiB) is smaller than domain {info.name} "
                f"({info.size()})"
            )
        return flavor
    candidates = [
        f
        for f in session.scalars(
            select(Flavor).where(
                Flavor.deleted == 0,
                Flavor.disabled.is_(False),
                Flavor.vcpus == info.vcpus,
                Flavor.memory_mb == info.memory_mb,
            )
        )
        if _fits(f, info)
    ]
    if not candidates:
        raise InvalidInput(
            reason=f"no flavor fits domain {info.name} ({info.size()}): pass --flavor"
        )
    smallest = min(f.root_gb for f in candidates)
    tightest = sorted((f for f in candidates if f.root_gb == smallest), key=lambda f: f.name)
    if len(tightest) > 1:
        raise InvalidInput(
            reason=f"several flavors fit domain {info.name} ({info.size()}): "
            f"{', '.join(f.name for f in tightest)}; pass --flavor"
        )
    return tightest[0]
