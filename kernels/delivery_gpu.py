"""Cupy twin of ``kernels.procedural.deliver_many``: other chunks' spikes into a chunk's ring buffer.

The window kernel's GPU twin (``kernels.network_gpu.run_window_gpu``) delivers a chunk's own spikes;
between exchange windows each chunk also receives the spikes of every other chunk. This is that
delivery on the GPU: one CUDA thread per (spike, projection, target block), the synapses regenerated
from the same counter-based streams as the CPU's (fixed probability, all-to-all, one-to-one), and
integer weights added with atomics, so the sums do not depend on the order of the spikes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .rng import CUDA_SOURCE, STREAM_CONN

__all__ = ["deliver_gpu"]

_SOURCE = CUDA_SOURCE + r"""
#define NI 12
#define NF 7
__device__ __forceinline__ void weight_delay(const long long* pi, const double* pf, u64 key, u64* k, int* wq,
                                             long long* d) {
    double w;
    if (pi[6] == 0) w = pf[2];
    else if (pi[6] == 1) { w = pf[2] + pf[3] * normal(key, *k); *k += 2; }
    else { w = pf[2] + (pf[3] - pf[2]) * uniform(key, *k); *k += 1; }
    if (pi[7] == 0) *d = (long long)pf[4];
    else {
        long long span = (long long)pf[5] - (long long)pf[4] + 1;
        long long x = (long long)(uniform(key, *k) * (double)span);
        *d = (long long)pf[4] + (x < span - 1 ? x : span - 1);
        *k += 1;
    }
    *wq = (int)rint(w / pf[6]);
}

extern "C" __global__ void deliver_incoming(
    const long long* gids, const long long* steps, long long n_spk, int n_proj, const long long* pint,
    const double* pflt, u64 seed, u64 stream, long long block, long long lo, long long hi, int* ring, int n_slots,
    long long st_n, long long st_s, long long st_r, long long skip_lo, long long skip_hi, long long n_blk,
    int block_major)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per_blk = n_spk * n_proj;
    if (t >= per_blk * n_blk) return;
    long long bb;
    if (block_major) { bb = t / per_blk; t %= per_blk; }
    else { bb = t % n_blk; t /= n_blk; }
    long long x = t / n_proj;
    int p = (int)(t % n_proj);
    long long gid = gids[x];
    if (gid >= skip_lo && gid < skip_hi) return;
    const long long* pi = pint + (long long)p * NI;
    const double* pf = pflt + (long long)p * NF;
    long long pre = gid - pi[1];
    if (pre < 0 || pre >= pi[2]) return;
    long long post_lo = pi[3], post_hi = pi[3] + pi[4];
    if (post_hi <= lo || post_lo >= hi) return;
    long long s = steps[x];
    int r = (int)pi[5], rule = (int)pi[0], wq;
    long long d;
    u64 a = (stream << 32) | (u64)pi[8];
    if (rule == 2) {
        if (bb != 0) return;
        long long tt = post_lo + pre;
        if (tt >= lo && tt < hi) {
            u64 k = 0;
            weight_delay(pi, pf, stream_key(seed, a, (u64)pre, (u64)(pre / block)), &k, &wq, &d);
            atomicAdd(ring + (tt - lo) * st_n + ((s + d) % n_slots) * st_s + r * st_r, wq);
        }
        return;
    }
    long long lo2 = lo > post_lo ? lo : post_lo, hi2 = hi < post_hi ? hi : post_hi;
    long long b = (lo2 - post_lo) / block + bb, b1 = (hi2 - post_lo + block - 1) / block;
    if (b >= b1) return;
    long long start = post_lo + b * block;
    long long n_b = block < post_hi - start ? block : post_hi - start;
    u64 key = stream_key(seed, a, (u64)pre, (u64)b);
    u64 k = 0;
    long long j = -1;
    while (true) {
        if (rule == 1) j += 1;
        else {
            double sk = floor(log(uniform(key, k)) * pf[1]);
            k += 1;
            j = sk > 2.0e9 ? (1LL << 40) : j + 1 + (long long)sk;
        }
        if (j >= n_b) break;
        weight_delay(pi, pf, key, &k, &wq, &d);
        long long tt = start + j;
        if (tt >= lo && tt < hi) atomicAdd(ring + (tt - lo) * st_n + ((s + d) % n_slots) * st_s + r * st_r, wq);
    }
}
"""

_MODULE: Any = None


def _kernel() -> Any:
    global _MODULE
    if _MODULE is None:
        import cupy as cp

        _MODULE = cp.RawModule(code=_SOURCE, options=("--fmad=false", "-std=c++14"))
    return _MODULE.get_function("deliver_incoming")


def deliver_gpu(steps: Any, gids: Any, skip_lo: int, skip_hi: int, pint: np.ndarray, pflt: np.ndarray, seed: int,
                block: int, lo: int, hi: int, ring: Any, block_major: bool = False) -> None:
    """Add the synapses of spikes ``(steps, gids)`` that land in post neurons ``[lo, hi)`` to ``ring``, in place.

    ``ring`` is a cupy int32 ``(neuron, slot, receptor)`` array in any memory layout (as
    ``run_window_gpu`` takes it); ``steps`` and ``gids`` are integer arrays (numpy or cupy) of one
    length. Spikes of neurons in ``[skip_lo, skip_hi)`` are skipped (the chunk's own, delivered by the
    window kernel). Stored connectivity and fixed out-degree are not generated here.
    """
    import cupy as cp

    pint = np.ascontiguousarray(pint, np.int64)
    if len(steps) != len(gids):
        raise ValueError(f"steps and gids must have one length, got {len(steps)} and {len(gids)}")
    if ring.dtype != cp.int32 or ring.ndim != 3 or ring.shape[0] != hi - lo:
        raise ValueError(f"ring must be int32 (neuron, slot, receptor) with {hi - lo} neurons, "
                         f"got {ring.dtype} {ring.shape}")
    if pint.shape[0] and ((pint[:, 0] > 2).any() or (pint[:, 10] != 0).any()):
        raise NotImplementedError("deliver_gpu generates fixed_probability, all_to_all and one_to_one synapses only")
    if pint.shape[0] and pint[:, 5].max() >= ring.shape[2]:
        raise ValueError(f"the network sends input to receptor {pint[:, 5].max()} but the ring holds "
                         f"{ring.shape[2]} receptor(s)")
    n_spk, n_proj = len(gids), int(pint.shape[0])
    if n_spk == 0 or n_proj == 0:
        return
    n = hi - lo
    n_blk = max((min(n, int(pi[4])) + block - 1) // block + 1 for pi in pint)
    total = n_spk * n_proj * n_blk
    st_n, st_s, st_r = (np.int64(x // ring.itemsize) for x in ring.strides)
    g = cp.asarray(gids).astype(cp.int64, copy=False)
    s = cp.asarray(steps).astype(cp.int64, copy=False)
    _kernel()(((total + 255) // 256,), (256,), (
        g, s, np.int64(n_spk), np.int32(n_proj), cp.asarray(pint), cp.asarray(np.ascontiguousarray(pflt, np.float64)),
        np.uint64(seed), np.uint64(STREAM_CONN), np.int64(block), np.int64(lo), np.int64(hi), ring,
        np.int32(ring.shape[1]), st_n, st_s, st_r, np.int64(skip_lo), np.int64(skip_hi), np.int64(n_blk),
        np.int32(block_major)))
