"""The rendered domain XML, parsed back with ElementTree: elements, branches and escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from cloudctl.errors import InvalidInput
from cloudctl.render import (
    METADATA_NAMESPACE,
    DomainSpec,
    NicSpec,
    get_environment,
    make_environment,
    render_domain_xml,
)

from .factories import INSTANCES, MAC1, MAC2, UUID, VARIANTS, disk, domain

NS = {"c": METADATA_NAMESPACE}


def parse(spec: DomainSpec) -> ET.Element:
    return ET.fromstring(render_domain_xml(spec))


def find(root: ET.Element, path: str) -> ET.Element:
    element = root.find(path, NS)
    assert element is not None, f"{path} missing"
    return element


def text(root: ET.Element, path: str) -> str | None:
    return find(root, path).text


# (case id, spec, xpath, attribute or None for the text, expected value)
FIELDS: list[tuple[str, DomainSpec, str, str | None, str]] = [
    ("virt type qemu", domain(), ".", "type", "qemu"),
    ("virt type kvm", domain(virt_type="kvm"), ".", "type", "kvm"),
    ("name", domain(), "name", None, "instance-00000001"),
    ("uuid", domain(), "uuid", None, UUID),
    ("title", domain(), "title", None, "web-1"),
    ("description", domain(), "description", None, "cloudctl instance web-1"),
    ("memory", domain(memory_mb=768), "memory", None, "768"),
    ("memory unit", domain(), "memory", "unit", "MiB"),
    ("current memory", domain(memory_mb=768), "currentMemory", None, "768"),
    ("current memory unit", domain(), "currentMemory", "unit", "MiB"),
    ("vcpus", domain(vcpus=3), "vcpu", None, "3"),
    ("sysinfo type", domain(), "sysinfo", "type", "smbios"),
    (
        "smbios manufacturer",
        domain(),
        "sysinfo/system/entry[@name='manufacturer']",
        None,
        "cloudctl",
    ),
    ("smbios product", domain(), "sysinfo/system/entry[@name='product']", None, "cloudctl guest"),
    (
        "smbios product custom",
        domain(smbios_product="Acme & Co"),
        "sysinfo/system/entry[@name='product']",
        None,
        "Acme & Co",
    ),
    ("smbios serial", domain(), "sysinfo/system/entry[@name='serial']", None, UUID),
    ("smbios uuid", domain(), "sysinfo/system/entry[@name='uuid']", None, UUID),
    ("os smbios mode", domain(), "os/smbios", "mode", "sysinfo"),
    ("os type", domain(), "os/type", None, "hvm"),
    ("os arch", domain(), "os/type", "arch", "x86_64"),
    ("os machine", domain(machine="q35"), "os/type", "machine", "q35"),
    ("boot from disk", domain(), "os/boot", "dev", "hd"),
    ("kernel", domain(kernel="/boot/vmlinuz"), "os/kernel", None, "/boot/vmlinuz"),
    ("initrd", domain(kernel="/k", initrd="/boot/initrd.gz"), "os/initrd", None, "/boot/initrd.gz"),
    ("cmdline", domain(kernel="/k", cmdline="console=ttyS0"), "os/cmdline", None, "console=ttyS0"),
    ("clock", domain(), "clock", "offset", "utc"),
    ("on_poweroff", domain(), "on_poweroff", None, "destroy"),
    ("on_reboot", domain(), "on_reboot", None, "restart"),
    ("on_crash", domain(), "on_crash", None, "destroy"),
    ("cpu host-model", domain(virt_type="kvm", cpu_mode="host-model"), "cpu", "mode", "host-model"),
    (
        "cpu host-passthrough",
        domain(virt_type="kvm", cpu_mode="host-passthrough"),
        "cpu",
        "mode",
        "host-passthrough",
    ),
    ("cpu custom", domain(cpu_mode="custom", cpu_model="qemu64"), "cpu", "mode", "custom"),
    (
        "cpu custom model",
        domain(cpu_mode="custom", cpu_model="qemu64"),
        "cpu/model",
        None,
        "qemu64",
    ),
    ("disk type", domain(), "devices/disk", "type", "file"),
    ("disk device", domain(), "devices/disk", "device", "disk"),
    ("disk driver", domain(), "devices/disk/driver", "name", "qemu"),
    ("disk qcow2", domain(), "devices/disk/driver", "type", "qcow2"),
    ("disk raw", domain(disks=(disk(fmt="raw"),)), "devices/disk/driver", "type", "raw"),
    ("disk cache none", domain(), "devices/disk/driver", "cache", "none"),
    (
        "disk cache writeback",
        domain(disks=(disk(cache="writeback"),)),
        "devices/disk/driver",
        "cache",
        "writeback",
    ),
    ("disk source", domain(), "devices/disk/source", "file", f"{INSTANCES}/{UUID}/vda.qcow2"),
    ("disk target", domain(), "devices/disk/target", "dev", "vda"),
    ("disk bus", domain(), "devices/disk/target", "bus", "virtio"),
    (
        "disk serial",
        domain(disks=(disk(serial="config-2"),)),
        "devices/disk/serial",
        None,
        "config-2",
    ),
    (
        "cdrom",
        domain(disks=(disk("sdc", "raw", device="cdrom", bus="sata"),)),
        "devices/disk",
        "device",
        "cdrom",
    ),
    (
        "scsi controller",
        domain(disks=(disk("sda", bus="scsi"),)),
        "devices/controller[@type='scsi']",
        "model",
        "virtio-scsi",
    ),
    ("bridge nic", domain(), "devices/interface", "type", "bridge"),
    ("bridge source", domain(), "devices/interface/source", "bridge", "cloudbr0"),
    ("nic mac", domain(), "devices/interface/mac", "address", MAC1),
    ("nic model", domain(), "devices/interface/model", "type", "virtio"),
    (
        "network nic",
        domain(nics=(NicSpec(MAC2, "network", "default", model="e1000"),)),
        "devices/interface",
        "type",
        "network",
    ),
    (
        "network source",
        domain(nics=(NicSpec(MAC2, "network", "default"),)),
        "devices/interface/source",
        "network",
        "default",
    ),
    (
        "nic model e1000",
        domain(nics=(NicSpec(MAC2, "network", "default", model="e1000"),)),
        "devices/interface/model",
        "type",
        "e1000",
    ),
    ("serial type", domain(), "devices/serial", "type", "file"),
    ("serial path", domain(), "devices/serial/source", "path", f"{INSTANCES}/{UUID}/console.log"),
    ("serial port", domain(), "devices/serial/target", "port", "0"),
    # every boot and every restore from a managed save appends: the log keeps the guest's history
    ("serial appends", domain(), "devices/serial/source", "append", "on"),
    ("console type", domain(), "devices/console", "type", "file"),
    ("console path", domain(), "devices/console/source", "path", f"{INSTANCES}/{UUID}/console.log"),
    ("console target", domain(), "devices/console/target", "type", "serial"),
    ("console port", domain(), "devices/console/target", "port", "0"),
    ("vnc", domain(), "devices/graphics", "type", "vnc"),
    ("vnc port", domain(), "devices/graphics", "port", "-1"),
    ("vnc autoport", domain(), "devices/graphics", "autoport", "yes"),
    ("vnc listen", domain(), "devices/graphics", "listen", "127.0.0.1"),
    ("vnc listen type", domain(), "devices/graphics/listen", "type", "address"),
    ("vnc listen address", domain(), "devices/graphics/listen", "address", "127.0.0.1"),
    ("memballoon", domain(), "devices/memballoon", "model", "virtio"),
    ("meta hostname", domain(), "metadata/c:instance/c:hostname", None, "web-1"),
    ("meta flavor", domain(), "metadata/c:instance/c:flavor", None, "m1.small"),
    ("meta image", domain(), "metadata/c:instance/c:image", None, "cirros"),
    ("meta nic mac", domain(), "metadata/c:instance/c:nics/c:nic", "mac", MAC1),
    ("meta nic ip", domain(), "metadata/c:instance/c:nics/c:nic", "ip", "10.20.0.5"),
]


@pytest.mark.parametrize(
    ("spec", "path", "attribute", "expected"), [c[1:] for c in FIELDS], ids=[c[0] for c in FIELDS]
)
def test_rendered_field(spec: DomainSpec, path: str, attribute: str | None, expected: str) -> None:
    element = find(parse(spec), path)
    assert (element.text if attribute is None else element.get(attribute)) == expected


# (case id, spec, xpath that must be absent)
ABSENT: list[tuple[str, DomainSpec, str]] = [
    ("no kernel without kernel", domain(), "os/kernel"),
    ("no initrd without kernel", domain(), "os/initrd"),
    ("no cmdline without kernel", domain(), "os/cmdline"),
    ("no boot dev with kernel", domain(kernel="/k"), "os/boot"),
    ("no initrd unless given", domain(kernel="/k"), "os/initrd"),
    ("no cmdline unless given", domain(kernel="/k"), "os/cmdline"),
    ("no machine unless given", domain(), "os/type[@machine]"),
    ("no cpu for mode none on qemu", domain(), "cpu"),
    ("no cpu for mode none on kvm", domain(virt_type="kvm"), "cpu"),
    ("no graphics without vnc", domain(vnc=False), "devices/graphics"),
    ("no interfaces without nics", domain(nics=()), "devices/interface"),
    ("no metadata nics without nics", domain(nics=()), "metadata/c:instance/c:nics"),
    ("no disks", domain(disks=()), "devices/disk"),
    ("no readonly by default", domain(), "devices/disk/readonly"),
    ("no serial by default", domain(), "devices/disk/serial"),
    ("no scsi controller without scsi", domain(), "devices/controller"),
    (
        "no ip attribute without ip",
        domain(nics=(NicSpec(MAC2, "network", "default"),)),
        "metadata/c:instance/c:nics/c:nic[@ip]",
    ),
]


@pytest.mark.parametrize(("spec", "path"), [c[1:] for c in ABSENT], ids=[c[0] for c in ABSENT])
def test_absent_element(spec: DomainSpec, path: str) -> None:
    assert parse(spec).find(path, NS) is None


def test_readonly_disks_and_cdroms_carry_readonly() -> None:
    root = parse(
        domain(
            disks=(
                disk(),
                disk("vdb", "raw", readonly=True),
                disk("sdc", "raw", device="cdrom", bus="sata"),
            )
        )
    )
    readonly = [
        d.find("target").get("dev")  # type: ignore[union-attr]
        for d in root.iterfind("devices/disk")
        if d.find("readonly") is not None
    ]
    assert readonly == ["vdb", "sdc"]


def test_disks_and_nics_keep_their_order() -> None:
    spec = VARIANTS["q35-sata-scsi-cdrom-two-nics"]
    root = parse(spec)
    targets = [d.get("dev") for d in root.iterfind("devices/disk/target")]
    assert targets == ["sda", "sdb", "sdc"]
    macs = [m.get("address") for m in root.iterfind("devices/interface/mac")]
    assert macs == [MAC1, MAC2]
    meta = [
        (n.get("mac"), n.get("ip")) for n in root.iterfind("metadata/c:instance/c:nics/c:nic", NS)
    ]
    assert meta == [(MAC1, "10.20.0.5"), (MAC2, "fd00::5")]


def test_metadata_is_one_element_per_key_in_key_order() -> None:
    root = parse(domain(metadata={"user": "alice", "created_at": "2026-11-22T23:00:00Z"}))
    instance = find(root, "metadata/c:instance")
    names = [child.tag.removeprefix("{" + METADATA_NAMESPACE + "}") for child in instance]
    assert names == ["hostname", "created_at", "user", "nics"]


def test_metadata_uses_the_cloudctl_prefix() -> None:
    xml = render_domain_xml(domain())
    assert f'<cloudctl:instance xmlns:cloudctl="{METADATA_NAMESPACE}">' in xml


ESCAPES = ["<b>bold</b>", "a & b", "it's", 'say "hi"', "]]>", "&amp; already", "ünï ☃"]


@pytest.mark.parametrize("value", ESCAPES)
def test_metadata_values_are_escaped(value: str) -> None:
    spec = domain(metadata={"note": value})
    xml = render_domain_xml(spec)
    assert text(ET.fromstring(xml), "metadata/c:instance/c:note") == value
    if "<" in value:
        assert "<b>" not in xml


@pytest.mark.parametrize("value", ESCAPES)
def test_cmdline_is_escaped(value: str) -> None:
    spec = domain(kernel="/k", cmdline=f"console=ttyS0 x={value}")
    assert text(parse(spec), "os/cmdline") == f"console=ttyS0 x={value}"


def test_escaping_in_raw_text() -> None:
    xml = render_domain_xml(
        domain(kernel="/k", cmdline="a<b&c", metadata={"note": "\"q\" 'a' <x>"})
    )
    assert "<cmdline>a&lt;b&amp;c</cmdline>" in xml
    assert "&#34;q&#34; &#39;a&#39; &lt;x&gt;" in xml


def test_attribute_values_are_escaped() -> None:
    odd = "/var/lib/x/a\"b'<&>.qcow2"
    root = parse(domain(disks=(disk(),), console_log=odd))
    assert find(root, "devices/serial/source").get("path") == odd
    assert find(root, "devices/console/source").get("path") == odd


def test_rendering_is_deterministic() -> None:
    first = render_domain_xml(domain(metadata={"b": "2", "a": "1"}))
    second = render_domain_xml(domain(metadata={"a": "1", "b": "2"}))
    assert first == second


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_is_well_formed_and_tidy(name: str) -> None:
    xml = render_domain_xml(VARIANTS[name])
    ET.fromstring(xml)
    assert xml.endswith("</domain>\n")
    assert "\n\n" not in xml
    assert "None" not in xml
    assert all(line == line.rstrip() for line in xml.splitlines())


def test_environment_is_strict_and_escapes_every_template() -> None:
    env = get_environment()
    assert env is get_environment()
    assert env.undefined.__name__ == "StrictUndefined"
    assert env.trim_blocks and env.lstrip_blocks
    assert callable(env.autoescape)
    for name in ("domain.xml.j2", "_domain_macros.xml.j2", "anything.j2", None):
        assert env.autoescape(name) is True
    with pytest.raises(UndefinedError):
        env.from_string("{{ missing }}").render()
    assert env.from_string("{{ v }}").render(v="<&>") == "&lt;&amp;&gt;"


def test_none_never_reaches_the_output() -> None:
    with pytest.raises(UndefinedError, match="printed None"):
        get_environment().from_string("<x>{{ v }}</x>").render(v=None)


def test_template_missing_a_field_fails(tmp_path: Path) -> None:
    (tmp_path / "domain.xml.j2").write_text("<domain>{{ d.no_such_field }}</domain>\n")
    with pytest.raises(UndefinedError):
        render_domain_xml(domain(), env=make_environment(tmp_path))


def test_replace_revalidates() -> None:
    with pytest.raises(InvalidInput, match="vcpus must be > 0"):
        replace(domain(), vcpus=0)
