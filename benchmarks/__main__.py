"""``python -m benchmarks`` (``make bench``): each workload, its reference, and the ratio."""

from __future__ import annotations

import os

from benchmarks import batching, scheduler


def main() -> None:
    """Run every benchmark and print its results."""
    scheduler.run()
    batching.run(virt_type=os.environ.get("CLOUDCTL_BENCH_VIRT_TYPE", "kvm"))


if __name__ == "__main__":
    main()
