"""The scheduler workloads of the issue: placement (W1, W2) beside a reference, and claims.

``python -m benchmarks scheduler`` (``make bench-scheduler``) runs only these; figures are
printed and written to ``benchmarks/results/scheduler.json`` (one object per workload).
Sizes can be reduced through the environment (``CLOUDCTL_BENCH_W1_REFERENCE``,
``CLOUDCTL_BENCH_W2_REFERENCE``, ``CLOUDCTL_BENCH_BUDGET_S``: seconds cloudctl may spend on one
full run, 0 for no limit); nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import claims, placement

RESULTS = Path(__file__).resolve().parent / "results" / "scheduler.json"
SEED = 20261122


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def placement_rows() -> list[dict[str, Any]]:
    """W1 and W2; the reference runs a prefix when it would take too long."""
    budget = _env_int("CLOUDCTL_BENCH_BUDGET_S", 120)
    return [
        placement.run_workload(
            "W1",
            1_000,
            10_000,
            _env_int("CLOUDCTL_BENCH_W1_REFERENCE", 10_000),
            seed=SEED,
            budget_s=budget or None,
        ),
        placement.run_workload(
            "W2",
            10_000,
            10_000,
            _env_int("CLOUDCTL_BENCH_W2_REFERENCE", 300),
            seed=SEED + 1,
            budget_s=budget or None,
        ),
    ]


def claim_rows(processes: int = 4, per_process: int = 250, hosts: int = 20) -> list[dict[str, Any]]:
    """The claim race on SQLite and on PostgreSQL."""
    return [
        claims.sqlite_race(processes, per_process, hosts, SEED),
        claims.postgres_race(processes, per_process, hosts, SEED),
    ]


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def report(rows: Sequence[dict[str, Any]]) -> str:
    """The printed table."""
    lines = [
        "placement   hosts  requests  placed  dec/s      ref_k  ref dec/s  speedup  identical"
        "  target (dec/s, x)  verdict"
    ]
    for r in rows:
        if r["kind"] != "placement":
            continue
        target = f">= {r['target_decisions_per_s']:,.0f}, >= {r['target_speedup']}x"
        lines.append(
            f"{r['workload']:<10} {r['hosts']:>6} {r['requests']:>9} "
            f"{r['requests_placed_by_cloudctl']:>7} {r['decisions_per_s']:>9.1f} "
            f"{r['reference_requests']:>6} {r['reference_decisions_per_s']:>10.1f} "
            f"{r['speedup']:>7.2f}x {r['identical_placements']!s:>10}  {target:<18} "
            f"{_verdict(r['target_met'])}"
        )
        lines.append(
            f"{'':<10} cloudctl on the {r['reference_requests']}-request prefix: "
            f"{r['prefix_decisions_per_s']:.1f} dec/s; no valid host: {r['no_valid_host']}; "
            f"full run {'completed' if r['completed'] else 'STOPPED at the time budget'}"
        )
    lines.append(
        "claims             backend     procs  claims  committed  refused  conflicts  "
        "claims/s  over_commit  allocations_match"
    )
    for r in rows:
        if r["kind"] != "claims":
            continue
        lines.append(
            f"{r['workload']:<18} {r['backend']:<11} {r['processes']:>5} {r['claims']:>7} "
            f"{r['committed']:>10} {r['refused']:>8} {r['generation_conflicts']:>10} "
            f"{r['claims_per_s']:>9.1f} {r['over_commit']:>12} {r['allocations_match']!s:>18}"
        )
    return "\n".join(lines)


def run() -> list[dict[str, Any]]:
    """Run every workload, print the table, write the JSON."""
    rows: list[dict[str, Any]] = []
    for row in (*placement_rows(), *claim_rows()):
        print(json.dumps(row), flush=True)
        rows.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(report(rows))
    print(f"results written to {RESULTS}")
    return rows
