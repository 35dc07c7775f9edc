"""Parallel dictionary learning over activations larger than RAM, one graph per iteration, committed each time.

Each iteration is one Dask graph: every row chunk of ``X`` (``N x d``) is
sparse-coded with OMP (sparsity ``s``) against the current dictionary and
returns only small sufficient statistics, ``A = C^T C`` (``K x K``), ``B = X^T C``
(``d x K``), its squared error and L1 norm, and its worst-reconstructed rows
(to replace unused or duplicate atoms). A tree reduction (``split_every`` at a time) sums
them; the dictionary update (:func:`~neurochunk.kernels.omp.update_dictionary`)
runs on the sum. The new dictionary is then committed to the output dataset
(``ds.commits``), so a crashed run continues from its last finished iteration
with the same result it would have had.

The objective of a dictionary is ``(0.5 * ||X - C D||^2 + alpha * ||C||_1) / N``
with ``C`` its ``s``-sparse OMP codes, the quantity scikit-learn's dictionary
learning minimises; with the sparsity fixed at ``s`` nonzeros the learner itself
minimises the reconstruction term (:func:`objective_terms` reports both).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np

from neurochunk.kernels.omp import code_stats, sparse_code, update_dictionary
from neurochunk.stores import Dataset

__all__ = ["DictionaryResult", "learn_dictionary", "initial_dictionary", "objective", "objective_terms",
           "chunk_stats", "stats_graph", "iteration_blocks"]

KEEP_WORST = 64


@dataclass
class DictionaryResult:
    """A learned dictionary and how it got there."""

    dictionary: np.ndarray
    objectives: list[float] = field(default_factory=list)  # objective of the dictionary entering each iteration
    errors: list[float] = field(default_factory=list)  # its reconstruction error 0.5 ||X - C D||^2 / N
    iterations: int = 0
    resumed_from: int | None = None
    seconds: float = 0.0
    samples: int = 0
    usage: np.ndarray | None = None  # how often each atom was used in the last iteration

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")


def chunk_stats(x: np.ndarray, dictionary: np.ndarray, s: int, gpu: bool = False) -> dict[str, Any]:
    """Sufficient statistics of one row chunk (float64), its error terms and worst rows."""
    x = np.asarray(x, np.float32).reshape(x.shape[0], -1)
    k = dictionary.shape[0]
    if gpu:
        import cupy

        xg, dg = cupy.asarray(x), cupy.asarray(dictionary)
        idx, val = sparse_code(xg, dg, s)
        a, b = code_stats(xg, idx, val, k)
        from neurochunk.kernels.omp_gpu import residual_norms_gpu

        err = residual_norms_gpu(xg, dg, idx, val).get()
        a, b, l1 = a.get(), b.get(), float(cupy.abs(val).sum())
        idx = idx.get()
    else:
        corr = x @ dictionary.T
        gram = dictionary @ dictionary.T
        from neurochunk.kernels.omp import omp

        idx, val = omp(corr, gram, s)
        a, b = code_stats(x, idx, val, k)
        err = _residual_norms(x, corr, gram, idx, val)
        l1 = float(np.abs(val).sum(dtype=np.float64))
    worst = np.argsort(err)[::-1][:KEEP_WORST]
    usage = np.bincount(idx[idx >= 0].ravel(), minlength=k)
    return {"A": a, "B": b, "sq": float(err.sum()), "l1": l1, "n": x.shape[0], "usage": usage,
            "worst": x[worst].copy(), "worst_err": err[worst]}


def _residual_norms(x: np.ndarray, corr: np.ndarray, gram: np.ndarray, idx: np.ndarray,
                    val: np.ndarray) -> np.ndarray:
    """``||x - c D||^2 = ||x||^2 - 2 c.(D x) + c^T G c``, from what OMP already has (float64)."""
    safe = np.where(idx >= 0, idx, 0)
    v = np.where(idx >= 0, val, 0).astype(np.float64)
    c_i = np.take_along_axis(corr, safe, 1).astype(np.float64)
    g_ii = gram[safe[:, :, None], safe[:, None, :]].astype(np.float64)
    quad = np.einsum("ns,nst,nt->n", v, g_ii, v)
    return np.maximum((x.astype(np.float64) ** 2).sum(axis=1) - 2 * (v * c_i).sum(axis=1) + quad, 0.0)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = {"A": sum(p["A"] for p in parts), "B": sum(p["B"] for p in parts), "sq": sum(p["sq"] for p in parts),
           "l1": sum(p["l1"] for p in parts), "n": sum(p["n"] for p in parts),
           "usage": sum(p["usage"] for p in parts)}
    worst = np.concatenate([p["worst"] for p in parts])
    err = np.concatenate([p["worst_err"] for p in parts])
    keep = np.argsort(err, kind="stable")[::-1][:KEEP_WORST]
    out["worst"], out["worst_err"] = worst[keep], err[keep]
    return out


def _tree(parts: list[Any], split_every: int) -> Any:
    merge = dask.delayed(_merge, pure=True)
    while len(parts) > 1:
        parts = [merge(parts[i:i + split_every]) for i in range(0, len(parts), split_every)]
    return parts[0]


def _rows(x: da.Array) -> da.Array:
    x = x.reshape((-1, x.shape[-1]), merge_chunks=True) if x.ndim > 2 else x
    return x.rechunk({1: -1})


def stats_graph(x: da.Array, dictionary: np.ndarray, s: int, split_every: int = 8, gpu: bool = False,
                blocks: Sequence[int] | None = None) -> Any:
    """One iteration's graph: per-chunk statistics of row chunks ``blocks`` (default all), tree-summed."""
    dd = dask.delayed(dictionary, pure=True)
    task = dask.delayed(chunk_stats, pure=True)
    chunks = _rows(x).to_delayed().ravel()
    chosen = range(len(chunks)) if blocks is None else blocks
    return _tree([task(chunks[i], dd, s, gpu) for i in chosen], split_every)


