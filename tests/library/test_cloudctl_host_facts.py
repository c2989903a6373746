"""Tests of library/cloudctl_host_facts.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import libvirt
import pytest

from tests.library.helpers import LIBVIRT_URI, PlayRunner, tiny_domain_xml


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_host_facts")


CAPS = """<capabilities>
  <host>
    <uuid>84f758a8-00c0-4ea0-a74f-95b79d00a3d9</uuid>
    <cpu><arch>x86_64</arch><model>kvm64</model><vendor>AMD</vendor>
      <feature name='vme'/><feature name='avx2'/></cpu>
  </host>
  <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/><domain type='xen'/></arch></guest>
  <guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/>
    <domain type='kvm'/></arch></guest>
  <guest><os_type>xen</os_type><arch name='x86_64'><domain type='xen'/></arch></guest>
</capabilities>"""


def test_parse_capabilities(mod: ModuleType) -> None:
    assert mod.parse_capabilities(CAPS) == {
        "host_uuid": "84f758a8-00c0-4ea0-a74f-95b79d00a3d9",
        "cpu_arch": "x86_64",
        "cpu_model": "kvm64",
        "cpu_vendor": "AMD",
        "cpu_features": ["vme", "avx2"],
        "virt_types": ["qemu", "kvm"],
    }


def test_gather_on_the_test_driver(mod: ModuleType, tmp_path: Path) -> None:
    conn = libvirt.open("test:///default")
    try:
        facts = mod.gather(conn, str(tmp_path / "not" / "there"))
    finally:
        conn.close()
    assert facts["hypervisor_type"] == "TEST"
    assert facts["vcpus"] > 0 and facts["memory_mb"] > 0
    assert {"name": "test", "uuid": facts["domains"][0]["uuid"], "state": "running"} in facts[
        "domains"
    ]
    assert facts["disk_gb"] >= facts["disk_free_gb"] >= 0
    assert not (tmp_path / "not").exists()


@pytest.mark.integration
def test_host_facts_through_ansible(
    ansible_play: PlayRunner, libvirt_conn: Any, domain_names: Callable[[], str], tmp_path: Path
) -> None:
    name = domain_names()
    libvirt_conn.defineXML(tiny_domain_xml(name))
    instances_path = tmp_path / "no" / "such" / "instances"
    task = {
        "cloudctl_host_facts": {"libvirt_uri": LIBVIRT_URI, "instances_path": str(instances_path)}
    }
    check, real = ansible_play([{**task, "check_mode": True}, task])
    assert check["changed"] is False and real["changed"] is False
    facts = real["host_facts"]
    assert check["host_facts"]["host_uuid"] == facts["host_uuid"]

    caps = ET.fromstring(libvirt_conn.getCapabilities())
    assert facts["host_uuid"] == caps.findtext("host/uuid")
    assert facts["hostname"] == libvirt_conn.getHostname()
    assert facts["hypervisor_type"] == "QEMU"
    assert facts["hypervisor_version"] == libvirt_conn.getVersion()
    assert facts["libvirt_version"] == libvirt_conn.getLibVersion()
    assert facts["cpu_arch"] == caps.findtext("host/cpu/arch")
    assert isinstance(facts["cpu_features"], list) and facts["cpu_model"]
    assert "qemu" in facts["virt_types"]
    assert facts["vcpus"] == libvirt_conn.getInfo()[2]
    # All-cells memory stats, as /proc/meminfo says (getInfo()[1] under-reports on this VM).
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    meminfo_kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal:")))
    assert facts["memory_mb"] == meminfo_kib // 1024
    assert facts["disk_gb"] > 0 and 0 <= facts["disk_free_gb"] <= facts["disk_gb"]
    uuid = libvirt_conn.lookupByName(name).UUIDString()
    assert {"name": name, "uuid": uuid, "state": "shutoff"} in facts["domains"]
    assert not (tmp_path / "no").exists()
