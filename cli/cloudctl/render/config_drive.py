"""The files of a NoCloud config drive: ``meta-data``, ``user-data`` and ``network-config``.

YAML is produced with ``yaml.safe_dump``, never by templating, so every value is quoted exactly
when YAML needs it. A plain host name stays unquoted on its own ``local-hostname: NAME`` line,
which lets a minimal guest (busybox ``/init``) read it with grep/sed; host names YAML would read as
another type (``123``, ``true``) come out quoted, as they must.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from cloudctl.render.spec import ConfigDriveSpec, NetworkConfigNic

#: ``user-data`` when the request carries none: an empty cloud-config.
DEFAULT_USER_DATA = "#cloud-config\n{}\n"
#: The volume label cloud-init's NoCloud datasource looks for.
CONFIG_DRIVE_LABEL = "cidata"


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(
        data,
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=True,
        width=float("inf"),
    )


def render_meta_data(spec: ConfigDriveSpec) -> str:
    """``meta-data``: instance-id, local-hostname, public-keys and, if any, ``meta``."""
    data: dict[str, Any] = {
        "instance-id": spec.uuid,
        "local-hostname": spec.hostname,
        "public-keys": list(spec.public_keys),
    }
    if spec.metadata:
        data["meta"] = dict(sorted(spec.metadata.items()))
    return _dump(data)


def _ethernet(nic: NetworkConfigNic) -> dict[str, Any]:
    interface = ipaddress.ip_interface(f"{nic.ip}/{nic.prefix}")
    entry: dict[str, Any] = {
        "match": {"macaddress": nic.mac},
        "addresses": [str(interface)],
    }
    if nic.gateway is not None:
        default = "0.0.0.0/0" if nic.version == 4 else "::/0"
        entry["routes"] = [{"to": default, "via": nic.gateway}]
    if nic.dns:
        entry["nameservers"] = {"addresses": list(nic.dns)}
    return entry


def render_network_config(spec: ConfigDriveSpec) -> str:
    """``network-config``: cloud-init network config version 2, NICs matched by MAC address.

    The ethernet ids are ``eth0``, ``eth1``... in ``spec.network`` order; they are labels only
    (no ``set-name``), the guest keeps its own interface names.
    """
    ethernets = {f"eth{i}": _ethernet(nic) for i, nic in enumerate(spec.network)}
    return _dump({"version": 2, "ethernets": ethernets})


def render_config_drive(spec: ConfigDriveSpec) -> dict[str, str]:
    """The config drive's files by name: ``meta-data``, ``user-data``, ``network-config``."""
    return {
        "meta-data": render_meta_data(spec),
        "user-data": DEFAULT_USER_DATA if spec.user_data is None else spec.user_data,
        "network-config": render_network_config(spec),
    }
