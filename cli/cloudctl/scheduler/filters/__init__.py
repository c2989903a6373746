"""Host filters: each a small class answering "can this host take this request, and why not"."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from cloudctl.scheduler.host_state import HostState, RequestSpec, class_key

#: How a placement session may evaluate a filter without calling ``host_passes`` per host:
#: ``static``: the verdict reads only the request and host facts that placing never changes
#: (cached per request class); ``usage``: the verdict is ``getattr(host, column) op value`` for
#: ``(column, op, value) = bound(spec)``, op ``ge`` or ``lt``; ``group``: only the hosts named
#: by ``group_hosts(spec)`` are affected; ``opaque``: none of these (the session then places the
#: request with the full pipeline).
SessionKind = Literal["static", "usage", "group", "opaque"]
#: ``(column, op, value)``: the host passes when ``getattr(host, column) >= value`` (``ge``) or
#: ``< value`` (``lt``).
Bound = tuple[str, Literal["ge", "lt"], float]


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
    #: See :data:`SessionKind`; third-party filters are ``opaque`` unless they say otherwise.
    session_kind: ClassVar[SessionKind] = "opaque"

    def applies(self, spec: RequestSpec) -> bool:
        """False when this filter passes every host for ``spec`` (the pipeline then skips it)."""
        return True

    @abstractmethod
    def host_passes(self, host: HostState, spec: RequestSpec) -> FilterResult:
        """Whether ``host`` can take one instance of ``spec``."""

    def static_key(self, spec: RequestSpec) -> object:
        """For ``static`` filters: the part of ``spec`` the verdict reads (hashable).

        Requests with equal keys share one evaluation over the hosts. The default, the whole
        request but its group, is always right; a narrower key only saves work.
        """
        return class_key(spec)

    def bound(self, spec: RequestSpec) -> Bound:
        """For ``usage`` filters: the one comparison that decides ``host_passes``.

        The column must be the same for every request; the value may depend on it.
        """
        raise NotImplementedError(f"{self.name} is not a usage filter")

    def group_hosts(self, spec: RequestSpec) -> tuple[frozenset[str] | None, frozenset[str]]:
        """For ``group`` filters: (only these hosts may pass, or None for any; these fail)."""
        raise NotImplementedError(f"{self.name} is not a group filter")
