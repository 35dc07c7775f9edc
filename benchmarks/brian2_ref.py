"""Reference networks in Brian2 2.9, run by the venv of .ci/setup-brian2.sh (not by neurochunk's python).

Usage: ``.venv-brian2/bin/python benchmarks/brian2_ref.py '{"net": "coba", "n": 4000, "duration_ms": 1000,
"target": "cython"}'``. Prints one JSON line: per-population rates (Hz), ISI CV, spike counts and wall times
(``build_s``: network construction, ``run_s``: the ``run`` call, ``loop_s``: the simulation loop alone where
Brian2 reports it (cpp_standalone), ``process_s``: the whole script).
"""

import json
import os
import sys
import tempfile
import time

T_PROCESS = time.perf_counter()

import numpy as np  # noqa: E402
from brian2 import (Network, NeuronGroup, PoissonInput, SpikeMonitor, Synapses, device, defaultclock, ms, mV, nS,  # noqa: E402
                    prefs, seed, set_device)


def coba(cfg):
    n = cfg.get("n", 4000)
    n_e = n * 4 // 5
    eqs = """dv/dt = (gl*(El - v) + ge*(Ee - v) + gi*(Ei - v))/C : volt (unless refractory)
             dge/dt = -ge/taue : siemens
             dgi/dt = -gi/taui : siemens"""
    ns = {"gl": 10 * nS, "El": -60 * mV, "Ee": 0 * mV, "Ei": -80 * mV, "C": 20 * ms * 10 * nS,
          "taue": 5 * ms, "taui": 10 * ms, "Vt": -50 * mV, "Vr": -60 * mV}
    P = NeuronGroup(n, eqs, threshold="v > Vt", reset="v = Vr", refractory=5 * ms, method="euler", namespace=ns)
    P.v = "Vr + rand() * (Vt - Vr)"
    P.ge = "(randn() * 1.5 + 4) * 10 * nS"
    P.gi = "(randn() * 12 + 20) * 10 * nS"
    p = cfg.get("p", 0.02)
    Ce = Synapses(P, P, on_pre="ge += 6 * nS")
    Ce.connect(f"i < {n_e}", p=p)
    Ci = Synapses(P, P, on_pre="gi += 67 * nS")
    Ci.connect(f"i >= {n_e}", p=p)
    return P, n_e, [Ce, Ci]


def brunel(cfg):
    n = cfg.get("n", 12500)
    n_e = n * 4 // 5
    n_i = n - n_e
    eps, g, eta, J = cfg.get("epsilon", 0.1), cfg.get("g", 5.0), cfg.get("eta", 2.0), cfg.get("j", 0.1)
    c_e, c_i = int(round(eps * n_e)), int(round(eps * n_i))
    tau, theta = 20 * ms, 20 * mV
    nu_ext = eta * theta / (J * mV * c_e * tau)
    P = NeuronGroup(n, "dv/dt = -v/tau : volt (unless refractory)", threshold="v > theta", reset="v = 10*mV",
                    refractory=2 * ms, method="exact", namespace={"tau": tau, "theta": theta})
    rng = np.random.default_rng(cfg.get("seed", 0))
    syns = []
    for lo, hi, k, w in [] if cfg.get("no_recurrence") else ((0, n_e, c_e, J), (n_e, n, c_i, -g * J)):
        S = Synapses(P, P, on_pre=f"v_post += {w}*mV", delay=cfg.get("delay_ms", 1.5) * ms)
        if cfg.get("rule", "fixed_indegree") == "fixed_indegree":
            S.connect(i=rng.integers(lo, hi, size=n * k), j=np.repeat(np.arange(n), k))
        else:
            S.connect(f"i >= {lo} and i < {hi}", p=k / (hi - lo))
        syns.append(S)
    syns.append(PoissonInput(P, "v", c_e, nu_ext, weight=J * mV))
    if cfg.get("v_uniform"):
        lo, hi = cfg["v_uniform"]
        P.v = f"({lo} + rand() * {hi - lo}) * mV"
    return P, n_e, syns


def lif1(cfg):
    eqs = "dv/dt = (El - v + RI)/tau : volt (unless refractory)"
    P = NeuronGroup(1, eqs, threshold="v > Vt", reset="v = Vr", refractory=cfg.get("t_ref", 2.0) * ms, method="exact",
                    namespace={"El": 0 * mV, "RI": cfg["RI"] * mV, "tau": 20 * ms, "Vt": 20 * mV, "Vr": 10 * mV})
    return P, 1, []


def main():
    cfg = json.loads(sys.argv[1])
    seeds = cfg.pop("seeds", None)
    if seeds is None:
        print(json.dumps(run_one(cfg)))
        return
    runs = [run_one({**cfg, "seed": s}) for s in seeds]
    keys = ("rate", "rate_E", "rate_I", "cv")
    out = {k: float(np.mean([r[k] for r in runs if r[k] is not None])) for k in keys}
    out["runs"] = runs
    print(json.dumps(out))


def run_one(cfg):
    target = cfg.get("target", "cython")
    if target == "cpp_standalone":
        set_device("cpp_standalone", directory=tempfile.mkdtemp(prefix="brian2-standalone-"), build_on_run=True)
    else:
        prefs.codegen.target = target
    seed(cfg.get("seed", 1))
    defaultclock.dt = cfg.get("dt", 0.1) * ms
    t0 = time.perf_counter()
    P, n_e, objs = {"coba": coba, "brunel": brunel, "lif1": lif1}[cfg["net"]](cfg)
    mon = SpikeMonitor(P)
    t1 = time.perf_counter()
    net = Network(P, mon, *objs)
    net.run(cfg.get("duration_ms", 1000) * ms)
    t2 = time.perf_counter()
    loop_s = None
    if target == "cpp_standalone":
        info = getattr(device, "timers", {}) or {}
        loop_s = (info.get("run", {}) or {}).get("main_loop") if isinstance(info.get("run"), dict) else None
        try:
            with open(os.path.join(device.project_dir, "results", "last_run_info.txt")) as fh:
                loop_s = float(fh.read().split()[0])
        except OSError:
            pass
    i = np.asarray(mon.i[:])
    t = np.asarray(mon.t[:] / ms)
    dur_s = cfg.get("duration_ms", 1000) / 1000
    skip = cfg.get("cv_skip_ms", 100)
    n = len(P)
    out = {"rate": len(i) / n / dur_s, "rate_E": float((i < n_e).sum()) / n_e / dur_s,
           "rate_I": float((i >= n_e).sum()) / max(n - n_e, 1) / dur_s if n > n_e else None,
           "cv": _cv(t, i, skip), "n_spikes": int(len(i)), "build_s": t1 - t0, "run_s": t2 - t1, "loop_s": loop_s,
           "process_s": time.perf_counter() - T_PROCESS, "n_synapses": int(sum(len(o) for o in objs
                                                                                if isinstance(o, Synapses)))}
    return out


def _cv(t, i, skip_ms):
    keep = t >= skip_ms
    t, i = t[keep], i[keep]
    order = np.lexsort((t, i))
    t, i = t[order], i[order]
    isi = np.diff(t)
    same = i[1:] == i[:-1]
    isi, owner = isi[same], i[1:][same]
    if len(isi) == 0:
        return None
    cvs = []
    for nid in np.unique(owner):
        x = isi[owner == nid]
        if len(x) >= 2 and x.mean() > 0:
            cvs.append(x.std() / x.mean())
    return float(np.mean(cvs)) if cvs else None


if __name__ == "__main__":
    main()
