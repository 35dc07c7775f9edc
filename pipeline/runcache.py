"""Labelled blocks kept between the scan and the relabel pass of connected components, within a byte budget.

The scan labels every block; keeping its labels as runs
(:class:`~neurochunk.kernels.runs.Runs`, 5-10x smaller than ``uint32`` labels on
connectomics data) lets the relabel pass paint the global ids straight from
them instead of reading and labelling the block again. Blocks beyond the
budget are recomputed as before, so memory stays bounded whatever the volume.
Only tasks in the process that holds the cache (the threaded scheduler) use it.
"""

from __future__ import annotations

import threading
import uuid

from neurochunk.kernels.runs import Runs

__all__ = ["RunCache", "close_cache", "offer", "open_cache", "take"]


class RunCache:
    """Runs by block index, up to ``budget`` bytes; ``take`` hands an entry over and frees its bytes."""

    def __init__(self, budget: int) -> None:
        self.budget, self.used = int(budget), 0
        self._runs: dict[int, Runs] = {}
        self._lock = threading.Lock()

    def offer(self, block: int, runs: Runs) -> bool:
        with self._lock:
            if self.used + runs.nbytes > self.budget:
                return False
            self._runs[block] = runs
            self.used += runs.nbytes
            return True

    def take(self, block: int) -> Runs | None:
        with self._lock:
            runs = self._runs.pop(block, None)
            if runs is not None:
                self.used -= runs.nbytes
            return runs


_OPEN: dict[str, RunCache] = {}


def open_cache(budget: int) -> str:
    """Register a cache for one run; tasks name it by the returned key."""
    key = uuid.uuid4().hex
    _OPEN[key] = RunCache(budget)
    return key


def close_cache(key: str) -> None:
    _OPEN.pop(key, None)


def offer(key: str | None, block: int, runs: Runs) -> bool:
    cache = _OPEN.get(key) if key else None
    return cache.offer(block, runs) if cache is not None else False


def take(key: str | None, block: int) -> Runs | None:
    cache = _OPEN.get(key) if key else None
    return cache.take(block) if cache is not None else None
