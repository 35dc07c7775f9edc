"""cupy twin of :mod:`neurochunk.kernels.memory_scaled`: lazily scaled iterations on the GPU, as a CUDA graph.

Same representation and results as the CPU :class:`~neurochunk.kernels.memory_scaled.ScaledPartition`
(bit-equal bases, counts, last steps, histograms, maxima and top-k; sums to
``n * 2**-25``), for the keyed reinforcement stream generated on the device.
One iteration is three kernels: draws + id lookup (a hash index, one 16-byte
probe) + a per-memory list of draws; ordered aggregation + update + bucket move
+ top-k entrants, with the sum and the bound reduced per block; and a one-block
kernel for the histogram and the top-k merge; then three kernels of an exact fallback that return at once
unless the merge could not prove the top-k (see :class:`ScaledPartitionGPU`), so every iteration's top-k
equals the CPU twin's. Each memory is one 32-byte record
(base, last step, count | bucket | candidate flag, list head stamped with the
iteration), so a reinforced memory costs one sector of traffic and no list is
ever cleared. Per-iteration
parameters (scale, step, threshold ranks) are read from device tables through
a device iteration counter, so the iteration is captured once as a CUDA graph
and replayed with no host synchronisation; the host steps in once per window
(thresholds, re-bucketing, reading back the window's statistics).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from . import memory as K
from .memory_scaled import _RENORM, _window

try:
    import cupy as cp
except ImportError:  # pragma: no cover - CPU-only installs
    cp = None

__all__ = ["ScaledPartitionGPU", "benchmark"]

_SRC = r"""
#define GOLDEN 0x9E3779B97F4A7C15ull
typedef unsigned long long u64;
extern "C" {
__device__ __forceinline__ u64 mix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ float vis(double b, double g) { return __double2float_rn(__dmul_rn(b, g)); }
#define SALT 0xD6E8FEB86659FD93ull
#define EMPTYK 0xFFFFFFFFFFFFFFFFull
// id -> position: open addressing over 16-byte (id, position) entries, one sector read per probe
__global__ void build_index(const u64* ids, long long n, u64* tab, int bits) {
    long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (p >= n) return;
    u64 q = ids[p], mask = (1ull << bits) - 1ull, h = mix(q ^ SALT) >> (64 - bits);
    while (true) {
        u64 prev = atomicCAS(&tab[2 * h], EMPTYK, q);
        if (prev == EMPTYK || prev == q) { tab[2 * h + 1] = (u64)p; return; }
        h = (h + 1ull) & mask;
    }
}
__device__ __forceinline__ long long hfind(const u64* tab, int bits, u64 q) {
    const ulonglong2* t2 = (const ulonglong2*)tab;
    u64 mask = (1ull << bits) - 1ull, h = mix(q ^ SALT) >> (64 - bits);
    while (true) {
        ulonglong2 e = t2[h];
        if (e.x == q) return (long long)e.y;
        if (e.x == EMPTYK) return -1;
        h = (h + 1ull) & mask;
    }
}
__device__ __forceinline__ int bucket(double b, const double* bnd, int nb) {  // boundaries <= b
    int lo = 0, hi = nb;
    while (lo < hi) { int mid = (lo + hi) >> 1; if (bnd[mid] <= b) lo = mid + 1; else hi = mid; }
    return lo;
}
// one 32-byte record a memory, so that a reinforced memory costs one sector of memory traffic:
// [0] base (float64 bits), [1] last step, [2] count (bits 0-31) | bucket (32-62) | candidate flag (63),
// [3] link word: stamp of the iteration (high 32 bits) | first draw of this memory in it (low 32 bits)
#define INC_BIT 0x8000000000000000ull
__device__ __forceinline__ double rbase(const u64* rec, long long p) {
    return __longlong_as_double((long long)rec[4 * p]);
}
// ctl[0]: iteration inside the window, ctl[1]: boundaries in this window, ctl[2]: link stamp (never reset)
__global__ void rebucket(u64* rec, long long n, const double* bnd, const int* ctl, unsigned long long* cnt) {
    long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (p >= n) return;
    int q = bucket(rbase(rec, p), bnd, ctl[1]);
    u64 w = rec[4 * p + 2];
    rec[4 * p + 2] = (w & (INC_BIT | 0xFFFFFFFFull)) | ((u64)q << 32);
    atomicAdd(&cnt[q], 1ull);
}
// the same with the bucket counts of each block in shared memory: one global atomic per block and bucket
__global__ void rebucket_shared(u64* rec, long long n, const double* bnd, const int* ctl, unsigned long long* cnt) {
    extern __shared__ unsigned int held[];
    int nbk = ctl[1] + 1;
    for (int i = threadIdx.x; i < nbk; i += blockDim.x) held[i] = 0u;
    __syncthreads();
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < n; p += (long long)gridDim.x * blockDim.x) {
        int q = bucket(rbase(rec, p), bnd, ctl[1]);
        u64 w = rec[4 * p + 2];
        rec[4 * p + 2] = (w & (INC_BIT | 0xFFFFFFFFull)) | ((u64)q << 32);
        atomicAdd(&held[q], 1u);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nbk; i += blockDim.x) if (held[i]) atomicAdd(&cnt[i], (unsigned long long)held[i]);
}
// the keyed reinforcement stream (as kernels.memory.keyed_reinforcement), the id lookup and the per-memory
// list of draws, in one pass over the draws
__global__ void link(u64 seedmix, const long long* steps, const int* ctl, u64 n_pool, u64 id_off, int m,
                     double lo, double span, float* rdeltas, const u64* tab, int bits, long long* pos, int* nxt,
                     u64* rec) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= m) return;
    u64 base = mix(seedmix + (u64)steps[ctl[0]]);
    u64 c1 = mix(base + (u64)r * GOLDEN);
    u64 c2 = mix(base + (u64)(r + m) * GOLDEN);
    u64 id = mix((c1 % n_pool) + id_off + GOLDEN);
    id = id == 0xFFFFFFFFFFFFFFFFull ? 0ull : id;
    double u = (double)(c2 >> 11) * 1.1102230246251565e-16;
    rdeltas[r] = __double2float_rn(__dadd_rn(lo, __dmul_rn(span, u)));
    long long p = hfind(tab, bits, id);
    pos[r] = p;
    if (p >= 0) {  // a stamped list head: an older iteration's link word reads as an empty list
        u64 stamp = (u64)(unsigned int)ctl[2];
        u64 old = atomicExch(&rec[4 * p + 3], (stamp << 32) | (u64)(unsigned int)r);
        nxt[r] = (old >> 32) == stamp ? (int)(old & 0xFFFFFFFFull) : -1;
    }
}
// the sum of the base changes and the bound on the non-candidates: reduced in the block, one atomic each
__device__ __forceinline__ void block_flush(double d, unsigned long long ob, double* total,
                                            unsigned long long* outside_bits) {
    __shared__ double sd[32];
    __shared__ unsigned long long so[32];
    for (int o = 16; o > 0; o >>= 1) {
        d += __shfl_down_sync(0xffffffffu, d, o);
        unsigned long long x = __shfl_down_sync(0xffffffffu, ob, o);
        ob = x > ob ? x : ob;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) { sd[warp] = d; so[warp] = ob; }
    __syncthreads();
    if (warp == 0) {
        d = lane < nw ? sd[lane] : 0.0;
        ob = lane < nw ? so[lane] : 0ull;
        for (int o = 16; o > 0; o >>= 1) {
            d += __shfl_down_sync(0xffffffffu, d, o);
            unsigned long long x = __shfl_down_sync(0xffffffffu, ob, o);
            ob = x > ob ? x : ob;
        }
        if (lane == 0) {
            if (d != 0.0) atomicAdd(total, d);
            if (ob) atomicMax(outside_bits, ob);
        }
    }
}
__global__ void apply(const float* rdeltas, int m, const long long* pos, const int* nxt, const double* gs,
                      const long long* steps, const int* ctl, u64* rec, unsigned long long* cnt, const double* bnd,
                      double* total, const double* floorb, int* ent, int* nent, int cap,
                      unsigned long long* outside_bits) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    double d = 0.0;
    unsigned long long ob = 0ull;  // bases are >= 0, so their bit patterns order like them
    long long p = r < m ? pos[r] : -1;
    int L = 0, mn = 0x7fffffff, hd = -1;
    if (p >= 0) {
        hd = (int)(rec[4 * p + 3] & 0xFFFFFFFFull);  // this iteration's list: r itself is on it
        for (int c = hd; c >= 0; c = nxt[c]) { L++; if (c < mn) mn = c; }
    }
    if (p >= 0 && r == mn) {  // the first draw of a memory sums all of its draws, in arrival order
        double acc = 0.0;
        int cur = r;
        for (int i = 0; i < L; i++) {
            acc = __dadd_rn(acc, (double)rdeltas[cur]);
            int best = 0x7fffffff;
            for (int c = hd; c >= 0; c = nxt[c]) if (c > cur && c < best) best = c;
            cur = best;
        }
        int it = ctl[0];
        double g = gs[it];
        u64 w2 = rec[4 * p + 2];
        double b0 = rbase(rec, p);
        float v = __double2float_rn(fmin(fmax(__dadd_rn((double)vis(b0, g), acc), 0.0), 1.0));
        double b1 = __ddiv_rn((double)v, g);
        int q = bucket(b1, bnd, ctl[1]);
        int q0 = (int)((w2 >> 32) & 0x7FFFFFFFull);
        rec[4 * p] = (u64)__double_as_longlong(b1);
        rec[4 * p + 1] = (u64)steps[it];
        rec[4 * p + 2] = (w2 & INC_BIT) | ((u64)q << 32) | (u64)((unsigned int)(w2 & 0xFFFFFFFFull) + (unsigned int)L);
        if (q != q0) { atomicAdd(&cnt[q0], 0xFFFFFFFFFFFFFFFFull); atomicAdd(&cnt[q], 1ull); }
        d = __dsub_rn(b1, b0);
        if (!(w2 & INC_BIT)) {
            int e = b1 >= floorb[0] ? atomicAdd(nent, 1) : cap;
            if (e < cap) ent[e] = (int)p;
            else ob = (unsigned long long)__double_as_longlong(b1);  // stays a bound on the rest
        }
    }
    block_flush(d, ob, total, outside_bits);
}
__device__ __forceinline__ bool better(const float* kv, const u64* kid, int a, int b) {
    return kv[a] > kv[b] || (kv[a] == kv[b] && kid[a] < kid[b]);
}
// the block's Pn (a power of two) keys in shared memory, best first (better()); the caller synchronised them
__device__ __forceinline__ void bitonic_sort(float* kv, u64* kid, int* kp, int Pn, int tid, int nt) {
    for (int size = 2; size <= Pn; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < Pn; i += nt) {
                int j = i ^ stride;
                if (j > i) {
                    bool sw = (i & size) == 0 ? better(kv, kid, j, i) : better(kv, kid, i, j);
                    if (sw) {
                        float tv = kv[i]; kv[i] = kv[j]; kv[j] = tv;
                        u64 ti = kid[i]; kid[i] = kid[j]; kid[j] = ti;
                        int tp = kp[i]; kp[i] = kp[j]; kp[j] = tp;
                    }
                }
            }
            __syncthreads();
        }
    }
}
// one block: histogram from bucket counts, top-k merge (bitonic sort of candidates + entrants), statistics
__global__ void finish(const unsigned long long* cnt, const long long* rank, int nbins, long long n,
                       const double* gs, int* ctl, const double* total, u64* rec, const u64* ids,
                       int* cand, int S, const int* ent, int* nent, int cap, int P,
                       double* floorb, unsigned long long* outside_bits, int k, long long* hist_out,
                       double* sums_out, float* top_s_out, u64* top_i_out, int* invalid, int* invalid_out,
                       int exact, int* rb, unsigned long long* rbo) {
    extern __shared__ unsigned char smem[];
    float* kv = (float*)smem;
    u64* kid = (u64*)(smem + 4 * (size_t)P);
    int* kp = (int*)(smem + 12 * (size_t)P);
    __shared__ unsigned int chunk[1024];  // counts < 2**32 (checked on the host)
    __shared__ unsigned int ge[1025];
    __shared__ unsigned long long kept_min, evicted_max;
    int tid = threadIdx.x, nt = blockDim.x;
    int it = ctl[0];
    int ncnt = ctl[1] + 1;
    double g = gs[it];
    int per = (ncnt + nt - 1) / nt;
    unsigned int s = 0;
    for (int q = tid * per; q < min(ncnt, (tid + 1) * per); q++) s += (unsigned int)cnt[q];
    chunk[tid] = s;
    if (tid == 0) { kept_min = 0xFFFFFFFFFFFFFFFFull; evicted_max = 0ull; }
    __syncthreads();
    for (int off = 1; off < nt; off <<= 1) {  // chunk[c] <- sum of the chunks from c on (Hillis-Steele)
        unsigned int x = tid + off < nt ? chunk[tid + off] : 0u;
        __syncthreads();
        chunk[tid] += x;
        __syncthreads();
    }
    chunk[tid] -= s;  // ... after c
    __syncthreads();
    if (tid < nbins - 1) {
        long long r1 = rank[(long long)it * (nbins - 1) + tid] + 1;  // b >= bnd[r] <=> bucket >= r + 1
        long long c = r1 / per;
        unsigned int v = c < nt ? chunk[c] : 0u;
        for (long long q = r1; q < min((long long)ncnt, (c + 1) * per); q++) v += (unsigned int)cnt[q];
        ge[tid + 1] = v;
    }
    if (tid == 0) { ge[0] = (unsigned int)n; ge[nbins] = 0u; }
    int ne = min(nent[0], cap);
    int Pn = 2;
    while (Pn < S + ne) Pn <<= 1;  // sort only the used power of two
    for (int i = tid; i < Pn; i += nt) {
        int p = i < S ? cand[i] : (i - S < ne ? ent[i - S] : -1);
        kp[i] = p;
        kv[i] = p >= 0 ? vis(rbase(rec, p), g) : -1.0f;
        kid[i] = p >= 0 ? ids[p] : 0xFFFFFFFFFFFFFFFFull;
    }
    __syncthreads();
    if (tid < nbins) hist_out[(long long)it * nbins + tid] = (long long)(ge[tid] - ge[tid + 1]);
    bitonic_sort(kv, kid, kp, Pn, tid, nt);
    for (int i = tid; i < Pn; i += nt) {
        int p = kp[i];
        if (p < 0) continue;
        unsigned long long bits = rec[4 * p];
        if (i < S) { cand[i] = p; rec[4 * p + 2] |= INC_BIT; atomicMin(&kept_min, bits); }
        else { rec[4 * p + 2] &= ~INC_BIT; atomicMax(&evicted_max, bits); }
    }
    for (int i = tid; i < k; i += nt) {
        top_s_out[(long long)it * k + i] = kv[i];
        top_i_out[(long long)it * k + i] = kid[i];
    }
    __syncthreads();
    if (tid == 0) {
        unsigned long long ob = atomicMax(outside_bits, evicted_max);  // the bound before the evicted
        // the evicted lost to every kept candidate, so in exact mode only the memories left out of the merge
        // (bounded by ob) must rank below the k-th; the flag-only mode also counts the evicted
        double out = __longlong_as_double((long long)(exact || ob > evicted_max ? ob : evicted_max));
        int over = nent[0] > cap;
        int bad = over || !(vis(out, g) < kv[k - 1]);
        if (bad) atomicAdd(invalid, 1);
        invalid_out[it] = bad;
        if (exact && bad) { rb[0] = over ? 1 : 2; rb[5] = nent[0]; rbo[1] = ob; }
        floorb[0] = __longlong_as_double((long long)kept_min);
        sums_out[it] = __dmul_rn(g, total[0]);
        nent[0] = 0;
        ctl[0] = it + 1;
        ctl[2] = ctl[2] + 1;
    }
}

