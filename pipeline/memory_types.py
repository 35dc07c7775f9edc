"""The memory bank's records: a partition's arrays, quality and epoch reports, the keyed reinforcement source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from neurochunk.kernels import memory as K

__all__ = ["ARRAYS", "FILL", "CapacityError", "EpochReport", "KeyedSource", "Partition", "Quality", "Source"]

ARRAYS = {"id": np.uint64, "strength": np.float32, "count": np.uint32, "last_step": np.int64}
FILL = {"id": K.EMPTY_ID, "strength": 0.0, "count": 0, "last_step": 0}

Source = Callable[[int], tuple[np.ndarray, np.ndarray]]


class CapacityError(ValueError):
    """A partition would hold more memories than its capacity."""


@dataclass
class Partition:
    """The live memories of one partition (unpadded), sorted by id."""

    index: int
    id: np.ndarray
    strength: np.ndarray
    count: np.ndarray
    last_step: np.ndarray
    bytes_read: int = 0  # bytes this copy was read from the store with (0: from a worker's memory)

    def copy(self) -> Partition:
        return Partition(self.index, self.id, self.strength.copy(), self.count.copy(), self.last_step.copy())

    def __len__(self) -> int:
        return len(self.id)


@dataclass(frozen=True)
class Quality:
    """Quality of the bank: memories, sum, mean and max of strength, histogram over [0, 1]."""

    n: int
    sum: float
    mean: float
    max: float
    histogram: np.ndarray


@dataclass
class EpochReport:
    """What ``run_epoch`` did: per-iteration statistics, the final ranking, timings and graph sizes."""

    first_iteration: int
    n_iterations: int
    sums: np.ndarray
    means: np.ndarray
    maxima: np.ndarray
    histogram: np.ndarray
    top_ids: np.ndarray  # (n_iterations, k)
    top_strengths: np.ndarray
    commits: list[str] = field(default_factory=list)
    graph_sizes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    partitions_read: int = 0  # partitions read from the store (not found in a worker's memory)
    bytes_read: int = 0
    topk_rebuilds: int = 0  # partition top-k lists recomputed in full rather than maintained


@dataclass(frozen=True)
class KeyedSource:
    """A deterministic reinforcement stream: iteration t reinforces ``n_draws`` of the synthetic ids
    ``keyed_ids(id_seed, n_pool)`` by deltas in [min_delta, max_delta), keyed by (seed, t)."""

    seed: int
    id_seed: int
    n_pool: int
    n_draws: int
    max_delta: float = 0.2
    min_delta: float = 0.0

    def __call__(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        return K.keyed_reinforcement(self.seed, self.id_seed, t, self.n_pool, self.n_draws, self.max_delta,
                                     self.min_delta)

    def partition(self, t: int, p: int, n_partitions: int) -> tuple[np.ndarray, np.ndarray]:
        """The draws of iteration ``t`` owned by partition ``p``: ``_own(*self(t), p, n_partitions)``, faster."""
        return self.stream(p, n_partitions)(t)

    def stream(self, p: int, n_partitions: int) -> K.KeyedStream:
        """Partition ``p``'s share of this stream, in a form kernels generate themselves."""
        return K.KeyedStream(self.seed, self.id_seed, self.n_pool, self.n_draws, self.max_delta, self.min_delta, p,
                             n_partitions)

