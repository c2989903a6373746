"""Tests of library/cloudctl_domain_info.py: XML parsing, the test driver, and the real daemon
through ansible-playbook (check mode, real run, check mode again: nothing ever changes)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import libvirt
import pytest

from tests.library.helpers import LIBVIRT_URI, TEST_VIRT_TYPE, PlayRunner, tiny_domain_xml

QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_domain_info")


class StubModule:
    """What ``fill_sizes`` asks of an AnsibleModule: qemu-img's path and running it."""

    def get_bin_path(self, name: str) -> str | None:
        return shutil.which(name)

    def run_command(self, argv: list[str]) -> tuple[int, str, str]:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr


XML = """<domain type='kvm'>
  <name>legacy</name>
  <memory unit='GiB'>2</memory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/srv/legacy.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:AB:CD:EF'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <source network='default'/>
    </interface>
  </devices>
</domain>"""


def test_parse_sizes_disks_and_nics(mod: ModuleType) -> None:
    root = ET.fromstring(XML)
    assert mod.memory_mb(root) == 2048
    assert mod.vcpus(root) == 2
    assert mod.parse_disks(root) == [
        {
            "target": "vda",
            "bus": "virtio",
            "device": "disk",
            "type": "file",
            "format": "qcow2",
            "source": "/srv/legacy.qcow2",
            "readonly": False,
            "virtual_size_bytes": None,
            "allocation_bytes": None,
        },
        {
            "target": "sda",
            "bus": "sata",
            "device": "cdrom",
            "type": "file",
            "format": None,
            "source": None,
            "readonly": True,
            "virtual_size_bytes": None,
            "allocation_bytes": None,
        },
        {
            "target": "vdb",
            "bus": "virtio",
            "device": "disk",
            "type": "network",
            "format": None,
            "source": "pool/img",
            "readonly": False,
            "virtual_size_bytes": None,
            "allocation_bytes": None,
        },
    ]
    assert mod.parse_nics(root) == [
        {"mac": "52:54:00:ab:cd:ef", "type": "bridge", "source": "br0", "model": "virtio"},
        {"mac": None, "type": "network", "source": "default", "model": None},
    ]


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        ("<memory>131072</memory>", 128),
        ("<memory unit='KiB'>131072</memory>", 128),
        ("<memory unit='M'>512</memory>", 512),
        ("<memory unit='bytes'>1073741824</memory>", 1024),
        ("", 0),
    ],
)
def test_memory_units(mod: ModuleType, memory: str, expected: int) -> None:
    assert mod.memory_mb(ET.fromstring(f"<domain>{memory}<vcpu>1</vcpu></domain>")) == expected


@pytest.fixture
def test_conn() -> Iterator[Any]:
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


def test_describe_on_the_test_driver(mod: ModuleType, test_conn: Any, tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(disk), "300M"], check=True)
    dom_uuid = str(uuid.uuid4())
    xml = XML.replace("<name>legacy</name>", f"<name>legacy</name><uuid>{dom_uuid}</uuid>")
    xml = xml.replace("/srv/legacy.qcow2", str(disk)).replace("type='kvm'", "type='test'")
    test_conn.defineXML(xml)
    info = mod.describe(StubModule(), test_conn, "legacy")
    assert info["found"] is True
    assert (info["uuid"], info["state"], info["vcpus"], info["memory_mb"]) == (
        dom_uuid,
        "shutoff",
        2,
        2048,
    )
    assert (info["persistent"], info["has_managed_save"], info["domain_type"]) == (
        True,
        False,
        "test",
    )
    root = info["disks"][0]
    # The test driver makes its block info up; the real daemon's is checked below.
    assert root["source"] == str(disk) and root["virtual_size_bytes"] > 0
    assert info["disks"][1]["virtual_size_bytes"] is None  # an empty cdrom
    assert info["disks"][2]["virtual_size_bytes"] is None  # a network disk
    assert info["macs"][0] == "52:54:00:ab:cd:ef"  # libvirt generated the second one
    assert mod.describe(StubModule(), test_conn, "nope") == {"name": "nope", "found": False}


