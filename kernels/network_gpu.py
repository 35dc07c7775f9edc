"""Cupy twins of the window kernel and procedural delivery.

The arithmetic is the CPU kernels' own, in the same order and in float32,
compiled without fused multiply-adds, and synaptic input is summed in
integer quanta, so the GPU gives the CPU's spikes (the CUDA ``log``/``cos``
of the generators can differ from the CPU's in the last bit, which changes a
synapse only on an exact tie). Stored connectivity is not supported on the
GPU yet.

Two engines deliver a step's spikes:

- ``"blocks"`` (default): one CUDA block per (projection, target block of the
  generator, slice of the step's spikes), threads over spikes, each thread
  walking its spikes' streams one draw per loop turn (a thread whose stream
  ends takes its next spike at once, so lanes stay busy). Constant-weight,
  constant-delay fixed-probability projections add into the target block in
  shared memory and flush once per CUDA block (``accumulate="shared"``), or
  add straight into the ring buffer with the work ordered by target block so
  that the rows being written stay in L2 (``"global"``; a persistent grid
  takes the work items from a counter, and its lanes take an item's spikes
  as they free up). A skip length comes from a float32 ``log2`` (p above
  about 7e-4) or a table ``log`` (below) when that is provably the double
  formula's answer, else from the double ``log`` (so the synapses are the
  CPU's). The neuron update appends
  spikes to a device list, so a window runs without a host synchronisation
  per step, and the deliveries of up to the smallest delay's steps go in one
  launch after those steps' neuron updates (``batch_steps``).
- ``"threads"``: the first version (one thread per spike, projection and
  target block; global atomics per synapse; a host synchronisation per step).

Both draw the same synapses from the same keyed streams (``kernels.rng``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .rng import CUDA_SOURCE, STREAM_CONN, STREAM_POISSON, stream_key

__all__ = ["ACCUMULATE", "ENGINES", "deliver_spikes_gpu", "run_window_gpu", "to_device", "to_host"]

ENGINES = ("blocks", "threads")
ACCUMULATE = ("auto", "shared", "global")
_STEP_TILE = 2048  # neurons per CUDA block of the neuron update (its spikes are gathered in shared memory)
_SHARED_MAX = 48 * 1024  # bytes of shared accumulator a CUDA block may use without an opt-in
_MASK = (1 << 64) - 1
_REC_MIN = 1 << 24  # spikes the window's list holds at least before the host looks at its length
_SORT_ONCE = 1 << 26  # up to this many spikes a window's spikes are ordered by one sort of int64 keys
_BATCH_MAX = 256  # most steps whose deliveries go in one launch
# threads engine: chunks of at least this many neurons order delivery threads by target block (their ring rows do
# not fit in L2: benchmarks/results/brain.md, 1.25e7 and 1e9 neurons), smaller ones by spike
_BLOCK_MAJOR_FROM = 1 << 23
_FILL = 0.5  # a target block's share of the resident delivery blocks (global sums): about 2 target blocks at work


def _log_table() -> str:
    """The table skip filter's ``LOG_TABLE[i] = (c_i, -log c_i)``, ``c_i = 1 / (1 + (i + 1/2) / 128)`` (CUDA)."""
    rows = []
    for i in range(128):
        c = 1.0 / (1.0 + (i + 0.5) / 128)
        rows.append(f"{{{c!r}, {-math.log(c)!r}}}")
    return "__device__ const double2 LOG_TABLE[128] = {" + ", ".join(rows) + "};\n"

