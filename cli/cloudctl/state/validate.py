"""Checks across documents: references, duplicates, server names, zones (pure).

``validate(estate, known)`` returns every problem of the estate, the ones met while parsing
included, sorted by file and line. ``known`` holds the names that already exist in cloudctl's
SQL, so a Server may use a flavor, image, key pair or group defined either in the files or in
cloudctl, and may be pinned only to a registered host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudctl.domain import validation
from cloudctl.errors import InvalidInput
from cloudctl.state.model import (
    Document,
    Estate,
    FlavorSpec,
    ImageSpec,
    InvalidEstate,
    NetworkSpec,
    Problem,
    ServerSpec,
    closest,
    expand_names,
)


@dataclass(frozen=True)
class Known:
    """Names cloudctl's SQL holds already (``services.desired.known_names`` reads them).

    ``hosts`` maps each registered host to its availability zone. With ``complete=False``
    (validation without the database) a reference the files do not define is not an error.
    """

    flavors: frozenset[str] = frozenset()
    images: frozenset[str] = frozenset()
    keypairs: frozenset[str] = frozenset()
    server_groups: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    hosts: Mapping[str, str] = field(default_factory=dict)
    complete: bool = True

    @classmethod
    def unchecked(cls) -> Known:
        """Nothing known and nothing checked against cloudctl (offline validation)."""
        return cls(complete=False)


#: A Server field -> (the kind it names, the Known attribute with cloudctl's names, noun).
_REFERENCES: tuple[tuple[str, str, str, str], ...] = (
    ("flavor", "Flavor", "flavors", "flavor"),
    ("image", "Image", "images", "image"),
    ("key", "KeyPair", "keypairs", "key pair"),
    ("group", "ServerGroup", "server_groups", "server group"),
)


def validate(estate: Estate, known: Known) -> list[Problem]:
    """Every problem of ``estate`` against ``known``, sorted by file and line, no repeats."""
    problems = list(estate.problems)
    problems += _duplicates(estate)
    problems += _references(estate, known)
    problems += _hosts(estate, known)
    problems += _server_names(estate)
    problems += _image_fits(estate)
    problems += _network_overlaps(estate)
    return sorted(set(problems))


def require_valid(estate: Estate, known: Known) -> Estate:
    """``estate`` itself when it has no problem, else :class:`InvalidEstate` with them all."""
    problems = validate(estate, known)
    if problems:
        raise InvalidEstate(problems)
    return estate


def _quote(name: str) -> str:
    return f'"{name}"'


def _suggestion(name: str, candidates: Iterable[str]) -> str:
    close = closest(name, candidates)
    return f' (did you mean "{close}"?)' if close else ""


def _duplicates(estate: Estate) -> list[Problem]:
    out: list[Problem] = []
    first: dict[tuple[str, str], Document[Any]] = {}
    for doc in estate.documents:
        key = (doc.kind, doc.name)
        if key not in first:
            first[key] = doc
            continue
        out.append(
            Problem(
                doc.at("metadata.name"),
                "metadata.name",
                f"duplicate {doc.kind} {_quote(doc.name)} (first defined at {first[key].location})",
            )
        )
    return out


def _references(estate: Estate, known: Known) -> list[Problem]:
    out: list[Problem] = []
    for doc in estate.of_kind("Server"):
        spec: ServerSpec = doc.spec
        for attr, kind, known_attr, noun in _REFERENCES:
            path = f"spec.{attr}"
            name = getattr(spec, attr)
            if name is None or path in doc.broken or estate.declares(kind, name):
                continue
            names: frozenset[str] = getattr(known, known_attr)
            if name in names or not known.complete:
                continue
            candidates = [*names, *(d.name for d in estate.of_kind(kind))]
            out.append(
                Problem(
                    doc.at(path),
                    path,
                    f"unknown {noun} {_quote(name)}{_suggestion(name, candidates)}",
                )
            )
    return out


def _zones(estate: Estate, known: Known) -> dict[str, str]:
    """Host -> availability zone once the Host documents are applied."""
    zones = dict(known.hosts)
    for name, doc in estate.hosts.items():
        if name in zones and doc.spec.availability_zone is not None:
            zones[name] = doc.spec.availability_zone
    return zones


def _hosts(estate: Estate, known: Known) -> list[Problem]:
    """Host documents name registered hosts; servers name registered hosts and zones."""
    if not known.complete:
        return []
    out: list[Problem] = []
    for doc in estate.of_kind("Host"):
        if doc.name not in known.hosts:
            out.append(
                Problem(
                    doc.at("metadata.name"),
                    "metadata.name",
                    f"unknown host {_quote(doc.name)}{_suggestion(doc.name, known.hosts)}; "
                    "a Host document manages a host registered by host add or lab up",
                )
            )
    zones = _zones(estate, known)
    for doc in estate.of_kind("Server"):
        spec: ServerSpec = doc.spec
        az = spec.availability_zone
        az_ok = az is None or "spec.availability_zone" in doc.broken
        if not az_ok and zones and az not in zones.values():
            listed = ", ".join(sorted(set(zones.values())))
            out.append(
                Problem(
                    doc.at("spec.availability_zone"),
                    "spec.availability_zone",
                    f"no host is in availability zone {_quote(str(az))} (zones: {listed})",
                )
            )
        host = spec.placement.host_name
        path = "spec.placement.host_name"
        if host is None or path in doc.broken:
            continue
        if host not in zones:
            out.append(
                Problem(
                    doc.at(path), path, f"unknown host {_quote(host)}{_suggestion(host, zones)}"
                )
            )
        elif az is not None and zones[host] != az and spec.placement.host == "pinned":
            out.append(
                Problem(
                    doc.at(path),
                    path,
                    f"host {_quote(host)} is in availability zone {zones[host]}, not {az}",
                )
            )
    return out


def _server_names(estate: Estate) -> list[Problem]:
    """Each replica's name is a valid instance name, declared by one Server document only."""
    out: list[Problem] = []
    owner: dict[str, Document[ServerSpec]] = {}
    for doc in estate.of_kind("Server"):
        spec: ServerSpec = doc.spec
        if {"spec.replicas", "spec.name_pattern"} & doc.broken:
            continue
        path = "spec.name_pattern" if spec.name_pattern is not None else "metadata.name"
        if (
            spec.replicas > 1
            and spec.name_pattern is not None
            and "{index" not in spec.name_pattern
        ):
            out.append(
                Problem(doc.at(path), path, "must contain {index} when replicas is more than 1")
            )
            continue
        try:
            names = expand_names(doc.name, spec.replicas, spec.name_pattern)
        except ValueError as exc:
            out.append(Problem(doc.at(path), path, str(exc)))
            continue
        for name in names:
            try:
                validation.instance_name(name)
            except InvalidInput as exc:
                if path != "metadata.name" or "metadata.name" not in doc.broken:
                    reason = exc.kwargs.get("reason", exc.message)
                    out.append(Problem(doc.at(path), path, f"gives {_quote(name)}: {reason}"))
                break
            other = owner.setdefault(name, doc)
            if other is not doc:
                if other.name == doc.name:
                    break  # the same Server twice: reported as a duplicate document
                out.append(
                    Problem(
                        doc.at(path),
                        path,
                        f"server {_quote(name)} is also declared by Server "
                        f"{_quote(other.name)} ({other.location})",
                    )
                )
    return out


