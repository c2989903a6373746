"""A placement session: many requests over one set of hosts, at the speed of the machine.

:meth:`FilterScheduler.select` filters and weighs every host in Python, which costs a few
milliseconds per decision at a thousand hosts. A :class:`PlacementSession` keeps what the
plugins read in NumPy columns (each weigher's raw score, each ``usage`` filter's column), and
places each instance with one compiled pass over them (:mod:`cloudctl.scheduler._kernel`):

* ``static`` filters are evaluated once per request class (a request minus its server group)
  with ``host_passes`` and kept as a mask;
* ``usage`` filters become one comparison each (``bound``), ``group`` filters a mask of the
  few hosts their group names, and ``host`` weighers read their column;
* after each pick the session refreshes the chosen host's columns; a caller that changes a host
  itself (a build finishes, a host is disabled) says so with :meth:`host_changed`.

Decisions are those of :meth:`FilterScheduler.select` on the same hosts, bit for bit: the same
filters, the same normalisation and float operations in the same order, ties to the host name,
the same ``rng`` draws for ``host_subset_size``. A request that an ``opaque`` plugin applies to
goes through ``select`` itself, as does the error path (so the message is the same too).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cloudctl.errors import NoValidHost
from cloudctl.scheduler import _kernel
from cloudctl.scheduler.filters import HostFilter
from cloudctl.scheduler.host_state import ClassKey, HostState, RequestSpec, class_key
from cloudctl.scheduler.pipeline import FilterScheduler, Selection, WeighedHost, describe_rejections
from cloudctl.scheduler.weighers import HostWeigher


@dataclass
class _RequestClass:
    """What one request class needs from the columns, computed once."""

    fast: bool
    group_filters: tuple[HostFilter, ...]
    weighers: tuple[tuple[HostWeigher, float], ...]
    names: tuple[str, ...]
    #: The kernel's ``plan`` and ``limits`` (see :mod:`cloudctl.scheduler._kernel`).
    plan: np.ndarray
    limits: np.ndarray
    #: Incremental state for :func:`cloudctl.scheduler._kernel.place_py`.
    state: np.ndarray
    snap: np.ndarray
    floats: np.ndarray
    ints: np.ndarray


#: Request classes with at least this many candidate hosts use the incremental kernel.
INCREMENTAL_FROM = 3000


class PlacementSession:
    """Place request after request over ``hosts`` (mutated as :meth:`FilterScheduler.select`)."""

    def __init__(self, scheduler: FilterScheduler, hosts: Sequence[HostState]) -> None:
        self.scheduler = scheduler
        self.hosts = list(hosts)
        self._ordered = sorted(self.hosts, key=lambda h: h.name)
        self._index = {h.name: i for i, h in enumerate(self._ordered)}
        n = len(self._ordered)
        self._weighers = [w for w, _ in scheduler.weighers if w.session_kind == "host"]
        self._wrow = {id(w): r for r, w in enumerate(self._weighers)}
        self._raw = np.zeros((n, len(self._weighers)), dtype=np.float64)
        self._columns: dict[str, int] = {}
        self._cols = np.zeros((n, 0), dtype=np.float64)
        for f in scheduler.filters:
            if f.session_kind == "usage":
                self._column(f.bound(RequestSpec(vcpus=0, memory_mb=0, disk_gb=0))[0])
        self._classes: dict[ClassKey, _RequestClass] = {}
        self._static_masks: dict[tuple[int, object], np.ndarray] = {}
        self._all = np.ones(n, dtype=np.bool_)
        self._keep = max(scheduler.host_subset_size, scheduler.max_alternates + 1)
        n_w = len(scheduler.weighers)
        self._out = np.zeros(3 * n_w + self._keep * (n_w + 2), dtype=np.float64)
        self._out_idx = np.zeros(self._keep, dtype=np.int64)
        #: Hosts changed, in order (the classes replay it); a host's last position in it.
        self._log = np.zeros(max(4096, 4 * n), dtype=np.int64)
        self._log_len = 0
        self._stamp = np.full(n, -1, dtype=np.int64)
        self._logging = False
        for i in range(n):
            self._refresh(i)

    def _column(self, name: str) -> int:
        row = self._columns.get(name)
        if row is None:
            row = self._columns[name] = len(self._columns)
            grown = np.zeros((len(self._ordered), row + 1), dtype=np.float64)
            grown[:, :row] = self._cols
            for i, h in enumerate(self._ordered):
                grown[i, row] = getattr(h, name)
            self._cols = grown
        return row

    def _refresh(self, i: int) -> None:
        host = self._ordered[i]
        self._raw[i] = [w.weigh(host, _PROBE) for w in self._weighers]
        self._cols[i] = [getattr(host, name) for name in self._columns]
        if not self._logging:
            return  # no incremental class yet; one made later starts from the columns
        if self._log_len == len(self._log):
            # The log is full: every class rebuilds its state from the columns once.
            self._log_len = 0
            self._stamp.fill(-1)
            for rc in self._classes.values():
                rc.ints[_kernel.I_READY] = 0
        self._log[self._log_len] = i
        self._stamp[i] = self._log_len
        self._log_len += 1

    def host_changed(self, name: str, *, facts: bool = False) -> None:
        """Tell the session a host's usage changed outside it (e.g. a build finished).

        ``facts``: something static filters read changed too (enabled, up, AZ, labels...).
        """
        i = self._index[name]
        self._refresh(i)
        if facts:
            self._classes.clear()
            self._static_masks.clear()

    def _request_class(self, spec: RequestSpec) -> _RequestClass:
        key = class_key(spec)
        found = self._classes.get(key)
        if found is not None:
            return found
        filters = [f for f in self.scheduler.filters if f.applies(spec)]
        weighers = [(w, m) for w, m in self.scheduler.weighers if w.applies(spec)]
        fast = all(f.session_kind != "opaque" for f in filters) and all(
            w.session_kind == "host" for w, _ in weighers
        )
        static = self._all.copy()
        ge: list[tuple[int, float]] = []
        lt: list[tuple[int, float]] = []
        if fast:
            for f in filters:
                if f.session_kind == "static":
                    static &= self._static_mask(f, spec)
                elif f.session_kind == "usage":
                    column, op, value = f.bound(spec)
                    (lt if op == "lt" else ge).append((self._column(column), float(value)))
        candidates = np.flatnonzero(static).astype(np.int64)
        plan = np.array(
            [
                len(weighers),
                len(ge),
                len(lt),
                len(candidates),
                self._keep,
                *(self._wrow.get(id(w), -1) for w, _ in weighers),
                *(r for r, _ in ge),
                *(r for r, _ in lt),
            ],
            dtype=np.int64,
        )
        made = _RequestClass(
            fast=fast,
            group_filters=tuple(f for f in filters if f.session_kind == "group"),
            weighers=tuple(weighers),
            names=tuple(w.name for w, _ in weighers),
            plan=np.concatenate([plan, candidates]),
            limits=np.array(
                [*(m for _, m in weighers), *(v for _, v in ge), *(v for _, v in lt)],
                dtype=np.float64,
            ),
            state=np.full(len(self._ordered), -1, dtype=np.int8),
            snap=np.zeros((len(self._ordered), len(weighers)), dtype=np.float64),
            floats=_kernel.class_floats(len(weighers)),
            ints=_kernel.class_ints(len(weighers)),
        )
        self._classes[key] = made
        return made

    def _static_mask(self, flt: HostFilter, spec: RequestSpec) -> np.ndarray:
        """``flt``'s verdict on every host, shared by the classes it reads the same of."""
        key = (id(flt), flt.static_key(spec))
        mask = self._static_masks.get(key)
        if mask is None:
            mask = np.fromiter(
                (flt.host_passes(h, spec).passed for h in self._ordered),
                dtype=np.bool_,
                count=len(self._ordered),
            )
            self._static_masks[key] = mask
        return mask

    def _group_mask(self, rc: _RequestClass, spec: RequestSpec) -> np.ndarray:
        if not rc.group_filters:
            return self._all
        mask = self._all
        for f in rc.group_filters:
            allowed, denied = f.group_hosts(spec)
            if allowed is None and not denied:
                continue
            if mask is self._all:
                mask = self._all.copy()
            if allowed is not None:
                keep = np.zeros(len(self._ordered), dtype=np.bool_)
                for name in allowed:
                    i = self._index.get(name)
                    if i is not None:
                        keep[i] = mask[i]
                mask = keep
            for name in denied:
                i = self._index.get(name)
                if i is not None:
                    mask[i] = False
        return mask

    def select(
        self, spec: RequestSpec, count: int | None = None, *, min_count: int | None = None
    ) -> list[Selection]:
        """As :meth:`FilterScheduler.select` over the session's hosts, with the same results."""
        rc = self._request_class(spec)
        if not rc.fast:
            picked = self.scheduler.select(self.hosts, spec, count, min_count=min_count)
            for s in picked:
                self._refresh(self._index[s.host.name])
            return picked
        wanted = spec.num_instances if count is None else count
        scheduler = self.scheduler
        subset_size = scheduler.host_subset_size
        selections: list[Selection] = []
        # Keeping a ranking up to date pays off on big classes; a plain scan is quicker below.
        incremental = self._keep <= _kernel.CACHE and rc.plan[3] >= INCREMENTAL_FROM
        for index in range(wanted):
            extra = self._group_mask(rc, spec)
            if incremental and extra is self._all:
                passed = self._place(rc)
            else:
                passed = self._scan(rc, extra)
            if not passed:
                if min_count is not None and index >= min_count:
                    return selections
                raise self._no_valid_host(spec, index, wanted)
            weighed = self._weighed(rc)
            subset = weighed[:subset_size]
            chosen = subset[0] if len(subset) == 1 else scheduler.rng.choice(subset)
            i = self._index[chosen.host]
            host = self._ordered[i]
            host.consume(spec)
            if spec.group is not None:
                spec.group.members_per_host[host.name] += 1
            self._refresh(i)
            alternates = tuple(w.host for w in weighed if w.host != chosen.host)[
                : scheduler.max_alternates
            ]
            selections.append(Selection(host, alternates, tuple(weighed), ()))
        return selections

    def _scan(self, rc: _RequestClass, extra: np.ndarray) -> int:
        return _kernel.scan(
            self._raw, self._cols, extra, rc.plan, rc.limits, self._out, self._out_idx
        )

    def _place(self, rc: _RequestClass) -> int:
        self._logging = True
        return _kernel.place(
            self._raw,
            self._cols,
            rc.plan,
            rc.limits,
            self._log,
            self._log_len,
            self._stamp,
            rc.state,
            rc.snap,
            rc.floats,
            rc.ints,
            self._out,
            self._out_idx,
        )

    def _weighed(self, rc: _RequestClass) -> list[WeighedHost]:
        """The kernel's best hosts with their totals and per-weigher weights."""
        keep = self._keep
        n_w = len(rc.names)
        start = 3 * n_w + keep
        values = self._out[start : start + keep * (n_w + 1)].tolist()
        weighed: list[WeighedHost] = []
        for k, i in enumerate(self._out_idx[:keep].tolist()):
            if i < 0:
                break
            row = values[keep + k * n_w : keep + (k + 1) * n_w]
            weighed.append(
                WeighedHost(self._ordered[i].name, values[k], dict(zip(rc.names, row, strict=True)))
            )
        return weighed

    def _no_valid_host(self, spec: RequestSpec, index: int, wanted: int) -> NoValidHost:
        """The pipeline's error for this state, with its per-filter counts."""
        scheduler = self.scheduler
        hosts = self.hosts
        if index:
            once = [f for f in scheduler.filters if f.run_filter_once_per_request]
            hosts = [h for h in hosts if all(f.host_passes(h, spec).passed for f in once)]
        _, rejections = scheduler.filter_hosts(hosts, spec)
        return NoValidHost(
            reason=describe_rejections(len(self.hosts), rejections, index, wanted),
            rejections=[(r.host, r.filter, r.reason) for r in rejections],
        )


_PROBE = RequestSpec(vcpus=0, memory_mb=0, disk_gb=0)


def warm_up() -> float:
    """Compile the kernel now (it compiles on first use otherwise); returns the seconds taken."""
    start = time.perf_counter()
    one = RequestSpec(vcpus=1, memory_mb=1, disk_gb=1)
    hosts = [HostState(f"warm-up-{i}", "", "az", True, True, 1, 1, 1) for i in range(2)]
    session = PlacementSession(FilterScheduler([], []), hosts)
    rc = session._request_class(one)
    session._scan(rc, session._all)
    session._place(rc)
    return time.perf_counter() - start
