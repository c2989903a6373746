"""ComputeFilter: the host is enabled and its heartbeat is recent."""

from __future__ import annotations

from cloudctl.scheduler.filters import PASS, FilterResult, HostFilter
from cloudctl.scheduler.host_state import HostState, RequestSpec


class ComputeFilter(HostFilter):
    """Pass hosts that are enabled and up (heartbeat within service_down_time)."""

    name = "ComputeFilter"
    session_kind = "static"

    def static_key(self, spec: RequestSpec) -> object:
        """The verdict reads nothing of the request."""
        return None

    run_filter_once_per_request = True

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Reject disabled hosts and hosts whose heartbeat is too old."""
        if not host.enabled:
            reason = f": {host.disabled_reason}" if host.disabled_reason else ""
            return FilterResult(False, f"host is disabled{reason}")
        if not host.is_up:
            return FilterResult(False, "host is down (no heartbeat within service_down_time)")
        return PASS
