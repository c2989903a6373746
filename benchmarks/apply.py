"""Applying 20 guests across 4 lab hosts: ``cloudctl apply`` against one playbook run per guest.

A real lab (``cloudctl lab up --hosts 4``: four libvirtd hosts on this machine, reached by Ansible
over SSH like remote hosts) in a temporary ``CLOUDCTL_HOME``, the tiny kernel + busybox image and a
128 MiB flavor. Then, in the same run:

(a) ``cloudctl apply -f <estate> --auto-approve`` for one Server document of 20 replicas, timed
    end to end as a pipeline would run it (process start, validation, plan and placement, claims,
    one spawn play over every host, the journal), then the 20 guests are deleted;
(b) the reference: the same 20 guests created one at a time the way a per-guest tool does it,
    one ``ansible-playbook`` run (``playbooks/spawn.yml`` through the executor, as
    ``benchmarks/batching.py`` builds its reference) per guest, each with that guest's host and
    extra vars only. Claims and books are cloudctl's own, in process, so the difference is the
    batching and nothing else.

Two kinds of guest, each measured both ways:

- ``kvm``: KVM domains of a blank disk (the firmware finds nothing to boot and waits), as
  ``benchmarks/batching.py`` uses, so that no guest spends CPU booting a kernel;
- ``tcg``: the tiny kernel + busybox image under TCG emulation (``virt_type: qemu``; a Linux
  kernel does not boot under this machine's nested KVM), as the lab tests run.

On this 2-core machine starting a domain is CPU-bound either way (~0.44 CPU-s per TCG start,
more under nested KVM), so the spawn task of 20 guests takes the same seconds whether one play
or twenty start them; the report shows that floor beside the ratio.

A warm-up guest is booted and deleted first so that both sides find the image cached on the
(shared) instance storage. Figures go to ``benchmarks/results/apply.json``; the lab is always torn
down. ``python -m benchmarks apply`` runs it alone (libvirt and root needed; others running lab
tests on the machine: take ``/tmp/cloudctl-integration.lock`` with ``flock``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudctl.db.session import Database
from cloudctl.executor.ansible import AnsibleExecutor
from cloudctl.executor.base import EventHandler, RunRequest, RunResult
from cloudctl.services import actions, leases
from cloudctl.services.compute.boot import BootRequest, build_instances, create_and_claim
from cloudctl.services.context import Context
from cloudctl.services.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "apply.json"
TINY_CACHE = Path(os.environ.get("CLOUDCTL_TEST_CACHE", "/var/cache/cloudctl-test")) / "tiny"
TARGET_SPEEDUP = 10.0
FLAVOR = "bench.128"
IMAGE = "tiny"
GUEST_KINDS = ("kvm", "tcg")
CONFIG = """\
stop_timeout_s: 3
service_down_time_s: 3600
quota_instances: 100
quota_cores: 200
quota_ram_mb: 102400
"""


@dataclass
class Home:
    """A throw-away ``CLOUDCTL_HOME`` and the CLI run in it, as an operator would run it."""

    path: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CLOUDCTL_HOME"] = str(self.path)
        env.pop("CLOUDCTL_DB", None)
        env.pop("CLOUDCTL_CONFIG", None)
        return env

    def cli(
        self, *args: str, check: bool = True, timeout: int = 900
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
            raise RuntimeError(
                f"cloudctl {' '.join(args)} -> exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)


def make_home(root: Path) -> Home:
    """A fresh home sharing the machine-wide tiny-image cache (as the integration tests do)."""
    (root / "cache").mkdir(parents=True)
    TINY_CACHE.mkdir(parents=True, exist_ok=True)
    (root / "cache" / "tiny").symlink_to(TINY_CACHE)
    (root / "config.yaml").write_text(CONFIG)
    return Home(root)


def estate_text(name: str, replicas: int) -> str:
    """One Server document: ``replicas`` guests of the benchmark's flavor and image."""
    return (
        "apiVersion: cloudctl.dev/v1\n"
        "kind: Server\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        f"  replicas: {replicas}\n"
        f"  flavor: {FLAVOR}\n"
        f"  image: {IMAGE}\n"
    )


