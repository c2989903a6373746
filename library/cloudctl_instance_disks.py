#!/usr/bin/python
"""Ansible module: per-instance disk files on a compute host (cloudctl)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import (
    DEFAULT_INSTANCES_PATH,
    GiB,
    GuestError,
    MiB,
    base_file,
    exit_batch,
    failed_result,
    guest_dir,
    guest_label,
    validate_checksum,
    validate_uuid,
)

DOCUMENTATION = r"""
---
module: cloudctl_instance_disks
short_description: Create or remove the disk files of many instances on one host
description:
  - For each guest, manages C(<instances_path>/<uuid>/disk) (a qcow2 overlay on the cached
    base file C(<instances_path>/_base/<checksum>), or a blank qcow2 without image),
    C(disk.eph0) (blank qcow2 of I(ephemeral_gb)) and C(disk.swap) (blank qcow2 of I(swap_mb)).
  - Existing disks are inspected with C(qemu-img info) and only grown, never shrunk or
    replaced; a disk with a different backing file is an error, not a silent rebuild.
  - With I(state=absent) the whole C(<uuid>/) directory is removed (disks, config drive,
    console log).
  - One call handles a list of guests; on the first failing guest the module fails naming
    it, with the results of the guests already handled.
options:
  instances_path:
    description: Directory holding C(_base/) and one directory per instance.
    type: path
    default: /var/lib/cloudctl/instances
  state:
    description: Whether the guests' disks should exist.
    type: str
    choices: [present, absent]
    default: present
  guests:
    description: The guests to handle.
    type: list
    elements: dict
    required: true
    suboptions:
      uuid:
        description: Instance UUID, canonical lower-case form (it becomes a directory name).
        type: str
        required: true
      image:
        description: Base image of the root disk; omit or null for a blank root disk.
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
      root_gb:
        description: Root disk size in GiB; 0 means the image's virtual size.
        type: int
        default: 0
      ephemeral_gb:
        description: Size of C(disk.eph0) in GiB; 0 for none.
        type: int
        default: 0
      swap_mb:
        description: Size of C(disk.swap) in MiB; 0 for none.
        type: int
        default: 0
notes:
  - A disk that is in use by a running domain can be inspected but not grown.
  - Setting I(ephemeral_gb) or I(swap_mb) back to 0 leaves an existing file in place
    (with a warning); remove data only through I(state=absent).
requirements:
  - qemu-img (Debian package qemu-utils)
author: cloudctl
"""

EXAMPLES = r"""
- name: Disks for two instances
  cloudctl_instance_disks:
    guests:
      - uuid: 5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00
        image: {checksum: "{{ image_sha256 }}", format: qcow2}
        root_gb: 10
        ephemeral_gb: 1
        swap_mb: 512
      - uuid: 6f2c5d2f-9b1d-4e7a-8e6f-1a5d4c3b2e11
        root_gb: 5

- name: Remove an instance's files
  cloudctl_instance_disks:
    state: absent
    guests:
      - uuid: 5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00
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
      description: Whether anything was (or, in check mode, would be) changed.
      type: bool
    files:
      description: Disk files that exist after the call (C(present)), or an empty list (C(absent)).
      type: list
      elements: str
    actions:
      description: What was (or would be) done, one line per step; empty when nothing had to change.
      type: list
      elements: str
    failed:
      description: Only on a guest that failed.
      type: bool
    msg:
      description: Only on a guest that failed - why.
      type: str
failed_guests:
  description: Names (or UUIDs) of the guests that failed; the task fails if this is not empty.
  returned: failure
  type: list
  elements: str
"""

Runner = Callable[[list[str]], tuple[int, str, str]]

ROOT, EPHEMERAL, SWAP = "disk", "disk.eph0", "disk.swap"


@dataclass
class Action:
    """One step of a guest's plan: a qemu-img command, a mkdir or a tree removal."""

    reason: str
    kind: str  # "mkdir" | "command" | "rmtree"
    path: str
    argv: list[str] = field(default_factory=list)


