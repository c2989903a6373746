"""Where the request's siblings are: server-group (anti-)affinity and same/different host hints."""

from __future__ import annotations

from cloudctl.scheduler.filters import PASS, FilterResult, HostFilter
from cloudctl.scheduler.host_state import HostState, RequestSpec


class ServerGroupAffinityFilter(HostFilter):
    """Hard ``affinity``: once the group has members, only the hosts holding them pass.

    The first member of an empty group may go anywhere. Not once per request: the pipeline
    adds each pick to ``GroupState.members_per_host``, which narrows the next pick.
    """

    name = "ServerGroupAffinityFilter"
    session_kind = "group"

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return spec.group is not None and spec.group.policy == "affinity"

    def group_hosts(self, spec: RequestSpec) -> tuple[frozenset[str] | None, frozenset[str]]:
        """Only the hosts holding members may pass, once there are any."""
        group = spec.group
        if group is None or group.policy != "affinity":
            return None, frozenset()
        occupied = frozenset(h for h, n in group.members_per_host.items() if n > 0)
        return (occupied or None), frozenset()

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Pass any host for an empty group, else only hosts with members."""
        group = spec.group
        if group is None or group.policy != "affinity":
            return PASS
        occupied = sorted(h for h, n in group.members_per_host.items() if n > 0)
        if not occupied or host.name in occupied:
            return PASS
        return FilterResult(
            False, f"affinity: group {group.name!r} has its members on {', '.join(occupied)}"
        )


class ServerGroupAntiAffinityFilter(HostFilter):
    """Hard ``anti-affinity``: a host passes while it holds fewer than max_server_per_host members.

    ``max_server_per_host`` is the group's rule (default 1, as Nova). Not once per request: the
    members grow between the picks of one multi-create.
    """

    name = "ServerGroupAntiAffinityFilter"
    session_kind = "group"

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return spec.group is not None and spec.group.policy == "anti-affinity"

    def group_hosts(self, spec: RequestSpec) -> tuple[frozenset[str] | None, frozenset[str]]:
        """The hosts already holding ``max_server_per_host`` members fail; the others pass."""
        group = spec.group
        if group is None or group.policy != "anti-affinity":
            return None, frozenset()
        limit = group.max_server_per_host or 1
        return None, frozenset(h for h, n in group.members_per_host.items() if n >= limit)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Compare the group's members on this host with the group's limit."""
        group = spec.group
        if group is None or group.policy != "anti-affinity":
            return PASS
        limit = group.max_server_per_host or 1
        here = group.members_per_host.get(host.name, 0)
        if here < limit:
            return PASS
        return FilterResult(
            False,
            f"anti-affinity: group {group.name!r} has {here} member(s) here, "
            f"max_server_per_host {limit}",
        )


class SameHostFilter(HostFilter):
    """Scheduler hint ``same_host``: only the hosts of the named instances pass."""

    name = "SameHostFilter"
    session_kind = "static"

    def static_key(self, spec: RequestSpec) -> object:
        """Only the hint's hosts."""
        return spec.same_host

    run_filter_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return bool(spec.same_host)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Pass every host without the hint, else only the listed hosts."""
        if not spec.same_host or host.name in spec.same_host:
            return PASS
        hosts = ", ".join(sorted(spec.same_host))
        return FilterResult(False, f"same_host: the named instances are on {hosts}")


class DifferentHostFilter(HostFilter):
    """Scheduler hint ``different_host``: the hosts of the named instances are rejected."""

    name = "DifferentHostFilter"
    session_kind = "static"

    def static_key(self, spec: RequestSpec) -> object:
        """Only the hint's hosts."""
        return spec.different_host

    run_filter_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        """Only when the request has something for this filter to check."""
        return bool(spec.different_host)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Reject the listed hosts."""
        if host.name in spec.different_host:
            return FilterResult(False, "different_host: a named instance runs on this host")
        return PASS
