"""Fixtures of the service tests: a small cloud (two hosts, flavors, an image) over the fake executor."""

from __future__ import annotations

from typing import Any

import pytest

from cloudctl.db.models import Image
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import flavors
from cloudctl.services.context import Context
from tests.conftest import add_host


def running(req: RunRequest) -> dict[str, Any]:
    """Answer spawn/power runs as libvirt would: every guest ends up running."""
    out: dict[str, Any] = {}
    for host, guests in req.extravars.get("cloudctl_domains", {}).items():
        out[host] = {
            "spawn": {
                "changed": True,
                "results": [{"name": g["name"], "state": "running"} for g in guests],
            }
        }
    return out


def add_image(ctx: Context, name: str = "tiny", **kw: Any) -> None:
    values: dict[str, Any] = {
        "uuid": "11111111-1111-4111-8111-111111111111",
        "name": name,
        "disk_format": "qcow2",
        "path": "/images/disk",
        "checksum": "a" * 64,
        "virtual_size_bytes": 64 * 1024**2,
        "kernel_path": "/images/kernel",
        "kernel_checksum": "b" * 64,
        "initrd_path": "/images/initrd",
        "initrd_checksum": "c" * 64,
        "cmdline": "console=ttyS0",
    }
    values.update(kw)
    # The files live in this controller's image store (a controller refuses an image whose
    # files it lacks): "/images/x" stands for <home>/images/x, made here.
    store = ctx.settings.home / "images"
    for key in ("path", "kernel_path", "initrd_path"):
        if isinstance(values.get(key), str) and values[key].startswith("/images/"):
            real = store / values[key].removeprefix("/images/")
            real.parent.mkdir(parents=True, exist_ok=True)
            real.write_bytes(b"image")
            values[key] = str(real)
    with ctx.db.unit_of_work() as s:
        s.add(Image(**values))


@pytest.fixture
def cloud(ctx: Context, fake: FakeExecutor) -> Context:
    add_host(ctx, "h1")
    add_host(ctx, "h2", memory_mb=2048)
    flavors.create_flavor(ctx, "small", vcpus=1, memory_mb=512, root_gb=1)
    flavors.create_flavor(ctx, "huge", vcpus=1, memory_mb=8192, root_gb=1)
    add_image(ctx)
    fake.on("spawn.yml", running)
    return ctx