@dataclass
class GuestPlan:
    """What must happen for one guest; an empty ``actions`` means already converged."""

    uuid: str
    files: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)


class QemuImg:
    """Thin wrapper over the qemu-img binary, through an injected command runner."""

    def __init__(self, binary: str, run: Runner) -> None:
        self.binary = binary
        self.run = run
        self._base_sizes: dict[tuple[str, str], int] = {}

    def base_size(self, path: str, fmt: str) -> int:
        """Virtual size of a (read-only, shared) base file; asked once per call."""
        key = (path, fmt)
        if key not in self._base_sizes:
            self._base_sizes[key] = int(self.info(path, fmt)["virtual-size"])
        return self._base_sizes[key]

    def info(self, path: str, fmt: str | None = None) -> dict[str, Any]:
        argv = [self.binary, "info", "-U", "--output=json"]
        if fmt:
            argv += ["-f", fmt]
        rc, out, err = self.run([*argv, path])
        if rc != 0:
            raise RuntimeError(f"qemu-img info {path} failed: {err.strip() or out.strip()}")
        return dict(json.loads(out))

    def create_argv(
        self,
        path: str,
        size: int | None,
        backing: str | None = None,
        backing_fmt: str | None = None,
    ) -> list[str]:
        argv = [self.binary, "create", "-q", "-f", "qcow2"]
        if backing:
            argv += ["-F", backing_fmt or "qcow2", "-b", backing]
        argv.append(path)
        if size is not None:
            argv.append(str(size))
        return argv

    def resize_argv(self, path: str, size: int) -> list[str]:
        return [self.binary, "resize", "-q", "-f", "qcow2", path, str(size)]


def _human(size: int | None) -> str:
    if size is None:
        return "unknown size"
    if size % GiB == 0:
        return f"{size // GiB} GiB"
    return f"{size / MiB:g} MiB"


def _describe(info: dict[str, Any]) -> str:
    text = f"{info.get('format')} {_human(info.get('virtual-size'))}"
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        text += f" backing={backing} ({info.get('backing-filename-format', '?')})"
    return text


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _plan_blank(plan: GuestPlan, qemu: QemuImg, path: str, size: int, what: str) -> None:
    """A blank (backing-less) qcow2 of at least ``size`` bytes at ``path``."""
    plan.files.append(path)
    if not Path(path).exists():
        plan.before[os.path.basename(path)] = "absent"
        plan.after[os.path.basename(path)] = f"qcow2 {_human(size)}"
        plan.actions.append(
            Action(
                f"create {what} {path} ({_human(size)})",
                "command",
                path,
                qemu.create_argv(path, size),
            )
        )
        return
    info = qemu.info(path, "qcow2")
    plan.before[os.path.basename(path)] = _describe(info)
    if info.get("format") != "qcow2" or info.get("backing-filename"):
        raise GuestError(
            plan.uuid,
            f"{path} exists but is not a blank qcow2 ({_describe(info)}); refusing to replace it",
        )
    current = int(info["virtual-size"])
    if current < size:
        plan.after[os.path.basename(path)] = f"qcow2 {_human(size)}"
        plan.actions.append(
            Action(
                f"grow {what} {path} from {_human(current)} to {_human(size)}",
                "command",
                path,
                qemu.resize_argv(path, size),
            )
        )
    else:
        plan.after[os.path.basename(path)] = plan.before[os.path.basename(path)]
        if current > size:
            plan.warnings.append(
                f"guest {plan.uuid}: {path} is {_human(current)}, larger than "
                f"the requested {_human(size)}; disks are never shrunk"
            )