def _run_started(run_dir: Path) -> float:
    """When the executor created ``run_dir`` (epoch seconds, from its name)."""
    started = datetime.strptime(run_dir.name.split("-", 1)[0], "%Y%m%dT%H%M%S.%fZ")
    return started.replace(tzinfo=UTC).timestamp()


def play_breakdown(run_dir: Path) -> dict[str, float]:
    """Seconds of one ansible-playbook run: in total, before its first task, and per task.

    A task's time is from its start to the next task's start (all hosts in parallel); the total
    runs from the run directory's creation to ansible-runner's final status.
    """
    start = _run_started(run_dir)
    marks: list[tuple[str, float]] = []
    for path in run_dir.glob("artifacts/*/job_events/*.json"):
        event = json.loads(path.read_text())
        if event["event"] in ("playbook_on_task_start", "playbook_on_stats"):
            created = datetime.fromisoformat(event["created"])
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            marks.append((event["event_data"].get("task", "end"), created.timestamp()))
    marks.sort(key=lambda m: m[1])
    out: dict[str, float] = {}
    status = next(run_dir.glob("artifacts/*/status"), None)
    if status is not None:
        out["total"] = status.stat().st_mtime - start
    if marks:
        out["before first task"] = marks[0][1] - start
    for (task, at), (_, nxt) in itertools.pairwise(marks):
        out[task] = out.get(task, 0.0) + nxt - at
    if status is not None and marks:
        out["after last task"] = status.stat().st_mtime - marks[-1][1]
    return {k: round(v, 2) for k, v in out.items()}


