#!/usr/bin/python
"""Ansible module: read-only description of libvirt domains, for ``cloudctl adopt`` (cloudctl)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import validate_domain_name
from ansible.module_utils.cloudctl_libvirt import (
    connect,
    is_no_domain,
    libvirt,
    lookup_domain,
    parse_domain_xml,
    state_name,
)

DOCUMENTATION = r"""
---
module: cloudctl_domain_info
short_description: Describe libvirt domains (identity, state, size, disks and NICs)
description:
  - Reads each named domain's state and XML description through libvirt and reports what
    C(cloudctl adopt) needs to book it - UUID, state, vCPUs, memory, disks with their virtual
    sizes, and the MAC addresses of its NICs.
  - A disk's sizes come from libvirt (virDomainGetBlockInfo, which works on stopped domains
    too); if libvirt cannot tell, from C(qemu-img info -U) when the file is visible here.
  - A name the host does not know is reported with C(found=false), not as a failure.
  - Never changes anything; safe in check mode.
options:
  libvirt_uri:
    description: libvirt connection URI of the host, e.g. C(qemu:///system).
    type: str
    required: true
  names:
    description: Names of the domains to describe.
    type: list
    elements: str
    required: true
requirements:
  - libvirt-python
author: cloudctl
"""

EXAMPLES = r"""
- name: Describe a guest before adopting it
  cloudctl_domain_info:
    libvirt_uri: qemu:///system
    names: [legacy-web]
  register: info

- name: Show its root disk
  ansible.builtin.debug:
    msg: "{{ info.domains[0].disks[0].source }}"
"""

RETURN = r"""
domains:
  description: One entry per requested name, in the order given.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The domain name asked for.
      type: str
    found:
      description: Whether the host has a domain of that name; the other keys are absent if not.
      type: bool
    uuid:
      description: The domain's UUID (lower case).
      type: str
    state:
      description: libvirt state name (running, paused, shutoff, ...).
      type: str
      sample: running
    has_managed_save:
      description: A managed-save image exists (the guest was suspended to disk).
      type: bool
    persistent:
      description: The domain is defined (not transient).
      type: bool
    autostart:
      description: libvirt starts the domain with the daemon.
      type: bool
    domain_type:
      description: The C(type) attribute of the domain element (kvm, qemu).
      type: str
    vcpus:
      description: vCPUs the guest has (the current count if it differs from the maximum).
      type: int
    memory_mb:
      description: Maximum memory in MiB (rounded down).
      type: int
    disks:
      description: Every C(disk) device, in XML order.
      type: list
      elements: dict
      sample:
        - target: vda
          bus: virtio
          device: disk
          type: file
          format: qcow2
          source: /var/lib/libvirt/images/legacy-web.qcow2
          readonly: false
          virtual_size_bytes: 10737418240
          allocation_bytes: 1966080
    nics:
      description: Every C(interface) device, in XML order.
      type: list
      elements: dict
      sample:
        - mac: "52:54:00:12:34:56"
          type: bridge
          source: br0
          model: virtio
    macs:
      description: The MAC addresses of the NICs, in XML order.
      type: list
      elements: str
"""

MEMORY_UNITS = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}


def memory_mb(root: ET.Element) -> int:
    """The domain's maximum memory in MiB (libvirt's default unit is KiB)."""
    element = root.find("memory")
    if element is None or not (element.text or "").strip():
        return 0
    factor = MEMORY_UNITS.get((element.get("unit") or "KiB").lower(), 1024)
    return int(element.text.strip()) * factor // (1024 * 1024)


def vcpus(root: ET.Element) -> int:
    """The vCPUs the guest runs with: ``current`` when set, else the maximum."""
    element = root.find("vcpu")
    if element is None:
        return 1
    current = element.get("current")
    return int(current if current else (element.text or "1").strip())


def _source(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    for attr in ("file", "dev", "bridge", "network", "name", "volume", "path"):
        if element.get(attr):
            return element.get(attr)
    return None


def parse_disks(root: ET.Element) -> list[dict[str, Any]]:
    """The disk devices of a domain XML (sizes filled in later)."""
    disks = []
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        driver = disk.find("driver")
        disks.append(
            {
                "target": target.get("dev") if target is not None else None,
                "bus": target.get("bus") if target is not None else None,
                "device": disk.get("device", "disk"),
                "type": disk.get("type", "file"),
                "format": driver.get("type") if driver is not None else None,
                "source": _source(disk.find("source")),
                "readonly": disk.find("readonly") is not None,
                "virtual_size_bytes": None,
                "allocation_bytes": None,
            }
        )
    return disks


def parse_nics(root: ET.Element) -> list[dict[str, Any]]:
    """The network interfaces of a domain XML."""
    nics = []
    for nic in root.findall("devices/interface"):
        mac = nic.find("mac")
        model = nic.find("model")
        nics.append(
            {
                "mac": mac.get("address", "").lower() if mac is not None else None,
                "type": nic.get("type"),
                "source": _source(nic.find("source")),
                "model": model.get("type") if model is not None else None,
            }
        )
    return nics


def qemu_img_sizes(module: Any, path: str) -> tuple[int, int] | None:
    """(virtual size, allocation) of an image file from ``qemu-img info``, or None."""
    qemu_img = module.get_bin_path("qemu-img")
    if not qemu_img or not os.path.exists(path):
        return None
    rc, out, _err = module.run_command([qemu_img, "info", "-U", "--output=json", path])
    if rc != 0:
        return None
    try:
        info = json.loads(out)
        return int(info["virtual-size"]), int(info.get("actual-size", 0))
    except (ValueError, KeyError, TypeError):
        return None


def fill_sizes(module: Any, dom: Any, disks: list[dict[str, Any]]) -> None:
    """Set each disk's sizes from libvirt, else from qemu-img; unknown stays None."""
    for disk in disks:
        if not disk["source"] or disk["type"] not in ("file", "block"):
            continue
        try:
            capacity, allocation, _physical = dom.blockInfo(disk["target"] or disk["source"], 0)
        except libvirt.libvirtError:
            sizes = qemu_img_sizes(module, disk["source"])
            if sizes is None:
                continue
            capacity, allocation = sizes
        disk["virtual_size_bytes"] = int(capacity)
        disk["allocation_bytes"] = int(allocation)


