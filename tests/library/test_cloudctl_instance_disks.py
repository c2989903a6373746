"""Tests of library/cloudctl_instance_disks.py (real qemu-img; Ansible for the triads)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.library.helpers import PlayRunner, guest_task

GiB = 1024**3
MiB = 1024**2
QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"


def _run(argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [QEMU_IMG, "info", "-U", "--output=json", "-f", "qcow2", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out))


def make_base(instances_path: Path, fmt: str, size: int) -> str:
    """A base file in ``_base`` named by the sha256 of its content; returns the checksum."""
    tmp = instances_path / "_base" / f"tmp.{fmt}"
    if fmt == "raw":
        with tmp.open("wb") as handle:
            handle.truncate(size)
    else:
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(tmp), str(size)], check=True)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.rename(instances_path / "_base" / digest)
    return digest


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_instance_disks")


@pytest.fixture
def qemu(mod: ModuleType) -> Any:
    return mod.QemuImg(QEMU_IMG, _run)


def _guest(**kwargs: Any) -> dict[str, Any]:
    guest = {
        "uuid": str(uuid.uuid4()),
        "image": None,
        "root_gb": 0,
        "ephemeral_gb": 0,
        "swap_mb": 0,
    }
    guest.update(kwargs)
    return guest


# --- unit: plan / apply with the real qemu-img ---------------------------------------------


def test_plan_apply_replan(mod: ModuleType, qemu: Any, instances_path: Path) -> None:
    checksum = make_base(instances_path, "qcow2", 16 * MiB)
    guest = _guest(
        image={"checksum": checksum, "format": "qcow2"}, root_gb=1, ephemeral_gb=1, swap_mb=64
    )
    plan = mod.plan_present(qemu, str(instances_path), guest, check_mode=False)
    gdir = instances_path / guest["uuid"]
    assert [a.kind for a in plan.actions] == ["mkdir", "command", "command", "command"]
    assert plan.files == [str(gdir / "disk"), str(gdir / "disk.eph0"), str(gdir / "disk.swap")]
    assert not gdir.exists()  # planning touches nothing

    mod.apply(plan, _run)
    root = _info(gdir / "disk")
    assert root["backing-filename"] == str(instances_path / "_base" / checksum)
    assert root["backing-filename-format"] == "qcow2"
    assert root["virtual-size"] == GiB
    assert _info(gdir / "disk.eph0")["virtual-size"] == GiB
    assert _info(gdir / "disk.swap")["virtual-size"] == 64 * MiB

    again = mod.plan_present(qemu, str(instances_path), guest, check_mode=False)
    assert again.actions == [] and again.warnings == []

    bigger = mod.plan_present(
        qemu, str(instances_path), {**guest, "root_gb": 2, "swap_mb": 128}, check_mode=False
    )
    assert [a.reason.split()[0] for a in bigger.actions] == ["grow", "grow"]
    mod.apply(bigger, _run)
    assert _info(gdir / "disk")["virtual-size"] == 2 * GiB
    assert _info(gdir / "disk.swap")["virtual-size"] == 128 * MiB

    smaller = mod.plan_present(
        qemu, str(instances_path), {**guest, "root_gb": 1, "swap_mb": 0}, check_mode=False
    )
    assert smaller.actions == []
    assert any("never shrunk" in w for w in smaller.warnings)
    assert any("left in place" in w for w in smaller.warnings)


def test_root_gb_zero_means_image_size_raw(
    mod: ModuleType, qemu: Any, instances_path: Path
) -> None:
    checksum = make_base(instances_path, "raw", 8 * MiB)
    guest = _guest(image={"checksum": checksum, "format": "raw"})
    mod.apply(mod.plan_present(qemu, str(instances_path), guest, check_mode=False), _run)
    info = _info(instances_path / guest["uuid"] / "disk")
    assert info["virtual-size"] == 8 * MiB
    assert info["backing-filename-format"] == "raw"
    assert mod.plan_present(qemu, str(instances_path), guest, check_mode=False).actions == []
    # a raw base declared as qcow2 is never probed into something else
    with pytest.raises(RuntimeError, match="not in qcow2 format"):
        mod.plan_present(
            qemu,
            str(instances_path),
            {**guest, "image": {"checksum": checksum, "format": "qcow2"}},
            False,
        )


@pytest.mark.parametrize(
    ("guest", "check_mode", "reason"),
    [
        (_guest(image={"checksum": "0" * 64, "format": "qcow2"}), False, "base file .* is missing"),
        (_guest(root_gb=0), False, "root_gb must be > 0 for a blank root disk"),
        (_guest(root_gb=1, swap_mb=-1), False, "swap_mb must be an integer >= 0"),
        (_guest(uuid="../etc", root_gb=1), False, "invalid uuid"),
        (_guest(image={"checksum": "../../x", "format": "raw"}), True, "invalid image checksum"),
    ],
)
def test_plan_errors(
    mod: ModuleType,
    qemu: Any,
    instances_path: Path,
    guest: dict[str, Any],
    check_mode: bool,
    reason: str,
) -> None:
    with pytest.raises((mod.GuestError, ValueError), match=reason):
        mod.plan_present(qemu, str(instances_path), guest, check_mode=check_mode)


def test_missing_base_is_a_warning_in_check_mode(
    mod: ModuleType, qemu: Any, instances_path: Path
) -> None:
    plan = mod.plan_present(
        qemu,
        str(instances_path),
        _guest(image={"checksum": "0" * 64, "format": "qcow2"}, root_gb=1),
        True,
    )
    assert plan.actions and "missing" in plan.warnings[0]


def test_image_bigger_than_root_gb(mod: ModuleType, qemu: Any, instances_path: Path) -> None:
    checksum = make_base(instances_path, "qcow2", 2 * GiB)
    with pytest.raises(mod.GuestError, match="bigger than root_gb=1"):
        mod.plan_present(
            qemu,
            str(instances_path),
            _guest(image={"checksum": checksum, "format": "qcow2"}, root_gb=1),
            False,
        )


def test_existing_disk_with_other_backing_is_refused(
    mod: ModuleType, qemu: Any, instances_path: Path
) -> None:
    first = make_base(instances_path, "raw", 1 * MiB)
    second = make_base(instances_path, "raw", 2 * MiB)
    guest = _guest(image={"checksum": first, "format": "raw"}, root_gb=1)
    mod.apply(mod.plan_present(qemu, str(instances_path), guest, False), _run)
    with pytest.raises(mod.GuestError, match="refusing to replace it"):
        mod.plan_present(
            qemu,
            str(instances_path),
            {**guest, "image": {"checksum": second, "format": "raw"}},
            False,
        )


def test_plan_absent(mod: ModuleType, instances_path: Path) -> None:
    guest = _guest()
    assert mod.plan_absent(str(instances_path), guest).actions == []
    gdir = instances_path / guest["uuid"]
    gdir.mkdir()
    (gdir / "console.log").write_text("x")
    plan = mod.plan_absent(str(instances_path), guest)
    assert [a.kind for a in plan.actions] == ["rmtree"]
    mod.apply(plan, _run)
    assert not gdir.exists()
    assert (instances_path / "_base").is_dir()


# --- integration: through ansible-playbook ----------------------------------------------


def _task(
    instances_path: Path,
    guests: list[dict[str, Any]],
    state: str = "present",
    check: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    return guest_task("cloudctl_instance_disks", instances_path, guests, state, check, **extra)


@pytest.mark.integration
def test_disks_triad(ansible_play: PlayRunner, instances_path: Path) -> None:
    qcow2 = make_base(instances_path, "qcow2", 16 * MiB)
    raw = make_base(instances_path, "raw", 8 * MiB)
    guests = [
        {
            "uuid": str(uuid.uuid4()),
            "image": {"checksum": qcow2},
            "root_gb": 1,
            "ephemeral_gb": 1,
            "swap_mb": 32,
        },
        {"uuid": str(uuid.uuid4()), "image": {"checksum": raw, "format": "raw"}},
        {"uuid": str(uuid.uuid4()), "root_gb": 1},
    ]
    dirs = [instances_path / g["uuid"] for g in guests]

    (check,) = ansible_play([_task(instances_path, guests, check=True)])
    assert check["changed"] is True
    assert [r["changed"] for r in check["results"]] == [True, True, True]
    assert len(check["diff"]) == 3
    assert not any(d.exists() for d in dirs)  # check mode touched nothing

    bad = [
        {"uuid": "not-a-uuid", "root_gb": 1},
        {"uuid": str(uuid.uuid4()), "image": {"checksum": "f" * 64}},
        guests[2],
    ]
    gone = [{"uuid": g["uuid"]} for g in guests]
    real, check2, real2, failed, gone_check = ansible_play(
        [
            _task(instances_path, guests),
            _task(instances_path, guests, check=True),
            _task(instances_path, guests),
            _task(instances_path, bad, ignore_errors=True),
            _task(instances_path, gone, state="absent", check=True),
        ]
    )
    assert real["changed"] is True and all(r["changed"] for r in real["results"])
    assert real["results"][0]["files"] == [
        str(dirs[0] / n) for n in ("disk", "disk.eph0", "disk.swap")
    ]
    for again in (check2, real2):
        assert again["changed"] is False
        assert [r["changed"] for r in again["results"]] == [False, False, False]
        assert again.get("diff", []) == []

    root0 = _info(dirs[0] / "disk")
    assert root0["virtual-size"] == GiB
    assert root0["full-backing-filename"] == str(instances_path / "_base" / qcow2)
    root1 = _info(dirs[1] / "disk")
    assert (root1["virtual-size"], root1["backing-filename-format"]) == (8 * MiB, "raw")
    root2 = _info(dirs[2] / "disk")
    assert root2["virtual-size"] == GiB and "backing-filename" not in root2
    assert _info(dirs[0] / "disk.swap")["virtual-size"] == 32 * MiB

    assert failed["failed"] is True
    assert failed["failed_guests"] == ["not-a-uuid", bad[1]["uuid"]]
    assert "guest not-a-uuid: invalid uuid" in failed["msg"]
    assert f"guest {bad[1]['uuid']}: base file" in failed["msg"] and "is missing" in failed["msg"]
    assert failed["results"][2] == {**real2["results"][2]}  # the good guest still handled
    assert not (instances_path / bad[1]["uuid"] / "disk").exists()

    assert gone_check["changed"] is True
    assert all(d.is_dir() for d in dirs)  # check mode removed nothing
    (dirs[0] / "console.log").write_text("boot\n")
    (dirs[0] / "disk.config").write_bytes(b"iso")

    gone_real, gone_check2, gone_real2 = ansible_play(
        [
            _task(instances_path, gone, state="absent"),
            _task(instances_path, gone, state="absent", check=True),
            _task(instances_path, gone, state="absent"),
        ]
    )
    assert gone_real["changed"] is True and [r["files"] for r in gone_real["results"]] == [
        [],
        [],
        [],
    ]
    assert not any(d.exists() for d in dirs)
    assert gone_check2["changed"] is False and gone_real2["changed"] is False
    assert sorted(p.name for p in (instances_path / "_base").iterdir()) == sorted([qcow2, raw])
