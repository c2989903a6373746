#!/usr/bin/python
"""Ansible module: remove orphaned instance directories and unused base files (cloudctl)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
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
)
from ansible.module_utils.cloudctl_files import RESIZE_SUFFIX, base_user, overlay_backings
from ansible.module_utils.cloudctl_libvirt import connect, is_no_domain, libvirt

DOCUMENTATION = r"""
---
module: cloudctl_host_cleanup
short_description: Remove orphaned instance directories and unused cached base files
description:
  - Removes, on one host, the instance directories (C(<uuid>) or C(<uuid>_resize)) and the
    cached base files (C(_base/<checksum>)) that the caller found to be leftovers, typically
    from a C(cloudctl_host_facts) survey with I(files=true).
  - A directory is refused (that item fails, the others are still handled) while a libvirt
    domain with its uuid is defined on the host.
  - A base file is re-checked on the host and kept (not a failure) while a qcow2 overlay
    directly inside any directory under I(instances_path) uses it, or while it was modified
    less than I(base_min_age_s) seconds ago. Overlays in directories removed by the same call
    no longer count.
  - Anything already absent is fine and unchanged; check mode predicts without touching
    anything.
options:
  instances_path:
    description: Directory holding C(_base/) and one directory per instance on this host.
    type: path
    default: /var/lib/cloudctl/instances
  libvirt_uri:
    description: libvirt connection URI of the host, e.g. C(qemu:///system).
    type: str
    required: true
  instance_dirs:
    description: Instance directories to remove, recursively.
    type: list
    elements: dict
    default: []
    suboptions:
      uuid:
        description: Instance UUID (canonical lower-case form).
        type: str
        required: true
      kind:
        description: C(instance) for C(<uuid>), C(resize) for the stash C(<uuid>_resize).
        type: str
        choices: [instance, resize]
        required: true
  base_files:
    description: Names of files in C(_base/) (image sha256 checksums) to remove if unused.
    type: list
    elements: str
    default: []
  base_min_age_s:
    description: A base file modified less than this many seconds ago is kept.
    type: int
    default: 86400
requirements:
  - libvirt-python
author: cloudctl
"""

EXAMPLES = r"""
- name: Remove leftovers found by a survey
  cloudctl_host_cleanup:
    libvirt_uri: qemu:///system
    instances_path: /var/lib/cloudctl/instances
    instance_dirs:
      - {uuid: 5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00, kind: instance}
      - {uuid: 6f2c5d2f-9b1d-4e7a-8e6f-1a5d4c3b2e11, kind: resize}
    base_files:
      - 3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea
    base_min_age_s: 86400
"""

RETURN = r"""
results:
  description: One entry per item, instance directories first, each list in input order.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Full path of the directory or base file.
      type: str
    kind:
      description: C(instance), C(resize) or C(base).
      type: str
    changed:
      description: Whether it was (or, in check mode, would be) removed.
      type: bool
    removed:
      description: Same as I(changed) (false on a failed item).
      type: bool
    reason:
      description:
        - Why it was not removed, only then.
        - "C(absent), C(in use by <overlay>) or C(too young: mtime <epoch> is less than
          <base_min_age_s> s ago)."
      type: str
    failed:
      description: Only on an item that failed.
      type: bool
    msg:
      description: Only on an item that failed - why.
      type: str
removed:
  description: Paths removed (or, in check mode, that would be removed).
  returned: always
  type: list
  elements: str
kept:
  description: Base files kept on purpose, with the reason.
  returned: always
  type: list
  elements: dict
  sample:
    - path: /var/lib/cloudctl/instances/_base/3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea
      reason: in use by /var/lib/cloudctl/instances/5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00/disk
failed_guests:
  description: Paths of the items that failed; the task fails if this is not empty.
  returned: failure
  type: list
  elements: str
