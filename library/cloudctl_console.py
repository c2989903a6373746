#!/usr/bin/python
"""Ansible module: read (and wait on) the serial console logs of many instances (cloudctl)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import (
    DEFAULT_INSTANCES_PATH,
    GuestError,
    exit_batch,
    failed_result,
    guest_dir,
    guest_label,
    validate_uuid,
)

DOCUMENTATION = r"""
---
module: cloudctl_console
short_description: Read the console logs of many instances, optionally waiting for a pattern
description:
  - Reads C(<instances_path>/<uuid>/console.log) of each guest.
  - With a I(pattern), the log is searched line by line (the unfinished last line
    included, e.g. a C(login:) prompt); with I(timeout) > 0 the module polls every 0.5 s
    until every guest's pattern matched or the timeout passed, and fails naming the guests
    whose pattern was not found.
  - Never changes anything.
options:
  instances_path:
    description: Directory holding one directory per instance.
    type: path
    default: /var/lib/cloudctl/instances
  guests:
    description: The guests to read.
    type: list
    elements: dict
    required: true
    suboptions:
      uuid:
        description: Instance UUID, canonical lower-case form.
        type: str
        required: true
      pattern:
        description: Python regular expression searched in each line of the log.
        type: str
  timeout:
    description: Seconds to wait for all patterns; 0 reads once and never fails on a miss.
    type: int
    default: 0
  tail_bytes:
    description: How many bytes from the end of each log to return in C(log).
    type: int
    default: 65536
author: cloudctl
"""

EXAMPLES = r"""
- name: Wait until both guests reached userspace
  cloudctl_console:
    timeout: 120
    guests:
      - {uuid: 5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00, pattern: "login:"}
      - {uuid: 6f2c5d2f-9b1d-4e7a-8e6f-1a5d4c3b2e11, pattern: "cloud-init .* finished"}
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
    exists:
      description: Whether console.log exists.
      type: bool
    found:
      description: Whether the pattern matched (false without a pattern).
      type: bool
    match:
      description: The first line that matched (without line end), or null.
      type: str
    log:
      description: The last I(tail_bytes) of the log, decoded as UTF-8 with replacement characters.
      type: str
    changed:
      description: Always false.
      type: bool
failed_guests:
  description: Names (or UUIDs) of the guests that failed; the task fails if this is not empty.
  returned: failure
  type: list
  elements: str
"""

LOG_NAME = "console.log"
POLL_INTERVAL = 0.5
READ_CHUNK = 1024 * 1024


@dataclass
class LogWatch:
    """Incremental line search in one growing console log."""

    uuid: str
    path: str
    pattern: re.Pattern[str] | None
    offset: int = 0
    carry: str = ""
    match: str | None = None
    exists: bool = False

    @property
    def done(self) -> bool:
        return self.pattern is None or self.match is not None

    def poll(self) -> None:
        """Read what was appended since the last poll and search it."""
        try:
            size = os.path.getsize(self.path)
        except OSError:
            self.exists = False
            return
        self.exists = True
        if self.done:
            return
        if size < self.offset:  # truncated or replaced: start over
            self.offset, self.carry = 0, ""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            while self.match is None:
                data = handle.read(READ_CHUNK)
                if not data:
                    break
                self.offset += len(data)
                self._search(data.decode("utf-8", errors="replace"))
        if self.match is None and self.carry:
            self._check_line(self.carry)  # a prompt without newline

    def _search(self, text: str) -> None:
        lines = (self.carry + text).split("\n")
        self.carry = lines.pop()
        for line in lines:
            if self._check_line(line):
                return

    def _check_line(self, line: str) -> bool:
        assert self.pattern is not None
        line = line.rstrip("\r")
        if self.pattern.search(line):
            self.match = line
            return True
        return False


def read_tail(path: str, tail_bytes: int) -> str:
    """The last ``tail_bytes`` of ``path`` decoded as UTF-8 (with replacement), or ''."""
    if tail_bytes <= 0:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - tail_bytes))
            return handle.read(tail_bytes).decode("utf-8", errors="replace")
    except OSError:
        return ""


def watch_all(
    watches: list[LogWatch],
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll every log until all patterns matched or ``timeout`` seconds passed (one pass if 0)."""
    deadline = clock() + timeout
    while True:
        for watch in watches:
            watch.poll()
        if all(w.done for w in watches) or clock() >= deadline:
            return
        sleep(min(POLL_INTERVAL, max(0.0, deadline - clock())))


ARGUMENT_SPEC: dict[str, Any] = {
    "instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH},
    "guests": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "uuid": {"type": "str", "required": True},
            "pattern": {"type": "str"},
        },
    },
    "timeout": {"type": "int", "default": 0},
    "tail_bytes": {"type": "int", "default": 65536},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    timeout = module.params["timeout"]
    if timeout < 0 or module.params["tail_bytes"] < 0:
        module.fail_json(msg="timeout and tail_bytes must be >= 0")

    entries: list[LogWatch | GuestError] = []
    seen: set[str] = set()
    for index, guest in enumerate(module.params["guests"]):
        label = guest_label(guest, "uuid", index)
        try:
            if label in seen:
                raise ValueError("listed twice")
            seen.add(label)
            uuid = validate_uuid(guest["uuid"])
            pattern = guest.get("pattern")
            try:
                compiled = re.compile(pattern) if pattern else None
            except re.error as exc:
                raise ValueError(f"invalid pattern {pattern!r}: {exc}") from exc
            path = os.path.join(guest_dir(module.params["instances_path"], uuid), LOG_NAME)
            entries.append(LogWatch(uuid=uuid, path=path, pattern=compiled))
        except ValueError as exc:
            entries.append(GuestError(label, str(exc)))

    watches = [e for e in entries if isinstance(e, LogWatch)]
    watch_all(watches, timeout)

    results: list[dict[str, Any]] = []
    errors: list[GuestError] = []
    for entry in entries:
        if isinstance(entry, GuestError):
            errors.append(entry)
            results.append(failed_result("uuid", entry))
            continue
        found = entry.pattern is not None and entry.match is not None
        result = {
            "uuid": entry.uuid,
            "changed": False,
            "exists": entry.exists,
            "found": found,
            "match": entry.match,
            "log": read_tail(entry.path, module.params["tail_bytes"]),
        }
        results.append(result)
        if timeout > 0 and entry.pattern is not None and not found:
            where = "" if entry.exists else f" ({LOG_NAME} does not exist)"
            errors.append(
                GuestError(
                    entry.uuid,
                    f"pattern {entry.pattern.pattern!r} not found within {timeout} s{where}",
                )
            )
    exit_batch(module, results, errors)


if __name__ == "__main__":
    main()
