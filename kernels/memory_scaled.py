"""Lazily scaled memory-bank iterations: uniform decay in O(1), everything else in O(reinforced).

Uniform decay multiplies every strength by the same factor, so a partition
keeps a float64 *base* ``b`` per memory and one float64 *scale* ``G`` (the
product of the decay factors so far). The visible strength of a memory is

    s = float32(b * G)            (a float64 product, rounded once to float32)

Decay is ``G <- G * f`` with ``f = float64(float32(1 - rate))`` (the exact
path's factor). Reinforcement is the exact path's rule on the visible
strength, ``s' = float32(clip(float64(s) + sum of deltas, 0, 1))`` (deltas
summed in float64 in arrival order), stored back as ``b = float64(s') / G``,
which gives back exactly ``s'`` (the quotient is within 2**-52 of ``s'/G``).
So a memory's strength is its last reinforced value times the *exact* float64
product of the factors since, rounded once; the exact path
(:func:`neurochunk.kernels.memory.decay_stats`) rounds to float32 after every
decay instead, and the two differ by at most one float32 ulp per decay since
the last reinforcement (the lazy one is the more accurate).

What the lazy path returns equals a plain numpy loop that materialises
``float32(b * G)`` every iteration (:func:`reference_block`):

- strengths (visible float32 and float64 bases), counts and last steps: bit-equal;
- histogram counts, maxima, top-k ids and strengths: bit-equal (float32(b*G) is
  monotone in b, so bins and ranks are decided in the b domain exactly);
- sums: ``G * sum(b)`` with a compensated float64 sum, i.e. the sum of the
  unrounded strengths; it differs from the sum of the float32 strengths by at
  most ``n * 2**-25`` (half an ulp per memory; in practice ~1e-12 relative).

Histograms are kept in the b domain: over a window of W iterations the bin
edges ``e_j`` map to thresholds ``tau_j(t) = min{b : float32(b*G_t) >= e_j}``;
the sorted union of all ``tau_j(t)`` of the window splits the b axis into
buckets, each memory's bucket is kept, and the histogram of iteration t is a
difference of bucket suffix counts. A reinforcement moves one memory between
buckets (O(1) through a lookup table on the float64 bit pattern); the window's
set-up re-buckets all memories once (O(N) per W iterations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .memory import EMPTY_ID, KeyedStream, _keyed_part, _offset, build_index

__all__ = ["ScaledPartition", "reference_block"]

_RENORM = 2.0**-500  # below this scale the bases are rescaled by an exact power of two
_TABLE_CELLS = 1 << 17


@intrinsic
def _prefetch(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Prefetch the cache line of ``arr[idx]`` for reading (llvm.prefetch; no fault, no wait)."""
    sig = types.void(arr, idx)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True)
def _vis(b: float, g: float) -> np.float32:
    return np.float32(b * g)


@numba.njit(nogil=True, cache=True)
def _step(b: float, up: bool) -> float:
    """The next float64 above (or below) b >= 0."""
    bits = np.uint64(np.float64(b).view(np.uint64))
    return np.uint64(bits + np.uint64(1) if up else bits - np.uint64(1)).view(np.float64)


@numba.njit(nogil=True, cache=True)
def _threshold(e: np.float32, g: float) -> float:
    """The least float64 b >= 0 with float32(b * g) >= e (inf when none).

    float32 rounding reaches e from the midpoint below it, so the answer lies within a few float64
    steps of midpoint / g: walk there (a bisection over bit patterns when the walk is long).
    """
    if e <= np.float32(0.0):
        return 0.0
    if g <= 0.0:
        return np.inf
    mid = (np.float64(np.nextafter(e, np.float32(0.0))) + np.float64(e)) * 0.5  # exact in float64
    b = mid / g
    if np.isfinite(b) and b > 0.0:
        for _ in range(16):
            if _vis(b, g) < e:
                break
            b = _step(b, False)
        for _ in range(32):
            if _vis(b, g) >= e:
                if b == 0.0 or _vis(_step(b, False), g) < e:
                    return b
                break
            b = _step(b, True)
    return _threshold_bisect(e, g)


