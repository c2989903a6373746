"""Use cases: the only layer that combines scheduler, ledger, render, executor and db."""
