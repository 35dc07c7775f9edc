"""A memory bank partition's reads and writes on a worker, through a per-process cache of resident
partitions, with I/O counters."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from neurochunk.stores.replicas import ReplicaSet, write_chunk

from .memory_types import ARRAYS, FILL, CapacityError, Partition

__all__ = ["drop_resident", "io_counters", "reset_io_counters"]

# -- per-process partition cache and I/O counters (one per worker process) -----------------------
_RESIDENT: dict[tuple[str, int], tuple[str, Partition]] = {}
_IO = {"bytes_read": 0, "partitions_read": 0, "cache_hits": 0, "bytes_written": 0}
_LOCK = threading.Lock()


def io_counters() -> dict[str, int]:
    """This process's partition reads, cache hits and bytes (use with ``client.run``)."""
    with _LOCK:
        return dict(_IO)


def drop_resident() -> None:
    """Forget this process's cached partitions (the next loads read the store)."""
    with _LOCK:
        _RESIDENT.clear()


def reset_io_counters() -> None:
    with _LOCK:
        for k in _IO:
            _IO[k] = 0


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def _load(replicas: ReplicaSet, token: str, commit: str | None, p: int, size: int) -> Partition:
    with _LOCK:
        hit = _RESIDENT.get((token, p))
        if hit is not None and hit[0] == commit:
            _IO["cache_hits"] += 1
            return hit[1]
    if commit is None or size == 0:
        return Partition(p, *(np.empty(0, t) for t in ARRAYS.values()))
    arrays = {n: replicas.read_chunk(commit, n, p)[:size] for n in ARRAYS}
    with _LOCK:
        _IO["bytes_read"] += sum(a.nbytes for a in arrays.values())
        _IO["partitions_read"] += 1
    return Partition(p, arrays["id"], arrays["strength"], arrays["count"].astype(np.uint32),
                     arrays["last_step"].astype(np.int64), bytes_read=sum(a.nbytes for a in arrays.values()))


def _load_payload(replicas: ReplicaSet, commit: str | None, p: int, size: int, dim: int) -> np.ndarray:
    if commit is None or size == 0 or dim == 0:
        return np.empty((0, dim), np.float32)
    return replicas.read_chunk(commit, "payload", p)[:size]


def _write(part: Partition, replicas: ReplicaSet, token: str, commit: str, paths: Sequence[str],
           capacity: int, payload: np.ndarray | None = None, resident: bool = True) -> tuple[int, int, str]:
    n = len(part)
    if n > capacity:
        raise CapacityError(f"partition {part.index} would hold {n} memories, more than its capacity "
                            f"{capacity}; create the bank with a larger capacity")
    written = 0
    for name, dtype in ARRAYS.items():
        values = np.full(capacity, FILL[name], dtype)
        values[:n] = getattr(part, name)
        written += write_chunk(replicas, paths, name, part.index, values)
    if payload is not None:
        full = np.zeros((capacity, payload.shape[1]), np.float32)
        full[:n] = payload
        written += write_chunk(replicas, paths, "payload", part.index, full)
    with _LOCK:
        if resident:  # the next graph's load of this partition, placed on this worker, starts from here
            _RESIDENT[(token, part.index)] = (commit, part)
        else:
            _RESIDENT.pop((token, part.index), None)
        _IO["bytes_written"] += written
    return n, written, _worker_address()