def _sum(breakdowns: Sequence[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in breakdowns:
        for k, v in b.items():
            out[k] = round(out.get(k, 0.0) + v, 2)
    return out


@dataclass
class TimedExecutor:
    """The real executor, keeping each play's breakdown (one ansible-playbook run each)."""

    inner: AnsibleExecutor
    plays: list[dict[str, float]] = field(default_factory=list)

    def run(self, request: RunRequest, on_event: EventHandler | None = None) -> RunResult:
        result = self.inner.run(request, on_event)
        if result.artifacts_dir:  # read now: the executor prunes old run directories
            breakdown = play_breakdown(Path(result.artifacts_dir).parents[1])
            self.plays.append(breakdown or {"total": result.duration_s})
        return result

    def reap_orphans(self) -> list[int]:
        """As the real executor."""
        return self.inner.reap_orphans()


def _servers(home: Home, prefix: str) -> list[dict[str, Any]]:
    return [s for s in home.json("list") if str(s["name"]).startswith(prefix)]


def _check_active(home: Home, prefix: str, n: int) -> dict[str, int]:
    servers = _servers(home, prefix)
    bad = [f"{s['name']}: {s['status']}" for s in servers if s["status"] != "ACTIVE"]
    if len(servers) != n or bad:
        raise RuntimeError(f"expected {n} ACTIVE {prefix}* guests, got {len(servers)}: {bad}")
    return dict(sorted(Counter(str(s["host"]) for s in servers).items()))


def _delete(home: Home, prefix: str) -> None:
    names = [str(s["name"]) for s in _servers(home, prefix)]
    if names:
        home.cli("delete", "--force", *names)


def _newest_spawn_run(home: Home, since: float) -> Path | None:
    """The newest spawn run in ``runs/`` started after ``since`` (epoch seconds)."""
    runs = []
    for run_dir in (home.path / "runs").glob("*-spawn-*"):
        if _run_started(run_dir) >= since:
            runs.append(run_dir)
    return max(runs, key=lambda p: p.name, default=None)


def measure_apply(home: Home, estate: Path, n: int) -> dict[str, Any]:
    """(a): plan alone (for the breakdown), then the timed ``cloudctl apply``."""
    start = time.perf_counter()
    home.cli("--help")
    startup_s = time.perf_counter() - start
    start = time.perf_counter()
    planned = home.cli("plan", "-f", str(estate), "--detailed-exitcode", "-o", "json", check=False)
    plan_s = time.perf_counter() - start
    if planned.returncode != 2:
        raise RuntimeError(f"plan should show changes (exit 2): {planned.stdout}{planned.stderr}")
    began = time.time()
    start = time.perf_counter()
    applied = home.cli("apply", "-f", str(estate), "--auto-approve", "-o", "json")
    wall = time.perf_counter() - start
    ended = time.time()
    report = json.loads(applied.stdout)
    if report["failed"]:
        raise RuntimeError(f"apply failed: {report['failed']}")
    hosts = _check_active(home, "bench-", n)
    again = home.cli("plan", "-f", str(estate), "--detailed-exitcode", check=False)
    builds = [s for s in report["done"] if s["action"] == "build"]
    spawn = _newest_spawn_run(home, began)
    play = play_breakdown(spawn) if spawn is not None else {}
    play_start = _run_started(spawn) if spawn is not None else began
    return {
        "wall_s": round(wall, 2),
        "per_guest_s": round(wall / n, 3),
        "plays": len(builds),
        "guests_per_host": hosts,
        "cli_startup_s": round(startup_s, 2),
        "plan_alone_s": round(plan_s, 2),
        "spawn_play_s": play.get("total"),
        "spawn_play": play,
        "outside_play_s": round(wall - play.get("total", 0.0), 2),
        "before_play_s": round(play_start - began, 2),
        "after_play_s": round(ended - play_start - play.get("total", 0.0), 2),
        "second_plan_exit": again.returncode,
    }


def measure_reference(home: Home, n: int) -> dict[str, Any]:
    """(b): one claim and one spawn play (one ansible-playbook process) per guest."""
    settings = load_settings(environ={"CLOUDCTL_HOME": str(home.path)})
    db = Database(settings.db_url)
    executor = TimedExecutor(AnsibleExecutor(runs_dir=settings.runs_dir))
    ctx = Context(settings=settings, db=db, executor_factory=lambda: executor)
    start = time.perf_counter()
    for i in range(1, n + 1):
        request_id = actions.new_request_id()
        # one command per guest, each under its own lease, as a boot per guest would be
        with leases.command_lease(ctx, f"boot ref-{i}", request_id=request_id):
            uuids = create_and_claim(
                ctx, BootRequest(name=f"ref-{i}", flavor=FLAVOR, image=IMAGE), request_id
            )
            build_instances(ctx, uuids, request_id)
    wall = time.perf_counter() - start
    hosts = _check_active(home, "ref-", n)
    totals = [p["total"] for p in executor.plays if "total" in p]
    return {
        "wall_s": round(wall, 2),
        "per_guest_s": round(wall / n, 3),
        "plays": len(executor.plays),
        "guests_per_host": hosts,
        "play_s_mean": round(sum(totals) / len(totals), 2) if totals else None,
        "play_s_min": round(min(totals), 2) if totals else None,
        "play_s_max": round(max(totals), 2) if totals else None,
        "plays_summed": _sum(executor.plays),
        "outside_plays_s": round(wall - sum(totals), 2),
    }


def _tasks(play: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in play.items() if k != "total")


def report(row: dict[str, Any]) -> str:
    """The printed table, and where the time goes."""
    a, ref = row["apply"], row["reference"]
    return "\n".join(
        [
            f"apply: {row['guests']} {row['guest']} guests ({row['flavor_mb']} MiB) over "
            f"{row['hosts']} lab hosts ({row['connection']}); load average before "
            f"{row['load_before']}",
            f"{'approach':<34} {'wall s':>8} {'s/guest':>8} {'plays':>6}",
            f"{'cloudctl apply (one plan)':<34} {a['wall_s']:>8.1f} {a['per_guest_s']:>8.2f} "
            f"{a['plays']:>6}",
            f"{'ansible-playbook per guest':<34} {ref['wall_s']:>8.1f} {ref['per_guest_s']:>8.2f} "
            f"{ref['plays']:>6}",
            f"ratio {row['speedup']:.1f}x (target >= {TARGET_SPEEDUP:.0f}x): "
            + ("MET" if row["target_met"] else "NOT MET")
            + f"; the apply's spawn task alone (starting the domains) caps it at "
            f"{row['ceiling_spawn_task_only']}x",
            f"apply: CLI start {a['cli_startup_s']} s, plan alone {a['plan_alone_s']} s; "
            f"{a['before_play_s']} s before its spawn play (start, plan, claims), "
            f"{a['after_play_s']} s after it; the play {a['spawn_play_s']} s: "
            + _tasks(a["spawn_play"]),
            f"reference: {ref['plays']} plays of {ref['play_s_mean']} s "
            f"({ref['play_s_min']}..{ref['play_s_max']}), outside them {ref['outside_plays_s']} s;"
            " summed: " + _tasks(ref["plays_summed"]),
        ]
    )


def _image(home: Home, guest: str) -> None:
    """The benchmark's image: the tiny kernel image (tcg) or a blank disk (kvm)."""
    if guest == "tcg":
        home.cli("image", "create-tiny", IMAGE)
        return
    blank = home.path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "512M"], check=True)
    home.cli("image", "add", IMAGE, "--file", str(blank))


