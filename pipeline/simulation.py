"""Spiking simulation as lazy Dask graphs: initial State, the windowed Step, connectivity.

One task advances one neuron chunk through one exchange window (the
smallest synaptic delay; the whole batch when one chunk holds the network)
with the numba window kernel. After each window the chunks' spikes are
gathered into one small array that every chunk's next task reads, so a batch
graph has O(chunks) edges per window. Each batch ends with every spike
delivered into the ring buffers, so the State between batches (v, u, g,
refractory counters, ring buffers, step) is all a checkpoint needs.
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

__all__ = ["initial_state", "SpikingStep", "STATE_DIMS", "SpikeRecorder", "simulate", "read_spikes", "spike_stats",
           "build_connectivity", "connectivity_loaders", "load_edge_list", "EMPTY_CONN"]

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


# -- stored connectivity -------------------------------------------------------------------------------------------

def _materialize(plan: Plan, p: int, c: int) -> tuple[np.ndarray, ...]:
    from neurochunk.kernels.procedural import I_POST_LO, materialize

    lo, hi = plan.chunks[c]
    ptr, cols, wq, dl = materialize(plan.pint, plan.pflt, p, plan.seed, plan.net.conn_block, lo, hi)
    post_lo = int(plan.pint[p, I_POST_LO])
    base = max(lo, post_lo) - post_lo
    weights = (wq.astype(np.float64) * plan.pflt[p, 6]).astype(np.float32)
    return ptr, cols.astype(np.int64) + base, weights, dl


def build_connectivity(plan: Plan, url: str, client: Any = None) -> list[str]:
    """Materialise every projection into ``url/<projection>`` in parallel (blocks written in order).

    The synapses are those the procedural mode generates on the same seed.
    Returns the projection dataset URLs.
    """
    from neurochunk.stores.connectivity import append_block, create_projection

    urls = []
    n_chunks = len(plan.chunks)
    for p, proj in enumerate(plan.net.projections):
        target = f"{str(url).rstrip('/')}/{proj.name}"
        if proj.rule == "edge_list":
            if not _complete(target, n_chunks):
                raise ValueError(f"projection {proj.name!r}: edge_list synapses must be loaded into {target} first "
                                 f"(pipeline.simulation.load_edge_list)")
            urls.append(target)
            continue
        ds = create_projection(target, n_pre=int(plan.pint[p, 2]), n_post=int(plan.pint[p, 4]), n_blocks=n_chunks,
                               attrs={"projection": proj.name, "seed": plan.seed, "rule": proj.rule,
                                      "chunks": [list(c) for c in plan.chunks], "quantum": float(plan.pflt[p, 6])})
        width = max(1, len(client.scheduler_info()["workers"]) * 2) if client is not None else 2
        for first in range(0, n_chunks, width):
            parts = [dask.delayed(_materialize)(plan, p, c) for c in range(first, min(n_chunks, first + width))]
            blocks = client.compute(parts, sync=True) if client is not None else dask.compute(*parts)
            for k, blk in enumerate(blocks):
                append_block(ds, first + k, *blk)
        urls.append(target)
    return urls


def load_edge_list(plan: Plan, projection: str, url: str, pre: Any, post: Any, weight: Any, delay_ms: Any = None,
                   piece: int = 1 << 22) -> str:
    """Load a user's edges (pre, post ids within their populations; weights; delays in ms) into ``url/<projection>``.

    The arrays may be numpy, Zarr or dask arrays larger than memory: they are read ``piece`` edges at a
    time, once per post chunk, so memory holds one post chunk's synapses. Weights are rounded to the
    receptor's quantum; delays must lie in the projection's declared range.
    """
    from neurochunk.stores.connectivity import append_block, create_projection

    names = [p.name for p in plan.net.projections]
    if projection not in names:
        raise ValueError(f"no projection {projection!r}; projections: {names}")
    p = names.index(projection)
    if plan.net.projections[p].rule != "edge_list":
        raise ValueError(f"projection {projection!r} has rule {plan.net.projections[p].rule!r}, not 'edge_list'")
    n_edges = int(pre.shape[0])
    if not (post.shape[0] == weight.shape[0] == n_edges and (delay_ms is None or delay_ms.shape[0] == n_edges)):
        raise ValueError(f"projection {projection!r}: pre, post, weight and delay_ms must have one entry per edge")
    n_pre, post_lo, n_post = (int(plan.pint[p, k]) for k in (2, 3, 4))
    q, d_lo, d_hi = float(plan.pflt[p, 6]), int(plan.pflt[p, 4]), int(plan.pflt[p, 5])
    target = f"{str(url).rstrip('/')}/{projection}"
    ds = create_projection(target, n_pre=n_pre, n_post=n_post, n_blocks=len(plan.chunks),
                           attrs={"projection": projection, "rule": "edge_list", "quantum": q,
                                  "chunks": [list(c) for c in plan.chunks]})
    for c, (lo, hi) in enumerate(plan.chunks):
        a, b = max(lo, post_lo) - post_lo, min(hi, post_lo + n_post) - post_lo
        kept: list[tuple[np.ndarray, ...]] = []
        for s in range(0, n_edges if a < b else 0, piece):
            sl = slice(s, min(n_edges, s + piece))
            i, j = np.asarray(pre[sl], np.int64), np.asarray(post[sl], np.int64)
            if (i < 0).any() or (i >= n_pre).any() or (j < 0).any() or (j >= n_post).any():
                raise ValueError(f"projection {projection!r}: edges {sl.start}..{sl.stop} hold ids outside "
                                 f"[0, {n_pre}) x [0, {n_post})")
            sel = (j >= a) & (j < b)
            w = np.asarray(weight[sl], np.float64)[sel]
            d = (np.full(int(sel.sum()), d_lo, np.int64) if delay_ms is None
                 else np.rint(np.asarray(delay_ms[sl], np.float64)[sel] / plan.dt).astype(np.int64) + 1)
            if len(d) and (d.min() < d_lo or d.max() > d_hi):
                raise ValueError(f"projection {projection!r}: edge delays outside the declared range "
                                 f"{plan.net.projections[p].delay!r} ms")
            kept.append((i[sel], j[sel], (np.rint(w / q) * q).astype(np.float32), d.astype(np.int32)))
        i, j, w, d = (np.concatenate([k[x] for k in kept]) if kept else np.zeros(0, t)
                      for x, t in enumerate((np.int64, np.int64, np.float32, np.int32)))
        order = np.argsort(i, kind="stable")
        indptr = np.zeros(n_pre + 1, np.int64)
        np.add.at(indptr, i + 1, 1)
        append_block(ds, c, np.cumsum(indptr), j[order], w[order], d[order])
    return target


def _load_chunk(plan: Plan, urls: list[str], c: int) -> tuple[np.ndarray, ...]:
    from neurochunk.stores import Dataset
    from neurochunk.stores.connectivity import read_block

    lo, _ = plan.chunks[c]
    ptrs, offs, cols, wqs, dls = [], [], [], [], []
    n_ptr = n_syn = 0
    for p, u in enumerate(urls):
        ptr, idx, w, d = read_block(Dataset.open(u, kind="connectivity"), c)
        offs.append(n_ptr)
        ptrs.append(ptr + n_syn)
        n_ptr += len(ptr)
        n_syn += len(idx)
        cols.append((idx.astype(np.int64) + int(plan.pint[p, 3]) - lo).astype(np.int32))
        wqs.append(np.rint(w.astype(np.float64) / plan.pflt[p, 6]).astype(np.int32))
        dls.append(d.astype(np.int32))
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return (cat(ptrs, np.int64) if ptrs else np.zeros(1, np.int64), np.array(offs, np.int64), cat(cols, np.int32),
            cat(wqs, np.int32), cat(dls, np.int32))


def connectivity_loaders(plan: Plan, urls: list[str]) -> list[Any]:
    """One delayed reader per chunk of the stored synapses it receives (streamed from the store each batch)."""
    return [dask.delayed(_load_chunk, pure=True)(plan, list(urls), c) for c in range(len(plan.chunks))]


# -- recording, checkpoints, resume ---------------------------------------------------------------------------------

class SpikeRecorder:
    """Append a run's spikes to a ``spikes`` dataset (``t`` in ms, ``neuron`` ids; chunked by time)."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    @classmethod
    def create(cls, url: str, plan: Plan, *, chunk: int = 1 << 18, **opts: Any) -> SpikeRecorder:
        from neurochunk.stores import Dataset

        pops = {p.name: [int(plan.offsets[k]), int(plan.offsets[k + 1])] for k, p in enumerate(plan.net.populations)}
        ds = Dataset.create(url, "spikes", attrs={"dt": plan.dt, "populations": pops, "n_neurons": plan.n,
                                                  "n_spikes": 0, "steps": 0}, overwrite=True, **opts)
        ds.create_array("t", (0,), np.float64, chunks=(chunk,), dims=("spike",))
        ds.create_array("neuron", (0,), np.int64, chunks=(chunk,), dims=("spike",))
        return cls(ds)

    def start_samples(self, ids: np.ndarray, every_ms: float) -> None:
        """Arrays for sampled membrane potentials: ``v`` (sample, recorded), ``v_t`` (ms), ``recorded`` (ids)."""
        ids = np.unique(np.asarray(ids, np.int64))
        self.ds.create_array("recorded", ids.shape, np.int64, chunks=(max(1, len(ids)),), dims=("recorded",),
                             overwrite=True)
        self.ds["recorded"][...] = ids
        self.ds.create_array("v", (0, len(ids)), np.float32, chunks=(4096, max(1, len(ids))),
                             dims=("sample", "recorded"), overwrite=True, attrs={"units": "mV", "every_ms": every_ms})
        self.ds.create_array("v_t", (0,), np.float64, chunks=(1 << 16,), dims=("sample",), overwrite=True)
        self.ds.update_attrs(n_samples=0)

    def append_samples(self, steps: np.ndarray, values: np.ndarray) -> None:
        if len(steps):
            self.ds["v_t"].append(steps.astype(np.float64) * float(self.ds.attrs["dt"]))
            self.ds["v"].append(values.astype(np.float32), axis=0)
        self.ds.update_attrs(n_samples=int(self.ds.attrs.get("n_samples", 0)) + len(steps))

    @property
    def n_spikes(self) -> int:
        return int(self.ds.attrs["n_spikes"])

    def append(self, steps: np.ndarray, gids: np.ndarray, upto_step: int) -> None:
        if len(steps):
            self.ds["t"].append(steps.astype(np.float64) * float(self.ds.attrs["dt"]))
            self.ds["neuron"].append(gids.astype(np.int64))
        self.ds.update_attrs(n_spikes=self.n_spikes + len(steps), steps=int(upto_step))

    def write_rates(self, bin_ms: float = 1.0) -> None:
        """Population rates (Hz) in ``bin_ms`` bins as array ``rates`` (bin, population), streamed by chunk."""
        attrs = self.ds.attrs
        pops = list(attrs["populations"].values())
        edges = np.array([lo for lo, _ in pops] + [pops[-1][1]], np.int64)
        sizes = np.diff(edges).astype(np.float64)
        n_bins = max(1, int(np.ceil(attrs["steps"] * attrs["dt"] / bin_ms)))
        counts = np.zeros((n_bins, len(pops)), np.int64)
        n, step = int(attrs["n_spikes"]), self.ds["t"].chunks[0]
        for a in range(0, n, step):
            t = np.asarray(self.ds["t"][a:min(n, a + step)])
            g = np.asarray(self.ds["neuron"][a:min(n, a + step)])
            b = np.minimum((t / bin_ms).astype(np.int64), n_bins - 1)
            np.add.at(counts, (b, np.searchsorted(edges, g, side="right") - 1), 1)
        rates = (counts / sizes / (bin_ms * 1e-3)).astype(np.float32)
        self.ds.create_array("rates", rates.shape, np.float32, chunks=(min(n_bins, 1 << 16), len(pops)),
                             dims=("bin", "population"), overwrite=True,
                             attrs={"bin_ms": bin_ms, "populations": list(attrs["populations"])})
        self.ds["rates"][...] = rates

    def truncate(self, n_spikes: int, step: int, n_samples: int | None = None) -> None:
        """Forget spikes recorded after a checkpoint (a run killed between recording and committing)."""
        for name in ("t", "neuron"):
            self.ds[name].resize((n_spikes,))
        self.ds.update_attrs(n_spikes=int(n_spikes), steps=int(step))
        if "v" in self.ds:
            n = int(n_samples if n_samples is not None else 0)
            self.ds["v_t"].resize((n,))
            self.ds["v"].resize((n, self.ds["v"].shape[1]))
            self.ds.update_attrs(n_samples=n)


