"""Tests of library/cloudctl_config_drive.py (genisoimage/isoinfo; Ansible for the triads)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.library.helpers import PlayRunner, guest_task

ISOINFO = shutil.which("isoinfo") or "/usr/bin/isoinfo"
GENISOIMAGE = shutil.which("genisoimage") or "/usr/bin/genisoimage"


def _run(argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def iso_files(iso: Path) -> dict[str, str]:
    listing = subprocess.run(
        [ISOINFO, "-R", "-f", "-i", str(iso)], capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        name[1:]: subprocess.run(
            [ISOINFO, "-R", "-x", name, "-i", str(iso)], capture_output=True, text=True, check=True
        ).stdout
        for name in listing
    }


def iso_label(iso: Path) -> str:
    out = subprocess.run(
        [ISOINFO, "-d", "-i", str(iso)], capture_output=True, text=True, check=True
    ).stdout
    return next(
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Volume id:")
    )


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_config_drive")


FILES = {
    "meta-data": "instance-id: i-1\nlocal-hostname: web1\n",
    "user-data": "#cloud-config\nruncmd:\n  - echo héllo\n",
    "network-config": "version: 2\n",
}


# --- unit ----------------------------------------------------------------------------------


def test_content_hash_is_canonical(mod: ModuleType) -> None:
    reordered = dict(reversed(list(FILES.items())))
    assert mod.content_hash(FILES) == mod.content_hash(reordered)
    assert mod.content_hash(FILES) != mod.content_hash({**FILES, "meta-data": "x"})
    # name/content boundaries matter: no collision by moving text between fields
    assert mod.content_hash({"a": "bc"}) != mod.content_hash({"ab": "c"})


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({}, "non-empty mapping"),
        (None, "non-empty mapping"),
        ({"../x": "y"}, "invalid file name"),
        ({"a/b": "y"}, "invalid file name"),
        ({"..": "y"}, "invalid file name"),
        ({"meta-data": {"instance-id": "x"}}, "must be a string"),
    ],
)
def test_validate_files_rejects(mod: ModuleType, files: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        mod.validate_files(files)


def test_converge_guest_build_rebuild_absent(mod: ModuleType, tmp_path: Path) -> None:
    guest = {"uuid": str(uuid.uuid4()), "files": FILES}
    iso = tmp_path / guest["uuid"] / "disk.config"

    def converge(state: str, g: dict[str, Any], check: bool = False) -> tuple[dict[str, Any], Any]:
        return mod.converge_guest(str(tmp_path), state, g, check, True, GENISOIMAGE, ISOINFO, _run)

    result, diff = converge("present", guest, check=True)
    assert result["changed"] and not iso.exists()
    assert diff["before"] == "" and "==> user-data <==" in diff["after"]

    result, _ = converge("present", guest)
    assert result == {
        "uuid": guest["uuid"],
        "changed": True,
        "path": str(iso),
        "sha256": mod.content_hash(FILES),
    }
    assert iso_files(iso) == FILES
    assert iso_label(iso) == "cidata"
    assert (iso.parent / "disk.config.sha256").read_text().strip() == mod.content_hash(FILES)
    assert sorted(p.name for p in iso.parent.iterdir()) == ["disk.config", "disk.config.sha256"]

    assert converge("present", guest)[0]["changed"] is False

    changed = {**guest, "files": {"meta-data": "instance-id: i-2\n"}}
    result, diff = converge("present", changed)
    assert result["changed"]
    assert "i-1" in diff["before"] and "i-2" in diff["after"]
    assert iso_files(iso) == {"meta-data": "instance-id: i-2\n"}

    iso.unlink()  # drive lost but sidecar kept: rebuilt, not trusted
    assert converge("present", changed)[0]["changed"] is True

    assert converge("absent", {"uuid": guest["uuid"]}, check=True)[0]["changed"] is True
    assert iso.exists()
    assert converge("absent", {"uuid": guest["uuid"]})[0]["changed"] is True
    assert list(iso.parent.iterdir()) == []
    assert converge("absent", {"uuid": guest["uuid"]})[0]["changed"] is False


# --- integration ---------------------------------------------------------------------------


def _task(
    instances_path: Path,
    guests: list[dict[str, Any]],
    state: str = "present",
    check: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    return guest_task("cloudctl_config_drive", instances_path, guests, state, check, **extra)


@pytest.mark.integration
def test_config_drive_triad(ansible_play: PlayRunner, instances_path: Path) -> None:
    guests = [
        {"uuid": str(uuid.uuid4()), "files": {**FILES, "meta-data": f"instance-id: i-{n}\n"}}
        for n in range(3)
    ]
    isos = [instances_path / g["uuid"] / "disk.config" for g in guests]

    (check,) = ansible_play([_task(instances_path, guests, check=True)])
    assert check["changed"] is True and [r["changed"] for r in check["results"]] == [True] * 3
    assert not any(iso.parent.exists() for iso in isos)

    updated = [{**guests[0], "files": {**FILES, "user-data": "#cloud-config\n{}\n"}}, *guests[1:]]
    bad = [{"uuid": guests[1]["uuid"], "files": {"../escape": "x"}}]
    gone = [{"uuid": g["uuid"]} for g in guests]
    real, check2, real2, update_check, failed, gone_check = ansible_play(
        [
            _task(instances_path, guests),
            _task(instances_path, guests, check=True),
            _task(instances_path, guests),
            _task(instances_path, updated, check=True),
            _task(instances_path, bad, ignore_errors=True),
            _task(instances_path, gone, state="absent", check=True),
        ]
    )
    assert real["changed"] is True and [r["changed"] for r in real["results"]] == [True] * 3
    for again in (check2, real2):
        assert again["changed"] is False and [r["changed"] for r in again["results"]] == [False] * 3
    for guest, iso in zip(guests, isos, strict=True):
        assert iso_files(iso) == guest["files"]
        assert iso_label(iso) == "cidata"
    assert [r["changed"] for r in update_check["results"]] == [True, False, False]
    (diff,) = update_check["diff"]
    assert "echo héllo" in diff["before"] and "{}" in diff["after"]
    assert iso_files(isos[0]) == guests[0]["files"]  # check mode rebuilt nothing
    assert failed["failed"] is True and failed["failed_guests"] == [guests[1]["uuid"]]
    assert "invalid file name '../escape'" in failed["msg"]
    assert gone_check["changed"] is True and all(iso.exists() for iso in isos)

    gone_real, gone_check2, gone_real2 = ansible_play(
        [
            _task(instances_path, gone, state="absent"),
            _task(instances_path, gone, state="absent", check=True),
            _task(instances_path, gone, state="absent"),
        ]
    )
    assert gone_real["changed"] is True
    assert not any(iso.exists() or iso.with_suffix(".config.sha256").exists() for iso in isos)
    assert all(iso.parent.is_dir() for iso in isos)  # the instance directory stays
    assert gone_check2["changed"] is False and gone_real2["changed"] is False
