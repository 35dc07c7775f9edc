"""Cupy twins of the window kernel and procedural delivery (one CUDA thread per neuron / per spike).

The arithmetic is the CPU kernels' own, in the same order and in float32,
compiled without fused multiply-adds, and synaptic input is summed in
integer quanta with atomics, so the GPU gives the CPU's spikes (the CUDA
``log``/``cos`` of the generators can differ from the CPU's in the last bit,
which changes a synapse only on an exact tie). Stored connectivity is not
supported on the GPU yet.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .rng import CUDA_SOURCE, STREAM_POISSON, stream_key

__all__ = ["run_window_gpu", "to_device", "to_host"]

_SOURCE = CUDA_SOURCE + r"""
extern "C" __global__ void step_population(
    int model, const float* prm, int ref_steps, float q0, float q1, double lam, const double* cdf, int pwq, int pr,
    u64 seed, u64 pop, long long lo, int i0, int i1, float* v, float* u, float* g, int* ref, int* ring,
    long long st_n, long long st_s, long long st_r, int n_rec, int slot, long long s, unsigned char* flags)
{
    int i = i0 + blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= i1) return;
    int* rp = ring + (long long)i * st_n + (long long)slot * st_s;
    if (lam > 0.0) {
        int k = poisson_table(mix64(seed ^ (u64)(lo + i)), (u64)s, cdf);  // seed: the population's stream base
        rp[pr * st_r] += k * pwq;
    }
    int a0 = rp[0], a1 = n_rec > 1 ? rp[st_r] : 0;
    rp[0] = 0;
    if (n_rec > 1) rp[st_r] = 0;
    float x0 = (float)a0 * q0, x1 = (float)a1 * q1;
    float vi = v[i];
    int r = ref[i];
    bool f;
    if (model == 0) {
        float ge = g[2 * i] + x0, gi = g[2 * i + 1] + x1;
        if (r == 0) vi = vi + prm[0] * (prm[1] * (prm[2] - vi) + ge * (prm[5] - vi) + gi * (prm[6] - vi) + prm[9]);
        else r -= 1;
        g[2 * i] = ge - ge * prm[7];
        g[2 * i + 1] = gi - gi * prm[8];
        f = r == 0 && vi > prm[3];
        if (f) { vi = prm[4]; r = ref_steps; }
    } else if (model == 1) {
        float ie = g[2 * i] + x0, ii = g[2 * i + 1] + x1;
        if (r == 0) vi = vi + prm[0] * ((prm[1] - vi) + ie + ii + prm[6]);
        else r -= 1;
        g[2 * i] = ie - ie * prm[4];
        g[2 * i + 1] = ii - ii * prm[5];
        f = r == 0 && vi > prm[2];
        if (f) { vi = prm[3]; r = ref_steps; }
    } else if (model == 2) {
        if (r == 0) { vi = vi + x0 + x1; vi = prm[1] + (vi - prm[1]) * prm[0] + prm[4]; }
        else r -= 1;
        f = r == 0 && vi > prm[2];
        if (f) { vi = prm[3]; r = ref_steps; }
    } else {
        float ui = u[i];
        vi = vi + x0 + x1;
        if (r == 0) {
            float dv = 0.04f * vi * vi + 5.0f * vi + 140.0f - ui + prm[6];
            float du = prm[1] * (prm[2] * vi - ui);
            vi = vi + prm[0] * dv;
            ui = ui + prm[0] * du;
        } else r -= 1;
        f = r == 0 && vi >= prm[5];
        if (f) { vi = prm[3]; ui = ui + prm[4]; r = ref_steps; }
        u[i] = ui;
    }
    flags[i] = f;
    ref[i] = r;
    v[i] = vi;
}

