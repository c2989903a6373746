"""Specs for the render tests: a valid default and named variants covering every template branch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cloudctl.render import DiskFormat, DiskSpec, DomainSpec, NicSpec

UUID = "6f1c2b3a-1d2e-4f5a-8b9c-0d1e2f3a4b5c"
MAC1 = "52:54:00:12:34:01"
MAC2 = "52:54:00:12:34:02"
INSTANCES = "/var/lib/cloudctl/instances"


def disk(target: str = "vda", fmt: DiskFormat = "qcow2", **kwargs: Any) -> DiskSpec:
    """A disk under the instance directory, named after its target."""
    return DiskSpec(f"{INSTANCES}/{UUID}/{target}.{fmt}", target, fmt, **kwargs)


def domain(**overrides: Any) -> DomainSpec:
    """A valid qemu-type guest with one qcow2 disk and one bridged NIC, changed by ``overrides``."""
    fields: dict[str, Any] = {
        "name": "instance-00000001",
        "uuid": UUID,
        "hostname": "web-1",
        "memory_mb": 512,
        "vcpus": 2,
        "virt_type": "qemu",
        "cpu_mode": "none",
        "disks": (disk(),),
        "nics": (NicSpec(MAC1, "bridge", "cloudbr0", ip="10.20.0.5"),),
        "console_log": f"{INSTANCES}/{UUID}/console.log",
        "metadata": {"flavor": "m1.small", "image": "cirros", "project": "demo"},
    }
    fields.update(overrides)
    return DomainSpec(**fields)


_BASE = domain()

#: Every rendered shape the integration tests feed to virt-xml-validate and libvirt.
VARIANTS: dict[str, DomainSpec] = {
    "default-qemu-qcow2-bridge": _BASE,
    "no-disks-no-nics-no-vnc": replace(_BASE, disks=(), nics=(), vnc=False, metadata={}),
    "raw-disk-network-nic": replace(
        _BASE,
        disks=(disk(fmt="raw", cache="writeback"),),
        nics=(NicSpec(MAC1, "network", "default", model="e1000"),),
    ),
    "kvm-host-model": replace(_BASE, virt_type="kvm", cpu_mode="host-model"),
    "kvm-host-passthrough": replace(_BASE, virt_type="kvm", cpu_mode="host-passthrough"),
    "kvm-custom-model": replace(_BASE, virt_type="kvm", cpu_mode="custom", cpu_model="qemu64"),
    "qemu-custom-model": replace(_BASE, cpu_mode="custom", cpu_model="qemu64"),
    "kernel-initrd-cmdline-config-drive": replace(
        _BASE,
        kernel="/var/lib/cloudctl/images/vmlinuz",
        initrd="/var/lib/cloudctl/images/initrd.gz",
        cmdline="console=ttyS0 quiet cloudctl.note=<a&b>",
        disks=(disk(), disk("vdb", "raw", readonly=True, serial="config-2")),
        vnc=False,
    ),
    "kernel-only": replace(_BASE, kernel="/var/lib/cloudctl/images/vmlinuz", disks=()),
    "q35-sata-scsi-cdrom-two-nics": replace(
        _BASE,
        machine="q35",
        disks=(
            disk("sda", "qcow2", bus="sata"),
            disk("sdb", "raw", bus="scsi", readonly=True),
            disk("sdc", "raw", device="cdrom", bus="sata"),
        ),
        nics=(
            NicSpec(MAC1, "bridge", "cloudbr0", ip="10.20.0.5"),
            NicSpec(MAC2, "network", "default", ip="fd00::5"),
        ),
        metadata={"name": "web & <db>", "note": "quote ' and \" here"},
    ),
}
