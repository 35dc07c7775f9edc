"""Spiking simulation as lazy Dask graphs: initial State, the windowed Step, connectivity.

One task advances one neuron chunk through one exchange window (the
smallest synaptic delay; the whole batch when one chunk holds the network)
with the numba window kernel. After each window the chunks' spikes are
gathered into one small array that every chunk's next task reads, so a batch
graph has O(chunks) edges per window. Each batch ends with every spike
delivered into the ring buffers, so the State between batches (v, u, g,
refractory counters, ring buffers, step) is all a checkpoint needs.
Stored synapses live in ``pipeline.synapses``; running, recording and
resuming in ``pipeline.recording``.
"""

from __future__ import annotations

import uuid
from typing import Any

import dask
import dask.array as da
import numpy as np

from neurochunk.kernels.neurons import DEFAULTS, STATE_VARS, run_window_slot_major
from neurochunk.kernels.procedural import deliver_many
from neurochunk.kernels.rng import STREAM_INIT, normal_array, uniform_array

from .network import Plan
from .state import State
from .step import Step

__all__ = ["initial_state", "SpikingStep", "STATE_DIMS", "EMPTY_CONN"]

STATE_DIMS = {"v": ("neuron",), "u": ("neuron",), "g": ("neuron", "receptor"), "ref": ("neuron",),
              "ring": ("neuron", "slot", "receptor")}
_VAR_INDEX = {"v": 0, "u": 1, "g0": 2, "g1": 3}
EMPTY_CONN = (np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32),
              np.zeros(0, np.int32))


def _draw(spec: Any, seed: int, var: int, pop: int, first: int, n: int) -> np.ndarray:
    if isinstance(spec, (int, float)):
        return np.full(n, spec, np.float32)
    (kind, (a, b)), = spec.items()
    if kind == "uniform":
        return (a + (b - a) * uniform_array(seed, (STREAM_INIT << 32) | var, pop, first, n, 0)).astype(np.float32)
    if kind == "normal":
        return (a + b * normal_array(seed, (STREAM_INIT << 32) | var, pop, first, n, 0)).astype(np.float32)
    raise ValueError(f"initial value {spec!r}: expected a number, {{uniform: [lo, hi]}} or {{normal: [mean, std]}}")


def _init_chunk(plan: Plan, c: int) -> tuple[np.ndarray, ...]:
    lo, hi = plan.chunks[c]
    n = hi - lo
    v = np.zeros(n, np.float32)
    u = np.zeros(n, np.float32)
    g = np.zeros((n, 2), np.float32)
    for pop, a, b in plan.segments(c):
        p = plan.net.populations[pop]
        first, sl = a - int(plan.offsets[pop]), slice(a - lo, b - lo)
        izh = p.model == "izhikevich"
        v0 = p.params.get("c", -65.0) if izh else p.params.get("E_L", DEFAULTS[p.model].get("E_L", 0.0))
        v[sl] = _draw(p.init.get("v", v0), plan.seed, 0, pop, first, b - a)
        if izh:
            u[sl] = (_draw(p.init["u"], plan.seed, 1, pop, first, b - a) if "u" in p.init
                     else np.float32(p.params.get("b", 0.2)) * v[sl])
            continue
        for r, name in enumerate(STATE_VARS[p.model][1:3]):
            if name in p.init:
                g[sl, r] = _draw(p.init[name], plan.seed, 2 + r, pop, first, b - a)
    return v, u, g, np.zeros(n, np.int32), np.zeros((n, plan.n_slots, 2), np.int32)


def initial_state(plan: Plan) -> State:
    """The lazy State at step 0: one init task per chunk, values keyed by (seed, variable, neuron)."""
    parts = [dask.delayed(_init_chunk, nout=5)(plan, c) for c in range(len(plan.chunks))]
    return State(_assemble(plan, [tuple(p) for p in parts]), STATE_DIMS, {"step": 0, "n_spikes": 0})


