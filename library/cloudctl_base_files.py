#!/usr/bin/python
"""Ansible module: make sure a host's image cache directory exists and say which base files
it lacks (cloudctl)."""

from __future__ import annotations

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import (
    BASE_DIR_NAME,
    DEFAULT_INSTANCES_PATH,
    base_file,
)

DOCUMENTATION = r"""
---
module: cloudctl_base_files
short_description: Ensure the base file cache directory exists and report missing base files
description:
  - Ensures C(<instances_path>/_base) exists (mode 0755), then reports which of the given
    cached base files (images, kernels, initrds named by their sha256) are missing from it.
  - A base file is named by the checksum of its content and is only ever written whole (the
    copy that fills the cache moves it into place atomically), so a regular file of that name
    and of the expected I(size) is taken as present without reading it. Hashing every cached
    image on every spawn would cost seconds per gigabyte on the host and on the controller.
  - A file of the right name but another size is reported missing, so the caller copies it
    again (and replaces it).
  - Nothing but the directory is ever created; check mode predicts that.
options:
  instances_path:
    description: Directory holding C(_base/) and one directory per instance.
    type: path
    default: /var/lib/cloudctl/instances
  files:
    description: The base files the caller needs on this host.
    type: list
    elements: dict
    default: []
    suboptions:
      checksum:
        description: sha256 of the file (64 hex digits), its name under C(_base/).
        type: str
        required: true
      size:
        description: Expected size in bytes; omitted, any size counts as present.
        type: int
      src:
        description:
          - The file's path on the controller. Not used here; accepted so that the list the
            copy task loops over can be passed as it is.
        type: str
author: cloudctl
"""

EXAMPLES = r"""
# Then copy only what is missing:
#   loop: "{{ wanted | selectattr('checksum', 'in', base_check.missing) }}"
- name: base files
  cloudctl_base_files:
    instances_path: /var/lib/cloudctl/instances
    files: "{{ wanted }}"  # [{src: /images/x.qcow2, checksum: <sha256>, size: 196616}, ...]
  register: base_check

- name: only make sure the cache directory exists
  cloudctl_base_files:
    instances_path: /srv/instances
"""

RETURN = r"""
missing:
  description: Checksums of the files to copy (absent, not a regular file, or of another size).
  returned: always
  type: list
  elements: str
present:
  description: Checksums of the files already cached.
  returned: always
  type: list
  elements: str
created:
  description: Whether the C(_base) directory was (or, in check mode, would be) created.
  returned: always
  type: bool
"""


def check(instances_path: str, files: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(missing, present) checksums, in the order given, each once."""
    missing: list[str] = []
    present: list[str] = []
    for entry in files:
        checksum = str(entry["checksum"]).lower()
        if checksum in missing or checksum in present:
            continue
        path = base_file(instances_path, checksum)  # raises ValueError on a bad checksum
        size = entry.get("size")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            missing.append(checksum)
            continue
        ok = os.path.isfile(path) and (size is None or st.st_size == int(size))
        (present if ok else missing).append(checksum)
    return missing, present


ARGUMENT_SPEC: dict[str, Any] = {
    "instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH},
    "files": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "checksum": {"type": "str", "required": True},
            "size": {"type": "int"},
            "src": {"type": "str"},
        },
    },
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    instances_path = os.path.abspath(module.params["instances_path"])
    base_dir = os.path.join(instances_path, BASE_DIR_NAME)
    created = not os.path.isdir(base_dir)
    if created and not module.check_mode:
        try:
            os.makedirs(base_dir, mode=0o755, exist_ok=True)
        except OSError as exc:
            module.fail_json(msg=f"cannot create {base_dir}: {exc}")
    try:
        missing, present = check(instances_path, module.params["files"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    result: dict[str, Any] = {
        "changed": created,
        "created": created,
        "missing": missing,
        "present": present,
    }
    if module._diff and created:
        result["diff"] = {
            "before": {"path": base_dir, "state": "absent"},
            "after": {"path": base_dir, "state": "directory"},
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
