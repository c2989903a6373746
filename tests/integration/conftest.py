"""Integration fixtures: the real cloudctl CLI against the real local libvirtd, through Ansible.

Each test module gets its own ``CLOUDCTL_HOME`` (its own SQLite state), registers the local host
(``virt_type=qemu``: Linux guests hang under nested KVM here), a flavor and the tiny image. The tiny
image's Debian packages are cached once per machine so repeated runs do not download them again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TINY_CACHE = Path(os.environ.get("CLOUDCTL_TEST_CACHE", "/var/cache/cloudctl-test")) / "tiny"


@dataclass
class Cli:
    """Runs ``cloudctl`` as an operator would, in one isolated home."""

    home: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CLOUDCTL_HOME"] = str(self.home)
        env.pop("CLOUDCTL_DB", None)
        return env

    def run(
        self, *args: str, check: bool = True, timeout: int = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "cloudctl", *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"cloudctl {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)


def lab_virsh(c: Cli, host: str, *args: str) -> str:
    """virsh inside lab host ``host`` of the lab of ``c``'s home."""
    enter = c.home / "lab" / "hosts" / host / "enter"
    return subprocess.run(
        [str(enter), "virsh", "-c", "qemu:///system", *args],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def virsh(*args: str) -> str:
    return subprocess.run(
        ["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, check=False
    ).stdout


def make_home(tmp_path_factory: pytest.TempPathFactory, prefix: str, config: str) -> Cli:
    """A fresh ``CLOUDCTL_HOME`` sharing the machine-wide tiny-image cache, with ``config``."""
    home = tmp_path_factory.mktemp(prefix)
    (home / "cache").mkdir()
    TINY_CACHE.mkdir(parents=True, exist_ok=True)
    (home / "cache" / "tiny").symlink_to(TINY_CACHE)
    (home / "config.yaml").write_text(config)
    return Cli(home)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """A home with the local host, flavor ``m1.tiny`` and image ``tiny`` registered."""
    c = make_home(
        tmp_path_factory, "cloudctl-home", "stop_timeout_s: 3\nservice_down_time_s: 3600\n"
    )
    c.run("host", "add", "local", "--uri", "qemu:///system", "--virt-type", "qemu")
    c.run("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1")
    c.run("image", "create-tiny", "tiny", timeout=900)
    yield c
    # Leave the host as we found it, whatever a failed test left behind.
    for inst in c.json("list"):
        c.run("delete", inst["name"], check=False)
