"""``cloudctl lab``: N real compute hosts on this machine, registered and discovered as remote ones.

The namespaces, daemons and SSH servers are :mod:`cloudctl.services.lab_machine`'s business; this
module keeps SQL in step with them: lab hosts are registered (labelled ``lab=true``, and carrying
the lab's id in ``hosts.lab_id``) and their capacity discovered through Ansible, and ``lab down``
forgets their guests and unregisters them.

A lab belongs to its home. Several homes (controllers) may share one database, and every lab
names its hosts ``lab-1..N``, so each command touches only the rows of its own lab: those whose
``lab_id`` is this home's lab id, and rows an older cloudctl wrote (``lab=true``, no ``lab_id``)
that this home's lab state file knows. Another lab's rows, and hosts added by hand, are left
alone; ``lab up`` refuses to take their names.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudctl.db.models import Host, Instance
from cloudctl.errors import AlreadyExists
from cloudctl.services import compute, hosts
from cloudctl.services.context import Context
from cloudctl.services.lab_machine import (
    LAB_LABEL,
    Lab,
    LabError,
    LabHost,
    LabSpec,
    host_name,
    lab_id_for,
)

SSH_ARGS = "-o IdentitiesOnly=yes -o LogLevel=ERROR"
#: Where a lab keeps its guests' disks, relative to its root (lab_machine.Lab's layout).
_INSTANCES_DIRS: tuple[tuple[str, ...], ...] = (("shared", "instances"), ("local-instances",))


def _ssh_args(lh: LabHost) -> str | None:
    # The lab writes each host's key to its own known_hosts: hosts are checked, not trusted blindly.
    if lh.connection != "ssh":
        return None
    if lh.ssh_known_hosts:
        return f"-o UserKnownHostsFile={lh.ssh_known_hosts} {SSH_ARGS}"
    return f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null {SSH_ARGS}"


def _lab(ctx: Context) -> Lab:
    return Lab(ctx.settings.lab_dir)


def _known_hosts(lab: Lab) -> dict[str, LabHost]:
    """The hosts this home's lab state file lists ({} with no lab, or an unreadable state)."""
    # A broken state file must not stop `lab down` or `lab status` from doing their part.
    with contextlib.suppress(LabError):
        return {lh.name: lh for lh in lab.hosts()}
    return {}


def is_lab_row(row: Host) -> bool:
    """Whether ``row`` was registered by some home's ``cloudctl lab`` (any version)."""
    return row.lab_id is not None or (row.labels or {}).get(LAB_LABEL) == "true"


def belongs_to(row: Host, lab: Lab, known: Mapping[str, LabHost]) -> bool:
    """Whether the host row ``row`` is one of ``lab``'s hosts.

    A row with a ``lab_id`` belongs to the lab of that id. A row an older cloudctl wrote (label
    ``lab=true``, no ``lab_id``) belongs to ``lab`` only if the lab's state file (``known``) lists
    a host of that name and the row points into this lab: same libvirt ``host_uuid``, or its
    instances path under the lab's root. Every lab names its hosts ``lab-1..N``, so the name
    alone would take another home's host for ours.
    """
    if row.lab_id is not None:
        return row.lab_id == lab.names.lab_id
    if (row.labels or {}).get(LAB_LABEL) != "true":
        return False
    lh = known.get(row.name)
    if lh is None:
        return False
    if row.host_uuid and lh.host_uuid and row.host_uuid == lh.host_uuid:
        return True
    return Path(row.instances_path).is_relative_to(lab.root)


def _lab_rows(session: Session, names: Iterable[str] = ()) -> list[Host]:
    """Live rows that are lab hosts of any lab, or named ``names``."""
    return list(
        session.scalars(
            select(Host)
            .where(
                Host.deleted == 0,
                or_(
                    Host.lab_id.is_not(None),
                    Host.labels[LAB_LABEL].as_string() == "true",
                    Host.name.in_(list(names)),
                ),
            )
            .order_by(Host.name)
        )
    )


def _own_rows(session: Session, lab: Lab, known: Mapping[str, LabHost]) -> list[Host]:
    return [r for r in _lab_rows(session, known) if belongs_to(r, lab, known)]


def lab_dir_of(row: Host) -> Path | None:
    """The root of the lab that registered ``row``, when its paths show it and its id agrees."""
    if row.lab_id is None:
        return None
    candidates = [Path(row.instances_path)]
    if row.ssh_private_key:
        candidates.append(Path(row.ssh_private_key))
    for path in candidates:
        for parts in _INSTANCES_DIRS:
            if path.parts[-len(parts) :] == parts:
                root = path.parents[len(parts) - 1]
                if lab_id_for(root) == row.lab_id:
                    return root
        if path.name == "id_ed25519" and lab_id_for(path.parent) == row.lab_id:
            return path.parent
    return None


