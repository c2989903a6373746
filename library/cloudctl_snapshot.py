#!/usr/bin/python
"""Ansible module: libvirt snapshots of many domains on one host (cloudctl)."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import (
    GuestError,
    exit_batch,
    validate_domain_name,
)
from ansible.module_utils.cloudctl_libvirt import (
    connect,
    libvirt,
    lookup_domain,
    state_name,
)

try:
    import libvirt_qemu
except ImportError:  # part of libvirt-python; only --quiesce needs it
    libvirt_qemu = None

DOCUMENTATION = r"""
---
module: cloudctl_snapshot
short_description: Create, revert, delete and export libvirt snapshots of many domains
description:
  - One call handles a list of snapshot requests on one host, in order (a later entry sees
    what an earlier one did).
  - C(present) takes an internal snapshot (qcow2 internal snapshot; with the memory state when
    the domain runs, as C(virsh snapshot-create-as) does) or, with I(disk_only), an external
    disk-only snapshot of the disk I(disk) whose new overlay file
    C(<disk file>.snap-<name>) is created next to the disk. A snapshot of that name that
    exists already is no change.
  - A domain's snapshots are either all internal or all external; mixing them would let a
    block commit of an external snapshot drop an internal one, so it is refused.
  - C(absent) deletes the snapshot; for an external one libvirt commits the overlay into its
    backing file and removes it, so the chain stays valid and the disk usable. A missing
    snapshot or domain is no change.
  - C(reverted) brings the domain back to the snapshot. Internal snapshots use libvirt's
    revert (running again from the memory state if one was saved). External ones (libvirt
    9.0 cannot revert them) must be the newest of the domain; the domain is powered off, the
    overlay recreated empty on the snapshot's backing file, and the domain started again if
    it ran when the snapshot was taken. A revert is an action and always reports a change.
  - C(exported) writes the disk I(disk) as it was at the snapshot into I(dest), a standalone
    qcow2 (no backing file). An existing I(dest) is no change; the file is written under a
    temporary name and renamed, so an existing I(dest) is always complete.
