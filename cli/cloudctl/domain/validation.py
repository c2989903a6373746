"""Pure validation of names and values that reach SQL, XML, file paths or Ansible."""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Iterable

from cloudctl.errors import InvalidInput

INSTANCE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
OBJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
PROPERTY_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,254}$")
AZ_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
#: One OpenSSH public key line: type, base64 blob, optional comment.
PUBLIC_KEY_RE = re.compile(
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)"
    r" [A-Za-z0-9+/=]+( [^\n\r]*)?$"
)
#: A Linux interface name (a host's bridge): at most 15 bytes (IFNAMSIZ - 1).
BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MAX_USER_DATA = 64 * 1024
#: Scheduler hints a boot or a Server document may give (names or UUIDs of other instances).
SCHEDULER_HINTS = ("same_host", "different_host")


def instance_name(name: str) -> str:
    """An instance name is a DNS label: ``^[a-z0-9][a-z0-9-]{0,62}$`` (it becomes the hostname)."""
    if not INSTANCE_NAME_RE.match(name):
        raise InvalidInput(
            reason=f"instance name {name!r} must match ^[a-z0-9][a-z0-9-]{{0,62}}$ "
            "(lowercase letters, digits and '-', at most 63 characters)"
        )
    return name


def object_name(kind: str, name: str) -> str:
    """Names of flavors, images, hosts, key pairs: letters, digits, '.', '_', '-'."""
    if not OBJECT_NAME_RE.match(name):
        raise InvalidInput(
            reason=f"{kind} name {name!r} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,62}}$"
        )
    return name


def availability_zone(az: str) -> str:
    """An availability zone name."""
    if not AZ_RE.match(az):
        raise InvalidInput(reason=f"availability zone {az!r} must match {AZ_RE.pattern}")
    return az


def non_negative(field: str, value: int) -> int:
    """Sizes and counts cannot be negative."""
    if value < 0:
        raise InvalidInput(reason=f"{field} must be >= 0, got {value}")
    return value


def positive(field: str, value: int) -> int:
    """Some sizes must be at least 1."""
    if value < 1:
        raise InvalidInput(reason=f"{field} must be >= 1, got {value}")
    return value


def properties(pairs: Iterable[str]) -> dict[str, str]:
    """Parse ``k=v`` pairs (``--property``); keys validated, values kept as text."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(reason=f"property {pair!r} must be written key=value")
        if not PROPERTY_KEY_RE.match(key):
            raise InvalidInput(reason=f"property key {key!r} must match {PROPERTY_KEY_RE.pattern}")
        if "\x00" in value or len(value) > 1024:
            raise InvalidInput(reason=f"property {key!r}: value too long or contains NUL")
        out[key] = value
    return out


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a canonical UUID string."""
    try:
        return str(uuidlib.UUID(value)) == value.lower()
    except ValueError:
        return False


def user_data(text: str) -> str:
    """User data is passed to the guest as-is but bounded, as Nova bounds it."""
    if len(text.encode()) > MAX_USER_DATA:
        raise InvalidInput(reason=f"user data is larger than {MAX_USER_DATA} bytes")
    if "\x00" in text:
        raise InvalidInput(reason="user data must be text (it contains NUL bytes)")
    return text