_SOURCE = CUDA_SOURCE + _log_table() + r"""
__device__ __forceinline__ bool neuron_update(
    int model, const float* prm, int ref_steps, float q0, float q1, double lam, const double* cdf, int pwq, int pr,
    u64 seed, long long lo, int i, float* v, float* u, float* g, int* ref, int* ring,
    long long st_n, long long st_s, long long st_r, int n_rec, int slot, long long s)
{
    long long li = i;
    int* rp = ring + li * st_n + (long long)slot * st_s;
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
        float ge = g[2 * li] + x0, gi = g[2 * li + 1] + x1;
        if (r == 0) vi = vi + prm[0] * (prm[1] * (prm[2] - vi) + ge * (prm[5] - vi) + gi * (prm[6] - vi) + prm[9]);
        else r -= 1;
        g[2 * li] = ge - ge * prm[7];
        g[2 * li + 1] = gi - gi * prm[8];
        f = r == 0 && vi > prm[3];
        if (f) { vi = prm[4]; r = ref_steps; }
    } else if (model == 1) {
        float ie = g[2 * li] + x0, ii = g[2 * li + 1] + x1;
        if (r == 0) vi = vi + prm[0] * ((prm[1] - vi) + ie + ii + prm[6]);
        else r -= 1;
        g[2 * li] = ie - ie * prm[4];
        g[2 * li + 1] = ii - ii * prm[5];
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
    ref[i] = r;
    v[i] = vi;
    return f;
}

extern "C" __global__ void step_population(
    int model, const float* prm, int ref_steps, float q0, float q1, double lam, const double* cdf, int pwq, int pr,
    u64 seed, u64 pop, long long lo, int i0, int i1, float* v, float* u, float* g, int* ref, int* ring,
    long long st_n, long long st_s, long long st_r, int n_rec, int slot, long long s, unsigned char* flags)
{
    int i = i0 + blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= i1) return;
    flags[i] = neuron_update(model, prm, ref_steps, q0, q1, lam, cdf, pwq, pr, seed, lo, i, v, u, g, ref, ring,
                             st_n, st_s, st_r, n_rec, slot, s);
}

// The neuron update of the "blocks" engine: a CUDA block updates STEP_TILE neurons, gathers its spikes in
// shared memory and appends them to rec[] with one atomic (rec: local ids; a step's spikes of one population
// are contiguous there, the populations in launch order; cnt[cnt_i] counts them).
#define STEP_TILE 2048
extern "C" __global__ void step_record(
    int model, const float* prm, int ref_steps, float q0, float q1, double lam, const double* cdf, int pwq, int pr,
    u64 seed, long long lo, int i0, int i1, float* v, float* u, float* g, int* ref, int* ring,
    long long st_n, long long st_s, long long st_r, int n_rec, int slot, long long s,
    int* rec, unsigned long long* head, int* cnt, int cnt_i)
{
    __shared__ int s_list[STEP_TILE];
    __shared__ int s_n;
    __shared__ unsigned long long s_base;
    if (threadIdx.x == 0) s_n = 0;
    __syncthreads();
    int base = i0 + blockIdx.x * STEP_TILE;
    for (int m = threadIdx.x; m < STEP_TILE; m += blockDim.x) {
        int i = base + m;
        if (i < i1 && neuron_update(model, prm, ref_steps, q0, q1, lam, cdf, pwq, pr, seed, lo, i, v, u, g, ref,
                                    ring, st_n, st_s, st_r, n_rec, slot, s))
            s_list[atomicAdd(&s_n, 1)] = i;
    }
    __syncthreads();
    int c = s_n;
    if (c == 0) return;
    if (threadIdx.x == 0) {
        s_base = atomicAdd(head, (unsigned long long)c);
        atomicAdd(cnt + cnt_i, c);
    }
    __syncthreads();
    for (int q = threadIdx.x; q < c; q += blockDim.x) rec[s_base + q] = s_list[q];
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

// ---- the "blocks" engine's delivery -------------------------------------------------------------------------
// A counter ctr = key + (k + 1) * GOLDEN stands for draw k of stream key: uniform(key, k) == unit(ctr).
__device__ __forceinline__ double unit(u64 ctr) {
    u64 x = mix64(ctr);
    return (double)((long long)(x >> 11) + 1LL) * (1.0 / 9007199254740992.0);
}
__device__ __forceinline__ int draw_weight(int wk, const double* pf, u64* ctr) {
    double w;
    if (wk == 0) w = pf[2];
    else if (wk == 1) {
        double u1 = unit(*ctr), u2 = unit(*ctr + GOLDEN);
        w = pf[2] + pf[3] * (sqrt(-2.0 * log(u1)) * cos(2.0 * 3.141592653589793 * u2));
        *ctr += 2ULL * GOLDEN;
    } else { w = pf[2] + (pf[3] - pf[2]) * unit(*ctr); *ctr += GOLDEN; }
    return (int)rint(w / pf[6]);
}
__device__ __forceinline__ int draw_delay(int dk, const double* pf, u64* ctr) {
    if (dk == 0) return (int)(long long)pf[4];
    long long span = (long long)pf[5] - (long long)pf[4] + 1;
    long long x = (long long)(unit(*ctr) * (double)span);
    *ctr += GOLDEN;
    return (int)((long long)pf[4] + (x < span - 1 ? x : span - 1));
}

// Skip of a fixed-probability stream: floor(log(u) * inv) in double precision, u = unit(ctr) from z = mix64(ctr),
// as the CPU computes it. exact_skip is that formula. Two filters answer from cheaper arithmetic when the answer
// is provably the same, else the double formula runs:
// - fast_skip (1): a float32 log2 of z's top 32 bits: |y32 - y| <= ecf + 2.5e-7 y, with ecf = 1.7e-5 |cf| + 1e-6
//   (cf = inv ln 2 in float; the terms: __log2f's 2 ulp on [2^20, 2^32) taken as 2^-16, the top bits against u,
//   the float roundings), and y32 is at least that far from every integer (about 99.95% of draws at p = 0.1).
//   Only for |cf| < 1024 (p above about 7e-4).
// - table_skip (2, sparser projections): log(u) = e ln 2 - log(c_i) + log1p(r), c_i from a table of 128 over the
//   top mantissa bits, r = f c_i - 1 (|r| < 2^-8), log1p(r) to r^4: within 1.8e-13 of log(u) (the r^5/5 term),
//   3e-13 with the roundings; so |y' - y| <= 3e-13 |inv| + 1e-15 y (the CPU's and this log's last bits and
//   the products' roundings in the second term), and y' is at least that far from every integer.
__device__ __forceinline__ int exact_skip(u64 z, double inv, int big) {
    double sk = floor(log((double)((long long)(z >> 11) + 1LL) * (1.0 / 9007199254740992.0)) * inv);
    return sk > 2.0e9 ? big : (int)sk;
}
__device__ __forceinline__ bool fast_skip(u64 z, float cf, float ecf, int* skip) {
    unsigned int hi = (unsigned int)(z >> 32);
    if (hi < (1u << 20)) return false;
    float l;  // __log2f without its subnormal scaling (hi >= 2^20): the same MUFU.LG2, three instructions fewer
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(l) : "f"((float)hi));
    float y = (l - 32.0f) * cf;
    float f = floorf(y);
    float e = ecf + 2.5e-7f * y;
    if (y - f > e && f + 1.0f - y > e) { *skip = (int)f; return true; }
    return false;
}
__device__ __forceinline__ double table_log(u64 z) {
    double d = (double)((long long)(z >> 11) + 1LL);  // u * 2^53, exact
    int hi = __double2hiint(d), lo = __double2loint(d);
    double2 t = LOG_TABLE[(hi >> 13) & 127];
    double f = __hiloint2double((hi & 0x000FFFFF) | 0x3FF00000, lo);
    double r = fma(f, t.x, -1.0);
    double lp = r * fma(r, fma(r, fma(r, -0.25, 1.0 / 3.0), -0.5), 1.0);
    double e = (double)((hi >> 20) - 1023 - 53);
    return fma(e, 6.93147180369123816490e-01, t.y + fma(e, 1.90821492927058770002e-10, lp));
}
__device__ __forceinline__ bool table_skip(u64 z, double inv, double etol, int big, int* skip) {
    double y = table_log(z) * inv;
    double f = floor(y);
    double e = etol + 1e-15 * y;
    if (y - f > e && f + 1.0 - y > e) { *skip = f > 2.0e9 ? big : (int)f; return true; }
    return false;
}
template <bool TABLE>  // false: no table filter (its code costs the shared-sum kernel registers), the double formula
__device__ __forceinline__ int next_skip(u64 z, double inv, float cf, float ecf, double etol, int filter, int big) {
    int skip;
    if (filter == 1 && fast_skip(z, cf, ecf, &skip)) return skip;
    if (TABLE && filter == 2 && table_skip(z, inv, etol, big, &skip)) return skip;
    return exact_skip(z, inv, big);
}
// filter: 0 none (allow == 0), 1 the float32 one where it can resolve the skips, else 2 the table one.
__device__ __forceinline__ void skip_constants(double inv, int allow, float* cf, float* ecf, double* etol,
                                               int* filter) {
    *cf = (float)(inv * 0.6931471805599453);
    *ecf = 1.7e-5f * fabsf(*cf) + 1e-6f;
    *etol = 3e-13 * fabs(inv);
    *filter = !allow ? 0 : (fabsf(*cf) < 1024.0f ? 1 : 2);
}

// Draws n of stream key: how often filter (1 float32, 2 table) answered, and how often it disagreed with
// exact_skip (a test).
extern "C" __global__ void skip_agreement(u64 key, long long n, double inv, int filter, unsigned long long* out) {
    float cf, ecf;
    double etol;
    int mode;
    skip_constants(inv, 1, &cf, &ecf, &etol, &mode);
    unsigned long long taken = 0, bad = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        u64 z = mix64(key + (u64)(i + 1) * GOLDEN);
        int f;
        if (filter == 1 ? fast_skip(z, cf, ecf, &f) : table_skip(z, inv, etol, 1 << 30, &f)) {
            taken += 1;
            bad += f != exact_skip(z, inv, 1 << 30);
        }
    }
    atomicAdd(out, taken);
    atomicAdd(out + 1, bad);
}

// The spikes of population P at step k of a batch start at rec[first[k * n_pops + P]]: first from the batch's
// counts (cnt, step-major, one per population; n of them) and the list's length after the batch (*head).
extern "C" __global__ void batch_spans(const int* cnt, int n, const unsigned long long* head, long long* first) {
    __shared__ int s_cnt[1024];
    long long at = (long long)(*head);
    for (int end = n; end > 0; end -= 1024) {
        int begin = end > 1024 ? end - 1024 : 0;
        __syncthreads();
        for (int q = begin + threadIdx.x; q < end; q += blockDim.x) s_cnt[q - begin] = cnt[q];
        __syncthreads();
        if (threadIdx.x == 0)
            for (int q = end - 1; q >= begin; --q) { at -= s_cnt[q - begin]; first[q] = at; }
    }
}

// The next of an item's spikes for each lane calling: spike from + the item's shared counter (one atomic per warp).
__device__ __forceinline__ int next_spike(int* taken, int from) {
    unsigned need = __activemask();
    int lane = (int)(threadIdx.x & 31), leader = __ffs(need) - 1, base = 0;
    if (lane == leader) base = atomicAdd(taken, __popc(need));
    return from + __shfl_sync(need, base, leader) + __popc(need & ((1u << lane) - 1u));
}

// MODE 0: fixed probability, constant weight and delay, sums in shared memory, one flush per CUDA block.
// MODE 1: the same straight into the ring buffer (global atomics).
// MODE 2: fixed probability or all-to-all, any weight and delay kinds (global atomics).
// Work item = unit * cmax + slice of step s + k of the batch; units[2 * unit] = projection, units[2 * unit + 1] =
// target block.
template <int MODE>
__device__ __forceinline__ void deliver_item(
    unsigned item, int k, const int* units, int cmax, const long long* pint, const double* pflt,
    const u64* hkey, const int* pre_pop, const int* rec, const long long* spans, const int* cnt, int n_pops,
    long long block, long long lo, long long hi, int* ring, int n_slots, long long st_n, long long st_s, long long st_r,
    int s_mod0, int allow_fast, int* taken)
{
    extern __shared__ int acc[];
    int unit_i = (int)(item / (unsigned)cmax), c = (int)item - unit_i * cmax;
    int p = units[2 * unit_i];
    long long b = units[2 * unit_i + 1];
    int q = k * n_pops + pre_pop[p];
    int n_pre = cnt[q];
    int per = (int)(((unsigned)n_pre + (unsigned)cmax - 1u) / (unsigned)cmax);  // spikes per slice
    int x0 = c * per;
    if (x0 >= n_pre) return;
    int x1 = x0 + per < n_pre ? x0 + per : n_pre;
    long long first = spans[q];
    const long long* pi = pint + (long long)p * NI;
    const double* pf = pflt + (long long)p * NF;
    long long start = pi[3] + b * block, rest = pi[3] + pi[4] - start;
    int nb = (int)(block < rest ? block : rest);
    int ja = (int)((lo > start ? lo : start) - start);
    int je = (int)((hi < start + nb ? hi : start + nb) - start);
    long long shift = lo - pi[1];  // presynaptic index = local id + shift
    int rule = (int)pi[0], wk = (int)pi[6], dk = (int)pi[7];
    int s_mod = (s_mod0 + k) % n_slots;
    int slot0 = s_mod + (int)(long long)pf[4];
    if (slot0 >= n_slots) slot0 -= n_slots;
    long long row = (start - lo) * st_n + pi[5] * st_r;  // ring index of target 0 of the block, less the slot
    int* out = ring + row + (long long)slot0 * st_s;
    int wq0 = (int)rint(pf[2] / pf[6]);
    double inv = pf[1];
    float cf, ecf;
    double etol;
    int filter;
    skip_constants(inv, allow_fast, &cf, &ecf, &etol, &filter);
    u64 hp = hkey[p], bk = (u64)b;
    if (MODE == 0) {
        for (int t = threadIdx.x; t < je - ja; t += blockDim.x) acc[t] = 0;
        __syncthreads();
    }
    int x = x0 + (int)threadIdx.x - (int)blockDim.x;
    int j = nb;
    u64 ctr = 0;
    while (true) {
        if (j >= nb) {  // this lane's stream has ended: its next spike (by lane; global sums: as lanes free up)
            x = MODE == 0 ? x + (int)blockDim.x : next_spike(taken, x0);
            if (x >= x1) break;
            ctr = mix64(mix64(hp ^ (u64)((long long)rec[first + x] + shift)) ^ bk) + GOLDEN;
            j = -1;
        }
        if (MODE == 2 && rule == 1) {
            j += 1;
            if (j >= nb) continue;
        } else {
            // nb: past the block either way
            int skip = next_skip<MODE != 0>(mix64(ctr), inv, cf, ecf, etol, filter, nb);
            ctr += GOLDEN;
            if (skip >= nb - 1 - j) { j = nb; continue; }
            j += 1 + skip;
        }
        if (MODE == 2) {
            int wq = draw_weight(wk, pf, &ctr);
            int slot = s_mod + draw_delay(dk, pf, &ctr);
            if (slot >= n_slots) slot -= n_slots;
            if (j >= ja && j < je) atomicAdd(ring + row + (long long)j * st_n + (long long)slot * st_s, wq);
        } else if (j >= ja && j < je) {
            if (MODE == 0) atomicAdd(acc + (j - ja), wq0);
            else atomicAdd(out + (long long)j * st_n, wq0);
        }
    }
    if (MODE == 0) {
        __syncthreads();
        for (int t = threadIdx.x; t < je - ja; t += blockDim.x) {
            int a = acc[t];
            if (a) atomicAdd(out + (long long)(ja + t) * st_n, a);
        }
    }
}

// PERSIST false: one CUDA block per work item. True: a persistent grid, each CUDA block taking the next item
// from the counter *work until the n_items of each of the n_batch steps are done (step by step, items in unit order,
// so the blocks at work share targets). blockIdx.y (one CUDA block per item) or item / n_items: the batch's step.
template <int MODE, bool PERSIST>
__device__ __forceinline__ void deliver_units(
    const int* units, int cmax, const long long* pint, const double* pflt, const u64* hkey, const int* pre_pop,
    const int* rec, const long long* spans, const int* cnt, int n_pops, long long block, long long lo,
    long long hi, int* ring, int n_slots, long long st_n, long long st_s, long long st_r, int s_mod0, int allow_fast,
    int* work, int n_items, int n_batch)
{
    __shared__ int s_taken;  // the item's spikes taken after the lanes' first ones
    if (!PERSIST) {
        if (threadIdx.x == 0) s_taken = 0;
        __syncthreads();
        deliver_item<MODE>(blockIdx.x, (int)blockIdx.y, units, cmax, pint, pflt, hkey, pre_pop, rec, spans,
                           cnt, n_pops, block, lo, hi, ring, n_slots, st_n, st_s, st_r, s_mod0, allow_fast, &s_taken);
        return;
    }
    __shared__ int s_item;
    while (true) {
        __syncthreads();  // the previous item is done (its shared sums flushed, s_item and s_taken read by all)
        if (threadIdx.x == 0) {
            s_item = atomicAdd(work, 1);
            s_taken = 0;
        }
        __syncthreads();
        int item = s_item;
        if (item >= n_items * n_batch) return;
        int k = item / n_items;
        deliver_item<MODE>((unsigned)(item - k * n_items), k, units, cmax, pint, pflt, hkey, pre_pop, rec,
                           spans, cnt, n_pops, block, lo, hi, ring, n_slots, st_n, st_s, st_r, s_mod0, allow_fast,
                           &s_taken);
    }
}

#define DELIVER_ARGS \
    const int* units, int cmax, const long long* pint, const double* pflt, const u64* hkey, const int* pre_pop, \
    const int* rec, const long long* spans, const int* cnt, int n_pops, long long block, long long lo, \
    long long hi, int* ring, int n_slots, long long st_n, long long st_s, long long st_r, int s_mod0, int allow_fast, \
    int* work, int n_items, int n_batch
#define DELIVER_PASS units, cmax, pint, pflt, hkey, pre_pop, rec, spans, cnt, n_pops, block, lo, hi, ring, n_slots, \
    st_n, st_s, st_r, s_mod0, allow_fast, work, n_items, n_batch
extern "C" __global__ void __launch_bounds__(256, 8) deliver_shared(DELIVER_ARGS) {
    deliver_units<0, false>(DELIVER_PASS);
}
extern "C" __global__ void deliver_global(DELIVER_ARGS) { deliver_units<1, false>(DELIVER_PASS); }
extern "C" __global__ void deliver_general(DELIVER_ARGS) { deliver_units<2, false>(DELIVER_PASS); }
extern "C" __global__ void deliver_shared_persistent(DELIVER_ARGS) { deliver_units<0, true>(DELIVER_PASS); }
extern "C" __global__ void deliver_global_persistent(DELIVER_ARGS) { deliver_units<1, true>(DELIVER_PASS); }
extern "C" __global__ void deliver_general_persistent(DELIVER_ARGS) { deliver_units<2, true>(DELIVER_PASS); }

extern "C" __global__ void deliver_one_to_one(
    int p, const long long* pint, const double* pflt, u64 seed, const int* pre_pop, const int* rec,
    const long long* spans, const int* cnt, int n_pops, long long block, long long lo, long long hi,
    int* ring, int n_slots, long long st_n, long long st_s, long long st_r, int s_mod0, int n_batch)
{
    const long long* pi = pint + (long long)p * NI;
    const double* pf = pflt + (long long)p * NF;
    int q = (int)blockIdx.y * n_pops + pre_pop[p];
    long long first = spans[q], n_pre = cnt[q];
    int s_mod = (s_mod0 + (int)blockIdx.y) % n_slots;
    for (long long x = (long long)blockIdx.x * blockDim.x + threadIdx.x; x < n_pre; x += (long long)gridDim.x * blockDim.x) {
        long long pre = (long long)rec[first + x] + lo - pi[1];
        long long tt = pi[3] + pre;
        if (tt < lo || tt >= hi) continue;
        u64 ctr = stream_key(seed, (1ULL << 32) | (u64)pi[8], (u64)pre, (u64)(pre / block)) + GOLDEN;
        int wq = draw_weight((int)pi[6], pf, &ctr);
        int slot = s_mod + draw_delay((int)pi[7], pf, &ctr);
        if (slot >= n_slots) slot -= n_slots;
        atomicAdd(ring + (tt - lo) * st_n + (long long)slot * st_s + pi[5] * st_r, wq);
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


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def conn_prefix(seed: int, proj_id: int) -> int:
    """The first two hashes of projection ``proj_id``'s synapse streams: ``stream_key(seed, a, pre, b)``
    is ``mix64(mix64(prefix ^ pre) ^ b)`` with ``a = (STREAM_CONN << 32) | proj_id``."""
    return _mix64(_mix64((seed + 0x9E3779B97F4A7C15) & _MASK) ^ ((STREAM_CONN << 32) | proj_id))


def _check(tables: tuple[np.ndarray, ...], v: Any, u: Any, g: Any, ring: Any, lo: int, pint: np.ndarray) -> None:
    import cupy as cp

    models, _, _, _, offsets, lams, _, _, pois_r = tables
    n = int(v.shape[0])
    hi = lo + n
    n_rec = int(ring.shape[2])
    if ring.dtype != cp.int32 or n_rec not in (1, 2):
        raise ValueError(f"ring must be int32 (neuron, slot, 1 or 2 receptors), got {ring.dtype} {ring.shape}")
    used = set(np.asarray(pint)[:, 5].tolist()) | {int(r) for r, lam in zip(pois_r, lams) if lam > 0}
    if max(used, default=0) >= n_rec:
        raise ValueError(f"the network sends input to receptor {max(used)} but the ring holds {n_rec} receptor(s)")
    small = {int(m) for m, a, b in zip(models, offsets[:-1], offsets[1:]) if min(hi, b) > max(lo, a)}
    if (u.shape[0] < n and 3 in small) or (g.shape[0] < n and small & {0, 1}):
        raise ValueError("u and g may be placeholders only for models that do not use them")
    if pint.shape[0] and (np.asarray(pint)[:, 0] > 2).any():
        raise NotImplementedError("the GPU twin generates fixed_probability, all_to_all and one_to_one synapses only")


def run_window_gpu(tables: tuple[np.ndarray, ...], v: Any, u: Any, g: Any, ref: Any, ring: Any, s0: int, n_steps: int,
                   lo: int, seed: int, pint: np.ndarray, pflt: np.ndarray, block: int,
                   block_major: bool = False, *, engine: str = "blocks", accumulate: str = "auto",
                   threads: int = 256, spikes_per_item: int | None = None, fast_skip: bool = True,
                   persistent: bool | None = None, batch_steps: int | None = None,
                   ordered: bool = True) -> tuple[Any, Any]:
    """The GPU twin of ``kernels.neurons.run_window`` (procedural connectivity), in place on cupy arrays.

    ``ring`` is ``(neuron, slot, receptor)`` int32 in any memory layout (a transposed view of a slot-major
    buffer makes the neuron update coalesced) and may hold one receptor when no synapse or background
    input targets the second. ``u`` and ``g`` may be 1-element placeholders for populations of
    models that do not use them (``lif_cuba_delta``; memory for 1e9 neurons).

    Parameters
    ----------
    block_major
        ``engine="threads"`` only: order its delivery threads by target block rather than by spike.
    engine
        ``"blocks"`` (CUDA blocks over target blocks, no host synchronisation per step) or ``"threads"``
        (the first version); both give the same spikes.
    accumulate
        ``"blocks"`` engine, constant-weight and constant-delay fixed-probability projections: sum a
        target block in shared memory (``"shared"``), add each synapse to the ring buffer (``"global"``),
        or choose by block size and synapses per (spike, block) (``"auto"``).
    threads
        CUDA threads per delivery block of the ``"blocks"`` engine (for shared sums, 128 with
        ``spikes_per_item=512`` ran the balanced 1e6-neuron network 6% faster than the default on an H200).
    spikes_per_item
        Spikes of one population a delivery block takes per target block (default: ``2 * threads`` when
        summing in shared memory; otherwise enough delivery blocks per target block to keep half the
        resident delivery blocks busy, so the blocks at work write about two target blocks' ring rows,
        which stay in L2, with at least 2 spikes per thread).
    fast_skip
        ``"blocks"`` engine: take a skip length from cheaper arithmetic when it is provably the double
        formula's: a float32 ``log2`` for p above about 7e-4, a table ``log`` accurate to 3e-13 below
        (global sums; shared sums, which serve denser projections, use the double ``log`` there); with
        ``False`` the double ``log`` always runs.
    persistent
        ``"blocks"`` engine: a grid of as many delivery blocks as fit on the GPU at once, each taking the next
        work item from a counter (no tail of unequal blocks, no block launches per item), instead of one
        delivery block per item. ``None``: persistent for the global-atomic kinds, not for shared sums
        (the faster of the two for each on an H200; benchmarks/results/brain_gpu.md).
    batch_steps
        ``"blocks"`` engine: advance the neurons up to this many steps, then deliver those steps' spikes in one
        launch per kind of projection (one grid for all of them, no per-step tail). Never more than the
        smallest delay, in steps, of the projections delivering here, so every input still arrives before the
        step that reads it: the same spikes. ``None``: that smallest delay (at most 256); ``1``: step by step.

    ordered
        ``"blocks"`` engine: order each step's neuron ids (``False``: by step only, ids in the order they
        spiked; for counting or delivery, which need no order: no sort of a large window's spikes).

    Returns the window's spikes as cupy ``(steps, neuron ids)`` in (step, neuron) order.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    _check_options(accumulate, threads)
    if batch_steps is not None and (not isinstance(batch_steps, (int, np.integer)) or batch_steps < 1):
        raise ValueError(f"batch_steps must be None or a positive integer, got {batch_steps!r}")
    pint = np.ascontiguousarray(pint, np.int64)
    pflt = np.ascontiguousarray(pflt, np.float64)
    _check(tables, v, u, g, ring, lo, pint)
    if engine == "threads":
        return _run_threads(tables, v, u, g, ref, ring, s0, n_steps, lo, seed, pint, pflt, block, block_major)
    return _run_blocks(tables, v, u, g, ref, ring, s0, n_steps, lo, seed, pint, pflt, block, accumulate, threads,
                       spikes_per_item, fast_skip, persistent, batch_steps, ordered)


