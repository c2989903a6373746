"""``python -m benchmarks`` (``make bench``): each workload, its reference, and the ratio.

``python -m benchmarks scheduler`` (``make bench-scheduler``) runs only the scheduler workloads
(placement W1/W2 and the concurrent claims); ``python -m benchmarks plan`` only the plan at
scale (10,000 servers over 1,000 hosts); ``python -m benchmarks apply`` only the apply of
20 guests over a 4-host lab beside one playbook run per guest (``apply kvm`` or ``apply tcg``:
one kind of guest only).
"""

from __future__ import annotations

import os
import sys

from benchmarks import apply, batching, plan, scheduler, scheduler_workloads


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark (or only one group of workloads) and print its results."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["scheduler"]:
        scheduler_workloads.run()
        return
    if args == ["plan"]:
        plan.run()
        return
    if args[:1] == ["apply"]:
        apply.main(args[1:])
        return
    if args:
        raise SystemExit(
            f"usage: python -m benchmarks [scheduler|plan|apply [kvm|tcg]] (got {' '.join(args)})"
        )
    scheduler.run()
    scheduler_workloads.run()
    plan.run()
    batching.run(virt_type=os.environ.get("CLOUDCTL_BENCH_VIRT_TYPE", "kvm"))
    apply.run()


if __name__ == "__main__":
    main()
