"""The Ansible inventory of one run, built from :class:`HostTarget` values (pure, no I/O).

Every host lands in one group, ``compute``, with the variables that tell Ansible how to reach it
(``ansible_connection``, ``ansible_host``, ssh settings), the pinned Python interpreter (discovery
picks a wrong pyenv shim on our machines, so it is never left to Ansible) and ``libvirt_uri``, which
the ``cloudctl_*`` modules read. ``HostTarget.hostvars`` are added last and may not override those.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from cloudctl.errors import InvalidInput
from cloudctl.executor.base import HostTarget

#: The inventory group every host of a run belongs to; playbooks target ``hosts: compute``.
GROUP = "compute"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_GROUP_NAMES = frozenset({"all", "ungrouped", GROUP})

#: Variables the executor sets itself; ``HostTarget.hostvars`` may not carry them.
GENERATED_VARS = frozenset(
    {
        "ansible_connection",
        "ansible_host",
        "ansible_user",
        "ansible_port",
        "ansible_ssh_private_key_file",
        "ansible_ssh_common_args",
        "ansible_python_interpreter",
        "libvirt_uri",
    }
)


def host_vars(host: HostTarget) -> dict[str, Any]:
    """The inventory variables of one host (ssh settings only for ``connection="ssh"``)."""
    if not host.python_interpreter:
        raise InvalidInput(reason=f"host {host.name!r} has no python_interpreter")
    hv: dict[str, Any] = {"ansible_connection": host.connection}
    if host.address:
        hv["ansible_host"] = host.address
    if host.connection == "ssh":
        if host.ssh_user:
            hv["ansible_user"] = host.ssh_user
        if host.ssh_port is not None:
            hv["ansible_port"] = int(host.ssh_port)
        if host.ssh_private_key:
            hv["ansible_ssh_private_key_file"] = host.ssh_private_key
        if host.ssh_common_args:
            hv["ansible_ssh_common_args"] = host.ssh_common_args
    hv["ansible_python_interpreter"] = host.python_interpreter
    hv["libvirt_uri"] = host.libvirt_uri
    for key, value in host.hostvars.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidInput(reason=f"host {host.name!r}: {key!r} is not a valid variable name")
        if key in GENERATED_VARS:
            raise InvalidInput(
                reason=f"host {host.name!r}: hostvars may not set {key!r} (the executor does)"
            )
        hv[key] = value
    return hv


def render_inventory(hosts: Sequence[HostTarget]) -> dict[str, Any]:
    """The inventory (Ansible's YAML/JSON inventory shape) with every host in group ``compute``."""
    rendered: dict[str, Any] = {}
    for host in hosts:
        if not _NAME_RE.match(host.name) or host.name in _GROUP_NAMES:
            raise InvalidInput(reason=f"{host.name!r} is not a usable inventory host name")
        if host.name in rendered:
            raise InvalidInput(reason=f"host {host.name!r} appears twice in one run")
        rendered[host.name] = host_vars(host)
    return {"all": {"children": {GROUP: {"hosts": rendered}}}}


def protect_templates(value: Any) -> Any:
    """``value`` with every string that contains ``{`` marked unsafe for Ansible's templating.

    Ansible renders Jinja in inventory variables and extra vars when they are used; data such as
    user-data or descriptions must arrive verbatim, never be evaluated on the controller. Such
    strings become ``{"__ansible_unsafe": "..."}``, the JSON form of ``!unsafe`` that Ansible's
    loaders understand; other strings stay as they are, so the files stay readable.
    """
    if isinstance(value, str):
        return {"__ansible_unsafe": value} if "{" in value else value
    if isinstance(value, Mapping):
        return {k: protect_templates(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [protect_templates(v) for v in value]
    return value