def _image_fits(estate: Estate) -> list[Problem]:
    """A flavor and an image both in the files: the image's minimums fit the flavor."""
    out: list[Problem] = []
    for doc in estate.of_kind("Server"):
        spec: ServerSpec = doc.spec
        flavor_doc = estate.get(FlavorSpec, spec.flavor)
        image_doc = estate.get(ImageSpec, spec.image)
        if flavor_doc is None or image_doc is None or "spec.flavor" in doc.broken:
            continue
        flavor, image = flavor_doc.spec, image_doc.spec
        if flavor.ram_mb < image.min_ram_mb:
            out.append(
                Problem(
                    doc.at("spec.flavor"),
                    "spec.flavor",
                    f"flavor {_quote(spec.flavor)} has {flavor.ram_mb} MiB of RAM, image "
                    f"{_quote(spec.image)} needs at least {image.min_ram_mb} (min_ram_mb)",
                )
            )
        if flavor.disk_gb and flavor.disk_gb < image.min_disk_gb:
            out.append(
                Problem(
                    doc.at("spec.flavor"),
                    "spec.flavor",
                    f"flavor {_quote(spec.flavor)} has a {flavor.disk_gb} GiB disk, image "
                    f"{_quote(spec.image)} needs at least {image.min_disk_gb} (min_disk_gb)",
                )
            )
    return out


def _network_overlaps(estate: Estate) -> list[Problem]:
    """Subnets of different networks do not overlap; a gateway lies inside its subnet."""
    out: list[Problem] = []
    seen: list[tuple[Document[NetworkSpec], ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    for doc in estate.of_kind("Network"):
        spec: NetworkSpec = doc.spec
        if "spec.cidr" in doc.broken:
            continue
        net = ipaddress.ip_network(spec.cidr, strict=False)
        for other, other_net in seen:
            if (
                other.name != doc.name
                and net.version == other_net.version
                and net.overlaps(other_net)
            ):
                out.append(
                    Problem(
                        doc.at("spec.cidr"),
                        "spec.cidr",
                        f"{net} overlaps {other_net} of Network {_quote(other.name)} "
                        f"({other.at('spec.cidr')})",
                    )
                )
        seen.append((doc, net))
        if spec.gateway is not None and "spec.gateway" not in doc.broken:
            gateway = ipaddress.ip_address(spec.gateway)
            if gateway not in net or gateway in (net.network_address, net.broadcast_address):
                out.append(
                    Problem(
                        doc.at("spec.gateway"),
                        "spec.gateway",
                        f"{gateway} is not a host address of {net}",
                    )
                )
    return out
