"""Validation of the render specs: every bad field is refused with a precise reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from cloudctl.errors import InvalidInput
from cloudctl.render import ConfigDriveSpec, DiskSpec, NetworkConfigNic, NicSpec

from .factories import MAC1, MAC2, UUID, disk, domain

# (case id, factory, expected fragment of the reason)
INVALID: list[tuple[str, Callable[[], Any], str]] = [
    ("name starts with dash", lambda: domain(name="-x"), "domain name '-x' does not match"),
    ("name too long", lambda: domain(name="a" * 129), "does not match ^[A-Za-z0-9]"),
    ("name with slash", lambda: domain(name="a/b"), "domain name 'a/b'"),
    ("uuid garbage", lambda: domain(uuid="nope"), "domain uuid 'nope' is not a UUID"),
    (
        "uuid uppercase",
        lambda: domain(uuid=UUID.upper()),
        f"is not canonical (expected '{UUID}')",
    ),
    ("uuid without dashes", lambda: domain(uuid=UUID.replace("-", "")), "is not canonical"),
    ("hostname underscore", lambda: domain(hostname="web_1"), "label 'web_1'"),
    ("hostname markup", lambda: domain(hostname="a<b"), "is not a valid host name"),
    ("hostname empty label", lambda: domain(hostname="a..b"), "label ''"),
    ("hostname trailing dash", lambda: domain(hostname="web-"), "label 'web-'"),
    ("memory zero", lambda: domain(memory_mb=0), "memory_mb must be > 0, got 0"),
    ("memory bool", lambda: domain(memory_mb=True), "memory_mb must be an integer, got bool"),
    ("vcpus negative", lambda: domain(vcpus=-1), "vcpus must be > 0, got -1"),
    ("vcpus str", lambda: domain(vcpus="2"), "vcpus must be an integer, got str"),
    ("virt_type xen", lambda: domain(virt_type="xen"), "virt_type 'xen' is not one of kvm, qemu"),
    ("cpu_mode bad", lambda: domain(cpu_mode="max"), "cpu_mode 'max' is not one of"),
    ("custom without model", lambda: domain(cpu_mode="custom"), "requires a cpu_model"),
    (
        "model without custom",
        lambda: domain(cpu_mode="host-model", cpu_model="qemu64"),
        "only used with cpu_mode 'custom', not 'host-model'",
    ),
    (
        "passthrough on tcg",
        lambda: domain(virt_type="qemu", cpu_mode="host-passthrough"),
        "'host-passthrough' needs virt_type 'kvm'",
    ),
    ("arch bad", lambda: domain(arch="x86 64"), "arch 'x86 64'"),
    ("machine bad", lambda: domain(machine="pc;rm"), "machine 'pc;rm'"),
    ("console relative", lambda: domain(console_log="console.log"), "must be an absolute path"),
    ("console newline", lambda: domain(console_log="/a\nb"), "must not contain a newline or NUL"),
    ("console NUL", lambda: domain(console_log="/a\x00b"), "must not contain a newline or NUL"),
    ("kernel relative", lambda: domain(kernel="vmlinuz"), "kernel 'vmlinuz' must be an absolute"),
    ("initrd without kernel", lambda: domain(initrd="/i"), "initrd is set but kernel is not"),
    ("cmdline without kernel", lambda: domain(cmdline="x"), "cmdline is set but kernel is not"),
    (
        "cmdline newline",
        lambda: domain(kernel="/k", cmdline="a\nb"),
        "cmdline contains the control character '\\n'",
    ),
    ("cmdline too long", lambda: domain(kernel="/k", cmdline="a" * 2049), "max 2048"),
    (
        "duplicate target",
        lambda: domain(disks=(disk("vda"), disk("vda", "raw"))),
        "disk target 'vda' is used more than once",
    ),
    (
        "duplicate mac",
        lambda: domain(nics=(NicSpec(MAC1, "bridge", "br0"), NicSpec(MAC1, "network", "n"))),
        f"nic mac '{MAC1}' is used more than once",
    ),
    ("disks not tuple", lambda: domain(disks="vda"), "disks must be a tuple of DiskSpec"),
    ("disks wrong item", lambda: domain(disks=("vda",)), "disks[0] must be a DiskSpec, got str"),
    ("metadata key space", lambda: domain(metadata={"a b": "x"}), "metadata key 'a b' must match"),
    ("metadata key xml", lambda: domain(metadata={"xmlns": "x"}), "not start with 'xml'"),
    ("metadata reserved", lambda: domain(metadata={"nics": "x"}), "'nics' is reserved"),
    ("metadata value int", lambda: domain(metadata={"a": 1}), "metadata['a'] must be a string"),
    (
        "metadata value control char",
        lambda: domain(metadata={"a": "x\x01"}),
        "metadata['a'] contains '\\x01', which XML cannot carry",
    ),
    ("metadata not mapping", lambda: domain(metadata=[("a", "b")]), "must be a mapping"),
    ("smbios empty", lambda: domain(smbios_product=""), "smbios_product must not be empty"),
    ("vnc not bool", lambda: domain(vnc="yes"), "vnc must be a bool"),
    ("disk relative", lambda: DiskSpec("disk.qcow2", "vda", "qcow2"), "must be an absolute path"),
    ("disk target xda", lambda: disk("xda"), "disk target 'xda' does not match"),
    ("disk target too long", lambda: disk("vdabc"), "disk target 'vdabc'"),
    (
        "disk format vmdk",
        lambda: disk(fmt="vmdk"),  # type: ignore[arg-type]
        "disk vda format 'vmdk' is not one of",
    ),
    ("disk device floppy", lambda: disk(device="floppy"), "device 'floppy' is not one of"),
    ("disk bus ide", lambda: disk("hda", bus="ide"), "disk hda bus 'ide' is not one of"),
    ("disk cache unsafe", lambda: disk(cache="unsafe"), "cache 'unsafe' is not one of"),
    ("vd target on sata", lambda: disk("vda", bus="sata"), "does not fit bus 'sata'"),
    ("sd target on virtio", lambda: disk("sda"), "does not fit bus 'virtio'"),
    (
        "virtio cdrom",
        lambda: disk("vdb", "raw", device="cdrom"),
        "a cdrom cannot use bus virtio",
    ),
    (
        "readonly sata disk",
        lambda: disk("sda", "raw", bus="sata", readonly=True),
        "QEMU has no read-only SATA disks",
    ),
    ("serial bad char", lambda: disk(serial="a/b"), "disk vda serial 'a/b' does not match"),
    ("readonly not bool", lambda: disk(readonly="no"), "readonly must be a bool"),
    (
        "mac uppercase",
        lambda: NicSpec("52:54:00:AB:CD:01", "bridge", "br0"),
        "nic mac '52:54:00:AB",
    ),
    ("mac dashes", lambda: NicSpec("52-54-00-12-34-01", "bridge", "br0"), "does not match"),
    (
        "mac multicast",
        lambda: NicSpec("01:00:5e:00:00:01", "bridge", "br0"),
        "is a multicast address",
    ),
    (
        "nic kind",
        lambda: NicSpec(MAC1, "direct", "eth0"),  # type: ignore[arg-type]
        "kind 'direct' is not one of",
    ),
    (
        "bridge too long",
        lambda: NicSpec(MAC1, "bridge", "b" * 16),
        "bridge name 'bbbbbbbbbbbbbbbb'",
    ),
    ("network slash", lambda: NicSpec(MAC1, "network", "a/b"), "network name 'a/b'"),
    ("nic model", lambda: NicSpec(MAC1, "bridge", "br0", model="Virt IO"), "model 'Virt IO'"),
    ("nic ip", lambda: NicSpec(MAC1, "bridge", "br0", ip="10.0.0.300"), "is not an IP address"),
    (
        "net prefix v4",
        lambda: NetworkConfigNic(MAC1, "10.0.0.5", 33),
        "prefix 33 is out of range 0..32 for IPv4",
    ),
    ("net prefix bool", lambda: NetworkConfigNic(MAC1, "10.0.0.5", True), "must be an integer"),
    (
        "net gateway family",
        lambda: NetworkConfigNic(MAC1, "10.0.0.5", 24, gateway="fd00::1"),
        "gateway fd00::1 is IPv6 but ip 10.0.0.5 is IPv4",
    ),
    (
        "net dns garbage",
        lambda: NetworkConfigNic(MAC1, "10.0.0.5", 24, dns=("dns.example",)),
        "dns server 'dns.example' is not an IP address",
    ),
    (
        "net dns str",
        lambda: NetworkConfigNic(MAC1, "10.0.0.5", 24, dns="1.1.1.1"),  # type: ignore[arg-type]
        "tuple of str",
    ),
    ("drive uuid", lambda: ConfigDriveSpec(uuid="x", hostname="a"), "config drive uuid 'x'"),
    ("drive hostname", lambda: ConfigDriveSpec(uuid=UUID, hostname="a b"), "label 'a b'"),
    (
        "drive key newline",
        lambda: ConfigDriveSpec(uuid=UUID, hostname="a", public_keys=("ssh-rsa A\nB",)),
        "public_keys[0] contains the control character",
    ),
    (
        "drive key empty",
        lambda: ConfigDriveSpec(uuid=UUID, hostname="a", public_keys=("",)),
        "public_keys[0] must not be empty",
    ),
    (
        "drive user_data NUL",
        lambda: ConfigDriveSpec(uuid=UUID, hostname="a", user_data="a\x00"),
        "user_data must not contain NUL",
    ),
    (
        "drive duplicate mac",
        lambda: ConfigDriveSpec(
            uuid=UUID,
            hostname="a",
            network=(
                NetworkConfigNic(MAC1, "10.0.0.5", 24),
                NetworkConfigNic(MAC1, "10.0.1.5", 24),
            ),
        ),
        "network mac '52:54:00:12:34:01' is used more than once",
    ),
]


@pytest.mark.parametrize(
    ("factory", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_specs_are_refused_with_a_precise_reason(
    factory: Callable[[], Any], reason: str
) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        factory()
    assert reason in excinfo.value.message
    assert excinfo.value.message.startswith("invalid input: ")
    assert excinfo.value.exit_code == 2


VALID: list[tuple[str, Callable[[], Any]]] = [
    ("default", domain),
    ("fqdn hostname", lambda: domain(hostname="web-1.example.org")),
    ("max length name", lambda: domain(name="a" * 128)),
    ("kvm passthrough", lambda: domain(virt_type="kvm", cpu_mode="host-passthrough")),
    ("custom model", lambda: domain(cpu_mode="custom", cpu_model="Haswell-noTSX")),
    ("kernel only", lambda: domain(kernel="/k")),
    ("empty cmdline", lambda: domain(kernel="/k", cmdline="")),
    ("markup in metadata", lambda: domain(metadata={"note": "<a> & 'b' \"c\"\nline 2"})),
    ("hd target on sata", lambda: disk("hdc", "raw", bus="sata")),
    ("two-letter target", lambda: disk("vdaa")),
    ("scsi readonly disk", lambda: disk("sdb", "raw", bus="scsi", readonly=True)),
    ("ipv6 network", lambda: NetworkConfigNic(MAC2, "fd00::5", 64, "fd00::1", ("fd00::53",))),
]


@pytest.mark.parametrize("factory", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_specs_are_accepted(factory: Callable[[], Any]) -> None:
    factory()


def test_specs_are_frozen_and_metadata_is_a_read_only_copy() -> None:
    source = {"flavor": "m1.small"}
    spec = domain(metadata=source)
    source["flavor"] = "changed"
    assert spec.metadata["flavor"] == "m1.small"
    with pytest.raises(TypeError):
        spec.metadata["flavor"] = "x"  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    assert hash(spec) == hash(domain(metadata={"other": "value"}))
    assert spec == domain(metadata={"flavor": "m1.small"})
    assert spec != domain(metadata={"flavor": "m1.large"})


def test_lists_are_accepted_and_stored_as_tuples() -> None:
    spec = domain(disks=[disk()], nics=[])
    assert spec.disks == (disk(),)
    assert spec.nics == ()
    drive = ConfigDriveSpec(uuid=UUID, hostname="a", public_keys=["k"])  # type: ignore[arg-type]
    assert drive.public_keys == ("k",)


def test_cdrom_is_always_read_only() -> None:
    assert disk("sdc", "raw", device="cdrom", bus="sata").is_readonly
    assert not disk().is_readonly
    assert disk(readonly=True).is_readonly
