"""Pure validation of names and values that reach SQL, XML, file paths or Ansible."""

from __future__ import annotations

import ipaddress
import re
import uuid as uuidlib
from collections.abc import Iterable, Mapping

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
#: Nova's limit on user data (the bytes of the file, before any encoding).
MAX_USER_DATA = 64 * 1024
#: More than any one OpenSSH public key line (a 16384-bit RSA key is about 2.8 KiB).
MAX_PUBLIC_KEY = 16 * 1024
#: The largest value of an SQL ``Integer`` column (sizes, counts, quotas are stored in them).
MAX_INT = 2**31 - 1
#: A path on a host or the controller: absolute, of these characters; see :func:`host_path`.
HOST_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*$")
#: libvirt transports a host may be reached with, and the URI parameters each one may carry.
#: Everything else is refused: ``command`` (ssh, ext) and ``netcat`` run programs, ``socket``
#: points the client at any unix socket, ``proxy`` and ``mode`` change what runs on the far
#: side, ``qemu+ext`` runs a program by design.
LIBVIRT_URI_PARAMS: Mapping[str, tuple[str, ...]] = {
    "qemu": ("no_verify",),
    "qemu+ssh": ("keyfile", "known_hosts", "known_hosts_verify", "no_verify", "no_tty"),
    "qemu+tls": ("no_verify",),
    "qemu+tcp": (),
    "qemu+unix": (),
}
LIBVIRT_URI_PATHS = ("/system", "/session")
#: No percent-encoding, ``;`` (libvirt's other parameter separator) or ``#``: what is checked
#: here is exactly what libvirt reads.
_URI_CHARS_RE = re.compile(r"^[A-Za-z0-9+._~:/?&=@\[\]-]+$")
_URI_RE = re.compile(
    r"^(?P<scheme>[^:/?]+)://(?P<authority>[^/?]*)(?P<path>[^?]*)(\?(?P<query>.*))?$"
)
_URI_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOST_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*$")
_URI_PARAM_VALUES: Mapping[str, tuple[str, ...]] = {
    "no_verify": ("0", "1"),
    "no_tty": ("0", "1"),
    "known_hosts_verify": ("normal", "auto", "ignore"),
}
#: Parameters whose value is a file on the controller.
_URI_PATH_PARAMS = ("keyfile", "known_hosts")
#: Scheduler hints a boot or a Server document may give (names or UUIDs of other instances).
SCHEDULER_HINTS = ("same_host", "different_host")


def instance_name(name: str) -> str:
    """An instance name is a DNS label: ``^[a-z0-9][a-z0-9-]{0,62}$`` (it becomes the hostname)."""
    if not INSTANCE_NAME_RE.fullmatch(name):
        raise InvalidInput(
            reason=f"instance name {name!r} must match ^[a-z0-9][a-z0-9-]{{0,62}}$ "
            "(lowercase letters, digits and '-', at most 63 characters)"
        )
    return name


def object_name(kind: str, name: str) -> str:
    """Names of flavors, images, hosts, key pairs: letters, digits, '.', '_', '-'."""
    if not OBJECT_NAME_RE.fullmatch(name):
        raise InvalidInput(
            reason=f"{kind} name {name!r} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,62}}$"
        )
    return name


def availability_zone(az: str) -> str:
    """An availability zone name."""
    if not AZ_RE.fullmatch(az):
        raise InvalidInput(reason=f"availability zone {az!r} must match {AZ_RE.pattern}")
    return az


def _number(value: int) -> str:
    # str() of an int of more than 4300 digits raises ValueError.
    return str(value) if abs(value) < 10**30 else "a number of more than 30 digits"


def in_range(field: str, value: int, minimum: int, maximum: int = MAX_INT) -> int:
    """``minimum <= value <= maximum`` (by default the largest value an SQL Integer holds)."""
    if value < minimum:
        raise InvalidInput(reason=f"{field} must be >= {minimum}, got {_number(value)}")
    if value > maximum:
        raise InvalidInput(reason=f"{field} must be <= {maximum}, got {_number(value)}")
    return value


def non_negative(field: str, value: int) -> int:
    """Sizes and counts cannot be negative (nor larger than their SQL column holds)."""
    return in_range(field, value, 0)


def positive(field: str, value: int) -> int:
    """Some sizes must be at least 1 (and fit their SQL column)."""
    return in_range(field, value, 1)


