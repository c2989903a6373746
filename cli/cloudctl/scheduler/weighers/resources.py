"""Resource weighers: spread (positive multiplier) or pack (negative) by free capacity."""

from __future__ import annotations

from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.weighers import HostWeigher


class RAMWeigher(HostWeigher):
    """Prefer hosts with more free RAM (Nova's default weigher; ram_weight_multiplier 1.0)."""

    name = "RAMWeigher"
    session_kind = "host"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """Free RAM in MiB."""
        return host.free_ram_mb


class CPUWeigher(HostWeigher):
    """Prefer hosts with more free vCPUs (Nova's cpu_weight_multiplier 1.0)."""

    name = "CPUWeigher"
    session_kind = "host"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """Free vCPUs after the allocation ratio."""
        return host.free_vcpus


class DiskWeigher(HostWeigher):
    """Prefer hosts with more free disk (Nova's disk_weight_multiplier 1.0)."""

    name = "DiskWeigher"
    session_kind = "host"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """Free disk in GiB after the allocation ratio."""
        return host.free_disk_gb
