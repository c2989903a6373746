"""The field table: every kind's fields, types, defaults, choices and rules, in one place.

The loader (:mod:`cloudctl.state.loader`) checks and builds documents from this table and the
JSON Schema (:mod:`cloudctl.state.schema`) is generated from it, so the two cannot disagree.
To add a field: add a :class:`Field` to its kind's :class:`Shape` here and the attribute of the
same name to the spec dataclass in :mod:`cloudctl.state.model`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from cloudctl.domain import validation
from cloudctl.domain.paths import DEFAULT_BRIDGE
from cloudctl.errors import InvalidInput
from cloudctl.state import model

#: Most replicas one Server document may declare.
MAX_REPLICAS = 100_000
#: The range of an SQL ``Integer`` column: every integer field is stored in one, so every
#: integer field is bounded by it (a narrower ``minimum``/``maximum`` stays).
INT_MIN = -(2**31)
INT_MAX = validation.MAX_INT


class T(StrEnum):
    """Field types, as YAML values."""

    INT = "integer"
    STR = "string"
    BOOL = "boolean"
    #: A mapping of string keys to string values (extra specs, properties, metadata, labels);
    #: keys and values are checked as ``--property k=v`` is.
    STR_MAP = "string map"
    STR_LIST = "string list"
    #: Scheduler hints: hint name -> a string (comma-separated) or a list of strings.
    HINTS = "hints"
    OBJECT = "object"


#: A check of a well-typed value: None when fine, else the message.
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Field:
    """One field of a spec (or of a nested object)."""

    name: str
    type: T
    description: str
    required: bool = False
    #: Used when the field is absent or null; None for "not set".
    default: Any = None
    choices: tuple[Any, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    #: A regex a string (or each string of a list) must match; also in the JSON Schema.
    pattern: str | None = None
    #: The most characters a string (or each value of a string map) may have: its SQL column's.
    max_length: int | None = None
    #: Further checks of a well-typed value (applied to each item of a list).
    check: Check | None = None
    #: The nested object's shape (``T.OBJECT``).
    shape: Shape | None = None

    def __post_init__(self) -> None:
        if self.type is T.INT:
            low = INT_MIN if self.minimum is None else max(self.minimum, INT_MIN)
            high = INT_MAX if self.maximum is None else min(self.maximum, INT_MAX)
            object.__setattr__(self, "minimum", low)
            object.__setattr__(self, "maximum", high)


@dataclass(frozen=True)
class Needs:
    """When ``field`` is given, ``other`` must be given too."""

    field: str
    other: str


@dataclass(frozen=True)
class Conflicts:
    """When ``field`` is given, none of ``others`` may be."""

    field: str
    others: tuple[str, ...]


@dataclass(frozen=True)
class AtLeastOne:
    """At least one of ``fields`` must be given."""

    fields: tuple[str, ...]


@dataclass(frozen=True)
class OnlyWhen:
    """``field`` may only be given when ``other`` (given or defaulted) is one of ``values``."""

    field: str
    other: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class RequiredWhen:
    """``field`` must be given when ``other`` is one of ``values`` (none of them its default)."""

    field: str
    other: str
    values: tuple[Any, ...]


Rule = Needs | Conflicts | AtLeastOne | OnlyWhen | RequiredWhen


@dataclass(frozen=True)
class Shape:
    """The fields of a spec or nested object, the rules between them, and the class built."""

    cls: type[Any]
    fields: tuple[Field, ...]
    rules: tuple[Rule, ...] = ()
    description: str = ""

    @cached_property
    def by_name(self) -> Mapping[str, Field]:
        """The fields by name."""
        return {f.name: f for f in self.fields}

    def field(self, name: str) -> Field | None:
        """The field called ``name``."""
        return self.by_name.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every field name, in table order."""
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True)
class KindInfo:
    """A kind: its spec shape, how its ``metadata.name`` is checked, what it is for."""

    kind: str
    shape: Shape
    #: Raises ``InvalidInput`` for a bad name (cloudctl.domain.validation).
    check_name: Callable[[str], str]
    name_pattern: str
    description: str


def _via(validator: Callable[[str], object]) -> Check:
    """A domain validator (raising InvalidInput) as a field check."""

    def check(value: Any) -> str | None:
        try:
            validator(value)
        except InvalidInput as exc:
            return str(exc.kwargs.get("reason", exc.message))
        return None

    return check


def _cidr(value: str) -> str | None:
    try:
        ipaddress.ip_network(value)
    except ValueError as exc:
        return f"{value!r} is not a network in CIDR notation: {exc}"
    return None


