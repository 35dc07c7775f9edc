"""cupy twins of :mod:`.omp`: batched OMP vectorised across samples, statistics by matrix products.

All samples of a batch pick their next atom at once (an ``argmax`` over the
residual correlations), solve their small ``(j, j)`` Gram systems in one
batched solve and update correlations with one batched product, in float64
for the small systems so the picks match the CPU twin's.
"""

from __future__ import annotations

from typing import Any

import cupy as cp

__all__ = ["omp_gpu", "code_stats_gpu", "residual_norms_gpu"]


def _omp_batch(corr: Any, gram: Any, s: int) -> tuple[Any, Any]:
    n, k = corr.shape
    rows = cp.arange(n)
    alpha = corr.copy()
    idx = cp.empty((n, s), cp.int32)
    sel = cp.zeros((n, k), bool)
    g = None
    for j in range(s):
        score = cp.abs(alpha)
        score[sel] = -1.0
        pick = cp.argmax(score, axis=1).astype(cp.int32)
        idx[:, j] = pick
        sel[rows, pick] = True
        chosen = idx[:, : j + 1]
        g_ii = gram[chosen[:, :, None], chosen[:, None, :]]  # (n, j+1, j+1)
        c_i = cp.take_along_axis(corr, chosen, axis=1)
        g = cp.linalg.solve(g_ii, c_i[:, :, None])  # (n, j+1, 1)
        alpha = corr - cp.matmul(g.transpose(0, 2, 1), gram[chosen])[:, 0, :]
    return idx, g[:, :, 0].astype(cp.float32)


def omp_gpu(x: Any, dictionary: Any, s: int, batch: int = 16384) -> tuple[Any, Any]:
    """``s``-sparse OMP codes ``(idx, val)`` of rows ``x`` (cupy) in ``dictionary`` ``(K, d)``."""
    x = cp.asarray(x, cp.float32)
    dictionary = cp.asarray(dictionary, cp.float32)
    s = min(int(s), dictionary.shape[0])
    gram = (dictionary.astype(cp.float64) @ dictionary.T.astype(cp.float64))
    idx_parts, val_parts = [], []
    for lo in range(0, x.shape[0], batch):
        corr = (x[lo:lo + batch] @ dictionary.T).astype(cp.float64)
        i, v = _omp_batch(corr, gram, s)
        idx_parts.append(i)
        val_parts.append(v)
    if not idx_parts:
        return cp.empty((0, s), cp.int32), cp.empty((0, s), cp.float32)
    return cp.concatenate(idx_parts), cp.concatenate(val_parts)


def _dense(idx: Any, val: Any, k: int) -> Any:
    c = cp.zeros((idx.shape[0], k), cp.float64)
    keep = idx >= 0
    rows = cp.broadcast_to(cp.arange(idx.shape[0])[:, None], idx.shape)
    c[rows[keep], idx[keep]] = val[keep]
    return c


def code_stats_gpu(x: Any, idx: Any, val: Any, n_atoms: int, batch: int = 65536) -> tuple[Any, Any]:
    """``A = C^T C`` and ``B = X^T C`` (float64 cupy) from sparse codes."""
    a = cp.zeros((n_atoms, n_atoms), cp.float64)
    b = cp.zeros((x.shape[1], n_atoms), cp.float64)
    for lo in range(0, x.shape[0], batch):
        c = _dense(idx[lo:lo + batch], val[lo:lo + batch], n_atoms)
        a += c.T @ c
        b += x[lo:lo + batch].astype(cp.float64).T @ c
    return a, b


def residual_norms_gpu(x: Any, dictionary: Any, idx: Any, val: Any) -> Any:
    """Squared residual ``||x - c D||^2`` of each row (float64 cupy)."""
    safe = cp.where(idx >= 0, idx, 0)
    recon = cp.matmul(val[:, None, :], dictionary[safe])[:, 0, :]
    return ((x - recon).astype(cp.float64) ** 2).sum(axis=1)
