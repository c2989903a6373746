"""What the scheduler knows of a host and of a request (Nova's HostState and RequestSpec)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GroupState:
    """A server group as one request sees it; ``members_per_host`` grows as instances are placed.

    Nova updates ``spec_obj.instance_group.hosts`` between the picks of a multi-create likewise.
    """

    name: str
    policy: str  # affinity | anti-affinity | soft-affinity | soft-anti-affinity
    max_server_per_host: int | None = None
    members_per_host: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class RequestSpec:
    """One instance's needs; ``num_instances`` copies are placed one after another."""

    vcpus: int
    memory_mb: int
    disk_gb: int
    availability_zone: str | None = None
    force_host: str | None = None
    num_instances: int = 1
    flavor_name: str = ""
    flavor_extra_specs: Mapping[str, str] = field(default_factory=dict)
    image_properties: Mapping[str, str] = field(default_factory=dict)
    ignore_hosts: frozenset[str] = frozenset()
    group: GroupState | None = None
    #: Scheduler hints: hosts of the named instances (same_host / different_host).
    same_host: frozenset[str] = frozenset()
    different_host: frozenset[str] = frozenset()


ClassKey = tuple[object, ...]


def class_key(spec: RequestSpec) -> ClassKey:
    """What decides which plugins apply and what static filters pass: all but group state.

    The group's policy is part of the class (it decides which group filters and weighers
    apply); its members are read afresh for every pick.
    """
    return (
        spec.group.policy if spec.group is not None else None,
        spec.vcpus,
        spec.memory_mb,
        spec.disk_gb,
        spec.availability_zone,
        spec.force_host,
        spec.flavor_name,
        tuple(sorted(spec.flavor_extra_specs.items())),
        tuple(sorted(spec.image_properties.items())),
        spec.ignore_hosts,
        spec.same_host,
        spec.different_host,
    )


#: RequestSpec fields :func:`class_key` leaves out or keeps only in part (a test keeps this honest).
CLASS_KEY_EXCLUDES = frozenset({"group", "num_instances"})


@dataclass
class HostState:
    """A host's capacity and usage as the ledger sees it; mutated by :meth:`consume`."""

    name: str
    uuid: str
    availability_zone: str
    enabled: bool
    is_up: bool
    vcpus_total: int
    memory_mb_total: int
    disk_gb_total: int
    disabled_reason: str | None = None
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_cpus: int = 0
    reserved_memory_mb: int = 0
    reserved_disk_gb: int = 0
    vcpus_used: int = 0
    memory_mb_used: int = 0
    disk_gb_used: int = 0
    num_instances: int = 0
    labels: Mapping[str, Any] = field(default_factory=dict)
    generation: int = 0
    hypervisor_type: str | None = None
    hypervisor_version: int | None = None
    virt_types: frozenset[str] = frozenset()
    cpu_arch: str | None = None
    cpu_model: str | None = None
    cpu_features: frozenset[str] = frozenset()
    #: Instances building on the host right now (Nova's num_io_ops, for max concurrent builds).
    num_io_ops: int = 0
    #: Recent build failures (the BuildFailureWeigher's input).
    failed_builds: int = 0

    @property
    def vcpus_limit(self) -> float:
        """Schedulable vCPUs after the allocation ratio and reserved CPUs."""
        return self.vcpus_total * self.cpu_allocation_ratio - self.reserved_cpus

    @property
    def memory_mb_limit(self) -> float:
        """Schedulable RAM (MiB) after the allocation ratio and reserved memory."""
        return self.memory_mb_total * self.ram_allocation_ratio - self.reserved_memory_mb

    @property
    def disk_gb_limit(self) -> float:
        """Schedulable disk (GiB) after the allocation ratio and reserved disk."""
        return self.disk_gb_total * self.disk_allocation_ratio - self.reserved_disk_gb

    @property
    def free_vcpus(self) -> float:
        """vCPUs still free for claims."""
        return self.vcpus_limit - self.vcpus_used

    @property
    def free_ram_mb(self) -> float:
        """RAM (MiB) still free for claims."""
        return self.memory_mb_limit - self.memory_mb_used

    @property
    def free_disk_gb(self) -> float:
        """Disk (GiB) still free for claims."""
        return self.disk_gb_limit - self.disk_gb_used

    def consume(self, spec: RequestSpec) -> None:
        """Account for one instance of ``spec`` placed here, so the next pick sees it."""
        self.vcpus_used += spec.vcpus
        self.memory_mb_used += spec.memory_mb
        self.disk_gb_used += spec.disk_gb
        self.num_instances += 1
        self.num_io_ops += 1
