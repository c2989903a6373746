#!/usr/bin/python
"""Ansible module: NoCloud config-drive ISOs for many instances (cloudctl)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import (
    DEFAULT_INSTANCES_PATH,
    GuestError,
    exit_batch,
    failed_result,
    guest_dir,
    guest_label,
    validate_filename,
    validate_uuid,
)

DOCUMENTATION = r"""
---
module: cloudctl_config_drive
short_description: Build or remove the NoCloud config drive of many instances on one host
description:
  - For each guest builds C(<instances_path>/<uuid>/disk.config), an ISO 9660 image with
    Joliet and Rock Ridge and the volume label C(cidata), containing exactly the given files.
  - Idempotent through a sidecar C(disk.config.sha256) holding the sha256 of the canonical
    content (sorted file names and contents); same content means no rebuild.
  - The ISO is written to a temporary name and renamed into place.
options:
  instances_path:
    description: Directory holding one directory per instance (created if missing).
    type: path
    default: /var/lib/cloudctl/instances
  state:
    description: Whether the config drive should exist.
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
        description: Instance UUID, canonical lower-case form.
        type: str
        required: true
      files:
        description:
          - File name to text content, e.g. C(meta-data), C(user-data), C(network-config).
          - Names must match C([A-Za-z0-9._-]+). Required with I(state=present).
        type: dict
requirements:
  - genisoimage (and its isoinfo, used only for diffs of an existing drive)
author: cloudctl
"""

EXAMPLES = r"""
- name: Config drives
  cloudctl_config_drive:
    guests:
      - uuid: 5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00
        files:
          meta-data: "instance-id: 5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00\nlocal-hostname: web1\n"
          user-data: "#cloud-config\n{}\n"
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
      description: Whether the drive was (or would be) built or removed.
      type: bool
    path:
      description: Path of C(disk.config).
      type: str
    sha256:
      description: Hash of the canonical content (C(present)), null for C(absent).
      type: str
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

ISO_NAME = "disk.config"
SIDECAR_NAME = "disk.config.sha256"
VOLUME_ID = "cidata"


def validate_files(files: object) -> dict[str, str]:
    """Check names and that every content is text; raise ValueError otherwise."""
    if not isinstance(files, dict) or not files:
        raise ValueError("files must be a non-empty mapping of file name to text content")
    for name, content in files.items():
        validate_filename(name)
        if not isinstance(content, str):
            raise ValueError(f"content of {name!r} must be a string, got {type(content).__name__}")
    return dict(files)


