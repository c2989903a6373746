"""How busy the host is: instance count and concurrent builds (Nova's io_ops)."""

from __future__ import annotations

from cloudctl.scheduler.filters import PASS, Bound, FilterResult, HostFilter
from cloudctl.scheduler.host_state import HostState, RequestSpec


class NumInstancesFilter(HostFilter):
    """Pass hosts running fewer than ``max_instances_per_host`` instances (default 50, as Nova).

    Not once per request: each pick of a multi-create adds one instance to its host.
    """

    name = "NumInstancesFilter"
    session_kind = "usage"

    def __init__(self, *, max_instances_per_host: int = 50) -> None:
        self.max_instances_per_host = max_instances_per_host

    def bound(self, spec: RequestSpec) -> Bound:
        """``num_instances < max_instances_per_host``."""
        return ("num_instances", "lt", self.max_instances_per_host)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Compare the host's instance count with the limit."""
        if host.num_instances < self.max_instances_per_host:
            return PASS
        return FilterResult(
            False,
            f"num_instances: host runs {host.num_instances}, "
            f"max_instances_per_host {self.max_instances_per_host}",
        )


class IoOpsFilter(HostFilter):
    """Pass hosts with fewer than ``max_io_ops_per_host`` builds in flight (default 8, as Nova).

    ``HostState.num_io_ops`` counts instances building (and, for the services that fill it,
    resizing, migrating or snapshotting) on the host; each pick adds one.
    """

    name = "IoOpsFilter"
    session_kind = "usage"

    def __init__(self, *, max_io_ops_per_host: int = 8) -> None:
        self.max_io_ops_per_host = max_io_ops_per_host

    def bound(self, spec: RequestSpec) -> Bound:
        """``num_io_ops < max_io_ops_per_host``."""
        return ("num_io_ops", "lt", self.max_io_ops_per_host)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Compare the host's concurrent builds with the limit."""
        if host.num_io_ops < self.max_io_ops_per_host:
            return PASS
        return FilterResult(
            False,
            f"io_ops: {host.num_io_ops} build(s) in progress, "
            f"max_io_ops_per_host {self.max_io_ops_per_host}",
        )
