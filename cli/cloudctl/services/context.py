"""What every use case receives: settings, database, executor, clock, randomness and progress."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from cloudctl.db.models import utcnow
from cloudctl.db.session import Database
from cloudctl.domain.settings import Settings
from cloudctl.executor.base import Executor, RunEvent

if TYPE_CHECKING:
    from cloudctl.services.leases import Lease


class Progress(Protocol):
    """Where services report what they are doing (the console implements it)."""

    def info(self, message: str) -> None:
        """A step of the use case."""
        ...

    def run_event(self, event: RunEvent) -> None:
        """An executor event while Ansible runs."""
        ...


class NullProgress:
    """Reports nothing (tests, JSON output)."""

    def info(self, message: str) -> None:
        """Ignore."""

    def run_event(self, event: RunEvent) -> None:
        """Ignore."""


@dataclass
class Context:
    """The dependencies of a use case, passed in rather than read from globals."""

    settings: Settings
    db: Database
    executor_factory: Callable[[], Executor]
    progress: Progress = field(default_factory=NullProgress)
    clock: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)
    #: The lease of the command running in this context (services/leases.py), while it runs.
    lease: Lease | None = None
    _executor: Executor | None = None

    @property
    def executor(self) -> Executor:
        """The executor, built on first use (most read-only commands never need it)."""
        if self._executor is None:
            self._executor = self.executor_factory()
        return self._executor
