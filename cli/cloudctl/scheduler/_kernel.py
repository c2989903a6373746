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
    n_w = plan[0]
    n_ge = plan[1]
    n_lt = plan[2]
    n_cand = plan[3]
    keep = plan[4]
    p_ge = HEADER + n_w
    p_lt = p_ge + n_ge
    p_cand = p_lt + n_lt
    wcols = plan[HEADER:p_ge].copy()
    ge_cols = plan[p_ge:p_lt].copy()
    lt_cols = plan[p_lt:p_cand].copy()
    mult = limits[:n_w].copy()
    ge_thr = limits[n_w : n_w + n_ge].copy()
    lt_thr = limits[n_w + n_ge : n_w + n_ge + n_lt].copy()
    members = np.empty(n_cand, dtype=np.int64)
    n = 0
    for k in range(n_cand):
        i = plan[p_cand + k]
        if not extra[i]:
            continue
        ok = True
        for c in range(n_ge):
            if not cols[i, ge_cols[c]] >= ge_thr[c]:
                ok = False
                break
        if ok:
            for c in range(n_lt):
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


ScanFn = Callable[..., int]


#: The compiled scan (compiled on its first call: about a second, once per process).
scan: ScanFn = cast("ScanFn", numba.njit(cache=False, nogil=True, fastmath=False)(scan_py))
