"""Snapshots and images from snapshots over the fake executor: rows, actions, states, failures."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudctl.db.models import Image, Snapshot
from cloudctl.domain.states import TaskState, VmState
from cloudctl.errors import (
    AlreadyExists,
    ExecutorError,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
)
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, images
from cloudctl.services.compute import BootRequest
from cloudctl.services.compute import snapshot as snapshots
from cloudctl.services.compute.common import by_uuid, domain_spec
from cloudctl.services.context import Context
from tests.services.conftest import add_image
from tests.services.lifecycle import another, faults, row


class Host:
    """A fake host's snapshots, answering snapshot.yml and snapshot_export.yml as the module
    would: kinds, overlays, the domain state after each request."""

    def __init__(self) -> None:
        self.snaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.domain_state = "running"
        #: snapshot name -> (msg, changed) to fail with
        self.failures: dict[str, tuple[str, bool]] = {}
        self.exported: list[dict[str, Any]] = []

    def entry(self, g: dict[str, Any]) -> dict[str, Any]:
        key = (g["domain"], g["name"])
        if g["name"] in self.failures:
            msg, changed = self.failures[g["name"]]
            return {"domain": g["domain"], "name": g["name"], "failed": True, "msg": msg,
                    "changed": changed}  # fmt: skip
        state = g.get("state", "present")
        if state == "present":
            kind = "external" if g.get("disk_only") else "internal"
            self.snaps.setdefault(
                key,
                {
                    "kind": kind,
                    "file": f"/i/{g['domain']}/disk.snap-{g['name']}"
                    if kind == "external"
                    else None,
                    "snapshot_state": self.domain_state if kind == "internal" else "disk-snapshot",
                    "created": 1795000000,
                    "size": 1234,
                },
            )
        elif state == "absent":
            self.snaps.pop(key, None)
        elif state == "reverted":
            snap = self.snaps[key]
            self.domain_state = snap["snapshot_state"] if snap["kind"] == "internal" else "running"
        elif state == "exported":
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", g["dest"], str(64 * 1024**2)],
                check=True,
            )
            self.exported.append(g)
        snap = self.snaps.get(key)
        out = {"domain": g["domain"], "name": g["name"], "changed": True,
               "state": "present" if snap else "absent", "domain_state": self.domain_state}  # fmt: skip
        out.update(snap or {})
        return out

    def answer(self, req: RunRequest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for var, task in (("cloudctl_snapshots", "snapshot"), ("cloudctl_exports", "export")):
            for host, entries in req.extravars.get(var, {}).items():
                results = [self.entry(g) for g in entries]
                result: dict[str, Any] = {"changed": True, "results": results}
                if any(r.get("failed") for r in results):
                    result["failed"] = True
                    result["msg"] = "; ".join(r["msg"] for r in results if r.get("failed"))
                out.setdefault(host, {})[task] = result
        return out


@pytest.fixture
def host(cloud: Context, fake: FakeExecutor) -> Host:
    h = Host()
    fake.on("snapshot.yml", h.answer)
    fake.on("snapshot_export.yml", h.answer)
    return h


@pytest.fixture
def web(cloud: Context, host: Host) -> str:
    [view] = compute.boot(cloud, BootRequest(name="web", flavor="small", image="tiny"))
    return str(view["uuid"])


def rows(ctx: Context, deleted: bool = False) -> list[tuple[str, str, str]]:
    return [(s["name"], s["kind"], s["status"]) for s in snapshots.list_snapshots(ctx, "web", include_deleted=deleted)]  # fmt: skip


def events(ctx: Context) -> list[tuple[str, str, str | None]]:
    return [
        (a["action"], e["event"], e["result"])
        for a in compute.action_list(ctx, "web")[1:]
        for e in a["events"]
    ]


# --- create -------------------------------------------------------------------------------------


def test_create_internal_records_row_action_and_states(
    cloud: Context, fake: FakeExecutor, host: Host, web: str
) -> None:
    view = snapshots.create_snapshot(cloud, "web", "s1", description="before <upgrade>")
    assert (view["kind"], view["status"], view["state"], view["size"]) == (
        "internal",
        "available",
        "running",
        1234,
    )
    assert (view["host"], view["file"], view["description"]) == ("h1", None, "before <upgrade>")
    req = fake.requests[-1]
    assert (req.playbook, [h.name for h in req.hosts]) == ("snapshot.yml", ["h1"])
    assert req.extravars["cloudctl_snapshots"]["h1"] == [
        {
            "domain": f"instance-{web}",
            "name": "s1",
            "state": "present",
            "disk_only": False,
            "quiesce": False,
            "description": "before <upgrade>",
        }
    ]
    assert rows(cloud) == [("s1", "internal", "available")]
    assert events(cloud) == [("snapshot", "snapshot_create", "Success")]
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state, inst.power_state) == ("active", None, 1)


def test_the_task_state_is_set_while_the_play_runs(
    cloud: Context, fake: FakeExecutor, host: Host, web: str
) -> None:
    seen: list[str | None] = []

    def answer(req: RunRequest) -> dict[str, Any]:
        seen.append(row(cloud, "web").task_state)
        with pytest.raises(InvalidState, match="image_snapshot"):
            compute.power(another(cloud), ["web"], "stop")
        return host.answer(req)

    fake.on("snapshot.yml", answer)
    snapshots.create_snapshot(cloud, "web", "s1")
    assert seen == [TaskState.IMAGE_SNAPSHOT]
    assert row(cloud, "web").task_state is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"snap": "a b"}, InvalidInput, "snapshot name"),
        ({"snap": "../x"}, InvalidInput, "snapshot name"),
        ({"snap": "ok", "description": "two\nlines"}, InvalidInput, "one line"),
        ({"snap": "s1"}, AlreadyExists, "web/s1"),
        ({"snap": "d1", "disk_only": True}, InvalidInput, "are not mixed"),
    ],
)
def test_create_refusals_run_nothing(
    cloud: Context,
    fake: FakeExecutor,
    host: Host,
    web: str,
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    snapshots.create_snapshot(cloud, "web", "s1")
    runs = len(fake.requests)
    with pytest.raises(error, match=match):
        snapshots.create_snapshot(cloud, "web", **kwargs)
    assert len(fake.requests) == runs
    assert row(cloud, "web").task_state is None


@pytest.mark.ledger_edited  # forces vm_state BUILDING on a guest that holds its claim
def test_quiesce_needs_a_running_instance(cloud: Context, host: Host, web: str) -> None:
    with cloud.db.unit_of_work() as s:
        by_uuid(s, web).vm_state = VmState.STOPPED
    with pytest.raises(InvalidInput, match="--quiesce needs a running instance"):
        snapshots.create_snapshot(cloud, "web", "q1", quiesce=True)
    with cloud.db.unit_of_work() as s:
        by_uuid(s, web).vm_state = VmState.BUILDING
    with pytest.raises(InvalidState, match="cannot snapshot instance web"):
        snapshots.create_snapshot(cloud, "web", "s1")


def test_a_guest_agent_that_does_not_answer_leaves_nothing(
    cloud: Context, host: Host, web: str
) -> None:
    host.failures["q1"] = (
        "guest agent is not responding: QEMU guest agent is not configured",
        False,
    )
    with pytest.raises(OperationFailed) as caught:
        snapshots.create_snapshot(cloud, "web", "q1", quiesce=True, disk_only=True)
    assert str(caught.value) == (
        "snapshot of instance 'web' failed: guest agent is not responding: "
        "QEMU guest agent is not configured"
    )
    assert rows(cloud) == []
    assert rows(cloud, deleted=True) == [("q1", "external", "error")]
    inst = row(cloud, "web")
    assert (inst.vm_state, inst.task_state) == ("active", None)
    assert events(cloud) == [("snapshot", "snapshot_create", "Error")]
    assert faults(cloud, "web")[-1].startswith("snapshot failed: guest agent is not responding")
    # the name is free again
    host.failures.clear()
    assert snapshots.create_snapshot(cloud, "web", "q1")["status"] == "available"


def test_an_unknown_outcome_keeps_an_error_row_to_delete(
    cloud: Context, fake: FakeExecutor, host: Host, web: str
) -> None:
    fake.fail("snapshot.yml", host="h1", task="snapshot", unreachable=True, msg="ssh down")
    with pytest.raises(OperationFailed, match="ssh down"):
        snapshots.create_snapshot(cloud, "web", "s1")
    assert rows(cloud) == [("s1", "internal", "error")]
    assert row(cloud, "web").task_state is None

    fake = FakeExecutor()  # a run that raises: same story
    cloud._executor = fake
    fake.on("snapshot.yml", lambda req: (_ for _ in ()).throw(ExecutorError("runner died")))
    with pytest.raises(ExecutorError):
        snapshots.create_snapshot(cloud, "web", "s2")
    assert rows(cloud) == [("s1", "internal", "error"), ("s2", "internal", "error")]
    assert row(cloud, "web").task_state is None
    assert [e[2] for e in events(cloud)] == ["Error", "Error"]


# --- list / revert / delete ---------------------------------------------------------------------


def test_list_is_from_sql_and_not_found_is_clear(cloud: Context, host: Host, web: str) -> None:
    assert snapshots.list_snapshots(cloud, "web") == []
    with pytest.raises(NotFound, match="instance 'nope'"):
        snapshots.list_snapshots(cloud, "nope")
    snapshots.create_snapshot(cloud, "web", "a")
    snapshots.create_snapshot(cloud, "web", "b")
    listed = snapshots.list_snapshots(cloud, web)
    assert [s["name"] for s in listed] == ["a", "b"]
    assert set(listed[0]) >= {"kind", "status", "created_at", "size", "state"}


def test_revert_follows_the_guest_state(
    cloud: Context, fake: FakeExecutor, host: Host, web: str
) -> None:
    host.domain_state = "shutoff"
    with cloud.db.unit_of_work() as s:
        by_uuid(s, web).vm_state = VmState.STOPPED
    snapshots.create_snapshot(cloud, "web", "off")
    host.domain_state = "running"
    with cloud.db.unit_of_work() as s:
        by_uuid(s, web).vm_state = VmState.ACTIVE
    view = snapshots.revert_snapshot(cloud, "web", "off")
    assert (view["vm_state"], view["power_state"], view["task_state"]) == (
        "stopped",
        "SHUTDOWN",
        None,
    )
    assert view["snapshot"]["name"] == "off"
    assert fake.requests[-1].extravars["cloudctl_snapshots"]["h1"] == [
        {"domain": f"instance-{web}", "name": "off", "state": "reverted"}
    ]
    assert events(cloud)[-1] == ("revertSnapshot", "snapshot_revert", "Success")
    with pytest.raises(NotFound, match="snapshot 'web/nope'"):
        snapshots.revert_snapshot(cloud, "web", "nope")


def test_only_the_newest_disk_only_snapshot_is_reverted_to(
    cloud: Context, fake: FakeExecutor, host: Host, web: str
) -> None:
    snapshots.create_snapshot(cloud, "web", "d1", disk_only=True)
    snapshots.create_snapshot(cloud, "web", "d2", disk_only=True)
    runs = len(fake.requests)
    with pytest.raises(InvalidInput, match=r"only the newest disk-only snapshot of web \(d2\)"):
        snapshots.revert_snapshot(cloud, "web", "d1")
    assert len(fake.requests) == runs
    assert snapshots.revert_snapshot(cloud, "web", "d2")["status"] == "ACTIVE"


def test_a_revert_that_failed_half_way_is_an_error(cloud: Context, host: Host, web: str) -> None:
    snapshots.create_snapshot(cloud, "web", "s1")
    host.failures["s1"] = ("cannot revert to snapshot s1: no such file", False)
    with pytest.raises(OperationFailed, match="no such file"):
        snapshots.revert_snapshot(cloud, "web", "s1")
    assert (row(cloud, "web").vm_state, row(cloud, "web").task_state) == ("active", None)
    host.failures["s1"] = ("qemu died while loading the memory state", True)
    with pytest.raises(OperationFailed, match="qemu died"):
        snapshots.revert_snapshot(cloud, "web", "s1")
    assert (row(cloud, "web").vm_state, row(cloud, "web").task_state) == ("error", None)
    assert faults(cloud, "web")[-1].startswith("revertSnapshot failed: qemu died")


def test_delete_newest_first_and_partial_failures(
    cloud: Context, fake: FakeExecutor, host: Host, web: str
) -> None:
    for name in ("d1", "d2", "d3"):
        snapshots.create_snapshot(cloud, "web", name, disk_only=True)
    host.failures["d2"] = ("cannot delete snapshot d2: block commit failed", False)
    with pytest.raises(OperationFailed, match="d2: cannot delete snapshot d2"):
        snapshots.delete_snapshots(cloud, "web", ["d1", "d2", "d3"])
    assert [g["name"] for g in fake.requests[-1].extravars["cloudctl_snapshots"]["h1"]] == [
        "d3",
        "d2",
        "d1",
    ]
    assert rows(cloud) == [("d2", "external", "error")]
    assert row(cloud, "web").task_state is None
    host.failures.clear()
    [gone] = snapshots.delete_snapshots(cloud, "web", ["d2"])
    assert (gone["name"], gone["status"], gone["file"]) == ("d2", "deleted", None)
    assert rows(cloud) == []
    assert [s[2] for s in rows(cloud, deleted=True)] == ["deleted"] * 3
    with pytest.raises(NotFound):
        snapshots.delete_snapshots(cloud, "web", ["d2"])


def test_the_root_disk_follows_the_newest_disk_only_snapshot(
    cloud: Context, host: Host, web: str
) -> None:
    def root() -> str:
        with cloud.db.unit_of_work() as s:
            return domain_spec(s, by_uuid(s, web)).disks[0].path

    disk = f"/var/lib/cloudctl/instances/{web}/disk"
    assert root() == disk
    snapshots.create_snapshot(cloud, "web", "d1", disk_only=True)
    snapshots.create_snapshot(cloud, "web", "d2", disk_only=True)
    assert root() == f"{disk}.snap-d2"
    snapshots.delete_snapshots(cloud, "web", ["d2"])
    assert root() == f"{disk}.snap-d1"
    snapshots.delete_snapshots(cloud, "web", ["d1"])
    assert root() == disk


def test_deleting_the_instance_deletes_its_snapshots(cloud: Context, host: Host, web: str) -> None:
    snapshots.create_snapshot(cloud, "web", "s1")
    snapshots.create_snapshot(cloud, "web", "s2")
    compute.delete(cloud, ["web"])
    with pytest.raises(NotFound):
        snapshots.list_snapshots(cloud, "web")
    assert rows(cloud, deleted=True) == [
        ("s1", "internal", "deleted"),
        ("s2", "internal", "deleted"),
    ]
    with cloud.db.unit_of_work() as s:
        assert all(r.deleted for r in s.scalars(select(Snapshot)))


# --- images from snapshots ----------------------------------------------------------------------


@pytest.fixture
def real_image(cloud: Context, tmp_path: Path) -> None:
    """Replace the fixture's image files by real ones (the new image links them)."""
    for name in ("kernel", "initrd"):
        (tmp_path / name).write_bytes(name.encode())
    with cloud.db.unit_of_work() as s:
        image = s.scalars(select(Image).where(Image.name == "tiny")).one()
        image.kernel_path = str(tmp_path / "kernel")
        image.initrd_path = str(tmp_path / "initrd")


