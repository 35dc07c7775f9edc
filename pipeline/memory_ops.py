"""Per-partition memory-bank operations (pure: they copy what they change), the fused block of
iterations, and the tree reductions that combine partitions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from dask import delayed
from neurochunk.kernels import memory as K
from neurochunk.kernels.memory_scaled import ScaledPartition

from .memory_types import KeyedSource, Partition, Source


# -- per-partition operations (pure: they copy what they change) ---------------------------------
def _decay(part: Partition, rate: float) -> Partition:
    out = part.copy()
    K.decay_stats(out.strength, rate, 2)
    return out


def _reinforce(part: Partition, ids: np.ndarray, deltas: np.ndarray, step: int) -> tuple[Partition, int]:
    out = part.copy()
    if len(ids) == 0:
        return out, 0
    uids, sums, occ = K.aggregate_deltas(ids, deltas)
    pos = K.lookup_sorted(out.id, uids)
    hit = pos >= 0
    K.apply_deltas(out.strength, out.count, out.last_step, pos[hit], sums[hit], occ[hit], step)
    return out, int(occ[hit].sum())


def _quality(part: Partition, bins: int) -> dict[str, Any]:
    total, mx, hist = K.quality_stats(part.strength, bins)
    return {"n": len(part), "sum": total, "max": float(mx) if len(part) else 0.0, "hist": hist}


def _rank(part: Partition, k: int) -> tuple[np.ndarray, np.ndarray]:
    pos = K.top_k(part.strength, part.id, k)
    return part.strength[pos].astype(np.float64), part.id[pos]


def _combine_quality(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"n": a["n"] + b["n"], "sum": a["sum"] + b["sum"], "max": max(a["max"], b["max"]),
            "hist": a["hist"] + b["hist"]}


def _combine_rank(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    return K.merge_top_k(a[0], a[1], b[0], b[1], k)


def _own(ids: np.ndarray, deltas: np.ndarray, p: int, n_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    mine = K.partition_of(ids, n_partitions) == p
    return ids[mine], deltas[mine]


def _owned(source: Source, t: int, p: int, n_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """Partition p's share of ``source(t)``, through the source's own ``partition`` where it has one."""
    if type(source) is KeyedSource:  # a subclass may draw differently
        return source.partition(t, p, n_partitions)
    return _own(*source(t), p, n_partitions)


def _block(part: Partition, t0: int, n: int, rate: float, source: Source, k: int, bins: int,
           n_partitions: int, scaled: bool = False) -> tuple[Partition, dict[str, Any]]:
    """``n`` fused iterations of one partition: decay, reinforcement, quality and maintained top-k.

    ``scaled``: the lazily scaled representation of :mod:`neurochunk.kernels.memory_scaled`
    (decay in O(1)), materialised to float32 strengths at the end of the block.
    """
    out = part.copy()
    if scaled and len(out):
        lazy = ScaledPartition(out.id, out.strength, out.count, out.last_step, k, bins)
        mine = (source.stream(out.index, n_partitions) if type(source) is KeyedSource
                else lambda t: _own(*source(t), out.index, n_partitions))
        stats = lazy.run(t0, n, rate, mine)
        out.strength[:] = lazy.strength()
        return out, {**stats, "reads": int(part.bytes_read > 0), "bytes_read": part.bytes_read}
    ranker = K.MaintainedTopK(k)
    factor = np.float32(1.0 - rate)
    sums = np.zeros(n)
    maxima = np.zeros(n)
    top_s = np.full((n, k), -np.inf)
    top_i = np.full((n, k), K.EMPTY_ID, np.uint64)
    hist = np.zeros(bins, np.int64)
    starts, meta = K.build_index(out.id)  # once per block: every iteration's lookups go through it
    for i in range(n):
        t = t0 + i
        total, mx, hist = K.decay_stats(out.strength, rate, bins)
        ids, deltas = _owned(source, t, out.index, n_partitions)
        changed = np.empty(0, np.int64)
        if len(ids) and len(out):
            uids, dsum, occ = K.aggregate_deltas(ids, deltas)
            pos = K.lookup_indexed(out.id, starts, meta, uids)
            hit = pos >= 0
            changed = pos[hit]
            old = K.apply_deltas(out.strength, out.count, out.last_step, changed, dsum[hit], occ[hit], t)
            new = out.strength[changed]
            total += K.histogram_fixup(hist, old, new)
            if len(new) and new.max() > mx:
                mx = new.max()
            if np.any((old == mx) & (new < old)):
                mx = out.strength.max()
        sums[i], maxima[i] = total, (mx if len(out) else 0.0)
        if len(out):
            pos = ranker.update(out.strength, out.id, factor, changed)
            top_s[i, : len(pos)] = out.strength[pos]
            top_i[i, : len(pos)] = out.id[pos]
    return out, {"n": len(out), "sums": sums, "maxima": maxima, "hist": hist, "top_s": top_s, "top_i": top_i,
                 "rebuilds": ranker.rebuilds, "reads": int(part.bytes_read > 0), "bytes_read": part.bytes_read}


def _combine_block(a: dict[str, Any], b: dict[str, Any], k: int) -> dict[str, Any]:
    top_s = np.empty_like(a["top_s"])
    top_i = np.empty_like(a["top_i"])
    for i in range(len(top_s)):
        top_s[i], top_i[i] = K.merge_top_k(a["top_s"][i], a["top_i"][i], b["top_s"][i], b["top_i"][i], k)
    return {"n": a["n"] + b["n"], "sums": a["sums"] + b["sums"], "maxima": np.maximum(a["maxima"], b["maxima"]),
            "hist": a["hist"] + b["hist"], "top_s": top_s, "top_i": top_i,
            **{key: a.get(key, 0) + b.get(key, 0) for key in ("rebuilds", "reads", "bytes_read")}}


def _tree(items: list[Any], combine: Callable[..., Any], *args: Any) -> Any:
    """Pairwise tree reduction of delayed values: depth log2(P), P - 1 combine tasks."""
    while len(items) > 1:
        items = [delayed(combine, pure=True)(items[i], items[i + 1], *args) if i + 1 < len(items) else items[i]
                 for i in range(0, len(items), 2)]
    return items[0]


def _graph_size(objs: Sequence[Any]) -> int:
    """Tasks in the union of the graphs of ``objs`` (persisted inputs count as one key each)."""
    keys: set[Any] = set()
    for o in objs:
        keys.update(dict(o.__dask_graph__()).keys())
    return len(keys)

