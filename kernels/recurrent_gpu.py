"""cupy twins of :mod:`.recurrent`'s loops: the fused leak-and-rectify update and the 3x3 convolution."""

from __future__ import annotations

from typing import Any

import cupy as cp

__all__ = ["leak_relu_gpu", "conv3x3_gpu"]

_leak = cp.ElementwiseKernel(
    "float32 h, float32 pre, float32 alpha", "float32 out",
    "out = h + alpha * ((pre > 0.0f ? pre : 0.0f) - h)", "neurochunk_leak_relu")

_conv = cp.RawKernel(r"""
extern "C" __global__ void neurochunk_conv3x3(const float* inp, const float* w, float* out,
                                              int s, int cin, int cout, int ny, int nx) {
    long long i = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    long long total = (long long)s * cout * ny * nx;
    if (i >= total) return;
    int x = i % nx, y = (i / nx) % ny, co = (i / ((long long)nx * ny)) % cout;
    long long n = i / ((long long)nx * ny * cout);
    float acc = 0.0f;
    for (int ci = 0; ci < cin; ++ci) {
        const float* src = inp + ((n * cin + ci) * ny) * nx;
        const float* wk = w + (co * cin + ci) * 9;
        for (int dy = 0; dy < 3; ++dy) {
            int yy = y + dy - 1;
            if (yy < 0 || yy >= ny) continue;
            for (int dx = 0; dx < 3; ++dx) {
                int xx = x + dx - 1;
                if (xx < 0 || xx >= nx) continue;
                acc += wk[dy * 3 + dx] * src[yy * nx + xx];
            }
        }
    }
    out[i] = acc;
}
""", "neurochunk_conv3x3")


def leak_relu_gpu(h: Any, pre: Any, alpha: float) -> Any:
    """``h + alpha * (relu(pre) - h)`` in one pass."""
    return _leak(h, pre.astype(cp.float32, copy=False), cp.float32(alpha))


def conv3x3_gpu(inp: Any, w: Any) -> Any:
    """Zero-padded 3x3 cross-correlation ``(s, cin, y, x) x (cout, cin, 3, 3) -> (s, cout, y, x)``."""
    inp = cp.ascontiguousarray(inp, cp.float32)
    w = cp.ascontiguousarray(cp.asarray(w), cp.float32)
    s, cin, ny, nx = inp.shape
    cout = w.shape[0]
    out = cp.empty((s, cout, ny, nx), cp.float32)
    total = out.size
    threads = 256
    _conv(((total + threads - 1) // threads,), (threads,),
          (inp, w, out, cp.int32(s), cp.int32(cin), cp.int32(cout), cp.int32(ny), cp.int32(nx)))
    return out
