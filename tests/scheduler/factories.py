"""Host and request factories for the scheduler's table-driven tests."""

from __future__ import annotations

from typing import Any

from cloudctl.scheduler.host_state import HostState


def host(name: str = "h1", **kw: Any) -> HostState:
    """An enabled, up host in az1 with 4 vCPUs, 4 GiB and 100 GiB; ``kw`` overrides any field."""
    base: dict[str, Any] = {
        "name": name,
        "uuid": name,
        "availability_zone": "az1",
        "enabled": True,
        "is_up": True,
        "vcpus_total": 4,
        "memory_mb_total": 4096,
        "disk_gb_total": 100,
    }
    base.update(kw)
    return HostState(**base)
