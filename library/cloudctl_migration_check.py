#!/usr/bin/python
"""Ansible module: what a move needs to know of a host (hypervisor, CPU, shared storage)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import (
    DEFAULT_INSTANCES_PATH,
    guest_dir,
    validate_filename,
)
from ansible.module_utils.cloudctl_libvirt import connect, libvirt

DOCUMENTATION = r"""
---
module: cloudctl_migration_check
short_description: Facts and checks for migrating guests to or from this host
description:
  - Reports the hypervisor type and version, the libvirt version and this host's CPU as
    C(<cpu>) XML (from the capabilities), the input of a CPU comparison on another host.
  - With I(cpu_xml), compares that CPU with this host's (C(virConnectCompareCPU)) and reports
    C(incompatible), C(identical) or C(superset); an incompatible CPU fails the task.
  - With I(probe), manages a probe file in I(instances_path) (Nova's shared storage test) - the
    destination creates it (C(present)), the source looks for it (C(query)) and the destination
    removes it (C(absent)).
  - With I(instance), reports whether C(<instances_path>/<uuid>/disk) exists (an evacuation's
    test for a disk kept on shared storage).
options:
  libvirt_uri:
    description: libvirt connection URI of the host.
    type: str
    required: true
  instances_path:
    description: The host's instances path.
    type: path
    default: /var/lib/cloudctl/instances
  probe:
    description: File name of the shared storage probe.
    type: str
  probe_state:
    description: C(present) creates the probe, C(absent) removes it, C(query) only looks.
    type: str
    choices: [present, absent, query]
    default: query
  cpu_xml:
    description: A C(<cpu>) element (another host's CPU) to compare with this host's.
    type: str
  instance:
    description: An instance UUID whose root disk to look for.
    type: str
requirements:
  - libvirt-python
author: cloudctl
"""

EXAMPLES = r"""
- name: Destination creates the probe
  cloudctl_migration_check:
    libvirt_uri: qemu:///system
    probe: cloudctl-probe-1234
    probe_state: present

- name: Destination checks the source's CPU
  cloudctl_migration_check:
    libvirt_uri: qemu:///system
    cpu_xml: "{{ hostvars['lab-1'].source_facts.cpu_xml }}"
"""

RETURN = r"""
hypervisor_type:
  description: C(virConnectGetType), e.g. C(QEMU).
  returned: always
  type: str
hypervisor_version:
  description: C(virConnectGetVersion) (major * 1000000 + minor * 1000 + release).
  returned: always
  type: int
libvirt_version:
  description: C(virConnectGetLibVersion).
  returned: always
  type: int
cpu_xml:
  description: This host's CPU as a C(<cpu>) element.
  returned: always
  type: str
cpu_compare:
  description: With I(cpu_xml), C(incompatible), C(identical) or C(superset).
  returned: when cpu_xml is given
  type: str
probe_found:
  description: With I(probe), whether the probe file exists (before a change).
  returned: when probe is given
  type: bool
instance_disk:
  description: With I(instance), whether its root disk exists here.
  returned: when instance is given
  type: bool
"""

COMPARE = {0: "incompatible", 1: "identical", 2: "superset"}


def host_cpu_xml(caps_xml: str) -> str:
    """The ``<host><cpu>`` element of capabilities XML, as a standalone ``<cpu>``."""
    root = ET.fromstring(caps_xml)
    cpu = root.find("host/cpu")
    if cpu is None:
        raise ValueError("the capabilities have no host CPU")
    for child in list(cpu):
        # Topology, cache, pages and counters describe this machine, not what guests can use.
        if child.tag in (
            "topology",
            "pages",
            "cache",
            "counter",
            "maxphysaddr",
            "migration_features",
        ):
            cpu.remove(child)
    return ET.tostring(cpu, encoding="unicode")


ARGUMENT_SPEC: dict[str, Any] = {
    "libvirt_uri": {"type": "str", "required": True},
    "instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH},
    "probe": {"type": "str"},
    "probe_state": {"type": "str", "choices": ["present", "absent", "query"], "default": "query"},
    "cpu_xml": {"type": "str"},
    "instance": {"type": "str"},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    conn = connect(module, p["libvirt_uri"], readonly=True)
    result: dict[str, Any] = {"changed": False}
    try:
        result["hypervisor_type"] = conn.getType()
        result["hypervisor_version"] = int(conn.getVersion())
        result["libvirt_version"] = int(conn.getLibVersion())
        result["cpu_xml"] = host_cpu_xml(conn.getCapabilities())
        if p["cpu_xml"]:
            code = conn.compareCPU(p["cpu_xml"], 0)
            result["cpu_compare"] = COMPARE.get(code, "error")
    except (ValueError, ET.ParseError, libvirt.libvirtError) as exc:
        module.fail_json(msg=f"cannot read the host's hypervisor facts: {exc}", **result)
    finally:
        conn.close()
    if p["probe"]:
        try:
            path = os.path.join(p["instances_path"], validate_filename(p["probe"]))
        except ValueError as exc:
            module.fail_json(msg=str(exc))
        result["probe_found"] = os.path.exists(path)
        wanted = p["probe_state"]
        if wanted == "present" and not result["probe_found"]:
            result["changed"] = True
            if not module.check_mode:
                with open(path, "w") as handle:
                    handle.write("cloudctl shared storage probe\n")
        elif wanted == "absent" and result["probe_found"]:
            result["changed"] = True
            if not module.check_mode:
                os.unlink(path)
    if p["instance"]:
        try:
            disk = os.path.join(guest_dir(p["instances_path"], p["instance"]), "disk")
        except ValueError as exc:
            module.fail_json(msg=str(exc))
        result["instance_disk"] = os.path.isfile(disk)
    if result.get("cpu_compare") == "incompatible":
        module.fail_json(msg="the source host's CPU is incompatible with this host's", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