@numba.njit(nogil=True, cache=True)
def _threshold_bisect(e: np.float32, g: float) -> float:
    x = np.float64(e) / g
    lo, hi = x * (1.0 - 2.0**-20), x * (1.0 + 2.0**-20)  # float32 rounding moves b*g by < 2**-24
    if _vis(lo, g) >= e:
        lo = 0.0
    while _vis(hi, g) < e:
        hi = hi * 2.0 if hi > 0.0 else 1e-300
        if hi == np.inf:
            return np.inf
    # bisect the float64 bit patterns (monotone for b >= 0): the least pattern with vis >= e
    a = np.uint64(np.float64(lo).view(np.uint64))
    c = np.uint64(np.float64(hi).view(np.uint64))
    while c - a > np.uint64(1):
        mid = a + ((c - a) >> np.uint64(1))
        if _vis(np.uint64(mid).view(np.float64), g) >= e:
            c = mid
        else:
            a = mid
    if _vis(np.uint64(a).view(np.float64), g) >= e:
        return np.uint64(a).view(np.float64)
    return np.uint64(c).view(np.float64)


@numba.njit(nogil=True, cache=True)
def _bucket(b: float, bnd: np.ndarray, table: np.ndarray, key0: np.int64, shift: np.int64) -> np.int64:
    """Number of boundaries <= b (boundaries sorted, table[c]: boundaries with key < key0 + c)."""
    key = np.int64(np.uint64(np.float64(b).view(np.uint64)) >> np.uint64(shift)) - key0
    if key < 0:
        i = 0
    elif key >= table.shape[0]:
        i = table[table.shape[0] - 1]
    else:
        i = table[key]
    nb = bnd.shape[0]
    while i < nb and bnd[i] <= b:
        i += 1
    return i


@numba.njit(nogil=True, cache=True)
def _window(base: np.ndarray, g0: float, factors: np.ndarray, edges: np.ndarray, cells: int, bk: np.ndarray):
    """Thresholds of the next len(factors) iterations, their sorted union, the lookup table, every
    memory's bucket and the bucket counts."""
    w = factors.shape[0]
    nbins = edges.shape[0] - 1
    tau = np.empty((w, nbins - 1))
    g = g0
    for t in range(w):
        g = g * factors[t]
        for j in range(1, nbins):
            tau[t, j - 1] = _threshold(edges[j], g)
    flat = np.sort(tau.ravel())
    keep = np.ones(flat.shape[0], np.bool_)
    for i in range(1, flat.shape[0]):
        if flat[i] == flat[i - 1]:
            keep[i] = False
    bnd = flat[keep]
    finite = bnd[np.isfinite(bnd)]
    rank = np.empty((w, nbins - 1), np.int64)
    for t in range(w):
        for j in range(nbins - 1):
            rank[t, j] = np.searchsorted(bnd, tau[t, j])
    # table over the top bits of the float64 pattern (monotone for b >= 0), fine enough for ~1 boundary a cell
    shift = np.int64(0)
    if finite.shape[0] > 0:
        lo = np.int64(np.uint64(np.float64(finite[0]).view(np.uint64)))
        hi = np.int64(np.uint64(np.float64(finite[-1]).view(np.uint64)))
        while ((hi - lo) >> shift) >= cells:
            shift += 1
        key0 = lo >> shift
        ncell = ((hi >> shift) - key0) + 2
    else:
        key0 = np.int64(0)
        ncell = 1
    table = np.empty(ncell, np.int32)
    i = 0
    for c in range(ncell):
        while i < finite.shape[0] and (np.int64(np.uint64(np.float64(finite[i]).view(np.uint64))) >> shift) - key0 < c:
            i += 1
        table[c] = i
    cnt = np.zeros(bnd.shape[0] + 1, np.int64)
    _rebucket(base, bnd, table, key0, shift, bk, cnt)
    return bnd, rank, table, key0, shift, bk, cnt


@numba.njit(nogil=True, cache=True)
def _rebucket(base: np.ndarray, bnd: np.ndarray, table: np.ndarray, key0: np.int64, shift: np.int64,
              bk: np.ndarray, cnt: np.ndarray) -> None:
    """Every memory's bucket (as :func:`_bucket`) and the bucket counts, in chunks: the table lookups of a
    chunk first (independent), then the rare walks past a cell's first boundary."""
    n, nb, ncell = base.shape[0], bnd.shape[0], table.shape[0]
    chunk = 1024
    first = np.empty(chunk, np.int64)
    for c in range(0, n, chunk):
        e = min(n, c + chunk)
        for p in range(c, e):
            key = np.int64(np.uint64(np.float64(base[p]).view(np.uint64)) >> np.uint64(shift)) - key0
            first[p - c] = table[min(max(key, 0), ncell - 1)]
        for p in range(c, e):
            i, b = first[p - c], base[p]
            while i < nb and bnd[i] <= b:
                i += 1
            bk[p] = i
            cnt[i] += 1


