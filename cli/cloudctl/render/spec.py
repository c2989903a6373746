"""Frozen, validated descriptions of what the renderers turn into libvirt XML and config drives.

The services layer builds these from the database; every constructor validates its own fields
and raises :class:`cloudctl.errors.InvalidInput` with a precise reason, so a spec that exists is
one libvirt will accept. Only values that go into XML text pass the XML 1.0 character check:
markup characters (``<``, ``&``, quotes) are fine there, the templates escape them.
"""

from __future__ import annotations

import ipaddress
import re
import uuid as uuid_mod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from cloudctl.errors import InvalidInput

DiskFormat = Literal["qcow2", "raw"]
DiskDevice = Literal["disk", "cdrom"]
DiskBus = Literal["virtio", "sata", "scsi"]
DiskCache = Literal["none", "writeback"]
NicKind = Literal["bridge", "network"]
VirtType = Literal["kvm", "qemu"]
CpuMode = Literal["host-model", "host-passthrough", "custom", "none"]

#: Namespace of the ``<metadata>`` element cloudctl writes into every domain.
METADATA_NAMESPACE = "https://cloudctl.dev/xmlns/instance/1"
#: Prefix used for that namespace in rendered XML.
METADATA_PREFIX = "cloudctl"
#: Metadata keys the domain template writes itself; callers may not use them.
RESERVED_METADATA_KEYS = frozenset({"hostname", "nics"})

_DOMAIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TARGET_RE = re.compile(r"^(vd|sd|hd)[a-z]{1,2}$")
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_METADATA_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
# QEMU accepts only these characters in a disk serial (qemuSafeSerialParamValue).
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_ .+-]{1,64}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NIC_MODEL_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
_ARCH_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_NETWORK_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Characters XML 1.0 cannot carry at all, not even escaped.
_XML_ILLEGAL_RE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_CMDLINE = 2048  # COMMAND_LINE_SIZE on x86


def _invalid(reason: str) -> InvalidInput:
    return InvalidInput(reason=reason)