def _plan_root(
    plan: GuestPlan,
    qemu: QemuImg,
    instances_path: str,
    gdir: str,
    guest: dict[str, Any],
    check_mode: bool,
) -> None:
    path = os.path.join(gdir, ROOT)
    root_gb = guest["root_gb"]
    image = guest.get("image")
    if not image:
        if root_gb <= 0:
            raise GuestError(plan.uuid, "root_gb must be > 0 for a blank root disk (no image)")
        _plan_blank(plan, qemu, path, root_gb * GiB, "root disk")
        return

    validate_checksum(image["checksum"])
    base = base_file(instances_path, image["checksum"])
    fmt = image.get("format") or "qcow2"
    base_size: int | None = None
    if os.path.isfile(base):
        base_size = qemu.base_size(base, fmt)
    elif check_mode:
        plan.warnings.append(
            f"guest {plan.uuid}: base file {base} is missing (a real run would fail)"
        )
    else:
        raise GuestError(plan.uuid, f"base file {base} is missing (copy the image to _base first)")

    if root_gb > 0:
        desired: int | None = root_gb * GiB
        if base_size is not None and base_size > root_gb * GiB:
            raise GuestError(
                plan.uuid,
                f"image {image['checksum']} has a virtual size of "
                f"{_human(base_size)}, bigger than root_gb={root_gb}",
            )
    else:
        desired = base_size

    plan.files.append(path)
    if not Path(path).exists():
        plan.before[ROOT] = "absent"
        plan.after[ROOT] = f"qcow2 {_human(desired)} backing={base} ({fmt})"
        plan.actions.append(
            Action(
                f"create root disk {path} on {base} ({_human(desired)})",
                "command",
                path,
                qemu.create_argv(path, desired, backing=base, backing_fmt=fmt),
            )
        )
        return

    info = qemu.info(path, "qcow2")
    plan.before[ROOT] = _describe(info)
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if info.get("format") != "qcow2" or not backing or not _same_file(backing, base):
        raise GuestError(
            plan.uuid,
            f"{path} exists as {_describe(info)}, expected a qcow2 "
            f"overlay on {base}; refusing to replace it",
        )
    backing_fmt = info.get("backing-filename-format")
    if backing_fmt and backing_fmt != fmt:
        raise GuestError(plan.uuid, f"{path} has backing format {backing_fmt}, expected {fmt}")
    current = int(info["virtual-size"])
    if desired is not None and current < desired:
        plan.after[ROOT] = f"qcow2 {_human(desired)} backing={base} ({fmt})"
        plan.actions.append(
            Action(
                f"grow root disk {path} from {_human(current)} to {_human(desired)}",
                "command",
                path,
                qemu.resize_argv(path, desired),
            )
        )
    else:
        plan.after[ROOT] = plan.before[ROOT]
        if desired is not None and current > desired:
            plan.warnings.append(
                f"guest {plan.uuid}: {path} is {_human(current)}, larger than "
                f"the requested {_human(desired)}; disks are never shrunk"
            )


def plan_present(
    qemu: QemuImg, instances_path: str, guest: dict[str, Any], check_mode: bool
) -> GuestPlan:
    """Inspect the host and decide what creating/growing one guest's disks takes."""
    uuid = validate_uuid(guest["uuid"])
    plan = GuestPlan(uuid)
    for key in ("root_gb", "ephemeral_gb", "swap_mb"):
        if guest.get(key) is None or guest[key] < 0:
            raise GuestError(uuid, f"{key} must be an integer >= 0")
    gdir = guest_dir(instances_path, uuid)
    if not os.path.isdir(gdir):
        if os.path.lexists(gdir):
            raise GuestError(uuid, f"{gdir} exists and is not a directory")
        plan.actions.append(Action(f"create directory {gdir}", "mkdir", gdir))
    _plan_root(plan, qemu, instances_path, gdir, guest, check_mode)
    for name, size, what in (
        (EPHEMERAL, guest["ephemeral_gb"] * GiB, "ephemeral disk"),
        (SWAP, guest["swap_mb"] * MiB, "swap disk"),
    ):
        path = os.path.join(gdir, name)
        if size > 0:
            _plan_blank(plan, qemu, path, size, what)
        elif Path(path).exists():
            plan.files.append(path)
            plan.warnings.append(
                f"guest {uuid}: {path} exists but its size is now 0; left in "
                "place (use state=absent to remove an instance's data)"
            )
    return plan