def properties(pairs: Iterable[str]) -> dict[str, str]:
    """Parse ``k=v`` pairs (``--property``); keys validated, values kept as text."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(reason=f"property {pair!r} must be written key=value")
        if not PROPERTY_KEY_RE.fullmatch(key):
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


def user_data_bytes(raw: bytes) -> str:
    """User data read from a file: at most :data:`MAX_USER_DATA` bytes of UTF-8 text.

    The caller reads at most one byte more than the limit, so a huge file (or ``/dev/zero``)
    is never read whole; the size is judged before the text is decoded.
    """
    if len(raw) > MAX_USER_DATA:
        raise InvalidInput(reason=f"user data is larger than {MAX_USER_DATA} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(reason=f"user data must be UTF-8 text: {exc.reason}") from exc
    return user_data(text)


def host_path(label: str, value: str) -> str:
    """A path cloudctl hands to a host, ssh or libvirt: absolute, normalised, plain characters.

    ``/srv/x/../../etc`` would put guests into /etc, so no part may be ``.`` or ``..``, and none
    empty (``//``, a trailing ``/``); nothing a shell or Ansible could take for more than a path.
    """
    parts = value.split("/")
    if (
        len(value) > 1024
        or not HOST_PATH_RE.fullmatch(value)
        or any(part in ("", ".", "..") for part in parts[1:])
    ):
        raise InvalidInput(
            reason=f"{label} {value!r} must be an absolute, normalised path (no '.', '..' or "
            "empty parts, at most 1024 characters) of letters, digits and . _ + - /"
        )
    return value


def libvirt_uri(uri: str) -> str:
    """A libvirt URI cloudctl may reach a host with: a qemu transport, a host, no programs.

    ``TRANSPORT://[USER@][HOST][:PORT]/system`` (or ``/session``) with TRANSPORT one of
    :data:`LIBVIRT_URI_PARAMS` and only the parameters listed there for it: the rest
    (``command``, ``netcat``, ``socket``, ``proxy``, ...) make the libvirt client run a program
    or open an arbitrary socket as the controller's user. ``qemu+unix`` names no host.
    """

    def refuse(why: str) -> InvalidInput:
        return InvalidInput(reason=f"libvirt URI {uri!r} {why}")

    if len(uri) > 1024 or not _URI_CHARS_RE.fullmatch(uri):
        raise refuse("may only have letters, digits and + . _ ~ : / ? & = @ [ ] -")
    match = _URI_RE.fullmatch(uri)
    if match is None:
        raise refuse("is not TRANSPORT://[HOST]/system")
    scheme, authority, path = match["scheme"], match["authority"], match["path"]
    if scheme not in LIBVIRT_URI_PARAMS:
        raise refuse(f"uses transport {scheme!r}; allowed: {', '.join(LIBVIRT_URI_PARAMS)}")
    if path not in LIBVIRT_URI_PATHS:
        raise refuse(f"must end in {' or '.join(LIBVIRT_URI_PATHS)}, not {path!r}")
    if authority:
        if scheme == "qemu+unix":
            raise refuse("names a host, but qemu+unix reaches only this machine")
        problem = _uri_authority_problem(authority)
        if problem is not None:
            raise refuse(problem)
    allowed = LIBVIRT_URI_PARAMS[scheme]
    seen: set[str] = set()
    for item in match["query"].split("&") if match["query"] is not None else ():
        name, _, value = item.partition("=")
        if name not in allowed:
            listed = ", ".join(allowed) if allowed else "none"
            raise refuse(f"has parameter {name!r}; {scheme} allows only: {listed}")
        if name in seen:
            raise refuse(f"gives parameter {name!r} twice")
        seen.add(name)
        if name in _URI_PATH_PARAMS:
            host_path(f"libvirt URI parameter {name}", value)
        elif value not in _URI_PARAM_VALUES[name]:
            raise refuse(f"parameter {name} must be one of {', '.join(_URI_PARAM_VALUES[name])}")
    return uri


def _uri_authority_problem(authority: str) -> str | None:
    """Why ``[USER@]HOST[:PORT]`` is not one (no password, a host name or an address)."""
    user, at, hostport = authority.rpartition("@")
    if at and not _URI_USER_RE.fullmatch(user):
        return f"user {user!r} is not a user name (and a URI carries no password)"
    if hostport.startswith("["):
        inside, bracket, rest = hostport[1:].partition("]")
        host, colon, port = f"[{inside}]", rest[:1], rest[1:]
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            return f"host {hostport!r} is not [IPv6] or [IPv6]:PORT"
        if not bracket or colon not in ("", ":"):
            return f"host {hostport!r} is not [IPv6] or [IPv6]:PORT"
    else:
        host, colon, port = hostport.partition(":")
        if len(host) > 253 or not _HOST_NAME_RE.fullmatch(host):
            return f"host {host!r} is not a host name or IPv4 address"
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        return f"port {port!r} is not a port number"
    return None