#define NI 12
#define NF 7
__device__ __forceinline__ void weight_delay(const long long* pi, const double* pf, u64 key, u64* k, int* wq, long long* d) {
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

extern "C" __global__ void deliver(
    const long long* gids, const long long* steps, int n_spk, int n_proj, const long long* pint, const double* pflt,
    u64 seed, long long block, long long lo, long long hi, int* ring, int n_slots, long long st_n, long long st_s,
    long long st_r, long long skip_lo, long long skip_hi, long long n_blk, int block_major)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per_blk = (long long)n_spk * n_proj;
    if (t >= per_blk * n_blk) return;
    long long bb;
    if (block_major) { bb = t / per_blk; t %= per_blk; }  // neighbouring threads share a block of targets
    else { bb = t % n_blk; t /= n_blk; }  // neighbouring threads share a spike
    int x = (int)(t / n_proj), p = (int)(t % n_proj);
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
    u64 a = (1ULL << 32) | (u64)pi[8];
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
    long long b0 = (lo2 - post_lo) / block, b1 = (hi2 - post_lo + block - 1) / block;
    // one thread per (spike, projection, target block)
    for (long long b = b0 + bb; b < b0 + bb + 1 && b < b1; ++b) {
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
}
"""

_MODULE: Any = None


def _module() -> Any:
    global _MODULE
    if _MODULE is None:
        import cupy as cp

        _MODULE = cp.RawModule(code=_SOURCE, options=("--fmad=false", "-std=c++14"))
    return _MODULE


def to_device(arrays: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    import cupy as cp

    return tuple(cp.asarray(a) for a in arrays)


def to_host(arrays: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    return tuple(a.get() for a in arrays)


def run_window_gpu(tables: tuple[np.ndarray, ...], v: Any, u: Any, g: Any, ref: Any, ring: Any, s0: int, n_steps: int,
                   lo: int, seed: int, pint: np.ndarray, pflt: np.ndarray, block: int,
                   block_major: bool = False) -> tuple[Any, Any]:
    """The GPU twin of ``kernels.neurons.run_window`` (procedural connectivity), in place on cupy arrays.

    ``ring`` is ``(neuron, slot, receptor)`` int32 in any memory layout (a transposed view of a slot-major
    buffer makes the neuron update coalesced) and may hold one receptor when no synapse or background
    input targets the second. ``u`` and ``g`` may be 1-element placeholders for populations of
    models that do not use them (``lif_cuba_delta``; memory for 1e9 neurons).

    ``block_major`` orders the delivery threads by target block rather than by spike (integer atomics:
    the same result either way; faster for networks whose ring rows do not fit in L2, slower when
    many spikes then add into the same few neurons at once).

    Returns the window's spikes as cupy ``(steps, neuron ids)`` in (step, neuron) order.
    """
    import cupy as cp

    models, prms, ref_steps, quanta, offsets, lams, cdfs, pois_wq, pois_r = tables
    mod = _module()
    step_k, deliver_k = mod.get_function("step_population"), mod.get_function("deliver")
    n = int(v.shape[0])
    hi = lo + n
    n_slots, n_rec = int(ring.shape[1]), int(ring.shape[2])
    st_n, st_s, st_r = (np.int64(x // ring.itemsize) for x in ring.strides)
    if ring.dtype != cp.int32 or n_rec not in (1, 2):
        raise ValueError(f"ring must be int32 (neuron, slot, 1 or 2 receptors), got {ring.dtype} {ring.shape}")
    used = set(np.asarray(pint)[:, 5].tolist()) | {int(r) for r, lam in zip(pois_r, lams) if lam > 0}
    if max(used, default=0) >= n_rec:
        raise ValueError(f"the network sends input to receptor {max(used)} but the ring holds {n_rec} receptor(s)")
    small = {int(m) for m, a, b in zip(models, offsets[:-1], offsets[1:]) if min(hi, b) > max(lo, a)}
    if (u.shape[0] < n and 3 in small) or (g.shape[0] < n and small & {0, 1}):
        raise ValueError("u and g may be placeholders only for models that do not use them")
    flags = cp.zeros(n, cp.uint8)
    prms_d = cp.asarray(prms)
    cdfs_d = cp.asarray(np.ascontiguousarray(cdfs))
    pint_d, pflt_d = cp.asarray(np.ascontiguousarray(pint, np.int64)), cp.asarray(np.ascontiguousarray(pflt))
    n_proj = int(pint.shape[0])
    if n_proj and (np.asarray(pint)[:, 0] > 2).any():
        raise NotImplementedError("the GPU twin generates fixed_probability, all_to_all and one_to_one synapses only")
    # target blocks a spike can reach in this chunk (the most over all projections)
    n_blk = max([(min(n, int(pi[4])) + block - 1) // block + 1 for pi in pint] or [1])
    out_s, out_i = [], []
    for s in range(s0, s0 + n_steps):
        slot = s % n_slots
        for pop in range(len(models)):
            a, b = max(lo, int(offsets[pop])), min(hi, int(offsets[pop + 1]))
            if a >= b:
                continue
            i0, i1 = a - lo, b - lo
            step_k(((i1 - i0 + 255) // 256,), (256,), (
                np.int32(models[pop]), prms_d[pop], np.int32(ref_steps[pop]), np.float32(quanta[pop, 0]),
                np.float32(quanta[pop, 1]), np.float64(lams[pop]), cdfs_d[pop], np.int32(pois_wq[pop]),
                np.int32(pois_r[pop]), np.uint64(stream_key(seed, STREAM_POISSON, pop, 0)), np.uint64(pop), np.int64(lo), np.int32(i0), np.int32(i1),
                v, u, g, ref, ring, st_n, st_s, st_r, np.int32(n_rec), np.int32(slot), np.int64(s), flags))
        idx = cp.flatnonzero(flags)
        if idx.size == 0:
            continue
        gids = idx.astype(cp.int64) + lo
        steps = cp.full(idx.size, s, cp.int64)
        out_s.append(steps)
        out_i.append(gids)
        if n_proj:
            total = int(idx.size) * n_proj * n_blk
            deliver_k(((total + 255) // 256,), (256,), (
                gids, steps, np.int32(idx.size), np.int32(n_proj), pint_d, pflt_d, np.uint64(seed), np.int64(block),
                np.int64(lo), np.int64(hi), ring, np.int32(n_slots), st_n, st_s, st_r, np.int64(-1), np.int64(-1),
                np.int64(n_blk), np.int32(block_major)))
    if not out_s:
        return cp.zeros(0, cp.int64), cp.zeros(0, cp.int64)
    return cp.concatenate(out_s), cp.concatenate(out_i)
