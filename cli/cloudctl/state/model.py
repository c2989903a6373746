"""The typed model of desired-state files: documents, their specs, and where each value came from.

A file holds YAML documents of the form::

    apiVersion: cloudctl.dev/v1
    kind: Server                 # Flavor, Image, Network, KeyPair, ServerGroup, Quota, Host, Server
    metadata:
      name: web
      labels: {team: shop}       # optional
    spec: {...}                  # the kind's fields (see cloudctl.state.fields)

Every :class:`Document` remembers its :class:`Location` (file and 1-based line of its first key)
and the location of each of its fields by dotted path (``"spec.flavor"``,
``"spec.placement.host_name"``, ``"metadata.name"``), so a problem found later (a dangling
reference, a plan that cannot place a server) can point at the exact line.

Server names: a Server document declares ``replicas`` servers. Replica ``i`` (1-based) is named
``name_pattern.format(name=metadata.name, index=i)``, the pattern defaulting to
``"{name}-{index}"``; but with ``replicas: 1`` and no ``name_pattern`` the one server is named
``metadata.name`` itself (as ``cloudctl boot`` names a single instance). Scaling such a Server
from 1 to 2 replicas therefore renames it (``web`` -> ``web-1``, ``web-2``): give an explicit
``name_pattern`` to keep names stable across scaling. :func:`expand_names` is the rule.
"""

from __future__ import annotations

import difflib
import posixpath
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

from cloudctl.domain import validation
from cloudctl.domain.paths import DEFAULT_BRIDGE
from cloudctl.errors import InvalidInput

API_VERSION = "cloudctl.dev/v1"
DEFAULT_NAME_PATTERN = "{name}-{index}"
#: The placeholders a ``name_pattern`` may use.
NAME_PATTERN_FIELDS = ("name", "index")

POWER_STATES = ("running", "stopped", "paused")
PLACEMENTS = ("pinned", "preferred", "free")
POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
IMAGE_SOURCES = ("tiny",)
#: Scheduler hints ``cloudctl boot`` understands.
HINTS = validation.SCHEDULER_HINTS


@dataclass(frozen=True, order=True)
class Location:
    """Where something was written: file name and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the files, printed as ``file:line: path: message``.

    ``path`` is the dotted path of the offending field (``spec.flavor``), empty for a problem
    with the document or file as a whole (bad YAML, a document that is not a mapping).
    """

    location: Location
    path: str
    message: str

    def __str__(self) -> str:
        if self.path:
            return f"{self.location}: {self.path}: {self.message}"
        return f"{self.location}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (``text`` is the one-line form)."""
        return {
            "file": self.location.file,
            "line": self.location.line,
            "path": self.path,
            "message": self.message,
            "text": str(self),
        }


class InvalidEstate(InvalidInput):
    """Desired-state files with problems; ``problems`` has every one of them, sorted."""

    msg_fmt = "invalid input: {count} problem(s) in the desired-state files: {first}"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(count=len(self.problems), first=str(self.problems[0]) if problems else "")


# --- specs, one per kind -------------------------------------------------------------------------


@dataclass(frozen=True)
class FlavorSpec:
    """A hardware template (``cloudctl flavor create``)."""

    vcpus: int
    ram_mb: int
    disk_gb: int
    ephemeral_gb: int = 0
    swap_mb: int = 0
    extra_specs: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    """An image: ``source: tiny`` (the built-in test image) or files (``cloudctl image add``).

    Relative paths are relative to the directory of the file that declares the document
    (:meth:`Document.resolve_path`).
    """

    source: str | None = None
    file: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    min_ram_mb: int = 0
    min_disk_gb: int = 0
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkSpec:
    """A flat network: a subnet to hand out and the bridge guests attach to on every host."""

    cidr: str
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    bridge: str = DEFAULT_BRIDGE


@dataclass(frozen=True)
class KeyPairSpec:
    """An SSH public key (one OpenSSH ``.pub`` line)."""

    public_key: str


@dataclass(frozen=True)
class ServerGroupSpec:
    """(Anti-)affinity between servers; ``max_per_host`` only with ``anti-affinity``."""

    policy: str
    max_per_host: int | None = None


@dataclass(frozen=True)
class QuotaSpec:
    """Hard limits of the project named by ``metadata.name``; None = leave as is, -1 = none."""

    instances: int | None = None
    cores: int | None = None
    ram_mb: int | None = None