def plan_absent(instances_path: str, guest: dict[str, Any]) -> GuestPlan:
    """Decide whether one guest's directory has to be removed."""
    uuid = validate_uuid(guest["uuid"])
    plan = GuestPlan(uuid)
    gdir = guest_dir(instances_path, uuid)
    if os.path.lexists(gdir):
        entries = sorted(os.listdir(gdir)) if os.path.isdir(gdir) else []
        plan.before = {name: "present" for name in entries} or {"(directory)": "present"}
        plan.after = {name: "absent" for name in plan.before}
        plan.actions.append(Action(f"remove {gdir}", "rmtree", gdir))
    return plan


def apply(plan: GuestPlan, run: Runner) -> None:
    """Execute a plan's actions in order; a failure says whether earlier steps changed things."""
    for done, action in enumerate(plan.actions):
        try:
            if action.kind == "mkdir":
                os.makedirs(action.path, mode=0o755, exist_ok=True)
            elif action.kind == "rmtree":
                if os.path.islink(action.path) or not os.path.isdir(action.path):
                    os.unlink(action.path)
                else:
                    shutil.rmtree(action.path)
            else:
                rc, out, err = run(action.argv)
                if rc != 0:
                    raise RuntimeError(err.strip() or out.strip() or f"exit status {rc}")
        except (OSError, RuntimeError) as exc:
            raise GuestError(plan.uuid, f"{action.reason} failed: {exc}", changed=done > 0) from exc


def _diff_text(state: dict[str, str]) -> str:
    return "".join(f"{name}: {value}\n" for name, value in sorted(state.items()))


ARGUMENT_SPEC: dict[str, Any] = {
    "instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "guests": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "uuid": {"type": "str", "required": True},
            "image": {
                "type": "dict",
                "options": {
                    "checksum": {"type": "str", "required": True},
                    "format": {"type": "str", "choices": ["qcow2", "raw"], "default": "qcow2"},
                },
            },
            "root_gb": {"type": "int", "default": 0},
            "ephemeral_gb": {"type": "int", "default": 0},
            "swap_mb": {"type": "int", "default": 0},
        },
    },
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    instances_path = module.params["instances_path"]
    state = module.params["state"]
    guests = module.params["guests"]

    def run(argv: list[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(argv)
        return int(rc), str(out), str(err)

    qemu: QemuImg | None = None
    if state == "present":
        qemu = QemuImg(module.get_bin_path("qemu-img", required=True), run)

    results: list[dict[str, Any]] = []
    errors: list[GuestError] = []
    diffs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, guest in enumerate(guests):
        label = guest_label(guest, "uuid", index)
        try:
            if label in seen:
                raise GuestError(label, "listed twice")
            seen.add(label)
            try:
                if qemu is not None:
                    plan = plan_present(qemu, instances_path, guest, module.check_mode)
                else:
                    plan = plan_absent(instances_path, guest)
                if not module.check_mode:
                    apply(plan, run)
            except (ValueError, RuntimeError, OSError) as exc:
                raise GuestError(label, str(exc)) from exc
        except GuestError as exc:
            errors.append(exc)
            results.append(failed_result("uuid", exc))
            continue
        for warning in plan.warnings:
            module.warn(warning)
        changed = bool(plan.actions)
        results.append(
            {
                "uuid": plan.uuid,
                "changed": changed,
                "files": plan.files if state == "present" else [],
                "actions": [a.reason for a in plan.actions],
            }
        )
        if changed:
            diffs.append(
                {
                    "before_header": plan.uuid,
                    "after_header": plan.uuid,
                    "before": _diff_text(plan.before),
                    "after": _diff_text(plan.after),
                }
            )
    exit_batch(module, results, errors, diffs)


if __name__ == "__main__":
    main()
