#!/usr/bin/python
"""Ansible module: live-migrate libvirt domains from this host, or read their job progress."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cloudctl_common import (
    GuestError,
    exit_batch,
    failed_result,
    guest_label,
    validate_domain_name,
)
from ansible.module_utils.cloudctl_libvirt import (
    connect,
    libvirt,
    lookup_domain,
    state_name,
)

DOCUMENTATION = r"""
---
module: cloudctl_migrate
short_description: Live-migrate libvirt domains to another host, with progress and abort
description:
  - Runs on the source host. With I(state=migrated) each guest is moved with
    C(virDomainMigrateToURI3) and C(VIR_MIGRATE_LIVE|PEER2PEER|PERSIST_DEST|UNDEFINE_SOURCE)
    (plus C(NON_SHARED_INC) for a block migration), while the job's statistics are polled;
    a migration still running after I(timeout) seconds is aborted.
  - With I(state=progress) the current job statistics of each guest are returned (nothing
    changes); with I(state=aborted) a running migration job is aborted.
  - A guest that is no longer on this host but runs on the destination is already migrated
    (no change), so a second run changes nothing.
options:
  libvirt_uri:
    description: libvirt connection URI of this (source) host.
    type: str
    required: true
  state:
    description: C(migrated), C(progress) or C(aborted).
    type: str
    choices: [migrated, progress, aborted]
    default: migrated
  poll_interval:
    description: Seconds between two reads of the job statistics while migrating.
    type: float
    default: 0.5
  guests:
    description: The domains to handle.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Domain name.
        type: str
        required: true
      dest_uri:
        description: libvirt URI of the destination, as the source libvirtd reaches it
          (peer to peer), e.g. C(qemu+tcp://10.0.0.12/system).
        type: str
      migrate_uri:
        description: Where QEMU sends the data, e.g. C(tcp://10.0.0.12).
        type: str
      listen_address:
        description: Address the destination QEMU listens on for the data (and NBD).
        type: str
      dest_xml:
        description: The domain XML for the destination (its paths); default the source's.
        type: str
      block_migration:
        description: Copy the disks too (C(VIR_MIGRATE_NON_SHARED_INC)).
        type: bool
        default: false
      shared_storage:
        description:
          - The caller proved the instances path is shared (a probe file written on one host
            was seen on the other); adds C(VIR_MIGRATE_UNSAFE), since libvirt only recognises
            network filesystems as shared and would otherwise refuse.
        type: bool
        default: false
      disks:
        description: With I(block_migration), the disk targets to copy (e.g. C(vda)).
        type: list
        elements: str
        default: []
      bandwidth:
        description: Bandwidth limit in MiB/s; 0 for none.
        type: int
        default: 0
      timeout:
        description: Abort the migration after this many seconds; 0 for never.
        type: int
        default: 0
requirements:
  - libvirt-python
author: cloudctl
"""

EXAMPLES = r"""
- name: Live-migrate one guest to lab-2
  cloudctl_migrate:
    libvirt_uri: qemu:///system
    guests:
      - name: instance-5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00
        dest_uri: qemu+tcp://10.213.0.12/system
        migrate_uri: tcp://10.213.0.12
        timeout: 600

- name: Progress of a running migration
  cloudctl_migrate:
    libvirt_uri: qemu:///system
    state: progress
    guests: [{name: instance-5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00}]
"""

RETURN = r"""
results:
  description: One entry per guest, in input order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
    changed:
      description: Whether the guest was migrated (or a job aborted).
      type: bool
    active:
      description: With I(state=progress), whether a migration job is running.
      type: bool
    memory_total:
      description: Guest memory to transfer (bytes).
      type: int
    memory_processed:
      description: Memory transferred so far (bytes).
      type: int
    disk_total:
      description: Disk data to transfer (bytes, block migration).
      type: int
    disk_processed:
      description: Disk data transferred so far (bytes).
      type: int
    elapsed:
      description: Seconds the migration took.
      type: float
failed_guests:
  description: Names of the guests that failed.
  returned: failure
  type: list
  elements: str
"""

STATES = ("migrated", "progress", "aborted")
STAT_KEYS = ("memory_total", "memory_processed", "disk_total", "disk_processed")


@dataclass
class Progress:
    """The latest job statistics of one migration."""

    values: dict[str, int] = field(default_factory=dict)
    active: bool = False

    def update(self, stats: dict[str, Any]) -> None:
        self.active = int(stats.get("type", 0)) not in (0, 3)  # NONE, COMPLETED
        for key in STAT_KEYS:
            if key in stats:
                self.values[key] = int(stats[key])


def read_stats(dom: Any) -> dict[str, Any]:
    """The domain's job statistics (an empty dict without a job)."""
    try:
        return dict(dom.jobStats(0) or {})
    except libvirt.libvirtError:
        return {}


def migration_params(guest: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """virDomainMigrateToURI3 parameters and flags for one guest entry."""
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    params: dict[str, Any] = {}
    if guest.get("migrate_uri"):
        params[libvirt.VIR_MIGRATE_PARAM_URI] = guest["migrate_uri"]
    if guest.get("listen_address"):
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = guest["listen_address"]
    if guest.get("dest_xml"):
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = guest["dest_xml"]
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = guest["dest_xml"]
    if guest.get("bandwidth"):
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(guest["bandwidth"])
    if guest.get("shared_storage") and not guest.get("block_migration"):
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if guest.get("block_migration"):
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
        if guest.get("disks"):
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(guest["disks"])
    return params, flags


def _on_destination(uri: str, name: str) -> bool:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        dom = lookup_domain(conn, name)
        return dom is not None and bool(dom.isActive())
    finally:
        conn.close()


def migrate_one(
    dom: Any,
    guest: dict[str, Any],
    poll_interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Migrate ``dom`` in a thread while this one polls its job; abort after the timeout."""
    params, flags = migration_params(guest)
    progress = Progress()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            dom.migrateToURI3(guest["dest_uri"], params, flags)
        except BaseException as exc:  # handed to the polling thread
            errors.append(exc)

    started = clock()
    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    timeout = int(guest.get("timeout") or 0)
    aborted = False
    while thread.is_alive():
        thread.join(poll_interval)
        stats = read_stats(dom)
        if stats:
            progress.update(stats)
        if timeout and not aborted and clock() - started > timeout:
            aborted = True
            with contextlib.suppress(libvirt.libvirtError):
                dom.abortJob()
    elapsed = round(clock() - started, 2)
    if errors:
        reason = f"aborted after {timeout} s" if aborted else str(errors[0])
        raise GuestError(guest["name"], f"live migration failed: {reason}")
    progress.values.update(completed_stats(guest["dest_uri"], guest["name"]))
    return {"changed": True, "elapsed": elapsed, **progress.values}


def completed_stats(uri: str, name: str) -> dict[str, int]:
    """The finished job's statistics, which the destination keeps for its incoming domain."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return {}
    try:
        dom = lookup_domain(conn, name)
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED) if dom is not None else {}
    except libvirt.libvirtError:
        stats = {}
    finally:
        conn.close()
    return {k: int(stats[k]) for k in STAT_KEYS if k in stats}


def handle(conn: Any, state: str, guest: dict[str, Any], poll_interval: float) -> dict[str, Any]:
    """One guest; raises GuestError or libvirtError."""
    name = validate_domain_name(guest.get("name"))
    dom = lookup_domain(conn, name)
    if state == "progress":
        progress = Progress()
        if dom is not None:
            progress.update(read_stats(dom))
        return {
            "name": name,
            "changed": False,
            "active": progress.active,
            "state": state_name(dom.state()[0]) if dom is not None else "absent",
            **progress.values,
        }
    if state == "aborted":
        progress = Progress()
        if dom is not None:
            progress.update(read_stats(dom))
            if progress.active:
                dom.abortJob()
        return {"name": name, "changed": progress.active}
    if not guest.get("dest_uri"):
        raise GuestError(name, "dest_uri is required to migrate")
    if dom is None or not dom.isActive():
        if _on_destination(guest["dest_uri"], name):
            return {"name": name, "changed": False}
        raise GuestError(name, "the domain is not running on this host")
    return {"name": name, **migrate_one(dom, guest, poll_interval)}


ARGUMENT_SPEC: dict[str, Any] = {
    "libvirt_uri": {"type": "str", "required": True},
    "state": {"type": "str", "choices": list(STATES), "default": "migrated"},
    "poll_interval": {"type": "float", "default": 0.5},
    "guests": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "name": {"type": "str", "required": True},
            "dest_uri": {"type": "str"},
            "migrate_uri": {"type": "str"},
            "listen_address": {"type": "str"},
            "dest_xml": {"type": "str"},
            "block_migration": {"type": "bool", "default": False},
            "shared_storage": {"type": "bool", "default": False},
            "disks": {"type": "list", "elements": "str", "default": []},
            "bandwidth": {"type": "int", "default": 0},
            "timeout": {"type": "int", "default": 0},
        },
    },
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    state = p["state"]
    conn = connect(module, p["libvirt_uri"])
    results: list[dict[str, Any]] = []
    errors: list[GuestError] = []
    try:
        for index, guest in enumerate(p["guests"]):
            label = guest_label(guest, "name", index)
            try:
                if module.check_mode and state != "progress":
                    dom = lookup_domain(conn, validate_domain_name(label))
                    results.append({"name": label, "changed": dom is not None})
                    continue
                results.append(handle(conn, state, guest, p["poll_interval"]))
            except (ValueError, libvirt.libvirtError) as exc:
                error = GuestError(label, str(exc))
                errors.append(error)
                results.append(failed_result("name", error))
            except GuestError as exc:
                errors.append(exc)
                results.append(failed_result("name", exc))
    finally:
        conn.close()
    exit_batch(module, results, errors)


if __name__ == "__main__":
    main()
