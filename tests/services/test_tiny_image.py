"""Tests of cloudctl.services.tiny_image: the initramfs, module resolution, caching, a real boot.

The unit tests build everything from fake packages made here (no apt, no network). The
integration test builds the real image (downloading ~28 MB of .debs once into a cache shared by
test runs: ``$CLOUDCTL_TEST_CACHE/tiny``, default ``/var/cache/cloudctl-test/tiny``) and boots it
on the real ``qemu:///system`` with a NoCloud config drive.
"""

from __future__ import annotations

import gzip
import lzma
import os
import struct
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.errors import ImageBuildError
from cloudctl.services import tiny_image
from cloudctl.services.tiny_image import (
    REQUIRED_MODULES,
    CpioEntry,
    TinyImage,
    build_tiny_image,
    initramfs_entries,
    module_depends,
    pack_newc,
    parse_kernel_dependency,
    resolve_modules,
)

TEST_CACHE = Path(os.environ.get("CLOUDCTL_TEST_CACHE", "/var/cache/cloudctl-test")) / "tiny"
BOOT_TIMEOUT_S = 90.0
MARKER_WORD = "CLOUDCTL-GUEST-UP"

# --- helpers ---------------------------------------------------------------------------------


def read_newc(archive: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """Parse a newc cpio archive independently of the builder: path -> (mode, data, rdev)."""
    members: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        header = archive[pos : pos + 110]
        assert header[:6] == b"070701", f"bad magic at {pos}"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rdevmajor, rdevminor, namesize = (
            fields[1],
            fields[6],
            fields[9],
            fields[10],
            fields[11],
        )
        name_start = pos + 110
        name = archive[name_start : name_start + namesize - 1].decode()
        assert archive[name_start + namesize - 1] == 0
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        data = archive[data_start : data_start + filesize]
        pos = data_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return members
        assert name not in members, f"duplicate member {name}"
        members[name] = (mode, data, (rdevmajor, rdevminor))


def fake_module(depends: str, payload: bytes = b"") -> bytes:
    """A minimal 64-bit little-endian ELF with a .modinfo section, as a kernel module has."""
    shstrtab = b"\0.shstrtab\0.modinfo\0"
    modinfo = b"license=GPL\0" + f"depends={depends}".encode() + b"\0vermagic=test\0" + payload
    shstrtab_off = 64
    modinfo_off = shstrtab_off + len(shstrtab)
    shoff = (modinfo_off + len(modinfo) + 7) // 8 * 8
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 1)
    body = header + shstrtab + modinfo
    body += bytes(shoff - len(body))

    def section(name: int, kind: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    body += bytes(64)
    body += section(1, 3, shstrtab_off, len(shstrtab))
    body += section(11, 1, modinfo_off, len(modinfo))
    return body


FAKE_MODULES = {
    # path under lib/modules/<ver>/kernel -> depends
    "drivers/virtio/virtio.ko": "",
    "drivers/virtio/virtio_ring.ko.xz": "virtio",
    "drivers/virtio/virtio_pci.ko": "virtio_ring,virtio",
    "drivers/block/virtio_blk.ko": "virtio,virtio_ring",
    "drivers/cdrom/cdrom.ko": "",
    "fs/isofs/isofs.ko.xz": "cdrom",
    "drivers/net/virtio_net.ko": "virtio_ring,net-failover",
    "drivers/net/net_failover.ko": "",
    "drivers/scsi/scsi_mod.ko": "",
    "drivers/ata/libata.ko": "scsi_mod",
    "drivers/ata/ata_piix.ko": "libata,scsi_mod",
    "drivers/scsi/sr_mod.ko.xz": "cdrom,scsi_mod",
}
FAKE_VERSION = "9.9.9-1-cloud-amd64"


def make_modules_tree(root: Path) -> Path:
    """lib/modules/<ver> with FAKE_MODULES (some xz-compressed) and af_packet built in."""
    modules_dir = root / "lib" / "modules" / FAKE_VERSION
    for rel, depends in FAKE_MODULES.items():
        path = modules_dir / "kernel" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        elf = fake_module(depends, payload=rel.encode())
        path.write_bytes(lzma.compress(elf) if rel.endswith(".xz") else elf)
    (modules_dir / "modules.builtin").write_text("kernel/net/packet/af_packet.ko\n")
    return modules_dir


def make_fake_debs(debs_dir: Path, work: Path) -> None:
    """A fake kernel package and busybox package, built with dpkg-deb like Debian's."""
    kernel_root = work / "kernel"
    make_modules_tree(kernel_root)
    (kernel_root / "boot").mkdir(parents=True)
    (kernel_root / "boot" / f"vmlinuz-{FAKE_VERSION}").write_bytes(b"fake bzImage")
    busybox_root = work / "busybox"
    (busybox_root / "bin").mkdir(parents=True)
    (busybox_root / "bin" / "busybox").write_bytes(b"fake busybox")
    debs_dir.mkdir(parents=True)
    for root, package, version in (
        (kernel_root, f"linux-image-{FAKE_VERSION}", "9.9.9-1"),
        (busybox_root, "busybox-static", "1:1.35.0-1"),
    ):
        (root / "DEBIAN").mkdir()
        (root / "DEBIAN" / "control").write_text(
            f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
            "Maintainer: cloudctl tests <tests@example.invalid>\nDescription: fake\n"
        )
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-b", str(root), str(debs_dir / f"{package}.deb")],
            check=True,
            capture_output=True,
        )
    # Give the .debs apt-get download's naming: <package>_<version>_<arch>.deb
    (debs_dir / f"linux-image-{FAKE_VERSION}.deb").rename(
        debs_dir / f"linux-image-{FAKE_VERSION}_9.9.9-1_amd64.deb"
    )
    (debs_dir / "busybox-static.deb").rename(debs_dir / "busybox-static_1%3a1.35.0-1_amd64.deb")


