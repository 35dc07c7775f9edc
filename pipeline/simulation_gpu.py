"""GPU chunk tasks of the spiking Step: each chunk's state lives as cupy arrays on the worker that owns it.

The graph is the CPU's (``pipeline.simulation``); only the per-chunk functions differ. A window
task delivers the other chunks' spikes of an earlier window into the chunk's ring buffer
(``kernels.network_gpu.deliver_spikes_gpu``), advances the chunk with
``kernels.network_gpu.run_window_gpu`` and returns the chunk's arrays, its spikes on the device for
the other chunks (the only data that crosses chunks; the cluster's protocol moves them, over NVLink
with ``ucx``) and what the driver records, copied to the host.
The arrays are advanced in place: a window's inputs are read by that window's task alone (the Runner
submits a batch's state and outputs as one graph, so no task runs twice), and copying a GPU's whole
state every window would halve the network it holds.

Layout on the device: the ring buffer is slot-major in memory behind its ``(neuron, slot,
receptor)`` shape (the neuron update reads it coalesced) and holds one receptor when no input
reaches the second; ``u`` and ``g`` of chunks whose models do not use them are zero-stride views of
one element. :func:`host_block` turns a chunk back into the CPU layout for checkpoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurochunk.kernels.neurons import N_RECEPTORS

from .network import Plan

__all__ = ["chunk_args", "init_chunk", "window_task", "deliver_task", "host_block", "ring_receptors",
           "exchange_on_device"]

_USES_U, _USES_G = {3}, {0, 1}  # izhikevich; lif_coba and lif_cuba_exp


def ring_receptors(plan: Plan) -> int:
    """Receptors the GPU ring buffer holds: 1 when no projection or background input targets the second."""
    used = {int(r) for r in plan.pint[:, 5]} | {int(r) for lam, _, r in plan.pois if lam > 0}
    return 1 if max(used, default=0) == 0 else N_RECEPTORS


def chunk_args(plan: Plan, c: int, cpu_args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The CPU task arguments plus the chunk's device layout: (receptors, uses u, uses g)."""
    models = {int(plan.models[k]) for k, _, _ in plan.segments(c)}
    return (*cpu_args, ring_receptors(plan), bool(models & _USES_U), bool(models & _USES_G))


def _cp() -> Any:
    import cupy as cp

    return cp


def _placeholder(cp: Any, shape: tuple[int, ...]) -> Any:
    return cp.broadcast_to(cp.zeros((1,) * len(shape), cp.float32), shape)


def _device(args: tuple[Any, ...], v: Any, u: Any, g: Any, ref: Any, ring: Any) -> tuple[Any, ...]:
    """The chunk in the device layout (a chunk restored from a checkpoint comes in the CPU's)."""
    cp = _cp()
    n_rec, uses_u, uses_g = args[6:9]
    if isinstance(ring, cp.ndarray) and ring.strides[0] == ring.itemsize and ring.shape[2] == n_rec:
        return v, u, g, ref, ring
    v, u, g, ref, ring = (host_block(x) for x in (v, u, g, ref, ring))
    n = len(v)
    if n_rec < ring.shape[2] and ring[:, :, n_rec:].any():
        raise ValueError("the checkpoint's ring buffer holds input for a receptor this network does not use")
    work = cp.asarray(np.ascontiguousarray(ring[:, :, :n_rec].transpose(1, 2, 0)))
    return (cp.asarray(v), cp.asarray(u) if uses_u else _placeholder(cp, (n,)),
            cp.asarray(g) if uses_g else _placeholder(cp, (n, 2)), cp.asarray(ref), work.transpose(2, 0, 1))


def init_chunk(plan: Plan, c: int) -> tuple[Any, ...]:
    """Chunk ``c`` at step 0 on this worker's GPU: the CPU's initial values (same keyed draws), device layout."""
    from .simulation import initial_values

    cp = _cp()
    args = chunk_args(plan, c, ())
    n_rec, uses_u, uses_g = args[:3]
    v, u, g = initial_values(plan, c, uses_u, uses_g)
    n = len(v)
    ring = cp.zeros((plan.n_slots, n_rec, n), cp.int32).transpose(2, 0, 1)
    return (cp.asarray(v), cp.asarray(u) if uses_u else _placeholder(cp, (n,)),
            cp.asarray(g) if uses_g else _placeholder(cp, (n, 2)), cp.zeros(n, cp.int32), ring)


def _run(args: tuple[Any, ...], v: Any, u: Any, g: Any, ref: Any, ring: Any, s0: int, n_steps: int,
         ordered: bool = True) -> tuple[Any, Any]:
    from neurochunk.kernels.network_gpu import run_window_gpu

    tables, lo, seed, pint, pflt, block = args[:6]
    uu = u[:1] if u.strides[0] == 0 else u
    gg = g[:1] if g.strides[0] == 0 else g
    return run_window_gpu(tables, v, uu, gg, ref, ring, s0, n_steps, lo, seed, pint, pflt, block, ordered=ordered)


def _incoming(args: tuple[Any, ...], ring: Any, incoming: Any) -> None:
    """Deliver the other chunks' spikes: ``None``, one ``(steps, gids)`` or a list of them (host or device).

    ``kernels.network_gpu.deliver_spikes_gpu`` delivers them in one call: its blocks engine for networks
    under 2**31 neurons, one thread per (spike, projection, target block) for larger ones.
    """
    from neurochunk.kernels.network_gpu import deliver_spikes_gpu

    from .simulation import spike_parts

    spikes = spike_parts(incoming, _cp())
    if spikes is None:
        return
    steps, gids = spikes
    tables, lo, seed, pint, pflt, block = args[:6]
    hi = lo + ring.shape[0]
    deliver_spikes_gpu(tables, steps, gids, lo, hi, ring, seed, pint, pflt, block, skip=(lo, hi))