options:
  libvirt_uri:
    description: libvirt connection URI of the host, e.g. C(qemu:///system).
    type: str
    required: true
  agent_timeout:
    description: Seconds to wait for the guest agent's answer with I(quiesce).
    type: int
    default: 5
  guests:
    description: The snapshot requests, handled in order.
    type: list
    elements: dict
    required: true
    suboptions:
      domain:
        description: Domain name; must match C(^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$).
        type: str
        required: true
      name:
        description: Snapshot name; must match C(^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$) (it
          becomes part of a file name).
        type: str
        required: true
      state:
        description: What should be true of the snapshot after the call.
        type: str
        choices: [present, absent, reverted, exported]
        default: present
      disk_only:
        description: With I(state=present), an external disk-only snapshot of I(disk)
          (other disks are not part of it) instead of an internal one.
        type: bool
        default: false
      quiesce:
        description:
          - With I(state=present), freeze the guest's filesystems through the QEMU guest
            agent while the snapshot is taken. The domain must run and its agent answer
            within I(agent_timeout), else the request fails and nothing is created.
        type: bool
        default: false
      description:
        description: With I(state=present), the snapshot's description.
        type: str
      disk:
        description: Target device of the disk that disk-only snapshots and exports are about.
        type: str
        default: vda
      dest:
        description: With I(state=exported), the absolute path of the qcow2 file to write
          (its directory is created).
        type: path
requirements:
  - libvirt-python
  - qemu-img (Debian package qemu-utils)
author: cloudctl
"""

EXAMPLES = r"""
- name: Take an internal snapshot of one guest and a disk-only snapshot of another
  cloudctl_snapshot:
    libvirt_uri: qemu:///system
    guests:
      - {domain: instance-0001, name: before-upgrade, description: "before the upgrade"}
      - {domain: instance-0002, name: nightly, disk_only: true}

- name: Export a snapshot's disk as a standalone qcow2, then delete the snapshot
  cloudctl_snapshot:
    libvirt_uri: qemu:///system
    guests:
      - {domain: instance-0001, name: before-upgrade, state: exported, dest: /srv/export/a.qcow2}
      - {domain: instance-0001, name: before-upgrade, state: absent}
"""

RETURN = r"""
results:
  description: One entry per request, in input order.
  returned: always
  type: list
  elements: dict
  contains:
    domain:
      description: Domain name.
      type: str
    name:
      description: Snapshot name.
      type: str
    state:
      description: C(present) or C(absent) after the call (in check mode, as predicted).
      type: str
    changed:
      description: Whether anything was (or, in check mode, would be) changed.
      type: bool
    kind:
      description: C(internal) or C(external) (null when the snapshot is absent).
      type: str
    file:
      description: The overlay file an external snapshot created (null for internal ones).
      type: str
    snapshot_state:
      description: The domain state libvirt recorded in the snapshot (C(running),
        C(shutoff), C(paused), C(disk-snapshot)).
      type: str
    created:
      description: Creation time of the snapshot (seconds since the epoch).
      type: int
    size:
      description: Bytes the snapshot holds, if known - the saved memory state of an
        internal snapshot, the allocation of the file an external snapshot froze; with
        I(state=exported) the size of I(dest).
      type: int
    virtual_size:
      description: Only with I(state=exported) - the virtual size of I(dest).
      type: int
    dest:
      description: Only with I(state=exported) - the written file.
      type: str
    domain_state:
      description: libvirt state of the domain after the call (C(absent) if there is none).
      type: str
      sample: running
    failed:
      description: Only on a request that failed.
      type: bool
    msg:
      description: Only on a request that failed - why.
      type: str
failed_guests:
  description: The domains whose requests failed; the task fails if this is not empty.
  returned: failure
  type: list
  elements: str
"""

STATES = ("present", "absent", "reverted", "exported")
SNAPSHOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DISK_TARGET_RE = re.compile(r"^(vd|sd|hd|xvd)[a-z]{1,2}$")
OVERLAY_INFIX = ".snap-"
AGENT_PING = '{"execute": "guest-ping"}'

Runner = Callable[[list[str]], tuple[int, str, str]]


def validate_snapshot_name(value: object) -> str:
    """Return ``value`` if it is an acceptable snapshot name, else raise ValueError."""
    if not isinstance(value, str) or not SNAPSHOT_NAME_RE.fullmatch(value):
        raise ValueError(f"invalid snapshot name {value!r}: must match {SNAPSHOT_NAME_RE.pattern}")
    return value


@dataclass(frozen=True)
class SnapshotRequest:
    """One validated entry of ``guests``."""

    domain: str
    name: str
    state: str = "present"
    disk_only: bool = False
    quiesce: bool = False
    description: str | None = None
    disk: str = "vda"
    dest: str | None = None


def validate_request(raw: dict[str, Any]) -> SnapshotRequest:
    """Check one ``guests`` entry; raise ValueError with the reason."""
    domain = validate_domain_name(raw.get("domain"))
    name = validate_snapshot_name(raw.get("name"))
    state = raw.get("state") or "present"
    if state not in STATES:
        raise ValueError(f"invalid state {state!r}: expected one of {', '.join(STATES)}")
    disk = raw.get("disk") or "vda"
    if not DISK_TARGET_RE.fullmatch(disk):
        raise ValueError(f"invalid disk target {disk!r}")
    description = raw.get("description")
    if description is not None and ("\x00" in description or len(description) > 1024):
        raise ValueError("description must be at most 1024 characters, without NUL")
    dest = raw.get("dest")
    if state == "exported":
        if not dest or not os.path.isabs(dest) or ".." in dest.split("/"):
            raise ValueError(f"state=exported needs an absolute dest, got {dest!r}")
    elif dest:
        raise ValueError("dest is only used with state=exported")
    quiesce = bool(raw.get("quiesce"))
    disk_only = bool(raw.get("disk_only"))
    if state != "present" and (quiesce or disk_only or description):
        raise ValueError("disk_only, quiesce and description are only used with state=present")
    return SnapshotRequest(
        domain=domain,
        name=name,
        state=state,
        disk_only=disk_only,
        quiesce=quiesce,
        description=description,
        disk=disk,
        dest=dest,
    )


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot's XML says."""

    name: str
    kind: str
    state: str | None
    created: int | None
    files: dict[str, str] = field(default_factory=dict)  # disk target -> external overlay


def parse_snapshot_xml(xml: str) -> SnapshotInfo:
    """The parts of a ``<domainsnapshot>`` document cloudctl uses."""
    root = ET.fromstring(xml)
    files: dict[str, str] = {}
    for disk in root.findall("disks/disk"):
        if disk.get("snapshot") == "external":
            source = disk.find("source")
            target = disk.get("name") or ""
            if source is not None and source.get("file"):
                files[target] = str(source.get("file"))
    created = root.findtext("creationTime")
    memory = root.find("memory")
    external = bool(files) or (memory is not None and memory.get("snapshot") == "external")
    return SnapshotInfo(
        name=root.findtext("name") or "",
        kind="external" if external else "internal",
        state=root.findtext("state"),
        created=int(created) if created and created.isdigit() else None,
        files=files,
    )


def disk_chain(domain_xml: str, target: str) -> list[str]:
    """Files of the disk ``target``, active one first, then its backing chain."""
    root = ET.fromstring(domain_xml)
    for disk in root.findall("devices/disk"):
        tgt = disk.find("target")
        if tgt is None or tgt.get("dev") != target:
            continue
        chain: list[str] = []
        node: ET.Element | None = disk
        while node is not None:
            source = node.find("source")
            if source is None or not source.get("file"):
                break
            chain.append(str(source.get("file")))
            node = node.find("backingStore")
        if not chain:
            raise ValueError(f"disk {target} is not a file-backed disk")
        return chain
    raise ValueError(f"the domain has no disk {target}")


def overlay_path(active: str, name: str) -> str:
    """``<dir>/<disk>.snap-<name>`` next to the active file of a disk (``disk.snap-a`` -> ``disk``)."""
    directory, base = os.path.split(active)
    base = base.split(OVERLAY_INFIX, 1)[0]
    return os.path.join(directory, f"{base}{OVERLAY_INFIX}{validate_snapshot_name(name)}")


def snapshot_xml(req: SnapshotRequest, domain_xml: str, overlay: str | None) -> str:
    """The ``<domainsnapshot>`` to create (elements built, never formatted into a string)."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = req.name
    if req.description:
        ET.SubElement(root, "description").text = req.description
    if overlay is not None:
        disks = ET.SubElement(root, "disks")
        for disk in ET.fromstring(domain_xml).findall("devices/disk"):
            target = disk.find("target")
            dev = target.get("dev") if target is not None else None
            if not dev or disk.get("device") not in (None, "disk"):
                continue
            if dev == req.disk:
                element = ET.SubElement(disks, "disk", name=dev, snapshot="external")
                ET.SubElement(element, "driver", type="qcow2")
                ET.SubElement(element, "source", file=overlay)
            else:
                ET.SubElement(disks, "disk", name=dev, snapshot="no")
    return ET.tostring(root, encoding="unicode")


class QemuImg:
    """The few qemu-img calls snapshots need, through an injected command runner."""

    def __init__(self, binary: str, run: Runner) -> None:
        self.binary = binary
        self.run = run

    def _check(self, argv: list[str], what: str) -> str:
        rc, out, err = self.run(argv)
        if rc != 0:
            lines = (err or out).strip().splitlines()
            raise RuntimeError(f"{what} failed: {lines[-1] if lines else f'rc {rc}'}")
        return out

    def info(self, path: str) -> dict[str, Any]:
        """``qemu-img info`` of one file (shared lock: the domain may be running)."""
        out = self._check(
            [self.binary, "info", "-U", "--output=json", path], f"qemu-img info {path}"
        )
        return dict(json.loads(out))

    def convert(self, src: str, dest: str, snapshot: str | None) -> None:
        """Flatten ``src`` (at internal snapshot ``snapshot``, if given) into a qcow2 ``dest``."""
        argv = [self.binary, "convert", "-U", "-O", "qcow2"]
        if snapshot is not None:
            argv += ["-l", f"snapshot.name={validate_snapshot_name(snapshot)}"]
        self._check([*argv, src, dest], f"qemu-img convert {src}")

    def overlay(self, path: str, backing: str, backing_fmt: str) -> None:
        """A new empty qcow2 ``path`` on ``backing``."""
        argv = [self.binary, "create", "-q", "-f", "qcow2", "-F", backing_fmt, "-b", backing, path]
        self._check(argv, f"qemu-img create {path}")


def _is_missing_snapshot(exc: Exception) -> bool:
    return (
        isinstance(exc, libvirt.libvirtError)
        and exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT
    )


def _agent_error(exc: Exception) -> bool:
    if not isinstance(exc, libvirt.libvirtError):
        return False
    code = exc.get_error_code()
    return (
        code
        in (
            getattr(libvirt, "VIR_ERR_AGENT_UNRESPONSIVE", -1),
            getattr(libvirt, "VIR_ERR_AGENT_UNSYNCED", -1),
        )
        or "agent" in str(exc).lower()
    )


class SnapshotManager:
    """Carries out snapshot requests against one libvirt connection.

    ``ping_agent`` is injected (it needs ``libvirt_qemu`` and a guest agent) so tests can
    drive the quiesce paths.
    """

    def __init__(
        self,
        conn: Any,
        qemu: QemuImg,
        check_mode: bool,
        agent_timeout: int = 5,
        ping_agent: Callable[[Any, int], None] | None = None,
    ) -> None:
        self.conn = conn
        self.qemu = qemu
        self.check_mode = check_mode
        self.agent_timeout = agent_timeout
        self.ping_agent = ping_agent or _ping_agent
        #: Whether the request being handled changed anything on the host yet (a failure
        #: after that point may have left the domain half-way).
        self.touched = False

    # -- lookups --------------------------------------------------------------------------

    def _domain(self, req: SnapshotRequest) -> Any:
        dom = lookup_domain(self.conn, req.domain)
        if dom is None:
            raise ValueError(f"domain {req.domain} does not exist")
        return dom

    @staticmethod
    def _snapshot(dom: Any, name: str) -> Any | None:
        try:
            return dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if _is_missing_snapshot(exc):
                return None
            raise

    @staticmethod
    def _infos(dom: Any) -> list[SnapshotInfo]:
        return [parse_snapshot_xml(s.getXMLDesc(0)) for s in dom.listAllSnapshots(0)]

    @staticmethod
    def _domain_state(dom: Any) -> str:
        if dom is None:
            return "absent"
        return str(state_name(dom.state()[0]))

    def _size(self, dom: Any, req: SnapshotRequest, info: SnapshotInfo) -> int | None:
        """Bytes held by the snapshot, when qemu-img can tell (best effort)."""
        try:
            if info.kind == "internal":
                active = disk_chain(dom.XMLDesc(0), req.disk)[0]
                for snap in self.qemu.info(active).get("snapshots") or []:
                    if snap.get("name") == info.name:
                        return int(snap.get("vm-state-size", 0))
                return None
            overlay = info.files.get(req.disk)
            backing = self._backing(overlay) if overlay else None
            return int(self.qemu.info(backing[0]).get("actual-size", 0)) if backing else None
        except (RuntimeError, ValueError, OSError, libvirt.libvirtError):
            return None

    def _backing(self, overlay: str) -> tuple[str, str]:
        """(file, format) an external snapshot's overlay was created on: the frozen state."""
        data = self.qemu.info(overlay)
        backing = data.get("full-backing-filename") or data.get("backing-filename")
        if not backing:
            raise ValueError(f"overlay {overlay} has no backing file")
        return str(backing), str(data.get("backing-filename-format") or "qcow2")

    @staticmethod
    def _drop_stray(dom: Any, req: SnapshotRequest, overlay: str) -> None:
        """Remove an overlay file the domain does not use (after a failed create or a delete)."""
        if os.path.lexists(overlay) and overlay not in disk_chain(dom.XMLDesc(0), req.disk):
            os.unlink(overlay)

    def _result(
        self, req: SnapshotRequest, dom: Any, info: SnapshotInfo | None, changed: bool
    ) -> dict[str, Any]:
        return {
            "domain": req.domain,
            "name": req.name,
            "state": "absent" if info is None else "present",
            "changed": changed,
            "kind": info.kind if info else None,
            "file": info.files.get(req.disk) if info else None,
            "snapshot_state": info.state if info else None,
            "created": info.created if info else None,
            "size": self._size(dom, req, info) if info and dom is not None else None,
            "domain_state": self._domain_state(dom),
        }

    # -- the requests ---------------------------------------------------------------------

    def handle(self, req: SnapshotRequest) -> dict[str, Any]:
        """Carry out one request; raise ValueError/RuntimeError/libvirtError on failure."""
        if req.state == "present":
            return self.present(req)
        if req.state == "absent":
            return self.absent(req)
        if req.state == "reverted":
            return self.reverted(req)
        return self.exported(req)

    def present(self, req: SnapshotRequest) -> dict[str, Any]:
        """Create the snapshot unless it exists."""
        dom = self._domain(req)
        kind = "external" if req.disk_only else "internal"
        snap = self._snapshot(dom, req.name)
        if snap is not None:
            info = parse_snapshot_xml(snap.getXMLDesc(0))
            if info.kind != kind:
                raise ValueError(f"snapshot {req.name} exists as an {info.kind} snapshot")
            return self._result(req, dom, info, changed=False)
        others = [i for i in self._infos(dom) if i.kind != kind]
        if others:
            names = ", ".join(sorted(i.name for i in others))
            raise ValueError(
                f"the domain has {others[0].kind} snapshots ({names}); internal and disk-only "
                "snapshots are not mixed: delete those first"
            )
        if req.quiesce:
            if not dom.isActive() or dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                raise ValueError("cannot quiesce: the domain is not running")
            try:
                self.ping_agent(dom, self.agent_timeout)
            except (libvirt.libvirtError, RuntimeError) as exc:
                raise ValueError(f"guest agent is not responding: {exc}") from exc
        domain_xml = dom.XMLDesc(0)
        overlay: str | None = None
        if req.disk_only:
            chain = disk_chain(domain_xml, req.disk)
            overlay = overlay_path(chain[0], req.name)
            if overlay in chain:
                raise ValueError(f"{overlay} is in use by the domain")
        if self.check_mode:
            result = self._result(req, dom, None, changed=True)
            result.update(state="present", kind=kind, file=overlay)
            return result
        if overlay is not None and os.path.lexists(overlay):
            self.touched = True
            os.unlink(overlay)  # left by a create that died before libvirt recorded it
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if req.disk_only:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            if req.quiesce:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
        xml = snapshot_xml(req, domain_xml, overlay)
        try:
            if req.quiesce and not req.disk_only:
                # libvirt quiesces disk-only snapshots only; freeze around the internal one.
                dom.fsFreeze()
                try:
                    snap = dom.snapshotCreateXML(xml, flags)
                finally:
                    dom.fsThaw()
            else:
                snap = dom.snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as exc:
            if overlay is not None:
                self._drop_stray(dom, req, overlay)
            if req.quiesce and _agent_error(exc):
                raise ValueError(f"guest agent is not responding: {exc}") from exc
            raise ValueError(f"cannot create snapshot {req.name}: {exc}") from exc
        return self._result(req, dom, parse_snapshot_xml(snap.getXMLDesc(0)), changed=True)

    def absent(self, req: SnapshotRequest) -> dict[str, Any]:
        """Delete the snapshot if it exists (an external one is committed into its backing)."""
        dom = lookup_domain(self.conn, req.domain)
        snap = self._snapshot(dom, req.name) if dom is not None else None
        if snap is None:
            return self._result(req, dom, None, changed=False)
        info = parse_snapshot_xml(snap.getXMLDesc(0))
        if not self.check_mode:
            try:
                snap.delete(0)
            except libvirt.libvirtError as exc:
                raise ValueError(f"cannot delete snapshot {req.name}: {exc}") from exc
            self.touched = True
            overlay = info.files.get(req.disk)
            if overlay:
                self._drop_stray(dom, req, overlay)
        return self._result(req, dom, None, changed=True)

    def reverted(self, req: SnapshotRequest) -> dict[str, Any]:
        """Bring the domain back to the snapshot."""
        dom = self._domain(req)
        snap = self._snapshot(dom, req.name)
        if snap is None:
            raise ValueError(f"the domain has no snapshot {req.name}")
        info = parse_snapshot_xml(snap.getXMLDesc(0))
        if info.kind == "internal":
            if not self.check_mode:
                self.touched = True
                try:
                    dom.revertToSnapshot(snap, 0)
                except libvirt.libvirtError as exc:
                    raise ValueError(f"cannot revert to snapshot {req.name}: {exc}") from exc
            return self._result(req, dom, info, changed=True)
        overlay = info.files.get(req.disk)
        if not overlay:
            raise ValueError(f"snapshot {req.name} has no overlay for disk {req.disk}")
        active = disk_chain(dom.XMLDesc(0), req.disk)[0]
        if active != overlay:
            raise ValueError(
                f"only the newest disk-only snapshot can be reverted to ({req.name}'s overlay "
                f"{overlay} is not the active file {active}): delete the newer ones first"
            )
        backing, backing_fmt = self._backing(overlay)
        if self.check_mode:
            return self._result(req, dom, info, changed=True)
        self.touched = True
        if dom.isActive():
            dom.destroy()
        fresh = f"{overlay}.new"
        if os.path.lexists(fresh):
            os.unlink(fresh)
        self.qemu.overlay(fresh, backing, backing_fmt)
        os.replace(fresh, overlay)
        if info.state != "shutoff":
            dom.create()
        return self._result(req, dom, info, changed=True)

    def exported(self, req: SnapshotRequest) -> dict[str, Any]:
        """Write the disk as it was at the snapshot into ``dest``, unless it is there."""
        assert req.dest is not None
        dom = self._domain(req)
        snap = self._snapshot(dom, req.name)
        if snap is None:
            raise ValueError(f"the domain has no snapshot {req.name}")
        info = parse_snapshot_xml(snap.getXMLDesc(0))
        changed = not os.path.exists(req.dest)
        if changed and not self.check_mode:
            if info.kind == "internal":
                source, at = disk_chain(dom.XMLDesc(0), req.disk)[0], info.name
            else:
                overlay = info.files.get(req.disk)
                if not overlay:
                    raise ValueError(f"snapshot {req.name} has no overlay for disk {req.disk}")
                source, at = self._backing(overlay)[0], None
            os.makedirs(os.path.dirname(req.dest), mode=0o755, exist_ok=True)
            partial = f"{req.dest}.part"
            try:
                self.qemu.convert(source, partial, at)
                os.replace(partial, req.dest)
            finally:
                if os.path.lexists(partial):
                    os.unlink(partial)
        result = self._result(req, dom, info, changed=changed)
        result["dest"] = req.dest
        if os.path.exists(req.dest):
            result["size"] = os.path.getsize(req.dest)
            result["virtual_size"] = int(self.qemu.info(req.dest).get("virtual-size", 0))
        return result

    # -- the batch ------------------------------------------------------------------------

    def run(self, guests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[GuestError]]:
        """Handle every request in order; a failed one does not stop the others."""
        results: list[dict[str, Any]] = []
        errors: list[GuestError] = []
        for index, raw in enumerate(guests):
            domain = str(raw.get("domain") or f"#{index}") if isinstance(raw, dict) else "?"
            name = raw.get("name") if isinstance(raw, dict) else None
            self.touched = False
            try:
                results.append(self.handle(validate_request(raw)))
            except (ValueError, RuntimeError, OSError, libvirt.libvirtError) as exc:
                errors.append(GuestError(domain, f"snapshot {name}: {exc}", self.touched))
                results.append(
                    {
                        "domain": domain,
                        "name": name,
                        "changed": self.touched,
                        "failed": True,
                        "msg": str(exc),
                    }
                )
        return results, errors


def _ping_agent(dom: Any, timeout: int) -> None:
    """Ask the guest agent for a ping; raises libvirtError when it does not answer."""
    if libvirt_qemu is None:
        raise RuntimeError("libvirt_qemu (part of libvirt-python) is not installed")
    libvirt_qemu.qemuAgentCommand(dom, AGENT_PING, timeout, 0)


def _diff(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    diffs = []
    for r in results:
        if r.get("changed") and not r.get("failed"):
            diffs.append(
                {
                    "before_header": f"{r['domain']} snapshot {r['name']}",
                    "after_header": f"{r['domain']} snapshot {r['name']}",
                    "before": "",
                    "after": f"{r.get('state')} {r.get('kind') or ''}\n".replace(" \n", "\n"),
                }
            )
    return diffs


ARGUMENT_SPEC: dict[str, Any] = {
    "libvirt_uri": {"type": "str", "required": True},
    "agent_timeout": {"type": "int", "default": 5},
    "guests": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "domain": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": list(STATES), "default": "present"},
            "disk_only": {"type": "bool", "default": False},
            "quiesce": {"type": "bool", "default": False},
            "description": {"type": "str"},
            "disk": {"type": "str", "default": "vda"},
            "dest": {"type": "path"},
        },
    },
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if module.params["agent_timeout"] < 1:
        module.fail_json(msg="agent_timeout must be >= 1")

    def run(argv: list[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(argv)
        return int(rc), str(out), str(err)

    qemu = QemuImg(module.get_bin_path("qemu-img", required=True), run)
    conn = connect(module, module.params["libvirt_uri"])
    try:
        manager = SnapshotManager(
            conn, qemu, module.check_mode, agent_timeout=module.params["agent_timeout"]
        )
        results, errors = manager.run(module.params["guests"])
    finally:
        conn.close()
    exit_batch(module, results, errors, _diff(results))


if __name__ == "__main__":
    main()
