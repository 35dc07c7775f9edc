"""cupy twins of :mod:`neurochunk.kernels.memory`: the same numbers, computed on the GPU.

``decay_stats`` is one fused pass (decay, clamp, sum, max, histogram with
per-block shared-memory bins). ``reinforce`` fuses the aggregation of repeated
ids, the sorted-id lookup, the update and the statistics fix-up into one
kernel over the stably sorted reinforcement ids: one thread per run of equal
ids sums its deltas in arrival order, so the float32 results equal the CPU
kernels' bit for bit. Sums use float64 atomics, so they agree with the CPU to
rounding (about 1e-15 relative), not bit for bit. ``block`` runs the fused
iterations of one partition, like :func:`neurochunk.pipeline.memorybank._block`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import memory as K

try:
    import cupy as cp
except ImportError:  # pragma: no cover - CPU-only installs
    cp = None

__all__ = [
    "MaintainedTopKGPU",
    "available",
    "benchmark",
    "block",
    "decay_stats",
    "keyed_reinforcement",
    "quality_stats",
    "reinforce",
    "top_k",
]

_SRC = r"""
#define GOLDEN 0x9E3779B97F4A7C15ull
extern "C" {
__device__ __forceinline__ unsigned long long mix(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ int hbin(float x, int bins, int exact, const float* edges) {
    int b = (int)__fmul_rn(x, (float)bins);
    if (b >= bins) b = bins - 1;
    if (b < 0) b = 0;
    if (!exact) {
        if (x < edges[b] && b > 0) b -= 1;
        else if (x >= edges[b + 1] && b < bins - 1) b += 1;
    }
    return b;
}
__device__ __forceinline__ float decay1(float v, float f) {
    return fminf(fmaxf(__fmul_rn(v, f), 0.0f), 1.0f);
}
__global__ void decay_stats(float* s, long long n, int vec, float f, int decay, int bins, int exact, const float* edges,
                            unsigned long long* hist, double* total, unsigned int* maxbits) {
    extern __shared__ unsigned int sh[];
    for (int i = threadIdx.x; i < bins; i += blockDim.x) sh[i] = 0;
    __syncthreads();
    double acc = 0.0;
    float mx = 0.0f;
    long long stride = (long long)blockDim.x * gridDim.x;
    long long n4 = vec ? n / 4 : 0;  // float4 loads need 16-byte alignment
    float4* s4 = reinterpret_cast<float4*>(s);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = s4[i];
        if (decay) { v.x = decay1(v.x, f); v.y = decay1(v.y, f); v.z = decay1(v.z, f); v.w = decay1(v.w, f); s4[i] = v; }
        acc += (double)v.x + (double)v.y + (double)v.z + (double)v.w;
        mx = fmaxf(mx, fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)));
        atomicAdd(&sh[hbin(v.x, bins, exact, edges)], 1u);
        atomicAdd(&sh[hbin(v.y, bins, exact, edges)], 1u);
        atomicAdd(&sh[hbin(v.z, bins, exact, edges)], 1u);
        atomicAdd(&sh[hbin(v.w, bins, exact, edges)], 1u);
    }
    for (long long i = 4 * n4 + blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = s[i];
        if (decay) { v = decay1(v, f); s[i] = v; }
        acc += (double)v;
        mx = fmaxf(mx, v);
        atomicAdd(&sh[hbin(v, bins, exact, edges)], 1u);
    }
    for (int o = 16; o > 0; o >>= 1) {
        acc += __shfl_down_sync(0xffffffffu, acc, o);
        mx = fmaxf(mx, __shfl_down_sync(0xffffffffu, mx, o));
    }
    __shared__ double wsum[32];
    __shared__ float wmax[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) { wsum[warp] = acc; wmax[warp] = mx; }
    __syncthreads();
    if (warp == 0) {
        acc = lane < nw ? wsum[lane] : 0.0;
        mx = lane < nw ? wmax[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) {
            acc += __shfl_down_sync(0xffffffffu, acc, o);
            mx = fmaxf(mx, __shfl_down_sync(0xffffffffu, mx, o));
        }
        if (lane == 0) { atomicAdd(total, acc); atomicMax(maxbits, __float_as_uint(mx)); }
    }
    for (int i = threadIdx.x; i < bins; i += blockDim.x)
        if (sh[i]) atomicAdd(&hist[i], (unsigned long long)sh[i]);
}
__global__ void keyed(unsigned long long base, unsigned long long n_pool, unsigned long long id_off, int n,
                      double lo, double span, unsigned long long* ids, float* deltas) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    unsigned long long c1 = mix(base + (unsigned long long)r * GOLDEN);
    unsigned long long c2 = mix(base + (unsigned long long)(r + n) * GOLDEN);
    unsigned long long id = mix((c1 % n_pool) + id_off + GOLDEN);
    ids[r] = id == 0xFFFFFFFFFFFFFFFFull ? 0ull : id;
    double u = (double)(c2 >> 11) * 1.1102230246251565e-16;
    deltas[r] = (float)__dadd_rn(lo, __dmul_rn(span, u));
}
__device__ __forceinline__ long long find(const unsigned long long* ids, long long n, unsigned long long q) {
    long long lo = 0, hi = n;
    while (lo < hi) { long long mid = (lo + hi) >> 1; if (ids[mid] < q) lo = mid + 1; else hi = mid; }
    return (lo < n && ids[lo] == q) ? lo : -1;
}
__global__ void reinforce(const unsigned long long* rids, const float* rdeltas, const long long* order, int m,
                          const unsigned long long* ids, long long n, float* s, unsigned int* count, long long* last,
                          long long step, int bins, int exact, const float* edges, unsigned long long* hist,
                          double* total, unsigned int* maxbits, const unsigned int* oldmaxbits, int* lowered,
                          long long* changed) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m) return;
    changed[i] = -1;
    unsigned long long q = rids[order[i]];
    if (i > 0 && rids[order[i - 1]] == q) return;  // not the first of its run
    double acc = 0.0;
    int j = i;
    while (j < m && rids[order[j]] == q) { acc = __dadd_rn(acc, (double)rdeltas[order[j]]); j++; }
    long long p = find(ids, n, q);
    if (p < 0) return;
    float old = s[p];
    float v = (float)fmin(fmax(__dadd_rn((double)old, acc), 0.0), 1.0);
    s[p] = v;
    count[p] += (unsigned int)(j - i);
    last[p] = step;
    changed[i] = p;
    int bo = hbin(old, bins, exact, edges), bn = hbin(v, bins, exact, edges);
    if (bo != bn) { atomicAdd(&hist[bo], 0xFFFFFFFFFFFFFFFFull); atomicAdd(&hist[bn], 1ull); }
    atomicAdd(total, (double)v - (double)old);
    atomicMax(maxbits, __float_as_uint(v));
    if (old == __uint_as_float(*oldmaxbits) && v < old) atomicOr(lowered, 1);
}
}
"""

_MODULE: Any = None


def available() -> bool:
    """Whether cupy imports and sees a CUDA device."""
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device
        return False


def _kernel(name: str) -> Any:
    global _MODULE
    if _MODULE is None:
        _MODULE = cp.RawModule(code=_SRC, options=("--std=c++14",))
    return _MODULE.get_function(name)


_EDGES: dict[tuple[int, int], Any] = {}


def _edges(bins: int) -> Any:
    key = (cp.cuda.Device().id, bins)
    if key not in _EDGES:  # np.histogram's float32 edges, uploaded once
        _EDGES[key] = cp.asarray(np.linspace(0.0, 1.0, bins + 1, dtype=np.float32))
    return _EDGES[key]


def _launch_decay(s: Any, factor: float, decay: bool, bins: int) -> tuple[Any, Any, Any]:
    n = s.shape[0]
    ws = cp.empty(8 * bins + 16, cp.uint8)  # histogram, sum and max in one buffer: one memset
    cp.cuda.runtime.memsetAsync(ws.data.ptr, 0, ws.nbytes, cp.cuda.get_current_stream().ptr)
    hist = ws[: 8 * bins].view(cp.uint64)
    total = ws[8 * bins : 8 * bins + 8].view(cp.float64)
    maxbits = ws[8 * bins + 8 : 8 * bins + 12].view(cp.uint32)
    threads = 256
    sm = cp.cuda.Device().attributes["MultiProcessorCount"]
    blocks = max(1, min(sm * 8, (max(n // 4, 1) + threads - 1) // threads))
    _kernel("decay_stats")((blocks,), (threads,),
                           (s, np.int64(n), np.int32(s.data.ptr % 16 == 0), np.float32(factor), np.int32(decay), np.int32(bins),
                            np.int32(bins & (bins - 1) == 0), _edges(bins), hist, total, maxbits),
                           shared_mem=4 * bins)
    return total, maxbits, hist


def decay_stats(strength: Any, rate: float, bins: int) -> tuple[float, float, Any]:
    """GPU twin of :func:`neurochunk.kernels.memory.decay_stats` (``strength`` a cupy float32 array)."""
    total, maxbits, hist = _launch_decay(strength, float(np.float32(1.0 - rate)), True, bins)
    return float(total[0]), float(maxbits.view(cp.float32)[0]), hist.astype(cp.int64)


def quality_stats(strength: Any, bins: int) -> tuple[float, float, Any]:
    """GPU twin of :func:`neurochunk.kernels.memory.quality_stats`."""
    total, maxbits, hist = _launch_decay(strength, 1.0, False, bins)
    return float(total[0]), float(maxbits.view(cp.float32)[0]), hist.astype(cp.int64)


def keyed_reinforcement(seed: int, id_seed: int, step: int, n_pool: int, n_draws: int, max_delta: float,
                        min_delta: float = 0.0) -> tuple[Any, Any]:
    """GPU twin of :func:`neurochunk.kernels.memory.keyed_reinforcement` (generated on the device)."""
    with np.errstate(over="ignore"):
        base = K._mix(np.uint64(K._mix(np.uint64(seed))) + np.uint64(step))
    ids = cp.empty(n_draws, cp.uint64)
    deltas = cp.empty(n_draws, cp.float32)
    if n_draws:
        _kernel("keyed")(((n_draws + 255) // 256,), (256,),
                         (np.uint64(base), np.uint64(n_pool), K._offset(id_seed), np.int32(n_draws),
                          np.float64(min_delta), np.float64(max_delta - min_delta), ids, deltas))
    return ids, deltas


def reinforce(ids: Any, strength: Any, count: Any, last_step: Any, rids: Any, rdeltas: Any, step: int, bins: int,
              hist: Any, total: Any, maxbits: Any) -> tuple[Any, bool]:
    """Apply one iteration's reinforcement in place and fix the statistics up.

    ``hist``/``total``/``maxbits`` are the device results of :func:`_launch_decay`
    for the same iteration. Returns the changed positions (-1 padded) and
    whether the maximum may have dropped (then recompute it).
    """
    m = rids.shape[0]
    changed = cp.full(m, -1, cp.int64)
    if m == 0:
        return changed, False
    order = cp.argsort(rids)  # stable: equal ids keep arrival order
    lowered = cp.zeros(1, cp.int32)
    oldmax = maxbits.copy()  # the decayed maximum, read by the kernel while it raises maxbits
    _kernel("reinforce")(((m + 255) // 256,), (256,),
                         (rids, rdeltas, order, np.int32(m), ids, np.int64(ids.shape[0]), strength, count, last_step,
                          np.int64(step), np.int32(bins), np.int32(bins & (bins - 1) == 0), _edges(bins), hist,
                          total, maxbits, oldmax, lowered, changed))
    return changed, bool(lowered[0])


def _rank_order(strength: Any, ids: Any) -> Any:
    by_id = cp.argsort(ids)
    return by_id[cp.argsort(-strength[by_id].astype(cp.float64))]  # stable: ties stay by id


def top_k(strength: Any, ids: Any, k: int) -> Any:
    """GPU twin of :func:`neurochunk.kernels.memory.top_k`: positions, strongest first, ties by id."""
    n = strength.shape[0]
    if n == 0 or k <= 0:
        return cp.empty(0, cp.int64)
    if k < n:  # the CPU kernel's rule: a 1024-bin histogram gives a threshold with >= k memories above it
        hist = _launch_decay(strength, 1.0, False, K.THRESHOLD_BINS)[2]
        b = int(cp.flatnonzero(cp.cumsum(hist[::-1]) >= k)[0])
        cand = cp.flatnonzero(strength >= np.float32((K.THRESHOLD_BINS - 1 - b) / K.THRESHOLD_BINS))
    else:
        cand = cp.arange(n)
    return cand[_rank_order(strength[cand], ids[cand])[:k]].astype(cp.int64)


class MaintainedTopKGPU:
    """GPU twin of :class:`neurochunk.kernels.memory.MaintainedTopK` (same rule, cupy arrays).

    The default slack is wider than on the CPU: sorting a few thousand candidates
    costs the GPU little, a rebuild (a pass over the partition) much more.
    """

    def __init__(self, k: int, slack: int | None = None) -> None:
        self.k, self.size = k, k + (slack if slack is not None else max(2048, 3 * k))
        self.cand = None
        self.outside = np.inf
        self.rebuilds = 0

    def rebuild(self, strength: Any, ids: Any) -> None:
        pos = top_k(strength, ids, self.size + 1)
        self.cand = pos[: self.size]
        self.outside = float(strength[pos[self.size]]) if len(pos) > self.size else -np.inf
        self.rebuilds += 1

    def update(self, strength: Any, ids: Any, factor: np.float32, changed: Any) -> Any:
        if self.cand is None:
            self.rebuild(strength, ids)
            return self.cand[: self.k]
        if self.outside > -np.inf:
            self.outside = float(min(max(np.float32(self.outside) * factor, np.float32(0)), np.float32(1)))
        changed = changed[changed >= 0]
        if len(changed):
            floor = strength[self.cand].min()
            vals = strength[changed]
            low = vals < floor
            lows = vals[low]
            if len(lows):
                self.outside = max(self.outside, float(lows.max()))
            pool = cp.unique(cp.concatenate([self.cand, changed[~low]]))
        else:
            pool = self.cand
        pool = pool[_rank_order(strength[pool], ids[pool])]
        if len(pool) > self.size:
            self.outside = max(self.outside, float(strength[pool[self.size:]].max()))
            pool = pool[: self.size]
        self.cand = pool
        k = min(self.k, strength.shape[0])
        if len(pool) < k or (k and not (self.outside < float(strength[pool[k - 1]]))):
            self.rebuild(strength, ids)
        return self.cand[:k]


def block(ids: Any, strength: Any, count: Any, last_step: Any, t0: int, n: int, rate: float,
          source: Any, k: int, bins: int) -> dict[str, Any]:
    """``n`` fused iterations of one partition on the GPU (in place); per-iteration statistics.

    ``source(t)`` returns cupy ``(ids, deltas)`` of iteration ``t`` (all of them this partition's).
    """
    factor = np.float32(1.0 - rate)
    ranker = MaintainedTopKGPU(k)
    sums, maxima = np.zeros(n), np.zeros(n)
    top_s = np.full((n, k), -np.inf)
    top_i = np.full((n, k), K.EMPTY_ID, np.uint64)
    hist = None
    for i in range(n):
        t = t0 + i
        total, maxbits, hist = _launch_decay(strength, float(factor), True, bins)
        rids, rd = source(t)
        changed, lowered = reinforce(ids, strength, count, last_step, rids, rd, t, bins, hist, total, maxbits)
        sums[i] = float(total[0])
        maxima[i] = float(strength.max()) if lowered else float(maxbits.view(cp.float32)[0])
        pos = ranker.update(strength, ids, factor, changed)
        top_s[i, : len(pos)] = cp.asnumpy(strength[pos])
        top_i[i, : len(pos)] = cp.asnumpy(ids[pos])
    return {"n": int(strength.shape[0]), "sums": sums, "maxima": maxima,
            "hist": cp.asnumpy(hist).astype(np.int64) if hist is not None else np.zeros(bins, np.int64),
            "top_s": top_s, "top_i": top_i, "rebuilds": ranker.rebuilds}


# -- benchmark (device machine) -----------------------------------------------------------------
def _time(fn: Any, reps: int = 20, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b))
    return float(np.median(times))


def benchmark(sizes: list[int], iterations: int = 50, k: int = 100, bins: int = 64) -> None:
    """Per-iteration GPU times at each size: copy bandwidth, decay floor, plain cupy, neurochunk."""
    dev = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"# GPU: {dev}, {time.strftime('%Y-%m-%d')}; 1% reinforced per iteration, {bins}-bin quality, top-{k}\n")
    print("| memories | copy GB/s | decay floor us | decay+stats us | plain cupy iter us | neurochunk iter us | "
          "neurochunk / floor | top-k rebuilds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        print(_bench_size(n, iterations, k, bins), flush=True)
        cp.get_default_memory_pool().free_all_blocks()


def _copy_bandwidth() -> float:
    src, dst = cp.ones(2**28, cp.float32), cp.empty(2**28, cp.float32)  # 1 GiB each
    return 2 * src.nbytes / (_time(lambda: cp.copyto(dst, src)) * 1e-3) / 1e9


def _bench_size(n: int, iterations: int, k: int, bins: int) -> str:
    ids = cp.sort(cp.asarray(K.keyed_ids(0, n)))
    s0 = cp.asarray(np.random.default_rng(0).random(n, dtype=np.float32))
    gbps = _copy_bandwidth()
    floor_us = 8 * n / (gbps * 1e9) * 1e6
    s = s0.copy()
    ds_us = 1e3 * _time(lambda: _launch_decay(s, 0.99, True, bins))
    src = [keyed_reinforcement(1, 0, t, n, n // 100, 0.2) for t in range(iterations)]
    factor = np.float32(0.99)
    sp = s0.copy()

    def plain() -> None:
        cp.clip(sp * factor, 0, 1, out=sp)
        rids, rd = src[0]
        u, inv = cp.unique(rids, return_inverse=True)
        acc = cp.zeros(len(u))
        cp.add.at(acc, inv, rd.astype(cp.float64))
        pos = cp.minimum(cp.searchsorted(ids, u), n - 1)
        ok = ids[pos] == u
        p = pos[ok]
        sp[p] = cp.clip(sp[p].astype(cp.float64) + acc[ok], 0, 1).astype(cp.float32)
        sp.sum(dtype=cp.float64), sp.max(), cp.histogram(sp, bins=bins, range=(0.0, 1.0))
        cp.argpartition(sp, n - k)[n - k:]

    plain_us = 1e3 * _time(plain, reps=10)
    sn, cnt, last = s0.copy(), cp.zeros(n, cp.uint32), cp.zeros(n, cp.int64)
    block(ids, sn, cnt, last, 0, 3, 0.01, lambda t: src[t % iterations], k, bins)  # warm-up, compile
    cp.cuda.Device().synchronize()
    a, b = cp.cuda.Event(), cp.cuda.Event()
    a.record()
    stats = block(ids, sn, cnt, last, 3, iterations, 0.01, lambda t: src[t % iterations], k, bins)
    b.record()
    b.synchronize()
    nc_us = 1e3 * cp.cuda.get_elapsed_time(a, b) / iterations
    return (f"| {n:,} | {gbps:.0f} | {floor_us:.1f} | {ds_us:.1f} | {plain_us:.1f} | {nc_us:.1f} | "
            f"{nc_us / floor_us:.1f}x | {stats['rebuilds']} of {iterations} |")