def simulate(net: Any, duration_ms: float, *, spikes_url: str, client: Any = None, checkpoint_url: str | None = None,
             checkpoint_every_ms: float = 0.0, resume: bool = False, batch_ms: float = 100.0,
             connectivity_url: str | None = None, progress: bool = True, on_batch: Any = None,
             record_v: Any = None, record_every_ms: float = 1.0) -> dict[str, Any]:
    """Run ``net`` until ``duration_ms`` (from the start, or from its last checkpoint with ``resume``).

    Spikes go to ``spikes_url`` (and, at the end, population rates in 1 ms bins as its ``rates``
    array); with ``checkpoint_url`` the full State is
    committed every ``checkpoint_every_ms`` (after the batch's spikes are
    recorded) and at the end. ``record_v`` (neuron ids) samples their membrane potential every
    ``record_every_ms`` into the spikes dataset's ``v`` array. Returns a summary with the Runner's reports.
    """
    from neurochunk.stores import Dataset

    from .runner import Runner

    plan = net.plan() if hasattr(net, "plan") else net
    total = int(round(duration_ms / plan.dt))
    loaders = None
    if plan.net.connectivity == "stored":
        if connectivity_url is None:
            raise ValueError("connectivity: stored needs a connectivity_url to write the synapses to")
        names = [f"{str(connectivity_url).rstrip('/')}/{p.name}" for p in plan.net.projections]
        if not (resume and all(_complete(u, len(plan.chunks)) for u in names)):
            names = build_connectivity(plan, connectivity_url, client)
        loaders = connectivity_loaders(plan, names)
    ckpt = None
    state = None
    if checkpoint_url is not None:
        try:
            ckpt = Dataset.open(checkpoint_url, kind="neuron_state", mode="r+") if resume else None
        except FileNotFoundError:
            ckpt = None
        if ckpt is not None and ckpt.commits.latest() is not None:
            state = State.restore(ckpt)
            recorder = SpikeRecorder(Dataset.open(spikes_url, kind="spikes", mode="r+"))
            recorder.truncate(int(state.scalars["n_spikes"]), int(state.scalars["step"]),
                              int(state.scalars.get("n_samples", 0)))
        if ckpt is None:
            ckpt = Dataset.create(checkpoint_url, "neuron_state", attrs={"dt": plan.dt, "model": "network"},
                                  overwrite=True)
    every_v = max(1, int(round(record_every_ms / plan.dt)))
    if state is None:
        state = initial_state(plan)
        recorder = SpikeRecorder.create(spikes_url, plan)
        if record_v is not None:
            recorder.start_samples(record_v, every_v * plan.dt)
    every = int(round(checkpoint_every_ms / plan.dt)) if checkpoint_every_ms else 0
    batch = max(1, int(round(batch_ms / plan.dt)))
    if every:
        batch = min(batch, every)
    last = {"ckpt": int(state.scalars["step"])}

    def record(report: Any, st: State) -> None:
        steps, gids = report.outputs["spikes"]
        now = report.first_step + report.n_steps
        recorder.append(steps, gids, now)
        if report.outputs.get("samples") is not None:
            recorder.append_samples(*report.outputs["samples"])
        if ckpt is not None and ((every and now - last["ckpt"] >= every) or now >= total):
            st.update(n_spikes=recorder.n_spikes,
                      n_samples=int(recorder.ds.attrs.get("n_samples", 0))).checkpoint(ckpt, f"step-{now}")
            last["ckpt"] = now
        if on_batch is not None:
            on_batch(report, st)

    state = state.persist(client)  # the first batch's two graphs (state, spikes) then share plain inputs
    step = SpikingStep(plan, loaders, batch_steps=batch,
                       sample=None if record_v is None else (record_v, every_v))
    runner = Runner(step, state, client=client, on_batch=record, progress=progress)
    remaining = total - runner.steps_done
    if remaining > 0:
        runner.run(remaining)
    recorder.write_rates()
    return {"spikes_url": str(recorder.ds.url), "steps": runner.steps_done, "n_spikes": recorder.n_spikes,
            "reports": runner.reports, "plan": plan, "state": runner.state}