def iteration_blocks(n_blocks: int, per_iteration: int, seed: int, iteration: int) -> tuple[int, list[int]]:
    """``(epoch, row chunks)`` of an iteration; an epoch visits each chunk once, in an order keyed by (seed, epoch)."""
    per_epoch = -(-n_blocks // per_iteration)
    epoch, group = divmod(iteration, per_epoch)
    order = np.random.Generator(np.random.Philox(key=[seed, (0xB10C << 32) | epoch])).permutation(n_blocks)
    return epoch, sorted(int(i) for i in order[group * per_iteration:(group + 1) * per_iteration])


def initial_dictionary(x: da.Array, n_atoms: int, seed: int) -> np.ndarray:
    """``n_atoms`` distinct rows from up to 8 chunks chosen by ``seed``, unit-normalised."""
    x = _rows(x)
    rng = np.random.Generator(np.random.Philox(key=[seed, 0xD1C7]))
    nblocks = x.numblocks[0]
    chosen = sorted(rng.choice(nblocks, size=min(8, nblocks), replace=False))
    pool = np.concatenate(dask.compute(*[x.blocks[i] for i in chosen]))
    pool = pool[np.linalg.norm(pool, axis=1) > 1e-12]
    if pool.shape[0] == 0:
        raise ValueError("dictionary learning: the sampled data chunks are all zeros")
    take = rng.choice(pool.shape[0], size=n_atoms, replace=pool.shape[0] < n_atoms)
    d = pool[take].astype(np.float32)
    if pool.shape[0] < n_atoms:
        d += 0.01 * rng.standard_normal(d.shape).astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def objective_terms(x: da.Array, dictionary: np.ndarray, s: int, client: Any = None,
                    gpu: bool = False) -> dict[str, float]:
    """Per row: reconstruction error ``0.5 ||x - c D||^2``, ``||c||_1`` and ``||c||_0`` of the OMP codes."""
    g = stats_graph(x, dictionary, s, gpu=gpu)
    tot = client.compute(g, sync=True) if client is not None else g.compute()
    n = tot["n"]
    return {"error": 0.5 * tot["sq"] / n, "l1": tot["l1"] / n, "l0": float(tot["usage"].sum()) / n}


def objective(x: da.Array, dictionary: np.ndarray, s: int, alpha: float = 1.0, client: Any = None,
              gpu: bool = False) -> float:
    """``(0.5 * ||X - C D||^2 + alpha * ||C||_1) / N`` with ``C`` the ``s``-sparse OMP codes."""
    t = objective_terms(x, dictionary, s, client, gpu)
    return t["error"] + alpha * t["l1"]


def _config(n_atoms: int, s: int, seed: int, shape: tuple[int, ...], per_iteration: int | None) -> dict[str, Any]:
    return {"n_atoms": n_atoms, "sparsity": s, "seed": seed, "data_shape": list(shape),
            "chunks_per_iteration": per_iteration}


def learn_dictionary(x: da.Array, out: Dataset, *, n_atoms: int, sparsity: int, epochs: int, alpha: float = 1.0,
                     seed: int = 0, client: Any = None, split_every: int = 8, gpu: bool = False,
                     passes: int | None = None, chunks_per_iteration: int | None = None,
                     max_coherence: float = 0.95, progress: bool = True,
                     on_stats: Callable[[int, dict[str, Any]], None] | None = None) -> DictionaryResult:
    """Learn ``n_atoms`` unit-norm atoms from rows of ``x`` (``(N, d)``; more dims are flattened to rows).

    With ``chunks_per_iteration=None`` every iteration is a full pass (batch
    learning: the update uses this pass's statistics only). With a number, an
    iteration codes that many row chunks (an epoch visits each chunk once, in
    an order keyed by seed and epoch) and the update uses running statistics
    ``A <- beta A + A_t / n_t`` with ``beta = t / (t + 1)``, as in Mairal et
    al.'s online learning: more updates per pass over the data. ``passes``
    over the atoms per update default to 3 (batch) or 1 (online).

    Every iteration commits ``dictionary`` (``(K, d)``), ``usage`` and, when
    online, the running ``A`` and ``B`` to ``out`` (commit ``"dictionary"``,
    meta ``iteration``/``objective``). If ``out`` already holds a commit of
    the same configuration, the run resumes after it with the same result an
    uninterrupted run gives. ``on_stats(iteration, totals)`` runs before each
    commit (tests use it to crash a run).
    """
    if x.ndim < 2:
        raise ValueError(f"dictionary learning needs (N, d) data, got shape {x.shape}")
    rows = _rows(x)
    n_blocks = rows.numblocks[0]
    online = chunks_per_iteration is not None and chunks_per_iteration < n_blocks
    per_it = int(chunks_per_iteration) if online else n_blocks
    total = epochs * -(-n_blocks // per_it)
    passes = passes if passes is not None else (1 if online else 3)
    cfg = _config(n_atoms, sparsity, seed, tuple(int(v) for v in rows.shape), per_it if online else None)
    out.commits.gc()  # drop groups of commits a crash left unfinished
    start, dictionary, objectives, errors, resumed = 0, None, [], [], None
    acc_a = acc_b = None
    last = out.commits.latest()
    if last is not None and last.meta.get("config") == cfg:
        group = out.commits.open(last)
        dictionary = np.asarray(group["dictionary"][:])
        if online:
            acc_a, acc_b = np.asarray(group["A"][:]), np.asarray(group["B"][:])
        start = resumed = int(last.meta["iteration"]) + 1
        objectives = list(last.meta.get("objectives", []))
        errors = list(last.meta.get("errors", []))
    elif last is not None:
        raise ValueError(f"{out.url} holds a dictionary run with config {last.meta.get('config')}, not {cfg}; "
                         "use another output dataset")
    if dictionary is None:
        dictionary = initial_dictionary(rows, n_atoms, seed)
    from tqdm.auto import tqdm

    result = DictionaryResult(dictionary, objectives, errors, start, resumed)
    bar = tqdm(range(start, total), desc="dictionary", disable=not progress, initial=start, total=total)
    for it in bar:
        t0 = time.perf_counter()
        blocks = iteration_blocks(n_blocks, per_it, seed, it)[1] if online else None
        g = stats_graph(rows, dictionary, sparsity, split_every, gpu, blocks)
        tot = client.compute(g, sync=True) if client is not None else g.compute()
        obj = (0.5 * tot["sq"] + alpha * tot["l1"]) / tot["n"]
        if online:
            beta = it / (it + 1.0)
            acc_a = tot["A"] / tot["n"] + (beta * acc_a if acc_a is not None else 0.0)
            acc_b = tot["B"] / tot["n"] + (beta * acc_b if acc_b is not None else 0.0)
            stat_a, stat_b = acc_a, acc_b
        else:
            stat_a, stat_b = tot["A"], tot["B"]
        dictionary, _ = update_dictionary(dictionary, stat_a, stat_b, passes=passes, replacements=tot["worst"],
                                          max_coherence=max_coherence)
        if on_stats is not None:
            on_stats(it, tot)
        objectives.append(obj)
        errors.append(0.5 * tot["sq"] / tot["n"])
        with out.commits.begin("dictionary", {"iteration": it, "objective": obj, "objectives": objectives,
                                              "errors": errors, "config": cfg}) as pending:
            pending.write("dictionary", dictionary, dims=("atom", "unit"))
            pending.write("usage", tot["usage"].astype(np.int64), dims=("atom",))
            if online:
                pending.write("A", acc_a, dims=("atom", "atom_"))
                pending.write("B", acc_b, dims=("unit", "atom"))
        result.seconds += time.perf_counter() - t0
        result.samples += int(tot["n"])
        result.usage = tot["usage"]
        bar.set_postfix(objective=f"{obj:.4g}")
    result.dictionary, result.objectives, result.errors, result.iterations = dictionary, objectives, errors, total
    return result
