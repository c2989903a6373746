#!/usr/bin/python
"""Ansible module: define, power-manage and save many libvirt domains on one host (cloudctl)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    desired_xml_hash,
    domain_xml_name,
    domain_xml_uuid,
    is_no_domain,
    libvirt,
    lookup_domain,
    recorded_xml_hash,
    state_name,
    xml_with_hash,
)

DOCUMENTATION = r"""
---
module: cloudctl_domain
short_description: Define, start, stop, pause, save and undefine many libvirt domains
description:
  - One call converges a list of domains on one host.
  - The persistent definition is compared with the desired XML through a sha256 of the
    normalised desired XML, recorded in the domain's C(<metadata>) under the namespace
    C(https://cloudctl.dev/xmlns/module/1); an unchanged XML is not redefined.
  - Graceful shutdowns of all guests are requested first and awaited together, so a batch
    waits at most I(stop_timeout) seconds in total.
options:
  libvirt_uri:
    description: libvirt connection URI of the host, e.g. C(qemu:///system).
    type: str
    required: true
  stop_timeout:
    description: Seconds to wait for ACPI shutdowns (I(state=shutdown)) before destroying.
    type: int
    default: 60
  parallel:
    description:
      - How many guests are handled at the same time (threads over the one connection);
        starting and destroying a QEMU domain blocks for ~0.5-2 s each.
    type: int
    default: 8
  guests:
    description: The domains to handle.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Domain name; must match C(^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$) and the
          C(<name>) of I(xml).
        type: str
        required: true
      xml:
        description:
          - Desired domain XML. Required for I(state=present) and I(state=running); with
            the other states (except C(absent), which ignores it) it is defined if given,
            and needed if the domain does not exist yet.
          - If the XML has no C(<uuid>) and the domain exists, the existing UUID is kept.
        type: str
      state:
        description:
          - C(present) defined (persistent) with this XML, power state untouched.
          - C(running) defined and started (a paused domain is resumed).
          - C(shutdown) graceful ACPI shutdown, destroyed after I(stop_timeout) (C(forced)).
          - C(destroyed) hard power off, stays defined; a managed-save image is discarded
            too, so the next start is a cold boot.
          - C(paused) started if needed, then its vCPUs suspended (C(virsh suspend)).
          - C(saved) memory saved to the managed-save image and the domain stopped
            (C(virsh managedsave)); a stopped domain that has such an image is no change, one
            without is an error. C(running) (or C(paused)) restores it from that image.
          - C(absent) destroyed if active, then undefined; a missing domain is no change.
          - A C(shutdown) domain with a managed-save image stays so (it is not running).
          - Redefining an active domain changes its next boot only (C(restart_required)).
        type: str
        choices: [present, running, shutdown, destroyed, paused, saved, absent]
        default: running
      undefine_flags:
        description: Flags for virDomainUndefineFlags with I(state=absent).
        type: list
        elements: str
        choices: [managed_save, snapshots_metadata, checkpoints_metadata, nvram, keep_nvram, tpm, keep_tpm]
        default: [managed_save, snapshots_metadata, checkpoints_metadata, nvram]
requirements:
  - libvirt-python
author: cloudctl
"""

EXAMPLES = r"""
- name: Define and start two instances
  cloudctl_domain:
    libvirt_uri: qemu:///system
    guests:
      - name: instance-0001
        xml: "{{ lookup('file', 'instance-0001.xml') }}"
      - name: instance-0002
        xml: "{{ lookup('file', 'instance-0002.xml') }}"
        state: paused

- name: Save one guest's memory to disk and stop it; restore another from its save
  cloudctl_domain:
    libvirt_uri: qemu:///system
    guests:
      - {name: instance-0001, state: saved}
      - {name: instance-0002, xml: "{{ lookup('file', 'instance-0002.xml') }}", state: running}

- name: Stop gracefully, at most 30 s for the whole batch
  cloudctl_domain:
    libvirt_uri: qemu:///system
    stop_timeout: 30
    guests:
      - {name: instance-0001, state: shutdown}
      - {name: instance-0002, state: absent}
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
    uuid:
      description: Domain UUID (null if unknown, e.g. not yet defined in check mode).
      type: str
    state:
      description: libvirt state after the call (in check mode the current one), or C(absent).
      type: str
      sample: running
    changed:
      description: Whether anything was (or would be) changed.
      type: bool
    defined:
      description: Whether the XML was (or would be) (re)defined.
      type: bool
    forced:
      description: Only for I(state=shutdown) - the guest was destroyed after I(stop_timeout).
      type: bool
    restart_required:
      description: Only when true - the definition changed while the domain was active.
      type: bool
    managed_save:
      description: Only when true - the domain has a managed-save image (after the call).
      type: bool
    restored:
      description: Only when true - the domain was started from its managed-save image.
      type: bool
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

STATES = ("present", "running", "shutdown", "destroyed", "paused", "saved", "absent")
NEEDS_XML = ("present", "running")
DEFAULT_UNDEFINE_FLAGS = ("managed_save", "snapshots_metadata", "checkpoints_metadata", "nvram")
POLL_INTERVAL = 0.2
BASIC_UNDEFINE_FLAGS = (
    0x3  # VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)


def undefine_flag_bits(names: list[str] | tuple[str, ...]) -> int:
    """OR of the virDomainUndefineFlagsValues named in ``names``."""
    table = {
        "managed_save": "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",
        "snapshots_metadata": "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",
        "checkpoints_metadata": "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA",
        "nvram": "VIR_DOMAIN_UNDEFINE_NVRAM",
        "keep_nvram": "VIR_DOMAIN_UNDEFINE_KEEP_NVRAM",
        "tpm": "VIR_DOMAIN_UNDEFINE_TPM",
        "keep_tpm": "VIR_DOMAIN_UNDEFINE_KEEP_TPM",
    }
    bits = 0
    for name in names:
        if name not in table:
            raise ValueError(f"unknown undefine flag {name!r}")
        bits |= int(getattr(libvirt, table[name], 0))
    return bits


@dataclass
class GuestSpec:
    """One validated entry of ``guests``."""

    name: str
    state: str
    xml: str | None = None
    undefine_flags: tuple[str, ...] = DEFAULT_UNDEFINE_FLAGS


@dataclass
class GuestOutcome:
    """What happened (or would happen) to one guest."""

    name: str
    uuid: str | None = None
    changed: bool = False
    defined: bool = False
    forced: bool | None = None
    restart_required: bool = False
    restored: bool = False
    diff: dict[str, Any] | None = None
    domain: Any = None
    state: str | None = None  # set for check-mode predictions where no domain exists
    deadline: float = 0.0  # for state=shutdown: when to stop waiting and destroy

    def result(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "uuid": self.uuid,
            "state": self.state or current_state(self.domain),
            "changed": self.changed,
            "defined": self.defined,
        }
        if self.forced is not None:
            entry["forced"] = self.forced
        if self.restart_required:
            entry["restart_required"] = True
        if self.domain is not None and _has_managed_save(self.domain):
            entry["managed_save"] = True
        if self.restored:
            entry["restored"] = True
        return entry


def validate_guest(raw: dict[str, Any]) -> GuestSpec:
    """Check one ``guests`` entry; raise ValueError with the reason."""
    name = validate_domain_name(raw.get("name"))
    state = raw.get("state") or "running"
    if state not in STATES:
        raise ValueError(f"invalid state {state!r}: expected one of {', '.join(STATES)}")
    xml = raw.get("xml") or None
    if state == "absent":
        xml = None
    if state in NEEDS_XML and not xml:
        raise ValueError(f"xml is required for state={state}")
    if xml is not None:
        xml_name = domain_xml_name(xml)
        if xml_name != name:
            raise ValueError(f"the XML's <name> is {xml_name!r}, expected {name!r}")
    flags = raw.get("undefine_flags")
    flags_tuple = DEFAULT_UNDEFINE_FLAGS if flags is None else tuple(flags)
    undefine_flag_bits(flags_tuple)
    return GuestSpec(name=name, state=state, xml=xml, undefine_flags=flags_tuple)


def _unsupported_flags(exc: Exception) -> bool:
    """True if libvirt refused an API call because of its flags."""
    code = exc.get_error_code() if isinstance(exc, libvirt.libvirtError) else None
    return code in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT)


def pretty_xml(xml: str) -> str:
    """Indented XML, for readable diffs."""
    root = ET.fromstring(xml)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def current_state(dom: Any) -> str:
    """libvirt state name of ``dom``, or ``absent`` if there is none (any more)."""
    if dom is None:
        return "absent"
    try:
        return str(state_name(dom.state()[0]))
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return "absent"
        raise


def _has_managed_save(dom: Any) -> bool:
    try:
        return bool(dom.hasManagedSaveImage(0))
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return False
        raise


def _is_active(dom: Any) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return False
        raise


class DomainConverger:
    """Brings a batch of domains of one connection to their desired states.

    ``clock`` and ``sleep`` are injected so the shutdown wait can be tested without time.
    """

    def __init__(
        self,
        conn: Any,
        check_mode: bool,
        stop_timeout: int,
        want_diff: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        parallel: int = 1,
    ) -> None:
        self.conn = conn
        self.check_mode = check_mode
        self.stop_timeout = stop_timeout
        self.want_diff = want_diff
        self.clock = clock
        self.sleep = sleep
        self.parallel = parallel

    # -- phase 1: per guest ------------------------------------------------------------

    def ensure_defined(self, spec: GuestSpec, outcome: GuestOutcome) -> None:
        """(Re)define the domain if its recorded XML hash differs from the desired one."""
        assert spec.xml is not None
        dom = outcome.domain
        digest = desired_xml_hash(spec.xml)
        before = ""
        if dom is not None:
            persistent = bool(dom.isPersistent())
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE if persistent else 0
            before = dom.XMLDesc(flags)
            if persistent and recorded_xml_hash(before) == digest:
                return
        existing_uuid = dom.UUIDString() if dom is not None else None
        wanted_uuid = domain_xml_uuid(spec.xml)
        if existing_uuid and wanted_uuid and wanted_uuid.lower() != existing_uuid.lower():
            raise ValueError(
                f"domain exists with uuid {existing_uuid}, the XML asks for {wanted_uuid}"
            )
        new_xml = xml_with_hash(spec.xml, digest, uuid=existing_uuid)
        outcome.changed = outcome.defined = True
        outcome.uuid = existing_uuid or wanted_uuid
        was_active = dom is not None and _is_active(dom)
        after = pretty_xml(new_xml)
        if not self.check_mode:
            dom = self.conn.defineXMLFlags(new_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            outcome.domain = dom
            outcome.uuid = dom.UUIDString()
            after = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        outcome.restart_required = was_active
        if self.want_diff:
            outcome.diff = {
                "before_header": f"{spec.name} (defined XML)",
                "after_header": f"{spec.name} (desired XML)",
                "before": before,
                "after": after,
            }

    def converge_one(self, spec: GuestSpec, outcome: GuestOutcome) -> bool:
        """Act on one guest; return True if a graceful shutdown was requested and must be awaited."""
        outcome.domain = lookup_domain(self.conn, spec.name)
        if outcome.domain is not None:
            outcome.uuid = outcome.domain.UUIDString()

        if spec.state == "absent":
            self._absent(spec, outcome)
            return False
        if spec.xml is not None:
            self.ensure_defined(spec, outcome)
        dom = outcome.domain
        if dom is None:
            if outcome.defined:  # check mode: not defined yet; predict the rest
                outcome.state = "absent"
                return False
            if spec.state in ("shutdown", "destroyed"):
                return False  # nothing to power off
            raise ValueError(f"domain does not exist and no xml was given for state={spec.state}")

        if spec.state == "running":
            self._running(dom, outcome)
        elif spec.state == "paused":
            self._paused(dom, outcome)
        elif spec.state == "saved":
            self._saved(dom, outcome)
        elif spec.state == "destroyed":
            if _is_active(dom):
                outcome.changed = True
                if not self.check_mode:
                    dom.destroy()
            if _has_managed_save(dom):
                outcome.changed = True
                if not self.check_mode:
                    dom.managedSaveRemove(0)
        elif spec.state == "shutdown":
            outcome.forced = False
            if _is_active(dom):
                outcome.changed = True
                if not self.check_mode:
                    if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                        dom.resume()  # a paused guest cannot see the ACPI event
                    dom.shutdown()
                    outcome.deadline = self.clock() + self.stop_timeout
                    return True
        return False

    def _running(self, dom: Any, outcome: GuestOutcome) -> None:
        code = dom.state()[0] if _is_active(dom) else libvirt.VIR_DOMAIN_SHUTOFF
        if code in (
            libvirt.VIR_DOMAIN_RUNNING,
            libvirt.VIR_DOMAIN_BLOCKED,
            libvirt.VIR_DOMAIN_SHUTDOWN,
            libvirt.VIR_DOMAIN_NOSTATE,
        ):
            return
        outcome.changed = True
        if self.check_mode:
            return
        if code == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        elif code == libvirt.VIR_DOMAIN_PMSUSPENDED:
            dom.pMWakeup(0)
        elif code == libvirt.VIR_DOMAIN_CRASHED:
            dom.destroy()
            dom.create()
        else:
            outcome.restored = _has_managed_save(dom)
            dom.create()
            if outcome.restored and dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()  # it was saved while paused; running is what was asked

    def _paused(self, dom: Any, outcome: GuestOutcome) -> None:
        active = _is_active(dom)
        code = dom.state()[0] if active else libvirt.VIR_DOMAIN_SHUTOFF
        if code == libvirt.VIR_DOMAIN_PAUSED:
            return
        if code == libvirt.VIR_DOMAIN_PMSUSPENDED:
            raise ValueError("cannot pause a domain that is suspended by its guest (pmsuspended)")
        outcome.changed = True
        if self.check_mode:
            return
        if code == libvirt.VIR_DOMAIN_CRASHED and active:
            dom.destroy()
            active = False
        if active:
            dom.suspend()
            return
        outcome.restored = _has_managed_save(dom)
        try:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as exc:
            if not _unsupported_flags(exc):
                raise
            dom.create()  # drivers without START_PAUSED: start, then pause at once
            dom.suspend()

    def _saved(self, dom: Any, outcome: GuestOutcome) -> None:
        if not _is_active(dom):
            if _has_managed_save(dom):
                return
            raise ValueError("cannot save a domain that is not running (it has no saved state)")
        outcome.changed = True
        if not self.check_mode:
            dom.managedSave(0)

    def _absent(self, spec: GuestSpec, outcome: GuestOutcome) -> None:
        dom = outcome.domain
        if dom is None:
            return
        outcome.changed = True
        if self.want_diff:
            persistent = bool(dom.isPersistent())
            outcome.diff = {
                "before_header": f"{spec.name} (defined XML)",
                "after_header": f"{spec.name} (absent)",
                "before": dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if persistent else 0),
                "after": "",
            }
        if self.check_mode:
            return
        persistent = bool(dom.isPersistent())
        if _is_active(dom):
            dom.destroy()
        if persistent:
            flags = undefine_flag_bits(spec.undefine_flags)
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                basic = flags & BASIC_UNDEFINE_FLAGS
                if not _unsupported_flags(exc) or basic == flags:
                    raise
                dom.undefineFlags(basic)  # drivers without nvram/checkpoint support
        outcome.domain = None

    # -- phase 2: wait for graceful shutdowns together ---------------------------------

    def await_shutdowns(self, waiting: list[GuestOutcome]) -> list[GuestError]:
        """Wait until every guest is off or its ``stop_timeout`` passed, then destroy the rest.

        Each guest's timeout runs from its own shutdown request; all are awaited together.
        """
        pending = list(waiting)
        expired: list[GuestOutcome] = []
        while pending:
            now = self.clock()
            pending = [o for o in pending if _is_active(o.domain)]
            expired += [o for o in pending if o.deadline <= now]
            pending = [o for o in pending if o.deadline > now]
            if pending:
                next_deadline = min(o.deadline for o in pending)
                self.sleep(min(POLL_INTERVAL, max(0.0, next_deadline - now)))
        return [e for e in self._parallel(self._force_off, expired) if e is not None]

    @staticmethod
    def _force_off(outcome: GuestOutcome) -> GuestError | None:
        try:
            outcome.domain.destroy()
            outcome.forced = True
        except libvirt.libvirtError as exc:
            if not (is_no_domain(exc) or not _is_active(outcome.domain)):
                return GuestError(outcome.name, f"forced power off failed: {exc}", True)
            # else it went down between the last poll and destroy()
        return None

    def _parallel(self, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``[func(i) for i in items]``, up to ``parallel`` at a time (libvirt calls block)."""
        if self.parallel <= 1 or len(items) <= 1:
            return [func(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(items))) as pool:
            return list(pool.map(func, items))

    # -- the batch -----------------------------------------------------------------------

    def converge(
        self, guests: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[GuestError], list[dict[str, Any]]]:
        """Converge all guests; return (results, errors, diffs)."""
        labelled: list[tuple[str, dict[str, Any] | None]] = []
        seen: set[str] = set()
        for index, raw in enumerate(guests):
            label = guest_label(raw, "name", index)
            labelled.append((label, None if label in seen else raw))  # None: listed twice
            seen.add(label)

        def one(item: tuple[str, dict[str, Any] | None]) -> tuple[GuestOutcome | GuestError, bool]:
            label, raw = item
            outcome = GuestOutcome(name=label)
            try:
                if raw is None:
                    raise ValueError("listed twice")
                return outcome, self.converge_one(validate_guest(raw), outcome)
            except (ValueError, libvirt.libvirtError) as exc:
                return GuestError(label, str(exc), outcome.changed), False

        # Guests are independent (distinct names), so their slow libvirt calls (start,
        # destroy) overlap; results keep the input order.
        done = self._parallel(one, labelled)
        outcomes = [item for item, _ in done]
        waiting = [item for item, wait in done if wait and isinstance(item, GuestOutcome)]
        errors = self.await_shutdowns(waiting)
        failed = {e.guest: e for e in errors}
        results: list[dict[str, Any]] = []
        diffs: list[dict[str, Any]] = []
        all_errors: list[GuestError] = []
        for item in outcomes:
            if isinstance(item, GuestError):
                all_errors.append(item)
                results.append(failed_result("name", item))
                continue
            if item.name in failed:
                failed[item.name].changed = item.changed
                all_errors.append(failed[item.name])
                results.append(failed_result("name", failed[item.name]))
                continue
            try:
                results.append(item.result())
            except libvirt.libvirtError as exc:
                error = GuestError(item.name, f"cannot read state: {exc}", item.changed)
                all_errors.append(error)
                results.append(failed_result("name", error))
                continue
            if item.diff is not None:
                diffs.append(item.diff)
        return results, all_errors, diffs


ARGUMENT_SPEC: dict[str, Any] = {
    "libvirt_uri": {"type": "str", "required": True},
    "stop_timeout": {"type": "int", "default": 60},
    "parallel": {"type": "int", "default": 8},
    "guests": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "name": {"type": "str", "required": True},
            "xml": {"type": "str"},
            "state": {"type": "str", "choices": list(STATES), "default": "running"},
            "undefine_flags": {
                "type": "list",
                "elements": "str",
                "choices": [
                    "managed_save",
                    "snapshots_metadata",
                    "checkpoints_metadata",
                    "nvram",
                    "keep_nvram",
                    "tpm",
                    "keep_tpm",
                ],
                "default": list(DEFAULT_UNDEFINE_FLAGS),
            },
        },
    },
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    if module.params["stop_timeout"] < 0 or module.params["parallel"] < 1:
        module.fail_json(msg="stop_timeout must be >= 0 and parallel >= 1")
    conn = connect(module, module.params["libvirt_uri"])
    try:
        converger = DomainConverger(
            conn,
            module.check_mode,
            module.params["stop_timeout"],
            want_diff=module._diff,
            parallel=module.params["parallel"],
        )
        results, errors, diffs = converger.converge(module.params["guests"])
    finally:
        conn.close()
    exit_batch(module, results, errors, diffs)


if __name__ == "__main__":
    main()