@pytest.fixture
def no_apt(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every command the builder runs and fail the test if it calls apt."""
    calls: list[list[str]] = []
    real = tiny_image._run_bytes

    def guarded(argv: list[str], *, cwd: Path | None = None) -> bytes:
        calls.append(list(argv))
        assert not argv[0].startswith("apt"), f"unexpected apt call: {argv}"
        return real(argv, cwd=cwd)

    monkeypatch.setattr(tiny_image, "_run_bytes", guarded)
    return calls


# --- unit: cpio ------------------------------------------------------------------------------


def test_pack_newc_round_trips_and_cpio_reads_it(tmp_path: Path) -> None:
    entries = [
        CpioEntry("bin", 0o040755),
        CpioEntry("bin/busybox", 0o100755, b"x" * 5),
        CpioEntry("bin/sh", 0o120777, b"busybox"),
        CpioEntry("dev", 0o040755),
        CpioEntry("dev/console", 0o020600, rdev=(5, 1)),
        CpioEntry("init", 0o100755, b"#!/bin/sh\n"),
    ]
    archive = pack_newc(entries)
    assert len(archive) % 4 == 0
    members = read_newc(archive)
    assert members == {e.path: (e.mode, e.data, e.rdev) for e in entries}
    assert pack_newc(entries) == archive  # reproducible

    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == [e.path for e in entries]


def test_initramfs_has_init_busybox_console_and_modules_in_load_order(tmp_path: Path) -> None:
    modules_dir = make_modules_tree(tmp_path)
    modules = resolve_modules(modules_dir, REQUIRED_MODULES, ("virtio_net",))
    cdrom = [m for m in resolve_modules(modules_dir, (), ("sr_mod",)) if m not in modules]
    init = tiny_image.INIT_TEMPLATE.read_bytes()
    entries = initramfs_entries(b"BUSYBOX", init, modules, cdrom)
    archive = gzip.decompress(gzip.compress(pack_newc(entries), mtime=0))
    members = read_newc(archive)

    mode, data, _ = members["init"]
    assert mode == 0o100755 and data == init
    assert data.startswith(b"#!/bin/sh\n")
    assert members["bin/busybox"][:2] == (0o100755, b"BUSYBOX")
    assert members["bin/sh"][:2] == (0o120777, b"busybox")
    assert members["dev/console"] == (0o020600, b"", (5, 1))
    for directory in ("proc", "sys", "dev", "mnt/config", "usr/sbin"):
        assert members[directory][0] == 0o040755
    # every parent directory comes before its children
    seen: set[str] = set()
    for name in members:
        parent = name.rpartition("/")[0]
        assert not parent or parent in seen, name
        seen.add(name)

    order = members["etc/cloudctl/modules"][1].decode().split()
    assert order == [m.name for m in modules]
    late = members["etc/cloudctl/modules.cdrom"][1].decode().split()
    assert late == ["scsi_mod", "sr_mod"]  # cdrom is in the first list already
    for name in order + late:
        mode, elf, _ = members[f"lib/modules/{name}.ko"]
        assert mode == 0o100644
        assert elf.startswith(b"\x7fELF")  # .ko.xz decompressed for busybox insmod


# --- unit: modules ---------------------------------------------------------------------------


def test_module_depends_reads_modinfo() -> None:
    assert module_depends(fake_module("virtio_ring,virtio")) == ("virtio_ring", "virtio")
    assert module_depends(fake_module("")) == ()
    with pytest.raises(ImageBuildError):
        module_depends(b"not an elf file at all, just bytes" * 4)


def test_resolve_modules_orders_dependencies_first_and_skips_builtins(tmp_path: Path) -> None:
    modules_dir = make_modules_tree(tmp_path)
    names = [
        m.name
        for m in resolve_modules(
            modules_dir, REQUIRED_MODULES, ("virtio_net", "af_packet", "no_such_module")
        )
    ]
    assert names == [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "virtio_blk",
        "cdrom",
        "isofs",
        "net_failover",  # "net-failover" in depends= names the file net_failover.ko
        "virtio_net",
    ]  # af_packet is built in; missing optional modules are left out


def test_resolve_modules_fails_on_a_missing_required_module(tmp_path: Path) -> None:
    modules_dir = make_modules_tree(tmp_path)
    (modules_dir / "kernel" / "drivers" / "cdrom" / "cdrom.ko").unlink()
    with pytest.raises(ImageBuildError, match=r"cdrom \(needed by isofs\)"):
        resolve_modules(modules_dir, REQUIRED_MODULES)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n",
            "linux-image-6.1.0-56-cloud-amd64",
        ),
        (
            "linux-image-cloud-amd64\n |Depends: linux-image-6.12.9+bpo-cloud-amd64\n"
            "  Depends: linux-image-6.1.0-3-cloud-amd64\n",
            "linux-image-6.12.9+bpo-cloud-amd64",
        ),
        ("linux-image-cloud-amd64\n  Depends: initramfs-tools\n", None),
        ("", None),
    ],
)
def test_parse_kernel_dependency(output: str, expected: str | None) -> None:
    assert parse_kernel_dependency(output, "linux-image-cloud-amd64") == expected


# --- unit: the whole build from cached (fake) packages ---------------------------------------


def test_build_from_cached_debs_then_return_cache_without_rebuild(
    tmp_path: Path, no_apt: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    make_fake_debs(cache / "debs", tmp_path / "work")
    (cache / ".tmp-initrd.img.killed").write_bytes(b"half a file")  # from a killed build
    messages: list[str] = []

    image = build_tiny_image(cache, progress=messages.append)

    assert image == TinyImage(
        kernel=cache / "vmlinuz",
        initrd=cache / "initrd.img",
        disk=cache / "disk.qcow2",
        cmdline="console=ttyS0 panic=-1 quiet",
        kernel_version=FAKE_VERSION,
    )
    assert image.kernel.read_bytes() == b"fake bzImage"
    members = read_newc(gzip.decompress(image.initrd.read_bytes()))
    assert members["bin/busybox"][1] == b"fake busybox"
    assert members["etc/cloudctl/modules"][1].decode().split() == [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "virtio_blk",
        "cdrom",
        "isofs",
        "net_failover",
        "virtio_net",
    ]
    assert members["etc/cloudctl/modules.cdrom"][1].decode().split() == [
        "scsi_mod",
        "libata",
        "ata_piix",
        "sr_mod",
    ]  # virtio_scsi is not in this kernel: left out
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image.disk)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert '"format": "qcow2"' in info
    assert not list(cache.glob(".tmp-*"))
    assert any("initramfs" in m for m in messages)

    # Cached: no command at all, same files untouched.
    stamp = image.initrd.stat().st_mtime_ns
    no_apt.clear()
    assert build_tiny_image(cache) == image
    assert no_apt == []
    assert image.initrd.stat().st_mtime_ns == stamp

    # A changed /init rebuilds the initramfs from the cached packages, reproducibly.
    first_initrd = image.initrd.read_bytes()
    original_init = tiny_image.INIT_TEMPLATE
    new_init = tmp_path / "init"
    new_init.write_bytes(tiny_image.INIT_TEMPLATE.read_bytes() + b"# changed\n")
    monkeypatch.setattr(tiny_image, "INIT_TEMPLATE", new_init)
    assert build_tiny_image(cache) == image
    assert read_newc(gzip.decompress(image.initrd.read_bytes()))["init"][1].endswith(b"changed\n")
    monkeypatch.setattr(tiny_image, "INIT_TEMPLATE", original_init)
    build_tiny_image(cache)
    assert image.initrd.read_bytes() == first_initrd


class FakeApt:
    """Stands in for apt-cache / apt-get: package lists missing until ``apt-get update``."""

    def __init__(self, debs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.debs = debs
        self.lists = False
        self.calls: list[str] = []
        self.real = tiny_image._run_bytes
        monkeypatch.setattr(tiny_image, "_run_bytes", self)

    def __call__(self, argv: list[str], *, cwd: Path | None = None) -> bytes:
        if not argv[0].startswith("apt"):
            return self.real(argv, cwd=cwd)
        self.calls.append(" ".join(a for a in argv if not a.startswith("-")))
        if argv[:2] == ["apt-get", "update"]:
            self.lists = True
            return b""
        if not self.lists:
            raise ImageBuildError(reason="E: No packages found")
        if argv[0] == "apt-cache":
            return f"linux-image-cloud-amd64\n  Depends: linux-image-{FAKE_VERSION}\n".encode()
        assert argv[:2] == ["apt-get", "download"] and cwd is not None
        for deb in self.debs.glob("*.deb"):
            (cwd / deb.name).write_bytes(deb.read_bytes())
        return b""


def test_apt_update_runs_only_when_lists_are_missing_and_force_redownloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fake_debs(tmp_path / "mirror", tmp_path / "work")
    apt = FakeApt(tmp_path / "mirror", monkeypatch)
    cache = tmp_path / "cache"

    image = build_tiny_image(cache)

    assert image.kernel_version == FAKE_VERSION
    assert apt.calls == [
        "apt-cache depends linux-image-cloud-amd64",
        "apt-get update",
        "apt-cache depends linux-image-cloud-amd64",
        f"apt-get download linux-image-{FAKE_VERSION} busybox-static",
    ]
    assert sorted(p.name for p in (cache / "debs").iterdir()) == [
        "busybox-static_1%3a1.35.0-1_amd64.deb",
        f"linux-image-{FAKE_VERSION}_9.9.9-1_amd64.deb",
    ]

    apt.calls.clear()
    (cache / "debs" / "linux-image-1.0.0-1-cloud-amd64_1.0-1_amd64.deb").write_bytes(b"old")
    assert build_tiny_image(cache, force=True) == image
    assert apt.calls == [
        "apt-cache depends linux-image-cloud-amd64",
        f"apt-get download linux-image-{FAKE_VERSION} busybox-static",
    ]
    assert not (cache / "debs" / "linux-image-1.0.0-1-cloud-amd64_1.0-1_amd64.deb").exists()


def test_missing_tool_is_an_image_build_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fake_debs(tmp_path / "cache" / "debs", tmp_path / "work")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ImageBuildError, match="dpkg-deb is not installed"):
        build_tiny_image(tmp_path / "cache")


# --- integration: build the real image and boot it -------------------------------------------


def domain_xml(
    name: str,
    instance_uuid: str,
    image: TinyImage,
    disk: Path,
    config_iso: Path,
    log: Path,
    *,
    config_bus: str = "virtio",
    user_nic_mac: str | None = None,
) -> str:
    """A transient TCG domain: direct kernel boot, SMBIOS uuid, config drive, file console.

    ``config_bus`` "virtio" attaches the config drive as disk vdb; "ide" and "scsi" (virtio-scsi)
    attach it as a CD-ROM, as Nova does.
    """
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = instance_uuid
    ET.SubElement(domain, "memory", unit="MiB").text = "192"
    ET.SubElement(domain, "vcpu").text = "1"
    sysinfo = ET.SubElement(domain, "sysinfo", type="smbios")
    system = ET.SubElement(sysinfo, "system")
    ET.SubElement(system, "entry", name="manufacturer").text = "cloudctl"
    ET.SubElement(system, "entry", name="product").text = "cloudctl tiny test guest"
    ET.SubElement(system, "entry", name="uuid").text = instance_uuid
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(image.kernel)
    ET.SubElement(os_el, "initrd").text = str(image.initrd)
    ET.SubElement(os_el, "cmdline").text = image.cmdline
    ET.SubElement(os_el, "smbios", mode="sysinfo")
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "destroy"
    ET.SubElement(domain, "on_crash").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    root = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(root, "driver", name="qemu", type="qcow2")
    ET.SubElement(root, "source", file=str(disk))
    ET.SubElement(root, "target", dev="vda", bus="virtio")
    target, device = {"virtio": ("vdb", "disk"), "ide": ("hdc", "cdrom"), "scsi": ("sda", "cdrom")}[
        config_bus
    ]
    config = ET.SubElement(devices, "disk", type="file", device=device)
    ET.SubElement(config, "driver", name="qemu", type="raw")
    ET.SubElement(config, "source", file=str(config_iso))
    ET.SubElement(config, "target", dev=target, bus=config_bus)
    ET.SubElement(config, "readonly")
    if config_bus == "scsi":
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    if user_nic_mac is not None:
        # Usermode (slirp) NIC: in-process, reaches nothing unless the guest sends, and it doesn't.
        nic = ET.SubElement(devices, "interface", type="user")
        ET.SubElement(nic, "mac", address=user_nic_mac)
        ET.SubElement(nic, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(log))
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def make_config_drive(directory: Path, files: dict[str, str], label: str = "cidata") -> Path:
    """A NoCloud config drive ISO (volume id ``label``) holding ``files``."""
    content = directory / "config-drive"
    content.mkdir()
    for name, text in files.items():
        (content / name).write_text(text)
    iso = directory / "config.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-o", str(iso), "-V", label, "-J", "-r", str(content)],
        check=True,
        capture_output=True,
    )
    return iso


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
    """Poll ``predicate()`` until true; the seconds it took. Fails the test on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout:.0f} s")


