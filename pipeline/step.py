"""Step: a pure, lazy description of State(t) -> State(t + k)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .state import State

__all__ = ["Step"]


class Step(ABC):
    """Advance a :class:`State` by ``n`` steps without computing anything.

    Subclasses build a dask graph of chunk kernels in :meth:`build`; the
    :class:`~neurochunk.pipeline.runner.Runner` decides when to persist,
    checkpoint and report. ``outputs`` returns small per-batch results
    (spikes, statistics) that the runner gathers after each batch.
    """

    #: steps the graph of one batch may fuse into each task
    batch_steps: int = 1

    @abstractmethod
    def build(self, state: State, n: int) -> State:
        """Return the lazy State ``n`` steps later."""

    def outputs(self, state: State) -> dict[str, Any]:
        """Lazy small results of the batch that produced ``state`` (default: none)."""
        return {}
