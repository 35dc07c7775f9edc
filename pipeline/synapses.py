"""Stored synapses: materialise procedural rules, load a user's edge list, read CSR blocks per chunk."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np

from .network import Plan

__all__ = ["build_connectivity", "connectivity_loaders", "load_edge_list", "connectivity_complete"]


def _materialize(plan: Plan, p: int, c: int) -> tuple[np.ndarray, ...]:
    from neurochunk.kernels.procedural import I_POST_LO, materialize

    lo, hi = plan.chunks[c]
    ptr, cols, wq, dl = materialize(plan.pint, plan.pflt, p, plan.seed, plan.net.conn_block, lo, hi)
    post_lo = int(plan.pint[p, I_POST_LO])
    base = max(lo, post_lo) - post_lo
    weights = (wq.astype(np.float64) * plan.pflt[p, 6]).astype(np.float32)
    return ptr, cols.astype(np.int64) + base, weights, dl


def build_connectivity(plan: Plan, url: str, client: Any = None) -> list[str]:
    """Materialise every projection into ``url/<projection>`` in parallel (blocks written in order).

    The synapses are those the procedural mode generates on the same seed.
    Returns the projection dataset URLs.
    """
    from neurochunk.stores.connectivity import append_block, create_projection

    urls = []
    n_chunks = len(plan.chunks)
    for p, proj in enumerate(plan.net.projections):
        target = f"{str(url).rstrip('/')}/{proj.name}"
        if proj.rule == "edge_list":
            if not connectivity_complete(target, n_chunks):
                raise ValueError(f"projection {proj.name!r}: edge_list synapses must be loaded into {target} first "
                                 f"(pipeline.simulation.load_edge_list)")
            urls.append(target)
            continue
        ds = create_projection(target, n_pre=int(plan.pint[p, 2]), n_post=int(plan.pint[p, 4]), n_blocks=n_chunks,
                               attrs={"projection": proj.name, "seed": plan.seed, "rule": proj.rule,
                                      "chunks": [list(c) for c in plan.chunks], "quantum": float(plan.pflt[p, 6])})
        width = max(1, len(client.scheduler_info()["workers"]) * 2) if client is not None else 2
        for first in range(0, n_chunks, width):
            parts = [dask.delayed(_materialize)(plan, p, c) for c in range(first, min(n_chunks, first + width))]
            blocks = client.compute(parts, sync=True) if client is not None else dask.compute(*parts)
            for k, blk in enumerate(blocks):
                append_block(ds, first + k, *blk)
        urls.append(target)
    return urls


def load_edge_list(plan: Plan, projection: str, url: str, pre: Any, post: Any, weight: Any, delay_ms: Any = None,
                   piece: int = 1 << 22) -> str:
    """Load a user's edges (pre, post ids within their populations; weights; delays in ms) into ``url/<projection>``.

    The arrays may be numpy, Zarr or dask arrays larger than memory: they are read ``piece`` edges at a
    time, once per post chunk, so memory holds one post chunk's synapses. Weights are rounded to the
    receptor's quantum; delays must lie in the projection's declared range.
    """
    from neurochunk.stores.connectivity import append_block, create_projection

    names = [p.name for p in plan.net.projections]
    if projection not in names:
        raise ValueError(f"no projection {projection!r}; projections: {names}")
    p = names.index(projection)
    if plan.net.projections[p].rule != "edge_list":
        raise ValueError(f"projection {projection!r} has rule {plan.net.projections[p].rule!r}, not 'edge_list'")
    n_edges = int(pre.shape[0])
    if not (post.shape[0] == weight.shape[0] == n_edges and (delay_ms is None or delay_ms.shape[0] == n_edges)):
        raise ValueError(f"projection {projection!r}: pre, post, weight and delay_ms must have one entry per edge")
    n_pre, post_lo, n_post = (int(plan.pint[p, k]) for k in (2, 3, 4))
    q, d_lo, d_hi = float(plan.pflt[p, 6]), int(plan.pflt[p, 4]), int(plan.pflt[p, 5])
    target = f"{str(url).rstrip('/')}/{projection}"
    ds = create_projection(target, n_pre=n_pre, n_post=n_post, n_blocks=len(plan.chunks),
                           attrs={"projection": projection, "rule": "edge_list", "quantum": q,
                                  "chunks": [list(c) for c in plan.chunks]})
    for c, (lo, hi) in enumerate(plan.chunks):
        a, b = max(lo, post_lo) - post_lo, min(hi, post_lo + n_post) - post_lo
        kept: list[tuple[np.ndarray, ...]] = []
        for s in range(0, n_edges if a < b else 0, piece):
            sl = slice(s, min(n_edges, s + piece))
            i, j = np.asarray(pre[sl], np.int64), np.asarray(post[sl], np.int64)
            if (i < 0).any() or (i >= n_pre).any() or (j < 0).any() or (j >= n_post).any():
                raise ValueError(f"projection {projection!r}: edges {sl.start}..{sl.stop} hold ids outside "
                                 f"[0, {n_pre}) x [0, {n_post})")
            sel = (j >= a) & (j < b)
            w = np.asarray(weight[sl], np.float64)[sel]
            d = (np.full(int(sel.sum()), d_lo, np.int64) if delay_ms is None
                 else np.rint(np.asarray(delay_ms[sl], np.float64)[sel] / plan.dt).astype(np.int64) + 1)
            if len(d) and (d.min() < d_lo or d.max() > d_hi):
                raise ValueError(f"projection {projection!r}: edge delays outside the declared range "
                                 f"{plan.net.projections[p].delay!r} ms")
            kept.append((i[sel], j[sel], (np.rint(w / q) * q).astype(np.float32), d.astype(np.int32)))
        i, j, w, d = (np.concatenate([k[x] for k in kept]) if kept else np.zeros(0, t)
                      for x, t in enumerate((np.int64, np.int64, np.float32, np.int32)))
        order = np.argsort(i, kind="stable")
        indptr = np.zeros(n_pre + 1, np.int64)
        np.add.at(indptr, i + 1, 1)
        append_block(ds, c, np.cumsum(indptr), j[order], w[order], d[order])
    return target


def _load_chunk(plan: Plan, urls: list[str], c: int) -> tuple[np.ndarray, ...]:
    from neurochunk.stores import Dataset
    from neurochunk.stores.connectivity import read_block

    lo, _ = plan.chunks[c]
    ptrs, offs, cols, wqs, dls = [], [], [], [], []
    n_ptr = n_syn = 0
    for p, u in enumerate(urls):
        ptr, idx, w, d = read_block(Dataset.open(u, kind="connectivity"), c)
        offs.append(n_ptr)
        ptrs.append(ptr + n_syn)
        n_ptr += len(ptr)
        n_syn += len(idx)
        cols.append((idx.astype(np.int64) + int(plan.pint[p, 3]) - lo).astype(np.int32))
        wqs.append(np.rint(w.astype(np.float64) / plan.pflt[p, 6]).astype(np.int32))
        dls.append(d.astype(np.int32))
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return (cat(ptrs, np.int64) if ptrs else np.zeros(1, np.int64), np.array(offs, np.int64), cat(cols, np.int32),
            cat(wqs, np.int32), cat(dls, np.int32))


def connectivity_loaders(plan: Plan, urls: list[str]) -> list[Any]:
    """One delayed reader per chunk of the stored synapses it receives (streamed from the store each batch)."""
    return [dask.delayed(_load_chunk, pure=True)(plan, list(urls), c) for c in range(len(plan.chunks))]


def connectivity_complete(url: str, n_blocks: int) -> bool:
    from neurochunk.stores import Dataset

    try:
        return int(Dataset.open(url, kind="connectivity").attrs["blocks_written"]) == n_blocks
    except (FileNotFoundError, KeyError):
        return False
