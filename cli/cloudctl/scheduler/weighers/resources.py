"""Resource weighers: spread (positive multiplier) or pack (negative) by free capacity."""

from __future__ import annotations

from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.weighers import HostWeigher


class RAMWeigher(HostWeigher):
    """Prefer hosts with more free RAM (Nova's default weigher)."""

    name = "RAMWeigher"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """Free RAM in MiB."""
        return host.free_ram_mb