def _ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def _public_key(value: str) -> str | None:
    if not validation.PUBLIC_KEY_RE.match(value.strip()):
        return "must be one OpenSSH public key line (ssh-ed25519 AAAA... comment)"
    return None


def _cmdline(value: str) -> str | None:
    if "\n" in value or "\x00" in value or len(value) > 1024:
        return "kernel command line must be one line of at most 1024 characters"
    return None


def _path(value: str) -> str | None:
    if not value or "\x00" in value:
        return "must be a non-empty path"
    return None


def _name_pattern(value: str) -> str | None:
    return model.name_pattern_problem(value)


OBJECT_NAME = validation.OBJECT_NAME_RE.pattern
INSTANCE_NAME = validation.INSTANCE_NAME_RE.pattern
AZ = validation.AZ_RE.pattern


FLAVOR = Shape(
    model.FlavorSpec,
    (
        Field("vcpus", T.INT, "Virtual CPUs.", required=True, minimum=1),
        Field("ram_mb", T.INT, "Memory in MiB.", required=True, minimum=1),
        Field(
            "disk_gb", T.INT, "Root disk in GiB (0 = the image's size).", required=True, minimum=0
        ),
        Field("ephemeral_gb", T.INT, "Ephemeral disk in GiB.", default=0, minimum=0),
        Field("swap_mb", T.INT, "Swap disk in MiB.", default=0, minimum=0),
        Field(
            "extra_specs",
            T.STR_MAP,
            "Extra specs (hw:..., capabilities:..., aggregate keys).",
            default={},
            max_length=255,
        ),
        Field("description", T.STR, "Free text."),
    ),
    description="A hardware template (cloudctl flavor create).",
)

IMAGE = Shape(
    model.ImageSpec,
    (
        Field(
            "source",
            T.STR,
            "A built-in image: tiny (kernel + busybox, for tests and demos).",
            choices=model.IMAGE_SOURCES,
        ),
        Field("file", T.STR, "Disk image file (qcow2 or raw), relative to this file.", check=_path),
        Field("kernel", T.STR, "Kernel for direct boot, relative to this file.", check=_path),
        Field("initrd", T.STR, "Initrd for direct boot (needs kernel).", check=_path),
        Field("cmdline", T.STR, "Kernel command line (needs kernel).", check=_cmdline),
        Field("min_ram_mb", T.INT, "Least flavor RAM the image boots with.", default=0, minimum=0),
        Field(
            "min_disk_gb", T.INT, "Least flavor disk the image boots with.", default=0, minimum=0
        ),
        Field(
            "properties", T.STR_MAP, "Image properties (os_type, hw_architecture, ...).", default={}
        ),
    ),
    rules=(
        AtLeastOne(("source", "file", "kernel")),
        Conflicts("source", ("file", "kernel", "initrd", "cmdline")),
        Needs("initrd", "kernel"),
        Needs("cmdline", "kernel"),
    ),
    description="An image: source: tiny, or a disk file and/or a kernel (+ initrd) to boot.",
)

NETWORK = Shape(
    model.NetworkSpec,
    (
        Field(
            "cidr",
            T.STR,
            "The subnet fixed IPs come from (10.0.0.0/24).",
            required=True,
            check=_cidr,
        ),
        Field("gateway", T.STR, "The gateway address, inside cidr.", check=_ip),
        Field("dns", T.STR_LIST, "DNS server addresses.", default=(), check=_ip),
        Field(
            "bridge",
            T.STR,
            "The Linux bridge on every host.",
            default=DEFAULT_BRIDGE,
            pattern=validation.BRIDGE_RE.pattern,
        ),
    ),
    description="A flat network: a bridge on every host and a subnet to hand out.",
)

KEYPAIR = Shape(
    model.KeyPairSpec,
    (Field("public_key", T.STR, "One OpenSSH public key line.", required=True, check=_public_key),),
    description="An SSH key pair, injected into guests through the config drive.",
)

SERVER_GROUP = Shape(
    model.ServerGroupSpec,
    (
        Field(
            "policy",
            T.STR,
            "How members are placed relative to each other.",
            required=True,
            choices=model.POLICIES,
        ),
        Field("max_per_host", T.INT, "Most members per host (anti-affinity only).", minimum=1),
    ),
    rules=(OnlyWhen("max_per_host", "policy", ("anti-affinity",)),),
    description="A server group: hard or soft (anti-)affinity between its servers.",
)

QUOTA = Shape(
    model.QuotaSpec,
    (
        Field("instances", T.INT, "Most servers (-1 = unlimited).", minimum=-1),
        Field("cores", T.INT, "Most vCPUs (-1 = unlimited).", minimum=-1),
        Field("ram_mb", T.INT, "Most RAM in MiB (-1 = unlimited).", minimum=-1),
    ),
    description="Hard limits of the project named by metadata.name; absent = leave as is.",
)