@numba.njit(nogil=True, cache=True)
def _neumaier(total: float, comp: float, x: float) -> tuple[float, float]:
    t = total + x
    if abs(total) >= abs(x):
        comp += (total - t) + x
    else:
        comp += (x - t) + total
    return t, comp


@numba.njit(nogil=True, cache=True)
def _sum_base(base: np.ndarray) -> tuple[float, float]:
    total, comp = 0.0, 0.0
    for p in range(base.shape[0]):
        total, comp = _neumaier(total, comp, base[p])
    return total, comp


@numba.njit(nogil=True, cache=True)
def _reinforce(ids: np.ndarray, starts: np.ndarray, meta: np.ndarray, base: np.ndarray, count: np.ndarray,
               last: np.ndarray, bk: np.ndarray, cnt: np.ndarray, bnd: np.ndarray, table: np.ndarray,
               key0: np.int64, shift: np.int64, stamp: np.ndarray, slot_pos: np.ndarray, slot_acc: np.ndarray,
               slot_occ: np.ndarray, rpos: np.ndarray, rend: np.ndarray, rids: np.ndarray, rdeltas: np.ndarray,
               t: np.int64, g: float, floor: float, total: float, comp: float) -> tuple[int, float, float, int, float]:
    """Reinforce the partition by the draws ``rids, rdeltas`` of iteration t.

    Returns the number of memories changed (their positions in ``slot_pos``), the compensated sum of the
    bases, and for the top-k: how many changed memories were at or above ``floor`` before or after (their
    positions in ``rpos``) and the largest base of the others.
    """
    lo, sh = meta[0], meta[1]
    nbk = np.uint64(starts.shape[0] - 1)
    n = ids.shape[0]
    nd = rids.shape[0]
    # passes of independent work, the next pass's lines prefetched (a prefetch retires at once, where a load
    # that misses holds the reorder buffer): bucket bounds, then the buckets' first records, then the search
    for r in range(nd):
        q = rids[r]
        rpos[r] = -1
        if n == 0 or q < lo:
            continue
        bq = (q - lo) >> sh
        if bq >= nbk:
            continue
        rpos[r] = bq
        _prefetch(starts, bq)
    for r in range(nd):
        bq = rpos[r]
        if bq < 0:
            continue
        a = starts[bq]
        rpos[r] = a
        e = starts[bq + 1]
        rend[r] = e
        for c in range(a, e, 2):  # every line of the bucket's records (two 32-byte records a line)
            _prefetch(ids, c)
    for r in range(nd):
        a = rpos[r]
        if a < 0:
            continue
        q = rids[r]
        ln = rend[r] - a
        if ln == 0:
            rpos[r] = -1
            continue
        while ln > 1:
            half = ln >> 1
            a = a + half if ids[a + half - 1] < q else a
            ln -= half
        rpos[r] = a if ids[a] == q else -1
    # repeats summed in arrival order; a position -> slot hash table small enough to stay in cache
    hbits = 0
    while (2 << hbits) <= stamp.shape[0]:  # the caller sizes it a power of two >= 2 * len(rids)
        hbits += 1
    mask = (1 << hbits) - 1
    for h in range(mask + 1):
        stamp[h] = -1
    m = 0
    for r in range(nd):
        a = rpos[r]
        if a < 0:
            continue
        h = np.int64((np.uint64(a) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - hbits))
        while True:
            key = stamp[h]
            if key == -1:
                s = m
                stamp[h] = (np.int64(m) << 32) | a
                slot_pos[m] = a
                slot_acc[m] = 0.0
                slot_occ[m] = 0
                m += 1
                break
            if (key & 0xFFFFFFFF) == a:
                s = key >> 32
                break
            h = (h + 1) & mask
        slot_acc[s] += np.float64(rdeltas[r])
        slot_occ[s] += 1
    # the updates in three passes: new bases (independent), bucket moves (table and count lookups in cache),
    # then the compensated sum of the changes (the only loop-carried dependency)
    nb = bnd.shape[0]
    ncell = table.shape[0]
    for s in range(m):
        p = slot_pos[s]
        b0 = base[p]
        v = np.float32(min(max(np.float64(_vis(b0, g)) + slot_acc[s], 0.0), 1.0))
        b1 = np.float64(v) / g
        base[p] = b1
        count[p] += slot_occ[s]
        last[p] = t
        slot_acc[s] = b1 - b0
        slot_occ[s] = 1 if b0 >= floor or b1 >= floor else 0
        key = np.int64(np.uint64(np.float64(b1).view(np.uint64)) >> np.uint64(shift)) - key0
        rend[s] = 0 if key < 0 else table[min(key, ncell - 1)]
    for s in range(m):
        p = slot_pos[s]
        b1 = base[p]
        i = rend[s]
        while i < nb and bnd[i] <= b1:
            i += 1
        cnt[bk[p]] -= 1
        cnt[i] += 1
        bk[p] = i
    nmoved, out_max = 0, -np.inf
    for s in range(m):
        total, comp = _neumaier(total, comp, slot_acc[s])
        p = slot_pos[s]
        if slot_occ[s]:
            rpos[nmoved] = p
            nmoved += 1
        else:
            out_max = max(out_max, base[p])
    return m, total, comp, nmoved, out_max