def console_lines(log: Path) -> list[str]:
    try:
        return [line.rstrip("\r") for line in log.read_text(errors="replace").splitlines()]
    except FileNotFoundError:
        return []


def domain_names(conn: Any) -> list[str]:
    return [d.name() for d in conn.listAllDomains()]


@pytest.fixture(scope="module")
def real_image() -> TinyImage:
    started = time.monotonic()
    image = build_tiny_image(TEST_CACHE, progress=print)
    print(f"[tiny image] build (or cache hit) took {time.monotonic() - started:.1f} s")
    return image


@pytest.fixture
def qemu_system() -> Iterator[Any]:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        yield conn
    finally:
        conn.close()


class Guest:
    """A transient tiny guest on qemu:///system, destroyed by the fixture's finalizer."""

    def __init__(self, conn: Any, image: TinyImage, directory: Path) -> None:
        self.conn = conn
        self.image = image
        self.directory = directory
        self.uuid = str(uuid.uuid4())
        self.name = f"cctest-tiny-{self.uuid[:8]}"
        self.log = directory / "console.log"
        self.dom: Any = None

    def start(
        self,
        config_files: dict[str, str],
        *,
        label: str = "cidata",
        config_bus: str = "virtio",
        user_nic_mac: str | None = None,
    ) -> float:
        """Boot with a config drive holding ``config_files``; seconds until the marker line."""
        overlay = self.directory / "disk.qcow2"
        backing = ["-F", "qcow2", "-b", str(self.image.disk)]
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(overlay)],
            check=True,
            capture_output=True,
        )
        iso = make_config_drive(self.directory, config_files, label)
        xml = domain_xml(
            self.name,
            self.uuid,
            self.image,
            overlay,
            iso,
            self.log,
            config_bus=config_bus,
            user_nic_mac=user_nic_mac,
        )
        started = time.monotonic()
        self.dom = self.conn.createXML(xml, 0)
        wait_for(
            lambda: any(MARKER_WORD in line for line in console_lines(self.log)), BOOT_TIMEOUT_S
        )
        return time.monotonic() - started

    def markers(self) -> list[str]:
        return [line for line in console_lines(self.log) if MARKER_WORD in line]

    def destroy(self) -> None:
        if self.dom is not None and self.name in domain_names(self.conn):
            self.dom.destroy()


