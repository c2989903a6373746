"""Host filters: each a small class answering "can this host take this request, and why not"."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from cloudctl.scheduler.host_state import HostState, RequestSpec


@dataclass(frozen=True)
class FilterResult:
    """A filter's verdict with the numbers behind it."""

    passed: bool
    reason: str = ""


PASS = FilterResult(True)


class HostFilter(ABC):
    """Base of every filter (Nova's BaseHostFilter)."""

    name: ClassVar[str]
    #: Filters whose answer cannot change between instances of one request run once per request.
    run_filter_once_per_request: ClassVar[bool] = False

    def applies(self, spec: RequestSpec) -> bool:
        """False when this filter passes every host for ``spec`` (the pipeline then skips it)."""
        return True

    @abstractmethod
    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Whether ``host`` can take one instance of ``spec``."""
