"""RAM, vCPU and disk filters against the ledger, with allocation ratios and reserved resources."""

from __future__ import annotations

from cloudctl.scheduler.filters import PASS, Bound, FilterResult, HostFilter
from cloudctl.scheduler.host_state import HostState, RequestSpec


class RamFilter(HostFilter):
    """Pass hosts with enough RAM left after ``ram_allocation_ratio`` and reserved memory."""

    name = "RamFilter"
    session_kind = "usage"

    def bound(self, spec: RequestSpec) -> Bound:
        """``free_ram_mb >= memory_mb``, as :meth:`host_passes` compares."""
        return ("free_ram_mb", "ge", spec.memory_mb)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Compare requested MiB with the free MiB."""
        if spec.memory_mb <= host.free_ram_mb:
            return PASS
        return FilterResult(
            False,
            f"ram: needs {spec.memory_mb} MiB, {host.free_ram_mb:g} free after ratio "
            f"{host.ram_allocation_ratio:g} ({host.memory_mb_total} total, "
            f"{host.reserved_memory_mb} reserved, {host.memory_mb_used} used)",
        )


class CoreFilter(HostFilter):
    """Pass hosts with enough vCPUs left after ``cpu_allocation_ratio`` and reserved CPUs."""

    name = "CoreFilter"
    session_kind = "usage"

    def bound(self, spec: RequestSpec) -> Bound:
        """``free_vcpus >= vcpus``, as :meth:`host_passes` compares."""
        return ("free_vcpus", "ge", spec.vcpus)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Compare requested vCPUs with the free vCPUs."""
        if spec.vcpus <= host.free_vcpus:
            return PASS
        return FilterResult(
            False,
            f"vcpu: needs {spec.vcpus}, {host.free_vcpus:g} free after ratio "
            f"{host.cpu_allocation_ratio:g} ({host.vcpus_total} total, "
            f"{host.reserved_cpus} reserved, {host.vcpus_used} used)",
        )


class DiskFilter(HostFilter):
    """Pass hosts with enough disk left after ``disk_allocation_ratio`` and reserved disk."""

    name = "DiskFilter"
    session_kind = "usage"

    def bound(self, spec: RequestSpec) -> Bound:
        """``free_disk_gb >= disk_gb``, as :meth:`host_passes` compares."""
        return ("free_disk_gb", "ge", spec.disk_gb)

    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Compare requested GiB with the free GiB."""
        if spec.disk_gb <= host.free_disk_gb:
            return PASS
        return FilterResult(
            False,
            f"disk: needs {spec.disk_gb} GiB, {host.free_disk_gb:g} free after ratio "
            f"{host.disk_allocation_ratio:g} ({host.disk_gb_total} total, "
            f"{host.reserved_disk_gb} reserved, {host.disk_gb_used} used)",
        )
