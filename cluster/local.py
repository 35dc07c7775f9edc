"""The embedded default: a LocalCluster sized to this machine."""

from __future__ import annotations

import os
from typing import Any

import psutil

from .config import ClusterConfig

__all__ = ["local_cluster", "machine_size", "malloc_environ"]


def machine_size(config: ClusterConfig) -> tuple[int, int, int | str]:
    """Workers, threads per worker and per-worker memory for this machine.

    Dask threads run numba ``nogil`` kernels in parallel, so the default is few
    workers with several threads: one worker per two cores (at least one).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_workers = config.n_workers or max(1, min(cores // 2, 8))
    threads = config.threads_per_worker or max(1, cores // n_workers)
    memory: int | str = config.memory_limit
    if memory == "auto":
        memory = int(psutil.virtual_memory().total * 0.8 / n_workers)
    return n_workers, threads, memory


def malloc_environ(keep_mib: int) -> dict[str, Any]:
    """Dask's worker pre-spawn environment with glibc keeping ``keep_mib`` MiB of freed heap (0: unchanged).

    Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` for its workers, which also pins glibc's mmap threshold at
    128 KiB: every decoded or encoded chunk is then a fresh ``mmap``, faulted in page by page and unmapped
    when freed. Chunks under 32 MiB from the heap, and a trim threshold of ``keep_mib``, let the next
    chunk reuse the pages.
    """
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    if keep_mib > 0:
        env.update(MALLOC_MMAP_THRESHOLD_=32 * 2**20, MALLOC_TRIM_THRESHOLD_=keep_mib * 2**20)
    return env


def local_cluster(config: ClusterConfig, security: Any = None) -> Any:
    """Start a ``distributed.LocalCluster`` for ``config``."""
    import dask
    from distributed import LocalCluster

    n_workers, threads, memory = machine_size(config)
    kwargs: dict[str, Any] = dict(
        n_workers=n_workers, threads_per_worker=threads, memory_limit=memory,
        dashboard_address=config.dashboard_address, processes=config.processes,
    )
    if config.processes or security is not None:
        kwargs["host"] = "127.0.0.1"  # threads-only clusters talk inproc://, which takes no host
    if security is not None:
        kwargs["security"] = security
        kwargs["protocol"] = "tls://"
    elif config.protocol is not None:
        kwargs["protocol"] = f"{config.protocol}://"
    with dask.config.set({"distributed.nanny.pre-spawn-environ": malloc_environ(config.malloc_keep_mib)}):
        return LocalCluster(**kwargs)
