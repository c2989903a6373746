#!/usr/bin/python
"""Ansible module: move an instance's files for a cold migration or resize (cloudctl)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import (
    DEFAULT_INSTANCES_PATH,
    GuestError,
    base_file,
    exit_batch,
    failed_result,
    guest_dir,
    guest_label,
    validate_checksum,
    validate_filename,
    validate_uuid,
)
from ansible.module_utils.cloudctl_libvirt import HAS_LIBVIRT, libvirt, require_libvirt

DOCUMENTATION = r"""
---
module: cloudctl_instance_files
short_description: Stash, copy, rebase, restore or discard instance directories for moves
description:
  - The file side of Nova's cold migration and resize, for many guests of one host.
  - C(stash) renames C(<instances_path>/<uuid>) to C(<uuid>_resize) on the source, keeping the
    original files for a revert (Nova's C(inst_base_resize)).
  - C(copy) copies I(files) from C(<uuid>_resize/) to C(<uuid>/) on the destination; without
    I(dest_uri) the destination sees this host's instances path (shared storage, same host)
    and the copy is local, with I(dest_uri) the files are streamed into the destination's
    libvirtd (a transient directory pool), so hosts need no SSH trust between them.
  - C(rebase) points the root disk's backing file at this host's cached base file when the
    copied overlay names another path (hosts with different instances paths).
  - C(restore) puts C(<uuid>_resize) back as C(<uuid>) (a revert); C(discard) removes
    C(<uuid>_resize) (a confirm).
  - Every action is idempotent: a second run changes nothing.
options:
  instances_path:
    description: Directory holding C(_base/) and one directory per instance on this host.
    type: path
    default: /var/lib/cloudctl/instances
  action:
    description: What to do with each guest's files.
    type: str
    choices: [stash, copy, rebase, restore, discard]
    required: true
  dest_uri:
    description: With I(action=copy), the destination's libvirt URI; omit for a local copy.
    type: str
  dest_instances_path:
    description: With I(action=copy), the instances path on the destination.
    type: path
  guests:
    description: The guests to handle.
    type: list
    elements: dict
    required: true
    suboptions:
      uuid:
        description: Instance UUID (canonical lower-case form).
        type: str
        required: true
      files:
        description: With I(action=copy), the file names to copy (missing ones are skipped).
        type: list
        elements: str
        default: [disk, disk.eph0, disk.swap, disk.config]
      image:
        description: With I(action=rebase), the base image of the root disk.
        type: dict
        suboptions:
          checksum:
            description: sha256 of the base file, its name under C(_base/).
            type: str
            required: true
          format:
            description: Format of the base file.
            type: str
            choices: [qcow2, raw]
            default: qcow2
requirements:
  - qemu-img (for C(rebase)); libvirt-python (for C(copy) with I(dest_uri))
author: cloudctl
"""

EXAMPLES = r"""
- name: Keep the source files for a revert
  cloudctl_instance_files:
    action: stash
    guests: [{uuid: 5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00}]

- name: Stream the disks to the destination's libvirtd
  cloudctl_instance_files:
    action: copy
    dest_uri: qemu+tcp://10.0.0.12/system
    guests: [{uuid: 5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00, files: [disk]}]
"""

RETURN = r"""
results:
  description: One entry per guest, in input order.
  returned: always
  type: list
  elements: dict
  contains:
    uuid:
      description: Instance UUID.
      type: str
    changed:
      description: Whether anything was (or would be) changed.
      type: bool
    actions:
      description: What was (or would be) done, one line per step.
      type: list
      elements: str
    bytes:
      description: With I(action=copy), bytes copied.
      type: int
failed_guests:
  description: UUIDs of the guests that failed.
  returned: failure
  type: list
  elements: str
"""

ACTIONS = ("stash", "copy", "rebase", "restore", "discard")
RESIZE_SUFFIX = "_resize"
DEFAULT_FILES = ["disk", "disk.eph0", "disk.swap", "disk.config"]
CHUNK = 1024 * 1024

Runner = Callable[[list[str]], tuple[int, str, str]]


@dataclass
class Outcome:
    """What happened (or would happen) to one guest."""

    uuid: str
    actions: list[str] = field(default_factory=list)
    bytes: int = 0

    def result(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "changed": bool(self.actions),
            "actions": self.actions,
            "bytes": self.bytes,
        }


def stash_dir(instances_path: str, uuid: str) -> str:
    """``<instances_path>/<uuid>_resize``."""
    return guest_dir(instances_path, uuid) + RESIZE_SUFFIX


def stash(instances_path: str, uuid: str, check: bool) -> Outcome:
    """``<uuid>`` -> ``<uuid>_resize`` unless already done."""
    out = Outcome(uuid)
    live, kept = guest_dir(instances_path, uuid), stash_dir(instances_path, uuid)
    if os.path.isdir(kept):
        return out
    if not os.path.isdir(live):
        raise GuestError(uuid, f"neither {live} nor {kept} exists")
    out.actions.append(f"rename {live} to {kept}")
    if not check:
        os.rename(live, kept)
    return out


def restore(instances_path: str, uuid: str, check: bool) -> Outcome:
    """``<uuid>_resize`` -> ``<uuid>`` (whatever ``<uuid>`` holds is the move's and goes)."""
    out = Outcome(uuid)
    live, kept = guest_dir(instances_path, uuid), stash_dir(instances_path, uuid)
    if not os.path.isdir(kept):
        return out
    if os.path.lexists(live):
        out.actions.append(f"remove {live}")
        if not check:
            shutil.rmtree(live)
    out.actions.append(f"rename {kept} to {live}")
    if not check:
        os.rename(kept, live)
    return out


def discard(instances_path: str, uuid: str, check: bool) -> Outcome:
    """Remove ``<uuid>_resize``."""
    out = Outcome(uuid)
    kept = stash_dir(instances_path, uuid)
    if os.path.lexists(kept):
        out.actions.append(f"remove {kept}")
        if not check:
            shutil.rmtree(kept)
    return out


def _same_content(src: str, dst: str) -> bool:
    return os.path.isfile(dst) and os.path.getsize(dst) == os.path.getsize(src)


def copy_local(
    instances_path: str, dest_path: str, uuid: str, files: list[str], check: bool
) -> Outcome:
    """Copy files from ``<uuid>_resize`` to ``<dest_path>/<uuid>`` seen from this host."""
    out = Outcome(uuid)
    src_dir, dst_dir = stash_dir(instances_path, uuid), guest_dir(dest_path, uuid)
    if not os.path.isdir(src_dir):
        raise GuestError(uuid, f"{src_dir} does not exist (stash first)")
    if not os.path.isdir(dst_dir):
        out.actions.append(f"create directory {dst_dir}")
        if not check:
            os.makedirs(dst_dir, mode=0o755)
    for name in files:
        src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
        if not os.path.isfile(src) or _same_content(src, dst):
            continue
        out.actions.append(f"copy {src} to {dst}")
        out.bytes += os.path.getsize(src)
        if not check:
            tmp = dst + ".part"
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
    return out


def _pool_xml(name: str, path: str) -> str:
    from xml.sax.saxutils import escape

    return (
        f"<pool type='dir'><name>{escape(name)}</name>"
        f"<target><path>{escape(path)}</path></target></pool>"
    )


def _volume_xml(name: str, size: int) -> str:
    from xml.sax.saxutils import escape

    return (
        f"<volume><name>{escape(name)}</name>"
        f"<capacity unit='bytes'>{size}</capacity><allocation unit='bytes'>0</allocation>"
        "<target><format type='raw'/><permissions><mode>0644</mode></permissions></target>"
        "</volume>"
    )


def copy_remote(
    conn: Any, instances_path: str, dest_path: str, uuid: str, files: list[str], check: bool
) -> Outcome:
    """Stream files from ``<uuid>_resize`` into the destination libvirtd's ``<uuid>/``.

    A transient directory pool over the guest's directory on the destination receives each
    file as a raw volume of the same byte size; the bytes are copied verbatim (a qcow2 stays a
    qcow2), so nothing but libvirt's own connection is needed between the hosts.
    """
    out = Outcome(uuid)
    src_dir, dst_dir = stash_dir(instances_path, uuid), guest_dir(dest_path, uuid)
    if not os.path.isdir(src_dir):
        raise GuestError(uuid, f"{src_dir} does not exist (stash first)")
    todo = [n for n in files if os.path.isfile(os.path.join(src_dir, n))]
    if not todo:
        return out
    pool_name = f"cloudctl-move-{uuid}"
    stale = None
    try:
        stale = conn.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError:
        stale = None
    if stale is not None:
        stale.destroy()
    if check:
        out.actions += [f"stream {os.path.join(src_dir, n)} to {dst_dir}/{n}" for n in todo]
        return out
    pool = conn.storagePoolCreateXML(
        _pool_xml(pool_name, dst_dir), libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD
    )
    try:
        pool.refresh(0)
        existing = {v: pool.storageVolLookupByName(v) for v in pool.listVolumes()}
        for name in todo:
            src = os.path.join(src_dir, name)
            size = os.path.getsize(src)
            vol = existing.get(name)
            if vol is not None:
                if vol.info()[1] == size:
                    continue
                vol.delete(0)
            out.actions.append(f"stream {src} to {dst_dir}/{name}")
            out.bytes += size
            vol = pool.createXML(_volume_xml(name, size), 0)
            stream = conn.newStream(0)
            vol.upload(stream, 0, size, 0)
            with open(src, "rb") as handle:
                stream.sendAll(lambda _s, nbytes, fh: fh.read(min(nbytes, CHUNK)), handle)
            stream.finish()
    finally:
        pool.destroy()
    return out


def rebase(
    run: Runner, qemu_img: str, instances_path: str, uuid: str, image: dict[str, Any], check: bool
) -> Outcome:
    """Point ``<uuid>/disk`` at this host's base file if it names another backing path."""
    out = Outcome(uuid)
    base = base_file(instances_path, validate_checksum(image["checksum"]))
    disk = os.path.join(guest_dir(instances_path, uuid), "disk")
    if not os.path.isfile(disk):
        raise GuestError(uuid, f"{disk} does not exist")
    rc, stdout, err = run([qemu_img, "info", "-U", "--output=json", "-f", "qcow2", disk])
    if rc != 0:
        raise GuestError(uuid, f"qemu-img info {disk} failed: {err.strip() or stdout.strip()}")
    info = json.loads(stdout)
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing and os.path.realpath(backing) == os.path.realpath(base):
        return out
    fmt = image.get("format") or "qcow2"
    out.actions.append(f"rebase {disk} onto {base}")
    if not check:
        rc, stdout, err = run(
            [qemu_img, "rebase", "-u", "-f", "qcow2", "-F", fmt, "-b", base, disk]
        )
        if rc != 0:
            raise GuestError(uuid, f"qemu-img rebase failed: {err.strip() or stdout.strip()}")
    return out


ARGUMENT_SPEC: dict[str, Any] = {
    "instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH},
    "action": {"type": "str", "choices": list(ACTIONS), "required": True},
    "dest_uri": {"type": "str"},
    "dest_instances_path": {"type": "path"},
    "guests": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "uuid": {"type": "str", "required": True},
            "files": {"type": "list", "elements": "str", "default": list(DEFAULT_FILES)},
            "image": {
                "type": "dict",
                "options": {
                    "checksum": {"type": "str", "required": True},
                    "format": {"type": "str", "choices": ["qcow2", "raw"], "default": "qcow2"},
                },
            },
        },
    },
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    path, action, check = p["instances_path"], p["action"], module.check_mode
    dest_path = p["dest_instances_path"] or path

    def run(argv: list[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(argv)
        return int(rc), str(out), str(err)

    conn = None
    if action == "copy" and p["dest_uri"]:
        require_libvirt(module)
        try:
            conn = libvirt.open(p["dest_uri"])
        except libvirt.libvirtError as exc:
            module.fail_json(msg=f"cannot connect to the destination at {p['dest_uri']}: {exc}")
    qemu_img = module.get_bin_path("qemu-img", required=True) if action == "rebase" else ""
    results: list[dict[str, Any]] = []
    errors: list[GuestError] = []
    seen: set[str] = set()
    errors_types: tuple[type[Exception], ...] = (ValueError, OSError, KeyError)
    if HAS_LIBVIRT:
        errors_types += (libvirt.libvirtError,)
    try:
        for index, guest in enumerate(p["guests"]):
            label = guest_label(guest, "uuid", index)
            try:
                if label in seen:
                    raise GuestError(label, "listed twice")
                seen.add(label)
                try:
                    uuid = validate_uuid(guest["uuid"])
                    files = [validate_filename(f) for f in guest.get("files") or DEFAULT_FILES]
                    if action == "stash":
                        out = stash(path, uuid, check)
                    elif action == "restore":
                        out = restore(path, uuid, check)
                    elif action == "discard":
                        out = discard(path, uuid, check)
                    elif action == "copy" and conn is not None:
                        out = copy_remote(conn, path, dest_path, uuid, files, check)
                    elif action == "copy":
                        out = copy_local(path, dest_path, uuid, files, check)
                    else:
                        if not guest.get("image"):
                            raise GuestError(uuid, "rebase needs the guest's image")
                        out = rebase(run, qemu_img, path, uuid, guest["image"], check)
                except errors_types as exc:
                    raise GuestError(label, str(exc)) from exc
            except GuestError as exc:
                errors.append(exc)
                results.append(failed_result("uuid", exc))
                continue
            results.append(out.result())
    finally:
        if conn is not None:
            conn.close()
    exit_batch(module, results, errors)


if __name__ == "__main__":
    main()