def test_image_from_a_snapshot_boots(
    cloud: Context, fake: FakeExecutor, host: Host, web: str, real_image: None
) -> None:
    snapshots.create_snapshot(cloud, "web", "s1")
    view = snapshots.create_image(cloud, "web", "s1", "web-s1")
    [export] = host.exported
    assert export["dest"].endswith("/disk") and ".partial" in export["dest"]
    assert fake.requests[-1].extravars["cloudctl_fetches"] == {"h1": []}  # a local host
    assert (view["name"], view["disk_format"], view["kernel"], view["initrd"]) == (
        "web-s1",
        "qcow2",
        True,
        True,
    )
    assert view["cmdline"] == "console=ttyS0" and view["min_disk"] == 1
    assert view["properties"]["image_type"] == "snapshot"
    assert view["properties"]["instance_uuid"] == web
    assert view["properties"]["snapshot"] == "s1"
    store = cloud.settings.images_dir / view["id"]
    assert sorted(p.name for p in store.iterdir()) == ["disk", "initrd", "kernel"]
    assert (store / "kernel").read_bytes() == b"kernel"
    assert not list(cloud.settings.images_dir.glob(".*.partial"))
    assert events(cloud)[-1] == ("createImage", "snapshot_export", "Success")
    assert row(cloud, "web").task_state is None

    [booted] = compute.boot(cloud, BootRequest(name="again", flavor="small", image="web-s1"))
    assert booted["status"] == "ACTIVE" and booted["image"] == "web-s1"
    spawn = fake.requests[-1]
    with cloud.db.unit_of_work() as s:
        image = images.get_image(s, "web-s1")
        assert {b["checksum"] for b in spawn.extravars["cloudctl_base_files"][booted["host"]]} == {
            image.checksum,
            "b" * 64,
            "c" * 64,
        }
    with pytest.raises(AlreadyExists, match="web-s1"):
        snapshots.create_image(cloud, "web", "s1", "web-s1")


