"""The placement session's inner loop: filter and weigh every host of one request, compiled.

:func:`scan_py` is plain Python over NumPy arrays and defines the semantics; :data:`scan` is the
same function compiled by Numba. Exact totals use the pipeline's float arithmetic operation by
operation, ``((raw - lo) / span) * multiplier`` summed in weigher order from 0.0, with no
reassociation and no fused multiply-add (Numba compiles without fast-math), so the session and
:meth:`FilterScheduler.select` pick bit-identical scores and hosts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numba
import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float64]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


#: Layout of the packed arrays :func:`scan_py` takes (fewer arguments: cheaper calls).
#: ``plan`` (int64): n_weighers, n_ge, n_lt, n_candidates, keep, then the weigher columns,
#: the ``ge`` columns, the ``lt`` columns and the candidate hosts (ascending).
#: ``limits`` (float64): the multipliers, then the ``ge`` thresholds, then the ``lt`` ones.
#: ``out`` (float64, 3 * n_weighers + keep * (n_weighers + 2)): each weigher's lo and hi,
#: unused room, then the best ``keep`` totals and their weights (keep x n_weighers).
#: ``out_idx`` (int64, keep): the best ``keep`` hosts, -1 where fewer passed.
HEADER = 5


def _unpack(
    plan: IntArray, limits: FloatArray
) -> tuple[int, int, IntArray, IntArray, FloatArray, IntArray, FloatArray, FloatArray, IntArray]:
    """Split the packed ``plan``/``limits`` (see :data:`HEADER`) into their parts."""
    n_w = plan[0]
    n_ge = plan[1]
    n_lt = plan[2]
    n_cand = plan[3]
    p_ge = HEADER + n_w
    p_lt = p_ge + n_ge
    p_cand = p_lt + n_lt
    return (
        n_w,
        plan[4],
        plan[HEADER:p_ge].copy(),
        plan[p_ge:p_lt].copy(),
        limits[n_w : n_w + n_ge].copy(),
        plan[p_lt:p_cand].copy(),
        limits[n_w + n_ge : n_w + n_ge + n_lt].copy(),
        limits[:n_w].copy(),
        plan[p_cand : p_cand + n_cand].copy(),
    )


def scan_py(
    raw: FloatMatrix,
    cols: FloatMatrix,
    extra: BoolArray,
    plan: IntArray,
    limits: FloatArray,
    out: FloatArray,
    out_idx: IntArray,
) -> int:
    """Place one instance; returns how many hosts passed (0: none).

    ``raw`` and ``cols`` hold one row per host (weigher scores, usage columns). A candidate
    host ``i`` passes when ``extra[i]`` holds, ``cols[i, g] >= threshold`` for each ``ge``
    column ``g`` and ``cols[i, l] < threshold`` for each ``lt`` column. Over the passing hosts
    each weigher's range gives its normalisation, and the best ``keep`` hosts (ties to the lower
    index: hosts are sorted by name) are written to ``out``/``out_idx`` with their totals and
    per-weigher weights, exactly as the pipeline computes them.
    """
    n_w, keep, wcols, ge_cols, ge_thr, lt_cols, lt_thr, mult, cands = _unpack(plan, limits)
    n_cand = cands.shape[0]
    members = np.empty(n_cand, dtype=np.int64)
    n = 0
    for k in range(n_cand):
        i = cands[k]
        if not extra[i]:
            continue
        # Inline rather than _passes(): a call per host made the whole scan a third slower.
        ok = True
        for c in range(ge_cols.shape[0]):
            if not cols[i, ge_cols[c]] >= ge_thr[c]:
                ok = False
                break
        if ok:
            for c in range(lt_cols.shape[0]):
                if not cols[i, lt_cols[c]] < lt_thr[c]:
                    ok = False
                    break
        if ok:
            members[n] = i
            n += 1
    o_tot = 3 * n_w + keep
    o_weights = o_tot + keep
    for k in range(keep):
        out_idx[k] = -1
        out[o_tot + k] = -np.inf
    if n == 0:
        return 0
    lo = np.empty(n_w)
    hi = np.empty(n_w)
    span = np.empty(n_w)
    scale = np.empty(n_w)
    total_mult = 1.0
    for w in range(n_w):
        col = wcols[w]
        low = np.inf
        high = -np.inf
        for m in range(n):
            x = raw[members[m], col]
            low = min(low, x)
            high = max(high, x)
        lo[w] = low
        hi[w] = high
        span[w] = high - low
        # Scaling by a reciprocal is within a few ulps of the exact division and much
        # cheaper: the exact total (the pipeline's) is computed only near the approximate best.
        scale[w] = mult[w] / span[w] if span[w] != 0.0 else 0.0
        total_mult += abs(mult[w])
        out[w] = low
        out[n_w + w] = high
    approx = np.zeros(n)
    for w in range(n_w):
        col = wcols[w]
        low = lo[w]
        sc = scale[w]
        for m in range(n):
            approx[m] += (raw[members[m], col] - low) * sc
    top = np.full(keep, -np.inf)
    last = keep - 1
    for m in range(n):
        t = approx[m]
        if t > top[last]:
            j = last
            while j > 0 and t > top[j - 1]:
                top[j] = top[j - 1]
                j -= 1
            top[j] = t
    # Each approximate total is within about 1e-15 * sum(|multiplier|) of the exact one, so
    # every host of the exact best ``keep`` lies within twice that of the approximate k-th.
    cut = top[last] - 1e-9 * total_mult
    for m in range(n):
        if approx[m] < cut:
            continue
        i = members[m]
        t = 0.0
        for w in range(n_w):
            if span[w] != 0.0:
                t += (raw[i, wcols[w]] - lo[w]) / span[w] * mult[w]
        if out_idx[last] != -1 and not t > out[o_tot + last]:
            continue
        j = last
        while j > 0 and (out_idx[j - 1] == -1 or t > out[o_tot + j - 1]):
            out_idx[j] = out_idx[j - 1]
            out[o_tot + j] = out[o_tot + j - 1]
            j -= 1
        out_idx[j] = i
        out[o_tot + j] = t
    for k in range(keep):
        i = out_idx[k]
        if i < 0:
            break
        for w in range(n_w):
            value = 0.0
            if span[w] != 0.0:
                value = (raw[i, wcols[w]] - lo[w]) / span[w]
            out[o_weights + k * n_w + w] = value * mult[w]
    return n


#: Room for cached candidates per request class (:func:`place_py`).
CACHE = 64
#: A cached ranking is dropped once this many host changes have piled up since it was made.
STALE = 512
#: ``ints`` layout of a request class (:func:`place_py`): cursor into the change log, the log
#: position of the cached ranking, cached hosts (-1: none), members, initialised, complete,
#: then per weigher the hosts at lo and at hi, then the cached hosts.
I_CURSOR, I_SCAN, I_CACHED, I_MEMBERS, I_READY, I_COMPLETE = range(6)
I_HEAD = 6


def class_ints(n_weighers: int) -> IntArray:
    """A fresh ``ints`` array for one request class."""
    ints = np.zeros(I_HEAD + 2 * n_weighers + CACHE, dtype=np.int64)
    ints[I_CACHED] = -1
    return ints


def class_floats(n_weighers: int) -> FloatArray:
    """A fresh ``floats`` array for one request class: lo, hi, cached lo, cached hi, scores."""
    return np.zeros(4 * n_weighers + CACHE, dtype=np.float64)


def _passes(
    cols: FloatMatrix,
    i: int,
    ge_cols: IntArray,
    ge_thr: FloatArray,
    lt_cols: IntArray,
    lt_thr: FloatArray,
) -> bool:
    for c in range(ge_cols.shape[0]):
        if not cols[i, ge_cols[c]] >= ge_thr[c]:
            return False
    for c in range(lt_cols.shape[0]):  # noqa: SIM110 - a plain loop compiles to a plain loop
        if not cols[i, lt_cols[c]] < lt_thr[c]:
            return False
    return True


def _extremes(
    snap: FloatMatrix,
    state: npt.NDArray[np.int8],
    cands: IntArray,
    w: int,
    floats: FloatArray,
    ints: IntArray,
    n_w: int,
) -> None:
    """Recount weigher ``w``'s lo and hi over the class's members (from their snapshots)."""
    low = np.inf
    high = -np.inf
    n_low = 0
    n_high = 0
    for k in range(cands.shape[0]):
        i = cands[k]
        if state[i] != 1:
            continue
        x = snap[i, w]
        if x < low:
            low = x
            n_low = 1
        elif x == low:
            n_low += 1
        if x > high:
            high = x
            n_high = 1
        elif x == high:
            n_high += 1
    floats[w] = low
    floats[n_w + w] = high
    ints[I_HEAD + w] = n_low
    ints[I_HEAD + n_w + w] = n_high


def _exact(
    raw: FloatMatrix, i: int, wcols: IntArray, lo: FloatArray, span: FloatArray, mult: FloatArray
) -> float:
    """The pipeline's total for host ``i``, operation by operation."""
    t = 0.0
    for w in range(wcols.shape[0]):
        if span[w] != 0.0:
            t += (raw[i, wcols[w]] - lo[w]) / span[w] * mult[w]
    return t


