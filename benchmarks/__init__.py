"""cloudctl's benchmarks: each workload against a naive reference run in the same process."""