def measure(n: int, hosts: int, connection: str, guest: str) -> dict[str, Any]:
    """Bring a lab up, measure both ways for one kind of guest, tear it down."""
    load_before = round(os.getloadavg()[0], 2)
    root = Path(tempfile.mkdtemp(prefix="cloudctl-bench-apply-"))
    home = make_home(root)
    virt_type = "kvm" if guest == "kvm" else "qemu"
    try:
        start = time.perf_counter()
        home.cli(
            "lab",
            "up",
            "--hosts",
            str(hosts),
            "--azs",
            "1",
            "--connection",
            connection,
            "--virt-type",
            virt_type,
        )
        lab_s = time.perf_counter() - start
        home.cli("flavor", "create", FLAVOR, "--vcpus", "1", "--ram", "128", "--disk", "1")
        _image(home, guest)
        # Warm-up: the image's base files land on the shared instance storage once, for both.
        home.cli("boot", "warmup", "--flavor", FLAVOR, "--image", IMAGE)
        home.cli("delete", "--force", "warmup")
        estate = root / "estate"
        estate.mkdir()
        (estate / "servers.yaml").write_text(estate_text("bench", n))
        applied = measure_apply(home, estate, n)
        _delete(home, "bench-")
        reference = measure_reference(home, n)
        _delete(home, "ref-")
    finally:  # a half-built lab is torn down too
        home.cli("lab", "down", check=False)
        shutil.rmtree(root, ignore_errors=True)
    speedup = reference["wall_s"] / applied["wall_s"]
    return {
        "workload": "apply",
        "guest": guest,
        "virt_type": virt_type,
        "guests": n,
        "hosts": hosts,
        "connection": connection,
        "flavor_mb": 128,
        "lab_up_s": round(lab_s, 1),
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "apply": applied,
        "reference": reference,
        "speedup": round(speedup, 2),
        # What the ratio could reach if the apply were nothing but starting its 20 domains.
        "ceiling_spawn_task_only": round(reference["wall_s"] / applied["spawn_play"]["spawn"], 1)
        if applied["spawn_play"].get("spawn")
        else None,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": speedup >= TARGET_SPEEDUP,
        "command": "flock /tmp/cloudctl-integration.lock .venv/bin/python -m benchmarks apply",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run(
    n: int = 20, hosts: int = 4, connection: str = "ssh", guests: Sequence[str] = GUEST_KINDS
) -> dict[str, Any]:
    """Measure each kind of guest in turn; print and write the figures (all rows in one file)."""
    rows = {}
    for guest in guests:
        row = measure(n, hosts, connection, guest)
        print(report(row))
        rows[guest] = row
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results written to {RESULTS}")
    return rows


def main(argv: Sequence[str] = ()) -> None:
    """``python -m benchmarks.apply [kvm|tcg] [GUESTS [HOSTS]]``."""
    args = list(argv)
    kinds = [args.pop(0)] if args and args[0] in GUEST_KINDS else list(GUEST_KINDS)
    guests = int(args[0]) if args else 20
    hosts = int(args[1]) if len(args) > 1 else 4
    run(guests, hosts, guests=kinds)


if __name__ == "__main__":
    main(sys.argv[1:])