def _complete(url: str, n_blocks: int) -> bool:
    from neurochunk.stores import Dataset

    try:
        return int(Dataset.open(url, kind="connectivity").attrs["blocks_written"]) == n_blocks
    except (FileNotFoundError, KeyError):
        return False


def read_spikes(url: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(t ms, neuron ids, attributes)`` of a spikes dataset (in memory)."""
    from neurochunk.stores import Dataset

    ds = Dataset.open(url, kind="spikes")
    n = int(ds.attrs["n_spikes"])
    return np.asarray(ds["t"][:n]), np.asarray(ds["neuron"][:n]), ds.attrs


def spike_stats(t: np.ndarray, gids: np.ndarray, populations: dict[str, list[int]], duration_ms: float,
                skip_ms: float = 100.0) -> dict[str, Any]:
    """Mean rate (Hz) per population and overall, and the mean ISI CV (spikes after ``skip_ms``)."""
    out: dict[str, Any] = {}
    n = max(hi for _, hi in populations.values())
    out["rate"] = len(t) / n / (duration_ms / 1e3)
    for name, (lo, hi) in populations.items():
        out[f"rate_{name}"] = float(((gids >= lo) & (gids < hi)).sum()) / (hi - lo) / (duration_ms / 1e3)
    keep = t >= skip_ms
    tt, ii = t[keep], gids[keep]
    order = np.lexsort((tt, ii))
    tt, ii = tt[order], ii[order]
    isi = np.diff(tt)
    same = ii[1:] == ii[:-1]
    isi, owner = isi[same], ii[1:][same]
    cvs = []
    if len(isi):
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], len(owner)], strict=True):
            x = isi[a:b]
            if len(x) >= 2 and x.mean() > 0:
                cvs.append(x.std() / x.mean())
    out["cv"] = float(np.mean(cvs)) if cvs else None
    return out
