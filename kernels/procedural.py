"""Procedural connectivity: a spike regenerates its synapses in each target block.

Synapses of projection ``p`` from presynaptic neuron ``i`` into post block ``b``
(``conn_block`` consecutive post neurons) come from the stream keyed by
``(seed, p, i, b)``: geometric skips ``j += 1 + floor(log(u) / log(1 - p))``
for a fixed connection probability (as GeNN's ``PreSpanProcedural``), then the
synapse's weight and delay draws. Nothing is stored, so memory is O(neurons).
:func:`materialize` runs the same generator to build stored CSR blocks, so
procedural and stored modes hold the same synapses.

Projection tables (see ``pipeline.network``) are an int64 array ``pint`` and a
float64 array ``pflt`` with one row per projection; the column indices are the
``I_*`` and ``F_*`` constants below. Weights are integers in units of the
receptor's quantum ``q`` (a power of two): sums of integers do not depend on
the order spikes arrive in, so any chunking, CPU or GPU, gives the same sums.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .rng import (
    GOLDEN,
    STREAM_CONN,
    STREAM_INDEGREE,
    mix64,
    normal,
    stream_key,
    uniform,
)

__all__ = ["RULES", "deliver_many", "materialize", "I_RULE", "F_P"]

RULES = {"fixed_probability": 0, "all_to_all": 1, "one_to_one": 2, "fixed_indegree": 3, "fixed_outdegree": 4,
         "edge_list": 5}
_OUT_BLOCK = 1 << 62  # the "block" word of a fixed out-degree stream (one stream per presynaptic neuron)
WEIGHT_KINDS = {"constant": 0, "normal": 1, "uniform": 2}
DELAY_KINDS = {"constant": 0, "uniform": 1}

# pint columns
I_RULE, I_PRE_LO, I_PRE_N, I_POST_LO, I_POST_N, I_RECEPTOR, I_WKIND, I_DKIND, I_ID, I_K, I_STORED, I_POST_POP = range(12)
N_INT = 12
# pflt columns: probability, 1 / log(1 - p), weight a/b, delay a/b (steps), weight quantum
F_P, F_INV_LOG1MP, F_WA, F_WB, F_DA, F_DB, F_Q = range(7)
N_FLT = 7

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")  # no zero-division branches: loops vectorise
_inline = numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")


@_inline
def _weight_delay(pint, pflt, p, key, k):
    wk = pint[p, I_WKIND]
    if wk == 0:
        w = pflt[p, F_WA]
    elif wk == 1:
        w = pflt[p, F_WA] + pflt[p, F_WB] * normal(key, k)
        k += 2
    else:
        w = pflt[p, F_WA] + (pflt[p, F_WB] - pflt[p, F_WA]) * uniform(key, k)
        k += 1
    if pint[p, I_DKIND] == 0:
        d = int(pflt[p, F_DA])
    else:
        span = int(pflt[p, F_DB]) - int(pflt[p, F_DA]) + 1
        d = int(pflt[p, F_DA]) + min(int(uniform(key, k) * span), span - 1)
        k += 1
    wq = np.int32(np.rint(w / pflt[p, F_Q]))
    return wq, d, k


@_inline
def _next_target(pflt, p, key, k, j):
    """Next post index of a fixed-probability block after ``j`` (may run past the block)."""
    u = uniform(key, k)
    skip = math.floor(math.log(u) * pflt[p, F_INV_LOG1MP])
    if skip > 2.0e9:
        return np.int64(2**40), k + 1
    return j + 1 + np.int64(skip), k + 1


@_inline
def _block_synapse(pint, pflt, p, rule, key, k, j, n_b):
    """The synapse after target ``j`` of a fixed-probability (rule 0) or all-to-all (rule 1) target block.

    The one definition of a block's synapse sequence, read by :func:`deliver_many` and :func:`materialize`:
    start with ``k = 0``, ``j = -1`` and call until ``j >= n_b``.

    Parameters
    ----------
    pint, pflt : ndarray
        The projection tables.
    p, rule : int
        The projection and its rule (0 or 1).
    key : uint64
        The block's stream, ``stream_key(seed, pid, pre, b)``.
    k : int
        The stream's next draw.
    j : int64
        The previous synapse's target, local to the block (-1 before the first).
    n_b : int
        Post neurons in the block.

    Returns
    -------
    j : int64
        The synapse's target, local to the block; ``j >= n_b`` ends the block (nothing else is drawn then,
        and ``wq``, ``d`` are 0).
    wq : int32
        Its weight in quanta.
    d : int
        Its delay in steps.
    k : int
        The stream's next draw.
    """
    if rule == 1:
        j += 1
    else:
        j, k = _next_target(pflt, p, key, k, j)
    if j >= n_b:
        return j, np.int32(0), 0, k
    wq, d, k = _weight_delay(pint, pflt, p, key, k)
    return j, wq, d, k


@_inline
def _outdegree_synapse(pint, pflt, p, key, k):
    """The next of a presynaptic neuron's ``K`` fixed out-degree (rule 4) synapses, drawn with replacement.

    Parameters
    ----------
    pint, pflt : ndarray
        The projection tables.
    p : int
        The projection.
    key : uint64
        The neuron's stream, ``stream_key(seed, pid, pre, _OUT_BLOCK)``.
    k : int
        The stream's next draw (0 for the first synapse).

    Returns
    -------
    t : int64
        The synapse's target, local to the post population.
    wq : int32
        Its weight in quanta.
    d : int
        Its delay in steps.
    k : int
        The stream's next draw.
    """
    n_post = pint[p, I_POST_N]
    t = min(np.int64(uniform(key, k) * n_post), n_post - 1)
    wq, d, k = _weight_delay(pint, pflt, p, key, k + 1)
    return t, wq, d, k


@_inline
def _one_to_one_key(seed, pid, pre, block):
    """The stream of presynaptic neuron ``pre``'s one-to-one (rule 2) synapse, onto post neuron ``pre``.

    It is the stream of the target's block, ``stream_key(seed, pid, pre, pre // block)``; the synapse's
    weight and delay are ``_weight_delay(pint, pflt, p, key, 0)`` (drawn in the caller: behind a second
    inlined helper, :func:`materialize`'s one-to-one loop ran about 15% slower).
    """
    return stream_key(seed, pid, pre, pre // block)


_BATCH = 32
_MANT = np.int64((1 << 52) - 1)
_ONE = np.int64(1023 << 52)
_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)


@_inline
def _skip_batch(key, k, inv, tol0, y, skips):
    """The geometric skips ``floor(log(uniform(key, k + t)) * inv)`` of a batch, as :func:`_next_target` draws them.

    Vectorised: the uniform's 53-bit integer is split into exponent and mantissa, and the log of the
    mantissa in ``[sqrt(1/2), sqrt(2))`` is ``2 atanh(s)``, ``s = (f - 1) / (f + 1)``, to ``s**15``: within
    ``(|inv| + y) * 1e-13`` of ``math.log(u) * inv`` (1e-15 measured). A value within ``tol0 + y * 1e-12`` of an
    integer is recomputed with ``math.log``, so every skip is exactly the generator's. Skips are capped at
    ``2**40`` (past any block, as :func:`_next_target`'s huge skips are).
    """
    near = 0
    for t in range(y.shape[0]):
        x = mix64(key + (np.uint64(k + t) + np.uint64(1)) * GOLDEN)
        bits = np.float64(np.int64(x >> np.uint64(11)) + 1).view(np.int64)
        e = np.float64((bits >> 52) - 1023 - 53)
        f = np.int64((bits & _MANT) | _ONE).view(np.float64)
        big = np.float64(f > _SQRT2)  # arithmetic, not a select: LLVM vectorises it
        f = f * (1.0 - 0.5 * big)
        e = e + big
        s = (f - 1.0) / (f + 1.0)
        z = s * s
        poly = 1.0 + z * (1.0 / 3 + z * (1.0 / 5 + z * (1.0 / 7 + z * (1.0 / 9 + z * (1.0 / 11 + z * (
            1.0 / 13 + z * (1.0 / 15)))))))
        yt = min((e * _LN2 + 2.0 * s * poly) * inv, 1.0995e12)
        fl = math.floor(yt)
        tol = tol0 + yt * 1e-12
        y[t] = yt
        skips[t] = fl
        near += (yt - fl < tol) | (fl + 1.0 - yt < tol)
    if near:
        for t in range(y.shape[0]):
            fl = math.floor(y[t])
            tol = tol0 + y[t] * 1e-12
            if y[t] - fl < tol or fl + 1.0 - y[t] < tol:
                skips[t] = min(math.floor(math.log(uniform(key, k + t)) * inv), 1 << 40)


@_inline
def _deliver_constant(steps, gids, skip_lo, skip_hi, pflt, p, seed, pid, block, lo, hi, ring, n_slots,
                      pre_lo, pre_n, post_lo, post_hi, r, b0, b1):
    """Constant weight and delay: skips :data:`_BATCH` at a time from :func:`_skip_batch` (the same targets
    as :func:`_next_target`); spikes of one ring slot at a time, so the writes stay in one row's block."""
    wq = np.int32(np.rint(pflt[p, F_WA] / pflt[p, F_Q]))
    d = int(pflt[p, F_DA])
    inv = pflt[p, F_INV_LOG1MP]
    tol0 = abs(inv) * 1e-12
    y = np.empty(_BATCH, np.float64)
    skips = np.empty(_BATCH, np.int64)
    n_spk = gids.shape[0]
    # stream_key(seed, pid, pre, b) = mix64(partial ^ b): the partial hash once per spike, not per block
    head = mix64(mix64(np.uint64(seed) + GOLDEN) ^ np.uint64(pid))
    partial = np.empty(n_spk, np.uint64)
    keys = np.empty(n_spk, np.uint64)
    x0 = 0
    while x0 < n_spk:
        x1 = x0 + 1
        while x1 < n_spk and steps[x1] == steps[x0]:
            x1 += 1
        row = ring[(steps[x0] + d) % n_slots, r]
        m = 0
        for x in range(x0, x1):
            g = gids[x]
            pre = g - pre_lo
            if pre < 0 or pre >= pre_n or skip_lo <= g < skip_hi:
                continue
            partial[m] = mix64(head ^ np.uint64(pre))
            m += 1
        for b in range(b0, b1):
            start = post_lo + b * block
            n_b = min(block, post_hi - start)
            a = max(lo, start) - start  # the part of the block inside [lo, hi)
            e = min(hi, start + n_b) - start
            for x in range(m):
                keys[x] = mix64(partial[x] ^ np.uint64(b))
            for x in range(m):
                key = keys[x]
                k = 0
                j = np.int64(-1)
                going = True
                while going:
                    _skip_batch(key, k, inv, tol0, y, skips)
                    for t in range(_BATCH):
                        j += 1 + skips[t]
                        if j >= e:
                            going = False
                            break
                        if j >= a:
                            row[start + j - lo] += wq
                    k += _BATCH
        x0 = x1


@_jit
def deliver_many(steps, gids, skip_lo, skip_hi, pint, pflt, seed, block, lo, hi, ring, n_slots,
                 ptr_all, ptr_off, cols, cwq, cdl):
    """Add the synapses of spikes ``(steps, gids)`` that land in post neurons ``[lo, hi)``.

    ``ring[(s + delay) % n_slots, receptor, i - lo] += weight`` for each synapse (the ring is
    slot-major here). Spikes of neurons in ``[skip_lo, skip_hi)`` are skipped. Stored
    projections read CSR rows (``ptr_all``/``cols``/...); procedural ones regenerate them one
    target block at a time for all spikes, so the writes of a block stay in cache. The synapses
    are :func:`materialize`'s: both draw them with ``_block_synapse`` (rules 0 and 1; constant
    weight and delay under rule 0 take ``_deliver_constant``, the same targets in batches),
    ``_outdegree_synapse`` (rule 4) and ``_one_to_one_key`` (rule 2).

    Parameters
    ----------
    steps, gids : ndarray of int64
        The spikes' steps and global neuron ids.
    skip_lo, skip_hi : int
        Spikes of neurons in ``[skip_lo, skip_hi)`` add nothing (``-1, -1``: none skipped).
    pint, pflt : ndarray
        The projection tables (``I_*`` and ``F_*`` columns).
    seed : int
        The network's seed.
    block : int
        Post neurons per target block (``conn_block``).
    lo, hi : int
        The global ids of the post neurons the ring holds.
    ring : ndarray of int32, shape (n_slots, receptors, hi - lo)
        Weights in quanta, added to in place.
    n_slots : int
        Ring slots (``ring.shape[0]``).
    ptr_all, ptr_off, cols, cwq, cdl : ndarray
        Stored projections' CSR rows: projection ``p``'s row pointers start at ``ptr_all[ptr_off[p]]``;
        columns (local to ``lo``), weights in quanta and delays in steps.
    """
    n_spk = gids.shape[0]
    for p in range(pint.shape[0]):
        post_lo = pint[p, I_POST_LO]
        post_hi = post_lo + pint[p, I_POST_N]
        if post_hi <= lo or post_lo >= hi:
            continue
        pre_lo = pint[p, I_PRE_LO]
        pre_n = pint[p, I_PRE_N]
        r = pint[p, I_RECEPTOR]
        rule = pint[p, I_RULE]
        pid = (STREAM_CONN << 32) | pint[p, I_ID]
        if pint[p, I_STORED] != 0 or rule == 2:
            for x in range(n_spk):
                g = gids[x]
                pre = g - pre_lo
                if pre < 0 or pre >= pre_n or skip_lo <= g < skip_hi:
                    continue
                s = steps[x]
                if pint[p, I_STORED] != 0:
                    base = ptr_off[p]
                    sm = s % n_slots
                    for y in range(ptr_all[base + pre], ptr_all[base + pre + 1]):
                        t = sm + cdl[y]  # stored delays are below n_slots
                        ring[t - n_slots if t >= n_slots else t, r, cols[y]] += cwq[y]
                else:
                    t = post_lo + pre
                    if lo <= t < hi:
                        wq, d, _ = _weight_delay(pint, pflt, p, _one_to_one_key(seed, pid, pre, block), 0)
                        ring[(s + d) % n_slots, r, t - lo] += wq
            continue
        if rule == 4:
            # fixed out-degree (with replacement): every chunk replays the neuron's K draws, keeps its own
            for x in range(n_spk):
                g = gids[x]
                pre = g - pre_lo
                if pre < 0 or pre >= pre_n or skip_lo <= g < skip_hi:
                    continue
                s = steps[x]
                key = stream_key(seed, pid, pre, _OUT_BLOCK)
                k = 0
                for _ in range(pint[p, I_K]):
                    t, wq, d, k = _outdegree_synapse(pint, pflt, p, key, k)
                    t += post_lo
                    if lo <= t < hi:
                        ring[(s + d) % n_slots, r, t - lo] += wq
            continue
        b0 = (max(lo, post_lo) - post_lo) // block
        b1 = (min(hi, post_hi) - post_lo + block - 1) // block
        if rule == 0 and pint[p, I_WKIND] == 0 and pint[p, I_DKIND] == 0:
            # constant weight and delay draw nothing: hoist the quantised weight and the ring row
            _deliver_constant(steps, gids, skip_lo, skip_hi, pflt, p, seed, pid, block, lo, hi, ring, n_slots,
                              pre_lo, pre_n, post_lo, post_hi, r, b0, b1)
            continue
        for b in range(b0, b1):
            start = post_lo + b * block
            n_b = min(block, post_hi - start)
            for x in range(n_spk):
                g = gids[x]
                pre = g - pre_lo
                if pre < 0 or pre >= pre_n or skip_lo <= g < skip_hi:
                    continue
                s = steps[x]
                key = stream_key(seed, pid, pre, b)
                k = 0
                j = np.int64(-1)
                while True:
                    j, wq, d, k = _block_synapse(pint, pflt, p, rule, key, k, j, n_b)
                    if j >= n_b:
                        break
                    t = start + j
                    if lo <= t < hi:
                        ring[(s + d) % n_slots, r, t - lo] += wq


@_jit
def materialize(pint, pflt, p, seed, block, lo, hi):
    """CSR of projection ``p``'s synapses into post neurons ``[lo, hi)``, rows = presynaptic neurons.

    Synapses of a row are in the order :func:`deliver_many` generates them, from the same helpers.

    Parameters
    ----------
    pint, pflt : ndarray
        The projection tables.
    p : int
        The projection.
    seed : int
        The network's seed.
    block : int
        Post neurons per target block (``conn_block``).
    lo, hi : int
        Global ids of the post neurons kept (clipped to the projection's post population).

    Returns
    -------
    indptr : ndarray of int64, shape (n_pre + 1,)
        Row pointers.
    cols : ndarray of int32
        Post indices local to ``lo`` (after clipping).
    wq : ndarray of int32
        Weights in quanta.
    delay : ndarray of int32
        Delays in steps.
    """
    n_pre = pint[p, I_PRE_N]
    post_lo = pint[p, I_POST_LO]
    post_hi = post_lo + pint[p, I_POST_N]
    lo = max(lo, post_lo)
    hi = max(lo, min(hi, post_hi))
    rule = pint[p, I_RULE]
    pid = (STREAM_CONN << 32) | pint[p, I_ID]
    cap = 1024
    cols = np.empty(cap, np.int32)
    wqs = np.empty(cap, np.int32)
    dls = np.empty(cap, np.int32)
    n = 0
    indptr = np.zeros(n_pre + 1, np.int64)
    if rule == 3:
        # fixed in-degree: each post neuron draws K presynaptic neurons (with replacement)
        kin = pint[p, I_K]
        total = (hi - lo) * kin
        pres = np.empty(total, np.int64)
        cols = np.empty(total, np.int32)
        wqs = np.empty(total, np.int32)
        dls = np.empty(total, np.int32)
        x = 0
        for t in range(lo, hi):
            key = stream_key(seed, (STREAM_INDEGREE << 32) | pint[p, I_ID], t - post_lo, 0)
            k = 0
            for _ in range(kin):
                pres[x] = min(np.int64(uniform(key, k) * n_pre), n_pre - 1)
                k += 1
                wq, d, k = _weight_delay(pint, pflt, p, key, k)
                cols[x] = t - lo
                wqs[x] = wq
                dls[x] = d
                x += 1
        # stable counting sort by presynaptic neuron
        for x in range(total):
            indptr[pres[x] + 1] += 1
        for i in range(n_pre):
            indptr[i + 1] += indptr[i]
        nxt = indptr[:-1].copy()
        c2 = np.empty(total, np.int32)
        w2 = np.empty(total, np.int32)
        d2 = np.empty(total, np.int32)
        for x in range(total):
            y = nxt[pres[x]]
            nxt[pres[x]] += 1
            c2[y] = cols[x]
            w2[y] = wqs[x]
            d2[y] = dls[x]
        return indptr, c2, w2, d2
    for pre in range(n_pre):
        if rule == 4:
            key = stream_key(seed, pid, pre, _OUT_BLOCK)
            k = 0
            for _ in range(pint[p, I_K]):
                t, wq, d, k = _outdegree_synapse(pint, pflt, p, key, k)
                t += post_lo
                if lo <= t < hi:
                    if n == cap:
                        cols, wqs, dls, cap = _grow(cols, wqs, dls, cap)
                    cols[n] = t - lo
                    wqs[n] = wq
                    dls[n] = d
                    n += 1
            indptr[pre + 1] = n
            continue
        if rule == 2:
            t = post_lo + pre
            if lo <= t < hi:
                wq, d, _ = _weight_delay(pint, pflt, p, _one_to_one_key(seed, pid, pre, block), 0)
                if n == cap:
                    cols, wqs, dls, cap = _grow(cols, wqs, dls, cap)
                cols[n] = t - lo
                wqs[n] = wq
                dls[n] = d
                n += 1
            indptr[pre + 1] = n
            continue
        b0 = (lo - post_lo) // block
        b1 = (hi - post_lo + block - 1) // block
        for b in range(b0, b1):
            start = post_lo + b * block
            n_b = min(block, post_hi - start)
            key = stream_key(seed, pid, pre, b)
            k = 0
            j = np.int64(-1)
            while True:
                j, wq, d, k = _block_synapse(pint, pflt, p, rule, key, k, j, n_b)
                if j >= n_b:
                    break
                if not lo <= start + j < hi:
                    continue
                if n == cap:
                    cols, wqs, dls, cap = _grow(cols, wqs, dls, cap)
                cols[n] = start + j - lo
                wqs[n] = wq
                dls[n] = d
                n += 1
        indptr[pre + 1] = n
    return indptr, cols[:n].copy(), wqs[:n].copy(), dls[:n].copy()


@_inline
def _grow(cols, wqs, dls, cap):
    cap2 = cap * 2
    c2 = np.empty(cap2, np.int32)
    w2 = np.empty(cap2, np.int32)
    d2 = np.empty(cap2, np.int32)
    c2[:cap] = cols
    w2[:cap] = wqs
    d2[:cap] = dls
    return c2, w2, d2, cap2