def _require_str(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{what} must be a string, got {type(value).__name__}")
    return value


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _invalid(f"{what} {value!r} is not one of {', '.join(choices)}")


def _check_pattern(what: str, value: object, pattern: re.Pattern[str]) -> str:
    text = _require_str(what, value)
    if not pattern.fullmatch(text):
        raise _invalid(f"{what} {text!r} does not match {pattern.pattern}")
    return text


def _check_xml_text(what: str, value: object) -> None:
    text = _require_str(what, value)
    bad = _XML_ILLEGAL_RE.search(text)
    if bad:
        raise _invalid(f"{what} contains {bad.group()!r}, which XML cannot carry")


def _check_line(what: str, value: object, *, allow_empty: bool = False) -> None:
    """A single line of printable text (XML-safe, no control characters)."""
    text = _require_str(what, value)
    if not text and not allow_empty:
        raise _invalid(f"{what} must not be empty")
    bad = _CONTROL_RE.search(text)
    if bad:
        raise _invalid(f"{what} contains the control character {bad.group()!r}")
    _check_xml_text(what, text)


def _check_positive_int(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{what} must be an integer, got {type(value).__name__}")
    if value <= 0:
        raise _invalid(f"{what} must be > 0, got {value}")


def check_uuid(what: str, value: object) -> None:
    """Require the canonical form: lowercase, hyphenated 8-4-4-4-12 hex."""
    text = _require_str(what, value)
    try:
        canonical = str(uuid_mod.UUID(text))
    except ValueError:
        raise _invalid(f"{what} {text!r} is not a UUID") from None
    if canonical != text:
        raise _invalid(f"{what} {text!r} is not canonical (expected {canonical!r})")


def check_mac(what: str, value: object) -> None:
    """Require a lowercase, colon-separated, unicast MAC address (libvirt refuses multicast)."""
    text = _check_pattern(what, value, _MAC_RE)
    if int(text[:2], 16) & 1:
        raise _invalid(f"{what} {text!r} is a multicast address; a NIC needs a unicast one")


def check_hostname(what: str, value: object) -> None:
    """Require an RFC 1123 host name (dotted labels of letters, digits and inner hyphens)."""
    text = _require_str(what, value)
    if not text or len(text) > 253:
        raise _invalid(f"{what} {text!r} must be 1 to 253 characters long")
    for label in text.split("."):
        if not _HOST_LABEL_RE.fullmatch(label):
            raise _invalid(
                f"{what} {text!r} is not a valid host name: label {label!r} must be 1-63 "
                "letters, digits or inner hyphens"
            )


def _check_abs_path(what: str, value: object) -> None:
    text = _require_str(what, value)
    if "\n" in text or "\x00" in text:
        raise _invalid(f"{what} {text!r} must not contain a newline or NUL")
    if not text.startswith("/"):
        raise _invalid(f"{what} {text!r} must be an absolute path")
    _check_line(what, text)


def _frozen_str_mapping(what: str, value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise _invalid(f"{what} must be a mapping of strings, got {type(value).__name__}")
    copy: dict[str, str] = {}
    for key, item in value.items():
        _require_str(f"{what} key", key)
        _require_str(f"{what}[{key!r}]", item)
        copy[key] = item
    return MappingProxyType(copy)


def _as_tuple(what: str, value: object, kind: type[object]) -> tuple[object, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, tuple | list):
        raise _invalid(f"{what} must be a tuple of {kind.__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, kind):
            raise _invalid(f"{what}[{i}] must be a {kind.__name__}, got {type(item).__name__}")
    return tuple(value)


def _check_unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise _invalid(f"{what} {value!r} is used more than once")
        seen.add(value)


@dataclass(frozen=True)
class DiskSpec:
    """One file-backed disk or CD-ROM of a domain.

    ``cache`` is Nova's ``disk_cachemodes``: ``none`` (O_DIRECT, needs a file system that supports
    it, which ext4/xfs/NFS do and tmpfs does not) or ``writeback``. A CD-ROM is always read-only.
    ``serial`` appears in the guest as ``/dev/disk/by-id/virtio-<serial>`` (virtio keeps the first
    20 characters).
    """

    path: str
    target: str
    format: DiskFormat
    device: DiskDevice = "disk"
    bus: DiskBus = "virtio"
    readonly: bool = False
    serial: str | None = None
    cache: DiskCache = "none"

    def __post_init__(self) -> None:
        _check_abs_path("disk path", self.path)
        _check_pattern("disk target", self.target, _TARGET_RE)
        _check_choice(f"disk {self.target} format", self.format, get_args(DiskFormat))
        _check_choice(f"disk {self.target} device", self.device, get_args(DiskDevice))
        _check_choice(f"disk {self.target} bus", self.bus, get_args(DiskBus))
        _check_choice(f"disk {self.target} cache", self.cache, get_args(DiskCache))
        if not isinstance(self.readonly, bool):
            raise _invalid(f"disk {self.target} readonly must be a bool")
        if (self.bus == "virtio") != self.target.startswith("vd"):
            raise _invalid(
                f"disk target {self.target!r} does not fit bus {self.bus!r}: "
                "vd* targets go with bus virtio, sd*/hd* with sata or scsi"
            )
        if self.device == "cdrom" and self.bus == "virtio":
            raise _invalid(f"disk {self.target}: a cdrom cannot use bus virtio, use sata or scsi")
        if self.readonly and self.device == "disk" and self.bus == "sata":
            raise _invalid(
                f"disk {self.target}: QEMU has no read-only SATA disks; use bus virtio or scsi, "
                "or device cdrom"
            )
        if self.serial is not None:
            _check_pattern(f"disk {self.target} serial", self.serial, _SERIAL_RE)

    @property
    def is_readonly(self) -> bool:
        """Whether the guest sees the disk read-only (always so for a CD-ROM)."""
        return self.readonly or self.device == "cdrom"


@dataclass(frozen=True)
class NicSpec:
    """One network interface: a Linux bridge or a libvirt network as source.

    ``ip`` is informational: it is recorded in the domain's cloudctl metadata, the guest learns
    its address from the config drive.
    """

    mac: str
    kind: NicKind
    source: str
    model: str = "virtio"
    ip: str | None = None

    def __post_init__(self) -> None:
        check_mac("nic mac", self.mac)
        _check_choice(f"nic {self.mac} kind", self.kind, get_args(NicKind))
        pattern = _BRIDGE_RE if self.kind == "bridge" else _NETWORK_RE
        _check_pattern(f"nic {self.mac} {self.kind} name", self.source, pattern)
        _check_pattern(f"nic {self.mac} model", self.model, _NIC_MODEL_RE)
        if self.ip is not None:
            _check_ip(f"nic {self.mac} ip", self.ip)


def _check_ip(what: str, value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = _require_str(what, value)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _invalid(f"{what} {text!r} is not an IP address") from None


@dataclass(frozen=True, kw_only=True)
class DomainSpec:
    """Everything ``templates/domain.xml.j2`` needs to describe one guest to libvirt.

    ``name`` is the libvirt domain name, ``uuid`` the instance UUID (also the domain UUID and the
    SMBIOS system UUID the guest reads at ``/sys/class/dmi/id/product_uuid``). ``metadata`` lands
    under ``<metadata><cloudctl:instance>`` as one element per key, in key order.
    ``cpu_mode`` ``none`` writes no ``<cpu>`` element (the hypervisor's default model);
    ``custom`` requires ``cpu_model``.
    """

    name: str
    uuid: str
    hostname: str
    memory_mb: int
    vcpus: int
    virt_type: VirtType
    cpu_mode: CpuMode
    cpu_model: str | None = None
    arch: str = "x86_64"
    machine: str | None = None
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    console_log: str
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    vnc: bool = True
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    smbios_manufacturer: str = "cloudctl"
    smbios_product: str = "cloudctl guest"

    def __post_init__(self) -> None:
        _check_pattern("domain name", self.name, _DOMAIN_NAME_RE)
        check_uuid("domain uuid", self.uuid)
        check_hostname("hostname", self.hostname)
        _check_positive_int("memory_mb", self.memory_mb)
        _check_positive_int("vcpus", self.vcpus)
        _check_choice("virt_type", self.virt_type, get_args(VirtType))
        _check_choice("cpu_mode", self.cpu_mode, get_args(CpuMode))
        self._check_cpu()
        _check_pattern("arch", self.arch, _ARCH_RE)
        if self.machine is not None:
            _check_pattern("machine", self.machine, _TOKEN_RE)
        object.__setattr__(self, "disks", _as_tuple("disks", self.disks, DiskSpec))
        object.__setattr__(self, "nics", _as_tuple("nics", self.nics, NicSpec))
        _check_unique("disk target", [d.target for d in self.disks])
        _check_unique("nic mac", [n.mac for n in self.nics])
        _check_abs_path("console_log", self.console_log)
        self._check_boot()
        if not isinstance(self.vnc, bool):
            raise _invalid("vnc must be a bool")
        object.__setattr__(self, "metadata", _frozen_str_mapping("metadata", self.metadata))
        for key, value in self.metadata.items():
            if not _METADATA_KEY_RE.fullmatch(key) or key.lower().startswith("xml"):
                raise _invalid(
                    f"metadata key {key!r} must match {_METADATA_KEY_RE.pattern} "
                    "and not start with 'xml'"
                )
            if key in RESERVED_METADATA_KEYS:
                raise _invalid(f"metadata key {key!r} is reserved (the template writes it)")
            _check_xml_text(f"metadata[{key!r}]", value)
        _check_line("smbios_manufacturer", self.smbios_manufacturer)
        _check_line("smbios_product", self.smbios_product)

    def _check_cpu(self) -> None:
        if self.cpu_mode == "custom":
            if self.cpu_model is None:
                raise _invalid("cpu_mode 'custom' requires a cpu_model")
            _check_pattern("cpu_model", self.cpu_model, _TOKEN_RE)
        elif self.cpu_model is not None:
            raise _invalid(
                f"cpu_model {self.cpu_model!r} is only used with cpu_mode 'custom', "
                f"not {self.cpu_mode!r}"
            )
        if self.virt_type == "qemu" and self.cpu_mode == "host-passthrough":
            raise _invalid("cpu_mode 'host-passthrough' needs virt_type 'kvm', not 'qemu'")

    def _check_boot(self) -> None:
        if self.kernel is None:
            for what, value in (("initrd", self.initrd), ("cmdline", self.cmdline)):
                if value is not None:
                    raise _invalid(f"{what} is set but kernel is not: direct boot needs a kernel")
            return
        _check_abs_path("kernel", self.kernel)
        if self.initrd is not None:
            _check_abs_path("initrd", self.initrd)
        if self.cmdline is not None:
            _check_line("cmdline", self.cmdline, allow_empty=True)
            if len(self.cmdline) > _MAX_CMDLINE:
                raise _invalid(f"cmdline is {len(self.cmdline)} characters, max {_MAX_CMDLINE}")

    @property
    def needs_scsi_controller(self) -> bool:
        """Whether a disk sits on the SCSI bus (the template then adds a virtio-scsi controller)."""
        return any(d.bus == "scsi" for d in self.disks)


@dataclass(frozen=True)
class NetworkConfigNic:
    """Static addressing of one guest NIC, for cloud-init network config v2."""

    mac: str
    ip: str
    prefix: int
    gateway: str | None = None
    dns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_mac("network mac", self.mac)
        address = _check_ip(f"network {self.mac} ip", self.ip)
        if isinstance(self.prefix, bool) or not isinstance(self.prefix, int):
            raise _invalid(f"network {self.mac} prefix must be an integer")
        if not 0 <= self.prefix <= address.max_prefixlen:
            raise _invalid(
                f"network {self.mac} prefix {self.prefix} is out of range "
                f"0..{address.max_prefixlen} for IPv{address.version}"
            )
        if self.gateway is not None:
            gateway = _check_ip(f"network {self.mac} gateway", self.gateway)
            if gateway.version != address.version:
                raise _invalid(
                    f"network {self.mac} gateway {self.gateway} is IPv{gateway.version} "
                    f"but ip {self.ip} is IPv{address.version}"
                )
        dns = _as_tuple(f"network {self.mac} dns", self.dns, str)
        object.__setattr__(self, "dns", dns)
        for server in self.dns:
            _check_ip(f"network {self.mac} dns server", server)

    @property
    def version(self) -> int:
        """4 or 6, the IP version of ``ip``."""
        return ipaddress.ip_address(self.ip).version


@dataclass(frozen=True)
class ConfigDriveSpec:
    """The content of a NoCloud config drive (volume label ``cidata``).

    ``user_data`` is written verbatim (``#cloud-config`` YAML, a script, a MIME archive);
    None gives an empty cloud-config. Each public key is one line; surrounding whitespace (the
    newline ending a ``.pub`` file) is stripped. ``metadata`` goes under ``meta`` in
    ``meta-data``, as OpenStack's ``meta_data.json`` does.
    """

    uuid: str
    hostname: str
    user_data: str | None = None
    public_keys: tuple[str, ...] = ()
    network: tuple[NetworkConfigNic, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_uuid("config drive uuid", self.uuid)
        check_hostname("hostname", self.hostname)
        if self.user_data is not None:
            _require_str("user_data", self.user_data)
            if "\x00" in self.user_data:
                raise _invalid("user_data must not contain NUL")
        # a key read from a .pub file ends in a newline: drop surrounding whitespace only
        keys = tuple(str(k).strip() for k in _as_tuple("public_keys", self.public_keys, str))
        object.__setattr__(self, "public_keys", keys)
        for i, key in enumerate(self.public_keys):
            _check_line(f"public_keys[{i}]", key)
        nics = _as_tuple("network", self.network, NetworkConfigNic)
        object.__setattr__(self, "network", nics)
        _check_unique("network mac", [n.mac for n in self.network])
        object.__setattr__(self, "metadata", _frozen_str_mapping("metadata", self.metadata))
