"""Batched orthogonal matching pursuit (Batch-OMP with Cholesky updates) and dictionary-learning statistics.

A dictionary is ``(K, d)`` with unit-norm rows (atoms); codes ``C`` are
``(n, K)`` with at most ``s`` nonzeros per row, stored sparse as ``idx`` /
``val`` of shape ``(n, s)`` (unused slots have ``idx = -1``). Following
Rubinstein, Zibulevsky and Elad (2008), each sample only touches the Gram
matrix ``G = D D^T`` and its correlations ``X D^T`` (one BLAS product per
chunk), so a sample costs ``O(K s^2)`` after that. The sufficient statistics
``A = C^T C`` and ``B = X^T C`` are accumulated sparsely. cupy twins live in
:mod:`.omp_gpu`; :func:`sparse_code` and :func:`code_stats` dispatch on the input.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .recurrent import array_module

__all__ = ["omp", "sparse_code", "code_stats", "dense_codes", "update_dictionary", "objective_terms"]


@numba.njit(nogil=True, cache=True)
def _omp_batch(corr: np.ndarray, gram: np.ndarray, s: int, tol: float, idx: np.ndarray, val: np.ndarray) -> None:
    n, k = corr.shape
    L = np.zeros((s, s), np.float64)
    alpha = np.empty(k, np.float64)
    sel = np.zeros(k, np.bool_)
    w = np.empty(s, np.float64)
    y = np.empty(s, np.float64)
    g = np.empty(s, np.float64)
    for i in range(n):
        for a in range(k):
            alpha[a] = corr[i, a]
            sel[a] = False
        nsel = 0
        for j in range(s):
            best, arg = -1.0, -1
            for a in range(k):
                v = abs(alpha[a])
                if v > best and not sel[a]:
                    best, arg = v, a
            if arg < 0 or best <= tol:
                break
            if j > 0:  # grow the Cholesky factor of G[idx, idx] by one row
                for r in range(j):
                    acc = gram[idx[i, r], arg]
                    for c in range(r):
                        acc -= L[r, c] * w[c]
                    w[r] = acc / L[r, r]
                diag = gram[arg, arg]
                for r in range(j):
                    diag -= w[r] * w[r]
                if diag <= 1e-10:
                    break  # the atom is (numerically) in the span of those chosen
                for r in range(j):
                    L[j, r] = w[r]
                L[j, j] = np.sqrt(diag)
            else:
                L[0, 0] = np.sqrt(gram[arg, arg])
            idx[i, j] = arg
            sel[arg] = True
            nsel = j + 1
            for r in range(nsel):  # solve L L^T g = corr[idx]
                acc = corr[i, idx[i, r]]
                for c in range(r):
                    acc -= L[r, c] * y[c]
                y[r] = acc / L[r, r]
            for r in range(nsel - 1, -1, -1):
                acc = y[r]
                for c in range(r + 1, nsel):
                    acc -= L[c, r] * g[c]
                g[r] = acc / L[r, r]
            for a in range(k):
                alpha[a] = corr[i, a]
            for r in range(nsel):  # gram is symmetric: walk its rows, which are contiguous
                row = idx[i, r]
                gr = g[r]
                for a in range(k):
                    alpha[a] -= gram[row, a] * gr
        for r in range(nsel):
            val[i, r] = g[r]
        for r in range(nsel, s):
            idx[i, r] = -1
            val[i, r] = 0.0


def omp(corr: np.ndarray, gram: np.ndarray, s: int, tol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """OMP from correlations ``corr = X D^T`` ``(n, K)`` and ``gram = D D^T``: ``(idx, val)`` of shape ``(n, s)``."""
    n = corr.shape[0]
    s = min(int(s), gram.shape[0])
    idx = np.full((n, s), -1, np.int32)
    val = np.zeros((n, s), np.float32)
    _omp_batch(np.ascontiguousarray(corr, dtype=np.float64), np.ascontiguousarray(gram, dtype=np.float64), s,
               float(tol), idx, val)
    return idx, val


def sparse_code(x: Any, dictionary: Any, s: int) -> tuple[Any, Any]:
    """``s``-sparse OMP codes of rows ``x`` ``(n, d)`` in ``dictionary`` ``(K, d)``; cupy in, cupy out."""
    xp = array_module(x)
    if xp is not np:
        from .omp_gpu import omp_gpu

        return omp_gpu(x, dictionary, s)
    corr = x @ dictionary.T
    return omp(corr, dictionary @ dictionary.T, s)


@numba.njit(nogil=True, cache=True)
def _stats(x: np.ndarray, idx: np.ndarray, val: np.ndarray, a: np.ndarray, bt: np.ndarray) -> None:
    n, s = idx.shape
    d = x.shape[1]
    for i in range(n):
        for r in range(s):
            kr = idx[i, r]
            if kr < 0:
                continue
            vr = val[i, r]
            for c in range(s):
                kc = idx[i, c]
                if kc >= 0:
                    a[kr, kc] += vr * val[i, c]
            for j in range(d):
                bt[kr, j] += x[i, j] * vr


def code_stats(x: Any, idx: Any, val: Any, n_atoms: int) -> tuple[Any, Any]:
    """Sufficient statistics ``A = C^T C`` ``(K, K)`` and ``B = X^T C`` ``(d, K)`` (float64)."""
    xp = array_module(x)
    if xp is not np:
        from .omp_gpu import code_stats_gpu

        return code_stats_gpu(x, idx, val, n_atoms)
    a = np.zeros((n_atoms, n_atoms), np.float64)
    bt = np.zeros((n_atoms, x.shape[1]), np.float64)  # B transposed: rows of atoms are contiguous
    _stats(np.ascontiguousarray(x), idx, val, a, bt)
    return a, bt.T


def dense_codes(idx: Any, val: Any, n_atoms: int) -> Any:
    """The dense ``(n, K)`` code matrix."""
    xp = array_module(val)
    c = xp.zeros((idx.shape[0], n_atoms), val.dtype)
    rows = xp.repeat(xp.arange(idx.shape[0]), idx.shape[1])
    keep = idx.reshape(-1) >= 0
    c[rows[keep], idx.reshape(-1)[keep]] = val.reshape(-1)[keep]
    return c


def objective_terms(x: Any, dictionary: Any, idx: Any, val: Any) -> tuple[float, float]:
    """``(sum of squared residuals, sum of |codes|)`` of rows ``x``."""
    xp = array_module(x)
    c = dense_codes(idx, val, dictionary.shape[0])
    r = x - c @ dictionary
    return float(xp.sum(r.astype(xp.float64) ** 2)), float(xp.sum(xp.abs(val.astype(xp.float64))))


def update_dictionary(dictionary: np.ndarray, a: np.ndarray, b: np.ndarray, *, passes: int = 3,
                      replacements: np.ndarray | None = None,
                      max_coherence: float = 1.0) -> tuple[np.ndarray, int]:
    """Block-coordinate dictionary update on summed statistics (Mairal et al., 2010), unit-norm atoms.

    Atoms no code used (``A[j, j] == 0``), then atoms nearly parallel to an
    earlier one (``|<d_i, d_j>| > max_coherence``: duplicates make OMP split a
    direction into large opposite coefficients), are replaced by the rows of
    ``replacements`` (poorly reconstructed samples), normalised. Returns the
    new dictionary and the number of atoms replaced.
    """
    d = dictionary.astype(np.float64).T.copy()  # (dim, K): columns are atoms
    k = d.shape[1]
    unused = np.flatnonzero(np.diag(a) <= 1e-12)
    for _ in range(passes):
        for j in range(k):
            if a[j, j] <= 1e-12:
                continue
            u = d[:, j] + (b[:, j] - d @ a[:, j]) / a[j, j]
            norm = np.linalg.norm(u)
            if norm > 1e-12:
                d[:, j] = u / norm
    replaced = 0
    if replacements is not None and max_coherence < 1.0:
        g = np.abs(d.T @ d)
        np.fill_diagonal(g, 0.0)
        dup = np.flatnonzero(np.tril(g).max(axis=1) > max_coherence)
        unused = np.concatenate([unused, np.setdiff1d(dup, unused)])
    if replacements is not None and len(unused):
        for j, row in zip(unused, replacements):
            norm = np.linalg.norm(row)
            if norm > 1e-12:
                d[:, j] = row / norm
                replaced += 1
    return d.T.astype(dictionary.dtype), replaced
