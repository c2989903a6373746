#!/usr/bin/python
# Copyright: cloudctl contributors
# Apache License 2.0
"""Ansible module: a Linux bridge for guests' NICs, up, with no address on the host side."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: libvirt_host_bridge
short_description: Ensure a bare Linux bridge (no IP address) exists and is up, with iproute2
description:
  - Reads the link with C(ip -json -details addr show) and plans the commands needed, each with the
    reason it is needed; in check mode it returns that plan and runs nothing.
  - The bridge carries guests' traffic only; the host has no address on it, IPv4 or IPv6 (with
    I(disable_ipv6) the kernel does not even add a link-local address or send router solicitations).
options:
  name:
    description: Bridge name (at most 15 characters).
    type: str
    required: true
  disable_ipv6:
    description: Set net.ipv6.conf.NAME.disable_ipv6=1 so the host never gets an IPv6 address on it.
    type: bool
    default: true
  state:
    description: C(present) creates it / brings it up / strips addresses; C(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Supports check mode.
  - Not persistent across reboots (no init system here): run the role again after a reboot.
"""

EXAMPLES = r"""
- name: Guest bridge
  libvirt_host_bridge:
    name: cloudbr0
"""

RETURN = r"""
actions:
  description: The commands run (or that would run in check mode), each with its reason.
  type: list
  elements: dict
  returned: always
link:
  description: The link after the run (ifname, kind, flags, operstate, addresses).
  type: dict
  returned: when the link exists
"""

OPT_DIRS = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]


def read_link(module: AnsibleModule, ip: str, name: str) -> dict[str, Any] | None:
    """The link as `ip -json -details addr show dev NAME` reports it, or None when absent."""
    rc, out, err = module.run_command([ip, "-json", "-details", "addr", "show", "dev", name])
    if rc != 0:
        if "does not exist" in err:
            return None
        module.fail_json(msg=f"ip addr show dev {name} failed: {err.strip()}", rc=rc)
    links: list[dict[str, Any]] = json.loads(out or "[]")
    return links[0] if links else None


def sysctl_path(name: str) -> str:
    return f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"


def ipv6_disabled(name: str) -> bool | None:
    """True/False from the sysctl, None when the kernel has no IPv6 for it."""
    try:
        with open(sysctl_path(name), encoding="ascii") as handle:
            return handle.read().strip() == "1"
    except OSError:
        return None


def plan(
    link: dict[str, Any] | None, name: str, disable_ipv6: bool, state: str
) -> list[dict[str, Any]]:
    """Pure: the steps from LINK (None if absent) to the desired state, each with a reason."""
    steps: list[dict[str, Any]] = []
    if state == "absent":
        if link is not None:
            steps.append({"ip": ["link", "del", "dev", name], "why": "link exists"})
        return steps
    if link is None:
        steps.append({"ip": ["link", "add", "name", name, "type", "bridge"], "why": "no such link"})
        if disable_ipv6:
            steps.append({"sysctl": "1", "why": "new bridge: no IPv6 on the host side"})
        steps.append({"ip": ["link", "set", "dev", name, "up"], "why": "new bridge is down"})
        return steps
    kind = link.get("linkinfo", {}).get("info_kind")
    if kind != "bridge":
        raise ValueError(f"link {name} exists but is a {kind or 'plain device'}, not a bridge")
    # Disabling IPv6 removes every IPv6 address, so only what is left needs a flush.
    drops_ipv6 = disable_ipv6 and link.get("_ipv6_disabled") is False
    if drops_ipv6:
        steps.append({"sysctl": "1", "why": "IPv6 enabled on the bridge"})
    addresses = [
        f"{a.get('local')}/{a.get('prefixlen')}"
        for a in link.get("addr_info", [])
        if not (drops_ipv6 and a.get("family") == "inet6")
    ]
    if addresses:
        steps.append({"ip": ["addr", "flush", "dev", name], "why": f"addresses {addresses}"})
    if "UP" not in link.get("flags", []):
        steps.append({"ip": ["link", "set", "dev", name, "up"], "why": "bridge is down"})
    return steps


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "disable_ipv6": {"type": "bool", "default": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        supports_check_mode=True,
    )
    name: str = module.params["name"]
    if not name or len(name) > 15 or "/" in name or name.strip() != name:
        module.fail_json(msg=f"invalid interface name {name!r}")
    ip = module.get_bin_path("ip", required=True, opt_dirs=OPT_DIRS)

    link = read_link(module, ip, name)
    if link is not None:
        link["_ipv6_disabled"] = ipv6_disabled(name)
    try:
        steps = plan(link, name, module.params["disable_ipv6"], module.params["state"])
    except ValueError as error:
        module.fail_json(msg=str(error))

    if not module.check_mode:
        for step in steps:
            if "ip" in step:
                module.run_command([ip, *step["ip"]], check_rc=True)
            elif os.path.exists(sysctl_path(name)):
                with open(sysctl_path(name), "w", encoding="ascii") as handle:
                    handle.write(step["sysctl"])
        link = read_link(module, ip, name)

    result: dict[str, Any] = {"changed": bool(steps), "actions": steps}
    if link is not None:
        result["link"] = {
            "ifname": link.get("ifname"),
            "kind": link.get("linkinfo", {}).get("info_kind"),
            "flags": link.get("flags", []),
            "operstate": link.get("operstate"),
            "addresses": [
                f"{a.get('local')}/{a.get('prefixlen')}" for a in link.get("addr_info", [])
            ],
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