@numba.njit(nogil=True, cache=True)
def _floor(cand: np.ndarray, base: np.ndarray) -> float:
    out = np.inf
    for i in range(cand.shape[0]):
        out = min(out, base[cand[i]])
    return out


@numba.njit(nogil=True, cache=True)
def _histogram(cnt: np.ndarray, rank: np.ndarray, n: int) -> np.ndarray:
    nb = rank.shape[0] + 1
    ge = np.empty(nb + 1, np.int64)  # ge[j]: memories with s >= e_j
    ge[0] = n
    ge[nb] = 0
    suffix = np.empty(cnt.shape[0] + 1, np.int64)
    suffix[cnt.shape[0]] = 0
    for q in range(cnt.shape[0] - 1, -1, -1):
        suffix[q] = suffix[q + 1] + cnt[q]
    for j in range(1, nb):
        ge[j] = suffix[rank[j - 1] + 1]  # b >= bnd[r]  <=>  bucket >= r + 1
    out = np.empty(nb, np.int64)
    for j in range(nb):
        out[j] = ge[j] - ge[j + 1]
    return out


@numba.njit(nogil=True, cache=True, inline="always")
def _before(a: np.int64, b: np.int64, base: np.ndarray, ids: np.ndarray) -> bool:
    """b-order: larger base first, then smaller id (decay never changes it)."""
    return base[a] > base[b] or (base[a] == base[b] and ids[a] < ids[b])


