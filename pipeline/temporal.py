"""The T-step forward run of a delayed recurrent model as a lazy graph with temporal checkpoints.

The graph is a grid of tasks over (sample chunk x time batch of ``k`` steps).
Along time each sample chunk is a chain: a task takes the history after the
previous batch and returns the history after its own ``k`` steps. Only those
histories (``D = max(delays)`` states per layer) are stored, every ``k`` steps,
as arrays ``ckpt<l>`` of shape ``(T/k, D, sample, *unit)``. Reading states
back (:func:`states`) recomputes each batch from its checkpoint, one task per
(time batch, sample chunk): memory grows as ``T/k`` stored histories plus ``k``
recomputed states per task, not ``T``. :func:`run_every_step` stores every step
instead, for comparison.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from neurochunk.kernels.recurrent import DelayedRNN, advance, empty_history, make_weights, stimulus
from neurochunk.stores import Dataset

from .io import read_array

__all__ = ["model_attrs", "model_from_attrs", "run_checkpointed", "run_every_step", "states"]


def model_attrs(model: DelayedRNN) -> dict[str, Any]:
    """The model as JSON attributes."""
    return {"sizes": list(model.sizes), "conv": model.conv, "height": model.height, "width": model.width,
            "delay_ff": model.delay_ff, "delay_rec": model.delay_rec, "alpha": model.alpha, "gain": model.gain,
            "seed": model.seed}


def model_from_attrs(attrs: dict[str, Any]) -> DelayedRNN:
    return DelayedRNN(**{**attrs, "sizes": tuple(attrs["sizes"])})


def _chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def _batch(model: DelayedRNN, lo: int, hi: int, history: list[np.ndarray] | None, t0: int, k: int,
           record: bool) -> tuple[Any, ...]:
    weights = make_weights(model)
    x = stimulus(model, np.arange(lo, hi))
    hist = history if history is not None else empty_history(model, hi - lo)
    new, rec = advance(model, weights, x, hist, t0, k, record=record)
    return (*(h[None] for h in new), *(rec or ()))


def _layer_arrays(model: DelayedRNN, tasks: list[list[Any]], n_samples: int, chunk: int, lead: tuple[int, ...],
                  offset: int, wrap: bool = False) -> list[da.Array]:
    """Stack task outputs ``tasks[b][i]`` (tuple item ``offset + l``) into per-layer dask arrays."""
    out = []
    for l in range(model.n_layers):
        unit = model.unit_shape(l + 1)
        rows = []
        for per_chunk in tasks:
            blocks = [da.from_delayed(t[offset + l], shape=(*lead, hi - lo, *unit), dtype=np.float32)
                      for t, (lo, hi) in zip(per_chunk, _chunks(n_samples, chunk), strict=True)]
            rows.append(da.concatenate(blocks, axis=len(lead)))
        out.append(da.concatenate(rows, axis=0))
    return out


def _unwrap(hist: list[np.ndarray]) -> list[np.ndarray]:
    return [h[0] for h in hist]


def _graph(model: DelayedRNN, n_samples: int, chunk: int, steps: int, k: int, record: bool) -> list[list[Any]]:
    if steps % k:
        raise ValueError(f"steps={steps} must be a multiple of the checkpoint interval k={k}")
    nout = 2 * model.n_layers if record else model.n_layers
    task = dask.delayed(_batch, nout=nout, pure=True)
    tasks: list[list[Any]] = []
    prev: list[Any] = [None] * len(_chunks(n_samples, chunk))
    for b in range(steps // k):
        row = []
        for i, (lo, hi) in enumerate(_chunks(n_samples, chunk)):
            hist = None if prev[i] is None else [prev[i][l] for l in range(model.n_layers)]
            hist = None if hist is None else dask.delayed(_unwrap, pure=True)(hist)
            t = task(model, lo, hi, hist, b * k, k, record)
            row.append(t)
        tasks.append(row)
        prev = row
    return tasks


def run_checkpointed(ds: Dataset, model: DelayedRNN, *, n_samples: int, chunk: int, steps: int, k: int,
                     codec: str | None = None, compute: bool = True) -> Any:
    """Run ``steps`` steps and store a history every ``k`` steps (``ckpt<l>``, ``(steps/k, D, sample, *unit)``).

    Checkpoint ``b`` is the history *before* step ``b*k`` (checkpoint 0 is all
    zeros and is not computed). Returns the ``da.store`` result (or the delayed
    store if ``compute=False``).
    """
    tasks = _graph(model, n_samples, chunk, steps - k, k, record=False) if steps > k else []
    d = model.depth
    ckpts = _layer_arrays(model, tasks, n_samples, chunk, (1, d), 0) if tasks else [None] * model.n_layers
    targets, sources = [], []
    for l in range(model.n_layers):
        unit = model.unit_shape(l + 1)
        zeros = da.zeros((1, d, n_samples, *unit), np.float32, chunks=(1, d, chunk, *unit))
        x = zeros if ckpts[l] is None else da.concatenate([zeros, ckpts[l]], axis=0)
        dims = ("checkpoint", "slot", "sample", *(("channel", "y", "x") if model.conv else ("unit",)))
        arr = ds.create_array(f"ckpt{l + 1}", x.shape, np.float32, chunks=(1, d, chunk, *unit), dims=dims,
                              codec=codec, overwrite=True)
        targets.append(arr)
        sources.append(x)
    ds.update_attrs(model=model_attrs(model), steps=steps, k=k, n_samples=n_samples, sample_chunk=chunk,
                    layout="checkpointed")
    return da.store(sources, targets, lock=False, compute=compute)


def run_every_step(ds: Dataset, model: DelayedRNN, *, n_samples: int, chunk: int, steps: int, k: int,
                   codec: str | None = None, compute: bool = True) -> Any:
    """Run ``steps`` steps storing every state (``h<l>``, ``(time, sample, *unit)``), ``k`` steps per task."""
    tasks = _graph(model, n_samples, chunk, steps, k, record=True)
    arrays = _layer_arrays(model, tasks, n_samples, chunk, (k,), model.n_layers)
    targets = []
    for l, x in enumerate(arrays):
        unit = model.unit_shape(l + 1)
        dims = ("time", "sample", *(("channel", "y", "x") if model.conv else ("unit",)))
        targets.append(ds.create_array(f"h{l + 1}", x.shape, np.float32, chunks=(k, chunk, *unit), dims=dims,
                                       codec=codec, overwrite=True))
    ds.update_attrs(model=model_attrs(model), steps=steps, k=k, n_samples=n_samples, sample_chunk=chunk,
                    layout="every_step")
    return da.store(arrays, targets, lock=False, compute=compute)


def _recompute(model: DelayedRNN, layer: int, b: int, k: int, lo: int, *blocks: np.ndarray) -> np.ndarray:
    hist = [np.asarray(bl)[0] for bl in blocks]
    hi = lo + hist[0].shape[1]
    small = DelayedRNN(**{**model_attrs(model), "sizes": tuple(model.sizes[: layer + 1])})
    _, rec = advance(small, make_weights(small), stimulus(small, np.arange(lo, hi)), hist, b * k, k, record=True)
    assert rec is not None
    return rec[layer - 1]


def states(ds: Dataset, layer: int) -> da.Array:
    """States of ``layer`` (1-based) for every step, ``(time, sample, *unit)``, lazily.

    Every-step datasets are read; checkpointed datasets recompute each
    ``k``-step batch from its checkpoint (only layers ``<= layer`` are run),
    one task per (time batch, sample chunk).
    """
    a = ds.attrs
    model = model_from_attrs(a["model"])
    if not 1 <= layer <= model.n_layers:
        raise ValueError(f"{ds.url}: layer must be in 1..{model.n_layers}, got {layer}")
    if a.get("layout") == "every_step":
        return read_array(ds, f"h{layer}")
    k, steps = int(a["k"]), int(a["steps"])
    ck = [read_array(ds, f"ckpt{l}") for l in range(1, layer + 1)]
    unit = model.unit_shape(layer)
    tail = (0,) * len(unit)
    name = f"recompute-{dask.base.tokenize(str(ds.url), a, layer)}"
    graph: dict[Any, Any] = {}
    for b in range(steps // k):
        lo = 0
        for i, size in enumerate(ck[0].chunks[2]):
            parts = [(c.name, b, 0, i, *((0,) * (c.ndim - 3))) for c in ck]
            graph[(name, b, i, *tail)] = (_recompute, model, layer, b, k, lo, *parts)
            lo += size
    hlg = HighLevelGraph.from_collections(name, graph, dependencies=ck)
    chunks = ((k,) * (steps // k), ck[0].chunks[2], *((u,) for u in unit))
    return da.Array(hlg, name, chunks, dtype=np.float32)