@pytest.fixture
def guest(qemu_system: Any, real_image: TinyImage, tmp_path: Path) -> Iterator[Guest]:
    vm = Guest(qemu_system, real_image, tmp_path)
    try:
        yield vm
    finally:
        vm.destroy()


@pytest.mark.integration
def test_real_initramfs_holds_init_and_config_drive_modules(real_image: TinyImage) -> None:
    assert real_image.kernel_version.endswith("-cloud-amd64")
    assert real_image.cmdline == "console=ttyS0 panic=-1 quiet"
    members = read_newc(gzip.decompress(real_image.initrd.read_bytes()))
    assert members["init"] == (0o100755, tiny_image.INIT_TEMPLATE.read_bytes(), (0, 0))
    assert members["bin/busybox"][1].startswith(b"\x7fELF")
    loaded = members["etc/cloudctl/modules"][1].decode().split()
    for needed in ("virtio", "virtio_ring", "virtio_pci", "virtio_blk", "cdrom", "isofs"):
        assert needed in loaded
        assert members[f"lib/modules/{needed}.ko"][1].startswith(b"\x7fELF")
    assert loaded.index("cdrom") < loaded.index("isofs")
    assert loaded.index("virtio_ring") < loaded.index("virtio_pci") < loaded.index("virtio_blk")