// ---- the exact fallback, on the iterations whose merge cannot prove the top-k (launched every iteration,
// each kernel returns at once unless rb[0] asks for it) ----
// rb[0]: state (0 none, 1 merge the overflowing entrants, 2 pick a full-pass pool, 3 select from it),
// rb[1]: pool size, rb[3]: merges of overflowing entrants, rb[4]: full passes, rb[5]: entrants of the iteration;
// rbo[0]: largest base outside a full-pass pool, rbo[1]: bound on the memories left out of finish's merge
#define RBCAP 2048
__device__ __forceinline__ unsigned int kdigit(unsigned int hi, u64 lo, int d) {  // 8-bit digit d of the 96-bit key
    return d < 4 ? (hi >> (24 - 8 * d)) & 0xFFu : (unsigned int)((lo >> (56 - 8 * (d - 4))) & 0xFFull);
}
__device__ __forceinline__ bool ktop_eq(unsigned int hi, u64 lo, unsigned int phi, u64 plo, int d) {
    if (d == 0) return true;  // the first d digits equal
    if (d <= 4) return (hi >> (32 - 8 * d)) == (phi >> (32 - 8 * d));
    if (hi != phi) return false;
    return (lo >> (64 - 8 * (d - 4))) == (plo >> (64 - 8 * (d - 4)));
}
__device__ __forceinline__ unsigned long long block_max(unsigned long long ob) {  // valid in thread 0
    __shared__ unsigned long long sm[32];
    for (int o = 16; o > 0; o >>= 1) {
        unsigned long long x = __shfl_down_sync(0xffffffffu, ob, o);
        ob = x > ob ? x : ob;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) sm[warp] = ob;
    __syncthreads();
    if (warp == 0) {
        ob = lane < nw ? sm[lane] : 0ull;
        for (int o = 16; o > 0; o >>= 1) {
            unsigned long long x = __shfl_down_sync(0xffffffffu, ob, o);
            ob = x > ob ? x : ob;
        }
    }
    return ob;
}
// a full pass: every memory whose visible strength reaches vq goes to the pool (key parts kept), the
// largest base of the others to rbo[0]
__global__ void rb_gather(const u64* rec, long long n, const u64* ids, const double* gs, const int* ctl,
                          const double* g0, int init, const int* rb, const double* vq, int* pool, u64* pkb,
                          u64* pkid, unsigned long long* rbo, int* npool) {
    if (rb[0] != 3) return;
    double g = init ? g0[0] : gs[ctl[0] - 1];
    float v0 = (float)vq[0];
    unsigned long long ob = 0ull;
    int lane = threadIdx.x & 31;
    for (long long p0 = (long long)blockIdx.x * blockDim.x; p0 < n; p0 += (long long)gridDim.x * blockDim.x) {
        long long p = p0 + threadIdx.x;
        bool in = false;
        u64 bb = 0ull;
        if (p < n) {
            bb = rec[4 * p];
            in = vis(__longlong_as_double((long long)bb), g) >= v0;
            if (!in && bb > ob) ob = bb;
        }
        unsigned int msk = __ballot_sync(0xffffffffu, in);
        if (msk) {
            int e0 = 0;
            if (lane == 0) e0 = atomicAdd(npool, __popc(msk));
            e0 = __shfl_sync(0xffffffffu, e0, 0);
            if (in) {
                int e = e0 + __popc(msk & ((1u << lane) - 1u));
                pool[e] = (int)p;
                pkb[e] = bb;
                pkid[e] = ids[p];
            }
        }
    }
    ob = block_max(ob);
    if (threadIdx.x == 0 && ob) atomicMax(&rbo[0], ob);
}
// one block. stage 1: state 1 merges the candidates with the entrants finish could not take (exact selection
// below), keeps it if the bound proves the k-th, else falls to state 2; state 2 picks the full-pass pool from
// the bucket counts (state 3). stage 3: state 3 selects the best from the full-pass pool.
__global__ void rb_fix(int stage, int init, int* rb, unsigned long long* rbo, double* vq, int* pool, u64* pkb,
                       u64* pkid, const int* ent, int cap, int* cand, int S, int k, u64* rec, const u64* ids,
                       const unsigned long long* cnt, const double* bnd, const double* gs, const int* ctl,
                       const double* g0, unsigned long long* outside_bits, double* floorb, float* top_s_out,
                       u64* top_i_out, int* invalid_out) {
    __shared__ float kv[RBCAP];
    __shared__ u64 kid[RBCAP];
    __shared__ int kp[RBCAP];
    __shared__ unsigned long long csum[1024];
    __shared__ unsigned int hist[256];
    __shared__ unsigned int s_phi, s_above;
    __shared__ u64 s_plo;
    __shared__ int s_state, s_need, s_done, s_d, s_cnt;
    __shared__ unsigned long long s_ob, s_min;
    int tid = threadIdx.x, nt = blockDim.x;
    if (tid == 0) s_state = rb[0];
    __syncthreads();
    int st = s_state;
    if (stage == 1 ? (st != 1 && st != 2) : st != 3) return;
    int it = init ? 0 : ctl[0] - 1;
    double g = init ? g0[0] : gs[it];
    int M = 0;
    if (st == 1) {  // the candidates and the entrants finish left out (those it merged are in or below them)
        M = S + rb[5] - cap;
        for (int i = tid; i < M; i += nt) {
            int p = i < S ? cand[i] : ent[cap + i - S];
            if (i < S) rec[4 * (long long)p + 2] &= ~INC_BIT;
            pool[i] = p;
            pkb[i] = rec[4 * (long long)p];
            pkid[i] = ids[p];
        }
    } else if (st == 3) {
        M = rb[1];
    }
    if (st != 2) {
        // exact selection of the best S (visible strength down, id up; keys unique) by 8-bit radix digits of
        // the 96-bit key (float bits, ~id), until at most RBCAP entries reach the selected prefix
        if (tid == 0) { s_phi = 0u; s_plo = 0ull; s_need = S; s_above = 0u; s_d = 0; s_done = M <= RBCAP; }
        __syncthreads();
        while (!s_done) {
            int d = s_d;
            unsigned int phi = s_phi;
            u64 plo = s_plo;
            for (int i = tid; i < 256; i += nt) hist[i] = 0u;
            __syncthreads();
            for (int i = tid; i < M; i += nt) {
                unsigned int hi = __float_as_uint(vis(__longlong_as_double((long long)pkb[i]), g));
                u64 lo = ~pkid[i];
                if (ktop_eq(hi, lo, phi, plo, d)) atomicAdd(&hist[kdigit(hi, lo, d)], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                unsigned int need = (unsigned int)s_need, acc = 0u;
                int c = 255;
                for (; c > 0; c--) {
                    if (acc + hist[c] >= need) break;
                    acc += hist[c];
                }
                s_need = (int)(need - acc);
                s_above += acc;
                if (d < 4) s_phi = phi | ((unsigned int)c << (24 - 8 * d));
                else s_plo = plo | ((u64)c << (56 - 8 * (d - 4)));
                s_done = s_above + hist[c] <= RBCAP || d == 11;
                s_d = d + 1;
            }
            __syncthreads();
        }
        if (tid == 0) { s_cnt = 0; s_ob = 0ull; s_min = 0xFFFFFFFFFFFFFFFFull; }
        __syncthreads();
        unsigned int lphi = s_phi;  // every key at or above (lphi, lplo) is collected, the rest only bounded
        u64 lplo = s_plo;
        unsigned long long ob = 0ull;
        for (int i = tid; i < M; i += nt) {
            u64 bb = pkb[i];
            unsigned int hi = __float_as_uint(vis(__longlong_as_double((long long)bb), g));
            u64 lo = ~pkid[i];
            if (hi > lphi || (hi == lphi && lo >= lplo)) {
                int e = atomicAdd(&s_cnt, 1);
                if (e < RBCAP) { kv[e] = __uint_as_float(hi); kid[e] = ~lo; kp[e] = i; }
            } else if (bb > ob) ob = bb;
        }
        __syncthreads();
        int C = min(s_cnt, RBCAP);
        int Pn = 2;
        while (Pn < C) Pn <<= 1;
        for (int i = C + tid; i < Pn; i += nt) { kv[i] = -1.0f; kid[i] = 0xFFFFFFFFFFFFFFFFull; kp[i] = -1; }
        __syncthreads();
        bitonic_sort(kv, kid, kp, Pn, tid, nt);
        bool keep = st == 3 || vis(__longlong_as_double((long long)rbo[1]), g) < kv[k - 1];
        if (keep) {
            unsigned long long mn = 0xFFFFFFFFFFFFFFFFull;
            for (int i = tid; i < C; i += nt) {
                int e = kp[i];
                u64 bb = pkb[e];
                if (i < S) {
                    int p = pool[e];
                    cand[i] = p;
                    rec[4 * (long long)p + 2] |= INC_BIT;
                    if (bb < mn) mn = bb;
                } else if (bb > ob) ob = bb;
            }
            if (ob) atomicMax(&s_ob, ob);
            atomicMin(&s_min, mn);
            if (!init) for (int i = tid; i < k; i += nt) {
                top_s_out[(long long)it * k + i] = kv[i];
                top_i_out[(long long)it * k + i] = kid[i];
            }
            __syncthreads();
            if (tid == 0) {
                unsigned long long rest = st == 1 ? outside_bits[0] : rbo[0];
                outside_bits[0] = s_ob > rest ? s_ob : rest;
                floorb[0] = __longlong_as_double((long long)s_min);
                if (s_cnt > RBCAP || C < S) rb[6] += 1;  // cannot happen (keys are unique); counted if it does
                if (!init) { invalid_out[it] = st == 1 ? 2 : 3; rb[st == 1 ? 3 : 4] += 1; }
                rb[0] = 0;
            }
            return;
        }
        st = 2;  // the merge cannot prove the k-th: a full pass
        __syncthreads();
    }
    // state 2: the pool of the full pass, from the highest buckets holding more than S memories
    for (int i = tid; i < S; i += nt) rec[4 * (long long)cand[i] + 2] &= ~INC_BIT;
    int ncnt = ctl[1] + 1;
    int per = (ncnt + nt - 1) / nt;
    unsigned long long sacc = 0ull;
    for (int q = tid * per; q < min(ncnt, (tid + 1) * per); q++) sacc += cnt[q];
    csum[tid] = sacc;
    __syncthreads();
    if (tid == 0) {
        unsigned long long acc = 0ull, want = (unsigned long long)S + 1ull;
        int q = 0;
        for (int c = nt - 1; c >= 0; c--) {
            if (acc + csum[c] >= want) {
                for (int qq = min(ncnt, (c + 1) * per) - 1; qq >= c * per; qq--) {
                    acc += cnt[qq];
                    if (acc >= want) { q = qq; break; }
                }
                break;
            }
            acc += csum[c];
        }
        // b >= bnd[q-1] for every memory in buckets >= q; the pool takes every memory whose visible strength
        // reaches that of bnd[q-1], so the rest rank strictly below it
        vq[0] = q > 0 ? (double)vis(bnd[q - 1], g) : -1.0;
        rb[1] = 0;
        rbo[0] = 0ull;
        rb[0] = 3;
    }
}
}
"""

_MODULE: Any = None
_KERNELS = ("link", "apply", "finish")
_FALLBACK = ("rb_fix1", "rb_gather", "rb_fix3")


def _kernel(name: str) -> Any:
    global _MODULE
    if _MODULE is None:
        _MODULE = cp.RawModule(code=_SRC, options=("--std=c++14",))
    return _MODULE.get_function(name)


def _plan(scale: float, w: int, f: float, edges: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """A window's host part: whether the bases are renormalised first, the scales of its iterations, the
    bucket boundaries and every iteration's threshold ranks."""
    renorm = scale * f**w < _RENORM
    g = scale / _RENORM if renorm else scale
    g0 = g
    gs = np.empty(w)
    for j in range(w):
        g = g * f
        gs[j] = g
    bnd, rank, *_ = _window(np.empty(0), g0, np.full(w, f), edges, 1 << 17, np.empty(0, np.int32))
    return renorm, gs, bnd, rank


