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
from .rng import STREAM_POISSON, mix64, stream_key, uniform

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
    # the update loops run over contiguous float32 columns: g's two receptors apart while the window runs
    uses_g = False
    for pop in range(models.shape[0]):
        if models[pop] <= 1 and min(hi, offsets[pop + 1]) > max(lo, offsets[pop]):
            uses_g = True
    gw = np.empty((2, n if uses_g else 0), np.float32)
    if uses_g:
        for i in range(n):
            gw[0, i] = g[i, 0]
            gw[1, i] = g[i, 1]
    flags = np.zeros((n + 7) // 8 * 8, np.uint8)
    words = flags.view(np.uint64)
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
            x0, x1, f = ring[slot, 0, i0:i1], ring[slot, 1, i0:i1], flags[i0:i1]
            if m == 0:
                _lif_coba(prm, q0, q1, np.int32(ref_steps[pop]), v[i0:i1], gw[0, i0:i1], gw[1, i0:i1], ref[i0:i1],
                          x0, x1, f)
            elif m == 1:
                _lif_cuba_exp(prm, q0, q1, np.int32(ref_steps[pop]), v[i0:i1], gw[0, i0:i1], gw[1, i0:i1],
                              ref[i0:i1], x0, x1, f)
            elif m == 2:
                _lif_cuba_delta(prm, q0, q1, np.int32(ref_steps[pop]), v[i0:i1], ref[i0:i1], x0, x1, f)
            else:
                _izhikevich(prm, q0, q1, np.int32(ref_steps[pop]), v[i0:i1], u[i0:i1], ref[i0:i1], x0, x1, f)
        n_new = _count(words)
        if n_new == 0:
            continue
        if n_out + n_new > cap:
            cap = max(2 * cap, n_out + n_new)
            out_s, out_i = _grown(out_s, n_out, cap), _grown(out_i, n_out, cap)
        n_out = _collect(words, flags, s, lo, out_s, out_i, n_out)
        # deliver after the whole chunk has stepped: a spike never reaches a neuron within its own step
        deliver_many(out_s[first_spike:n_out], out_i[first_spike:n_out], -1, -1, pint, pflt, seed, block, lo, hi,
                     ring, n_slots, ptr_all, ptr_off, cols, cwq, cdl)
    if uses_g:
        for i in range(n):
            g[i, 0] = gw[0, i]
            g[i, 1] = gw[1, i]
    return out_s[:n_out].copy(), out_i[:n_out].copy()


_kernel = numba.njit(nogil=True, cache=True)


_LANES8 = np.uint64(0x00FF00FF00FF00FF)
_LANES16 = np.uint64(0x0001000100010001)


@_kernel
def _count(words):
    """Spikes flagged this step (flags are 0/1 bytes, read 8 at a time)."""
    total = 0
    for a in range(0, words.shape[0], 255):  # a byte lane holds at most 255
        c = np.uint64(0)
        for x in range(a, min(a + 255, words.shape[0])):
            c += words[x]
        c = (c & _LANES8) + ((c >> np.uint64(8)) & _LANES8)
        total += np.int64((c * _LANES16) >> np.uint64(48))
    return total


@_kernel
def _grown(a, n, cap):
    b = np.empty(cap, a.dtype)
    b[:n] = a[:n]
    return b


@_kernel
def _collect(words, flags, s, lo, out_s, out_i, n_out):
    for w in range(words.shape[0]):
        if words[w] != 0:
            for i in range(8 * w, 8 * w + 8):
                if flags[i]:
                    out_s[n_out] = s
                    out_i[n_out] = lo + i
                    n_out += 1
    return n_out


_TILE = 512


@_kernel
def _poisson_input(ring, slot, r, wq, cdf, seed, pop, lo, i0, i1, s):
    """Add each neuron's Poisson count of step ``s`` (``poisson_table``'s draws, searched tile by tile)."""
    base = stream_key(seed, STREAM_POISSON, pop, 0)
    top = 0
    while cdf[top] < 1.0:  # entries from here on are >= every uniform: the search never passes them
        top += 1
    row = ring[slot, r]
    u = np.empty(_TILE, np.float64)
    cnt = np.empty(_TILE, np.int64)
    for a in range(i0, i1, _TILE):
        n = min(i1, a + _TILE) - a
        for t in range(n):
            u[t] = uniform(mix64(base ^ np.uint64(lo + a + t)), s)
            cnt[t] = 0
        # the first n with u <= cdf[n] is the number of (non-decreasing) entries below u
        for m in range(top):
            c = cdf[m]
            for t in range(n):
                cnt[t] += u[t] > c
        for t in range(n):
            row[a + t] += cnt[t] * wq


# The update loops are branch-free (the refractory and spike cases are selects) so that LLVM vectorises
# them; each computes in float32 in the GPU twin's order (no fused multiply-add), so results do not change.

@_kernel
def _lif_coba(prm, q0, q1, ref_steps, v, g0, g1, ref, x0, x1, flags):
    c, gl, el, vt, vr, ee, ei, ke, ki, iext = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7], \
        prm[8], prm[9]
    for i in range(v.shape[0]):
        ge = g0[i] + np.float32(x0[i]) * q0
        gi = g1[i] + np.float32(x1[i]) * q1
        x0[i] = 0
        x1[i] = 0
        vi = v[i]
        r = ref[i]
        vn = vi + c * (gl * (el - vi) + ge * (ee - vi) + gi * (ei - vi) + iext)
        vi = vn if r == 0 else vi
        r = r - np.int32(r != 0)
        g0[i] = ge - ge * ke
        g1[i] = gi - gi * ki
        f = (r == 0) & (vi > vt)
        v[i] = vr if f else vi
        ref[i] = ref_steps if f else r
        flags[i] = f


