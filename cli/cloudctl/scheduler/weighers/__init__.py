"""Host weighers: raw scores that the pipeline normalises to 0..1 and multiplies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from cloudctl.scheduler.host_state import HostState, RequestSpec


class HostWeigher(ABC):
    """Base of every weigher (Nova's BaseHostWeigher); higher is better before the multiplier."""

    name: ClassVar[str]
    default_multiplier: ClassVar[float] = 1.0

    def applies(self, spec: RequestSpec) -> bool:
        """False when every host scores the same for ``spec`` (it would normalise to 0)."""
        return True

    @abstractmethod
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """A raw score for ``host``."""
