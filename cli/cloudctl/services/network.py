"""Flat networking (Nova's flat mode): a bridge per host, fixed IPs from the network's subnet."""

from __future__ import annotations

import ipaddress
import random
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl.db.models import FixedIP, Network
from cloudctl.domain import validation
from cloudctl.domain.settings import NetworkSettings
from cloudctl.errors import AlreadyExists, CloudctlError, InUse, InvalidInput, NotFound


class NoMoreFixedIps(CloudctlError):
    """The network's subnet is exhausted."""

    msg_fmt = "no free fixed IP left in network {network!r} ({cidr})"
    exit_code = 1


def ensure_default_network(session: Session, settings: NetworkSettings) -> Network:
    """The network guests attach to, created from settings on first use."""
    net = session.scalars(
        select(Network).where(Network.name == settings.name, Network.deleted == 0)
    ).first()
    if net is not None:
        return net
    try:
        subnet = ipaddress.ip_network(settings.cidr)
    except ValueError as exc:
        raise InvalidInput(reason=f"network cidr {settings.cidr!r}: {exc}") from exc
    net = Network(
        uuid=str(uuid.uuid4()),
        name=settings.name,
        cidr=str(subnet),
        gateway=settings.gateway,
        dns=list(settings.dns),
        bridge=settings.bridge,
    )
    session.add(net)
    session.flush()
    return net


def create_network(
    session: Session,
    name: str,
    cidr: str,
    gateway: str | None = None,
    dns: Sequence[str] = (),
    bridge: str = "cloudbr0",
) -> Network:
    """Register a flat network (its addresses are handed out on first use)."""
    validation.object_name("network", name)
    try:
        subnet = ipaddress.ip_network(cidr)
    except ValueError as exc:
        raise InvalidInput(reason=f"network cidr {cidr!r}: {exc}") from exc
    if session.scalars(
        select(Network.id).where(Network.name == name, Network.deleted == 0)
    ).first():
        raise AlreadyExists(kind="network", name=name)
    net = Network(
        uuid=str(uuid.uuid4()),
        name=name,
        cidr=str(subnet),
        gateway=gateway,
        dns=list(dns),
        bridge=bridge,
    )
    session.add(net)
    session.flush()
    return net


def delete_network(session: Session, name: str) -> None:
    """Remove a network no guest holds an address of."""
    net = session.scalars(select(Network).where(Network.name == name, Network.deleted == 0)).first()
    if net is None:
        raise NotFound(kind="network", name=name)
    used = session.scalars(
        select(FixedIP.address).where(FixedIP.network_id == net.id, FixedIP.allocated)
    ).first()
    if used is not None:
        raise InUse(kind="network", name=name, reason=f"address {used} is allocated")
    net.deleted = net.id


def generate_mac(rng: random.Random) -> str:
    """A MAC in Nova's fa:16:3e OUI."""
    return "fa:16:3e:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))


def allocate_fixed_ip(
    session: Session, network: Network, instance_uuid: str, rng: random.Random
) -> FixedIP:
    """Bind the lowest free address of the subnet (not network, gateway or broadcast)."""
    subnet = ipaddress.ip_network(network.cidr)
    taken = set(
        session.scalars(
            select(FixedIP.address).where(FixedIP.network_id == network.id, FixedIP.allocated)
        )
    )
    reserved = {str(subnet.network_address), str(subnet.broadcast_address)}
    if network.gateway:
        reserved.add(network.gateway)
    for addr in subnet.hosts():
        text = str(addr)
        if text in taken or text in reserved:
            continue
        row = session.scalars(
            select(FixedIP).where(FixedIP.network_id == network.id, FixedIP.address == text)
        ).first()
        if row is None:
            row = FixedIP(network_id=network.id, address=text)
            session.add(row)
        row.allocated = True
        row.instance_uuid = instance_uuid
        row.mac = generate_mac(rng)
        session.flush()
        return row
    raise NoMoreFixedIps(network=network.name, cidr=network.cidr)


def release_fixed_ips(session: Session, instance_uuid: str) -> int:
    """Give an instance's addresses back to the pool."""
    rows = session.scalars(select(FixedIP).where(FixedIP.instance_uuid == instance_uuid)).all()
    for row in rows:
        row.allocated = False
        row.instance_uuid = None
        row.mac = None
    return len(rows)


def fixed_ips_of(session: Session, instance_uuid: str) -> list[FixedIP]:
    """An instance's addresses."""
    return list(
        session.scalars(
            select(FixedIP).where(FixedIP.instance_uuid == instance_uuid).order_by(FixedIP.id)
        )
    )