def _counts(cp: Any, steps: Any, gids: Any, offsets: np.ndarray, s0: int, n_steps: int) -> np.ndarray:
    """Spikes per (step of the window, population), int64 on the host."""
    n_pops = len(offsets) - 1
    pop = cp.searchsorted(cp.asarray(offsets), gids, side="right") - 1
    c = cp.bincount((steps - s0) * n_pops + pop, minlength=n_steps * n_pops)
    return cp.asnumpy(c).astype(np.int64).reshape(n_steps, n_pops)


def _narrow(cp: Any, steps: Any, gids: Any, n_total: int, last_step: int) -> tuple[Any, Any]:
    """Spikes as int32 where they fit: half the bytes every other chunk receives (still on the device)."""
    return (steps.astype(cp.int32 if last_step < 2**31 else cp.int64, copy=False),
            gids.astype(cp.int32 if n_total < 2**31 else cp.int64, copy=False))


def exchange_on_device() -> bool:
    """Whether a window's spikes for the other chunks stay on the GPU: in a UCX worker, or outside a worker.

    UCX moves device arrays GPU to GPU (NVLink within a host). Over TCP the task copies them to the host
    itself: a copy issued later by the worker's communication thread would wait on the default stream
    for the kernels of the next window.
    """
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        return True
    return address.startswith(("ucx://", "ucxx://"))


def window_task(args: tuple[Any, ...], conn: tuple[np.ndarray, ...], v: Any, u: Any, g: Any, ref: Any, ring: Any,
                incoming: Any, s0: int, n_steps: int,
                sample: tuple[np.ndarray, int] | None = None, count: bool = False,
                share: bool = True) -> tuple[Any, ...]:
    """The GPU twin of ``pipeline.simulation._window_task`` (same arguments and outputs; arrays on the GPU).

    The record output holds host copies: the spikes (``None`` with ``count``, which gives the window's
    spikes per (step, population) counted on the GPU instead), samples and counts. The exchange output,
    the spikes the other chunks deliver, stays on this GPU where :func:`exchange_on_device` (``None``
    unless ``share``: no other chunk reads it).
    """
    cp = _cp()
    n_total = int(args[0][4][-1])
    v, u, g, ref, ring = _device(args, v, u, g, ref, ring)
    _incoming(args, ring, incoming)
    ordered = not count  # counts and deliveries need no order within a step
    if sample is None or len(sample[0]) == 0:
        steps, gids = _run(args, v, u, g, ref, ring, s0, n_steps, ordered)
        samples = None
    else:
        idx, every = sample
        local = cp.asarray(idx - args[1])
        parts, times, values = [], [], []
        s, end = s0, s0 + n_steps
        while s < end:
            k = min(end, (s // every + 1) * every) - s
            parts.append(_run(args, v, u, g, ref, ring, s, k, ordered))
            s += k
            if s % every == 0:
                times.append(s)
                values.append(cp.asnumpy(v[local]))
        steps = cp.concatenate([p[0] for p in parts])
        gids = cp.concatenate([p[1] for p in parts])
        samples = (np.array(times, np.int64), idx, np.array(values, np.float32).reshape(len(times), len(idx)))
    on_device = exchange_on_device()
    spikes = _narrow(cp, steps, gids, n_total, s0 + n_steps) if share or not count else None
    host = None
    if not count or (share and not on_device):
        host = (cp.asnumpy(spikes[0]), cp.asnumpy(spikes[1]))
    if count:
        record = (None, None, samples, _counts(cp, steps, gids, np.asarray(args[0][4], np.int64), s0, n_steps))
    else:
        record = (*host, samples)
    exchange = None if not share else spikes if on_device else host
    cp.cuda.get_current_stream().synchronize()  # the exchange output is complete before another worker reads it
    return v, u, g, ref, ring, record, exchange


def deliver_task(args: tuple[Any, ...], conn: tuple[np.ndarray, ...], ring: Any, incoming: Any) -> Any:
    """The last window's spikes of the other chunks into the ring buffer (the end of a batch)."""
    cp = _cp()
    if not isinstance(ring, cp.ndarray):
        raise TypeError("deliver_task expects the chunk's ring buffer on the GPU")
    _incoming(args, ring, incoming)
    cp.cuda.get_current_stream().synchronize()  # the batch's time then includes its last kernels
    return ring


def host_block(x: Any, receptors: int | None = None) -> np.ndarray:
    """One state block in the CPU layout on the host (a ring buffer padded to ``receptors``)."""
    if type(x).__module__.split(".")[0] == "cupy":
        cp = _cp()
        if x.ndim == 3:  # the slot-major ring: copy its contiguous memory, transpose on the host
            x = cp.asnumpy(cp.ascontiguousarray(x.transpose(1, 2, 0))).transpose(2, 0, 1)
        elif 0 in x.strides:
            x = np.zeros(x.shape, x.dtype)
        else:
            x = cp.asnumpy(x)
    x = np.asarray(x)
    if receptors is not None and x.shape[2] < receptors:
        pad = np.zeros((*x.shape[:2], receptors - x.shape[2]), x.dtype)
        x = np.concatenate([x, pad], axis=2)
    return np.ascontiguousarray(x)