@dataclass(frozen=True)
class HostSpec:
    """Attributes of a host registered by ``host add`` / ``lab up``; None = leave as is."""

    availability_zone: str | None = None
    labels: Mapping[str, str] | None = None
    enabled: bool | None = None
    disabled_reason: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where a server may go: ``free`` (the scheduler decides), ``preferred`` (``host_name``
    when it fits, else elsewhere) or ``pinned`` (``host_name`` or nowhere)."""

    host: str = "free"
    host_name: str | None = None


@dataclass(frozen=True)
class ServerSpec:
    """``replicas`` servers of one shape; :func:`expand` gives them their names."""

    flavor: str
    image: str
    replicas: int = 1
    name_pattern: str | None = None
    key: str | None = None
    group: str | None = None
    availability_zone: str | None = None
    #: Scheduler hints (``same_host``/``different_host``) -> server names or UUIDs.
    hints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    user_data: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    power_state: str = "running"
    placement: Placement = field(default_factory=Placement)


Spec = (
    FlavorSpec
    | ImageSpec
    | NetworkSpec
    | KeyPairSpec
    | ServerGroupSpec
    | QuotaSpec
    | HostSpec
    | ServerSpec
)

#: Kind -> spec class, in dependency order (what apply creates first comes first).
KIND_SPECS: Mapping[str, type[Any]] = {
    "Host": HostSpec,
    "Flavor": FlavorSpec,
    "Image": ImageSpec,
    "Network": NetworkSpec,
    "KeyPair": KeyPairSpec,
    "ServerGroup": ServerGroupSpec,
    "Quota": QuotaSpec,
    "Server": ServerSpec,
}
KINDS = tuple(KIND_SPECS)
SPEC_KINDS: Mapping[type[Any], str] = {cls: kind for kind, cls in KIND_SPECS.items()}

S = TypeVar("S")


@dataclass(frozen=True)
class Document(Generic[S]):
    """One YAML document: kind, name, labels and the typed spec, with where each came from.

    ``broken`` lists the paths of fields that had a problem (their value in ``spec`` is then
    the default, or a placeholder for a required field); a document is only to be acted on
    when ``validate`` found no problem at all in the estate.
    """

    kind: str
    name: str
    spec: S
    location: Location
    labels: Mapping[str, str] = field(default_factory=dict)
    locations: Mapping[str, Location] = field(default_factory=dict, compare=False, repr=False)
    broken: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        """Whether every field of the document was well formed."""
        return not self.broken

    def at(self, path: str) -> Location:
        """The location of ``path`` (``spec.flavor``), else of its nearest written parent."""
        while path:
            found = self.locations.get(path)
            if found is not None:
                return found
            path = path.rpartition(".")[0]
        return self.location

    def has(self, path: str) -> bool:
        """Whether ``path`` was written in the file (not just defaulted)."""
        return path in self.locations

    def resolve_path(self, path: str) -> str:
        """A path written in this document, relative to the directory of its file."""
        if posixpath.isabs(path):
            return path
        return posixpath.normpath(posixpath.join(posixpath.dirname(self.location.file), path))


@dataclass(frozen=True)
class DesiredServer:
    """One concrete server a Server document declares: its name and 1-based replica index."""

    name: str
    index: int
    document: Document[ServerSpec]

    @property
    def spec(self) -> ServerSpec:
        """The Server document's spec (shared by every replica)."""
        return self.document.spec

    @property
    def server(self) -> str:
        """The declaring Server document's ``metadata.name``."""
        return self.document.name

    @property
    def location(self) -> Location:
        """Where the declaring Server document starts."""
        return self.document.location


def closest(word: str, options: Iterable[str]) -> str | None:
    """The one option ``word`` is most likely a typo of (difflib ratio >= 0.6; none on a tie)."""
    scored = []
    for option in set(options):
        matcher = difflib.SequenceMatcher(None, word, option)
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            ratio = matcher.ratio()
            if ratio >= 0.6:
                scored.append((ratio, option))
    scored.sort(reverse=True)
    if not scored or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    return scored[0][1]


