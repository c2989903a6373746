"""``cloudctl plan`` at scale: 10,000 servers over 1,000 hosts from recorded host facts.

The books are written straight into a SQLite file (bulk inserts: hosts with their recorded
facts and a fresh heartbeat, flavors, the tiny image, a key pair, two server groups, quotas,
servers ACTIVE on their hosts with their allocations, group memberships and ownership records)
as if an earlier apply had created them, beside desired-state files that declare exactly that:
ten Server documents with replicas, plus the catalog. The plan of those files is a no-op. The
1% drift then adds ``servers / 100`` changes: replicas up (creates the placement session must
place), servers stopped and metadata edited behind the files' back (live updates).

Timed: :func:`cloudctl.services.gitops.make_plan` (read and validate the files, snapshot,
diff, place, capacity), the median of :data:`RUNS` runs after one warm-up; the placement
kernel's one-off compile is measured apart. Nothing here asserts a timing.

``python -m benchmarks plan`` runs it alone; the table is printed and written to
``benchmarks/results/plan.json``. ``CLOUDCTL_BENCH_PLAN_SIZES`` (comma-separated server counts)
narrows the sizes; ``CLOUDCTL_BENCH_PLAN_PROFILE=1`` prints a cProfile of the 1% drift plan.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from cloudctl.db.models import (
    Allocation,
    Flavor,
    Host,
    Image,
    Instance,
    ManagedResource,
    Quota,
    ServerGroup,
    ServerGroupMember,
    utcnow,
)
from cloudctl.db.session import Database
from cloudctl.domain.settings import Settings
from cloudctl.domain.states import PowerState, VmState
from cloudctl.executor.fake import FakeExecutor
from cloudctl.ledger import resources_for
from cloudctl.scheduler.session import warm_up
from cloudctl.services import flavors, gitops, keypairs, server_groups
from cloudctl.services.context import Context

RESULTS = Path(__file__).resolve().parent / "results" / "plan.json"
HOSTS = 1_000
SIZES = (1_000, 2_000, 5_000, 10_000)
#: The issue's targets, seconds, at 10,000 servers over 1,000 hosts.
TARGET_NOOP_S = 2.0
TARGET_DRIFT_S = 3.0
TARGET_SERVERS = 10_000
RUNS = 3
SEED = 20261207
AZS = ("az1", "az2", "az3", "az4")
ESTATE = gitops.ESTATE
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    " bench@cloudctl"
)
#: name -> (vcpus, ram_mb, disk_gb, extra_specs)
FLAVORS: dict[str, tuple[int, int, int, dict[str, str]]] = {
    "m1.small": (1, 2048, 20, {}),
    "m1.medium": (2, 4096, 40, {"hw:cpu_policy": "shared"}),
    "m1.large": (4, 8192, 80, {}),
}
#: name -> (policy, max_per_host)
GROUPS: dict[str, tuple[str, int | None]] = {
    "spread": ("anti-affinity", 2),
    "soft": ("soft-anti-affinity", None),
}


@dataclass(frozen=True)
class ServerDoc:
    """One Server document of the estate: ``replicas`` servers named ``{name}-{index:05d}``."""

    name: str
    flavor: str
    availability_zone: str | None = None
    group: str | None = None
    power_state: str = "running"
    key: str | None = None
    metadata: Mapping[str, str] | None = None

    def server(self, index: int) -> str:
        """Replica ``index``'s name (1-based)."""
        return f"{self.name}-{index:05d}"


