"""ImagePropertiesFilter: what the image needs (architecture, hypervisor, version) vs the host."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping

from cloudctl.scheduler.filters import PASS, FilterResult, HostFilter
from cloudctl.scheduler.host_state import HostState, RequestSpec

#: Spellings of one architecture (Nova's Architecture.canonicalize, plus Debian's arm64).
ARCH_ALIASES: dict[str, str] = {
    "amd64": "x86_64",
    "x64": "x86_64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "x86_32": "i686",
    "arm64": "aarch64",
}
#: Hypervisor families: libvirt calls a KVM host "QEMU", and Nova documents ``img_hv_type=qemu``
#: as covering both QEMU and KVM, so both name one family here (``xapi`` is Nova's Xen alias).
HV_FAMILIES: dict[str, str] = {"kvm": "qemu", "xapi": "xen"}
#: Guest ABIs (``hw_vm_mode``) each hypervisor family runs; aliases as Nova's VMMode.canonicalize.
VM_MODES: dict[str, frozenset[str]] = {
    "qemu": frozenset({"hvm"}),
    "xen": frozenset({"xen", "hvm"}),
    "lxc": frozenset({"exe"}),
    "uml": frozenset({"uml"}),
}
VM_MODE_ALIASES: dict[str, str] = {"hv": "hvm", "baremetal": "hvm", "pv": "xen"}

_COMPARE: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
}
_CLAUSE = re.compile(r"(>=|<=|==|!=|>|<|=)?\s*(\d+(?:\.\d+){0,2})")


def canonical_arch(name: str) -> str:
    """``AMD64`` -> ``x86_64``, ``i386`` -> ``i686``, ``arm64`` -> ``aarch64``."""
    lowered = name.strip().lower()
    return ARCH_ALIASES.get(lowered, lowered)


def hv_family(name: str) -> str:
    """``kvm``/``QEMU`` -> ``qemu``, ``xapi`` -> ``xen``; others lower-cased."""
    lowered = name.strip().lower()
    return HV_FAMILIES.get(lowered, lowered)


def version_to_int(text: str) -> int:
    """``8.2.0`` -> 8002000 (libvirt's encoding); a bare integer is taken as already encoded."""
    if "." not in text:
        return int(text)
    parts = [int(p) for p in text.split(".")] + [0, 0]
    return parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]


def parse_version_requirement(text: str) -> list[tuple[str, int]] | None:
    """``">=6.0,<6.2"`` -> ``[(">=", 6000000), ("<", 6002000)]``; ``None`` when malformed.

    A clause without an operator means ``==``; a dotted version has at most three parts.
    """
    clauses: list[tuple[str, int]] = []
    for clause in text.split(","):
        found = _CLAUSE.fullmatch(clause.strip())
        if found is None:
            return None
        clauses.append((found.group(1) or "==", version_to_int(found.group(2))))
    return clauses


def _first(props: Mapping[str, str], *keys: str) -> tuple[str, str] | None:
    """The first of ``keys`` (current name, then legacy name) set to a non-empty value."""
    for key in keys:
        value = props.get(key)
        if value:
            return key, value
    return None