@pytest.mark.integration
def test_real_image_boots_reports_uuid_and_hostname_and_powers_off(
    guest: Guest, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = f"instance-id: {guest.uuid}\nlocal-hostname: tinytest\n"
    boot_s = guest.start({"meta-data": meta, "user-data": "#cloud-config\n"})

    assert guest.markers() == [f"CLOUDCTL-GUEST-UP uuid={guest.uuid} hostname=tinytest"], (
        console_lines(guest.log)
    )
    assert guest.dom.isActive()

    # Graceful stop: the ACPI power button makes the guest power itself off (acpid in /init).
    stopping = time.monotonic()
    guest.dom.shutdown()
    wait_for(lambda: guest.name not in domain_names(guest.conn), 60)
    shutdown_s = time.monotonic() - stopping
    assert guest.markers() == [f"CLOUDCTL-GUEST-UP uuid={guest.uuid} hostname=tinytest"]
    with capsys.disabled():
        print(f"\n[tiny image] boot to marker {boot_s:.1f} s, ACPI power-off {shutdown_s:.1f} s")


@pytest.mark.integration
def test_real_image_puts_the_network_config_address_on_eth0(guest: Guest) -> None:
    mac = "52:54:00:cc:00:01"
    # As cloudctl.render.config_drive writes it (PyYAML block style, NIC matched by MAC).
    network_config = (
        "version: 2\nethernets:\n  eth0:\n    match:\n"
        f"      macaddress: {mac.upper()}\n"
        "    addresses:\n    - 10.0.2.15/24\n"
        "    routes:\n    - to: 0.0.0.0/0\n      via: 10.0.2.2\n"
        "    nameservers:\n      addresses:\n      - 10.0.2.3\n"
    )
    meta = f'{{"instance-id": "{guest.uuid}", "local-hostname": "nettest"}}\n'  # JSON is YAML
    guest.start({"meta-data": meta, "network-config": network_config}, user_nic_mac=mac)

    lines = console_lines(guest.log)
    assert "cloudctl-tiny: eth0 10.0.2.15/24" in lines, lines
    assert guest.markers() == [f"CLOUDCTL-GUEST-UP uuid={guest.uuid} hostname=nettest"], lines


@pytest.mark.integration
@pytest.mark.parametrize("bus", ["ide", "scsi"])
def test_real_image_reads_a_cdrom_config_drive(
    guest: Guest, bus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boot_s = guest.start({"meta-data": "local-hostname: cdromtest\n"}, config_bus=bus)

    lines = console_lines(guest.log)
    assert guest.markers() == [f"CLOUDCTL-GUEST-UP uuid={guest.uuid} hostname=cdromtest"], lines
    assert "cloudctl-tiny: config drive /dev/sr0" in lines, lines
    with capsys.disabled():
        print(f"\n[tiny image] {bus} CD-ROM config drive: boot to marker {boot_s:.1f} s")


@pytest.mark.integration
def test_real_image_without_config_drive_reports_unknown_hostname(guest: Guest) -> None:
    guest.start({"meta-data": "local-hostname: ignored\n"}, label="notcidata")

    lines = console_lines(guest.log)
    assert guest.markers() == [f"CLOUDCTL-GUEST-UP uuid={guest.uuid} hostname=unknown"], lines
    assert any(line.startswith("cloudctl-tiny: no config drive found") for line in lines), lines