_SHAPES = {"v": ((), np.float32), "u": ((), np.float32), "g": ((2,), np.float32), "ref": ((), np.int32)}


def _assemble(plan: Plan, blocks: list[tuple[Any, ...]]) -> dict[str, da.Array]:
    out = {}
    for k, name in enumerate(("v", "u", "g", "ref", "ring")):
        tail, dtype = ((plan.n_slots, 2), np.int32) if name == "ring" else _SHAPES[name]
        tag = uuid.uuid4().hex
        out[name] = da.concatenate([da.from_delayed(b[k], (hi - lo, *tail), dtype, name=f"{name}-{tag}-{c}")
                                    for c, (b, (lo, hi)) in enumerate(zip(blocks, plan.chunks, strict=True))])
    return out


def _chunk_args(plan: Plan, c: int) -> tuple[Any, ...]:
    return plan.pop_tables, plan.chunks[c][0], plan.seed, plan.pint, plan.pflt, plan.net.conn_block


def _window_task(args: tuple[Any, ...], conn: tuple[np.ndarray, ...], v: np.ndarray, u: np.ndarray, g: np.ndarray,
                 ref: np.ndarray, ring: np.ndarray, incoming: tuple[np.ndarray, np.ndarray] | None, s0: int,
                 n_steps: int, sample: tuple[np.ndarray, int] | None = None) -> tuple[Any, ...]:
    tables, lo, seed, pint, pflt, block = args
    v, u, g, ref = v.copy(), u.copy(), g.copy(), ref.copy()
    work = np.ascontiguousarray(ring.transpose(1, 2, 0))  # slot-major while the kernels run
    hi = lo + v.shape[0]
    if incoming is not None:
        deliver_many(incoming[0], incoming[1], lo, hi, pint, pflt, seed, block, lo, hi, work, work.shape[0], *conn)
    if sample is None or len(sample[0]) == 0:
        spikes = run_window_slot_major(*tables, v, u, g, ref, work, s0, n_steps, lo, seed, pint, pflt, block, *conn)
        return v, u, g, ref, np.ascontiguousarray(work.transpose(2, 0, 1)), (*spikes, None)
    # sampled neurons: stop at every sampling step (the step count is a multiple of `every`)
    idx, every = sample
    parts, times, values = [], [], []
    s, end = s0, s0 + n_steps
    while s < end:
        k = min(end, (s // every + 1) * every) - s
        parts.append(run_window_slot_major(*tables, v, u, g, ref, work, s, k, lo, seed, pint, pflt, block, *conn))
        s += k
        if s % every == 0:
            times.append(s)
            values.append(v[idx - lo].copy())
    steps = np.concatenate([p[0] for p in parts])
    gids = np.concatenate([p[1] for p in parts])
    samples = (np.array(times, np.int64), idx, np.array(values, np.float32).reshape(len(times), len(idx)))
    return v, u, g, ref, np.ascontiguousarray(work.transpose(2, 0, 1)), (steps, gids, samples)


def _deliver_task(args: tuple[Any, ...], conn: tuple[np.ndarray, ...], ring: np.ndarray,
                  incoming: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    _, lo, seed, pint, pflt, block = args
    work = np.ascontiguousarray(ring.transpose(1, 2, 0))
    hi = lo + ring.shape[0]
    deliver_many(incoming[0], incoming[1], lo, hi, pint, pflt, seed, block, lo, hi, work, work.shape[0], *conn)
    return np.ascontiguousarray(work.transpose(2, 0, 1))


def _gather(*parts: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    steps = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    gids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    order = np.lexsort((gids, steps))
    return steps[order], gids[order]


def _gather_samples(*parts: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(sample steps, v[sample, recorded neuron])`` of a batch from the chunks' window outputs."""
    by_time: dict[int, dict[int, float]] = {}
    for p in parts:
        if p[2] is None:
            continue
        times, idx, values = p[2]
        for a, t in enumerate(times.tolist()):
            row = by_time.setdefault(t, {})
            row.update(zip(idx.tolist(), values[a].tolist()))
    if not by_time:
        return None
    times = sorted(by_time)
    ids = sorted(by_time[times[0]])
    return np.array(times, np.int64), np.array([[by_time[t][i] for i in ids] for t in times], np.float32)


def chunk_connectivity(plan: Plan, loaders: list[Any] | None, c: int) -> Any:
    """The stored CSR arrays chunk ``c`` needs (a delayed loader), or empty arrays in procedural mode."""
    return EMPTY_CONN if loaders is None else loaders[c]


class SpikingStep(Step):
    """Advance a spiking network's State; :meth:`outputs` gives the batch's spikes, sorted by (step, neuron).

    Parameters
    ----------
    plan
        The compiled network.
    loaders
        Per-chunk delayed stored-connectivity loaders (see ``stores.connectivity``); ``None``: procedural.
    batch_steps
        Steps per batch (per graph handed to the scheduler).
    """

    def __init__(self, plan: Plan, loaders: list[Any] | None = None, batch_steps: int = 1000,
                 sample: tuple[Any, int] | None = None) -> None:
        if plan.net.connectivity == "stored" and loaders is None:
            raise ValueError("a network with connectivity: stored needs its connectivity loaders")
        self.plan, self.loaders, self.batch_steps = plan, loaders, batch_steps
        self._args = [_chunk_args(plan, c) for c in range(len(plan.chunks))]
        self._sample: list[tuple[np.ndarray, int] | None] = [None] * len(plan.chunks)
        if sample is not None:
            ids, every = np.unique(np.asarray(sample[0], np.int64)), int(sample[1])
            if len(ids) and (ids[0] < 0 or ids[-1] >= plan.n):
                raise ValueError(f"sampled neuron ids must lie in [0, {plan.n}), got {ids[0]}..{ids[-1]}")
            if every <= 0:
                raise ValueError(f"the sampling interval must be at least one step, got {every}")
            self._sample = [(ids[(ids >= lo) & (ids < hi)], every) for lo, hi in plan.chunks]

    def _blocks(self, state: State) -> list[tuple[Any, ...]]:
        bounds = (tuple(hi - lo for lo, hi in self.plan.chunks),)
        cols = []
        for name in ("v", "u", "g", "ref", "ring"):
            arr = da.asarray(state[name])
            arr = arr.rechunk(bounds + tuple((s,) for s in arr.shape[1:]))
            cols.append(arr.to_delayed().ravel())
        return [tuple(col[c] for col in cols) for c in range(len(self.plan.chunks))]

    def build(self, state: State, n: int) -> State:
        s0 = int(state.scalars.get("step", 0))
        blocks = self._blocks(state)
        n_chunks = len(blocks)
        conns = [chunk_connectivity(self.plan, self.loaders, c) for c in range(n_chunks)]
        width = self.plan.window or n
        task = dask.delayed(_window_task, nout=6)
        incoming, windows, sampled = None, [], []
        for s in range(s0, s0 + n, width):
            k = min(width, s0 + n - s)
            res = [task(self._args[c], conns[c], *blocks[c], incoming, s, k, self._sample[c]) for c in range(n_chunks)]
            res = [tuple(r) for r in res]
            blocks = [r[:5] for r in res]
            incoming = dask.delayed(_gather)(*[r[5] for r in res])
            windows.append(incoming)
            sampled += [r[5] for r in res]
        if n_chunks > 1:
            deliver = dask.delayed(_deliver_task)
            blocks = [(*b[:4], deliver(self._args[c], conns[c], b[4], incoming)) for c, b in enumerate(blocks)]
        self._spikes = dask.delayed(_gather)(*windows)
        self._samples = dask.delayed(_gather_samples)(*sampled) if any(x is not None for x in self._sample) else None
        return state.update(_assemble(self.plan, blocks))

    def outputs(self, state: State) -> dict[str, Any]:
        out = {"spikes": self._spikes}
        if self._samples is not None:
            out["samples"] = self._samples
        return out