def foreign_host_error(rows: Sequence[Host]) -> AlreadyExists:
    """The one-line refusal of ``lab up`` when ``rows`` (not this lab's) hold its host names."""
    row = rows[0]
    more = f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""
    if row.lab_id is not None:
        root = lab_dir_of(row)
        where = f" in {root}" if root else ""
        why = (
            f"belongs to lab {row.lab_id}{where}, the lab of another cloudctl home sharing this "
            "database; every lab names its hosts lab-1..N, so one database holds one lab: run "
            "`cloudctl lab down` in that home first, or give this home its own database"
        )
    elif (row.labels or {}).get(LAB_LABEL) == "true":
        why = (
            f"was registered by an older cloudctl's lab (instances in {row.instances_path}) "
            "that this home's lab does not know: run `cloudctl lab down` in the home that made "
            f"it, or `cloudctl host remove {row.name}` if that lab is gone"
        )
    else:
        why = (
            "was added by hand, not by a lab: lab hosts are named lab-1..N, so remove it "
            f"(`cloudctl host remove {row.name}`) or give this home its own database"
        )
    return AlreadyExists(
        f"lab: host {row.name!r}{more} already exists and {why}",
        kind="host",
        name=row.name,
        lab_id=row.lab_id,
    )


def _refuse_foreign(
    session: Session, lab: Lab, known: Mapping[str, LabHost], names: Collection[str]
) -> None:
    foreign = [
        r for r in _lab_rows(session, names) if r.name in names and not belongs_to(r, lab, known)
    ]
    if foreign:
        raise foreign_host_error(foreign)


def _register(
    ctx: Context, lab: Lab, known: Mapping[str, LabHost], lab_hosts: list[LabHost]
) -> None:
    s = ctx.settings
    wanted = {h.name for h in lab_hosts}
    try:
        with ctx.db.unit_of_work() as session:
            # Checked again in the transaction that writes: another home may have registered
            # the names since lab_up's first check.
            _refuse_foreign(session, lab, known, wanted)
            existing = {r.name: r for r in _own_rows(session, lab, known)}
            for lh in lab_hosts:
                hosts.validate_spec(
                    hosts.HostSpec(
                        name=lh.name,
                        libvirt_uri=lh.libvirt_uri,
                        connection=lh.connection,
                        address=lh.address,
                        availability_zone=lh.availability_zone,
                        virt_type=lh.virt_type,
                        instances_path=lh.instances_path,
                        bridge=lh.bridge,
                        python_interpreter=lh.python_interpreter,
                        ssh_user=lh.ssh_user,
                        ssh_port=lh.ssh_port,
                        ssh_private_key=lh.ssh_private_key,
                    )
                )
                row = existing.get(lh.name)
                if row is None:
                    row = Host(
                        uuid=str(uuid.uuid4()),
                        name=lh.name,
                        cpu_allocation_ratio=s.cpu_allocation_ratio,
                        ram_allocation_ratio=s.ram_allocation_ratio,
                        disk_allocation_ratio=s.disk_allocation_ratio,
                        reserved_host_memory_mb=s.reserved_host_memory_mb,
                        created_at=ctx.clock(),
                    )
                    session.add(row)
                row.lab_id = lab.names.lab_id
                row.connection = lh.connection
                row.address = lh.address
                row.libvirt_uri = lh.libvirt_uri
                row.python_interpreter = lh.python_interpreter
                row.ssh_user = lh.ssh_user
                row.ssh_port = lh.ssh_port
                row.ssh_private_key = lh.ssh_private_key
                row.ssh_common_args = _ssh_args(lh)
                row.instances_path = lh.instances_path
                row.bridge = lh.bridge
                row.virt_type = lh.virt_type
                row.availability_zone = lh.availability_zone
                row.labels = {**(row.labels or {}), LAB_LABEL: "true"}
            # Hosts a smaller lab no longer has.
            dropped = [row.id for name, row in existing.items() if name not in wanted]
    except IntegrityError as exc:
        raise AlreadyExists(
            f"lab: another home registered one of {', '.join(sorted(wanted))} at the same "
            "moment: see `cloudctl host list`; `cloudctl lab down` here removes this home's lab",
            kind="host",
            name=", ".join(sorted(wanted)),
        ) from exc
    for host_id in dropped:
        _unregister(ctx, host_id)


