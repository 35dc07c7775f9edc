"""Memory-bank chunk kernels: id hashing, decay, reinforcement, quality statistics and top-k.

A partition holds ``n`` live memories sorted by id (uint64; ``EMPTY_ID`` pads
the unused tail of a stored partition). Strengths are float32 in [0, 1].
Rankings order memories by strength, descending, then by id, ascending, so
every ranking is a total order and CPU, GPU and any partitioning agree.

Randomness (test and benchmark reinforcement streams) comes from splitmix64
keyed by (seed, counter), so every process draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

__all__ = [
    "EMPTY_ID",
    "KeyedStream",
    "MaintainedTopK",
    "aggregate_deltas",
    "apply_deltas",
    "build_index",
    "decay_stats",
    "group_by_partition",
    "histogram_fixup",
    "keep_last_of_runs",
    "keyed_ids",
    "keyed_reinforcement",
    "keyed_reinforcement_part",
    "lookup_indexed",
    "lookup_sorted",
    "merge_top_k",
    "partition_of",
    "quality_stats",
    "splitmix64",
    "top_k",
]

EMPTY_ID = np.uint64(0xFFFFFFFFFFFFFFFF)
THRESHOLD_BINS = 1024  # histogram bins that locate a top-k threshold
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(nogil=True, cache=True)
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(nogil=True, cache=True)
def _splitmix64(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], np.uint64)
    for i in range(x.shape[0]):
        out[i] = _mix(np.uint64(x[i]) + _GOLDEN)
    return out


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 of each uint64 (a bijection with good avalanche)."""
    return _splitmix64(np.ascontiguousarray(x, dtype=np.uint64))


@numba.njit(nogil=True, cache=True)
def _partition_of(ids: np.ndarray, n_partitions: np.uint64) -> np.ndarray:
    out = np.empty(ids.shape[0], np.int64)
    for i in range(ids.shape[0]):
        out[i] = np.int64(_mix(ids[i] + _GOLDEN) % n_partitions)
    return out


def partition_of(ids: np.ndarray, n_partitions: int) -> np.ndarray:
    """The partition ``splitmix64(id) mod n_partitions`` of each id."""
    return _partition_of(np.ascontiguousarray(ids, dtype=np.uint64), np.uint64(n_partitions))