class ScaledPartitionGPU:
    """One partition in the lazily scaled representation on the GPU (keyed reinforcement stream).

    ``size`` candidates plus ``cap`` entrants merged per iteration by one block must be a power of two.
    With ``exact`` (the default), an iteration whose entrants overflow ``cap`` or whose merge cannot prove
    the top-k is fixed on the device in the same CUDA graph: first an exact radix selection over the
    candidates and every entrant (all entrants are kept), then, if the bound still cannot prove the k-th, a
    full pass over the memories whose visible strength reaches a bucket threshold; every iteration's top-k
    is then exact. With ``exact=False`` (round 3's path) such iterations are only counted in ``invalid``.
    ``rebucket`` ('global' or 'shared' bucket-count atomics) and ``top_init`` ('device': the fallback's full
    pass; 'cupy': cupy selection and a sort) choose the window set-up's variants.
    """

    def __init__(self, ids: Any, strength: Any, k: int, bins: int, window: int = 128, size: int = 512,
                 cap: int = 1536, exact: bool = True, rebucket: str = "shared", top_init: str = "device") -> None:
        if rebucket not in ("global", "shared") or top_init not in ("device", "cupy"):
            raise ValueError(f"rebucket must be 'global' or 'shared', top_init 'device' or 'cupy' "
                             f"(got {rebucket!r}, {top_init!r})")
        self.exact, self.rebucket_mode, self.top_init_mode = exact, rebucket, top_init
        n = int(ids.shape[0])
        if n <= size or n >= 2**31 or k > size or (size + cap) & (size + cap - 1) or bins > 1024:
            raise ValueError(f"need n > size >= k, size + cap a power of two, bins <= 1024 (n={n}, size={size}, "
                             f"cap={cap}, k={k}, bins={bins})")
        self.n, self.k, self.bins, self.window, self.size, self.cap = n, k, bins, window, size, cap
        self.ids = ids
        self.bits = max(1, int(2 * n - 1).bit_length())  # an id index of 2**bits entries, at most half full
        self.tab = cp.full(2 << self.bits, np.uint64(K.EMPTY_ID), cp.uint64)
        t = time.perf_counter()
        _kernel("build_index")(((n + 255) // 256,), (256,), (ids, np.int64(n), self.tab, np.int32(self.bits)))
        cp.cuda.runtime.deviceSynchronize()
        self.index_s = time.perf_counter() - t  # host wall time of building the id index (once per partition)
        self.rec = cp.zeros((n, 4), cp.uint64)  # the kernels' 32-byte records (see the kernel source)
        self.base = self.rec.view(cp.float64)[:, 0]
        self.base[:] = strength.astype(cp.float64)
        self.last_step = self.rec.view(cp.int64)[:, 1]
        self.count = self.rec.view(cp.uint32)[:, 4]
        self.scale = 1.0
        self.edges = np.linspace(0.0, 1.0, bins + 1, dtype=np.float32)
        nb_max = window * (bins - 1)
        self.bnd = cp.zeros(max(nb_max, 1), cp.float64)
        self.cnt = cp.zeros(nb_max + 1, cp.uint64)
        self.rank = cp.zeros((window, max(bins - 1, 1)), cp.int64)
        self.gs = cp.zeros(window, cp.float64)
        self.steps = cp.zeros(window, cp.int64)
        self.ctl = cp.asarray(np.array([0, 0, 1], np.int32))
        self.total = cp.zeros(1, cp.float64)
        self.cand = cp.zeros(size, cp.int32)
        self.ent = cp.zeros(cap, cp.int32)  # exact mode: resized to hold every entrant (see _setup_stream)
        self.nent = cp.zeros(1, cp.int32)
        self.floorb = cp.zeros(1, cp.float64)
        self.outside = cp.zeros(1, cp.uint64)
        self.invalid = cp.zeros(1, cp.int32)
        self.invalid_out = cp.zeros(window, cp.int32)  # 1 flagged, 2 fixed by the merge, 3 by a full pass
        self.rb = cp.zeros(8, cp.int32)  # fallback state and counters (see the kernel source)
        self.rbo = cp.zeros(2, cp.uint64)
        self.vq = cp.zeros(1, cp.float64)
        self.g0 = cp.zeros(1, cp.float64)
        self.pool = cp.zeros(n + size, cp.int32)  # the fallback's pool: positions, base bits, ids
        self.pkb = cp.zeros(n + size, cp.uint64)
        self.pkid = cp.zeros(n + size, cp.uint64)
        self.setup_parts: dict[str, list[float]] = {"sum": [], "rebucket": [], "top_init": []}  # CUDA-event ms
        self.hist_out = cp.zeros((window, bins), cp.int64)
        self.sums_out = cp.zeros(window, cp.float64)
        self.top_s_out = cp.zeros((window, k), cp.float32)
        self.top_i_out = cp.zeros((window, k), cp.uint64)
        self.sms = int(cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["multiProcessorCount"])
        self.graph: Any = None
        self.graph_error = ""
        self.m = -1
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.iter_ms: list[float] = []  # CUDA-event time of each iteration (graph replay)
        self.setup_s: list[float] = []  # host wall time of each window's set-up (uploads, re-bucketing)
        self.run_s: list[float] = []  # host wall time of each run, everything included
        self.kernel_ms: dict[str, list[float]] | None = None  # set to {} to time each kernel (plain launches)
        self._marks: list[list[Any]] = []

    def strength(self) -> Any:
        """The visible float32 strengths (cupy)."""
        return (self.base * self.scale).astype(cp.float32)

    def _top_init(self, nb: int) -> None:
        """The first candidates on the device, from the bucket counts of a fresh re-bucketing (buckets order
        like bases): the best ``size`` memories in visible order (ties by id) and the largest other base."""
        size = self.size
        cnt = cp.asnumpy(self.cnt[: nb + 1])
        q, held = len(cnt) - 1, int(cnt[-1])
        while q > 0 and held < size + 1:
            q -= 1
            held += int(cnt[q])
        inpool = ((self.rec[:, 2] >> np.uint64(32)) & np.uint64(0x7FFFFFFF)) >= np.uint64(q)
        outside = float(cp.where(inpool, -cp.inf, self.base).max())
        pool = cp.flatnonzero(inpool)
        s = (self.base[pool] * self.scale).astype(cp.float32)
        if pool.size > size:  # keep the memories at or above the size-th strength (ties included)
            keep = s >= cp.sort(s)[pool.size - size]
            if not bool(keep.all()):
                outside = max(outside, float(self.base[pool[~keep]].max()))
            pool, s = pool[keep], s[keep]
        pool_h, s_h = cp.asnumpy(pool), cp.asnumpy(s)
        base_h = cp.asnumpy(self.base[pool])
        order = np.lexsort((cp.asnumpy(self.ids[pool]), -s_h.astype(np.float64)))
        if len(order) > size:
            outside = max(outside, float(base_h[order[size:]].max()))
        cand = pool_h[order[:size]]
        self.rec[:, 2] &= np.uint64(0x7FFFFFFFFFFFFFFF)
        self.rec[cp.asarray(cand), 2] |= np.uint64(1 << 63)
        self.cand[:] = cp.asarray(cand.astype(np.int32))
        self.outside[:] = np.array([outside], np.float64).view(np.uint64)[0]
        self.floorb[:] = base_h[order[:size]].min()

    def _sum_base(self) -> Any:
        """The float64 sum of the bases, over a contiguous copy: cupy reduces the strided view of the records
        without CUB, which made the run's first set-up O(n) slow in round 3 (about 75 ms at 100M)."""
        return cp.ascontiguousarray(self.base).sum()

    def _fix_args(self, stage: int, init: int) -> tuple:
        return (np.int32(stage), np.int32(init), self.rb, self.rbo, self.vq, self.pool, self.pkb, self.pkid, self.ent,
                np.int32(self.cap), self.cand, np.int32(self.size), np.int32(self.k), self.rec, self.ids, self.cnt,
                self.bnd, self.gs, self.ctl, self.g0, self.outside, self.floorb, self.top_s_out, self.top_i_out,
                self.invalid_out)

    def _gather_args(self, init: int) -> tuple:
        return (self.rec, np.int64(self.n), self.ids, self.gs, self.ctl, self.g0, np.int32(init), self.rb, self.vq,
                self.pool, self.pkb, self.pkid, self.rbo, self.rb[1:])

    def _fallback(self, init: int, mark: Any = None) -> None:
        _kernel("rb_fix")((1,), (1024,), self._fix_args(1, init))
        if mark:
            mark()
        _kernel("rb_gather")((2 * self.sms,), (1024,), self._gather_args(init))
        if mark:
            mark()
        _kernel("rb_fix")((1,), (1024,), self._fix_args(3, init))

    def _top_init_device(self) -> None:
        """The first candidates through the fallback's full pass (one pass over the records, then a radix
        selection in one block): the best ``size`` memories in visible order and the largest other base."""
        self.g0.fill(self.scale)
        self.rb[0] = 2
        self._fallback(1)

    def _rebucket(self, nb: int) -> None:
        self.cnt[:] = 0
        args = (self.rec, np.int64(self.n), self.bnd, self.ctl, self.cnt)
        if self.rebucket_mode == "shared" and 4 * (nb + 1) <= 48 * 1024:
            _kernel("rebucket_shared")((2 * self.sms,), (1024,), args, shared_mem=4 * (nb + 1))
        else:
            _kernel("rebucket")(((self.n + 255) // 256,), (256,), args)

    def setup_profile(self, reps: int = 3) -> dict[str, float]:
        """Median CUDA-event ms of each window set-up variant on the current state (after a run): re-bucketing
        with global or shared-memory count atomics, the first top-k on the device or with cupy."""
        nb = int(cp.asnumpy(self.ctl[1:2])[0])
        keep = self.rebucket_mode
        out: dict[str, float] = {}
        with self.stream:
            for name, fn in (("rebucket global", lambda: (setattr(self, "rebucket_mode", "global"),
                                                          self._rebucket(nb))),
                             ("rebucket shared", lambda: (setattr(self, "rebucket_mode", "shared"),
                                                          self._rebucket(nb))),
                             ("top init device", self._top_init_device),
                             ("top init cupy", lambda: self._top_init(nb))):
                ms = []
                for _ in range(reps):
                    a, b = cp.cuda.Event(), cp.cuda.Event()
                    a.record(self.stream)
                    fn()
                    b.record(self.stream)
                    b.synchronize()
                    ms.append(cp.cuda.get_elapsed_time(a, b))
                out[name] = float(np.median(ms))
        self.rebucket_mode = keep
        return out

    def _iteration(self, marks: list[Any] | None = None) -> None:
        m, n = self.m, self.n

        def mark() -> None:
            if marks is not None:
                marks.append(cp.cuda.Event())
                marks[-1].record(self.stream)

        mark()
        blocks = ((max(m, 1) + 255) // 256,)
        _kernel("link")(blocks, (256,), (self.seedmix, self.steps, self.ctl, np.uint64(self.n_pool), self.id_off,
                                         np.int32(m), np.float64(self.lo), np.float64(self.span), self.rdeltas,
                                         self.tab, np.int32(self.bits), self.pos, self.nxt, self.rec))
        mark()
        _kernel("apply")(blocks, (256,), (self.rdeltas, np.int32(m), self.pos, self.nxt, self.gs, self.steps,
                                          self.ctl, self.rec, self.cnt, self.bnd, self.total, self.floorb, self.ent,
                                          self.nent, np.int32(len(self.ent) if self.exact else self.cap),
                                          self.outside))
        mark()
        P = self.size + self.cap
        _kernel("finish")((1,), (1024,), (self.cnt, self.rank, np.int32(self.bins), np.int64(n), self.gs, self.ctl,
                                          self.total, self.rec, self.ids, self.cand, np.int32(self.size), self.ent,
                                          self.nent, np.int32(self.cap), np.int32(P), self.floorb,
                                          self.outside, np.int32(self.k), self.hist_out, self.sums_out,
                                          self.top_s_out, self.top_i_out, self.invalid, self.invalid_out,
                                          np.int32(self.exact), self.rb, self.rbo),
                          shared_mem=16 * P)
        mark()
        if self.exact:
            self._fallback(0, mark)
            mark()

    def _setup_stream(self, seed: int, id_seed: int, n_pool: int, n_draws: int, max_delta: float,
                      min_delta: float) -> None:
        with np.errstate(over="ignore"):
            self.seedmix = np.uint64(K._mix(np.uint64(seed)))
        self.id_off = K._offset(id_seed)
        self.n_pool, self.lo, self.span = n_pool, float(min_delta), float(max_delta - min_delta)
        if n_draws != self.m:
            self.m = n_draws
            self.rdeltas = cp.zeros(max(n_draws, 1), cp.float32)
            self.pos = cp.zeros(max(n_draws, 1), cp.int64)
            self.nxt = cp.zeros(max(n_draws, 1), cp.int32)
            if self.exact:  # room for every entrant: a memory enters at most once an iteration
                self.ent = cp.zeros(max(self.cap, min(n_draws, self.n)), cp.int32)
            self.graph = None

    def run(self, t0: int, n_it: int, rate: float, seed: int, id_seed: int, n_pool: int, n_draws: int,
            max_delta: float, min_delta: float = 0.0, use_graph: bool = True) -> dict[str, Any]:
        """Iterations t0 .. t0+n_it-1 with the reinforcement of ``KeyedSource(seed, id_seed, n_pool, n_draws,
        max_delta, min_delta)``; per-iteration statistics on the host, like the CPU twin."""
        f = float(np.float32(1.0 - min(max(rate, 0.0), 1.0)))
        if f == 0.0:
            raise ValueError("decay_rate 1 is not supported by the GPU twin")
        self._setup_stream(seed, id_seed, n_pool, n_draws, max_delta, min_delta)
        k, bins = self.k, self.bins
        out = {"sums": np.zeros(n_it), "maxima": np.zeros(n_it), "top_s": np.zeros((n_it, k), np.float32),
               "top_i": np.zeros((n_it, k), np.uint64), "hist": np.zeros(bins, np.int64),
               "invalid_it": np.zeros(n_it, np.bool_), "fixed_merge_it": np.zeros(n_it, np.bool_),
               "fixed_full_it": np.zeros(n_it, np.bool_)}
        t_run = time.perf_counter()
        with self.stream:
            ev_sum = [cp.cuda.Event(), cp.cuda.Event()]
            ev_sum[0].record(self.stream)
            self.total[:] = self._sum_base()
            ev_sum[1].record(self.stream)
            i = 0
            plan = _plan(self.scale, min(self.window, n_it), f, self.edges)
            while i < n_it:
                w = min(self.window, n_it - i)
                renorm, gs, bnd, rank = plan
                t_setup = time.perf_counter()
                if renorm:
                    self.base *= _RENORM
                    self.scale /= _RENORM
                    self.total[:] = self._sum_base()
                    self.floorb *= _RENORM
                    o = float(cp.asnumpy(self.outside).view(np.float64)[0]) * _RENORM
                    self.outside[:] = np.array([o], np.float64).view(np.uint64)[0]
                self.bnd[: len(bnd)] = cp.asarray(bnd)
                self.rank[:w] = cp.asarray(rank)
                self.gs[:w] = cp.asarray(gs)
                self.steps[:w] = cp.asarray(np.arange(t0 + i, t0 + i + w, dtype=np.int64))
                self.ctl[:2] = cp.asarray(np.array([0, len(bnd)], np.int32))
                ev = [cp.cuda.Event() for _ in range(3)]
                ev[0].record(self.stream)
                self._rebucket(len(bnd))
                ev[1].record(self.stream)
                if i == 0:
                    if self.top_init_mode == "device":
                        self._top_init_device()
                    else:
                        self._top_init(len(bnd))
                ev[2].record(self.stream)
                if use_graph and self.graph is None and not self.graph_error:
                    for name in (*_KERNELS, "rb_fix", "rb_gather"):
                        _kernel(name)  # load every function before capturing
                    try:
                        self.stream.begin_capture()
                        self._iteration()
                        self.graph = self.stream.end_capture()
                    except Exception as exc:  # noqa: BLE001 - fall back to plain launches, and say so
                        self.graph_error = f"{type(exc).__name__}: {exc}"
                        with contextlib.suppress(Exception):
                            self.stream.end_capture()
                        self.ctl[:2] = cp.asarray(np.array([0, len(bnd)], np.int32))
                self.stream.synchronize()
                self.setup_s.append(time.perf_counter() - t_setup)
                self.setup_parts["rebucket"].append(cp.cuda.get_elapsed_time(ev[0], ev[1]))
                if i == 0:
                    self.setup_parts["top_init"].append(cp.cuda.get_elapsed_time(ev[1], ev[2]))
                    self.setup_parts["sum"].append(cp.cuda.get_elapsed_time(ev_sum[0], ev_sum[1]))
                events = [cp.cuda.Event() for _ in range(w + 1)]
                events[0].record(self.stream)
                for j in range(w):
                    if use_graph and self.graph is not None:
                        self.graph.launch(self.stream)
                    else:
                        marks: list[Any] | None = [] if self.kernel_ms is not None else None
                        self._iteration(marks)
                        if marks is not None:
                            self._marks.append(marks)
                    events[j + 1].record(self.stream)
                if i + w < n_it:  # the next window's thresholds on the host while the GPU runs this one
                    plan = _plan(float(gs[-1]), min(self.window, n_it - i - w), f, self.edges)
                events[w].synchronize()
                if self.kernel_ms is not None:
                    names = (*_KERNELS, *_FALLBACK) if self.exact else _KERNELS
                    for marks in self._marks:
                        for name, a, b in zip(names, marks[:-1], marks[1:]):
                            self.kernel_ms.setdefault(name, []).append(cp.cuda.get_elapsed_time(a, b))
                    self._marks = []
                self.iter_ms += [cp.cuda.get_elapsed_time(events[j], events[j + 1]) for j in range(w)]
                self.scale = float(gs[-1])
                out["sums"][i : i + w] = cp.asnumpy(self.sums_out[:w])
                out["top_s"][i : i + w] = cp.asnumpy(self.top_s_out[:w])
                out["top_i"][i : i + w] = cp.asnumpy(self.top_i_out[:w])
                out["maxima"][i : i + w] = out["top_s"][i : i + w, 0]
                flags = cp.asnumpy(self.invalid_out[:w])
                out["invalid_it"][i : i + w] = flags == 1
                out["fixed_merge_it"][i : i + w] = flags == 2
                out["fixed_full_it"][i : i + w] = flags == 3
                out["hist"] = cp.asnumpy(self.hist_out[w - 1])
                i += w
        self.run_s.append(time.perf_counter() - t_run)
        out["invalid"] = int(out["invalid_it"].sum())  # iterations whose top-k is not guaranteed (exact=False)
        out["fixed_merge"] = int(out["fixed_merge_it"].sum())
        out["fixed_full"] = int(out["fixed_full_it"].sum())
        if int(cp.asnumpy(self.rb[6:7])[0]):
            raise RuntimeError("the exact fallback's selection overflowed (a bug: keys are unique)")
        return out


def _bench_row(n: int, ids: Any, s0: Any, k: int, bins: int, iterations: int, floor_us: float, label: str,
               **variant: Any) -> tuple[str, ScaledPartitionGPU]:
    part = ScaledPartitionGPU(ids, s0, k, bins, **variant)
    part.run(0, 8, 0.01, 1, 0, n, n // 100, 0.2)  # compile, capture, warm up
    part.iter_ms.clear()
    part.setup_s.clear()
    part.run_s.clear()
    part.setup_parts = {"sum": [], "rebucket": [], "top_init": []}
    got = part.run(8, iterations, 0.01, 1, 0, n, n // 100, 0.2)
    it = 1e3 * np.array(part.iter_ms)
    setup_ms = 1e3 * float(np.mean(part.setup_s))
    e2e = 1e6 * part.run_s[-1] / iterations
    fixed = got["fixed_merge_it"] | got["fixed_full_it"]
    plain = it[~fixed & ~got["invalid_it"]]
    fm = it[got["fixed_merge_it"]]
    ff = it[got["fixed_full_it"]]
    med = lambda a: f"{np.median(a):.1f}" if len(a) else "-"
    row = (f"| {n:,} | {label} | {floor_us:.1f} | {np.median(it):.1f} | {it.mean():.1f} | "
           f"{np.percentile(it, 90):.1f} | {np.median(it) / floor_us:.2f}x | {setup_ms:.2f} | {np.median(part.setup_parts['sum']):.2f} | "
           f"{np.median(part.setup_parts['rebucket']):.2f} | {np.median(part.setup_parts['top_init']):.2f} | {e2e:.1f} | {e2e / floor_us:.2f}x | {got['invalid']} | "
           f"{got['fixed_merge']} ({med(fm)}) | {got['fixed_full']} ({med(ff)}) | {med(plain)} | "
           f"{'yes' if part.graph is not None else 'no: ' + part.graph_error} |")
    return row, part


def benchmark(sizes: list[int], iterations: int = 256, k: int = 100, bins: int = 64) -> None:
    """Per-iteration GPU time of the lazily scaled iteration (CUDA graph replays, CUDA events, median), exact
    (round 4) and flag-only (round 3) beside each other, with the round-1 rows (plain cupy, exact
    ``memory_gpu.block``) of the same run, and the window set-up's variants timed apart."""
    from .memory_gpu import _bench_size, _copy_bandwidth

    dev = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"# GPU: {dev}, {time.strftime('%Y-%m-%d %H:%M')}; 1% reinforced per iteration, {bins}-bin quality, "
          f"top-{k}\n")
    print("round 1 (exact path), same run:\n")
    print("| memories | copy GB/s | decay floor us | decay+stats us | plain cupy iter us | neurochunk iter us | "
          "neurochunk / floor | top-k rebuilds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        print(_bench_size(n, 50, k, bins), flush=True)
        cp.get_default_memory_pool().free_all_blocks()
    print(f"\nlazily scaled, one iteration = one CUDA graph replay (CUDA events around each replay), {iterations} "
          "iterations after 8 of warm-up; set-up parts are CUDA-event ms; fixed: iterations whose top-k the "
          "fallback made exact (median us of those iterations):\n")
    print("| memories | path | decay floor us | median iter us | mean iter us | p90 iter us | median / floor | "
          "window set-up ms (mean) | run's first sum ms | rebucket ms | first top-k ms | end-to-end us / iter | end-to-end / floor | "
          "not guaranteed | fixed by merge (us) | fixed by full pass (us) | other iters median us | graph |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    notes = []
    for n in sizes:
        ids = cp.sort(cp.asarray(K.keyed_ids(0, n)))
        s0 = cp.asarray(np.random.default_rng(0).random(n, dtype=np.float32))
        floor_us = 8 * n / (_copy_bandwidth() * 1e9) * 1e6
        for label, variant in (("flag only (round 3's merge), cupy first top-k",
                                {"exact": False, "rebucket": "shared", "top_init": "cupy"}),
                               ("round 4: exact", {})):
            row, part = _bench_row(n, ids, s0, k, bins, iterations, floor_us, label, **variant)
            print(row, flush=True)
            if variant:
                del part
                cp.get_default_memory_pool().free_all_blocks()
        prof = part.setup_profile()
        part.kernel_ms = {}
        part.run(8 + iterations, 16, 0.01, 1, 0, n, n // 100, 0.2, use_graph=False)
        notes.append(f"{n:,}: id index built in {1e3 * part.index_s:.1f} ms; set-up variants (median of 3, ms): "
                     + ", ".join(f"{a} {v:.2f}" for a, v in prof.items())
                     + "; per kernel of the exact path (plain launches, median us): "
                     + ", ".join(f"{name} {1e3 * np.median(v):.1f}" for name, v in part.kernel_ms.items()))
        del part, ids, s0
        cp.get_default_memory_pool().free_all_blocks()
    print("\n" + "\n".join(notes), flush=True)