def _unregister(ctx: Context, host_id: int) -> None:
    with ctx.db.unit_of_work() as session:
        row = session.get(Host, host_id)
        if row is None or row.deleted != 0:
            return
        name = row.name
        live = list(
            session.scalars(
                select(Instance.uuid).where(Instance.host_id == host_id, Instance.deleted == 0)
            )
        )
    if live:
        compute.forget(ctx, live, reason=f"lab host {name} was removed")
    with ctx.db.unit_of_work() as session:
        host = session.get(Host, host_id)
        if host is not None and host.deleted == 0:
            host.deleted = host.id
            host.deleted_at = ctx.clock()


def lab_up(ctx: Context, spec: LabSpec) -> list[dict[str, Any]]:
    """Create or reconcile the lab, register its hosts and discover their capacity.

    Refused with AlreadyExists, before anything is built, when a host row of one of the lab's
    names belongs to another home's lab or was added by hand.
    """
    spec = LabSpec(
        hosts=spec.hosts,
        azs=spec.azs,
        virt_type=spec.virt_type,
        connection=spec.connection,
        storage=spec.storage,
        cidr_pool=ctx.settings.lab_cidr_pool,
    )
    lab = _lab(ctx)
    known = _known_hosts(lab)
    with ctx.db.unit_of_work() as session:
        _refuse_foreign(session, lab, known, {host_name(i) for i in range(1, spec.hosts + 1)})
    ctx.progress.info(
        f"lab {lab.names.lab_id}: {spec.hosts} host(s) over {spec.azs} AZ(s), {spec.connection}"
    )
    lab_hosts = lab.up(spec, ctx.progress.info)
    _register(ctx, lab, known, lab_hosts)
    return hosts.discover_hosts(ctx, [h.name for h in lab_hosts])


def lab_status(ctx: Context) -> list[dict[str, Any]]:
    """Health of every host of this home's lab (namespaces, daemons, sshd) next to its SQL row.

    Rows of other homes' labs are not looked at, even when they carry the same names; a host of
    this lab whose name another lab holds in the database is reported unregistered (unhealthy).
    """
    lab = _lab(ctx)
    known = _known_hosts(lab)
    health = {h.name: h for h in lab.status()}
    out = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        rows = _lab_rows(session, known)
        own = {r.name: r for r in rows if belongs_to(r, lab, known)}
        foreign = {r.name: r for r in rows if r.name in known and r.name not in own}
        if not known and not own:
            ctx.progress.info(f"lab: this home has no lab ({lab.root})")
        for name in sorted({*known, *own}, key=_host_order):
            lh = known.get(name)
            h = health.get(name)
            row = own.get(name)
            problems = list(h.problems) if h else []
            if lh is None:
                problems.append("registered, but this home's lab state lacks it (lab down)")
            elif h is None:
                problems.append("no health report")
            if name in foreign:
                problems.append(f"the database's {name} is not this lab's (lab up refuses)")
            view = (
                hosts.host_view(session, row, now, ctx.settings.service_down_time_s) if row else {}
            )
            out.append(
                {
                    "name": name,
                    "healthy": bool(h and h.healthy) and not problems,
                    "problems": problems,
                    "address": lh.address if lh else row.address if row else None,
                    "availability_zone": (
                        lh.availability_zone if lh else row.availability_zone if row else None
                    ),
                    "connection": lh.connection if lh else row.connection if row else None,
                    "registered": row is not None,
                    "state": view.get("state", "-"),
                    "running_vms": view.get("running_vms", 0),
                }
            )
    return out


def _host_order(name: str) -> tuple[int, str]:
    digits = name.rpartition("-")[2]
    return (int(digits) if digits.isdigit() else 0, name)


def lab_down(ctx: Context) -> dict[str, Any]:
    """Destroy this home's lab: its guests and hosts; forget them in SQL. Idempotent.

    Only this lab's rows are unregistered (and their guests forgotten). In a home without a lab
    there is nothing to do and it says so: another home's lab in the same database is left alone.
    """
    lab = _lab(ctx)
    known = _known_hosts(lab)
    with ctx.db.unit_of_work() as session:
        own = _own_rows(session, lab, known)
        rows = [(r.id, r.name) for r in own]
        others = sorted(
            {
                r.name
                for r in _lab_rows(session)
                if is_lab_row(r) and r.id not in {o.id for o in own}
            }
        )
    if not known and not rows:
        ctx.progress.info(
            f"lab: this home has no lab ({lab.root}): nothing to remove"
            + (f"; {len(others)} host(s) of other labs left alone" if others else "")
        )
    lab.down(ctx.progress.info)
    guests = 0
    for host_id, _ in rows:
        with ctx.db.unit_of_work() as session:
            guests += len(
                session.scalars(
                    select(Instance.id).where(Instance.host_id == host_id, Instance.deleted == 0)
                ).all()
            )
        _unregister(ctx, host_id)
    return {
        "hosts_removed": sorted({*known, *(name for _, name in rows)}, key=_host_order),
        "guests_destroyed": guests,
    }