def content_hash(files: dict[str, str]) -> str:
    """sha256 of the canonical content: JSON of the name->content mapping, keys sorted."""
    canonical = json.dumps(files, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_sidecar(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def build_iso(genisoimage: str, run: Runner, gdir: str, files: dict[str, str], digest: str) -> None:
    """Write the ISO and then the sidecar, each atomically (temp file + rename)."""
    os.makedirs(gdir, mode=0o755, exist_ok=True)
    iso = os.path.join(gdir, ISO_NAME)
    with tempfile.TemporaryDirectory(prefix=".disk.config.", dir=gdir) as workdir:
        staging = os.path.join(workdir, "root")
        os.mkdir(staging)
        for name, content in files.items():
            with open(os.path.join(staging, name), "w", encoding="utf-8", newline="") as handle:
                handle.write(content)
        tmp_iso = os.path.join(workdir, "disk.config")
        rc, out, err = run(
            [
                genisoimage,
                "-quiet",
                "-output",
                tmp_iso,
                "-volid",
                VOLUME_ID,
                "-joliet",
                "-rock",
                staging,
            ]
        )
        if rc != 0:
            raise RuntimeError(f"genisoimage failed: {err.strip() or out.strip()}")
        os.chmod(tmp_iso, 0o644)
        os.replace(tmp_iso, iso)
        tmp_sidecar = os.path.join(workdir, "sidecar")
        with open(tmp_sidecar, "w", encoding="ascii") as handle:
            handle.write(digest + "\n")
        os.replace(tmp_sidecar, os.path.join(gdir, SIDECAR_NAME))


def read_iso_files(isoinfo: str | None, run: Runner, iso: str) -> dict[str, str] | None:
    """Contents of the files at the root of an existing ISO (for diffs), or None."""
    if not isoinfo or not os.path.isfile(iso):
        return None
    rc, out, _ = run([isoinfo, "-R", "-f", "-i", iso])
    if rc != 0:
        return None
    contents: dict[str, str] = {}
    for line in out.splitlines():
        name = line.strip()
        if not name.startswith("/") or name.count("/") != 1:
            continue
        rc, data, _ = run([isoinfo, "-R", "-x", name, "-i", iso])
        if rc == 0:
            contents[name[1:]] = data
    return contents


def _diff_text(files: dict[str, str] | None) -> str:
    if not files:
        return ""
    return "".join(f"==> {name} <==\n{files[name]}\n" for name in sorted(files))


def converge_guest(
    instances_path: str,
    state: str,
    guest: dict[str, Any],
    check_mode: bool,
    want_diff: bool,
    genisoimage: str | None,
    isoinfo: str | None,
    run: Runner,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Bring one guest's config drive to ``state``; return its result and diff (if changed)."""
    uuid = validate_uuid(guest["uuid"])
    gdir = guest_dir(instances_path, uuid)
    iso = os.path.join(gdir, ISO_NAME)
    sidecar = os.path.join(gdir, SIDECAR_NAME)
    current = read_sidecar(sidecar) if os.path.isfile(iso) else None
    after: dict[str, str] | None = None
    digest: str | None = None
    if state == "present":
        after = validate_files(guest.get("files"))
        digest = content_hash(after)
        changed = current != digest
    else:
        changed = os.path.lexists(iso) or os.path.lexists(sidecar)
    diff = None
    if changed and want_diff:
        diff = {
            "before_header": f"{uuid}/{ISO_NAME}",
            "after_header": f"{uuid}/{ISO_NAME}",
            "before": _diff_text(read_iso_files(isoinfo, run, iso)),
            "after": _diff_text(after),
        }
    if changed and not check_mode:
        if after is not None and digest is not None:
            if genisoimage is None:
                raise RuntimeError("genisoimage not found")
            build_iso(genisoimage, run, gdir, after, digest)
        else:
            for path in (iso, sidecar):
                if os.path.lexists(path):
                    os.unlink(path)
    return {"uuid": uuid, "changed": changed, "path": iso, "sha256": digest}, diff


ARGUMENT_SPEC: dict[str, Any] = {
    "instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "guests": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "uuid": {"type": "str", "required": True},
            "files": {"type": "dict"},
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

    def run(argv: list[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(argv)
        return int(rc), str(out), str(err)

    genisoimage = None
    if state == "present" and not module.check_mode:
        genisoimage = module.get_bin_path("genisoimage", required=True)
    isoinfo = module.get_bin_path("isoinfo") if module._diff else None

    results: list[dict[str, Any]] = []
    errors: list[GuestError] = []
    diffs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, guest in enumerate(module.params["guests"]):
        label = guest_label(guest, "uuid", index)
        try:
            if label in seen:
                raise GuestError(label, "listed twice")
            seen.add(label)
            try:
                result, diff = converge_guest(
                    instances_path,
                    state,
                    guest,
                    module.check_mode,
                    module._diff,
                    genisoimage,
                    isoinfo,
                    run,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise GuestError(label, str(exc)) from exc
        except GuestError as exc:
            errors.append(exc)
            results.append(failed_result("uuid", exc))
            continue
        results.append(result)
        if diff is not None:
            diffs.append(diff)
    exit_batch(module, results, errors, diffs)


if __name__ == "__main__":
    main()
