"""Spiking simulation as lazy Dask graphs: initial State, the windowed Step, connectivity.

One task advances one neuron chunk through one exchange window (the
smallest synaptic delay, or a fraction of it with ``overlap``; windows of
bounded spikes when one chunk holds the network) with the numba window kernel
(or its cupy twin). Each window task depends on the chunk's previous window
task and on the spikes the other chunks sent it: gathered into one array per
window (``exchange="gather"``, O(chunks) edges) or read part by part from
every other chunk (``"direct"``, for a few chunks, one per GPU). Each batch
ends with every spike delivered into the ring buffers, so the State between
batches (v, u, g, refractory counters, ring buffers, step) is all a checkpoint
needs. Stored synapses live in ``pipeline.synapses``; running, recording and
resuming in ``pipeline.recording``; the GPU chunk functions in
``pipeline.simulation_gpu``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np

from neurochunk.kernels.neurons import DEFAULTS, STATE_VARS, neuron_major, run_window_slot_major, slot_major
from neurochunk.kernels.procedural import deliver_many
from neurochunk.kernels.rng import STREAM_INIT, normal_array, uniform_array

from .network import Plan
from .runner import Gathered
from .state import State
from .step import Step

__all__ = ["initial_state", "initial_values", "SpikingStep", "STATE_DIMS", "EMPTY_CONN", "BACKENDS",
           "ChunkFunctions", "chunk_functions", "check_backend", "host_state", "merge_spikes", "sum_counts",
           "window_counts", "RECORD", "EXCHANGES", "spike_parts"]

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


def initial_values(plan: Plan, c: int, uses_u: bool = True, uses_g: bool = True) -> tuple[np.ndarray, ...]:
    """``(v, u, g)`` of chunk ``c`` at step 0 (``u``/``g`` of length 0 when not asked for)."""
    lo, hi = plan.chunks[c]
    n = hi - lo
    v = np.zeros(n, np.float32)
    u = np.zeros(n if uses_u else 0, np.float32)
    g = np.zeros((n if uses_g else 0, 2), np.float32)
    for pop, a, b in plan.segments(c):
        p = plan.net.populations[pop]
        first, sl = a - int(plan.offsets[pop]), slice(a - lo, b - lo)
        izh = p.model == "izhikevich"
        v0 = p.params.get("c", -65.0) if izh else p.params.get("E_L", DEFAULTS[p.model].get("E_L", 0.0))
        v[sl] = _draw(p.init.get("v", v0), plan.seed, 0, pop, first, b - a)
        if izh:
            if uses_u:
                u[sl] = (_draw(p.init["u"], plan.seed, 1, pop, first, b - a) if "u" in p.init
                         else np.float32(p.params.get("b", 0.2)) * v[sl])
            continue
        for r, name in enumerate(STATE_VARS[p.model][1:3]):
            if name in p.init and uses_g:
                g[sl, r] = _draw(p.init[name], plan.seed, 2 + r, pop, first, b - a)
    return v, u, g


def _init_chunk(plan: Plan, c: int) -> tuple[np.ndarray, ...]:
    v, u, g = initial_values(plan, c)
    n = len(v)
    return v, u, g, np.zeros(n, np.int32), np.zeros((n, plan.n_slots, 2), np.int32)


@dataclass(frozen=True)
class ChunkFunctions:
    """The per-chunk functions a backend runs; the graph around them is the same for every backend."""

    name: str
    init: Callable[..., tuple[Any, ...]]
    window: Callable[..., tuple[Any, ...]]
    deliver: Callable[..., Any]
    args: Callable[[Plan, int, tuple[Any, ...]], tuple[Any, ...]]
    ring_receptors: Callable[[Plan], int]
    array_module: str = "numpy"
    exchange: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None  # default: _gather (sorted)


BACKENDS = ("cpu", "gpu")
RECORD = ("spikes", "rates")
EXCHANGES = ("gather", "direct")
DIRECT_MAX_CHUNKS = 8  # "auto" exchange: direct up to this many chunks (2 chunks on 2 cores: 34% less wall)
TASK_SPIKES = 1 << 28  # spikes one window task may hold at an assumed 100 Hz (2 GiB as int32 pairs)


def chunk_functions(backend: str) -> ChunkFunctions:
    """The chunk functions of ``backend``: ``cpu`` (numba kernels) or ``gpu`` (cupy twins, one GPU per worker)."""
    if backend == "cpu":
        return ChunkFunctions("cpu", _init_chunk, _window_task, _deliver_task, lambda plan, c, a: a, lambda plan: 2)
    if backend == "gpu":
        from . import simulation_gpu as g

        return ChunkFunctions("gpu", g.init_chunk, g.window_task, g.deliver_task, g.chunk_args, g.ring_receptors,
                              "cupy", _concat)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def check_backend(plan: Plan, backend: str) -> None:
    """Raise ``ValueError`` naming what ``backend`` cannot run in ``plan``."""
    if chunk_functions(backend).name != "gpu":
        return
    if plan.net.connectivity == "stored":
        raise ValueError("backend 'gpu' generates synapses procedurally: it needs connectivity: procedural")
    for pr, row in zip(plan.net.projections, plan.pint, strict=True):
        if row[0] > 2:
            raise ValueError(f"projection {pr.name!r}: backend 'gpu' generates fixed_probability, all_to_all and "
                             f"one_to_one synapses; rule {pr.rule!r} runs on backend 'cpu'")


def _workers(client: Any) -> list[str]:
    info = client.scheduler_info()["workers"]
    return [a for a, _ in sorted(info.items(), key=lambda kv: (str(kv[1].get("name")), kv[0]))]


def initial_state(plan: Plan, backend: str = "cpu", client: Any = None) -> State:
    """The lazy State at step 0: one init task per chunk, values keyed by (seed, variable, neuron).

    With ``backend="gpu"`` and a ``client``, chunk ``c`` of ``C`` is created on worker ``c * W // C``
    of the ``W`` workers (one per GPU) and persisted there; later windows stay with their data.
    """
    fns = chunk_functions(backend)
    check_backend(plan, fns.name)
    n_chunks = len(plan.chunks)
    if fns.name == "cpu" or client is None:
        parts = [dask.delayed(fns.init, nout=5)(plan, c) for c in range(n_chunks)]
        return State(_assemble(plan, [tuple(p) for p in parts], fns), STATE_DIMS, {"step": 0, "n_spikes": 0})
    workers = _workers(client)
    parts = []
    for c in range(n_chunks):
        with dask.annotate(workers=[workers[c * len(workers) // n_chunks]], allow_other_workers=True):
            parts.append(tuple(dask.delayed(fns.init, nout=5)(plan, c)))
    arrays = _assemble(plan, parts, fns)
    names = list(arrays)
    done = client.persist([arrays[k] for k in names], optimize_graph=False)
    return State(dict(zip(names, done, strict=True)), STATE_DIMS, {"step": 0, "n_spikes": 0})


_SHAPES = {"v": ((), np.float32), "u": ((), np.float32), "g": ((2,), np.float32), "ref": ((), np.int32)}


def _assemble(plan: Plan, blocks: list[tuple[Any, ...]], fns: ChunkFunctions | None = None) -> dict[str, da.Array]:
    fns = fns or chunk_functions("cpu")
    out = {}
    for k, name in enumerate(("v", "u", "g", "ref", "ring")):
        tail, dtype = ((plan.n_slots, fns.ring_receptors(plan)), np.int32) if name == "ring" else _SHAPES[name]
        tag = uuid.uuid4().hex
        meta = _meta(fns.array_module, 1 + len(tail), dtype)
        out[name] = da.concatenate([da.from_delayed(b[k], (hi - lo, *tail), dtype, name=f"{name}-{tag}-{c}", meta=meta)
                                    for c, (b, (lo, hi)) in enumerate(zip(blocks, plan.chunks, strict=True))])
    return out


def _meta(module: str, ndim: int, dtype: Any) -> Any:
    if module == "numpy":
        return None
    import importlib

    return importlib.import_module(module).empty((0,) * ndim, dtype)


def host_state(state: State) -> State:
    """``state`` with every array in the CPU layout on the host (what a checkpoint holds).

    Arrays of the CPU backend are returned as they are; GPU blocks are copied to the host and the
    GPU's one-receptor ring buffer is padded to the CPU's two receptors.
    """
    from neurochunk.kernels.neurons import N_RECEPTORS

    arrays = {}
    for name, arr in state.arrays.items():
        on_gpu = isinstance(arr, da.Array) and type(arr._meta).__module__.split(".")[0] == "cupy"
        narrow = name == "ring" and arr.shape[2] < N_RECEPTORS
        if not (on_gpu or narrow):
            continue
        from .simulation_gpu import host_block

        chunks = arr.chunks[:2] + ((N_RECEPTORS,),) if narrow else arr.chunks
        arrays[name] = da.map_blocks(host_block, arr, N_RECEPTORS if narrow else None, chunks=chunks,
                                     dtype=arr.dtype, meta=np.empty((0,) * arr.ndim, arr.dtype))
    return state.update(arrays) if arrays else state


def _chunk_args(plan: Plan, c: int) -> tuple[Any, ...]:
    return plan.pop_tables, plan.chunks[c][0], plan.seed, plan.pint, plan.pflt, plan.net.conn_block


def _window_task(args: tuple[Any, ...], conn: tuple[np.ndarray, ...], v: np.ndarray, u: np.ndarray, g: np.ndarray,
                 ref: np.ndarray, ring: np.ndarray, incoming: tuple[np.ndarray, np.ndarray] | None, s0: int,
                 n_steps: int, sample: tuple[np.ndarray, int] | None = None, count: bool = False,
                 share: bool = True) -> tuple[Any, ...]:
    out = _run_cpu_window(args, conn, v, u, g, ref, ring, incoming, s0, n_steps, sample)
    steps, gids = out[5][:2]
    if count:
        out = (*out[:5], (*out[5], window_counts(steps, gids, args[0][4], s0, n_steps)))
    return (*out, (steps, gids))


def window_counts(steps: Any, gids: Any, offsets: np.ndarray, s0: int, n_steps: int) -> np.ndarray:
    """Spikes per (step of the window ``[s0, s0 + n_steps)``, population): int64 ``(n_steps, populations)``."""
    n_pops = len(offsets) - 1
    pop = np.searchsorted(np.asarray(offsets), gids, side="right") - 1
    c = np.bincount((np.asarray(steps, np.int64) - s0) * n_pops + pop, minlength=n_steps * n_pops)
    return c.astype(np.int64).reshape(n_steps, n_pops)


def spike_parts(incoming: Any, xp: Any = np) -> tuple[Any, Any] | None:
    """Other chunks' spikes as one ``(steps, gids)``: ``incoming`` is ``None``, one pair or a list of pairs.

    Several non-empty parts are joined by array module ``xp`` (``cupy`` for the GPU chunk functions,
    which then take host and device parts alike); one part comes back as it is.
    """
    if incoming is None:
        return None
    parts = [p for p in (incoming if isinstance(incoming, list) else [incoming]) if len(p[1])]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][0], parts[0][1]
    return (xp.concatenate([xp.asarray(p[0]) for p in parts]), xp.concatenate([xp.asarray(p[1]) for p in parts]))


def _run_cpu_window(args: tuple[Any, ...], conn: tuple[np.ndarray, ...], v: np.ndarray, u: np.ndarray, g: np.ndarray,
                    ref: np.ndarray, ring: np.ndarray, incoming: Any, s0: int,
                    n_steps: int, sample: tuple[np.ndarray, int] | None) -> tuple[Any, ...]:
    tables, lo, seed, pint, pflt, block = args
    v, u, g, ref = v.copy(), u.copy(), g.copy(), ref.copy()
    work = slot_major(ring)  # slot-major while the kernels run
    hi = lo + v.shape[0]
    spikes = spike_parts(incoming)
    if spikes is not None:
        deliver_many(spikes[0], spikes[1], lo, hi, pint, pflt, seed, block, lo, hi, work, work.shape[0], *conn)
    if sample is None or len(sample[0]) == 0:
        spikes = run_window_slot_major(*tables, v, u, g, ref, work, s0, n_steps, lo, seed, pint, pflt, block, *conn)
        return v, u, g, ref, neuron_major(work), (*spikes, None)
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
    return v, u, g, ref, neuron_major(work), (steps, gids, samples)


def window(fn: Callable[..., tuple[Any, ...]], args: tuple[Any, ...], conn: tuple[np.ndarray, ...], s0: int,
           n_steps: int, sample: tuple[np.ndarray, int] | None, count: bool, share: bool, n_state: int,
           *rest: Any) -> tuple[tuple[Any, ...], Any, Any]:
    """The graph's window task: ``fn`` (a backend's window function) on one chunk.

    ``rest`` holds the chunk's state, as its five blocks (``n_state=5``, a batch's first window) or as the
    chunk's previous window output (``n_state=1``: the next window depends on that task itself, not on a
    getitem of it, one scheduler round trip less per window), then the spike parts due to this chunk, as
    separate arguments (dask then references each as a plain key). Returns ``(state, record, exchange)``;
    ``exchange`` is ``None`` unless ``share`` (other chunks read it).
    """
    state = rest[0][0] if n_state == 1 else rest[:n_state]
    out = fn(args, conn, *state, list(rest[n_state:]) or None, s0, n_steps, sample, count, share=share)
    return out[:5], out[5], out[6] if share else None


def deliver(fn: Callable[..., Any], args: tuple[Any, ...], conn: tuple[np.ndarray, ...], last: tuple[Any, ...],
            *incoming: Any) -> tuple[Any, ...]:
    """The graph's end-of-batch task: the spike parts still due into the ring of ``last`` (a window output)."""
    state = last[0]
    return (*state[:4], fn(args, conn, state[4], list(incoming)))