class ImagePropertiesFilter(HostFilter):
    """Pass hosts that can run the image, judged from its properties (Nova's filter).

    ======================================  ==============================================
    image property (legacy name)            host field
    ======================================  ==============================================
    ``hw_architecture`` (``architecture``)  ``cpu_arch`` (aliases: amd64, i386, arm64, ...)
    ``img_hv_type`` (``hypervisor_type``)   ``hypervisor_type`` or any of ``virt_types``,
                                            case-insensitive; qemu and kvm are one family
    ``hw_vm_mode`` (``vm_mode``)            the ABIs of the host's hypervisor family
                                            (qemu/kvm run ``hvm`` only)
    ``img_hv_requested_version``            ``hypervisor_version``: clauses like
    (``hypervisor_version_requires``)       ``>=6000000`` or ``>=6.0,<6.2``
    ``hw_virt_type`` (``virt_type``)        ``virt_types`` (libvirt domain types: to demand
                                            real KVM rather than TCG, ask for ``kvm``)
    ======================================  ==============================================

    A property the host cannot be checked against (the field is not reported) rejects it, and
    so does a version requirement that cannot be parsed. With no such properties every host
    passes. ``image_properties_default_architecture`` applies when the image names none.
    """

    name = "ImagePropertiesFilter"
    session_kind = "static"
    run_filter_once_per_request = True

    def __init__(self, *, image_properties_default_architecture: str | None = None) -> None:
        self.default_architecture = image_properties_default_architecture

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return bool(spec.image_properties) or bool(self.default_architecture)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Check architecture, hypervisor type, vm mode, version and virt type in turn."""
        props = spec.image_properties
        for check in (
            self._architecture,
            self._hypervisor_type,
            self._vm_mode,
            self._version,
            self._virt_type,
        ):
            verdict = check(host, props)
            if not verdict.passed:
                return verdict
        return PASS

    def _architecture(self, host: HostState, props: Mapping[str, str]) -> FilterResult:
        found = _first(props, "hw_architecture", "architecture")
        if found is None and self.default_architecture:
            found = ("default hw_architecture", self.default_architecture)
        if found is None:
            return PASS
        key, wanted = found
        if host.cpu_arch is None:
            return FilterResult(False, f"image {key}={wanted!r}: host does not report cpu_arch")
        if canonical_arch(wanted) == canonical_arch(host.cpu_arch):
            return PASS
        return FilterResult(False, f"image {key}={wanted!r}: host cpu_arch is {host.cpu_arch!r}")

    @staticmethod
    def _host_families(host: HostState) -> set[str]:
        names = {*host.virt_types, *([host.hypervisor_type] if host.hypervisor_type else [])}
        return {hv_family(n) for n in names}

    def _hypervisor_type(self, host: HostState, props: Mapping[str, str]) -> FilterResult:
        found = _first(props, "img_hv_type", "hypervisor_type")
        if found is None:
            return PASS
        key, wanted = found
        families = self._host_families(host)
        if hv_family(wanted) in families:
            return PASS
        have = ", ".join(sorted(families)) or "nothing"
        return FilterResult(False, f"image {key}={wanted!r}: host hypervisor is {have}")

    def _vm_mode(self, host: HostState, props: Mapping[str, str]) -> FilterResult:
        found = _first(props, "hw_vm_mode", "vm_mode")
        if found is None:
            return PASS
        key, wanted = found
        mode = VM_MODE_ALIASES.get(wanted.lower(), wanted.lower())
        modes = {m for f in self._host_families(host) for m in VM_MODES.get(f, frozenset())}
        if mode in modes:
            return PASS
        have = ", ".join(sorted(modes)) or "no known vm mode"
        return FilterResult(False, f"image {key}={wanted!r}: host runs {have}")

    def _version(self, host: HostState, props: Mapping[str, str]) -> FilterResult:
        found = _first(props, "img_hv_requested_version", "hypervisor_version_requires")
        if found is None:
            return PASS
        key, wanted = found
        clauses = parse_version_requirement(wanted)
        if clauses is None:
            return FilterResult(
                False, f"image {key}={wanted!r}: not understood (expected e.g. '>=6000000')"
            )
        version = host.hypervisor_version
        if version is None:
            return FilterResult(
                False, f"image {key}={wanted!r}: host does not report hypervisor_version"
            )
        failed = [f"{op}{want}" for op, want in clauses if not _COMPARE[op](version, want)]
        if failed:
            return FilterResult(
                False,
                f"image {key}={wanted!r}: host hypervisor_version {version} fails "
                f"{','.join(failed)}",
            )
        return PASS

    def _virt_type(self, host: HostState, props: Mapping[str, str]) -> FilterResult:
        found = _first(props, "hw_virt_type", "virt_type")
        if found is None:
            return PASS
        key, wanted = found
        have = {v.lower() for v in host.virt_types}
        if wanted.lower() in have:
            return PASS
        listed = ", ".join(sorted(have)) or "none reported"
        return FilterResult(False, f"image {key}={wanted!r}: host virt_types are {listed}")