def describe(module: Any, conn: Any, name: str) -> dict[str, Any]:
    """One domain's description, or ``found: false``."""
    dom = lookup_domain(conn, name)
    if dom is None:
        return {"name": name, "found": False}
    root = parse_domain_xml(dom.XMLDesc(0))
    state = state_name(dom.state()[0])
    disks = parse_disks(root)
    fill_sizes(module, dom, disks)
    nics = parse_nics(root)
    return {
        "name": name,
        "found": True,
        "uuid": dom.UUIDString().lower(),
        "state": state,
        "has_managed_save": bool(dom.hasManagedSaveImage(0)),
        "persistent": bool(dom.isPersistent()),
        "autostart": bool(dom.autostart()) if dom.isPersistent() else False,
        "domain_type": root.get("type"),
        "vcpus": vcpus(root),
        "memory_mb": memory_mb(root),
        "disks": disks,
        "nics": nics,
        "macs": [n["mac"] for n in nics if n["mac"]],
    }


ARGUMENT_SPEC: dict[str, Any] = {
    "libvirt_uri": {"type": "str", "required": True},
    "names": {"type": "list", "elements": "str", "required": True},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    names = module.params["names"]
    try:
        for name in names:
            validate_domain_name(name)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    conn = connect(module, module.params["libvirt_uri"], readonly=True)
    domains = []
    try:
        for name in names:
            try:
                domains.append(describe(module, conn, name))
            except libvirt.libvirtError as exc:
                if not is_no_domain(exc):
                    module.fail_json(msg=f"cannot describe domain {name}: {exc}")
                domains.append({"name": name, "found": False})  # vanished while being read
            except ValueError as exc:
                module.fail_json(msg=f"cannot describe domain {name}: {exc}")
    finally:
        conn.close()
    module.exit_json(changed=False, domains=domains)


if __name__ == "__main__":
    main()
