"""Counter-based random numbers: SplitMix64 streams keyed by small integer tuples.

A stream is a 64-bit key hashed from ``(seed, a, b, c)``; draw ``k`` of it is
``mix64(key + (k + 1) * GOLDEN)``. Any draw of any stream is computed directly
from its key and counter, so CPU and GPU, procedural and stored connectivity,
and any chunking of the neurons all see the same numbers. The CUDA source in
:data:`CUDA_SOURCE` is the same arithmetic for the cupy twins.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["GOLDEN", "stream_key", "uniform", "normal", "poisson", "poisson_table", "poisson_cdf", "uniform_array",
           "CUDA_SOURCE",
           "STREAM_CONN", "STREAM_WEIGHT", "STREAM_POISSON", "STREAM_INIT", "STREAM_INDEGREE"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0

# stream families (the first key word after the seed)
STREAM_CONN, STREAM_WEIGHT, STREAM_POISSON, STREAM_INIT, STREAM_INDEGREE = 1, 2, 3, 4, 5

_jit = numba.njit(nogil=True, cache=True, inline="always")


@_jit
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser (a bijection of 64-bit words)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@_jit
def stream_key(seed: int, a: int, b: int, c: int) -> np.uint64:
    """The key of the stream named by ``(seed, a, b, c)`` (non-negative integers)."""
    h = mix64(np.uint64(seed) + GOLDEN)
    h = mix64(h ^ np.uint64(a))
    h = mix64(h ^ np.uint64(b))
    return mix64(h ^ np.uint64(c))


@_jit
def uniform(key: np.uint64, k: int) -> float:
    """Draw ``k`` of stream ``key``, uniform on (0, 1] in float64."""
    x = mix64(key + (np.uint64(k) + np.uint64(1)) * GOLDEN)
    return float(np.int64(x >> _S11) + 1) * _TWO_M53


@_jit
def normal(key: np.uint64, k: int) -> float:
    """A standard normal from draws ``k`` and ``k + 1`` (Box-Muller)."""
    u1 = uniform(key, k)
    u2 = uniform(key, k + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@_jit
def poisson(key: np.uint64, k: int, lam: float, exp_neg_lam: float) -> int:
    """A Poisson(``lam``) count from one uniform by inversion (``lam`` up to a few tens)."""
    u = uniform(key, k)
    p = exp_neg_lam
    f = p
    n = 0
    while u > f and n < 1000:
        n += 1
        p = p * lam / n
        f = f + p
    return n


@_jit
def poisson_table(key: np.uint64, k: int, cdf: np.ndarray) -> int:
    """A count from one uniform by search in a cumulative table (``cdf[-1] == 1``); no division."""
    u = uniform(key, k)
    n = 0
    while u > cdf[n]:
        n += 1
    return n


def poisson_cdf(lam: float, size: int = 128) -> np.ndarray:
    """The Poisson(``lam``) cumulative table :func:`poisson_table` searches (last entry forced to 1)."""
    cdf = np.empty(size, np.float64)
    p = f = float(np.exp(-lam))
    cdf[0] = f
    for n in range(1, size):
        p = p * lam / n
        f = f + p
        cdf[n] = f
    cdf[-1] = 1.0
    return cdf


@numba.njit(nogil=True, cache=True)
def uniform_array(seed: int, a: int, b: int, first: int, n: int, k: int) -> np.ndarray:
    """Draw ``k`` of streams ``(seed, a, b, first + i)`` for ``i < n``."""
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = uniform(stream_key(seed, a, b, first + i), k)
    return out


@numba.njit(nogil=True, cache=True)
def normal_array(seed: int, a: int, b: int, first: int, n: int, k: int) -> np.ndarray:
    """Standard normals from draws ``k, k + 1`` of streams ``(seed, a, b, first + i)``."""
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = normal(stream_key(seed, a, b, first + i), k)
    return out


CUDA_SOURCE = r"""
typedef unsigned long long u64;
#define GOLDEN 0x9E3779B97F4A7C15ULL
__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
__device__ __forceinline__ u64 stream_key(u64 seed, u64 a, u64 b, u64 c) {
    u64 h = mix64(seed + GOLDEN);
    h = mix64(h ^ a);
    h = mix64(h ^ b);
    return mix64(h ^ c);
}
__device__ __forceinline__ double uniform(u64 key, u64 k) {
    u64 x = mix64(key + (k + 1ULL) * GOLDEN);
    return (double)((long long)(x >> 11) + 1LL) * (1.0 / 9007199254740992.0);
}
__device__ __forceinline__ double normal(u64 key, u64 k) {
    double u1 = uniform(key, k), u2 = uniform(key, k + 1);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.141592653589793 * u2);
}
__device__ __forceinline__ int poisson_table(u64 key, u64 k, const double* cdf) {
    double u = uniform(key, k);
    int n = 0;
    while (u > cdf[n]) n += 1;
    return n;
}
__device__ __forceinline__ int poisson(u64 key, u64 k, double lam, double exp_neg_lam) {
    double u = uniform(key, k), p = exp_neg_lam, f = p;
    int n = 0;
    while (u > f && n < 1000) { n += 1; p = p * lam / n; f = f + p; }
    return n;
}
"""