def name_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable ``name_pattern`` (None when it is)."""
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        return f"{pattern!r} is not a valid pattern: {exc}"
    for _, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in NAME_PATTERN_FIELDS:
            return f"unknown placeholder {{{field_name}}}; use {{name}} and {{index}}"
        if conversion is not None or (spec and "{" in spec):
            return f"placeholder {{{field_name}}}: conversions and nested fields are not allowed"
    try:
        pattern.format(name="x", index=1)
    except (ValueError, TypeError) as exc:
        return f"{pattern!r} is not a valid pattern: {exc}"
    return None


def expand_names(name: str, replicas: int, pattern: str | None = None) -> list[str]:
    """The names of a Server's replicas (see the module docstring for the rule).

    ``pattern`` may use ``{name}`` and ``{index}`` (1-based, format specs allowed:
    ``{index:02d}``); a bad pattern raises ``ValueError``.
    """
    if pattern is None and replicas == 1:
        return [name]
    fmt = DEFAULT_NAME_PATTERN if pattern is None else pattern
    reason = name_pattern_problem(fmt)
    if reason is not None:
        raise ValueError(reason)
    return [fmt.format(name=name, index=i) for i in range(1, replicas + 1)]


def expand(document: Document[ServerSpec]) -> list[DesiredServer]:
    """The concrete servers a Server document declares, in index order."""
    spec = document.spec
    names = expand_names(document.name, spec.replicas, spec.name_pattern)
    return [DesiredServer(n, i, document) for i, n in enumerate(names, start=1)]


@dataclass(frozen=True)
class Estate:
    """Every document of a set of files, by kind and name, and the problems met parsing them.

    ``problems`` holds what one document alone shows (bad YAML, types, unknown fields);
    :func:`cloudctl.state.validate.validate` adds what needs the whole estate and cloudctl's
    names (references, duplicates). Act on an estate only when ``validate`` returns nothing.
    With duplicate names, the lookups return the first document of that name.
    """

    files: tuple[str, ...] = ()
    documents: tuple[Document[Any], ...] = ()
    problems: tuple[Problem, ...] = ()

    @cached_property
    def _index(self) -> dict[str, dict[str, Document[Any]]]:
        index: dict[str, dict[str, Document[Any]]] = {kind: {} for kind in KINDS}
        for doc in self.documents:
            index[doc.kind].setdefault(doc.name, doc)
        return index

    def of_kind(self, kind: str) -> list[Document[Any]]:
        """Every document of ``kind``, in file order (duplicates included)."""
        return [d for d in self.documents if d.kind == kind]

    def named(self, spec_type: type[S]) -> Mapping[str, Document[S]]:
        """Documents of the kind whose spec is ``spec_type``, by name (``named(FlavorSpec)``)."""
        return self._index[SPEC_KINDS[spec_type]]

    def get(self, spec_type: type[S], name: str) -> Document[S] | None:
        """The document of that kind and name, if the files declare one."""
        return self.named(spec_type).get(name)

    def declares(self, kind: str, name: str) -> bool:
        """Whether the files declare ``kind`` ``name``."""
        return name in self._index.get(kind, {})

    @property
    def flavors(self) -> Mapping[str, Document[FlavorSpec]]:
        """Flavor documents by name."""
        return self.named(FlavorSpec)

    @property
    def images(self) -> Mapping[str, Document[ImageSpec]]:
        """Image documents by name."""
        return self.named(ImageSpec)

    @property
    def networks(self) -> Mapping[str, Document[NetworkSpec]]:
        """Network documents by name."""
        return self.named(NetworkSpec)

    @property
    def keypairs(self) -> Mapping[str, Document[KeyPairSpec]]:
        """KeyPair documents by name."""
        return self.named(KeyPairSpec)

    @property
    def server_groups(self) -> Mapping[str, Document[ServerGroupSpec]]:
        """ServerGroup documents by name."""
        return self.named(ServerGroupSpec)

    @property
    def quotas(self) -> Mapping[str, Document[QuotaSpec]]:
        """Quota documents by project."""
        return self.named(QuotaSpec)

    @property
    def hosts(self) -> Mapping[str, Document[HostSpec]]:
        """Host documents by host name."""
        return self.named(HostSpec)

    @property
    def servers(self) -> Mapping[str, Document[ServerSpec]]:
        """Server documents by ``metadata.name`` (see :meth:`desired_servers` for replicas)."""
        return self.named(ServerSpec)

    def desired_servers(self) -> list[DesiredServer]:
        """Every concrete server, Server documents in file order, replicas in index order.

        Server documents whose name pattern is unusable are skipped (``validate`` reports them).
        """
        out: list[DesiredServer] = []
        for doc in self.of_kind("Server"):
            try:
                out.extend(expand(doc))
            except ValueError:
                continue
        return out
