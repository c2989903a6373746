"""Helpers shared by cloudctl's Ansible modules.

These run on compute hosts inside AnsiballZ payloads: standard library only, and
nothing from the ``cloudctl`` package.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_INSTANCES_PATH = "/var/lib/cloudctl/instances"
BASE_DIR_NAME = "_base"
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DOMAIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
FILENAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class GuestError(Exception):
    """A failure that concerns one guest of a batched module call."""

    def __init__(self, guest: str, reason: str, changed: bool = False) -> None:
        super().__init__(f"guest {guest}: {reason}")
        self.guest = guest
        self.reason = reason
        self.changed = changed  # whether something was changed before the failure


def validate_uuid(value: object) -> str:
    """Return ``value`` if it is a canonical lower-case UUID, else raise ValueError.

    The UUID becomes a directory name, so nothing but the canonical form is accepted.
    """
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise ValueError(f"invalid uuid {value!r}: expected canonical lower-case form")
    return value


def validate_domain_name(value: object) -> str:
    """Return ``value`` if it is an acceptable libvirt domain name, else raise ValueError."""
    if not isinstance(value, str) or not DOMAIN_NAME_RE.fullmatch(value):
        raise ValueError(f"invalid domain name {value!r}: must match {DOMAIN_NAME_RE.pattern}")
    return value


def validate_filename(value: object) -> str:
    """Return ``value`` if it is a plain file name (no directory part), else raise ValueError."""
    if not isinstance(value, str) or not FILENAME_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"invalid file name {value!r}: must match {FILENAME_RE.pattern}")
    return value


def validate_checksum(value: object) -> str:
    """Return ``value`` if it is a lower-case hex sha256, else raise ValueError."""
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise ValueError(f"invalid image checksum {value!r}: expected 64 lower-case hex digits")
    return value


def guest_dir(instances_path: str, uuid: str) -> str:
    """The per-guest directory ``<instances_path>/<uuid>`` (uuid validated)."""
    return os.path.join(os.path.abspath(instances_path), validate_uuid(uuid))


def base_file(instances_path: str, checksum: str) -> str:
    """The cached base file ``<instances_path>/_base/<checksum>`` (checksum validated)."""
    return os.path.join(os.path.abspath(instances_path), BASE_DIR_NAME, validate_checksum(checksum))


def guest_label(guest: dict[str, Any], key: str, index: int) -> str:
    """A printable identifier for a guest entry, even when its key is missing."""
    value = guest.get(key) if isinstance(guest, dict) else None
    return str(value) if value else f"#{index}"


def failed_result(key: str, error: GuestError) -> dict[str, Any]:
    """The per-guest result entry of a guest that failed."""
    return {key: error.guest, "changed": error.changed, "failed": True, "msg": error.reason}


def exit_batch(
    module: Any,
    results: list[dict[str, Any]],
    errors: list[GuestError],
    diffs: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> NoReturn:
    """End a batched module call.

    Every guest is handled even if another one failed; if any failed, the call fails with a
    message naming each failed guest and why, and ``results`` still holds every guest's entry
    (failed ones carry ``failed: true`` and ``msg``). ``extra`` adds module-specific return
    values next to ``changed`` and ``results``.
    """
    outcome: dict[str, Any] = {
        **(extra or {}),
        "changed": any(r.get("changed") for r in results),
        "results": results,
    }
    if diffs is not None and module._diff:
        outcome["diff"] = diffs
    if errors:
        module.fail_json(
            msg="; ".join(str(error) for error in errors),
            failed_guests=[error.guest for error in errors],
            **outcome,
        )
    module.exit_json(**outcome)
    raise AssertionError("unreachable")  # exit_json/fail_json exit the process


def nearest_existing_path(path: str) -> str:
    """``path`` itself if it exists, else its closest existing ancestor."""
    current = os.path.abspath(path)
    while not Path(current).exists():
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current