def _insert(idx: IntArray, tot: FloatArray, size: int, i: int, t: float) -> None:
    """Put host ``i`` (total ``t``) into the ranking ``idx``/``tot``: total desc, index asc."""
    last = size - 1
    if idx[last] != -1 and not (t > tot[last] or (t == tot[last] and i < idx[last])):
        return
    j = last
    while j > 0 and (idx[j - 1] == -1 or t > tot[j - 1] or (t == tot[j - 1] and i < idx[j - 1])):
        idx[j] = idx[j - 1]
        tot[j] = tot[j - 1]
        j -= 1
    idx[j] = i
    tot[j] = t


def place_py(
    raw: FloatMatrix,
    cols: FloatMatrix,
    plan: IntArray,
    limits: FloatArray,
    log: IntArray,
    log_len: int,
    stamp: IntArray,
    state: npt.NDArray[np.int8],
    snap: FloatMatrix,
    floats: FloatArray,
    ints: IntArray,
    out: FloatArray,
    out_idx: IntArray,
) -> int:
    """:func:`scan_py`'s answer for a request without group exclusions, kept up incrementally.

    The request class remembers its members (``state``: 1 member, 0 static candidate that
    fails a usage filter), their weigher scores as last seen (``snap``), each weigher's lo and
    hi with how many members hold them, and a ranking of its best :data:`CACHE` members. Each
    call first replays the hosts changed since (``log[cursor:log_len]``; ``stamp[i]`` is the
    log position of host ``i``'s last change), recounting an extreme only when its last holder
    left. While lo and hi are those of the ranking, the hosts that did not change keep their
    exact totals and their order, so the best of them are the first unchanged ranked hosts;
    the changed ones are scored afresh. Otherwise, or when the ranking runs out, the class is
    ranked again from scratch. Returns the number of members (0: none; nothing written).
    """
    n_w, keep, wcols, ge_cols, ge_thr, lt_cols, lt_thr, mult, cands = _unpack(plan, limits)
    n_cand = cands.shape[0]
    o_lo = I_HEAD
    o_hi = I_HEAD + n_w
    o_cache = I_HEAD + 2 * n_w
    dirty = False
    if ints[I_READY] == 0:
        members = 0
        for k in range(n_cand):
            i = cands[k]
            ok = _passes(cols, i, ge_cols, ge_thr, lt_cols, lt_thr)
            state[i] = 1 if ok else 0
            if ok:
                members += 1
                for w in range(n_w):
                    snap[i, w] = raw[i, wcols[w]]
        for w in range(n_w):
            _extremes(snap, state, cands, w, floats, ints, n_w)
        ints[I_MEMBERS] = members
        ints[I_READY] = 1
        ints[I_CACHED] = -1
    else:
        members = ints[I_MEMBERS]
        for p in range(ints[I_CURSOR], log_len):
            i = log[p]
            if state[i] < 0:
                continue
            if state[i] == 1:
                members -= 1
                for w in range(n_w):
                    x = snap[i, w]
                    if x == floats[w]:
                        ints[o_lo + w] -= 1
                    if x == floats[n_w + w]:
                        ints[o_hi + w] -= 1
            ok = _passes(cols, i, ge_cols, ge_thr, lt_cols, lt_thr)
            state[i] = 1 if ok else 0
            if ok:
                members += 1
                for w in range(n_w):
                    x = raw[i, wcols[w]]
                    snap[i, w] = x
                    if x < floats[w]:
                        floats[w] = x
                        ints[o_lo + w] = 1
                    elif x == floats[w]:
                        ints[o_lo + w] += 1
                    if x > floats[n_w + w]:
                        floats[n_w + w] = x
                        ints[o_hi + w] = 1
                    elif x == floats[n_w + w]:
                        ints[o_hi + w] += 1
        for w in range(n_w):
            if ints[o_lo + w] <= 0 or ints[o_hi + w] <= 0:
                _extremes(snap, state, cands, w, floats, ints, n_w)
        ints[I_MEMBERS] = members
    ints[I_CURSOR] = log_len
    o_tot = 3 * n_w + keep
    o_weights = o_tot + keep
    for k in range(keep):
        out_idx[k] = -1
        out[o_tot + k] = -np.inf
    if members == 0:
        return 0
    lo = floats[:n_w].copy()
    hi = floats[n_w : 2 * n_w].copy()
    span = hi - lo
    for w in range(n_w):
        out[w] = lo[w]
        out[n_w + w] = hi[w]
    same = ints[I_CACHED] >= 0 and log_len - ints[I_SCAN] <= STALE
    if same:
        for w in range(n_w):
            if lo[w] != floats[2 * n_w + w] or hi[w] != floats[3 * n_w + w]:
                same = False
                break
    best_idx = out_idx[:keep]
    best_tot = out[o_tot : o_tot + keep]
    if same:
        scan_at = ints[I_SCAN]
        for p in range(scan_at, log_len):
            i = log[p]
            if state[i] != 1 or stamp[i] != p:
                continue  # not a member, or a later entry of the same host scores it
            _insert(best_idx, best_tot, keep, i, _exact(raw, i, wcols, lo, span, mult))
        found = 0
        cached = ints[I_CACHED]
        for k in range(cached):
            i = ints[o_cache + k]
            if stamp[i] >= scan_at:
                continue
            _insert(best_idx, best_tot, keep, i, floats[4 * n_w + k])
            found += 1
            if found == keep:
                break
        dirty = found < keep and ints[I_COMPLETE] == 0
    if not same or dirty:
        # Rank every member: approximate totals (reciprocal scaling, within ~1e-15 of the
        # exact ones) find the CACHE-th best; exact totals for everything near or above it.
        scale = np.empty(n_w)
        total_mult = 1.0
        for w in range(n_w):
            scale[w] = mult[w] / span[w] if span[w] != 0.0 else 0.0
            total_mult += abs(mult[w])
        size = min(CACHE, members)
        top = np.full(size, -np.inf)
        approx = np.empty(n_cand)
        for k in range(n_cand):
            i = cands[k]
            if state[i] != 1:
                continue
            t = 0.0
            for w in range(n_w):
                t += (raw[i, wcols[w]] - lo[w]) * scale[w]
            approx[k] = t
            if t > top[size - 1]:
                j = size - 1
                while j > 0 and t > top[j - 1]:
                    top[j] = top[j - 1]
                    j -= 1
                top[j] = t
        cut = top[size - 1] - 1e-9 * total_mult
        cache_idx = ints[o_cache : o_cache + size]
        cache_tot = floats[4 * n_w : 4 * n_w + size]
        for k in range(size):
            cache_idx[k] = -1
            cache_tot[k] = -np.inf
        for k in range(n_cand):
            i = cands[k]
            if state[i] != 1 or approx[k] < cut:
                continue
            _insert(cache_idx, cache_tot, size, i, _exact(raw, i, wcols, lo, span, mult))
        ints[I_CACHED] = size
        ints[I_SCAN] = log_len
        ints[I_COMPLETE] = 1 if size == members else 0
        for w in range(n_w):
            floats[2 * n_w + w] = lo[w]
            floats[3 * n_w + w] = hi[w]
        for k in range(keep):
            out_idx[k] = -1
            out[o_tot + k] = -np.inf
        for k in range(min(keep, size)):
            out_idx[k] = cache_idx[k]
            out[o_tot + k] = cache_tot[k]
    for k in range(keep):
        i = out_idx[k]
        if i < 0:
            break
        for w in range(n_w):
            value = 0.0
            if span[w] != 0.0:
                value = (raw[i, wcols[w]] - lo[w]) / span[w]
            out[o_weights + k * n_w + w] = value * mult[w]
    return members


ScanFn = Callable[..., int]


_jit = numba.njit(cache=True, nogil=True, fastmath=False)
# The helpers are called by name from the compiled functions: compile them first.
_unpack = _jit(_unpack)
_passes = _jit(_passes)
_extremes = _jit(_extremes)
_exact = _jit(_exact)
_insert = _jit(_insert)
#: The compiled functions (each compiled on its first call: about a second, once per process).
scan: ScanFn = cast("ScanFn", _jit(scan_py))
place: ScanFn = cast("ScanFn", _jit(place_py))
