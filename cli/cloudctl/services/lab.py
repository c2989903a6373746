"""``cloudctl lab``: N real compute hosts on this machine, registered and discovered as remote ones.

The namespaces, daemons and SSH servers are :mod:`cloudctl.services.lab_machine`'s business; this
module keeps SQL in step with them: lab hosts are registered (labelled ``lab=true``) and their
capacity discovered through Ansible, and ``lab down`` forgets their guests and unregisters them.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from cloudctl.db.models import Host, Instance
from cloudctl.services import compute, hosts
from cloudctl.services.context import Context
from cloudctl.services.lab_machine import LAB_LABEL, Lab, LabHost, LabSpec

SSH_ARGS = "-o IdentitiesOnly=yes -o LogLevel=ERROR"


def _ssh_args(lh: LabHost) -> str | None:
    # The lab writes each host's key to its own known_hosts: hosts are checked, not trusted blindly.
    if lh.connection != "ssh":
        return None
    if lh.ssh_known_hosts:
        return f"-o UserKnownHostsFile={lh.ssh_known_hosts} {SSH_ARGS}"
    return f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null {SSH_ARGS}"


def _lab(ctx: Context) -> Lab:
    return Lab(ctx.settings.lab_dir)


def _register(ctx: Context, lab_hosts: list[LabHost]) -> None:
    s = ctx.settings
    wanted = {h.name for h in lab_hosts}
    with ctx.db.unit_of_work() as session:
        existing = {
            h.name: h
            for h in session.scalars(select(Host).where(Host.deleted == 0))
            if (h.labels or {}).get(LAB_LABEL) == "true" or h.name in wanted
        }
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
        for name, row in existing.items():
            if name not in wanted:
                _unregister(ctx, row)


def _unregister(ctx: Context, row: Host) -> None:
    with ctx.db.unit_of_work() as session:
        live = list(
            session.scalars(
                select(Instance.uuid).where(Instance.host_id == row.id, Instance.deleted == 0)
            )
        )
    if live:
        compute.forget(ctx, live, reason=f"lab host {row.name} was removed")
    with ctx.db.unit_of_work() as session:
        host = session.get(Host, row.id)
        if host is not None and host.deleted == 0:
            host.deleted = host.id
            host.deleted_at = ctx.clock()


def lab_up(ctx: Context, spec: LabSpec) -> list[dict[str, Any]]:
    """Create or reconcile the lab, register its hosts and discover their capacity."""
    spec = LabSpec(
        hosts=spec.hosts,
        azs=spec.azs,
        virt_type=spec.virt_type,
        connection=spec.connection,
        storage=spec.storage,
        cidr_pool=ctx.settings.lab_cidr_pool,
    )
    ctx.progress.info(f"lab: {spec.hosts} host(s) over {spec.azs} AZ(s), {spec.connection}")
    lab_hosts = _lab(ctx).up(spec, ctx.progress.info)
    _register(ctx, lab_hosts)
    return hosts.discover_hosts(ctx, [h.name for h in lab_hosts])


def lab_status(ctx: Context) -> list[dict[str, Any]]:
    """Health of every lab host (namespaces, daemons, sshd) next to what SQL knows of it."""
    lab = _lab(ctx)
    health = {h.name: h for h in lab.status()}
    out = []
    with ctx.db.unit_of_work() as session:
        now = ctx.clock()
        for lh in lab.hosts():
            h = health.get(lh.name)
            row = session.scalars(
                select(Host).where(Host.name == lh.name, Host.deleted == 0)
            ).first()
            view = (
                hosts.host_view(session, row, now, ctx.settings.service_down_time_s) if row else {}
            )
            out.append(
                {
                    "name": lh.name,
                    "healthy": bool(h and h.healthy),
                    "problems": list(h.problems) if h else ["no health report"],
                    "address": lh.address,
                    "availability_zone": lh.availability_zone,
                    "connection": lh.connection,
                    "registered": row is not None,
                    "state": view.get("state", "-"),
                    "running_vms": view.get("running_vms", 0),
                }
            )
    return out


def lab_down(ctx: Context) -> dict[str, Any]:
    """Destroy the lab's guests and hosts; forget them in SQL. Idempotent."""
    with ctx.db.unit_of_work() as session:
        rows = [
            h
            for h in session.scalars(select(Host).where(Host.deleted == 0))
            if (h.labels or {}).get(LAB_LABEL) == "true"
        ]
    lab = _lab(ctx)
    names = [h.name for h in lab.hosts()]
    lab.down(ctx.progress.info)
    guests = 0
    for row in rows:
        with ctx.db.unit_of_work() as session:
            guests += len(
                session.scalars(
                    select(Instance.id).where(Instance.host_id == row.id, Instance.deleted == 0)
                ).all()
            )
        _unregister(ctx, row)
    return {"hosts_removed": sorted({*names, *(r.name for r in rows)}), "guests_destroyed": guests}
