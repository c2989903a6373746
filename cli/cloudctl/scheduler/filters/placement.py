"""Where the request may go: availability zone and forced host."""

from __future__ import annotations

from cloudctl.scheduler.filters import PASS, FilterResult, HostFilter
from cloudctl.scheduler.host_state import HostState, RequestSpec


class AvailabilityZoneFilter(HostFilter):
    """Pass hosts in the requested availability zone (any host when none is requested)."""

    name = "AvailabilityZoneFilter"
    session_kind = "static"

    def static_key(self, spec: RequestSpec) -> object:
        """Only the requested zone."""
        return spec.availability_zone

    run_filter_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return spec.availability_zone is not None

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Compare the host's AZ with the requested one."""
        if spec.availability_zone is None or spec.availability_zone == host.availability_zone:
            return PASS
        return FilterResult(
            False, f"az: host is in {host.availability_zone!r}, not {spec.availability_zone!r}"
        )


class ForcedHostFilter(HostFilter):
    """With ``--az AZ:HOST`` only that host passes (still capacity-checked by the others)."""

    name = "ForcedHostFilter"
    session_kind = "static"

    def static_key(self, spec: RequestSpec) -> object:
        """Only the forced host."""
        return spec.force_host

    run_filter_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return spec.force_host is not None

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Compare the host's name with the forced one."""
        if spec.force_host is None or spec.force_host == host.name:
            return PASS
        return FilterResult(False, f"forced host is {spec.force_host!r}")


class IgnoreHostsFilter(HostFilter):
    """Skip hosts a reschedule must avoid (earlier failed attempts)."""

    name = "IgnoreHostsFilter"
    session_kind = "static"

    def static_key(self, spec: RequestSpec) -> object:
        """Only the hosts to skip."""
        return spec.ignore_hosts

    run_filter_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return bool(spec.ignore_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Reject hosts listed in ``spec.ignore_hosts``."""
        if host.name in spec.ignore_hosts:
            return FilterResult(False, "host already failed this request")
        return PASS