#: Ten documents: every flavor, an AZ on four of them, both groups, one kept powered off.
DOCS: tuple[ServerDoc, ...] = (
    ServerDoc("web", "m1.small", group="spread", key="bench", metadata={"tier": "web"}),
    ServerDoc("api", "m1.medium", availability_zone="az1", key="bench", metadata={"tier": "api"}),
    ServerDoc("db", "m1.large", availability_zone="az2", metadata={"tier": "db"}),
    ServerDoc("cache", "m1.small", group="soft", metadata={"tier": "cache"}),
    ServerDoc("batch", "m1.small", availability_zone="az3", power_state="stopped"),
    ServerDoc("queue", "m1.medium", availability_zone="az4", metadata={"tier": "queue"}),
    ServerDoc("search", "m1.large", key="bench"),
    ServerDoc("worker", "m1.small", metadata={"tier": "worker", "pool": "a"}),
    ServerDoc("edge", "m1.medium", metadata={"tier": "edge"}),
    ServerDoc("ml", "m1.large", metadata={"tier": "ml"}),
)


@dataclass(frozen=True)
class Books:
    """A built estate: the context over its SQLite books and the directory of its files."""

    ctx: Context
    path: Path
    hosts: int
    servers: int
    replicas: Mapping[str, int]


@dataclass(frozen=True)
class Drift:
    """What :func:`add_drift` changed: (kind, name) -> the action the plan must show."""

    expected: Mapping[tuple[str, str], str]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_context(home: Path, now: datetime, seed: int = SEED) -> Context:
    """A context over a fresh SQLite file, a fixed clock (heartbeats stay fresh) and no Ansible."""
    settings = Settings(home=home / "home", db_url=f"sqlite:///{home / 'state.db'}")
    db = Database(settings.db_url)
    db.ensure_schema()
    fake = FakeExecutor()
    return Context(
        settings=settings,
        db=db,
        executor_factory=lambda: fake,
        clock=lambda: now,
        rng=random.Random(seed),
    )


