"""CUDA twin of :func:`neurochunk.kernels.volume.label_chunk` (cupy RawKernel union-find).

Each voxel unites with its raster-backward neighbours of equal value through
``atomicMin`` on the parent array, so every root is its component's first
voxel in raster order; numbering the roots by a prefix sum then gives exactly
the CPU twin's (and cc3d's) labels. The filters (Gaussian, distance
transform), the pyramid's mean and the lookup-table relabel in
``kernels.volume`` follow the input's array module and use cupyx on cupy input.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .volume import neighbour_offsets

__all__ = ["label_chunk_gpu"]

_CTYPES = {"b": "unsigned char", "u1": "unsigned char", "i1": "signed char", "u2": "unsigned short",
           "i2": "short", "u4": "unsigned int", "i4": "int", "u8": "unsigned long long", "i8": "long long"}

_SOURCE = r"""
typedef VALUE_T value_t;

__device__ long long find_root(const long long* L, long long i) {
    while (L[i] != i) i = L[i];
    return i;
}

__device__ void unite(long long* L, long long a, long long b) {
    while (true) {
        a = find_root(L, a);
        b = find_root(L, b);
        if (a == b) return;
        if (a > b) { long long t = a; a = b; b = t; }
        long long old = (long long) atomicMin((unsigned long long*) &L[b], (unsigned long long) a);
        if (old == b) return;
        b = old;
    }
}

extern "C" __global__ void cc_init(const value_t* v, long long* L, long long n) {
    long long i = (long long) blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) L[i] = v[i] != 0 ? i : -1;
}

extern "C" __global__ void cc_merge(const value_t* v, long long* L, const int* off, int k, int nz, int ny, int nx,
                                    int binary) {
    long long i = (long long) blockDim.x * blockIdx.x + threadIdx.x;
    long long n = (long long) nz * ny * nx;
    if (i >= n || L[i] < 0) return;
    int x = i % nx;
    int y = (i / nx) % ny;
    int z = i / ((long long) nx * ny);
    value_t me = v[i];
    for (int j = 0; j < k; ++j) {
        int zz = z + off[3 * j], yy = y + off[3 * j + 1], xx = x + off[3 * j + 2];
        if (zz < 0 || yy < 0 || xx < 0 || yy >= ny || xx >= nx) continue;
        long long q = ((long long) zz * ny + yy) * nx + xx;
        if (L[q] < 0) continue;
        if (!binary && v[q] != me) continue;
        unite(L, i, q);
    }
}

extern "C" __global__ void cc_flatten(long long* L, long long n) {
    long long i = (long long) blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n && L[i] >= 0) L[i] = find_root(L, i);
}
"""


@lru_cache(maxsize=None)
def _module(dtype_str: str) -> Any:
    import cupy

    return cupy.RawModule(code=_SOURCE.replace("VALUE_T", _CTYPES[dtype_str]))


def _dtype_key(dtype: np.dtype[Any]) -> str:
    return "b" if dtype == np.bool_ else dtype.str[1:]


def label_chunk_gpu(block: Any, connectivity: int = 26, binary: bool = False) -> tuple[Any, int]:
    """Label one chunk on the GPU; same contract and same labels as ``label_chunk``.

    Returns a ``uint32`` cupy array and ``n``.
    """
    import cupy as cp

    block = cp.ascontiguousarray(cp.asarray(block))
    if block.ndim != 3:
        raise ValueError(f"label_chunk_gpu needs a 3-D block, got shape {block.shape}")
    key = _dtype_key(np.dtype(block.dtype))
    if key not in _CTYPES:
        raise ValueError(f"label_chunk_gpu needs integer or boolean voxels, got {block.dtype}")
    mod = _module(key)
    nz, ny, nx = block.shape
    n = block.size
    if n == 0:
        return cp.zeros(block.shape, cp.uint32), 0
    parents = cp.empty(n, dtype=cp.int64)
    offsets = cp.asarray(neighbour_offsets(connectivity).astype(np.int32).reshape(-1))
    threads = 256
    grid = ((n + threads - 1) // threads,)
    mod.get_function("cc_init")(grid, (threads,), (block, parents, cp.int64(n)))
    mod.get_function("cc_merge")(grid, (threads,), (block, parents, offsets, cp.int32(len(offsets) // 3),
                                                    cp.int32(nz), cp.int32(ny), cp.int32(nx), cp.int32(bool(binary))))
    mod.get_function("cc_flatten")(grid, (threads,), (parents, cp.int64(n)))
    roots = parents == cp.arange(n, dtype=cp.int64)
    ids = cp.cumsum(roots, dtype=cp.uint32)
    fg = parents >= 0
    out = cp.where(fg, ids[cp.maximum(parents, 0)], cp.uint32(0)).astype(cp.uint32)
    return out.reshape(block.shape), int(ids[-1])
