"""Soft server-group policies: prefer (or avoid) the hosts already holding the group's members."""

from __future__ import annotations

from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.weighers import HostWeigher


def _members(host: HostState, spec: RequestSpec, policy: str) -> float:
    group = spec.group
    if group is None or group.policy != policy:
        return 0.0
    return float(group.members_per_host.get(host.name, 0))


class ServerGroupSoftAffinityWeigher(HostWeigher):
    """``soft-affinity``: prefer hosts with more members of the group (Nova's multiplier 1.0)."""

    name = "ServerGroupSoftAffinityWeigher"

    def applies(self, spec: RequestSpec) -> bool:
        """Only for a group with this policy; otherwise every host scores the same."""
        return spec.group is not None and spec.group.policy == "soft-affinity"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """The group's members on the host (0 for other policies)."""
        return _members(host, spec, "soft-affinity")


class ServerGroupSoftAntiAffinityWeigher(HostWeigher):
    """``soft-anti-affinity``: prefer hosts with fewer members of the group (Nova's 1.0)."""

    name = "ServerGroupSoftAntiAffinityWeigher"

    def applies(self, spec: RequestSpec) -> bool:
        """Only for a group with this policy; otherwise every host scores the same."""
        return spec.group is not None and spec.group.policy == "soft-anti-affinity"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """Minus the group's members on the host (0 for other policies)."""
        return -_members(host, spec, "soft-anti-affinity")
