"""Worker tasks that rewrite a memory-bank partition: merging ingest spills (the last arrival of an id
wins) and deleting ids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from neurochunk.kernels import memory as K
from neurochunk.stores.replicas import ReplicaSet

from .memory_store import _load, _load_payload, _write
from .memory_types import Partition


def _merge_ingest(part: Partition, payload: np.ndarray | None, fragments: list[str], step: int,
                  dim: int) -> tuple[Partition, np.ndarray | None]:
    if not fragments:
        return part, payload
    frags = [np.load(f) for f in fragments]
    ids = np.concatenate([part.id, *(f["id"] for f in frags)])
    order = np.argsort(ids, kind="stable")  # stable: the latest arrival ends each run of equal ids
    sel = order[K.keep_last_of_runs(ids[order])]
    n_new = len(ids) - len(part)
    strength = np.concatenate([part.strength, *(f["strength"] for f in frags)])
    count = np.concatenate([part.count, np.zeros(n_new, np.uint32)])
    last = np.concatenate([part.last_step, np.full(n_new, step, np.int64)])
    out = Partition(part.index, ids[sel], strength[sel], count[sel], last[sel])
    if dim:
        pay = np.concatenate([payload if payload is not None else np.empty((0, dim), np.float32),
                              *(f["payload"] for f in frags)])
        return out, pay[sel]
    return out, None


def _ingest_partition(replicas: ReplicaSet, token: str, base: str | None, size: int, p: int, fragments: list[str],
                      step: int, dim: int, commit: str, paths: Sequence[str], capacity: int) -> tuple[int, int, str]:
    part = _load(replicas, token, base, p, size)
    payload = _load_payload(replicas, base, p, size, dim) if dim else None
    part, payload = _merge_ingest(part, payload, fragments, step, dim)
    return _write(part, replicas, token, commit, paths, capacity, payload, resident=False)


def _delete_partition(replicas: ReplicaSet, token: str, base: str | None, size: int, p: int, ids: np.ndarray,
                      dim: int, commit: str, paths: Sequence[str], capacity: int) -> tuple[int, int, str]:
    part = _load(replicas, token, base, p, size)
    payload = _load_payload(replicas, base, p, size, dim) if dim else None
    keep = ~np.isin(part.id, ids)
    part = Partition(p, part.id[keep], part.strength[keep], part.count[keep], part.last_step[keep])
    return _write(part, replicas, token, commit, paths, capacity, payload[keep] if dim else None, resident=False)