@_kernel
def _lif_cuba_exp(prm, q0, q1, ref_steps, v, g0, g1, ref, x0, x1, flags):
    c, el, vt, vr, ke, ki, ri = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6]
    for i in range(v.shape[0]):
        ie = g0[i] + np.float32(x0[i]) * q0
        ii = g1[i] + np.float32(x1[i]) * q1
        x0[i] = 0
        x1[i] = 0
        vi = v[i]
        r = ref[i]
        vn = vi + c * ((el - vi) + ie + ii + ri)
        vi = vn if r == 0 else vi
        r = r - np.int32(r != 0)
        g0[i] = ie - ie * ke
        g1[i] = ii - ii * ki
        f = (r == 0) & (vi > vt)
        v[i] = vr if f else vi
        ref[i] = ref_steps if f else r
        flags[i] = f


@_kernel
def _lif_cuba_delta(prm, q0, q1, ref_steps, v, ref, x0, x1, flags):
    decay, el, vt, vr, drive = prm[0], prm[1], prm[2], prm[3], prm[4]
    for i in range(v.shape[0]):
        a0 = np.float32(x0[i]) * q0
        a1 = np.float32(x1[i]) * q1
        x0[i] = 0
        x1[i] = 0
        vi = v[i]
        r = ref[i]
        vn = vi + a0 + a1
        vn = el + (vn - el) * decay + drive
        vi = vn if r == 0 else vi
        r = r - np.int32(r != 0)
        f = (r == 0) & (vi > vt)
        v[i] = vr if f else vi
        ref[i] = ref_steps if f else r
        flags[i] = f


@_kernel
def _izhikevich(prm, q0, q1, ref_steps, v, u, ref, x0, x1, flags):
    dt, a, b, c, d, vpeak, iext = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6]
    for i in range(v.shape[0]):
        a0 = np.float32(x0[i]) * q0
        a1 = np.float32(x1[i]) * q1
        x0[i] = 0
        x1[i] = 0
        vi = v[i] + a0 + a1
        ui = u[i]
        r = ref[i]
        dv = np.float32(0.04) * vi * vi + np.float32(5.0) * vi + np.float32(140.0) - ui + iext
        du = a * (b * vi - ui)
        vn = vi + dt * dv
        un = ui + dt * du
        vi = vn if r == 0 else vi
        ui = un if r == 0 else ui
        r = r - np.int32(r != 0)
        f = (r == 0) & (vi >= vpeak)
        v[i] = c if f else vi
        u[i] = ui + d if f else ui
        ref[i] = ref_steps if f else r
        flags[i] = f


@_kernel
def slot_major(ring):
    """A C-contiguous ``(slot, receptor, neuron)`` copy of a ``(neuron, slot, receptor)`` ring buffer."""
    n, n_slots, n_rec = ring.shape
    out = np.empty((n_slots, n_rec, n), ring.dtype)
    for a in range(0, n, _TILE):
        b = min(n, a + _TILE)
        for s in range(n_slots):
            for r in range(n_rec):
                for i in range(a, b):
                    out[s, r, i] = ring[i, s, r]
    return out


@_kernel
def neuron_major(work):
    """The ``(neuron, slot, receptor)`` C-contiguous copy of a slot-major ring buffer (undoes :func:`slot_major`)."""
    n_slots, n_rec, n = work.shape
    out = np.empty((n, n_slots, n_rec), work.dtype)
    for a in range(0, n, _TILE):
        b = min(n, a + _TILE)
        for s in range(n_slots):
            for r in range(n_rec):
                for i in range(a, b):
                    out[i, s, r] = work[s, r, i]
    return out
