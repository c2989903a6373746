"""Spawning guests through Ansible: one play looping over every guest (cloudctl) versus the naive
reference of one playbook run per guest. Real libvirtd, real ansible-runner; firmware-only guests
that start in well under a second, so the figure is the Ansible cost the design saves."""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

from cloudctl.executor.ansible import AnsibleExecutor
from cloudctl.executor.base import HostTarget, RunRequest
from cloudctl.render import DomainSpec, render_domain_xml

LOCAL = HostTarget(
    name="local",
    connection="local",
    libvirt_uri="qemu:///system",
    python_interpreter=sys.executable,
    hostvars={"instances_path": "/var/lib/cloudctl/instances", "bridge": "cloudbr0"},
)


def _guests(n: int, tmp: Path, virt_type: str) -> list[dict[str, str]]:
    out = []
    for _ in range(n):
        u = str(uuid.uuid4())
        spec = DomainSpec(
            name=f"ccbench-{u[:8]}",
            uuid=u,
            hostname="bench",
            memory_mb=32,
            vcpus=1,
            virt_type="kvm" if virt_type == "kvm" else "qemu",
            cpu_mode="none",
            console_log=str(tmp / f"{u}.log"),
            vnc=False,
        )
        out.append({"name": spec.name, "xml": render_domain_xml(spec), "state": "running"})
    return out


def _run(ex: AnsibleExecutor, guests: list[dict[str, str]]) -> None:
    res = ex.run(
        RunRequest(
            playbook="power.yml", hosts=(LOCAL,), extravars={"cloudctl_domains": {"local": guests}}
        )
    )
    if not res.ok:
        raise RuntimeError(res.stdout_tail)


def run(n: int = 6, virt_type: str = "kvm") -> dict[str, float]:
    """Start ``n`` guests both ways and remove them again; returns seconds per approach."""
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ex = AnsibleExecutor(runs_dir=tmp / "runs")
        timings: dict[str, float] = {}
        for label in ("naive", "cloudctl"):
            guests = _guests(n, tmp, virt_type)
            start = time.perf_counter()
            if label == "cloudctl":
                _run(ex, guests)
            else:
                for g in guests:
                    _run(ex, [g])
            timings[label] = time.perf_counter() - start
            _run(ex, [{"name": g["name"], "state": "absent"} for g in guests])
    print(
        f"batching: start {n} guests via Ansible: one play {timings['cloudctl']:.1f} s, "
        f"one playbook per guest {timings['naive']:.1f} s, "
        f"ratio {timings['naive'] / timings['cloudctl']:.1f}x"
    )
    return timings