def _check_options(accumulate: str, threads: int) -> None:
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}, got {accumulate!r}")
    if threads not in (64, 128, 256, 512, 1024):
        raise ValueError(f"threads must be a power of two from 64 to 1024, got {threads}")


def deliver_spikes_gpu(tables: tuple[np.ndarray, ...], steps: Any, gids: Any, lo: int, hi: int, ring: Any, seed: int,
                       pint: np.ndarray, pflt: np.ndarray, block: int, *, skip: tuple[int, int] | None = None,
                       engine: str = "auto", accumulate: str = "auto", threads: int = 256,
                       spikes_per_item: int | None = None, fast_skip: bool = True,
                       persistent: bool | None = None) -> None:
    """Add the synapses of spikes ``(steps, gids)`` that land in post neurons ``[lo, hi)`` to ``ring``, in place.

    The delivery of :func:`run_window_gpu` for spikes of any neurons (other chunks' spikes of the last
    exchange window): the same synapses from the same keyed streams, integer weights, so ``ring`` ends as
    ``kernels.procedural.deliver_many`` leaves the CPU's, whatever the order of the spikes.

    Parameters
    ----------
    tables
        The plan's population tables (``Plan.pop_tables``; the population offsets are read).
    steps, gids
        Spike steps and global neuron ids (numpy or cupy integer arrays of one length, any order).
    lo, hi
        The chunk's neurons; ``ring`` is its int32 ``(neuron, slot, receptor)`` ring buffer in any memory layout.
    skip
        ``(skip_lo, skip_hi)``: spikes of these neurons are left out (the chunk's own, delivered by its window).
    engine
        ``"blocks"`` (networks under 2**31 neurons), ``"threads"`` (one CUDA thread per spike, projection and
        target block, any size) or ``"auto"``: blocks where it can.
    accumulate, threads, spikes_per_item, fast_skip, persistent
        As for :func:`run_window_gpu` (the blocks engine).
    """
    import cupy as cp

    _check_options(accumulate, threads)
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine must be 'auto' or one of {ENGINES}, got {engine!r}")
    pint = np.ascontiguousarray(pint, np.int64)
    pflt = np.ascontiguousarray(pflt, np.float64)
    offsets = np.asarray(tables[4], np.int64)
    n_total, n_pops = int(offsets[-1]), len(offsets) - 1
    if len(steps) != len(gids):
        raise ValueError(f"steps and gids must have one length, got {len(steps)} and {len(gids)}")
    if ring.dtype != cp.int32 or ring.ndim != 3 or ring.shape[0] != hi - lo:
        raise ValueError(f"ring must be int32 (neuron, slot, receptor) with {hi - lo} neurons, "
                         f"got {ring.dtype} {ring.shape}")
    if not 0 <= lo < hi <= n_total:
        raise ValueError(f"[lo, hi) must lie in the network's [0, {n_total}), got [{lo}, {hi})")
    if engine == "auto":
        engine = "blocks" if n_total < 2**31 else "threads"
    if engine == "blocks" and n_total >= 2**31:
        raise ValueError(f"the blocks engine delivers networks under 2**31 neurons, got {n_total}: "
                         "use engine='threads'")
    if pint.shape[0] and (pint[:, 0] > 2).any():
        raise NotImplementedError("the GPU twin generates fixed_probability, all_to_all and one_to_one synapses only")
    if pint.shape[0] and pint[:, 5].max() >= ring.shape[2]:
        raise ValueError(f"the network sends input to receptor {pint[:, 5].max()} but the ring holds "
                         f"{ring.shape[2]} receptor(s)")
    if len(gids) == 0 or pint.shape[0] == 0:
        return
    g = cp.asarray(gids).astype(cp.int64, copy=False)
    st = cp.asarray(steps).astype(cp.int64, copy=False)
    if skip is not None:
        keep = (g < skip[0]) | (g >= skip[1])
        g, st = g[keep], st[keep]
    if len(g) == 0:
        return
    if engine == "threads":
        _deliver_threads(g, st, lo, hi, ring, seed, pint, pflt, block)
        return
    first, last = (int(x) for x in cp.stack([st.min(), st.max()]).get())
    nb = last - first + 1
    if nb > 65535:
        raise ValueError(f"the spikes span {nb} steps; deliver_spikes_gpu takes at most 65535 at once")
    # the spike list of the blocks engine: local ids grouped by (step, population), counted in cnt
    group = (st - first) * n_pops + cp.searchsorted(cp.asarray(offsets), g, side="right") - 1
    key = group * n_total + g
    key.sort()
    group = key // n_total
    rec = (key - group * n_total - lo).astype(cp.int32)
    cnt = cp.bincount(group, minlength=nb * n_pops).astype(cp.int32)
    per = cnt.get().reshape(nb, n_pops)
    pre_pop = np.searchsorted(offsets, pint[:, 1], side="right").astype(np.int32) - 1
    present = {int(x) for x in np.flatnonzero(per.sum(axis=0))}
    _, launches, one_to_one = _delivery_launches(pint, pflt, pre_pop, present, lo, hi, block, accumulate, threads,
                                                 spikes_per_item, persistent)
    if not (launches or one_to_one):
        return
    n_slots = int(ring.shape[1])
    st_n, st_s, st_r = (np.int64(x // ring.itemsize) for x in ring.strides)
    spans = cp.asarray(np.cumsum(per.ravel(), dtype=np.int64) - per.ravel())
    tail = (rec, spans, cnt, np.int32(n_pops), np.int64(block), np.int64(lo), np.int64(hi), ring, np.int32(n_slots),
            st_n, st_s, st_r, np.int32(first % n_slots))
    hkey = cp.asarray(np.array([conn_prefix(seed, int(pint[p, 8])) for p in range(pint.shape[0])], np.uint64))
    resident = cp.cuda.Device().attributes["MultiProcessorCount"] * (2048 // threads)
    _launch_deliveries(launches, one_to_one, max(1, int(per.max())), nb, resident, threads, pint, cp.asarray(pint),
                       cp.asarray(pflt), hkey, cp.asarray(pre_pop), seed, tail, fast_skip,
                       cp.zeros(max(1, len(launches)), cp.int32))



def _deliver_threads(gids: Any, steps: Any, lo: int, hi: int, ring: Any, seed: int, pint: np.ndarray,
                     pflt: np.ndarray, block: int) -> None:
    """The threads engine's delivery of spikes ``(steps, gids)`` (cupy int64) into ``ring``."""
    import cupy as cp

    kern = _module().get_function("deliver")
    n_proj = int(pint.shape[0])
    n_blk = max((min(hi - lo, int(pi[4])) + block - 1) // block + 1 for pi in pint)
    n_slots = int(ring.shape[1])
    st_n, st_s, st_r = (np.int64(x // ring.itemsize) for x in ring.strides)
    pint_d, pflt_d = cp.asarray(pint), cp.asarray(pflt)
    per_call = max(1, min(2**30, (2**31 - 1) * 128 // (n_proj * n_blk)))  # spikes per launch: under the grid limit
    for a in range(0, len(gids), per_call):
        g, st = gids[a:a + per_call], steps[a:a + per_call]
        total = len(g) * n_proj * n_blk
        kern(((total + 255) // 256,), (256,), (
            g, st, np.int32(len(g)), np.int32(n_proj), pint_d, pflt_d, np.uint64(seed), np.int64(block), np.int64(lo),
            np.int64(hi), ring, np.int32(n_slots), st_n, st_s, st_r, np.int64(-1), np.int64(-1), np.int64(n_blk),
            np.int32(hi - lo >= _BLOCK_MAJOR_FROM)))

def _segments(offsets: np.ndarray, lo: int, hi: int) -> list[tuple[int, int, int]]:
    out = []
    for pop in range(len(offsets) - 1):
        a, b = max(lo, int(offsets[pop])), min(hi, int(offsets[pop + 1]))
        if a < b:
            out.append((pop, a - lo, b - lo))
    return out


def _pop_args(tables: tuple[np.ndarray, ...], seed: int) -> list[tuple[Any, ...]]:
    """The per-population leading arguments of the neuron-update kernels (device tables)."""
    import cupy as cp

    models, prms, ref_steps, quanta, _, lams, cdfs, pois_wq, pois_r = tables
    prms_d = cp.asarray(prms)
    cdfs_d = cp.asarray(np.ascontiguousarray(cdfs))
    return [(np.int32(models[k]), prms_d[k], np.int32(ref_steps[k]), np.float32(quanta[k, 0]),
             np.float32(quanta[k, 1]), np.float64(lams[k]), cdfs_d[k], np.int32(pois_wq[k]), np.int32(pois_r[k]),
             np.uint64(stream_key(seed, STREAM_POISSON, k, 0))) for k in range(len(models))]


def _units(pint: np.ndarray, projs: list[int], block: int, lo: int, hi: int) -> np.ndarray:
    """``(projection, target block)`` pairs of ``projs`` meeting ``[lo, hi)``, ordered by the block's first neuron."""
    rows = []
    for p in projs:
        post_lo, post_hi = int(pint[p, 3]), int(pint[p, 3] + pint[p, 4])
        b0 = (max(lo, post_lo) - post_lo) // block
        b1 = (min(hi, post_hi) - post_lo + block - 1) // block
        for b in range(b0, b1):
            rows.append((post_lo + b * block, p, b))
    rows.sort()
    return np.array([(p, b) for _, p, b in rows], np.int32).reshape(-1, 2)


def _delivery_launches(pint: np.ndarray, pflt: np.ndarray, pre_pop: np.ndarray, pops: set[int], lo: int, hi: int,
                       block: int, accumulate: str, threads: int, spikes_per_item: int | None,
                       persistent: bool | None) -> tuple[dict[str, list[int]], list[tuple[Any, ...]], list[int]]:
    """The delivery kernels of the projections from populations ``pops`` whose targets meet ``[lo, hi)``.

    Returns the projections by kind of delivery, one launch description per kind (kernel, device units,
    units, shared bytes, spikes per item, persistent) and the one-to-one projections.
    """
    import cupy as cp

    mod = _module()
    groups: dict[str, list[int]] = {"deliver_shared": [], "deliver_global": [], "deliver_general": []}
    one_to_one = []
    for p in range(pint.shape[0]):
        post_lo, post_hi = int(pint[p, 3]), int(pint[p, 3] + pint[p, 4])
        if pre_pop[p] not in pops or post_hi <= lo or post_lo >= hi:
            continue
        if pint[p, 4] >= 2**31:
            raise ValueError(f"projection {p}: the blocks engine needs target populations under 2**31 neurons")
        rule, wk, dk = int(pint[p, 0]), int(pint[p, 6]), int(pint[p, 7])
        if rule == 2:
            one_to_one.append(p)
        elif rule == 0 and wk == 0 and dk == 0:
            width = 4 * min(block, int(pint[p, 4]))
            dense = pflt[p, 0] * min(block, int(pint[p, 4])) >= 16
            shared = accumulate == "shared" or (accumulate == "auto" and dense)
            groups["deliver_shared" if shared and width <= _SHARED_MAX else "deliver_global"].append(p)
        else:
            groups["deliver_general"].append(p)
    launches = []
    for name, projs in groups.items():
        if not projs:
            continue
        units = _units(pint, projs, block, lo, hi)
        shared = 4 * max(min(block, int(pint[p, 4])) for p in projs) if name == "deliver_shared" else 0
        per_item = spikes_per_item or (2 * threads if name == "deliver_shared" else 0)
        persist = persistent if persistent is not None else name != "deliver_shared"
        kern = mod.get_function(name + "_persistent" if persist else name)
        launches.append((kern, cp.asarray(units), len(units), shared, per_item, persist))
    return groups, launches, one_to_one


def _launch_deliveries(launches: list[tuple[Any, ...]], one_to_one: list[int], est: int, nb: int, resident: int,
                       threads: int, pint: np.ndarray, pint_d: Any, pflt_d: Any, hkey: Any, pre_pop_d: Any, seed: int,
                       tail: tuple[Any, ...], fast_skip: bool, work: Any) -> None:
    """Launch the deliveries of ``nb`` steps' spikes (``tail``: the spike list, ring and first step); ``est``:
    the most spikes one population has in one step (sizes the grids)."""
    for gi, (kern, units_d, n_units, shared, per_item, persist) in enumerate(launches):
        if per_item:
            cmax = -(-est // per_item)
        else:  # a target block's items keep _FILL of the resident delivery blocks busy, at least 2 spikes per thread
            cmax = min(max(1, int(_FILL * resident)), -(-est // (2 * threads)))
        cmax = max(1, min(65535, (2**31 - 2**24) // (n_units * nb), cmax))
        n_items = n_units * cmax
        grid = (min(n_items * nb, resident),) if persist else (n_items, nb)
        kern(grid, (threads,), (units_d, np.int32(cmax), pint_d, pflt_d, hkey, pre_pop_d, *tail,
                                np.int32(fast_skip), work[gi:], np.int32(n_items), np.int32(nb)), shared_mem=shared)
    oto_k = _module().get_function("deliver_one_to_one")
    for p in one_to_one:
        n_pre = int(pint[p, 2])
        oto_k((max(1, min(1024, (n_pre + 255) // 256)), nb), (256,),
              (np.int32(p), pint_d, pflt_d, np.uint64(seed), pre_pop_d, *tail, np.int32(nb)))


def _run_blocks(tables, v, u, g, ref, ring, s0, n_steps, lo, seed, pint, pflt, block, accumulate, threads,
                spikes_per_item, fast_skip, persistent, batch_steps, ordered=True):
    import cupy as cp

    offsets = tables[4]
    n = int(v.shape[0])
    hi = lo + n
    if n >= 2**31 - 2 * _STEP_TILE:
        raise ValueError(f"a chunk of the blocks engine holds fewer than 2**31 neurons, got {n}")
    n_slots, n_rec = int(ring.shape[1]), int(ring.shape[2])
    st_n, st_s, st_r = (np.int64(x // ring.itemsize) for x in ring.strides)
    mod = _module()
    step_k = mod.get_function("step_record")
    segs = _segments(offsets, lo, hi)
    n_pops = len(offsets) - 1
    pop_args = _pop_args(tables, seed)
    # projections whose spikes come from this chunk and whose targets meet it, by kind of delivery
    pre_pop = np.searchsorted(offsets, pint[:, 1], side="right").astype(np.int32) - 1
    groups, launches, one_to_one = _delivery_launches(pint, pflt, pre_pop, {pop for pop, _, _ in segs}, lo, hi, block,
                                                      accumulate, threads, spikes_per_item, persistent)
    # deliveries of a batch of steps land no earlier than the step after the batch (each delay >= the batch)
    d_min = min([int(pflt[p, 4]) for name in groups for p in groups[name]] + [int(pflt[p, 4]) for p in one_to_one]
                + [_BATCH_MAX])
    batch = max(1, min(d_min, batch_steps or _BATCH_MAX))
    pint_d, pflt_d = cp.asarray(pint), cp.asarray(pflt)
    hkey = cp.asarray(np.array([conn_prefix(seed, int(pint[p, 8])) for p in range(pint.shape[0])] or [0], np.uint64))
    pre_pop_d = cp.asarray(pre_pop if len(pre_pop) else np.zeros(1, np.int32))
    # the window's spikes (local ids), appended step by step; cnt[k * n_pops + pop] counts them
    cap = min(n * n_steps, max(2 * n, _REC_MIN)) + 1
    rec = cp.empty(cap, cp.int32)
    head = cp.zeros(1, cp.uint64)
    cnt = cp.zeros(max(1, n_steps * n_pops), cp.int32)
    work = cp.zeros(max(1, n_steps * len(launches)), cp.int32)  # persistent grids' item counters
    spans = cp.empty(batch * n_pops, cp.int64)  # where each (step, population) of a batch starts in rec
    spans_k = mod.get_function("batch_spans")
    resident = cp.cuda.Device().attributes["MultiProcessorCount"] * (2048 // threads)
    known, since = 0, 0
    est = np.zeros(n_pops, np.int64)
    k = 0
    while k < n_steps:  # a batch of nb steps: nb neuron updates, then one delivery launch per kind for all nb steps
        nb = min(batch, n_steps - k)
        for kk in range(k, k + nb):
            if known + (since + 1) * n > cap:  # rec might overflow this step: look at what it holds
                known, since = int(head.get()[0]), 0
                est = np.maximum(cnt[(kk - 1) * n_pops:kk * n_pops].get(), 1)
                if known + n > cap:
                    cap = max(2 * cap, known + n + 1)
                    grown = cp.empty(cap, cp.int32)
                    grown[:known] = rec[:known]
                    rec = grown
            s = s0 + kk
            slot = np.int32(s % n_slots)
            for pop, i0, i1 in segs:
                step_k(((i1 - i0 + _STEP_TILE - 1) // _STEP_TILE,), (256,), (
                    *pop_args[pop][:9], pop_args[pop][9], np.int64(lo), np.int32(i0), np.int32(i1), v, u, g, ref,
                    ring, st_n, st_s, st_r, np.int32(n_rec), slot, np.int64(s), rec, head, cnt,
                    np.int32(kk * n_pops + pop)))
            since += 1
        if k == 0:  # the first batch's counts size the delivery grids until the next look
            est = np.maximum(cnt[:nb * n_pops].get().reshape(nb, n_pops).max(axis=0), 1)
        if launches or one_to_one:
            spans_k((1,), (256,), (cnt[k * n_pops:], np.int32(nb * n_pops), head, spans))
            tail = (rec, spans, cnt[k * n_pops:], np.int32(n_pops), np.int64(block), np.int64(lo), np.int64(hi), ring,
                    np.int32(n_slots), st_n, st_s, st_r, np.int32((s0 + k) % n_slots))
            _launch_deliveries(launches, one_to_one, int(est.max()), nb, resident, threads, pint, pint_d, pflt_d,
                               hkey, pre_pop_d, seed, tail, fast_skip, work[k * len(launches):])
        k += nb
    return _ordered(rec, int(head.get()[0]), cnt.get()[:n_steps * n_pops].reshape(n_steps, n_pops).sum(axis=1),
                    s0, n, lo, ordered)


def _ordered(rec: Any, total: int, per_step: np.ndarray, s0: int, n: int, lo: int,
             sort: bool = True) -> tuple[Any, Any]:
    """The window's spikes in (step, neuron) order from ``rec`` (each step's local ids, in any order).

    With ``sort=False`` each step's ids stay in the order ``rec`` holds them.
    """
    import cupy as cp

    if total == 0:
        return cp.zeros(0, cp.int64), cp.zeros(0, cp.int64)
    if sort and total <= _SORT_ONCE:  # one sort of (step, id) keys
        ends = cp.asarray(np.cumsum(per_step, dtype=np.int64))
        key = cp.searchsorted(ends, cp.arange(total, dtype=cp.int64), side="right") * n + rec[:total].astype(cp.int64)
        key.sort()
        return key // n + s0, key % n + lo
    first = 0  # many spikes: sort each step's ids in place (less memory)
    for c in per_step.tolist() if sort else ():
        if c > 1:
            rec[first:first + c].sort()
        first += c
    steps = cp.repeat(cp.arange(s0, s0 + len(per_step), dtype=cp.int64), per_step.tolist())
    return steps, rec[:total].astype(cp.int64) + lo


def _run_threads(tables, v, u, g, ref, ring, s0, n_steps, lo, seed, pint, pflt, block, block_major):
    import cupy as cp

    models, offsets = tables[0], tables[4]
    mod = _module()
    step_k, deliver_k = mod.get_function("step_population"), mod.get_function("deliver")
    n = int(v.shape[0])
    hi = lo + n
    n_slots, n_rec = int(ring.shape[1]), int(ring.shape[2])
    st_n, st_s, st_r = (np.int64(x // ring.itemsize) for x in ring.strides)
    flags = cp.zeros(n, cp.uint8)
    pop_args = _pop_args(tables, seed)
    pint_d, pflt_d = cp.asarray(pint), cp.asarray(pflt)
    n_proj = int(pint.shape[0])
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
                *pop_args[pop], np.uint64(pop), np.int64(lo), np.int32(i0), np.int32(i1),
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
