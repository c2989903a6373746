"""Server groups, quotas and scheduler hints in the boot flow (fake executor)."""

from __future__ import annotations

import pytest

from cloudctl.errors import AlreadyExists, InUse, InvalidInput, NotFound, QuotaExceeded
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, quotas, server_groups
from cloudctl.services.compute import BootRequest
from cloudctl.services.context import Context


def boot(ctx: Context, name: str, **kw: object) -> dict[str, object]:
    [view] = compute.boot(ctx, BootRequest(name=name, flavor="small", image="tiny", **kw))  # type: ignore[arg-type]
    return view


@pytest.mark.parametrize(
    ("policy", "max_per_host", "error"),
    [
        ("sideways", None, InvalidInput),
        ("affinity", 2, InvalidInput),
        ("anti-affinity", 0, InvalidInput),
    ],
)
def test_group_create_refuses_bad_policies(
    cloud: Context, policy: str, max_per_host: int | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        server_groups.create_group(cloud, "g", policy, max_per_host)


def test_group_lifecycle_members_and_hosts(cloud: Context) -> None:
    g = server_groups.create_group(cloud, "web", "anti-affinity", 2)
    assert (g["policy"], g["max_per_host"], g["members"]) == ("anti-affinity", 2, [])
    with pytest.raises(AlreadyExists):
        server_groups.create_group(cloud, "web", "affinity")
    compute.boot(cloud, BootRequest(name="w", flavor="small", image="tiny", count=2, group="web"))
    shown = server_groups.show_group(cloud, "web")
    assert shown["members"] == ["w-1", "w-2"] and shown["hosts"]
    with pytest.raises(InUse):
        server_groups.delete_group(cloud, "web")
    compute.delete(cloud, ["w-1", "w-2"])
    server_groups.delete_group(cloud, "web")
    assert server_groups.list_groups(cloud) == []
    with pytest.raises(NotFound):
        boot(cloud, "x", group="web")


def test_request_spec_is_kept_for_reschedules(cloud: Context) -> None:
    server_groups.create_group(cloud, "g", "soft-affinity")
    view = boot(cloud, "a", group="g", availability_zone="nova")
    with cloud.db.unit_of_work() as s:
        inst = compute.get_instance(s, "default", "a")
        assert inst.request_spec is not None
        assert inst.request_spec["availability_zone"] == "nova"
        assert inst.request_spec["group"] == server_groups.get_group(s, "default", "g").uuid
    assert view["status"] == "ACTIVE"


def test_hints_resolve_instances_to_hosts(cloud: Context, fake: FakeExecutor) -> None:
    first = boot(cloud, "first")
    same = boot(cloud, "same", hints={"same_host": "first"})
    assert same["host"] == first["host"]
    with pytest.raises(InvalidInput, match="unknown scheduler hint"):
        boot(cloud, "bad", hints={"near": "first"})
    with pytest.raises(NotFound):
        boot(cloud, "bad", hints={"same_host": "ghost"})


def test_quota_show_set_and_enforce_with_count(cloud: Context) -> None:
    rows = {r["resource"]: r for r in quotas.show(cloud)}
    assert (rows["instances"]["limit"], rows["instances"]["in_use"]) == (10, 0)
    quotas.set_limits(cloud, {"instances": 2})
    boot(cloud, "one")
    with pytest.raises(QuotaExceeded, match="instances: requested 2, in use 1, limit 2"):
        compute.boot(cloud, BootRequest(name="two", flavor="small", image="tiny", count=2))
    quotas.set_limits(cloud, {"instances": -1, "cores": 1})
    with pytest.raises(QuotaExceeded, match="cores"):
        boot(cloud, "three")
    with pytest.raises(InvalidInput):
        quotas.set_limits(cloud, {"instances": -5})
    with pytest.raises(InvalidInput):
        quotas.set_limits(cloud, {"gpus": 1})


def test_min_count_boots_what_fits_and_writes_nothing_for_the_rest(cloud: Context) -> None:
    from cloudctl.services import flavors

    flavors.create_flavor(cloud, "wide", vcpus=1, memory_mb=2048, root_gb=1)  # h1 fits 2, h2 fits 1
    with pytest.raises(InvalidInput, match=r"min count must be 1\.\.5"):
        compute.boot(
            cloud, BootRequest(name="w", flavor="wide", image="tiny", count=5, min_count=6)
        )
    views = compute.boot(
        cloud, BootRequest(name="w", flavor="wide", image="tiny", count=5, min_count=2)
    )
    assert [v["name"] for v in views] == ["w-1", "w-2", "w-3"]
    assert [i["name"] for i in compute.list_instances(cloud)] == ["w-1", "w-2", "w-3"]