"""

BASE_KIND = "base"


@dataclass
class Item:
    """The decision about one path: remove it, or why not."""

    path: str
    kind: str
    remove: bool = False
    reason: str | None = None
    kept: bool = False  # present but kept on purpose (a base file in use or too young)

    def result(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind,
            "changed": self.remove,
            "removed": self.remove,
        }
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def instance_dir_path(instances_path: str, uuid: str, kind: str) -> str:
    """``<instances_path>/<uuid>`` or ``<uuid>_resize`` (uuid validated)."""
    path = guest_dir(instances_path, uuid)
    if kind == "resize":
        return path + RESIZE_SUFFIX
    if kind != "instance":
        raise ValueError(f"invalid kind {kind!r}: expected instance or resize")
    return path


def defined_domain(conn: Any, uuid: str) -> str | None:
    """Name of the domain with ``uuid`` defined (or running) on the host, or None."""
    try:
        return str(conn.lookupByUUIDString(uuid).name())
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return None
        raise


def plan_instance_dir(conn: Any, instances_path: str, entry: dict[str, Any]) -> Item:
    """Decide about one instance directory; GuestError if its domain is still defined."""
    path = instance_dir_path(instances_path, entry["uuid"], entry["kind"])
    item = Item(path, entry["kind"])
    if not os.path.lexists(path):
        item.reason = "absent"
        return item
    try:
        name = defined_domain(conn, entry["uuid"])
    except libvirt.libvirtError as exc:
        raise GuestError(path, f"cannot ask libvirt about domain {entry['uuid']}: {exc}") from exc
    if name is not None:
        raise GuestError(
            path, f"domain {name} ({entry['uuid']}) is defined on this host; not an orphan"
        )
    item.remove = True
    return item


def plan_base_file(
    instances_path: str,
    name: str,
    backings: list[tuple[str, str]],
    now: float,
    min_age_s: int,
) -> Item:
    """Decide about one base file: remove it only if unused and old enough."""
    path = base_file(instances_path, name)
    item = Item(path, BASE_KIND)
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        item.reason = "absent"
        return item
    if os.path.isdir(path) and not os.path.islink(path):
        raise GuestError(path, "is a directory, not a base file")
    user = base_user(path, backings)
    if user is not None:
        item.reason, item.kept = f"in use by {user}", True
        return item
    age = now - stat.st_mtime
    if age < min_age_s:
        item.reason = f"too young: mtime {int(stat.st_mtime)} is less than {min_age_s} s ago"
        item.kept = True
        return item
    item.remove = True
    return item


def remove_path(path: str) -> None:
    """Remove a file, a symlink or a directory tree (never following a symlink)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _diff_text(paths: list[str]) -> str:
    return "".join(f"{path}\n" for path in sorted(paths))


ARGUMENT_SPEC: dict[str, Any] = {
    "instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH},
    "libvirt_uri": {"type": "str", "required": True},
    "instance_dirs": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "uuid": {"type": "str", "required": True},
            "kind": {"type": "str", "choices": ["instance", "resize"], "required": True},
        },
    },
    "base_files": {"type": "list", "elements": "str", "default": []},
    "base_min_age_s": {"type": "int", "default": 86400},
}


@dataclass
class Outcome:
    """What one call did (or, in check mode, would do); becomes the module's return values."""

    check: bool
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[GuestError] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # requested paths that exist (diff)
    seen: set[str] = field(default_factory=set)

    def handle(self, label: str, kind: str, decide: Callable[[], Item]) -> None:
        """Decide about one item, remove it unless in check mode, and record the outcome."""
        try:
            try:
                item = decide()
            except ValueError as exc:
                raise GuestError(label, str(exc)) from exc
            if item.path in self.seen:
                raise GuestError(item.path, "listed twice")
            self.seen.add(item.path)
            if item.reason != "absent":
                self.present.append(item.path)
            if item.remove and not self.check:
                try:
                    remove_path(item.path)
                except OSError as exc:
                    # a directory tree may be partly gone; a single file is not
                    raise GuestError(
                        item.path, f"cannot remove: {exc}", changed=kind != BASE_KIND
                    ) from exc
        except GuestError as exc:
            self.errors.append(exc)
            self.results.append({**failed_result("path", exc), "kind": kind, "removed": False})
            return
        self.results.append(item.result())
        if item.remove:
            self.removed.append(item.path)
        elif item.kept:
            self.kept.append({"path": item.path, "reason": str(item.reason)})

    def diffs(self, instances_path: str) -> list[dict[str, Any]]:
        """Before/after listing of the requested paths, if anything was removed."""
        if not self.removed:
            return []
        return [
            {
                "before_header": instances_path,
                "after_header": instances_path,
                "before": _diff_text(self.present),
                "after": _diff_text([p for p in self.present if p not in self.removed]),
            }
        ]


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    instances_path = os.path.abspath(module.params["instances_path"])
    min_age_s = module.params["base_min_age_s"]
    out = Outcome(check=module.check_mode)

    conn = connect(module, module.params["libvirt_uri"], readonly=True)
    try:
        for index, entry in enumerate(module.params["instance_dirs"]):
            out.handle(
                guest_label(entry, "uuid", index),
                entry["kind"],
                partial(plan_instance_dir, conn, instances_path, entry),
            )
    finally:
        conn.close()

    # After the directory removals (the predicted ones in check mode): an overlay in a
    # removed directory no longer holds its base file.
    backings = overlay_backings(instances_path, skip=out.removed)
    now = time.time()
    for index, name in enumerate(module.params["base_files"]):
        out.handle(
            str(name) if name else f"#{index}",
            BASE_KIND,
            partial(plan_base_file, instances_path, name, backings, now, min_age_s),
        )

    exit_batch(
        module,
        out.results,
        out.errors,
        out.diffs(instances_path),
        extra={"removed": out.removed, "kept": out.kept},
    )


if __name__ == "__main__":
    main()