@numba.njit(nogil=True, cache=True)
def _group(parts: np.ndarray, n_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    starts = np.zeros(n_partitions + 1, np.int64)
    for i in range(parts.shape[0]):
        starts[parts[i] + 1] += 1
    for p in range(n_partitions):
        starts[p + 1] += starts[p]
    fill = starts[:-1].copy()
    order = np.empty(parts.shape[0], np.int64)
    for i in range(parts.shape[0]):  # stable: arrival order kept inside each partition
        order[fill[parts[i]]] = i
        fill[parts[i]] += 1
    return order, starts


def group_by_partition(ids: np.ndarray, n_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, starts)``: ``ids[order[starts[p]:starts[p+1]]]`` are partition p's ids, in arrival order."""
    return _group(partition_of(ids, n_partitions), n_partitions)


@numba.njit(nogil=True, cache=True)
def keep_last_of_runs(sorted_ids: np.ndarray) -> np.ndarray:
    """Mask of the last element of each run of equal ids (a stable sort keeps arrival order in a run)."""
    n = sorted_ids.shape[0]
    keep = np.ones(n, np.bool_)
    for i in range(n - 1):
        if sorted_ids[i] == sorted_ids[i + 1]:
            keep[i] = False
    return keep


@numba.njit(nogil=True, cache=True)
def lookup_sorted(ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Positions of sorted ``queries`` in sorted ``ids``; -1 where absent."""
    n = ids.shape[0]
    out = np.full(queries.shape[0], -1, np.int64)
    lo = 0
    for j in range(queries.shape[0]):
        q = queries[j]
        hi = n
        step = 1
        # gallop from the previous hit: sorted queries land close to each other
        while lo + step < n and ids[lo + step] < q:
            lo += step
            step *= 2
        hi = min(lo + step + 1, n)
        while lo < hi:
            mid = (lo + hi) >> 1
            if ids[mid] < q:
                lo = mid + 1
            else:
                hi = mid
        if lo < n and ids[lo] == q:
            out[j] = lo
    return out


@numba.njit(nogil=True, cache=True)
def _build_index(ids: np.ndarray, per_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    n = ids.shape[0]
    meta = np.zeros(2, np.uint64)  # lowest id, shift
    if n == 0:
        return np.zeros(2, np.int64), meta
    lo = ids[0]
    span = ids[n - 1] - lo
    target = np.uint64(max(1, n // per_bucket))
    shift = np.uint64(0)
    while (span >> shift) >= target:
        shift += np.uint64(1)
    nb = int(span >> shift) + 1
    starts = np.zeros(nb + 1, np.int64)
    for i in range(n):
        starts[int((ids[i] - lo) >> shift) + 1] += 1
    for b in range(nb):
        starts[b + 1] += starts[b]
    meta[0], meta[1] = lo, shift
    return starts, meta


def build_index(ids: np.ndarray, per_bucket: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A bucket index over sorted ids: ``starts[b]`` is the first id whose ``(id - lo) >> shift`` is b.

    Hash-partitioned ids are spread evenly, so a bucket holds about
    ``per_bucket`` ids and a lookup touches two or three cache lines instead of
    a binary search's dozen.
    """
    return _build_index(np.ascontiguousarray(ids, dtype=np.uint64), per_bucket)


@numba.njit(nogil=True, cache=True)
def lookup_indexed(ids: np.ndarray, starts: np.ndarray, meta: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Positions of ``queries`` in sorted ``ids`` through :func:`build_index`'s index; -1 where absent."""
    out = np.full(queries.shape[0], -1, np.int64)
    lo, shift = meta[0], meta[1]
    nb = np.uint64(starts.shape[0] - 1)
    for j in range(queries.shape[0]):
        q = queries[j]
        if q < lo or ids.shape[0] == 0:
            continue
        b = (q - lo) >> shift
        if b >= nb:
            continue
        a = starts[b]
        e = starts[b + np.uint64(1)]
        end = e
        while a < e:
            mid = (a + e) >> 1
            if ids[mid] < q:
                a = mid + 1
            else:
                e = mid
        if a < end and ids[a] == q:
            out[j] = a
    return out


@numba.njit(nogil=True, cache=True)
def _sum_runs(ids: np.ndarray, order: np.ndarray, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = order.shape[0]
    uids = np.empty(n, np.uint64)
    sums = np.empty(n, np.float64)
    occ = np.empty(n, np.int64)
    m = -1
    i = 0
    while i < n:
        j = i + 1
        while j < n and ids[order[j]] == ids[order[i]]:
            j += 1
        m += 1
        uids[m] = ids[order[i]]
        if j - i == 1:
            sums[m] = deltas[order[i]]
        else:
            run = np.sort(order[i:j])  # an unstable sort scrambles equal ids: sum them in arrival order
            acc = 0.0
            for r in range(run.shape[0]):
                acc += deltas[run[r]]
            sums[m] = acc
        occ[m] = j - i
        i = j
    return uids[: m + 1], sums[: m + 1], occ[: m + 1]


def aggregate_deltas(ids: np.ndarray, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique sorted ids, their deltas summed in float64 in arrival order, and occurrence counts."""
    ids = np.ascontiguousarray(ids, dtype=np.uint64)
    return _sum_runs(ids, np.argsort(ids), np.ascontiguousarray(deltas, dtype=np.float64))


@numba.njit(nogil=True, cache=True)
def _bin(x: np.float32, bins: int, edges: np.ndarray) -> int:
    b = int(x * np.float32(bins))
    if b >= bins:
        b = bins - 1
    b = max(b, 0)
    # np.histogram's float32 edges and corrections, so every bin count agrees with numpy's
    if x < edges[b] and b > 0:
        b -= 1
    elif x >= edges[b + 1] and b < bins - 1:
        b += 1
    return b


def _make_decay_stats(exact_bins: bool) -> Any:
    @numba.njit(nogil=True, cache=True)
    def kernel(s: np.ndarray, factor: np.float32, decay: bool, edges: np.ndarray) -> tuple[float, float, np.ndarray]:
        bins = edges.shape[0] - 1
        fb = np.float32(bins)
        hist = np.zeros(4 * bins, np.int64)  # four interleaved histograms break the store-to-load chain
        a0 = a1 = a2 = a3 = 0.0
        mx = np.float32(0.0)
        n = s.shape[0]
        for i in range(0, n - n % 4, 4):
            v0, v1, v2, v3 = s[i], s[i + 1], s[i + 2], s[i + 3]
            if decay:
                v0 = min(max(v0 * factor, np.float32(0.0)), np.float32(1.0))
                v1 = min(max(v1 * factor, np.float32(0.0)), np.float32(1.0))
                v2 = min(max(v2 * factor, np.float32(0.0)), np.float32(1.0))
                v3 = min(max(v3 * factor, np.float32(0.0)), np.float32(1.0))
                s[i], s[i + 1], s[i + 2], s[i + 3] = v0, v1, v2, v3
            a0 += v0
            a1 += v1
            a2 += v2
            a3 += v3
            mx = max(mx, max(max(v0, v1), max(v2, v3)))
            if exact_bins:  # power-of-two bin counts: v * bins is exact, no edge correction needed
                hist[min(int(v0 * fb), bins - 1)] += 1
                hist[bins + min(int(v1 * fb), bins - 1)] += 1
                hist[2 * bins + min(int(v2 * fb), bins - 1)] += 1
                hist[3 * bins + min(int(v3 * fb), bins - 1)] += 1
            else:
                hist[_bin(v0, bins, edges)] += 1
                hist[bins + _bin(v1, bins, edges)] += 1
                hist[2 * bins + _bin(v2, bins, edges)] += 1
                hist[3 * bins + _bin(v3, bins, edges)] += 1
        for i in range(n - n % 4, n):
            v = s[i]
            if decay:
                v = min(max(v * factor, np.float32(0.0)), np.float32(1.0))
                s[i] = v
            a0 += v
            mx = max(mx, v)
            hist[_bin(v, bins, edges)] += 1
        out = hist[:bins] + hist[bins : 2 * bins] + hist[2 * bins : 3 * bins] + hist[3 * bins :]
        return (a0 + a1) + (a2 + a3), mx, out

    return kernel


_decay_stats_exact = _make_decay_stats(True)
_decay_stats_general = _make_decay_stats(False)


def _decay_stats(s: np.ndarray, factor: np.float32, decay: bool, edges: np.ndarray) -> tuple[float, float, np.ndarray]:
    bins = edges.shape[0] - 1
    kernel = _decay_stats_exact if bins & (bins - 1) == 0 else _decay_stats_general
    return kernel(s, factor, decay, edges)


def _edges(bins: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, bins + 1, dtype=np.float32)  # what np.histogram uses for float32 input


def decay_stats(strength: np.ndarray, rate: float, bins: int) -> tuple[float, float, np.ndarray]:
    """Decay ``strength`` in place, ``s <- clip(s * float32(1 - rate), 0, 1)``, and return its quality.

    One pass: the sum (float64), the maximum and a ``bins``-bin histogram over
    [0, 1] (``np.histogram`` bin semantics) of the decayed strengths.
    """
    return _decay_stats(strength, np.float32(1.0 - rate), True, _edges(bins))


def quality_stats(strength: np.ndarray, bins: int) -> tuple[float, float, np.ndarray]:
    """Sum (float64), maximum and ``bins``-bin histogram over [0, 1] of ``strength``."""
    return _decay_stats(strength, np.float32(1.0), False, _edges(bins))


@numba.njit(nogil=True, cache=True)
def _apply(s: np.ndarray, count: np.ndarray, last: np.ndarray, pos: np.ndarray, sums: np.ndarray,
           occ: np.ndarray, step: np.int64) -> np.ndarray:
    old = np.empty(pos.shape[0], np.float32)
    for j in range(pos.shape[0]):
        i = pos[j]
        old[j] = s[i]
        v = np.float64(s[i]) + sums[j]
        s[i] = np.float32(min(max(v, 0.0), 1.0))
        count[i] += occ[j]
        last[i] = step
    return old


def apply_deltas(strength: np.ndarray, count: np.ndarray, last_step: np.ndarray, positions: np.ndarray,
                 sums: np.ndarray, occurrences: np.ndarray, step: int) -> np.ndarray:
    """Reinforce in place: ``s <- float32(clip(float64(s) + delta, 0, 1))``, count += occurrences,
    last_step = step. Returns the strengths before."""
    return _apply(strength, count, last_step, positions, sums, occurrences.astype(count.dtype), np.int64(step))


@numba.njit(nogil=True, cache=True)
def _fixup(hist: np.ndarray, old: np.ndarray, new: np.ndarray, edges: np.ndarray) -> float:
    bins = edges.shape[0] - 1
    delta = 0.0
    for j in range(old.shape[0]):
        hist[_bin(old[j], bins, edges)] -= 1
        hist[_bin(new[j], bins, edges)] += 1
        delta += np.float64(new[j]) - np.float64(old[j])
    return delta


def histogram_fixup(hist: np.ndarray, old: np.ndarray, new: np.ndarray) -> float:
    """Move changed strengths between histogram bins in place; return the change of the sum."""
    return _fixup(hist, old, new, _edges(hist.shape[0]))


def top_k(strength: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` strongest memories, strongest first, ties by ascending id.

    A 1024-bin histogram gives a threshold with at least ``k`` memories at or
    above it (``floor(s * 1024)`` is exact in float32), so only those are sorted.
    """
    n = strength.shape[0]
    if n == 0 or k <= 0:
        return np.empty(0, np.int64)
    if k < n:
        hist = quality_stats(strength, THRESHOLD_BINS)[2]
        b = int(np.flatnonzero(np.cumsum(hist[::-1]) >= k)[0])
        cand = np.flatnonzero(strength >= np.float32((THRESHOLD_BINS - 1 - b) / THRESHOLD_BINS))
    else:
        cand = np.arange(n)
    order = np.lexsort((ids[cand], -strength[cand].astype(np.float64)))
    return cand[order[:k]].astype(np.int64)


def merge_top_k(strength_a: np.ndarray, ids_a: np.ndarray, strength_b: np.ndarray, ids_b: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` strongest of two ranked lists (the combine step of the top-k tree reduction)."""
    s = np.concatenate([strength_a, strength_b])
    i = np.concatenate([ids_a, ids_b])
    order = np.lexsort((i, -s.astype(np.float64)))[:k]
    return s[order], i[order]


@numba.njit(nogil=True, cache=True)
def _keyed_counters(seed: np.uint64, step: np.uint64, n: int) -> np.ndarray:
    out = np.empty(n, np.uint64)
    base = _mix(_mix(seed) + step)
    for r in range(n):
        out[r] = _mix(base + np.uint64(r) * _GOLDEN)
    return out


def _offset(seed: int) -> np.uint64:
    return np.uint64((int(seed) * int(_GOLDEN)) % 2**64)


def keyed_ids(seed: int, n: int) -> np.ndarray:
    """The deterministic ids of memory ``0 .. n-1`` of a synthetic bank (never ``EMPTY_ID``)."""
    ids = splitmix64(np.arange(n, dtype=np.uint64) + _offset(seed))
    return np.where(ids == EMPTY_ID, np.uint64(0), ids)


def keyed_reinforcement(seed: int, id_seed: int, step: int, n_pool: int, n_draws: int,
                        max_delta: float, min_delta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The reinforcement of iteration ``step``: ``n_draws`` ids of ``keyed_ids(id_seed, n_pool)``
    (with repeats) and deltas uniform in [min_delta, max_delta), keyed by (seed, step)."""
    c = _keyed_counters(np.uint64(seed), np.uint64(step), 2 * n_draws)
    which = (c[:n_draws] % np.uint64(n_pool)).astype(np.uint64)
    ids = splitmix64(which + _offset(id_seed))
    ids = np.where(ids == EMPTY_ID, np.uint64(0), ids)
    u = (c[n_draws:] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return ids, (min_delta + (max_delta - min_delta) * u).astype(np.float32)


@numba.njit(nogil=True, cache=True)
def _keyed_part(seed: np.uint64, step: np.uint64, n_pool: np.uint64, n_draws: int, offset: np.uint64, lo: float,
                span: float, part: np.uint64, n_partitions: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    base = _mix(_mix(seed) + step)
    # sized for the expected share (grown if it overflows), not for all n_draws: at 1e9 memories a
    # partition keeps 20k of 10M draws, and 120 MB of fresh buffers per call cost more than the hashing
    share = np.int64(n_draws) // max(np.int64(n_partitions), np.int64(1))
    cap = min(share + np.int64(8 * np.sqrt(np.float64(share))) + 64, np.int64(n_draws) + 1)
    ids = np.empty(cap, np.uint64)
    deltas = np.empty(cap, np.float32)
    pow2 = (n_partitions & (n_partitions - np.uint64(1))) == 0  # a mask instead of a division
    mask = n_partitions - np.uint64(1)
    block = 4096
    bi = np.empty(block, np.uint64)
    bd = np.empty(block, np.float32)
    m = 0
    for start in range(0, n_draws, block):
        k = 0
        for r in range(start, min(start + block, n_draws)):  # written unconditionally, kept by advancing k
            q = _mix((_mix(base + np.uint64(r) * _GOLDEN) % n_pool) + offset + _GOLDEN)
            q = np.uint64(0) if q == EMPTY_ID else q
            u = np.float64(_mix(base + np.uint64(r + n_draws) * _GOLDEN) >> np.uint64(11)) * 2.0**-53
            bi[k] = q
            bd[k] = np.float32(lo + span * u)
            h = _mix(q + _GOLDEN)
            k += np.int64((h & mask if pow2 else h % n_partitions) == part)
        if m + k > len(ids):
            ids = np.concatenate((ids, np.empty(max(len(ids), k), np.uint64)))
            deltas = np.concatenate((deltas, np.empty(max(len(deltas), k), np.float32)))
        ids[m : m + k] = bi[:k]
        deltas[m : m + k] = bd[:k]
        m += k
    return ids[:m], deltas[:m]


def keyed_reinforcement_part(seed: int, id_seed: int, step: int, n_pool: int, n_draws: int, max_delta: float,
                             min_delta: float, part: int, n_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The draws of :func:`keyed_reinforcement` that fall in partition ``part`` of ``n_partitions``, in
    arrival order, generated in one pass without materialising the others."""
    if not 0 <= part < n_partitions:
        raise ValueError(f"partition {part} is not in [0, {n_partitions})")
    return _keyed_part(np.uint64(seed), np.uint64(step), np.uint64(n_pool), int(n_draws), _offset(id_seed),
                       float(min_delta), float(max_delta - min_delta), np.uint64(part), np.uint64(n_partitions))


@dataclass(frozen=True)
class KeyedStream:
    """Partition ``part`` of ``n_partitions``'s share of a keyed reinforcement stream: iteration t gives
    :func:`keyed_reinforcement_part` (kernels can generate it themselves, without a Python call)."""

    seed: int
    id_seed: int
    n_pool: int
    n_draws: int
    max_delta: float = 0.2
    min_delta: float = 0.0
    part: int = 0
    n_partitions: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.part < self.n_partitions:
            raise ValueError(f"partition {self.part} is not in [0, {self.n_partitions})")
        if self.n_pool < 1 or self.n_draws < 0:
            raise ValueError(f"need n_pool >= 1 and n_draws >= 0 (got {self.n_pool}, {self.n_draws})")

    def __call__(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        return keyed_reinforcement_part(self.seed, self.id_seed, t, self.n_pool, self.n_draws, self.max_delta,
                                        self.min_delta, self.part, self.n_partitions)


class MaintainedTopK:
    """A partition's top-k kept up to date instead of recomputed each iteration.

    Uniform decay is a monotone map, so it never reorders memories: only the
    reinforced ones can move. The ranker keeps ``k + slack`` candidates and a
    bound ``outside`` on every other memory's strength (decayed with them).
    After an iteration the candidates are merged with the reinforced memories;
    while ``outside`` stays strictly below the k-th candidate, the first k
    candidates are exactly the top-k. Otherwise (a top memory was weakened
    below the bound) it falls back to a full :func:`top_k`.
    """

    def __init__(self, k: int, slack: int | None = None) -> None:
        # a wide slack keeps the bound on the outside well below the k-th candidate for many iterations
        self.k, self.size = k, k + (slack if slack is not None else max(128, 8 * k))
        self.cand = np.empty(0, np.int64)
        self.outside = np.float32(np.inf)  # inf: not built yet
        self.rebuilds = 0

    def rebuild(self, strength: np.ndarray, ids: np.ndarray) -> None:
        pos = top_k(strength, ids, self.size + 1)
        self.cand = pos[: self.size]
        self.outside = np.float32(strength[pos[self.size]]) if len(pos) > self.size else np.float32(-np.inf)
        self.rebuilds += 1

    def update(self, strength: np.ndarray, ids: np.ndarray, factor: np.float32, changed: np.ndarray) -> np.ndarray:
        """Account for a decay by ``factor`` (already applied) and changes at ``changed``; return the top-k positions."""
        if np.isinf(self.outside) and self.outside > 0:
            self.rebuild(strength, ids)
            return self.cand[: self.k]
        if self.outside > -np.inf:
            self.outside = np.float32(min(max(self.outside * factor, np.float32(0)), np.float32(1)))
        if len(changed):
            # a changed memory below the weakest candidate only raises the bound on the outside
            floor = strength[self.cand].min() if len(self.cand) else np.float32(np.inf)
            vals = strength[changed]
            low = vals < floor
            if low.any():
                self.outside = max(self.outside, np.float32(vals[low].max()))
            pool = np.union1d(self.cand, changed[~low])
        else:
            pool = self.cand
        order = np.lexsort((ids[pool], -strength[pool].astype(np.float64)))
        pool = pool[order]
        if len(pool) > self.size:
            dropped = strength[pool[self.size:]]
            self.outside = max(self.outside, np.float32(dropped.max()))
            pool = pool[: self.size]
        self.cand = pool
        k = min(self.k, len(strength))
        if len(pool) < k or (k and not (self.outside < strength[pool[k - 1]])):
            self.rebuild(strength, ids)
        return self.cand[:k]
