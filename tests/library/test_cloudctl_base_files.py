"""Tests of library/cloudctl_base_files.py: what counts as cached, and the check/real/check triad."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.library.helpers import PlayRunner

A, B, C = ("a" * 64, "b" * 64, "c" * 64)


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_base_files")


def _cache(root: Path, files: dict[str, bytes | None]) -> Path:
    """``_base`` with ``files`` (None: a directory of that name)."""
    base = root / "_base"
    base.mkdir(parents=True)
    for name, content in files.items():
        if content is None:
            (base / name).mkdir()
        else:
            (base / name).write_bytes(content)
    return root


CASES: dict[str, tuple[dict[str, bytes | None], list[dict[str, Any]], list[str], list[str]]] = {
    "nothing-cached": ({}, [{"checksum": A, "size": 3}], [A], []),
    "cached-same-size": ({A: b"abc"}, [{"checksum": A, "size": 3}], [], [A]),
    "cached-other-size": ({A: b"ab"}, [{"checksum": A, "size": 3}], [A], []),
    "size-unknown": ({A: b"ab"}, [{"checksum": A}], [], [A]),
    "a-directory-is-not-a-file": ({A: None}, [{"checksum": A}], [A], []),
    "listed-twice": ({}, [{"checksum": A}, {"checksum": A.upper()}], [A], []),
    "order-kept": (
        {B: b"x"},
        [{"checksum": C}, {"checksum": B, "size": 1}, {"checksum": A, "src": "/img"}],
        [C, A],
        [B],
    ),
    "nothing-asked": ({A: b"x"}, [], [], []),
}


@pytest.mark.parametrize(
    ("cached", "files", "missing", "present"), list(CASES.values()), ids=list(CASES)
)
def test_check(
    mod: ModuleType,
    tmp_path: Path,
    cached: dict[str, bytes | None],
    files: list[dict[str, Any]],
    missing: list[str],
    present: list[str],
) -> None:
    assert mod.check(str(_cache(tmp_path, cached)), files) == (missing, present)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a" * 63, "g" * 64, ""])
def test_a_bad_checksum_is_refused(mod: ModuleType, tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        mod.check(str(_cache(tmp_path, {})), [{"checksum": bad}])


@pytest.mark.integration
def test_base_files_triad(ansible_play: PlayRunner, tmp_path: Path) -> None:
    instances = tmp_path / "instances"
    image = tmp_path / "image.qcow2"
    image.write_bytes(b"qcow2 stand-in")
    wanted = [{"src": str(image), "checksum": A, "size": image.stat().st_size}]
    check = {"cloudctl_base_files": {"instances_path": str(instances), "files": wanted}}
    copy = {
        "ansible.builtin.copy": {
            "src": "{{ item.src }}",
            "dest": f"{instances}/_base/{{{{ item.checksum }}}}",
            "mode": "0644",
        },
        "loop": "{{ wanted | selectattr('checksum', 'in', base_check.missing) }}",
        "vars": {"wanted": wanted},
    }
    first, real, copied, again, second = ansible_play(
        [
            {**check, "check_mode": True},
            {**check, "register": "base_check"},
            copy,
            check,
            {**check, "check_mode": True},
        ]
    )
    assert (first["changed"], first["created"], first["missing"]) == (True, True, [A])
    assert (real["changed"], real["missing"], real["present"]) == (True, [A], [])
    assert oct((instances / "_base").stat().st_mode & 0o777) == "0o755"
    assert copied["changed"] is True
    assert (instances / "_base" / A).read_bytes() == image.read_bytes()
    assert (again["changed"], again["missing"], again["present"]) == (False, [], [A])
    assert (second["changed"], second["missing"]) == (False, [])