def _host_rows(n: int, now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """Hosts as discovery records them: capacity, CPU, AZ, labels, a fresh heartbeat."""
    return [
        {
            "uuid": _uuid(rng),
            "name": f"cmp-{i:05d}",
            "libvirt_uri": "qemu:///system",
            "instances_path": "/var/lib/cloudctl/instances",
            "bridge": "cloudbr0",
            "virt_type": "kvm",
            "availability_zone": AZS[i % len(AZS)],
            "labels": {"rack": f"r{i // 40:02d}", "disk": "ssd" if i % 3 else "hdd"},
            "vcpus": 64,
            "memory_mb": 262_144,
            "local_gb": 4_000,
            "disk_available_gb": 3_500,
            "reserved_host_memory_mb": 4_096,
            "hypervisor_type": "QEMU",
            "hypervisor_version": 8_002_000,
            "libvirt_version": 9_000_000,
            "hypervisor_hostname": f"cmp-{i:05d}.example.net",
            "cpu_info": {
                "arch": "x86_64",
                "model": "EPYC-Rome",
                "virt_types": ["kvm", "qemu"],
                "features": ["avx2", "sse4.2", "vmx"],
            },
            "last_heartbeat": now,
            "created_at": now,
        }
        for i in range(n)
    ]


def _catalog(ctx: Context) -> None:
    """Flavors, the tiny image, a key pair, the groups and the quota, through the services
    where they are a handful of rows."""
    for name, (vcpus, ram, disk, extra) in FLAVORS.items():
        flavors.create_flavor(
            ctx, name, vcpus=vcpus, memory_mb=ram, root_gb=disk, extra_specs=extra
        )
    keypairs.add_keypair(ctx, "bench", PUBLIC_KEY)
    for name, (policy, limit) in GROUPS.items():
        server_groups.create_group(ctx, name, policy, limit)
    with ctx.db.unit_of_work() as s:
        s.add(
            Image(
                uuid="11111111-1111-4111-8111-111111111111",
                name="tiny",
                disk_format="qcow2",
                path="/images/disk",
                checksum="a" * 64,
                virtual_size_bytes=64 * 1024**2,
                kernel_path="/images/kernel",
                kernel_checksum="b" * 64,
                initrd_path="/images/initrd",
                initrd_checksum="c" * 64,
                cmdline="console=ttyS0",
            )
        )
        project = ctx.settings.project_id
        s.execute(
            insert(Quota),
            [
                {"project_id": project, "resource": r, "hard_limit": -1}
                for r in ("instances", "cores", "ram")
            ],
        )
        s.execute(
            insert(ManagedResource),
            [
                {"kind": kind, "name": name, "uuid": None, "estate": ESTATE}
                for kind, names in (
                    ("Flavor", FLAVORS),
                    ("Image", ("tiny",)),
                    ("KeyPair", ("bench",)),
                    ("ServerGroup", GROUPS),
                )
                for name in names
            ],
        )


def build_books(root: Path, hosts: int, servers: int, *, seed: int = SEED) -> Books:
    """Books holding ``servers`` ACTIVE servers over ``hosts`` hosts, and files declaring them.

    Servers are spread round-robin over the hosts of their document's AZ (all hosts when it
    names none), each document starting at its own offset, so no host is near full and no
    group is over its limit.
    """
    if servers % len(DOCS):
        raise ValueError(f"servers must be a multiple of {len(DOCS)}, got {servers}")
    rng = random.Random(seed)
    now = utcnow()
    ctx = make_context(root, now, seed)
    _catalog(ctx)
    per_doc = servers // len(DOCS)
    s = ctx.settings
    with ctx.db.unit_of_work() as session:
        session.execute(insert(Host), _host_rows(hosts, now, rng))
        host_rows = session.execute(
            select(Host.id, Host.name, Host.availability_zone).order_by(Host.name)
        ).all()
        flavor_ids = dict(session.execute(select(Flavor.name, Flavor.id)).all())
        group_ids = dict(session.execute(select(ServerGroup.name, ServerGroup.id)).all())
        image_id = session.scalars(select(Image.id)).one()
        instances: list[dict[str, Any]] = []
        allocations: list[dict[str, Any]] = []
        members: list[dict[str, Any]] = []
        owned: list[dict[str, Any]] = []
        per_host: dict[int, int] = {}
        for d, doc in enumerate(DOCS):
            vcpus, ram, disk, _ = FLAVORS[doc.flavor]
            res = resources_for(vcpus, ram, disk, 0, 0)
            candidates = [h for h in host_rows if doc.availability_zone in (None, h[2])]
            stopped = doc.power_state == "stopped"
            for index in range(1, per_doc + 1):
                host_id, _, az = candidates[(d * 37 + index) % len(candidates)]
                inst_uuid = _uuid(rng)
                name = doc.server(index)
                instances.append(
                    {
                        "uuid": inst_uuid,
                        "name": name,
                        "hostname": name,
                        "project_id": s.project_id,
                        "user_id": s.user_id,
                        "flavor_id": flavor_ids[doc.flavor],
                        "image_id": image_id,
                        "host_id": host_id,
                        "domain_name": f"instance-{inst_uuid}",
                        "vcpus": vcpus,
                        "memory_mb": ram,
                        "root_gb": disk,
                        "vm_state": VmState.STOPPED if stopped else VmState.ACTIVE,
                        "power_state": PowerState.SHUTDOWN if stopped else PowerState.RUNNING,
                        "availability_zone": az,
                        "key_name": doc.key,
                        "instance_metadata": dict(doc.metadata or {}),
                        "request_spec": {
                            "availability_zone": doc.availability_zone,
                            "force_host": None,
                            "group": None,
                            "hints": {},
                        },
                        "launched_at": now,
                        "created_at": now,
                    }
                )
                allocations += [
                    {
                        "host_id": host_id,
                        "consumer_uuid": inst_uuid,
                        "resource_class": rc,
                        "used": v,
                    }
                    for rc, v in res.items()
                ]
                if doc.group is not None:
                    members.append(
                        {
                            "group_id": group_ids[doc.group],
                            "instance_uuid": inst_uuid,
                            "created_at": now,
                        }
                    )
                owned.append({"kind": "Server", "name": name, "uuid": inst_uuid, "estate": ESTATE})
                per_host[host_id] = per_host.get(host_id, 0) + 1
        session.execute(insert(Instance), instances)
        session.execute(insert(Allocation), allocations)
        if members:
            session.execute(insert(ServerGroupMember), members)
        session.execute(insert(ManagedResource), owned)
        # Each claim moved its host's generation on.
        session.execute(
            update(Host),
            [{"id": host_id, "generation": n} for host_id, n in per_host.items()],
        )
    replicas = {doc.name: per_doc for doc in DOCS}
    path = root / "estate"
    write_files(path, replicas)
    return Books(ctx=ctx, path=path, hosts=hosts, servers=servers, replicas=replicas)


def write_files(path: Path, replicas: Mapping[str, int]) -> None:
    """The desired-state files: catalog, access, and one Server document per entry of DOCS."""
    path.mkdir(parents=True, exist_ok=True)
    head = "apiVersion: cloudctl.dev/v1\n"
    flavor_docs = []
    for name, (vcpus, ram, disk, extra) in FLAVORS.items():
        text = f"{head}kind: Flavor\nmetadata:\n  name: {name}\nspec:\n  vcpus: {vcpus}\n"
        text += f"  ram_mb: {ram}\n  disk_gb: {disk}\n"
        if extra:
            text += "  extra_specs:\n" + "".join(f'    {k}: "{v}"\n' for k, v in extra.items())
        flavor_docs.append(text)
    (path / "flavors.yaml").write_text("---\n".join(flavor_docs))
    (path / "images.yaml").write_text(
        f"{head}kind: Image\nmetadata:\n  name: tiny\nspec:\n  source: tiny\n"
    )
    access = [f"{head}kind: KeyPair\nmetadata:\n  name: bench\nspec:\n  public_key: {PUBLIC_KEY}\n"]
    for name, (policy, limit) in GROUPS.items():
        text = f"{head}kind: ServerGroup\nmetadata:\n  name: {name}\nspec:\n  policy: {policy}\n"
        access.append(text + (f"  max_per_host: {limit}\n" if limit is not None else ""))
    access.append(
        f"{head}kind: Quota\nmetadata:\n  name: default\nspec:\n"
        "  instances: -1\n  cores: -1\n  ram_mb: -1\n"
    )
    (path / "access.yaml").write_text("---\n".join(access))
    servers = []
    for doc in DOCS:
        lines = [
            f"{head}kind: Server",
            f"metadata:\n  name: {doc.name}\nspec:",
            f"  replicas: {replicas[doc.name]}",
            '  name_pattern: "{name}-{index:05d}"',
            f"  flavor: {doc.flavor}\n  image: tiny",
        ]
        if doc.key:
            lines.append(f"  key: {doc.key}")
        if doc.group:
            lines.append(f"  group: {doc.group}")
        if doc.availability_zone:
            lines.append(f"  availability_zone: {doc.availability_zone}")
        if doc.power_state != "running":
            lines.append(f"  power_state: {doc.power_state}")
        if doc.metadata:
            lines.append("  metadata:")
            lines += [f"    {k}: {v}" for k, v in doc.metadata.items()]
        servers.append("\n".join(lines) + "\n")
    (path / "servers.yaml").write_text("---\n".join(servers))


def add_drift(books: Books, changes: int) -> Drift:
    """``changes`` changes: a tenth power (servers stopped behind the files' back), a tenth
    metadata (edited by hand), the rest replicas up, spread over the documents."""
    power = max(1, changes // 10)
    metadata = max(1, changes // 10)
    creates = changes - power - metadata
    if creates < 1:
        raise ValueError(f"too few changes to mix: {changes}")
    expected: dict[tuple[str, str], str] = {}
    replicas = dict(books.replicas)
    for i in range(creates):
        doc = DOCS[i % len(DOCS)]
        replicas[doc.name] += 1
        expected[("Server", doc.server(replicas[doc.name]))] = "create"
    running = [doc for doc in DOCS if doc.power_state == "running"]
    # Distinct servers for the two kinds of edit: each is then one update of one field.
    picks = [
        running[i % len(running)].server(1 + (i * 7919) % books.replicas[running[0].name])
        for i in range(power + metadata)
    ]
    if len(set(picks)) != len(picks):
        raise ValueError("too many edits for the estate's size")
    stopped, edited = picks[:power], picks[power:]
    project = books.ctx.settings.project_id
    with books.ctx.db.unit_of_work() as session:
        live = (Instance.project_id == project, Instance.deleted == 0)
        session.execute(
            update(Instance)
            .where(Instance.name.in_(stopped), *live)
            .values(vm_state=VmState.STOPPED, power_state=PowerState.SHUTDOWN)
        )
        session.execute(
            update(Instance)
            .where(Instance.name.in_(edited), *live)
            .values(instance_metadata={"tier": "edited-by-hand"})
        )
    for name in [*stopped, *edited]:
        expected[("Server", name)] = "update"
    write_files(books.path, replicas)
    return Drift(expected)


def changes_of(plan: gitops.Plan) -> dict[tuple[str, str], str]:
    """(kind, name) -> action of every change the plan shows."""
    return {(c.kind, c.name): c.action for c in plan.diff.changes if c.is_change}


@dataclass(frozen=True)
class Timing:
    """A plan's seconds: the first (cold) run, and the median of the runs after it (wall
    time, the target's measure; and CPU time, steadier on a shared machine)."""

    first_s: float
    median_s: float
    runs_s: tuple[float, ...]
    cpu_median_s: float
    plan: gitops.Plan


def time_plan(books: Books, runs: int = RUNS) -> Timing:
    """``make_plan`` over the books' files: one warm-up run, then the median of ``runs``."""

    def once() -> tuple[float, float, gitops.Plan]:
        wall, cpu = time.perf_counter(), time.process_time()
        plan = gitops.make_plan(books.ctx, books.path)
        return time.perf_counter() - wall, time.process_time() - cpu, plan

    first, _, _ = once()
    timed = [once() for _ in range(runs)]
    return Timing(
        first_s=first,
        median_s=statistics.median(t for t, _, _ in timed),
        runs_s=tuple(t for t, _, _ in timed),
        cpu_median_s=statistics.median(c for _, c, _ in timed),
        plan=timed[-1][2],
    )


def profile(books: Books, top: int = 30) -> str:
    """A cProfile of one ``make_plan`` (cumulative time), for finding what to speed up."""
    profiler = cProfile.Profile()
    profiler.runcall(gitops.make_plan, books.ctx, books.path)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _row(
    workload: str, books: Books, timing: Timing, changes: int, target: float | None, ok: bool
) -> dict[str, Any]:
    return {
        "workload": workload,
        "servers": books.servers,
        "hosts": books.hosts,
        "changes": changes,
        "changes_as_intended": ok,
        "plan_errors": timing.plan.errors,
        "plan_s": round(timing.median_s, 3),
        "first_plan_s": round(timing.first_s, 3),
        "runs_s": [round(t, 3) for t in timing.runs_s],
        "cpu_s": round(timing.cpu_median_s, 3),
        "target_s": target,
        "target_met": None if target is None else ok and timing.median_s <= target,
    }


def measure(
    sizes: Sequence[int],
    hosts: int = HOSTS,
    *,
    runs: int = RUNS,
    on_books: Callable[[Books], None] | None = None,
) -> dict[str, Any]:
    """Every no-op size, then the 1% drift at the largest; rows, growth and compile time."""
    load = os.getloadavg()[0]  # other work on the machine shows in wall time, not CPU time
    compile_s = warm_up()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cloudctl-bench-plan-") as tmp:
        for n in sizes:
            books = build_books(Path(tmp) / f"n{n}", hosts, n)
            timing = time_plan(books, runs)
            noop = not timing.plan.has_changes and not timing.plan.errors
            target = TARGET_NOOP_S if n == TARGET_SERVERS else None
            rows.append(_row("no-op", books, timing, len(changes_of(timing.plan)), target, noop))
            print(json.dumps(rows[-1]), flush=True)
            if n == max(sizes):
                drift = add_drift(books, max(10, n // 100))
                timing = time_plan(books, runs)
                got = changes_of(timing.plan)
                ok = got == dict(drift.expected) and not timing.plan.errors
                target = TARGET_DRIFT_S if n == TARGET_SERVERS else None
                rows.append(_row("drift-1%", books, timing, len(got), target, ok))
                print(json.dumps(rows[-1]), flush=True)
                if on_books is not None:
                    on_books(books)
            books.ctx.db.dispose()
    return {
        "hosts": hosts,
        "cpus": os.cpu_count(),
        "load_average_1m_at_start": round(load, 2),
        "placement_kernel_compile_s": round(compile_s, 3),
        "growth": growth([r for r in rows if r["workload"] == "no-op"]),
        "rows": rows,
    }


def growth(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds per 1,000 servers: the least-squares slope over the no-op sizes (wall and CPU),
    and each size's seconds per 1,000."""
    xs = [r["servers"] / 1000 for r in rows]
    if len(rows) < 2:
        return {"seconds_per_1000_servers": None, "cpu_seconds_per_1000_servers": None}
    walls, cpus = [r["plan_s"] for r in rows], [r["cpu_s"] for r in rows]
    return {
        "seconds_per_1000_servers": round(statistics.linear_regression(xs, walls).slope, 4),
        "cpu_seconds_per_1000_servers": round(statistics.linear_regression(xs, cpus).slope, 4),
        "per_size": {
            str(r["servers"]): round(r["plan_s"] / x, 4) for r, x in zip(rows, xs, strict=True)
        },
        "ratio_largest_to_smallest": round(walls[-1] / walls[0], 2),
    }


def _verdict(row: Mapping[str, Any]) -> str:
    if row["target_met"] is None:
        return "-" if row["changes_as_intended"] else "WRONG PLAN"
    return "MET" if row["target_met"] else "MISSED"


def report(result: Mapping[str, Any]) -> str:
    """The printed table and the growth."""
    lines = [
        "plan        servers  hosts  changes  plan s  (first)   cpu s  target    verdict",
    ]
    for r in result["rows"]:
        target = f"<= {r['target_s']:g} s" if r["target_s"] is not None else "-"
        lines.append(
            f"{r['workload']:<10} {r['servers']:>8,} {r['hosts']:>6,} {r['changes']:>8} "
            f"{r['plan_s']:>7.3f} {r['first_plan_s']:>8.3f} {r['cpu_s']:>7.3f}  {target:<9} "
            f"{_verdict(r)}"
        )
    g = result["growth"]
    if g["seconds_per_1000_servers"] is not None:
        each = ", ".join(f"{int(n):,}: {s:.3f}" for n, s in g["per_size"].items())
        lines.append(
            f"growth: {g['seconds_per_1000_servers']:.3f} s per 1,000 servers "
            f"({g['cpu_seconds_per_1000_servers']:.3f} s CPU; least squares over the no-op "
            f"sizes); per 1,000 at each size: {each}; "
            f"largest/smallest {g['ratio_largest_to_smallest']}x"
        )
    lines.append(
        f"placement kernel compile (once per process, not in the times above): "
        f"{result['placement_kernel_compile_s']:.2f} s; {result['cpus']} CPUs, "
        f"load average {result['load_average_1m_at_start']} at the start"
    )
    return "\n".join(lines)


def _sizes() -> tuple[int, ...]:
    value = os.environ.get("CLOUDCTL_BENCH_PLAN_SIZES")
    return tuple(int(v) for v in value.split(",")) if value else SIZES


def run() -> dict[str, Any]:
    """Measure, print the table, write the JSON."""
    on_books = None
    if os.environ.get("CLOUDCTL_BENCH_PLAN_PROFILE"):

        def on_books(books: Books) -> None:
            print(profile(books))

    result = measure(_sizes(), on_books=on_books)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"results written to {RESULTS}")
    return result
