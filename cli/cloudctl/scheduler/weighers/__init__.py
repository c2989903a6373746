"""Host weighers: raw scores that the pipeline normalises to 0..1 and multiplies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

from cloudctl.scheduler.host_state import HostState, RequestSpec


class HostWeigher(ABC):
    """Base of every weigher (Nova's BaseHostWeigher); higher is better before the multiplier."""

    name: ClassVar[str]
    default_multiplier: ClassVar[float] = 1.0
    #: ``host``: the raw score reads only the host (not the request), so a placement session
    #: can keep it per host and refresh it when the host changes; ``opaque``: anything else.
    session_kind: ClassVar[Literal["host", "opaque"]] = "opaque"

    def applies(self, spec: RequestSpec) -> bool:
        """False when every host scores the same for ``spec`` (it would normalise to 0)."""
        return True

    @abstractmethod
    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """A raw score for ``host``."""
