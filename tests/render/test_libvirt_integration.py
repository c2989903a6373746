"""Rendered domains against the real libvirt: its RNG schema and the qemu:///system daemon."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cloudctl.render import METADATA_NAMESPACE, DiskSpec, DomainSpec, render_domain_xml

from .factories import VARIANTS, domain

pytestmark = pytest.mark.integration

URI = "qemu:///system"
VIRT_XML_VALIDATE = shutil.which("virt-xml-validate") or "/usr/bin/virt-xml-validate"
QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; the exceptions carry them already."""


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
    try:
        connection = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.fail(f"cannot reach {URI} ({exc}); start it with: virtlogd -d; libvirtd -d")
    yield connection
    connection.close()


def unique(spec: DomainSpec) -> DomainSpec:
    """The same spec under a cctest- name and UUID no other test (or helper) uses."""
    return replace(spec, name=f"cctest-render-{uuid.uuid4().hex[:12]}", uuid=str(uuid.uuid4()))


def remove(dom: Any) -> None:
    if dom.isActive():
        dom.destroy()
    dom.undefine()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_passes_virt_xml_validate(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.xml"
    path.write_text(render_domain_xml(VARIANTS[name]))
    result = subprocess.run(
        [VIRT_XML_VALIDATE, str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path} validates" in result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_defines_on_the_real_daemon(name: str, conn: Any) -> None:
    spec = unique(VARIANTS[name])
    dom = conn.defineXML(render_domain_xml(spec))
    try:
        assert dom.name() == spec.name
        assert dom.UUIDString() == spec.uuid
        assert not dom.isActive()
        assert dom.isPersistent()
        desc = ET.fromstring(dom.XMLDesc(0))
        assert desc.get("type") == spec.virt_type
        entries = {e.get("name"): e.text for e in desc.iterfind("sysinfo/system/entry")}
        assert entries["uuid"] == entries["serial"] == spec.uuid
        assert desc.find("os/smbios").get("mode") == "sysinfo"  # type: ignore[union-attr]
        # libvirt keeps our element; asked by namespace it returns it without the namespace
        meta = ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NAMESPACE))
        assert meta.tag == "instance"
        assert meta.findtext("hostname") == spec.hostname
        for key, value in spec.metadata.items():
            assert meta.findtext(key) == value
        stored = desc.find(f"metadata/{{{METADATA_NAMESPACE}}}instance")
        assert stored is not None
        assert stored.findtext(f"{{{METADATA_NAMESPACE}}}hostname") == spec.hostname
        # libvirt groups disks by bus, so compare as sets
        targets = {t.get("dev") for t in desc.iterfind("devices/disk/target")}
        assert targets == {d.target for d in spec.disks}
        macs = [m.get("address") for m in desc.iterfind("devices/interface/mac")]
        assert macs == [n.mac for n in spec.nics]
    finally:
        dom.undefine()
    assert spec.name not in conn.listDefinedDomains()


def test_firmware_only_guest_starts_and_stops(conn: Any, tmp_path: Path) -> None:
    """Start proves more than define: cache=none, the serial file, VNC and sysinfo all accepted."""
    root = tmp_path / "instance"
    root.mkdir()
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(root / "disk"), "64M"], check=True)
    (root / "config.img").write_bytes(b"\0" * 1024 * 1024)
    spec = unique(
        domain(
            memory_mb=64,
            vcpus=1,
            disks=(
                DiskSpec(str(root / "disk"), "vda", "qcow2"),
                DiskSpec(str(root / "config.img"), "vdb", "raw", readonly=True, serial="config-2"),
            ),
            nics=(),
            console_log=str(root / "console.log"),
            metadata={"note": "started by tests/render & removed again"},
        )
    )
    dom = conn.defineXML(render_domain_xml(spec))
    try:
        dom.create()
        deadline = time.monotonic() + 10
        while dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        live = ET.fromstring(dom.XMLDesc(0))
        graphics = live.find("devices/graphics")
        assert graphics is not None and graphics.get("listen") == "127.0.0.1"
        assert int(graphics.get("port", "-1")) >= 5900
        assert (root / "console.log").exists()
    finally:
        remove(dom)
    assert spec.name not in conn.listDefinedDomains()
