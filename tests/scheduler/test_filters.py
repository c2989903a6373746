"""Every filter from a table: host, request -> pass, or reject with the reason's numbers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from cloudctl.errors import NoValidHost
from cloudctl.scheduler.filters import HostFilter
from cloudctl.scheduler.filters.affinity import (
    DifferentHostFilter,
    SameHostFilter,
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from cloudctl.scheduler.filters.aggregate import AggregateInstanceExtraSpecsFilter, label_values
from cloudctl.scheduler.filters.capabilities import ComputeCapabilitiesFilter, required_features
from cloudctl.scheduler.filters.compute import ComputeFilter
from cloudctl.scheduler.filters.extra_specs import matches
from cloudctl.scheduler.filters.image import (
    ImagePropertiesFilter,
    parse_version_requirement,
    version_to_int,
)
from cloudctl.scheduler.filters.load import IoOpsFilter, NumInstancesFilter
from cloudctl.scheduler.filters.placement import (
    AvailabilityZoneFilter,
    ForcedHostFilter,
    IgnoreHostsFilter,
)
from cloudctl.scheduler.filters.resources import CoreFilter, DiskFilter, RamFilter
from cloudctl.scheduler.host_state import GroupState, HostState, RequestSpec
from cloudctl.scheduler.pipeline import FilterScheduler
from cloudctl.scheduler.registry import (
    BUILTIN_FILTERS,
    DEFAULT_FILTERS,
    load_filters,
    load_weighers,
)
from tests.scheduler.factories import host


def spec(**kw: Any) -> RequestSpec:
    base: dict[str, Any] = {"vcpus": 1, "memory_mb": 512, "disk_gb": 10}
    base.update(kw)
    return RequestSpec(**base)


def group(
    policy: str, members: dict[str, int] | None = None, limit: int | None = None
) -> GroupState:
    return GroupState("web", policy, limit, Counter(members or {}))


KVM_HOST: dict[str, Any] = {
    "cpu_arch": "x86_64",
    "cpu_model": "Skylake-Client-IBRS",
    "cpu_features": frozenset({"avx2", "aes", "sse4.2", "vmx"}),
    "hypervisor_type": "QEMU",
    "hypervisor_version": 8_002_000,
    "virt_types": frozenset({"qemu", "kvm"}),
}
TCG_HOST: dict[str, Any] = {**KVM_HOST, "virt_types": frozenset({"qemu"})}

# (id, filter, host, spec, passes, reason substring when rejected)
Row = tuple[str, HostFilter, HostState, RequestSpec, bool, str]

ROWS: list[Row] = [
    # ComputeFilter
    ("compute up", ComputeFilter(), host(), spec(), True, ""),
    (
        "compute disabled",
        ComputeFilter(),
        host(enabled=False, disabled_reason="maint"),
        spec(),
        False,
        "host is disabled: maint",
    ),
    ("compute down", ComputeFilter(), host(is_up=False), spec(), False, "host is down"),
    # RamFilter / CoreFilter / DiskFilter
    ("ram fits", RamFilter(), host(memory_mb_used=3072), spec(memory_mb=1024), True, ""),
    (
        "ram short",
        RamFilter(),
        host(memory_mb_used=3072, reserved_memory_mb=512),
        spec(memory_mb=1024),
        False,
        "ram: needs 1024 MiB, 512 free after ratio 1 (4096 total, 512 reserved, 3072 used)",
    ),
    (
        "ram ratio",
        RamFilter(),
        host(ram_allocation_ratio=1.5, memory_mb_used=4096),
        spec(memory_mb=2048),
        True,
        "",
    ),
    ("core fits by ratio", CoreFilter(), host(vcpus_used=15), spec(vcpus=1), True, ""),
    (
        "core short",
        CoreFilter(),
        host(vcpus_used=15),
        spec(vcpus=2),
        False,
        "vcpu: needs 2, 1 free after ratio 4 (4 total, 0 reserved, 15 used)",
    ),
    ("disk fits", DiskFilter(), host(disk_gb_used=90), spec(disk_gb=10), True, ""),
    (
        "disk short",
        DiskFilter(),
        host(disk_gb_used=95),
        spec(disk_gb=10),
        False,
        "disk: needs 10 GiB, 5 free after ratio 1",
    ),
    # AvailabilityZoneFilter / ForcedHostFilter / IgnoreHostsFilter
    ("az any", AvailabilityZoneFilter(), host(), spec(), True, ""),
    ("az same", AvailabilityZoneFilter(), host(), spec(availability_zone="az1"), True, ""),
    (
        "az other",
        AvailabilityZoneFilter(),
        host(),
        spec(availability_zone="az2"),
        False,
        "az: host is in 'az1', not 'az2'",
    ),
    ("forced this", ForcedHostFilter(), host("a"), spec(force_host="a"), True, ""),
    (
        "forced other",
        ForcedHostFilter(),
        host("a"),
        spec(force_host="b"),
        False,
        "forced host is 'b'",
    ),
    ("ignore other", IgnoreHostsFilter(), host("a"), spec(ignore_hosts=frozenset({"b"})), True, ""),
    (
        "ignore this",
        IgnoreHostsFilter(),
        host("a"),
        spec(ignore_hosts=frozenset({"a"})),
        False,
        "already failed",
    ),
    # AggregateInstanceExtraSpecsFilter
    ("agg no specs", AggregateInstanceExtraSpecsFilter(), host(), spec(), True, ""),
    (
        "agg equal",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"disk": "ssd"}),
        spec(flavor_extra_specs={"aggregate_instance_extra_specs:disk": "ssd"}),
        True,
        "",
    ),
    (
        "agg unscoped key",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"disk": "ssd"}),
        spec(flavor_extra_specs={"disk": "ssd"}),
        True,
        "",
    ),
    (
        "agg other scopes ignored",
        AggregateInstanceExtraSpecsFilter(),
        host(),
        spec(flavor_extra_specs={"hw:cpu_policy": "dedicated", "capabilities:x": "y"}),
        True,
        "",
    ),
    (
        "agg comma list label",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"disk": "hdd, ssd"}),
        spec(flavor_extra_specs={"aggregate_instance_extra_specs:disk": "ssd"}),
        True,
        "",
    ),
    (
        "agg yaml list and bool",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"disk": ["hdd", "ssd"], "gpu": True}),
        spec(
            flavor_extra_specs={
                "aggregate_instance_extra_specs:disk": "ssd",
                "aggregate_instance_extra_specs:gpu": "true",
            }
        ),
        True,
        "",
    ),
    (
        "agg <in>",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"cpu": "intel-xeon-gold"}),
        spec(flavor_extra_specs={"aggregate_instance_extra_specs:cpu": "<in> xeon"}),
        True,
        "",
    ),
    (
        "agg <or>",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"tier": "gold"}),
        spec(flavor_extra_specs={"aggregate_instance_extra_specs:tier": "<or> silver <or> gold"}),
        True,
        "",
    ),
    (
        "agg numeric",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"nics": 4}),
        spec(flavor_extra_specs={"aggregate_instance_extra_specs:nics": ">= 2"}),
        True,
        "",
    ),
    (
        "agg mismatch",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"disk": "hdd"}),
        spec(flavor_extra_specs={"aggregate_instance_extra_specs:disk": "ssd"}),
        False,
        "host label disk='hdd' does not match",
    ),
    (
        "agg <or> mismatch",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={"tier": "bronze"}),
        spec(flavor_extra_specs={"aggregate_instance_extra_specs:tier": "<or> silver <or> gold"}),
        False,
        "tier='bronze' does not match",
    ),
    (
        "agg missing label",
        AggregateInstanceExtraSpecsFilter(),
        host(labels={}),
        spec(flavor_extra_specs={"aggregate_instance_extra_specs:disk": "ssd"}),
        False,
        "host has no label 'disk'",
    ),
    # ImagePropertiesFilter
    ("image no props", ImagePropertiesFilter(), host(), spec(), True, ""),
    (
        "image all match",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(
            image_properties={
                "hw_architecture": "x86_64",
                "img_hv_type": "kvm",
                "hw_vm_mode": "hvm",
                "img_hv_requested_version": ">=8.0,<9.0",
                "hw_virt_type": "kvm",
            }
        ),
        True,
        "",
    ),
    (
        "image arch alias amd64",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"architecture": "AMD64"}),
        True,
        "",
    ),
    (
        "image arch mismatch",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"hw_architecture": "aarch64"}),
        False,
        "image hw_architecture='aarch64': host cpu_arch is 'x86_64'",
    ),
    (
        "image arch unreported",
        ImagePropertiesFilter(),
        host(),
        spec(image_properties={"hw_architecture": "x86_64"}),
        False,
        "host does not report cpu_arch",
    ),
    (
        "image default arch",
        ImagePropertiesFilter(image_properties_default_architecture="aarch64"),
        host(**KVM_HOST),
        spec(),
        False,
        "image default hw_architecture='aarch64': host cpu_arch is 'x86_64'",
    ),
    (
        "image hv qemu on QEMU host",
        ImagePropertiesFilter(),
        host(**TCG_HOST),
        spec(image_properties={"img_hv_type": "qemu"}),
        True,
        "",
    ),
    (
        "image hv legacy kvm on QEMU host",
        ImagePropertiesFilter(),
        host(**TCG_HOST),
        spec(image_properties={"hypervisor_type": "KVM"}),
        True,
        "",
    ),
    (
        "image hv mismatch",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"img_hv_type": "hyperv"}),
        False,
        "img_hv_type='hyperv': host hypervisor is qemu",
    ),
    (
        "image vm mode alias hv",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"vm_mode": "HV"}),
        True,
        "",
    ),
    (
        "image vm mode xen on kvm",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"hw_vm_mode": "xen"}),
        False,
        "hw_vm_mode='xen': host runs hvm",
    ),
    (
        "image version int",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"img_hv_requested_version": ">=6000000"}),
        True,
        "",
    ),
    (
        "image version too old",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"img_hv_requested_version": ">=9.1"}),
        False,
        "host hypervisor_version 8002000 fails >=9001000",
    ),
    (
        "image version legacy key upper bound",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"hypervisor_version_requires": ">=6.0, <8.2"}),
        False,
        "fails <8002000",
    ),
    (
        "image version garbage",
        ImagePropertiesFilter(),
        host(**KVM_HOST),
        spec(image_properties={"img_hv_requested_version": "newest"}),
        False,
        "not understood",
    ),
    (
        "image version unreported",
        ImagePropertiesFilter(),
        host(),
        spec(image_properties={"img_hv_requested_version": ">=1"}),
        False,
        "host does not report hypervisor_version",
    ),
    (
        "image virt kvm on tcg host",
        ImagePropertiesFilter(),
        host(**TCG_HOST),
        spec(image_properties={"virt_type": "kvm"}),
        False,
        "virt_type='kvm': host virt_types are qemu",
    ),
    # ComputeCapabilitiesFilter
    ("caps no specs", ComputeCapabilitiesFilter(), host(), spec(), True, ""),
    (
        "caps all match",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(
            flavor_extra_specs={
                "capabilities:cpu_info:model": "<in> Skylake",
                "capabilities:cpu_info:features": "<all-in> avx2 aes",
                "capabilities:hypervisor_type": "s== qemu",
                "capabilities:cpu_info:arch": "X86_64",
                "capabilities:hypervisor_version": ">= 8000000",
                "hw:cpu_policy": "dedicated",
                "aggregate_instance_extra_specs:ssd": "true",
            }
        ),
        True,
        "",
    ),
    (
        "caps unscoped hypervisor_type",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"hypervisor_type": "QEMU", "ssd": "true"}),
        True,
        "",
    ),
    (
        "caps features comma list",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"capabilities:cpu_info:features": "AVX2,vmx"}),
        True,
        "",
    ),
    (
        "caps features missing",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"capabilities:cpu_info:features": "<all-in> avx2 avx512f sha-ni"}),
        False,
        "host lacks avx512f, sha-ni (4 cpu features reported)",
    ),
    (
        "caps model mismatch",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"capabilities:cpu_info:model": "Icelake-Server"}),
        False,
        "host has 'Skylake-Client-IBRS', flavor requires 'Icelake-Server'",
    ),
    (
        "caps version too old",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"capabilities:hypervisor_version": ">= 9000000"}),
        False,
        "host has '8002000', flavor requires '>= 9000000'",
    ),
    (
        "caps version at most",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"capabilities:hypervisor_version": "<= 8002000"}),
        True,
        "",
    ),
    (
        "caps version exact",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"capabilities:hypervisor_version": "== 8002000"}),
        True,
        "",
    ),
    (
        "caps arch mismatch",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"capabilities:cpu_info:arch": "aarch64"}),
        False,
        "capabilities:cpu_info:arch: host has 'x86_64'",
    ),
    (
        "caps unreported",
        ComputeCapabilitiesFilter(),
        host(),
        spec(flavor_extra_specs={"capabilities:hypervisor_type": "QEMU"}),
        False,
        "host does not report hypervisor_type",
    ),
    (
        "caps unknown key",
        ComputeCapabilitiesFilter(),
        host(**KVM_HOST),
        spec(flavor_extra_specs={"capabilities:gpu_count": ">= 1"}),
        False,
        "unknown capability 'gpu_count'",
    ),
    # ServerGroupAffinityFilter
    ("affinity no group", ServerGroupAffinityFilter(), host("b"), spec(), True, ""),
    (
        "affinity empty group",
        ServerGroupAffinityFilter(),
        host("b"),
        spec(group=group("affinity")),
        True,
        "",
    ),
    (
        "affinity member host",
        ServerGroupAffinityFilter(),
        host("a"),
        spec(group=group("affinity", {"a": 2})),
        True,
        "",
    ),
    (
        "affinity other host",
        ServerGroupAffinityFilter(),
        host("b"),
        spec(group=group("affinity", {"a": 2, "c": 0})),
        False,
        "affinity: group 'web' has its members on a",
    ),
    (
        "affinity ignores soft policy",
        ServerGroupAffinityFilter(),
        host("b"),
        spec(group=group("soft-affinity", {"a": 1})),
        True,
        "",
    ),
    # ServerGroupAntiAffinityFilter
    (
        "anti-affinity empty host",
        ServerGroupAntiAffinityFilter(),
        host("b"),
        spec(group=group("anti-affinity", {"a": 1})),
        True,
        "",
    ),
    (
        "anti-affinity occupied host",
        ServerGroupAntiAffinityFilter(),
        host("a"),
        spec(group=group("anti-affinity", {"a": 1})),
        False,
        "group 'web' has 1 member(s) here, max_server_per_host 1",
    ),
    (
        "anti-affinity under limit",
        ServerGroupAntiAffinityFilter(),
        host("a"),
        spec(group=group("anti-affinity", {"a": 1}, limit=2)),
        True,
        "",
    ),
    (
        "anti-affinity at limit",
        ServerGroupAntiAffinityFilter(),
        host("a"),
        spec(group=group("anti-affinity", {"a": 2}, limit=2)),
        False,
        "has 2 member(s) here, max_server_per_host 2",
    ),
    (
        "anti-affinity ignores soft policy",
        ServerGroupAntiAffinityFilter(),
        host("a"),
        spec(group=group("soft-anti-affinity", {"a": 3})),
        True,
        "",
    ),
    # SameHostFilter / DifferentHostFilter
    ("same_host no hint", SameHostFilter(), host("a"), spec(), True, ""),
    ("same_host listed", SameHostFilter(), host("a"), spec(same_host=frozenset({"a"})), True, ""),
    (
        "same_host other",
        SameHostFilter(),
        host("c"),
        spec(same_host=frozenset({"b", "a"})),
        False,
        "same_host: the named instances are on a, b",
    ),
    ("different_host no hint", DifferentHostFilter(), host("a"), spec(), True, ""),
    (
        "different_host other",
        DifferentHostFilter(),
        host("b"),
        spec(different_host=frozenset({"a"})),
        True,
        "",
    ),
    (
        "different_host listed",
        DifferentHostFilter(),
        host("a"),
        spec(different_host=frozenset({"a"})),
        False,
        "different_host: a named instance runs on this host",
    ),
    # NumInstancesFilter / IoOpsFilter
    ("num_instances default", NumInstancesFilter(), host(num_instances=49), spec(), True, ""),
    (
        "num_instances default full",
        NumInstancesFilter(),
        host(num_instances=50),
        spec(),
        False,
        "num_instances: host runs 50, max_instances_per_host 50",
    ),
    (
        "num_instances configured",
        NumInstancesFilter(max_instances_per_host=2),
        host(num_instances=2),
        spec(),
        False,
        "host runs 2, max_instances_per_host 2",
    ),
    ("io_ops default", IoOpsFilter(), host(num_io_ops=7), spec(), True, ""),
    (
        "io_ops default full",
        IoOpsFilter(),
        host(num_io_ops=8),
        spec(),
        False,
        "io_ops: 8 build(s) in progress, max_io_ops_per_host 8",
    ),
    (
        "io_ops configured",
        IoOpsFilter(max_io_ops_per_host=1),
        host(num_io_ops=1),
        spec(),
        False,
        "max_io_ops_per_host 1",
    ),
]


@pytest.mark.parametrize(
    ("label", "flt", "h", "s", "passes", "needle"), ROWS, ids=[r[0] for r in ROWS]
)
def test_filter(
    label: str, flt: HostFilter, h: HostState, s: RequestSpec, passes: bool, needle: str
) -> None:
    verdict = flt.host_passes(h, s)
    assert verdict.passed is passes, verdict.reason
    if passes:
        assert verdict.reason == ""
    else:
        assert needle in verdict.reason


def test_every_filter_has_rows() -> None:
    covered = {type(r[1]).__name__ for r in ROWS}
    assert covered == set(BUILTIN_FILTERS)
    for name in BUILTIN_FILTERS:
        outcomes = {r[4] for r in ROWS if type(r[1]).__name__ == name}
        assert outcomes == {True, False}, name


ONCE_PER_REQUEST = {
    "ComputeFilter": True,
    "AvailabilityZoneFilter": True,
    "ForcedHostFilter": True,
    "IgnoreHostsFilter": True,
    "ImagePropertiesFilter": True,
    "ComputeCapabilitiesFilter": True,
    "AggregateInstanceExtraSpecsFilter": True,
    "SameHostFilter": True,
    "DifferentHostFilter": True,
    # These see state that grows between the picks of one multi-create.
    "RamFilter": False,
    "CoreFilter": False,
    "DiskFilter": False,
    "ServerGroupAffinityFilter": False,
    "ServerGroupAntiAffinityFilter": False,
    "NumInstancesFilter": False,
    "IoOpsFilter": False,
}


def test_run_filter_once_per_request_only_where_the_verdict_cannot_change() -> None:
    assert {n: c.run_filter_once_per_request for n, c in BUILTIN_FILTERS.items()} == (
        ONCE_PER_REQUEST
    )


def test_group_verdicts_follow_members_added_between_picks() -> None:
    anti = group("anti-affinity")
    aff = group("affinity")
    a, b = host("a"), host("b")
    assert ServerGroupAntiAffinityFilter().host_passes(a, spec(group=anti)).passed
    anti.members_per_host["a"] += 1  # what the pipeline does after picking "a"
    assert not ServerGroupAntiAffinityFilter().host_passes(a, spec(group=anti)).passed
    assert ServerGroupAffinityFilter().host_passes(b, spec(group=aff)).passed
    aff.members_per_host["a"] += 1
    assert not ServerGroupAffinityFilter().host_passes(b, spec(group=aff)).passed


MATCHES: list[tuple[str | None, str, bool]] = [
    ("ssd", "ssd", True),
    ("ssd", "SSD", False),
    ("4", "= 4", True),
    ("8", "= 4", True),
    ("2", "= 4", False),
    ("4", "== 4.0", True),
    ("4", "!= 4", False),
    ("4", ">= 5", False),
    ("4", "<= 5", True),
    ("four", ">= 1", False),
    ("abc", "s== abc", True),
    ("abc", "s!= abc", False),
    ("abc", "s< abd", True),
    ("abc", "s<= abc", True),
    ("abd", "s> abc", True),
    ("abc", "s>= abd", False),
    ("intel-xeon", "<in> xeon", True),
    ("intel-xeon", "<in> epyc", False),
    ("avx2 aes sse", "<all-in> aes avx2", True),
    ("avx2 sse", "<all-in> aes avx2", False),
    ("b", "<or> a <or> b <or> c", True),
    ("d", "<or> a <or> b", False),
    (None, "<in> x", False),
    ("x", "<in>", False),
]


@pytest.mark.parametrize(("value", "requirement", "expected"), MATCHES)
def test_extra_spec_operators(value: str | None, requirement: str, expected: bool) -> None:
    assert matches(value, requirement) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, []),
        ("ssd", ["ssd"]),
        ("hdd, ssd,", ["hdd", "ssd"]),
        (["a", "b,c"], ["a", "b", "c"]),
        (True, ["true"]),
        (3, ["3"]),
    ],
)
def test_label_values(raw: Any, expected: list[str]) -> None:
    assert label_values(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<all-in> avx2 aes", ["avx2", "aes"]),
        ("<in> AVX2", ["avx2"]),
        ("avx2, aes", ["avx2", "aes"]),
    ],
)
def test_required_features(text: str, expected: list[str]) -> None:
    assert required_features(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (">=6000000", [(">=", 6_000_000)]),
        (">=6.0,<6.2", [(">=", 6_000_000), ("<", 6_002_000)]),
        ("8.2.1", [("==", 8_002_001)]),
        ("> 1.2.3.4", None),
        ("~=6", None),
    ],
)
def test_parse_version_requirement(text: str, expected: list[tuple[str, int]] | None) -> None:
    assert parse_version_requirement(text) == expected


def test_version_to_int() -> None:
    assert version_to_int("6") == 6
    assert version_to_int("6.1") == 6_001_000


@pytest.mark.parametrize(
    ("policy", "count", "expected"),
    [
        ("anti-affinity", 3, ["a", "b", "c"]),
        ("anti-affinity", 4, None),
        ("affinity", 3, ["a", "a", "a"]),
    ],
)
def test_group_filters_through_a_multi_create(
    policy: str, count: int, expected: list[str] | None
) -> None:
    sched = FilterScheduler(load_filters(DEFAULT_FILTERS), load_weighers({"RAMWeigher": 1.0}))
    hosts = [host(n) for n in "abc"]
    request = spec(num_instances=count, group=group(policy))
    if expected is None:
        with pytest.raises(NoValidHost, match="ServerGroupAntiAffinityFilter removed 3"):
            sched.select(hosts, request)
    else:
        assert [p.host.name for p in sched.select(hosts, request)] == expected
