"""ComputeCapabilitiesFilter: the flavor's ``capabilities:*`` extra specs against the host."""

from __future__ import annotations

import re
from collections.abc import Callable

from cloudctl.scheduler.filters import PASS, FilterResult, HostFilter
from cloudctl.scheduler.filters.extra_specs import matches
from cloudctl.scheduler.host_state import HostState, RequestSpec

SCOPE = "capabilities"
FEATURES = "cpu_info:features"


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None


def _version(host: HostState) -> str | None:
    return None if host.hypervisor_version is None else str(host.hypervisor_version)


#: Capability -> (host value, compare case-insensitively). Nova walks any HostState attribute;
#: cloudctl names the ones it fills so that a typo is reported instead of silently matching.
CAPABILITIES: dict[str, tuple[Callable[[HostState], str | None], bool]] = {
    "hypervisor_type": (lambda h: h.hypervisor_type, True),
    "hypervisor_version": (_version, False),
    "cpu_info:arch": (lambda h: h.cpu_arch, True),
    "cpu_info:model": (lambda h: h.cpu_model, False),
}


def required_features(requirement: str) -> list[str]:
    """The CPU flags a ``cpu_info:features`` spec asks for.

    Accepts ``<all-in> avx2 aes``, ``<in> avx2``, ``avx2,aes`` and ``avx2 aes``; all are required.
    """
    words = [w.lower() for w in re.split(r"[,\s]+", requirement) if w]
    if words and words[0] in ("<all-in>", "<in>"):
        words = words[1:]
    return words


class ComputeCapabilitiesFilter(HostFilter):
    """Pass hosts whose reported capabilities satisfy the flavor's ``capabilities:*`` specs.

    Known capabilities (keys may also be written without the ``capabilities:`` scope, as in
    Nova; unscoped keys that are not capabilities are ignored):

    - ``hypervisor_type`` (case-insensitive, e.g. ``QEMU``), ``cpu_info:arch``
      (case-insensitive), ``cpu_info:model``: text, any operator of
      :mod:`cloudctl.scheduler.filters.extra_specs` (``s==``, ``<in>``, ``<or>``, ...);
    - ``hypervisor_version``: libvirt's integer (major * 1000000 + minor * 1000 + micro),
      with numeric operators, e.g. ``>= 8002000``;
    - ``cpu_info:features``: every listed CPU flag must be in the host's ``cpu_features``.

    An unknown ``capabilities:`` key, or one the host does not report, rejects the host.
    """

    name = "ComputeCapabilitiesFilter"
    session_kind = "static"
    run_filter_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return any(
            (k.partition(":")[0] == SCOPE) if ":" in k else (k in CAPABILITIES or k == FEATURES)
            for k in spec.flavor_extra_specs
        )

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Check every capability extra spec against the host."""
        for key, requirement in spec.flavor_extra_specs.items():
            scope, sep, cap = key.partition(":")
            if not sep:
                cap = key
                if cap not in CAPABILITIES and cap != FEATURES:
                    continue
            elif scope != SCOPE:
                continue
            verdict = self._check(host, key, cap, requirement)
            if not verdict.passed:
                return verdict
        return PASS

    @staticmethod
    def _check(host: HostState, key: str, cap: str, requirement: str) -> FilterResult:
        if cap == FEATURES:
            wanted = required_features(requirement)
            have = {f.lower() for f in host.cpu_features}
            missing = [f for f in wanted if f not in have]
            if missing:
                return FilterResult(
                    False,
                    f"{key}: host lacks {', '.join(missing)} ({len(have)} cpu features reported)",
                )
            return PASS
        if cap not in CAPABILITIES:
            known = ", ".join(sorted([*CAPABILITIES, FEATURES]))
            return FilterResult(False, f"{key}: unknown capability {cap!r} (known: {known})")
        getter, fold = CAPABILITIES[cap]
        value = getter(host)
        if value is None:
            return FilterResult(False, f"{key}: host does not report {cap}")
        req = requirement.lower() if fold else requirement
        if matches(_lower(value) if fold else value, req):
            return PASS
        return FilterResult(False, f"{key}: host has {value!r}, flavor requires {requirement!r}")
