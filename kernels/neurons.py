"""Neuron models and the window kernel that advances one chunk by many steps.

Models (units: ms, mV, nS, pF, pA):

- ``lif_coba``: leaky integrate-and-fire with conductance synapses ``ge``/``gi``
  (exponential decay), ``C dv/dt = gL (EL - v) + ge (Ee - v) + gi (Ei - v) + I_ext``; Euler.
- ``lif_cuba_exp``: LIF with exponential current synapses ``Ie``/``Ii`` in mV,
  ``tau_m dv/dt = EL - v + Ie + Ii + RI_ext``; Euler.
- ``lif_cuba_delta``: LIF whose synapses jump ``v``; exact integration. As in Brian2,
  ``v`` is clamped while refractory: input arriving then is lost.
- ``izhikevich``: Izhikevich (2003) with delta synapses on ``v``; Euler.

Step order follows Brian2: arrivals, integrate (``v`` frozen while refractory),
threshold (``v > V_th`` and not refractory), reset, deliver. A spike of step
``s`` with delay ``d`` steps is added at the start of step ``s + d``: ``d = 1``
is Brian2's delay 0 (the conductance jumps after the threshold of step ``s``).
State is float32; synaptic input arrives as integers in units of a quantum
(see ``kernels.procedural``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numba
import numpy as np

from .procedural import deliver_many
from .rng import STREAM_POISSON, mix64, poisson_table, stream_key

__all__ = ["MODELS", "DEFAULTS", "RECEPTORS", "STATE_VARS", "pack_params", "run_window", "N_RECEPTORS"]

MODELS = {"lif_coba": 0, "lif_cuba_exp": 1, "lif_cuba_delta": 2, "izhikevich": 3}
N_RECEPTORS = 2
RECEPTORS = {"lif_coba": ("ge", "gi"), "lif_cuba_exp": ("Ie", "Ii"), "lif_cuba_delta": ("v",), "izhikevich": ("v",)}
# initialisable variables: v, u and the two synaptic variables g[:, 0], g[:, 1]
STATE_VARS = {"lif_coba": ("v", "ge", "gi"), "lif_cuba_exp": ("v", "Ie", "Ii"), "lif_cuba_delta": ("v",),
              "izhikevich": ("v", "u")}
DEFAULTS: dict[str, dict[str, float]] = {
    "lif_coba": {"tau_m": 20.0, "g_L": 10.0, "E_L": -60.0, "V_th": -50.0, "V_reset": -60.0, "t_ref": 5.0,
                 "E_e": 0.0, "E_i": -80.0, "tau_e": 5.0, "tau_i": 10.0, "I_ext": 0.0},
    "lif_cuba_exp": {"tau_m": 20.0, "E_L": -49.0, "V_th": -50.0, "V_reset": -60.0, "t_ref": 5.0,
                     "tau_e": 5.0, "tau_i": 10.0, "RI_ext": 0.0},
    "lif_cuba_delta": {"tau_m": 20.0, "E_L": 0.0, "V_th": 20.0, "V_reset": 10.0, "t_ref": 2.0, "RI_ext": 0.0},
    "izhikevich": {"a": 0.02, "b": 0.2, "c": -65.0, "d": 8.0, "v_peak": 30.0, "I_ext": 0.0, "t_ref": 0.0},
}


def pack_params(model: str, params: Mapping[str, Any], dt: float) -> tuple[int, np.ndarray, int]:
    """``(model id, float32 parameter vector, refractory steps)`` for the window kernel."""
    if model not in MODELS:
        raise ValueError(f"unknown neuron model {model!r}; known: {', '.join(MODELS)}")
    unknown = set(params) - set(DEFAULTS[model])
    if unknown:
        raise ValueError(f"model {model!r} has no parameter(s) {sorted(unknown)}; it has {sorted(DEFAULTS[model])}")
    p = {**DEFAULTS[model], **params}
    if model == "lif_coba":
        c_m = p["tau_m"] * p["g_L"]
        vec = [dt / c_m, p["g_L"], p["E_L"], p["V_th"], p["V_reset"], p["E_e"], p["E_i"], dt / p["tau_e"],
               dt / p["tau_i"], p["I_ext"]]
    elif model == "lif_cuba_exp":
        vec = [dt / p["tau_m"], p["E_L"], p["V_th"], p["V_reset"], dt / p["tau_e"], dt / p["tau_i"], p["RI_ext"]]
    elif model == "lif_cuba_delta":
        decay = math.exp(-dt / p["tau_m"])
        vec = [decay, p["E_L"], p["V_th"], p["V_reset"], (1.0 - decay) * p["RI_ext"]]
    else:
        vec = [dt, p["a"], p["b"], p["c"], p["d"], p["v_peak"], p["I_ext"]]
    out = np.zeros(12, np.float32)
    out[: len(vec)] = vec
    return MODELS[model], out, int(round(p["t_ref"] / dt))


def run_window(models, prms, ref_steps, quanta, offsets, lams, pois_cdf, pois_wq, pois_r,
               v, u, g, ref, ring, s0, n_steps, lo, seed, pint, pflt, block, ptr_all, ptr_off, cols, cwq, cdl):
    """Advance neurons ``[lo, lo + len(v))`` from step ``s0`` by ``n_steps``, in place.

    ``ring`` is the state's ``(neuron, slot, receptor)`` ring buffer; see :func:`run_window_slot_major`.
    """
    work = np.ascontiguousarray(ring.transpose(1, 2, 0))
    out = run_window_slot_major(models, prms, ref_steps, quanta, offsets, lams, pois_cdf, pois_wq, pois_r, v, u, g,
                                ref, work, s0, n_steps, lo, seed, pint, pflt, block, ptr_all, ptr_off, cols, cwq, cdl)
    ring[...] = work.transpose(2, 0, 1)
    return out


@numba.njit(nogil=True, cache=True)
def run_window_slot_major(models, prms, ref_steps, quanta, offsets, lams, pois_cdf, pois_wq, pois_r,
               v, u, g, ref, ring, s0, n_steps, lo, seed, pint, pflt, block, ptr_all, ptr_off, cols, cwq, cdl):
    """Advance neurons ``[lo, lo + len(v))`` from step ``s0`` by ``n_steps``, in place; ``ring`` is slot-major.

    Per-population tables (``models``, ``prms``, ``pois_cdf`` (Poisson tables), ...; population ``k`` holds
    global neurons ``offsets[k]:offsets[k + 1]``) let a chunk span populations.
    Spikes of the chunk are delivered at once to the chunk's own neurons (other
    chunks get them at the next exchange). Returns ``(steps, neuron ids)`` of the
    window's spikes, in step order.
    """
    n = v.shape[0]
    n_slots = ring.shape[0]
    hi = lo + n
    cap = max(256, n * n_steps // 100)
    out_s = np.empty(cap, np.int64)
    out_i = np.empty(cap, np.int64)
    n_out = 0
    flags = np.zeros(n, np.bool_)
    for s in range(s0, s0 + n_steps):
        slot = s % n_slots
        first_spike = n_out
        for pop in range(models.shape[0]):
            a = max(lo, offsets[pop])
            b = min(hi, offsets[pop + 1])
            if a >= b:
                continue
            i0, i1 = a - lo, b - lo
            if lams[pop] > 0.0:
                _poisson_input(ring, slot, pois_r[pop], pois_wq[pop], pois_cdf[pop], seed, pop, lo, i0, i1, s)
            q0, q1, prm, m = quanta[pop, 0], quanta[pop, 1], prms[pop], models[pop]
            if m == 0:
                _lif_coba(prm, q0, q1, ref_steps[pop], v, g, ref, ring, slot, i0, i1, flags)
            elif m == 1:
                _lif_cuba_exp(prm, q0, q1, ref_steps[pop], v, g, ref, ring, slot, i0, i1, flags)
            elif m == 2:
                _lif_cuba_delta(prm, q0, q1, ref_steps[pop], v, ref, ring, slot, i0, i1, flags)
            else:
                _izhikevich(prm, q0, q1, ref_steps[pop], v, u, ref, ring, slot, i0, i1, flags)
        n_new = _count(flags)
        if n_out + n_new > cap:
            cap = max(2 * cap, n_out + n_new)
            out_s, out_i = _grown(out_s, n_out, cap), _grown(out_i, n_out, cap)
        n_out = _collect(flags, s, lo, out_s, out_i, n_out)
        # deliver after the whole chunk has stepped: a spike never reaches a neuron within its own step
        if n_out > first_spike:
            deliver_many(out_s[first_spike:n_out], out_i[first_spike:n_out], -1, -1, pint, pflt, seed, block, lo, hi,
                         ring, n_slots, ptr_all, ptr_off, cols, cwq, cdl)
    return out_s[:n_out].copy(), out_i[:n_out].copy()


_kernel = numba.njit(nogil=True, cache=True)


@_kernel
def _count(flags):
    c = 0
    for f in flags:
        c += f
    return c


@_kernel
def _grown(a, n, cap):
    b = np.empty(cap, a.dtype)
    b[:n] = a[:n]
    return b


@_kernel
def _collect(flags, s, lo, out_s, out_i, n_out):
    for i in range(flags.shape[0]):
        if flags[i]:
            out_s[n_out] = s
            out_i[n_out] = lo + i
            n_out += 1
    return n_out


@_kernel
def _poisson_input(ring, slot, r, wq, cdf, seed, pop, lo, i0, i1, s):
    base = stream_key(seed, STREAM_POISSON, pop, 0)
    for i in range(i0, i1):
        ring[slot, r, i] += poisson_table(mix64(base ^ np.uint64(lo + i)), s, cdf) * wq


@_kernel
def _take(ring, slot, i, q0, q1):
    a0 = ring[slot, 0, i]
    a1 = ring[slot, 1, i]
    ring[slot, 0, i] = 0
    ring[slot, 1, i] = 0
    return np.float32(a0) * q0, np.float32(a1) * q1


@_kernel
def _lif_coba(prm, q0, q1, ref_steps, v, g, ref, ring, slot, i0, i1, flags):
    for i in range(i0, i1):
        x0, x1 = _take(ring, slot, i, q0, q1)
        ge = g[i, 0] + x0
        gi = g[i, 1] + x1
        vi = v[i]
        r = ref[i]
        if r == 0:
            vi = vi + prm[0] * (prm[1] * (prm[2] - vi) + ge * (prm[5] - vi) + gi * (prm[6] - vi) + prm[9])
        else:
            r -= 1
        g[i, 0] = ge - ge * prm[7]
        g[i, 1] = gi - gi * prm[8]
        f = r == 0 and vi > prm[3]
        if f:
            vi = prm[4]
            r = ref_steps
        flags[i] = f
        ref[i] = r
        v[i] = vi


@_kernel
def _lif_cuba_exp(prm, q0, q1, ref_steps, v, g, ref, ring, slot, i0, i1, flags):
    for i in range(i0, i1):
        x0, x1 = _take(ring, slot, i, q0, q1)
        ie = g[i, 0] + x0
        ii = g[i, 1] + x1
        vi = v[i]
        r = ref[i]
        if r == 0:
            vi = vi + prm[0] * ((prm[1] - vi) + ie + ii + prm[6])
        else:
            r -= 1
        g[i, 0] = ie - ie * prm[4]
        g[i, 1] = ii - ii * prm[5]
        f = r == 0 and vi > prm[2]
        if f:
            vi = prm[3]
            r = ref_steps
        flags[i] = f
        ref[i] = r
        v[i] = vi


@_kernel
def _lif_cuba_delta(prm, q0, q1, ref_steps, v, ref, ring, slot, i0, i1, flags):
    for i in range(i0, i1):
        x0, x1 = _take(ring, slot, i, q0, q1)
        vi = v[i]
        r = ref[i]
        if r == 0:
            vi = vi + x0 + x1
            vi = prm[1] + (vi - prm[1]) * prm[0] + prm[4]
        else:
            r -= 1
        f = r == 0 and vi > prm[2]
        if f:
            vi = prm[3]
            r = ref_steps
        flags[i] = f
        ref[i] = r
        v[i] = vi


@_kernel
def _izhikevich(prm, q0, q1, ref_steps, v, u, ref, ring, slot, i0, i1, flags):
    for i in range(i0, i1):
        x0, x1 = _take(ring, slot, i, q0, q1)
        vi = v[i] + x0 + x1
        ui = u[i]
        r = ref[i]
        if r == 0:
            dv = np.float32(0.04) * vi * vi + np.float32(5.0) * vi + np.float32(140.0) - ui + prm[6]
            du = prm[1] * (prm[2] * vi - ui)
            vi = vi + prm[0] * dv
            ui = ui + prm[0] * du
        else:
            r -= 1
        f = r == 0 and vi >= prm[5]
        if f:
            vi = prm[3]
            ui = ui + prm[4]
            r = ref_steps
        flags[i] = f
        ref[i] = r
        v[i] = vi
        u[i] = ui
