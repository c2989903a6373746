"""Tests of library/cloudctl_snapshot.py.

Unit tests drive ``SnapshotManager`` against libvirt's in-process ``test:///default`` driver
(snapshot metadata only) and the pure helpers; integration tests run the module through
ansible-playbook against the real qemu:///system with a firmware-only domain on a qcow2 disk,
and check disk contents with ``qemu-io``.
"""

from __future__ import annotations

import json
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

from tests.library.helpers import LIBVIRT_URI, PlayRunner, tiny_domain_xml

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"
QEMU_IO = shutil.which("qemu-io") or "/usr/bin/qemu-io"


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_snapshot")


def _run(argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


# --- unit: validation and the pure helpers ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"domain": "bad name", "name": "s1"}, "invalid domain name"),
        ({"domain": "vm", "name": "../x"}, "invalid snapshot name"),
        ({"domain": "vm", "name": "a b"}, "invalid snapshot name"),
        ({"domain": "vm", "name": "s1", "state": "gone"}, "invalid state"),
        ({"domain": "vm", "name": "s1", "state": "exported"}, "needs an absolute dest"),
        ({"domain": "vm", "name": "s1", "state": "exported", "dest": "rel/x"}, "absolute dest"),
        ({"domain": "vm", "name": "s1", "state": "exported", "dest": "/a/../x"}, "absolute dest"),
        ({"domain": "vm", "name": "s1", "dest": "/x"}, "only used with state=exported"),
        ({"domain": "vm", "name": "s1", "state": "absent", "quiesce": True}, "only used with"),
        ({"domain": "vm", "name": "s1", "disk": "../vda"}, "invalid disk target"),
        ({"domain": "vm", "name": "s1", "description": "x\x00"}, "without NUL"),
    ],
)
def test_validate_request_rejects(mod: ModuleType, raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        mod.validate_request(raw)


def test_validate_request_defaults(mod: ModuleType) -> None:
    req = mod.validate_request({"domain": "vm", "name": "nightly-1.2_x"})
    assert (req.state, req.disk, req.disk_only, req.quiesce, req.dest) == (
        "present",
        "vda",
        False,
        False,
        None,
    )


DOMAIN_XML = """<domain type='kvm'><name>vm</name><devices>
  <disk type='file' device='disk'><source file='/i/u/disk.snap-a'/>
    <backingStore type='file'><source file='/i/u/disk'/>
      <backingStore type='file'><source file='/i/_base/abc'/><backingStore/></backingStore>
    </backingStore><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><source file='/i/u/disk.config'/><target dev='vdb'/><readonly/></disk>
  <disk type='file' device='cdrom'><target dev='hdc'/></disk>
</devices></domain>"""


def test_disk_chain_and_overlay_names(mod: ModuleType) -> None:
    assert mod.disk_chain(DOMAIN_XML, "vda") == ["/i/u/disk.snap-a", "/i/u/disk", "/i/_base/abc"]
    assert mod.disk_chain(DOMAIN_XML, "vdb") == ["/i/u/disk.config"]
    with pytest.raises(ValueError, match="no disk vdz"):
        mod.disk_chain(DOMAIN_XML, "vdz")
    # the next overlay sits next to the disk and does not pile suffixes up
    assert mod.overlay_path("/i/u/disk.snap-a", "b") == "/i/u/disk.snap-b"
    assert mod.overlay_path("/i/u/disk", "b") == "/i/u/disk.snap-b"
    with pytest.raises(ValueError, match="invalid snapshot name"):
        mod.overlay_path("/i/u/disk", "../../etc")


def test_snapshot_xml_escapes_and_excludes_other_disks(mod: ModuleType) -> None:
    req = mod.validate_request(
        {"domain": "vm", "name": "s1", "description": "<b>&'\"", "disk_only": True}
    )
    root = ET.fromstring(mod.snapshot_xml(req, DOMAIN_XML, "/i/u/disk.snap-s1"))
    assert root.findtext("description") == "<b>&'\""
    disks = {d.get("name"): d for d in root.findall("disks/disk")}
    assert set(disks) == {"vda", "vdb"}  # the cdrom is no disk
    assert disks["vda"].get("snapshot") == "external"
    assert disks["vda"].find("source").get("file") == "/i/u/disk.snap-s1"  # type: ignore[union-attr]
    assert disks["vdb"].get("snapshot") == "no"
    internal = ET.fromstring(
        mod.snapshot_xml(mod.validate_request({"domain": "vm", "name": "s"}), DOMAIN_XML, None)
    )
    assert internal.find("disks") is None


def test_parse_snapshot_xml(mod: ModuleType) -> None:
    ext = mod.parse_snapshot_xml(
        "<domainsnapshot><name>d1</name><state>disk-snapshot</state>"
        "<creationTime>1700000000</creationTime><memory snapshot='no'/><disks>"
        "<disk name='vda' snapshot='external'><source file='/i/u/disk.snap-d1'/></disk>"
        "<disk name='vdb' snapshot='no'/></disks></domainsnapshot>"
    )
    assert (ext.kind, ext.state, ext.created, ext.files) == (
        "external",
        "disk-snapshot",
        1700000000,
        {"vda": "/i/u/disk.snap-d1"},
    )
    internal = mod.parse_snapshot_xml(
        "<domainsnapshot><name>s1</name><state>running</state>"
        "<memory snapshot='internal'/><disks><disk name='vda' snapshot='internal'/></disks>"
        "</domainsnapshot>"
    )
    assert (internal.kind, internal.state, internal.files) == ("internal", "running", {})


# --- unit: the manager against libvirt's test driver --------------------------------------------


@pytest.fixture
def test_conn() -> Iterator[Any]:
    conn = libvirt.open("test:///default")
    yield conn
    for dom in conn.listAllDomains(0):
        if dom.name().startswith("ut-"):
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    conn.close()


def _test_domain(conn: Any) -> str:
    name = f"ut-{uuid.uuid4().hex[:10]}"
    conn.defineXML(tiny_domain_xml(name, domain_type="test")).create()
    return name


def _manager(mod: ModuleType, conn: Any, check: bool = False, **kw: Any) -> Any:
    return mod.SnapshotManager(conn, mod.QemuImg(QEMU_IMG, _run), check, **kw)


def test_present_absent_triads_on_the_test_driver(mod: ModuleType, test_conn: Any) -> None:
    name = _test_domain(test_conn)
    want = [{"domain": name, "name": "s1", "description": "first"}]
    results, errors = _manager(mod, test_conn, check=True).run(want)
    assert not errors and results[0]["changed"] is True and results[0]["kind"] == "internal"
    assert test_conn.lookupByName(name).snapshotNum(0) == 0  # check mode did nothing
    results, errors = _manager(mod, test_conn).run(want)
    assert not errors and results[0]["changed"] is True
    assert results[0]["state"] == "present" and results[0]["snapshot_state"] == "running"
    for check in (True, False):
        again, errors = _manager(mod, test_conn, check=check).run(want)
        assert not errors and again[0]["changed"] is False
    reverted, errors = _manager(mod, test_conn).run(
        [{"domain": name, "name": "s1", "state": "reverted"}]
    )
    assert (
        not errors and reverted[0]["changed"] is True and reverted[0]["domain_state"] == "running"
    )
    gone = [{"domain": name, "name": "s1", "state": "absent"}]
    for check, changed in ((True, True), (False, True), (True, False), (False, False)):
        results, errors = _manager(mod, test_conn, check=check).run(gone)
        assert not errors and results[0]["changed"] is changed
    assert test_conn.lookupByName(name).snapshotNum(0) == 0
    # a snapshot of a domain that is gone is absent too
    (missing,), _ = _manager(mod, test_conn).run(
        [{"domain": "ut-nope", "name": "s1", "state": "absent"}]
    )
    assert missing["changed"] is False and missing["domain_state"] == "absent"


def test_quiesce_needs_an_answering_agent_and_leaves_nothing(
    mod: ModuleType, test_conn: Any
) -> None:
    name = _test_domain(test_conn)

    def silent(_dom: Any, timeout: int) -> None:
        assert timeout == 2
        raise RuntimeError("QEMU guest agent is not connected")

    manager = _manager(mod, test_conn, agent_timeout=2, ping_agent=silent)
    results, errors = manager.run(
        [
            {"domain": name, "name": "q1", "quiesce": True},
            {"domain": name, "name": "q2", "quiesce": True, "disk_only": True},
        ]
    )
    assert [e.guest for e in errors] == [name, name]
    assert all(r["failed"] and r["changed"] is False for r in results)
    assert results[0]["msg"].startswith("guest agent is not responding")
    assert test_conn.lookupByName(name).snapshotNum(0) == 0
    test_conn.lookupByName(name).destroy()
    (stopped,), _ = _manager(mod, test_conn, ping_agent=silent).run(
        [{"domain": name, "name": "q3", "quiesce": True}]
    )
    assert stopped["msg"] == "cannot quiesce: the domain is not running"


def test_kinds_are_not_mixed_and_failures_do_not_stop_the_batch(
    mod: ModuleType, test_conn: Any
) -> None:
    name = _test_domain(test_conn)
    results, errors = _manager(mod, test_conn).run(
        [
            {"domain": name, "name": "s1"},
            {"domain": "ut-missing", "name": "s1"},
            {"domain": name, "name": "s1", "disk_only": True},
            {"domain": name, "name": "d1", "disk_only": True},
            {"domain": name, "name": "s2", "state": "reverted"},
            {"domain": name, "name": "s2"},
        ]
    )
    assert [bool(r.get("failed")) for r in results] == [False, True, True, True, True, False]
    assert "does not exist" in results[1]["msg"]
    assert results[2]["msg"] == "snapshot s1 exists as an internal snapshot"
    assert results[3]["msg"].startswith("the domain has internal snapshots (s1)")
    assert results[4]["msg"] == "the domain has no snapshot s2"
    assert len(errors) == 4


# --- integration: the real daemon through ansible-playbook ---------------------------------------


def _task(guests: list[dict[str, Any]], check: bool = False, **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {"cloudctl_snapshot": {"libvirt_uri": LIBVIRT_URI, "guests": guests}}
    if check:
        task["check_mode"] = True
    task.update(extra)
    return task


def _disk_domain_xml(name: str, disk: Path) -> str:
    """The firmware-only test domain with a qcow2 disk (no OS: the BIOS keeps it running)."""
    root = ET.fromstring(tiny_domain_xml(name))
    devices = ET.SubElement(root, "devices")
    element = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(element, "driver", name="qemu", type="qcow2")
    ET.SubElement(element, "source", file=str(disk))
    ET.SubElement(element, "target", dev="vda", bus="virtio")
    return ET.tostring(root, encoding="unicode")


def _pattern(path: Path, byte: int, *, shared: bool = False) -> str:
    """``"ok"`` if the first 64 KiB of ``path`` all hold ``byte`` (qemu-io reads through backing),
    else what qemu-io said."""
    argv = [QEMU_IO, "-r", "-f", "qcow2", "-c", f"read -P {byte:#x} 0 64k", str(path)]
    if shared:
        argv.insert(1, "-U")
    rc, out, err = _run(argv)
    return "ok" if rc == 0 and "Pattern verification failed" not in out else out + err


def _write(path: Path, byte: int) -> None:
    subprocess.run(
        [QEMU_IO, "-f", "qcow2", "-c", f"write -P {byte:#x} 0 64k", str(path)],
        check=True,
        capture_output=True,
    )


def _info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [QEMU_IMG, "info", "-U", "--output=json", str(path)], check=True, capture_output=True
    ).stdout
    return dict(json.loads(out))


def _source(conn: Any, name: str) -> str:
    disk = ET.fromstring(conn.lookupByName(name).XMLDesc(0)).find("devices/disk/source")
    assert disk is not None
    return str(disk.get("file"))


@pytest.mark.integration
def test_snapshot_triads_real_daemon(
    ansible_play: PlayRunner,
    libvirt_conn: Any,
    domain_names: Callable[[], str],
    tmp_path: Path,
) -> None:
    name = domain_names()
    disk = tmp_path / "guest" / "disk"
    disk.parent.mkdir()
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    _write(disk, 0xAB)
    libvirt_conn.defineXML(_disk_domain_xml(name, disk)).create()
    s1 = [{"domain": name, "name": "s1", "description": "internal <one>"}]
    export = tmp_path / "export" / "s1.qcow2"
    exported = [{"domain": name, "name": "s1", "state": "exported", "dest": str(export)}]

    # Internal snapshot of a running domain: check / real / check / real, then export it.
    check, real, check2, real2, exp, exp2 = ansible_play(
        [
            _task(s1, check=True),
            _task(s1),
            _task(s1, check=True),
            _task(s1),
            _task(exported),
            _task(exported),
        ]
    )
    assert check["changed"] is True and check["results"][0]["state"] == "present"
    assert real["changed"] is True
    r = real["results"][0]
    assert (r["kind"], r["snapshot_state"], r["file"]) == ("internal", "running", None)
    assert r["size"] > 0  # the memory state
    assert check2["changed"] is False and real2["changed"] is False
    assert exp["changed"] is True and exp2["changed"] is False
    assert exp["results"][0]["virtual_size"] == 64 * 1024**2
    assert "backing-filename" not in _info(export)
    assert _pattern(export, 0xAB) == "ok"
    snap = libvirt_conn.lookupByName(name).snapshotLookupByName("s1", 0)
    assert "internal &lt;one&gt;" in snap.getXMLDesc(0)

    # Revert (an action: always a change), then delete: check / real / check / real.
    gone = [{"domain": name, "name": "s1", "state": "absent"}]
    rev, gcheck, greal, gcheck2, greal2 = ansible_play(
        [
            _task([{**s1[0], "state": "reverted", "description": None}]),
            _task(gone, check=True),
            _task(gone),
            _task(gone, check=True),
            _task(gone),
        ]
    )
    assert rev["changed"] is True and rev["results"][0]["domain_state"] == "running"
    assert gcheck["changed"] is True and greal["changed"] is True
    assert gcheck2["changed"] is False and greal2["changed"] is False
    assert libvirt_conn.lookupByName(name).snapshotNum(0) == 0
    assert _info(disk).get("snapshots") is None

    # Disk-only snapshot: an overlay next to the disk; quiesce without an agent leaves nothing.
    d1 = [{"domain": name, "name": "d1", "disk_only": True}]
    overlay = disk.parent / "disk.snap-d1"
    dcheck, quiet, mixed, _, dreal, dcheck2, dreal2 = ansible_play(
        [
            _task(d1, check=True),
            _task(
                [{"domain": name, "name": "q1", "disk_only": True, "quiesce": True}],
                ignore_errors=True,
            ),
            _task([{"domain": name, "name": "i1"}, *d1], ignore_errors=True),
            _task([{"domain": name, "name": "i1", "state": "absent"}]),
            _task(d1),
            _task(d1, check=True),
            _task(d1),
        ]
    )
    assert dcheck["changed"] is True and dcheck["results"][0]["file"] == str(overlay)
    assert quiet["failed"] is True
    assert quiet["results"][0]["msg"].startswith("guest agent is not responding")
    assert "guest agent is not responding" in quiet["msg"]
    assert not (disk.parent / "disk.snap-q1").exists()
    assert mixed["failed"] is True and mixed["failed_guests"] == [name]
    assert mixed["results"][0]["changed"] is True and mixed["results"][0]["kind"] == "internal"
    assert "internal and disk-only snapshots are not mixed" in mixed["results"][1]["msg"]
    assert dreal["changed"] is True and dcheck2["changed"] is False and dreal2["changed"] is False
    assert dreal["results"][0]["snapshot_state"] == "disk-snapshot"
    assert dreal["results"][0]["file"] == str(overlay)
    assert _source(libvirt_conn, name) == str(overlay)
    assert _info(overlay)["backing-filename"] == str(disk)
    assert [s.getName() for s in libvirt_conn.lookupByName(name).listAllSnapshots(0)] == ["d1"]
    # Change the disk after d1 (domain off, so qemu-io may write), then revert: d1 ran when it
    # was taken, so the domain is started again on a fresh overlay that shows d1's content.
    libvirt_conn.lookupByName(name).destroy()
    _write(overlay, 0xCD)
    assert _pattern(overlay, 0xCD) == "ok"
    export2 = tmp_path / "export" / "d1.qcow2"
    rev2, exp3 = ansible_play(
        [
            _task([{"domain": name, "name": "d1", "state": "reverted"}]),
            _task([{"domain": name, "name": "d1", "state": "exported", "dest": str(export2)}]),
        ]
    )
    assert rev2["changed"] is True and rev2["results"][0]["domain_state"] == "running"
    assert _pattern(overlay, 0xAB, shared=True) == "ok"
    assert exp3["changed"] is True and _pattern(export2, 0xAB) == "ok"
    assert "backing-filename" not in _info(export2)
    # Deleting the external snapshot commits the overlay back: the domain uses the disk again.
    dgone, dgone2 = ansible_play(
        [
            _task([{"domain": name, "name": "d1", "state": "absent"}]),
            _task([{"domain": name, "name": "d1", "state": "absent"}]),
        ]
    )
    assert dgone["changed"] is True and dgone2["changed"] is False
    assert not overlay.exists()
    assert _source(libvirt_conn, name) == str(disk)
    assert libvirt_conn.lookupByName(name).isActive()
    assert libvirt_conn.lookupByName(name).snapshotNum(0) == 0
