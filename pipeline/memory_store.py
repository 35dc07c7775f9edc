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
_SCRATCH = threading.local()  # per worker thread: the padded chunk buffers of _write, reused across partitions


def _padded(name: str, dtype: type, capacity: int, values: np.ndarray) -> np.ndarray:
    """``values`` padded with ``FILL[name]`` to ``capacity``, in this thread's reused buffer for ``name``."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    shape = (capacity, *values.shape[1:])
    buf = bufs.get(name)
    if buf is None or buf.shape != shape or buf.dtype != np.dtype(dtype):
        buf = bufs[name] = np.empty(shape, dtype)
    n = len(values)
    buf[:n] = values
    buf[n:] = FILL.get(name, 0)
    return buf


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
    return Partition(p, arrays["id"], arrays["strength"], arrays["count"].astype(np.uint32, copy=False),
                     arrays["last_step"].astype(np.int64, copy=False),
                     bytes_read=sum(a.nbytes for a in arrays.values()))


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
        written += write_chunk(replicas, paths, name, part.index, _padded(name, dtype, capacity, getattr(part, name)))
    if payload is not None:
        written += write_chunk(replicas, paths, "payload", part.index, _padded("payload", np.float32, capacity, payload))
    with _LOCK:
        if resident:  # the next graph's load of this partition, placed on this worker, starts from here
            _RESIDENT[(token, part.index)] = (commit, part)
        else:
            _RESIDENT.pop((token, part.index), None)
        _IO["bytes_written"] += written
    return n, written, _worker_address()

