"""Runner: advance a State in batches, persist, checkpoint, resume and report."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
from neurochunk.stores import Dataset

from .state import State
from .step import Step

__all__ = ["Runner", "BatchReport", "Gathered"]


@dataclass(frozen=True)
class Gathered:
    """A batch output the driver fetches part by part, straight from the workers that hold the parts.

    ``combine(*values)`` runs on the driver; no task gathers the parts on one worker first.
    """

    parts: list[Any]
    combine: Callable[..., Any]


@dataclass
class BatchReport:
    """Timing of one batch of steps."""

    first_step: int
    n_steps: int
    build_s: float
    compute_s: float
    checkpoint_s: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Advance ``state`` with ``step`` for many steps.

    Parameters
    ----------
    step
        The lazy step.
    state
        The initial state (ignored when ``checkpoints`` holds a commit to resume from).
    checkpoints
        A dataset that receives a commit every ``checkpoint_every`` steps and at the end.
    checkpoint_every
        Steps between checkpoints; 0 checkpoints only at the end.
    batch_steps
        Steps per batch (one graph); defaults to ``step.batch_steps``.
    client
        A ``distributed.Client``; persisted chunks then stay on the workers that computed them.
    on_batch
        Called with each batch's :class:`BatchReport` and the gathered outputs (recorders use it).
    progress
        Show a console progress bar (tqdm) on stderr.
    """

    def __init__(self, step: Step, state: State, *, checkpoints: Dataset | None = None, checkpoint_every: int = 0,
                 batch_steps: int | None = None, client: Any = None,
                 on_batch: Callable[[BatchReport, State], None] | None = None, progress: bool = True) -> None:
        self.step, self.state = step, state
        self.checkpoints, self.checkpoint_every = checkpoints, checkpoint_every
        self.batch_steps = batch_steps or step.batch_steps
        self.client, self.on_batch, self.progress = client, on_batch, progress
        self.reports: list[BatchReport] = []
        if self.batch_steps <= 0:
            raise ValueError(f"batch_steps must be positive, got {self.batch_steps}")

    @property
    def steps_done(self) -> int:
        return int(self.state.scalars.get("step", 0))

    def resume(self) -> bool:
        """Load the latest checkpoint if there is one; return whether one was loaded."""
        if self.checkpoints is None or self.checkpoints.commits.latest() is None:
            return False
        self.state = State.restore(self.checkpoints)
        return True

    def run(self, n_steps: int) -> State:
        """Advance to ``steps_done + n_steps``, checkpointing and reporting on the way."""
        target = self.steps_done + n_steps
        bar = _bar(n_steps, self.progress)
        since_checkpoint = 0
        try:
            while self.steps_done < target:
                k = min(self.batch_steps, target - self.steps_done)
                if self.checkpoint_every:
                    k = min(k, self.checkpoint_every - since_checkpoint)
                first = self.steps_done
                t0 = time.perf_counter()
                lazy = self.step.build(self.state, k)
                lazy = lazy.update(step=first + k)
                outputs = self.step.outputs(lazy)
                t1 = time.perf_counter()
                state, outputs = _persist_with_outputs(lazy, outputs, self.client)
                _wait(state, self.client)
                t2 = time.perf_counter()
                self.state = state
                report = BatchReport(first, k, t1 - t0, t2 - t1, outputs=outputs)
                since_checkpoint += k
                if self.checkpoints is not None and (
                    (self.checkpoint_every and since_checkpoint >= self.checkpoint_every) or self.steps_done >= target
                ):
                    t3 = time.perf_counter()
                    self.state.checkpoint(self.checkpoints, f"step-{self.steps_done}")
                    report.checkpoint_s = time.perf_counter() - t3
                    since_checkpoint = 0
                self.reports.append(report)
                if self.on_batch is not None:
                    self.on_batch(report, self.state)
                bar.update(k)
        finally:
            bar.close()
        return self.state


def _persist_with_outputs(lazy: State, outputs: dict[str, Any], client: Any) -> tuple[State, dict[str, Any]]:
    """Persist the state and compute the outputs as one graph, so that each task runs once.

    Two graphs sharing tasks (state, outputs) can run a task twice: locally always, on a cluster when
    one graph's intermediate results are released before the other arrives.
    """
    import dask.array as da

    names = [n for n, a in lazy.arrays.items() if isinstance(a, da.Array)]
    keys = list(outputs)
    flat, spans = [], []
    for k in keys:
        parts = outputs[k].parts if isinstance(outputs[k], Gathered) else [outputs[k]]
        spans.append((len(flat), len(parts)))
        flat += parts
    collections = [lazy.arrays[n] for n in names] + flat
    done = client.persist(collections) if client is not None else dask.persist(*collections)
    outs = done[len(names):]
    if not outs:
        values = []
    elif client is not None:  # each part from the worker holding it, not through the scheduler
        values = client.gather(client.compute(list(outs)), direct=True)
    else:
        values = list(dask.compute(*outs))
    results = {}
    for k, (a, m) in zip(keys, spans, strict=True):
        results[k] = outputs[k].combine(*values[a:a + m]) if isinstance(outputs[k], Gathered) else values[a]
    return lazy.update(dict(zip(names, done[:len(names)], strict=True))), results


def _wait(state: State, client: Any) -> None:
    """Block until a distributed persist has finished (a local persist already has)."""
    if client is None:
        return
    import dask.array as da
    from distributed import wait

    wait([a for a in state.arrays.values() if isinstance(a, da.Array)])


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", disable=not enabled or not sys.stderr, file=sys.stderr,
                dynamic_ncols=True, leave=False)
