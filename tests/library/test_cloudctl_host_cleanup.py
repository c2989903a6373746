"""Tests of library/cloudctl_host_cleanup.py (unit; the triad through playbooks/cleanup_files.yml)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import libvirt
import pytest
import yaml

from tests.library import test_module_docs
from tests.library.helpers import LIBVIRT_URI, REPO, PlayRunner, tiny_domain_xml
from tests.library.test_cloudctl_host_facts import qemu_overlay

DAY = 86400


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_host_cleanup")


def _sha(tag: str) -> str:
    return hashlib.sha256(f"{tag}-{uuid.uuid4()}".encode()).hexdigest()


def make_base(instances_path: Path, tag: str, age_s: float = 0) -> str:
    """A raw file in ``_base`` last modified ``age_s`` seconds ago; returns its name."""
    name = _sha(tag)
    path = instances_path / "_base" / name
    with path.open("wb") as handle:
        handle.truncate(64 * 1024)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return name


def make_guest_dir(instances_path: Path, name: str, base: str | None = None) -> Path:
    """``<instances_path>/<name>/`` with a console log and, given a base, an overlay on it."""
    path = instances_path / name
    path.mkdir()
    (path / "console.log").write_text("booted\n")
    if base:
        qemu_overlay(path / "disk", str(instances_path / "_base" / base))
    return path


# --- unit -------------------------------------------------------------------------------


def test_documentation_matches_argument_spec(load_module: Callable[[str], ModuleType]) -> None:
    test_module_docs.test_documentation_matches_argument_spec(load_module, "cloudctl_host_cleanup")
    test_module_docs.test_modules_do_not_import_the_cloudctl_package("cloudctl_host_cleanup")


def test_instance_dir_path(mod: ModuleType) -> None:
    u = str(uuid.uuid4())
    assert mod.instance_dir_path("/i/", u, "instance") == f"/i/{u}"
    assert mod.instance_dir_path("/i", u, "resize") == f"/i/{u}_resize"
    with pytest.raises(ValueError, match="invalid uuid"):
        mod.instance_dir_path("/i", "../etc", "instance")
    with pytest.raises(ValueError, match="invalid kind"):
        mod.instance_dir_path("/i", u, "base")


def test_plan_base_file(mod: ModuleType, instances_path: Path) -> None:
    from ansible.module_utils.cloudctl_common import GuestError

    used, young, old = (
        make_base(instances_path, t, a) for t, a in [("u", DAY), ("y", 10), ("o", DAY)]
    )
    overlay = str(instances_path / "x" / "disk")
    backings = [(overlay, f"/other/host/_base/{used}")]
    now, base = time.time(), instances_path / "_base"

    def plan(name: str) -> Any:
        return mod.plan_base_file(str(instances_path), name, backings, now, 3600)

    item = plan(used)
    assert (item.remove, item.kept, item.reason) == (False, True, f"in use by {overlay}")
    item = plan(young)
    assert (item.remove, item.kept) == (False, True)
    assert item.reason == young_reason(instances_path / "_base" / young)
    item = plan(old)
    assert (item.path, item.remove, item.reason) == (str(base / old), True, None)
    assert item.result() == {
        "path": str(base / old),
        "kind": "base",
        "changed": True,
        "removed": True,
    }
    item = plan(_sha("absent"))
    assert (item.remove, item.kept, item.reason) == (False, False, "absent")
    assert item.result()["reason"] == "absent"

    (base / (directory := _sha("dir"))).mkdir()
    with pytest.raises(GuestError, match="is a directory"):
        plan(directory)
    with pytest.raises(ValueError, match="invalid image checksum"):
        plan("../../etc/passwd")
    assert (base / old).exists()  # planning removes nothing


def test_plan_instance_dir_on_the_test_driver(mod: ModuleType, instances_path: Path) -> None:
    from ansible.module_utils.cloudctl_common import GuestError

    conn = libvirt.open("test:///default")
    try:
        defined = conn.lookupByName("test").UUIDString()
        orphan = str(uuid.uuid4())
        make_guest_dir(instances_path, defined)
        make_guest_dir(instances_path, f"{orphan}_resize")
        with pytest.raises(GuestError, match=r"domain test \(.*\) is defined on this host"):
            mod.plan_instance_dir(conn, str(instances_path), {"uuid": defined, "kind": "instance"})
        item = mod.plan_instance_dir(conn, str(instances_path), {"uuid": orphan, "kind": "resize"})
        assert (item.path, item.kind, item.remove) == (
            str(instances_path / f"{orphan}_resize"),
            "resize",
            True,
        )
        item = mod.plan_instance_dir(
            conn, str(instances_path), {"uuid": orphan, "kind": "instance"}
        )
        assert (item.remove, item.reason) == (False, "absent")
        # absent: not even a defined domain makes that an error
        item = mod.plan_instance_dir(conn, str(instances_path), {"uuid": defined, "kind": "resize"})
        assert (item.remove, item.reason) == (False, "absent")
    finally:
        conn.close()


def test_overlay_backings_skip_and_depth(instances_path: Path) -> None:
    from ansible.module_utils.cloudctl_files import overlay_backings

    base = make_base(instances_path, "b")
    a = make_guest_dir(instances_path, str(uuid.uuid4()), base)
    b = make_guest_dir(instances_path, "other", base)
    (b / "deeper").mkdir()
    qemu_overlay(b / "deeper" / "disk", "/nowhere")
    target = str(instances_path / "_base" / base)
    assert overlay_backings(str(instances_path)) == sorted(
        [(str(a / "disk"), target), (str(b / "disk"), target)]
    )
    assert overlay_backings(str(instances_path), skip=[str(a)]) == [(str(b / "disk"), target)]
    assert overlay_backings(str(instances_path / "missing")) == []


def test_remove_path_never_follows_a_symlink(mod: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    mod.remove_path(str(tmp_path / "link"))
    assert (tmp_path / "real" / "keep").exists() and not (tmp_path / "link").exists()
    mod.remove_path(str(tmp_path / "real"))
    assert not (tmp_path / "real").exists()


# --- the triad through the playbook's task ------------------------------------------------


def cleanup_task(instances_path: Path, per_host: dict[str, Any], check: bool) -> dict[str, Any]:
    """The ``cleanup files`` task of playbooks/cleanup_files.yml with its play's inputs."""
    play = yaml.safe_load((REPO / "playbooks" / "cleanup_files.yml").read_text())
    assert play[0]["hosts"] == "all" and play[0]["gather_facts"] is False
    task = dict(play[0]["tasks"][0])
    assert task["name"] == "cleanup files"
    task["vars"] = {
        "libvirt_uri": LIBVIRT_URI,
        "instances_path": str(instances_path),
        "cloudctl_cleanup": {"localhost": per_host},
        "cloudctl_base_min_age_s": 3600,
    }
    task["ignore_errors"] = True
    if check:
        task["check_mode"] = True
    return task