HOST = Shape(
    model.HostSpec,
    (
        Field("availability_zone", T.STR, "The host's availability zone.", pattern=AZ),
        Field("labels", T.STR_MAP, "The host's labels (replaces them all)."),
        Field("enabled", T.BOOL, "Whether the scheduler may place servers on it."),
        Field(
            "disabled_reason", T.STR, "Why it is disabled (with enabled: false).", max_length=255
        ),
    ),
    rules=(OnlyWhen("disabled_reason", "enabled", (False,)),),
    description="Attributes of a host registered by host add or lab up; absent = leave as is.",
)

PLACEMENT = Shape(
    model.Placement,
    (
        Field(
            "host",
            T.STR,
            "free: the scheduler decides; preferred: host_name when it fits; "
            "pinned: host_name or nowhere.",
            default="free",
            choices=model.PLACEMENTS,
        ),
        Field("host_name", T.STR, "The host (pinned or preferred).", pattern=OBJECT_NAME),
    ),
    rules=(
        RequiredWhen("host_name", "host", ("pinned", "preferred")),
        OnlyWhen("host_name", "host", ("pinned", "preferred")),
    ),
    description="Where the servers may go.",
)

SERVER = Shape(
    model.ServerSpec,
    (
        Field(
            "flavor",
            T.STR,
            "Flavor name (in these files or in cloudctl).",
            required=True,
            pattern=OBJECT_NAME,
        ),
        Field(
            "image",
            T.STR,
            "Image name (in these files or in cloudctl).",
            required=True,
            pattern=OBJECT_NAME,
        ),
        Field("replicas", T.INT, "How many servers.", default=1, minimum=0, maximum=MAX_REPLICAS),
        Field(
            "name_pattern",
            T.STR,
            "Replica names: {name} and {index} (1-based); default "
            "{name}-{index}, or just the name for one replica.",
            check=_name_pattern,
        ),
        Field("key", T.STR, "Key pair name.", pattern=OBJECT_NAME),
        Field("group", T.STR, "Server group name.", pattern=OBJECT_NAME),
        Field("availability_zone", T.STR, "Availability zone.", pattern=AZ),
        Field(
            "hints",
            T.HINTS,
            "Scheduler hints: same_host / different_host -> server names.",
            default={},
        ),
        Field(
            "user_data",
            T.STR,
            "User data (cloud-init) for the config drive.",
            check=_via(validation.user_data),
        ),
        Field("metadata", T.STR_MAP, "Server metadata.", default={}),
        Field(
            "power_state",
            T.STR,
            "The desired power state.",
            default="running",
            choices=model.POWER_STATES,
        ),
        Field("placement", T.OBJECT, "Where the servers may go.", shape=PLACEMENT),
    ),
    description="replicas servers of one shape.",
)


def _object_name(kind: str) -> Callable[[str], str]:
    return lambda name: validation.object_name(kind, name)


#: Every kind, in dependency order (model.KINDS).
KINDS: Mapping[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo(
            "Host",
            HOST,
            _object_name("host"),
            OBJECT_NAME,
            "Manages attributes of an existing host; metadata.name is the host.",
        ),
        KindInfo("Flavor", FLAVOR, _object_name("flavor"), OBJECT_NAME, FLAVOR.description),
        KindInfo("Image", IMAGE, _object_name("image"), OBJECT_NAME, IMAGE.description),
        KindInfo("Network", NETWORK, _object_name("network"), OBJECT_NAME, NETWORK.description),
        KindInfo("KeyPair", KEYPAIR, _object_name("key pair"), OBJECT_NAME, KEYPAIR.description),
        KindInfo(
            "ServerGroup",
            SERVER_GROUP,
            _object_name("server group"),
            OBJECT_NAME,
            SERVER_GROUP.description,
        ),
        KindInfo(
            "Quota",
            QUOTA,
            _object_name("project"),
            OBJECT_NAME,
            "Quota of the project named by metadata.name.",
        ),
        KindInfo(
            "Server",
            SERVER,
            validation.instance_name,
            INSTANCE_NAME,
            "Servers; metadata.name is a DNS label, the base of the replicas' names.",
        ),
    )
}

#: The fields of ``metadata``.
METADATA = Shape(
    dict,
    (
        Field("name", T.STR, "The object's name, unique per kind.", required=True),
        Field("labels", T.STR_MAP, "Free labels (not used by cloudctl).", default={}),
    ),
)
#: The top-level keys of a document.
TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec")