@numba.njit(nogil=True, cache=True)
def _b_order(pool: np.ndarray, base: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``pool`` in b-order (runs of equal bases sorted by id)."""
    key = np.empty(pool.shape[0])
    for i in range(pool.shape[0]):
        key[i] = -base[pool[i]]
    out = pool[np.argsort(key, kind="mergesort")]
    i = 0
    while i < out.shape[0]:
        j = i + 1
        while j < out.shape[0] and base[out[j]] == base[out[i]]:
            j += 1
        if j - i > 1:
            run = out[i:j].copy()
            run_ids = np.empty(j - i, np.uint64)
            for r in range(j - i):
                run_ids[r] = ids[run[r]]
            out[i:j] = run[np.argsort(run_ids, kind="mergesort")]
        i = j
    return out


@numba.njit(nogil=True, cache=True)
def _visible_prefix(pool: np.ndarray, base: np.ndarray, ids: np.ndarray, g: float, k: int) -> np.ndarray:
    """The first ``k`` of a b-ordered pool in visible order: distinct bases that round to one float32
    rank by id, so only runs of equal visible strength are re-sorted."""
    out = pool[: min(k, pool.shape[0])].copy()
    i = 0
    while i < out.shape[0]:
        v = _vis(base[pool[i]], g)
        j = i + 1
        while j < pool.shape[0] and _vis(base[pool[j]], g) == v:
            j += 1
        if j - i > 1:
            run = pool[i:j]
            run_ids = np.empty(j - i, np.uint64)
            for r in range(j - i):
                run_ids[r] = ids[run[r]]
            run = run[np.argsort(run_ids, kind="mergesort")]
            for r in range(i, min(j, out.shape[0])):
                out[r] = run[r - i]
        i = j
    return out


@numba.njit(nogil=True, cache=True)
def _update_top(cand: np.ndarray, incand: np.ndarray, outside: float, touched: np.ndarray, base: np.ndarray,
                ids: np.ndarray, g: float, k: int, size: int) -> tuple[np.ndarray, float, bool, np.ndarray]:
    """Merge the reinforced memories into the b-ordered candidates (decay changes nothing there).
    Returns the candidates, the bound on every other base, whether the top-k is exact, and the top-k in
    visible order."""
    nc = cand.shape[0]
    floor = np.inf
    for i in range(nc):
        floor = min(floor, base[cand[i]])
    moved = np.empty(touched.shape[0], np.int64)  # touched candidates and entrants, re-inserted in order
    nm = 0
    for i in range(touched.shape[0]):
        p = touched[i]
        if incand[p]:
            incand[p] = False
            moved[nm] = p
            nm += 1
        elif base[p] >= floor or nc < size:
            moved[nm] = p
            nm += 1
        else:
            outside = max(outside, base[p])
    moved = _b_order(moved[:nm], base, ids)
    pool = np.empty(nc + nm, np.int64)
    i = j = o = 0
    while i < nc or j < nm:
        if i < nc and not incand[cand[i]]:  # a touched candidate: it comes back through ``moved``
            i += 1
            continue
        if j >= nm or (i < nc and _before(cand[i], moved[j], base, ids)):
            pool[o] = cand[i]
            i += 1
        else:
            pool[o] = moved[j]
            j += 1
        o += 1
    for i in range(size, o):
        outside = max(outside, base[pool[i]])
        incand[pool[i]] = False
    pool = pool[: min(o, size)]
    for i in range(pool.shape[0]):
        incand[pool[i]] = True
    kk = min(k, ids.shape[0])
    ok = pool.shape[0] >= kk
    if ok and kk > 0:
        ok = _vis(outside, g) < _vis(base[pool[kk - 1]], g)
    return pool, outside, ok, _visible_prefix(pool, base, ids, g, kk)


def _full_top(base: np.ndarray, ids: np.ndarray, g: float, size: int, incand: np.ndarray) -> tuple[np.ndarray, float]:
    """The ``size`` best memories (in visible order, ties by id), listed in b-order, and the largest base of
    the rest."""
    incand[:] = False
    n = len(base)
    s = (base * g).astype(np.float32)
    pool = np.arange(n) if size >= n else np.flatnonzero(s >= np.partition(s, n - size - 1)[n - size - 1])
    pool = pool[np.lexsort((ids[pool], -s[pool].astype(np.float64)))][:size]
    pool = pool[np.lexsort((ids[pool], -base[pool]))]  # kept in b-order
    incand[pool] = True
    outside = float(base[~incand].max()) if size < n else -np.inf
    return pool.astype(np.int64), outside


@numba.njit(nogil=True, cache=True)
def _top_pool(base: np.ndarray, bk: np.ndarray, cnt: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Every memory in the highest buckets that together hold more than ``size`` memories, and the largest
    base of the others (buckets are ordered like bases)."""
    q = cnt.shape[0] - 1
    total = cnt[q]
    while q > 0 and total < size + 1:
        q -= 1
        total += cnt[q]
    pool = np.empty(total, np.int64)
    m = 0
    outside = -np.inf
    for p in range(base.shape[0]):
        if bk[p] >= q:
            pool[m] = p
            m += 1
        else:
            outside = max(outside, base[p])
    return pool[:m], outside


@numba.njit(nogil=True, cache=True)
def _rebuild_top(base: np.ndarray, ids: np.ndarray, g: float, size: int, incand: np.ndarray, bk: np.ndarray,
                 cnt: np.ndarray) -> tuple[np.ndarray, float]:
    """Candidates from the highest buckets: the ``size`` best in visible order, listed in b-order, and the
    largest base of the rest."""
    pool, outside = _top_pool(base, bk, cnt, size)
    best = _visible_prefix(_b_order(pool, base, ids), base, ids, g, pool.shape[0])
    for i in range(size, best.shape[0]):
        outside = max(outside, base[best[i]])
    cand = _b_order(best[:size], base, ids)
    incand[:] = False
    for i in range(cand.shape[0]):
        incand[cand[i]] = True
    return cand, outside


@numba.njit(nogil=True, cache=True)
def _iterate_keyed(rec_ids: np.ndarray, ids: np.ndarray, starts: np.ndarray, meta: np.ndarray, base: np.ndarray,
                   count: np.ndarray, last: np.ndarray, bk: np.ndarray, cnt: np.ndarray, bnd: np.ndarray,
                   table: np.ndarray, key0: np.int64, shift: np.int64, rank: np.ndarray, stamp: np.ndarray,
                   slot_pos: np.ndarray, slot_acc: np.ndarray, slot_occ: np.ndarray, rpos: np.ndarray,
                   rend: np.ndarray, stream: tuple, t0: int, w: int, f: float, scale: float, total: float,
                   comp: float, cand: np.ndarray, incand: np.ndarray, outside: float, k: int, size: int,
                   sums: np.ndarray, maxima: np.ndarray, top_s: np.ndarray, top_i: np.ndarray, row0: int,
                   hist: np.ndarray) -> tuple[float, float, float, np.ndarray, float, int]:
    """``w`` iterations of a window in one call, the keyed draws generated here: what
    :meth:`ScaledPartition.run` does per iteration, with no Python in between."""
    seed, n_pool, n_draws, offset, lo, span, part, n_parts = stream
    npart = rec_ids.shape[0]
    rebuilds = 0
    for j in range(w):
        t = t0 + j
        scale = scale * f
        g = scale
        rids, rdeltas = _keyed_part(seed, np.uint64(t), n_pool, n_draws, offset, lo, span, part, n_parts)
        floor = _floor(cand, base) if cand.shape[0] >= min(size, npart) else -np.inf
        _, total, comp, nmoved, out_max = _reinforce(rec_ids, starts, meta, base, count, last, bk, cnt, bnd, table,
                                                     key0, shift, stamp, slot_pos, slot_acc, slot_occ, rpos, rend,
                                                     rids, rdeltas, np.int64(t), g, floor, total, comp)
        outside = max(outside, out_max)
        hist[:] = _histogram(cnt, rank[j], npart)
        sums[row0 + j] = g * (total + comp)
        if npart == 0:
            continue
        ok = False
        top = cand
        if not (np.isinf(outside) and outside > 0):
            cand, outside, ok, top = _update_top(cand, incand, outside, rpos[:nmoved], base, ids, g, k, size)
        if not ok:
            cand, outside = _rebuild_top(base, ids, g, size, incand, bk, cnt)
            rebuilds += 1
            top = _visible_prefix(cand, base, ids, g, min(k, npart))
        for r in range(top.shape[0]):
            top_s[row0 + j, r] = np.float32(base[top[r]] * g)
            top_i[row0 + j, r] = ids[top[r]]
        maxima[row0 + j] = top_s[row0 + j, 0]
    return scale, total, comp, cand, outside, rebuilds


class ScaledPartition:
    """One partition's memories in the lazily scaled representation (see the module docstring).

    Parameters
    ----------
    ids, strength, count, last_step
        The partition's live memories, sorted by id (``count`` and ``last_step``
        are updated in place; ``strength`` is read once).
    k, bins
        Top-k size and histogram bins of every iteration.
    window
        Iterations per histogram window (one O(N) re-bucketing per window).
    slack
        Extra top-k candidates kept beyond k.
    """

    def __init__(self, ids: np.ndarray, strength: np.ndarray, count: np.ndarray, last_step: np.ndarray, k: int,
                 bins: int, window: int = 256, slack: int | None = None) -> None:
        self.id, self.count, self.last_step = ids, count, last_step
        n = len(ids)
        # one 32-byte record a memory (id, base, last step, count | bucket): a reinforcement touches one cache line
        raw = np.zeros(4 * n + 8, np.uint64)
        skip = (-raw.ctypes.data % 64) // 8  # records on cache-line boundaries: none straddles two lines
        self.rec = raw[skip : skip + 4 * n].reshape(n, 4)
        self.rec[:, 0] = ids
        self.base = self.rec.view(np.float64)[:, 1]
        self.base[:] = strength
        self._last = self.rec.view(np.int64)[:, 2]
        self._count = self.rec.view(np.uint32)[:, 6]
        self._bk = self.rec.view(np.int32)[:, 7]
        self._ids = self.rec[:, 0]
        self.scale = 1.0
        self.k, self.bins, self.window = k, bins, window
        self.size = k + (slack if slack is not None else max(128, 8 * k))
        self.edges = np.linspace(0.0, 1.0, bins + 1, dtype=np.float32)  # np.histogram's float32 edges
        starts, self.meta = build_index(ids, per_bucket=1)  # ~1 id a bucket: a short search after the prefetch
        self.starts = starts.astype(np.int32) if len(ids) < 2**31 else starts  # half the cache footprint
        n = len(ids)
        self.stamp = np.empty(2, np.int64)  # position -> slot hash table of the reinforcement kernel
        self.incand = np.zeros(n, np.bool_)
        self.cand = np.empty(0, np.int64)
        self.outside = np.inf
        self.rebuilds = 0
        self.total, self.comp = _sum_base(self.base)

    def strength(self) -> np.ndarray:
        """The visible float32 strengths."""
        return (self.base * self.scale).astype(np.float32)

    def _renormalise(self) -> None:
        # exact: multiplying by powers of two changes no product b * G (short of float64 underflow)
        self.base *= _RENORM
        self.scale /= _RENORM
        self.total, self.comp = _sum_base(self.base)

    def run(self, t0: int, n: int, rate: float, source: Callable[[int], tuple[np.ndarray, np.ndarray]]
            ) -> dict[str, Any]:
        """``n`` iterations t0..t0+n-1 of decay by ``rate``, reinforcement by ``source(t)``, quality and
        top-k; per-iteration statistics like :func:`neurochunk.pipeline.memorybank._block`."""
        f = float(np.float32(1.0 - min(max(rate, 0.0), 1.0)))
        k, npart = self.k, len(self.id)
        sums, maxima = np.zeros(n), np.zeros(n)
        top_s = np.full((n, k), -np.inf)
        top_i = np.full((n, k), EMPTY_ID, np.uint64)
        hist = np.zeros(self.bins, np.int64)
        self._count[:], self._last[:] = self.count, self.last_step
        cap = 1
        slot_pos, slot_acc, slot_occ = np.empty(cap, np.int64), np.empty(cap), np.empty(cap, np.int64)
        rpos, rend = np.empty(cap, np.int64), np.empty(cap, np.int64)
        i = 0
        while i < n:
            w = min(self.window, n - i)
            if f > 0.0 and self.scale * f**w < _RENORM:
                self._renormalise()
            g0 = self.scale
            if f > 0.0:
                bnd, rank, table, key0, shift, _, cnt = _window(self.base, g0, np.full(w, f), self.edges,
                                                                  _TABLE_CELLS, self._bk)
            if f > 0.0 and isinstance(source, KeyedStream):  # the whole window in one compiled call
                if source.n_draws > cap:
                    cap = source.n_draws
                    slot_pos, slot_acc, slot_occ = np.empty(cap, np.int64), np.empty(cap), np.empty(cap, np.int64)
                    rpos, rend = np.empty(cap, np.int64), np.empty(cap, np.int64)
                    self.stamp = np.empty(1 << int(2 * cap - 1).bit_length(), np.int64)
                stream = (np.uint64(source.seed), np.uint64(source.n_pool), int(source.n_draws),
                          _offset(source.id_seed), float(source.min_delta),
                          float(source.max_delta - source.min_delta), np.uint64(source.part),
                          np.uint64(source.n_partitions))
                self.scale, self.total, self.comp, self.cand, self.outside, rebuilds = _iterate_keyed(
                    self._ids, self.id, self.starts, self.meta, self.base, self._count, self._last, self._bk, cnt,
                    bnd, table, key0, shift, rank, self.stamp, slot_pos, slot_acc, slot_occ, rpos, rend, stream,
                    t0 + i, w, f, self.scale, self.total, self.comp, self.cand, self.incand, self.outside, k,
                    self.size, sums, maxima, top_s, top_i, i, hist)
                self.rebuilds += rebuilds
                i += w
                continue
            for j in range(w):
                t = t0 + i + j
                if f == 0.0:  # everything decays to exactly 0: restart the scale
                    self.base[:] = 0.0
                    self.total, self.comp = 0.0, 0.0
                    self.cand, self.outside = np.empty(0, np.int64), np.inf
                self.scale = self.scale * f if f > 0.0 else 1.0
                g = self.scale
                rids, rdeltas = source(t)
                rids = np.ascontiguousarray(rids, dtype=np.uint64)
                if len(rids) > cap:
                    cap = len(rids)
                    slot_pos, slot_acc, slot_occ = np.empty(cap, np.int64), np.empty(cap), np.empty(cap, np.int64)
                    rpos, rend = np.empty(cap, np.int64), np.empty(cap, np.int64)
                    self.stamp = np.empty(1 << int(2 * cap - 1).bit_length(), np.int64)
                nmoved = 0
                if f > 0.0:
                    # only memories at or above the weakest candidate can change the candidates
                    floor = _floor(self.cand, self.base) if len(self.cand) >= min(self.size, npart) else -np.inf
                    _, self.total, self.comp, nmoved, out_max = _reinforce(
                        self._ids, self.starts, self.meta, self.base, self._count, self._last, self._bk, cnt, bnd,
                        table, key0, shift, self.stamp, slot_pos, slot_acc, slot_occ, rpos, rend, rids,
                        np.ascontiguousarray(rdeltas, dtype=np.float32), np.int64(t), g, floor, self.total,
                        self.comp)
                    self.outside = max(self.outside, out_max)
                    hist = _histogram(cnt, rank[j], npart)
                else:  # f == 0 leaves no window: reinforce against an all-zero partition directly
                    hist, nmoved = self._reinforce_flat(rids, rdeltas, t, slot_pos, slot_acc, slot_occ, rpos, rend)
                sums[i + j] = g * (self.total + self.comp)
                if npart:
                    pos = self._top(rpos[:nmoved], g, cnt if f > 0.0 else None)
                    top_s[i + j, : len(pos)] = (self.base[pos] * g).astype(np.float32)
                    top_i[i + j, : len(pos)] = self.id[pos]
                    maxima[i + j] = top_s[i + j, 0]
            i += w
        self.count[:], self.last_step[:] = self._count, self._last
        return {"n": npart, "sums": sums, "maxima": maxima, "hist": hist, "top_s": top_s, "top_i": top_i,
                "rebuilds": self.rebuilds}

    def _reinforce_flat(self, rids, rdeltas, t, slot_pos, slot_acc, slot_occ, rpos, rend):
        edges = np.linspace(0.0, 1.0, self.bins + 1, dtype=np.float32)
        bnd = np.array([np.inf])
        table = np.zeros(1, np.int64)
        bk = np.zeros(len(self.id), np.int32)
        cnt = np.array([len(self.id), 0], np.int64)
        _, self.total, self.comp, nmoved, _ = _reinforce(
            self._ids, self.starts, self.meta, self.base, self._count, self._last, bk, cnt, bnd, table,
            np.int64(0), np.int64(0), self.stamp, slot_pos, slot_acc, slot_occ, rpos, rend, rids,
            np.ascontiguousarray(rdeltas, dtype=np.float32), np.int64(t), 1.0, -np.inf, self.total, self.comp)
        return np.histogram(self.strength(), bins=edges)[0].astype(np.int64), nmoved

    def _top(self, touched: np.ndarray, g: float, cnt: np.ndarray | None) -> np.ndarray:
        k = min(self.k, len(self.id))
        if not (np.isinf(self.outside) and self.outside > 0):
            self.cand, self.outside, ok, top = _update_top(self.cand, self.incand, self.outside, touched, self.base,
                                                           self.id, g, self.k, self.size)
            if ok:
                return top
        if cnt is None:
            self.cand, self.outside = _full_top(self.base, self.id, g, self.size, self.incand)
        else:
            self.cand, self.outside = _rebuild_top(self.base, self.id, g, self.size, self.incand, self._bk, cnt)
        self.rebuilds += 1
        return _visible_prefix(self.cand, self.base, self.id, g, k)


def reference_block(ids: np.ndarray, strength: np.ndarray, count: np.ndarray, last_step: np.ndarray, t0: int,
                    n: int, rate: float, source: Callable[[int], tuple[np.ndarray, np.ndarray]], k: int,
                    bins: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The lazily scaled iterations in plain numpy, materialising ``float32(b * G)`` every iteration.

    Returns the final bases and scale, and per-iteration statistics (sums of the float32 strengths).
    """
    b, g = strength.astype(np.float64), 1.0
    f = float(np.float32(1.0 - min(max(rate, 0.0), 1.0)))
    stats: dict[str, Any] = {"sums": np.zeros(n), "maxima": np.zeros(n), "top_i": [], "top_s": []}
    for i in range(n):
        t = t0 + i
        if f == 0.0:
            b[:], g = 0.0, 1.0
        else:
            if g * f < _RENORM:
                b, g = b * _RENORM, g / _RENORM
            g = g * f
        rids, rdeltas = source(t)
        s = (b * g).astype(np.float32)
        u, inv = np.unique(rids, return_inverse=True)
        acc = np.zeros(len(u))
        np.add.at(acc, inv, rdeltas.astype(np.float64))  # in arrival order
        occ = np.bincount(inv, minlength=len(u))
        pos = np.minimum(np.searchsorted(ids, u), max(len(ids) - 1, 0))
        ok = ids[pos] == u if len(ids) else np.zeros(len(u), bool)
        p = pos[ok]
        new = np.clip(s[p].astype(np.float64) + acc[ok], 0, 1).astype(np.float32)
        b[p] = new.astype(np.float64) / g
        count[p] += occ[ok].astype(count.dtype)
        last_step[p] = t
        s = (b * g).astype(np.float32)
        top = np.lexsort((ids, -s.astype(np.float64)))[:k]
        stats["sums"][i] = s.sum(dtype=np.float64)
        stats["maxima"][i] = s.max() if len(s) else 0.0
        stats["top_i"].append(ids[top])
        stats["top_s"].append(s[top])
        stats["hist"] = np.histogram(s, bins=bins, range=(0.0, 1.0))[0]
    return b, np.float64(g), stats