@pytest.mark.integration
def test_cleanup_triad(
    ansible_play: PlayRunner,
    libvirt_conn: Any,
    domain_names: Callable[[], str],
    instances_path: Path,
) -> None:
    in_use, young, old, freed = (
        make_base(instances_path, tag, age)
        for tag, age in [("in-use", 2 * DAY), ("young", 60), ("old", 2 * DAY), ("freed", 2 * DAY)]
    )
    orphan, stash, defined, live, gone = (str(uuid.uuid4()) for _ in range(5))
    orphan_dir = make_guest_dir(instances_path, orphan, freed)  # its removal frees "freed"
    stash_dir = make_guest_dir(instances_path, f"{stash}_resize")
    defined_dir = make_guest_dir(instances_path, defined)
    make_guest_dir(instances_path, live, in_use)  # not asked for: keeps "in-use" in use
    libvirt_conn.defineXML(tiny_domain_xml(domain_names(), domain_uuid=defined))

    base = instances_path / "_base"
    per_host = {
        "instance_dirs": [
            {"uuid": orphan, "kind": "instance"},
            {"uuid": stash, "kind": "resize"},
            {"uuid": defined, "kind": "instance"},
            {"uuid": gone, "kind": "instance"},
        ],
        "base_files": [in_use, young, old, freed, _sha("absent")],
    }
    first, real, second = ansible_play(
        [
            cleanup_task(instances_path, per_host, check=True),
            cleanup_task(instances_path, per_host, check=False),
            cleanup_task(instances_path, per_host, check=True),
        ]
    )

    removed = [str(orphan_dir), str(stash_dir), str(base / old), str(base / freed)]
    kept = [
        {"path": str(base / in_use), "reason": f"in use by {instances_path / live / 'disk'}"},
        {"path": str(base / young), "reason": young_reason(base / young)},
    ]
    for result in (first, real):
        assert result["failed"] is True and result["changed"] is True
        assert result["failed_guests"] == [str(defined_dir)]
        assert "is defined on this host" in result["msg"]
        assert result["removed"] == removed
        assert result["kept"] == kept
        assert [(r["kind"], r["removed"], r.get("reason")) for r in result["results"]] == [
            ("instance", True, None),
            ("resize", True, None),
            ("instance", False, None),
            ("instance", False, "absent"),
            ("base", False, kept[0]["reason"]),
            ("base", False, kept[1]["reason"]),
            ("base", True, None),
            ("base", True, None),
            ("base", False, "absent"),
        ]
        assert result["results"][2]["failed"] is True
    assert first["diff"] == real["diff"]
    (diff,) = real["diff"]  # the requested paths that exist, but for the refused one
    assert diff["before"].splitlines() == sorted([*removed, str(base / in_use), str(base / young)])
    assert diff["after"].splitlines() == sorted([str(base / in_use), str(base / young)])

    assert not any(Path(p).exists() for p in removed)
    assert (defined_dir / "console.log").exists()
    assert (base / in_use).exists() and (base / young).exists()
    assert (instances_path / live / "disk").exists()

    assert second["changed"] is False and second["removed"] == [] and not second["diff"]
    assert second["failed_guests"] == [str(defined_dir)]
    assert second["kept"] == kept
    assert all(r["changed"] is False for r in second["results"])


def young_reason(path: Path, min_age_s: int = 3600) -> str:
    return f"too young: mtime {int(path.stat().st_mtime)} is less than {min_age_s} s ago"


@pytest.mark.integration
def test_cleanup_playbook_without_inputs_does_nothing(
    ansible_play: PlayRunner, instances_path: Path
) -> None:
    task = cleanup_task(instances_path, {}, check=False)
    del task["vars"]["cloudctl_cleanup"]
    (result,) = ansible_play([task])
    assert result["failed"] is False and result["changed"] is False
    assert (result["results"], result["removed"], result["kept"]) == ([], [], [])
