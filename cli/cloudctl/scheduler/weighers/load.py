"""How busy or unreliable the host is: instance count, builds in flight, recent build failures.

cloudctl's sign convention: higher raw is better, so these return a negated count and a
positive multiplier prefers the quieter host (Nova returns the count and uses -1.0 instead).
"""

from __future__ import annotations

from cloudctl.scheduler.host_state import HostState, RequestSpec
from cloudctl.scheduler.weighers import HostWeigher


class NumInstancesWeigher(HostWeigher):
    """Prefer hosts running fewer instances; a negative multiplier packs instead.

    Nova ships this weigher disabled (num_instances_weight_multiplier 0.0); cloudctl enables it
    at 1.0 so that small flavors spread even when RAM differences are small.
    """

    name = "NumInstancesWeigher"
    session_kind = "host"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """Minus the number of instances on the host."""
        return -float(host.num_instances)


class IoOpsWeigher(HostWeigher):
    """Prefer hosts with fewer builds in flight (Nova's io_ops_weight_multiplier -1.0 on +count)."""

    name = "IoOpsWeigher"
    session_kind = "host"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """Minus the number of concurrent builds on the host."""
        return -float(host.num_io_ops)


class BuildFailureWeigher(HostWeigher):
    """Avoid hosts whose recent builds failed (Nova's build_failure_weight_multiplier 1000000).

    The huge multiplier makes one failure outweigh every other weigher, as in Nova; the services
    reset ``failed_builds`` after a successful build.
    """

    name = "BuildFailureWeigher"
    session_kind = "host"
    default_multiplier = 1_000_000.0

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """Minus the host's recent build failures."""
        return -float(host.failed_builds)