def test_image_from_an_ssh_host_is_fetched(
    cloud: Context, fake: FakeExecutor, host: Host, web: str, real_image: None
) -> None:
    with cloud.db.unit_of_work() as s:
        by_uuid(s, web).host.connection = "ssh"  # type: ignore[union-attr]
    snapshots.create_snapshot(cloud, "web", "s1")

    def export_then_fetch(req: RunRequest) -> dict[str, Any]:
        [fetch] = req.extravars["cloudctl_fetches"]["h1"]
        [entry] = req.extravars["cloudctl_exports"]["h1"]
        assert entry["dest"] == fetch["src"]
        assert fetch["src"].startswith("/var/lib/cloudctl/instances/_export/")
        entry = {**entry, "dest": fetch["dest"]}  # what fetch does, in one step
        out = host.answer(
            RunRequest(
                playbook=req.playbook,
                hosts=req.hosts,
                extravars={"cloudctl_exports": {"h1": [entry]}},
            )
        )
        out["h1"]["fetch"] = {"changed": True}
        return out

    fake.on("snapshot_export.yml", export_then_fetch)
    assert snapshots.create_image(cloud, "web", "s1", "from-ssh")["disk_format"] == "qcow2"


def test_a_failed_export_registers_nothing(
    cloud: Context, fake: FakeExecutor, host: Host, web: str, real_image: None
) -> None:
    snapshots.create_snapshot(cloud, "web", "s1")
    fake.fail("snapshot_export.yml", host="h1", task="fetch", msg="disk full")
    with pytest.raises(OperationFailed, match="disk full"):
        snapshots.create_image(cloud, "web", "s1", "nope")
    with cloud.db.unit_of_work() as s:
        assert s.scalars(select(Image).where(Image.name == "nope")).first() is None
    assert not list(cloud.settings.images_dir.glob(".*"))
    assert (row(cloud, "web").vm_state, row(cloud, "web").task_state) == ("active", None)
    assert events(cloud)[-1] == ("createImage", "snapshot_export", "Error")
    with pytest.raises(InvalidInput, match="image name"):
        snapshots.create_image(cloud, "web", "s1", "bad name")


def test_images_need_an_available_snapshot(cloud: Context, host: Host, web: str) -> None:
    add_image(cloud, "taken", uuid="22222222-2222-4222-8222-222222222222")
    snapshots.create_snapshot(cloud, "web", "s1")
    with pytest.raises(AlreadyExists, match="taken"):
        snapshots.create_image(cloud, "web", "s1", "taken")
    with pytest.raises(NotFound, match="web/s2"):
        snapshots.create_image(cloud, "web", "s2", "x")
