"""``python -m benchmarks`` (``make bench``): each workload, its reference, and the ratio.

``python -m benchmarks scheduler`` (``make bench-scheduler``) runs only the scheduler workloads
(placement W1/W2 and the concurrent claims).
"""

from __future__ import annotations

import os
import sys

from benchmarks import batching, scheduler, scheduler_workloads


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark (or only the scheduler workloads) and print its results."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["scheduler"]:
        scheduler_workloads.run()
        return
    if args:
        raise SystemExit(f"usage: python -m benchmarks [scheduler] (got {' '.join(args)})")
    scheduler.run()
    scheduler_workloads.run()
    batching.run(virt_type=os.environ.get("CLOUDCTL_BENCH_VIRT_TYPE", "kvm"))


if __name__ == "__main__":
    main()
