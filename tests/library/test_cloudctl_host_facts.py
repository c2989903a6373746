"""Tests of library/cloudctl_host_facts.py."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import libvirt
import pytest
import yaml

from tests.library.helpers import LIBVIRT_URI, REPO, PlayRunner, tiny_domain_xml


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
        _, max_kib, _, vcpus, _ = conn.lookupByName("test").info()
    finally:
        conn.close()
    assert facts["hypervisor_type"] == "TEST"
    assert facts["vcpus"] > 0 and facts["memory_mb"] > 0
    assert {
        "name": "test",
        "uuid": facts["domains"][0]["uuid"],
        "state": "running",
        "vcpus": vcpus,
        "memory_mb": max_kib // 1024,
        "snapshots": [],
        "has_managed_save": False,
    } in facts["domains"]
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
    dom = libvirt_conn.lookupByName(name)
    _, max_kib, _, vcpus, _ = dom.info()
    size = {"vcpus": vcpus, "memory_mb": max_kib // 1024}
    extra = {"snapshots": [], "has_managed_save": False}
    assert {
        "name": name,
        "uuid": dom.UUIDString(),
        "state": "shutoff",
        **size,
        **extra,
    } in facts["domains"]
    assert not (tmp_path / "no").exists()


# --- files survey ---------------------------------------------------------------------------

QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"
U1, U2, U3 = (str(uuid.uuid4()) for _ in range(3))


def _sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def qemu_img_create(*args: str) -> None:
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", *args], check=True)


def qemu_overlay(overlay: Path, backing: str, backing_fmt: str = "raw") -> None:
    """A qcow2 overlay on ``backing`` (need not exist: -u, with an explicit size)."""
    qemu_img_create("-u", "-b", backing, "-F", backing_fmt, str(overlay), "1M")


def _dir_facts(path: Path) -> tuple[float, int]:
    """(newest mtime of ``path`` and its direct children, sum of the children's sizes)."""
    children = [c.lstat() for c in path.iterdir()]
    return (
        max([path.lstat().st_mtime] + [c.st_mtime for c in children]),
        sum(c.st_size for c in children),
    )


def make_host_tree(instances_path: Path) -> dict[str, str]:
    """Guest dirs, a stash, other entries and base files; returns the base file names by role.

    * ``raw``: raw base of the overlay ``<U1>/disk`` (absolute path) -> in use
    * ``qcow2``: qcow2 base of ``<U2>_resize/disk``, named as another host's path -> in use
    * ``rel``: named by a relative path from ``<U3>/disk`` -> in use
    * ``deep``: only an overlay two levels down uses it -> not in use
    * ``unused``: nobody -> not in use
    """
    base = instances_path / "_base"
    names = {role: _sha(role) for role in ("raw", "qcow2", "rel", "deep", "unused")}
    for role, name in names.items():
        if role == "qcow2":
            qemu_img_create(str(base / name), "1M")
        else:
            with (base / name).open("wb") as handle:
                handle.truncate(1024 * 1024)

    guest = instances_path / U1
    guest.mkdir()
    qemu_img_create("-b", str(base / names["raw"]), "-F", "raw", str(guest / "disk"))
    (guest / "console.log").write_text("booted\n")
    (guest / "disk.config").write_bytes(b"\0" * 4096)
    os.mkfifo(guest / "serial.fifo")  # must be skipped, never opened

    stash = instances_path / f"{U2}_resize"
    stash.mkdir()
    qemu_overlay(stash / "disk", f"/srv/elsewhere/instances/_base/{names['qcow2']}", "qcow2")

    third = instances_path / U3
    third.mkdir()
    qemu_overlay(third / "disk", f"../_base/{names['rel']}")

    other = instances_path / "lost+found"
    (other / "deeper").mkdir(parents=True)
    qemu_overlay(other / "deeper" / "disk", str(base / names["deep"]))
    (instances_path / "stray.txt").write_text("x" * 10)
    (instances_path / ".hidden").mkdir()
    (instances_path / ".hidden" / "notes").write_text("not listed")
    (instances_path / "_locks").mkdir()
    return names


def test_qcow2_backing_file(tmp_path: Path) -> None:
    from ansible.module_utils.cloudctl_files import qcow2_backing_file

    qemu_overlay(tmp_path / "ov", "/a/b/_base/x")
    qemu_img_create(str(tmp_path / "blank"), "1M")
    (tmp_path / "text").write_text("QFI but not really")
    (tmp_path / "short").write_bytes(b"QFI\xfb")
    assert qcow2_backing_file(str(tmp_path / "ov")) == "/a/b/_base/x"
    assert qcow2_backing_file(str(tmp_path / "blank")) is None
    assert qcow2_backing_file(str(tmp_path / "text")) is None
    assert qcow2_backing_file(str(tmp_path / "short")) is None
    assert qcow2_backing_file(str(tmp_path / "missing")) is None


def test_entry_kind() -> None:
    from ansible.module_utils.cloudctl_files import entry_kind

    assert entry_kind(U1) == (U1, "instance")
    assert entry_kind(f"{U1}_resize") == (U1, "resize")
    assert entry_kind(f"{U1}_resize_resize") == (None, "other")
    assert entry_kind(U1.upper()) == (None, "other")
    assert entry_kind("lost+found") == (None, "other")


def test_files_survey(mod: ModuleType, instances_path: Path) -> None:
    names = make_host_tree(instances_path)
    survey = mod.survey(str(instances_path))

    def entry(name: str, uuid: str | None, kind: str) -> dict[str, Any]:
        mtime, size = _dir_facts(instances_path / name)
        st = (instances_path / name).lstat()
        return {
            "name": name,
            "uuid": uuid,
            "kind": kind,
            "mtime": mtime,
            "size_bytes": size,
            "identity": f"{st.st_ino}:{st.st_ctime_ns}",
        }

    stray = (instances_path / "stray.txt").lstat()
    expected_dirs = [
        entry(U1, U1, "instance"),
        entry(f"{U2}_resize", U2, "resize"),
        entry(U3, U3, "instance"),
        entry("lost+found", None, "other"),
        {
            "name": "stray.txt",
            "uuid": None,
            "kind": "other",
            "mtime": stray.st_mtime,
            "size_bytes": 10,
            "identity": f"{stray.st_ino}:{stray.st_ctime_ns}",
        },
    ]
    assert survey["instance_dirs"] == sorted(expected_dirs, key=lambda d: d["name"])
    guest = next(d for d in survey["instance_dirs"] if d["name"] == U1)
    assert guest["size_bytes"] == sum(
        (instances_path / U1 / n).lstat().st_size
        for n in ("disk", "console.log", "disk.config", "serial.fifo")
    )

    in_use = {"raw", "qcow2", "rel"}
    expected_base = []
    for role, name in names.items():
        stat = (instances_path / "_base" / name).stat()
        expected_base.append(
            {
                "name": name,
                "size_bytes": stat.st_size,
                "mtime": stat.st_mtime,
                "atime": stat.st_atime,
                "identity": f"{stat.st_ino}:{stat.st_ctime_ns}",
                "in_use": role in in_use,
            }
        )
    assert survey["base_files"] == sorted(expected_base, key=lambda b: b["name"])


def test_files_survey_of_a_missing_path(mod: ModuleType, tmp_path: Path) -> None:
    assert mod.survey(str(tmp_path / "nope")) == {"instance_dirs": [], "base_files": []}
    (tmp_path / "empty").mkdir()
    assert mod.survey(str(tmp_path / "empty")) == {"instance_dirs": [], "base_files": []}


@pytest.mark.integration
def test_discover_playbook_surveys_files_on_request(
    ansible_play: PlayRunner, mod: ModuleType, instances_path: Path
) -> None:
    make_host_tree(instances_path)
    play = yaml.safe_load((REPO / "playbooks" / "discover.yml").read_text())
    task = play[0]["tasks"][0]
    assert task["name"] == "host facts"
    play_vars = {"libvirt_uri": LIBVIRT_URI, "instances_path": str(instances_path)}
    off, check, real = ansible_play(
        [
            {**task, "vars": play_vars},
            {**task, "vars": {**play_vars, "cloudctl_survey_files": True}, "check_mode": True},
            {**task, "vars": {**play_vars, "cloudctl_survey_files": True}},
        ]
    )
    assert "files" not in off["host_facts"]
    assert not (off["changed"] or check["changed"] or real["changed"])
    expected = mod.survey(str(instances_path))
    assert check["host_facts"]["files"] == expected
    assert real["host_facts"]["files"] == expected