def _deliver_task(args: tuple[Any, ...], conn: tuple[np.ndarray, ...], ring: np.ndarray, incoming: Any) -> np.ndarray:
    _, lo, seed, pint, pflt, block = args
    spikes = spike_parts(incoming)
    if spikes is None:
        return ring
    work = slot_major(ring)
    hi = lo + ring.shape[0]
    deliver_many(spikes[0], spikes[1], lo, hi, pint, pflt, seed, block, lo, hi, work, work.shape[0], *conn)
    return neuron_major(work)


def _gather(*parts: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    steps = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    gids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    # parts come in chunk (or window) order, each sorted: a stable sort by step merges the runs in O(n log parts)
    order = np.argsort(steps, kind="stable")
    steps, gids = steps[order], gids[order]
    same = steps[1:] == steps[:-1]
    if (gids[1:][same] <= gids[:-1][same]).any():
        order = np.lexsort((gids, steps))
        steps, gids = steps[order], gids[order]
    return steps, gids


def _concat(*parts: tuple[Any, ...]) -> tuple[Any, Any]:
    """A window's spikes in chunk order, unsorted across chunks (enough for order-independent delivery).

    Device (cupy) parts are concatenated on the device (cupy implements numpy's array functions).
    """
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def merge_spikes(n_chunks: int, *parts: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A batch's spikes in (step, neuron) order from its window outputs (window-major, ``n_chunks`` per window).

    Each part is sorted by (step, neuron) and the chunks hold increasing neuron ranges, so the merge
    only interleaves each window's chunks step by step (slices, no sort).
    """
    steps_out, gids_out = [], []
    for w in range(0, len(parts), n_chunks):
        group = [p for p in parts[w:w + n_chunks] if len(p[0])]
        if len(group) == 1:
            steps_out.append(group[0][0])
            gids_out.append(group[0][1])
        if len(group) <= 1:
            continue
        first, last = min(int(p[0][0]) for p in group), max(int(p[0][-1]) for p in group)
        cuts = [np.searchsorted(p[0], np.arange(first, last + 2)) for p in group]
        for k in range(last - first + 1):
            for p, c in zip(group, cuts, strict=True):
                if c[k] < c[k + 1]:
                    steps_out.append(p[0][c[k]:c[k + 1]])
                    gids_out.append(p[1][c[k]:c[k + 1]])
    if not steps_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(steps_out), np.concatenate(gids_out)


def sum_counts(n_chunks: int, *parts: np.ndarray) -> np.ndarray:
    """A batch's spikes per (step, population) from its windows' per-chunk counts (window-major)."""
    return np.concatenate([np.sum(parts[w:w + n_chunks], axis=0) for w in range(0, len(parts), n_chunks)])


def _gather_samples(*parts: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(sample steps, v[sample, recorded neuron])`` of a batch from the chunks' samples (``None`` where none)."""
    by_time: dict[int, dict[int, float]] = {}
    for p in parts:
        if p is None:
            continue
        times, idx, values = p
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
    sample
        ``(neuron ids, every n steps)`` whose membrane potential the batch samples.
    backend
        ``"cpu"`` (numba kernels) or ``"gpu"`` (cupy twins; each chunk's state stays on its worker's GPU;
        procedural fixed-probability, all-to-all and one-to-one projections only).
    exchange
        ``"gather"``: a window's spikes are gathered into one array that every chunk's next task reads
        (O(chunks) graph edges per window). ``"direct"``: each chunk's task reads every other chunk's spikes
        itself (chunks x chunks edges, one scheduler hop less per window: no gathering task, no worker that
        sends the whole window to every other). ``"auto"``: direct on backend ``gpu`` (a few chunks per GPU) and
        up to ``DIRECT_MAX_CHUNKS`` chunks on ``cpu``.
        On backend ``gpu`` the exchanged spikes stay on the device: the cluster's protocol moves them
        (``ucx`` over NVLink between GPUs of one host; ``tcp`` through host memory).
    record
        ``"spikes"``: :meth:`outputs` gives ``spikes``, fetched by the driver straight from the workers that
        hold each chunk's part (no single gathering task). ``"rates"``: ``counts`` instead, the spikes per
        (step, population) counted by each window task (on the GPU for backend ``gpu``); no spike leaves
        the workers but for the exchange between chunks (large runs).
    overlap
        Exchange windows per smallest delay. With ``overlap=k`` each window is ``min_delay // k`` steps and
        a window's spikes reach the other chunks ``k`` windows later (their earliest arrival), so sending
        them runs while the next ``k - 1`` windows compute. Spikes are those of ``overlap=1``.
    """

    def __init__(self, plan: Plan, loaders: list[Any] | None = None, batch_steps: int = 1000,
                 sample: tuple[Any, int] | None = None, backend: str = "cpu", exchange: str = "auto",
                 record: str = "spikes", overlap: int = 1) -> None:
        if plan.net.connectivity == "stored" and loaders is None:
            raise ValueError("a network with connectivity: stored needs its connectivity loaders")
        self.fns = chunk_functions(backend)
        check_backend(plan, self.fns.name)
        if exchange == "auto":
            exchange = "direct" if self.fns.name == "gpu" or len(plan.chunks) <= DIRECT_MAX_CHUNKS else "gather"
        if exchange not in EXCHANGES:
            raise ValueError(f"exchange must be one of auto, {', '.join(EXCHANGES)}, got {exchange!r}")
        if record not in RECORD:
            raise ValueError(f"record must be one of {', '.join(RECORD)}, got {record!r}")
        if not 1 <= int(overlap) <= plan.min_delay:
            raise ValueError(f"overlap must lie in [1, {plan.min_delay}] (the smallest delay in steps), got {overlap}")
        self.exchange, self.record, self.overlap = exchange, record, int(overlap)
        self.plan, self.loaders, self.batch_steps = plan, loaders, batch_steps
        self._args = [self.fns.args(plan, c, _chunk_args(plan, c)) for c in range(len(plan.chunks))]
        self._sample: list[tuple[np.ndarray, int] | None] = [None] * len(plan.chunks)
        if sample is not None:
            ids, every = np.unique(np.asarray(sample[0], np.int64)), int(sample[1])
            if len(ids) and (ids[0] < 0 or ids[-1] >= plan.n):
                raise ValueError(f"sampled neuron ids must lie in [0, {plan.n}), got {ids[0]}..{ids[-1]}")
            if every <= 0:
                raise ValueError(f"the sampling interval must be at least one step, got {every}")
            self._sample = [(ids[(ids >= lo) & (ids < hi)], every) for lo, hi in plan.chunks]

    @property
    def max_task_steps(self) -> int:
        """Steps one task of a one-chunk network advances: spikes under ``TASK_SPIKES`` at 100 Hz, whole delays.

        A task holds its window's spikes (on the GPU for backend ``gpu``): a 1e9-neuron batch of 100 ms in
        one task would hold 3.75e9 of them at 37.5 Hz (60 GB), so large networks go in windows of fewer steps.
        """
        per_step = self.plan.n * self.plan.dt * 1e-3 * 100.0
        steps = int(TASK_SPIKES / max(per_step, 1.0))
        return max(1, steps // self.plan.min_delay) * self.plan.min_delay  # whole delays: whole GPU delivery batches

    def _blocks(self, state: State) -> list[tuple[Any, ...]]:
        bounds = (tuple(hi - lo for lo, hi in self.plan.chunks),)
        cols = []
        for name in ("v", "u", "g", "ref", "ring"):
            arr = da.asarray(state[name])
            arr = arr.rechunk(bounds + tuple((s,) for s in arr.shape[1:]))
            cols.append(arr.to_delayed().ravel())
        return [tuple(col[c] for col in cols) for c in range(len(self.plan.chunks))]

    def build(self, state: State, n: int) -> State:
        if n <= 0:
            raise ValueError(f"a batch advances at least one step, got {n}")
        s0 = int(state.scalars.get("step", 0))
        blocks = self._blocks(state)
        n_chunks = len(blocks)
        conns = [chunk_connectivity(self.plan, self.loaders, c) for c in range(n_chunks)]
        width = self.plan.min_delay // self.overlap if self.plan.window else min(n, self.max_task_steps)
        task = dask.delayed(window, nout=3)
        counting = self.record == "rates"
        sent: list[list[list[Any]]] = []  # per window, per chunk: the spike parts that chunk is still to deliver
        outs: list[Any] = []
        last: list[Any] = [None] * n_chunks  # per chunk: its last window task (whole output)
        for w, s in enumerate(range(s0, s0 + n, width)):
            k = min(width, s0 + n - s)
            due = sent[w - self.overlap] if w >= self.overlap else [None] * n_chunks
            held = [(1, last[c]) if last[c] is not None else (5, *blocks[c]) for c in range(n_chunks)]
            last = [task(self.fns.window, self._args[c], conns[c], s, k, self._sample[c], counting, n_chunks > 1,
                         *held[c], *(due[c] or ())) for c in range(n_chunks)]
            parts = [out[2] for out in last]
            if n_chunks == 1:
                sent.append([[]])
            elif self.exchange == "direct":
                sent.append([parts[:c] + parts[c + 1:] for c in range(n_chunks)])
            else:
                sent.append([[dask.delayed(self.fns.exchange or _gather)(*parts)]] * n_chunks)
            outs += [out[1] for out in last]
        pending = sent[max(0, len(sent) - self.overlap):]
        if n_chunks > 1 and pending:
            final = dask.delayed(deliver, nout=5)
            blocks = [tuple(final(self.fns.deliver, self._args[c], conns[c], last[c],
                                  *(p for win in pending for p in win[c]))) for c in range(n_chunks)]
        else:
            blocks = [tuple(out[0][i] for i in range(5)) for out in last]
        if counting:
            self._out = {"counts": Gathered([o[3] for o in outs], partial(sum_counts, n_chunks))}
        else:
            self._out = {"spikes": Gathered(outs, partial(merge_spikes, n_chunks))}
        if any(x is not None for x in self._sample):
            self._out["samples"] = Gathered([o[2] for o in outs], _gather_samples)
        return state.update(_assemble(self.plan, blocks, self.fns))

    def outputs(self, state: State) -> dict[str, Any]:
        return dict(self._out)