class NoBlockInfo:
    """A domain whose libvirt cannot tell a disk's size."""

    def blockInfo(self, path: str, flags: int = 0) -> list[int]:
        raise libvirt.libvirtError("unsupported")


def test_sizes_fall_back_to_qemu_img(mod: ModuleType, tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(disk), "300M"], check=True)
    disks = [
        {"target": "vda", "type": "file", "source": str(disk)},
        {"target": "vdb", "type": "file", "source": str(tmp_path / "gone.qcow2")},
    ]
    mod.fill_sizes(StubModule(), NoBlockInfo(), disks)
    assert disks[0]["virtual_size_bytes"] == 300 * 1024**2 and disks[0]["allocation_bytes"] > 0
    assert "virtual_size_bytes" not in disks[1]  # unknown: left as parsed


# --- integration: the real daemon through ansible-playbook -------------------------------------
def _domain_with_disk(name: str, disk: Path) -> str:
    root = ET.fromstring(tiny_domain_xml(name, domain_type=TEST_VIRT_TYPE, memory_mib=96))
    devices = ET.SubElement(root, "devices")
    d = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(d, "driver", name="qemu", type="qcow2")
    ET.SubElement(d, "source", file=str(disk))
    ET.SubElement(d, "target", dev="vda", bus="virtio")
    nic = ET.SubElement(devices, "interface", type="bridge")
    ET.SubElement(nic, "mac", address="52:54:00:12:34:56")
    ET.SubElement(nic, "source", bridge="cctest-nobr0")
    ET.SubElement(nic, "model", type="virtio")
    return ET.tostring(root, encoding="unicode")


@pytest.mark.integration
def test_domain_info_triad_real_daemon(
    ansible_play: PlayRunner, libvirt_conn: Any, domain_names: Callable[[], str], tmp_path: Path
) -> None:
    stopped, running = domain_names(), domain_names()
    disk = tmp_path / "disk.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(disk), "200M"], check=True)
    libvirt_conn.defineXML(_domain_with_disk(stopped, disk))  # its bridge does not exist: stays off
    libvirt_conn.defineXML(tiny_domain_xml(running)).create()
    task = {
        "cloudctl_domain_info": {
            "libvirt_uri": LIBVIRT_URI,
            "names": [stopped, running, "cctest-none"],
        }
    }
    before, real, after = ansible_play(
        [{**task, "check_mode": True}, task, {**task, "check_mode": True}]
    )
    for result in (before, real, after):
        assert result["changed"] is False and result["failed"] is False
    assert before["domains"] == real["domains"] == after["domains"]
    off, on, missing = real["domains"]
    assert off["uuid"] == libvirt_conn.lookupByName(stopped).UUIDString()
    assert (off["state"], off["vcpus"], off["memory_mb"], off["persistent"]) == (
        "shutoff",
        1,
        96,
        True,
    )
    [root] = off["disks"]
    assert (root["source"], root["format"], root["virtual_size_bytes"]) == (
        str(disk),
        "qcow2",
        200 * 1024**2,
    )
    assert off["macs"] == ["52:54:00:12:34:56"]
    assert off["nics"] == [
        {"mac": "52:54:00:12:34:56", "type": "bridge", "source": "cctest-nobr0", "model": "virtio"}
    ]
    assert (on["name"], on["state"], on["memory_mb"], on["disks"], on["macs"]) == (
        running,
        "running",
        64,
        [],
        [],
    )
    assert missing == {"name": "cctest-none", "found": False}


@pytest.mark.integration
def test_domain_info_refuses_a_bad_name(ansible_play: PlayRunner) -> None:
    [result] = ansible_play(
        [
            {
                "cloudctl_domain_info": {"libvirt_uri": LIBVIRT_URI, "names": ["../etc"]},
                "ignore_errors": True,
            }
        ]
    )
    assert result["failed"] is True
    assert "invalid domain name '../etc'" in result["msg"]
