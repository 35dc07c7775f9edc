"""A spiking network described in plain data, and its plan: chunks, tables and quanta.

A :class:`Network` is populations, projections and background input; the
:class:`Plan` it compiles to is what the Step and the kernels read: neuron
chunks (each inside one population, aligned to ``conn_block``), packed neuron
parameters, the projection tables of ``kernels.procedural`` and the exchange
window (the smallest delay, in steps, of any projection).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurochunk.kernels import procedural as pk
from neurochunk.kernels.neurons import RECEPTORS, STATE_VARS, pack_params
from neurochunk.kernels.rng import poisson_cdf

__all__ = ["Population", "Projection", "Network", "Plan", "coba_network", "brunel_network"]

_QUANTUM_BITS = 15  # the largest weight of a receptor is about 2**15 quanta


@dataclass(frozen=True)
class Population:
    """``n`` neurons of one ``model`` with ``params``, initial values and Poisson background.

    ``init`` maps a state variable to a number, ``{"uniform": [lo, hi]}`` or
    ``{"normal": [mean, std]}``. ``background`` is ``{"rate": Hz, "weight": w,
    "receptor": name}`` (one Poisson source of that rate per neuron; use the
    summed rate of many sources).
    """

    name: str
    n: int
    model: str = "lif_coba"
    params: Mapping[str, float] = field(default_factory=dict)
    init: Mapping[str, Any] = field(default_factory=dict)
    background: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Projection:
    """Synapses from ``pre`` to ``post``.

    ``rule`` is one of ``fixed_probability`` (``p``), ``fixed_indegree`` (``k``,
    stored mode only), ``fixed_outdegree`` (``k``, with replacement), ``one_to_one``, ``all_to_all``,
    ``edge_list`` (a user's edges loaded with ``pipeline.simulation.load_edge_list``; ``weight`` is then
    the largest absolute weight and ``delay`` the range the edges' delays lie in). ``weight`` is a number,
    ``{"normal": [mean, std]}`` or ``{"uniform": [lo, hi]}``; ``delay`` (ms, as
    in Brian2: 0 means the next step) a number or ``{"uniform": [lo, hi]}``.
    ``receptor`` names the synaptic variable of the post model (``ge``, ``gi``, ``Ie``, ``Ii``, ``v``).
    """

    name: str
    pre: str
    post: str
    receptor: str
    weight: Any
    rule: str = "fixed_probability"
    p: float = 0.0
    k: int = 0
    delay: Any = 0.0


@dataclass(frozen=True)
class Network:
    """A whole network, its time step (ms), seed, chunking and connectivity mode."""

    populations: tuple[Population, ...]
    projections: tuple[Projection, ...] = ()
    dt: float = 0.1
    seed: int = 0
    chunk: int = 1 << 20
    conn_block: int = 1024
    connectivity: str = "procedural"  # or "stored"

    def plan(self) -> Plan:
        """Check the description and compile it; raises ``ValueError`` naming the bad field."""
        return Plan(self)


def _spec(value: Any, what: str, kinds: Mapping[str, int]) -> tuple[int, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0, float(value), 0.0
    if isinstance(value, Mapping) and len(value) == 1:
        (kind, args), = value.items()
        if kind in kinds and kind != "constant" and len(args) == 2:
            return kinds[kind], float(args[0]), float(args[1])
    raise ValueError(f"{what}: expected a number or one of {{{', '.join(k for k in kinds if k != 'constant')}: [a, b]}}, "
                     f"got {value!r}")


def _bound(kind: int, a: float, b: float) -> float:
    return abs(a) + 8.0 * abs(b) if kind == 1 else max(abs(a), abs(b))


class Plan:
    """The compiled form of a :class:`Network` (pure data; no dask)."""

    def __init__(self, net: Network) -> None:
        self.net, self.dt, self.seed = net, float(net.dt), int(net.seed)
        names = [p.name for p in net.populations]
        if len(set(names)) != len(names):
            raise ValueError(f"population names must be unique, got {names}")
        if net.connectivity not in ("procedural", "stored"):
            raise ValueError(f"connectivity must be 'procedural' or 'stored', got {net.connectivity!r}")
        if net.chunk <= 0 or net.conn_block <= 0:
            raise ValueError(f"chunk and conn_block must be positive, got {net.chunk} and {net.conn_block}")
        self.pop_index = {n: i for i, n in enumerate(names)}
        self.offsets = np.cumsum([0] + [p.n for p in net.populations]).astype(np.int64)
        self.n = int(self.offsets[-1])
        for pop in net.populations:
            if pop.n <= 0:
                raise ValueError(f"population {pop.name!r}: n must be positive, got {pop.n}")
        # (lo, hi) global neuron ids; a chunk may span populations
        self.chunks = [(lo, min(self.n, lo + net.chunk)) for lo in range(0, self.n, net.chunk)]
        models, prms, ref_steps = [], [], []
        for pop in net.populations:
            try:
                mid, prm, ref = pack_params(pop.model, pop.params, self.dt)
            except ValueError as exc:
                raise ValueError(f"population {pop.name!r}: {exc}") from None
            bad = set(pop.init) - set(STATE_VARS[pop.model])
            if bad:
                raise ValueError(f"population {pop.name!r}: init names {sorted(bad)}, not state variables of "
                                 f"{pop.model} ({', '.join(STATE_VARS[pop.model])})")
            models.append(mid)
            prms.append(prm)
            ref_steps.append(ref)
        self.models = np.array(models, np.int64)
        self.prms = np.array(prms, np.float32)
        self.ref_steps = np.array(ref_steps, np.int64)
        self._projections(net)
        self._background(net)
        self.quanta = np.ones((len(names), 2), np.float64)
        for i in range(len(names)):
            for r in range(2):
                bound = self.bounds.get((i, r), 0.0)
                if bound > 0:
                    self.quanta[i, r] = 2.0 ** math.floor(math.log2(bound / 2**_QUANTUM_BITS))
        for p in range(len(self.pint)):
            self.pflt[p, pk.F_Q] = self.quanta[self.pint[p, pk.I_POST_POP], self.pint[p, pk.I_RECEPTOR]]
        self.pop_tables = (
            self.models, self.prms, self.ref_steps, self.quanta.astype(np.float32), self.offsets,
            np.array([lam for lam, _, _ in self.pois], np.float64),
            np.stack([poisson_cdf(lam) for lam, _, _ in self.pois]),
            np.array([int(round(w / self.quanta[i, r])) if lam > 0 else 0 for i, (lam, w, r) in enumerate(self.pois)],
                     np.int64),
            np.array([r for _, _, r in self.pois], np.int64),
        )

    def _receptor(self, pop: int, name: str, where: str) -> int:
        model = self.net.populations[pop].model
        recs = RECEPTORS[model]
        if name not in recs:
            raise ValueError(f"{where}: receptor {name!r} is not one of {model}'s ({', '.join(recs)})")
        return recs.index(name)

    def _projections(self, net: Network) -> None:
        n_p = len(net.projections)
        self.pint = np.zeros((n_p, pk.N_INT), np.int64)
        self.pflt = np.zeros((n_p, pk.N_FLT), np.float64)
        self.bounds: dict[tuple[int, int], float] = {}
        delays = []
        for p, pr in enumerate(net.projections):
            where = f"projection {pr.name!r}"
            for end in (pr.pre, pr.post):
                if end not in self.pop_index:
                    raise ValueError(f"{where}: no population {end!r}; populations: {list(self.pop_index)}")
            if pr.rule not in pk.RULES:
                raise ValueError(f"{where}: rule {pr.rule!r} is not one of {list(pk.RULES)}")
            a, b = self.pop_index[pr.pre], self.pop_index[pr.post]
            n_pre, n_post = net.populations[a].n, net.populations[b].n
            if pr.rule == "fixed_probability" and not 0.0 < pr.p <= 1.0:
                raise ValueError(f"{where}: p must be in (0, 1], got {pr.p}")
            if pr.rule == "edge_list" and net.connectivity != "stored":
                raise ValueError(f"{where}: an edge_list projection needs connectivity: stored")
            if pr.rule == "fixed_outdegree" and pr.k <= 0:
                raise ValueError(f"{where}: fixed_outdegree needs k > 0, got {pr.k}")
            if pr.rule == "fixed_indegree":
                if pr.k <= 0:
                    raise ValueError(f"{where}: fixed_indegree needs k > 0, got {pr.k}")
                if net.connectivity != "stored":
                    raise ValueError(f"{where}: fixed_indegree is a post-centred rule; it needs connectivity: stored")
            if pr.rule == "one_to_one" and n_pre != n_post:
                raise ValueError(f"{where}: one_to_one needs equal sizes, got {n_pre} and {n_post}")
            rule = pk.RULES["all_to_all"] if pr.rule == "fixed_probability" and pr.p >= 1.0 else pk.RULES[pr.rule]
            r = self._receptor(b, pr.receptor, where)
            wk, wa, wb = _spec(pr.weight, f"{where}: weight", pk.WEIGHT_KINDS)
            dk, da, db = _spec(pr.delay, f"{where}: delay", pk.DELAY_KINDS)
            d_lo, d_hi = self.delay_steps(da), self.delay_steps(db if dk else da)
            if d_hi < d_lo:
                raise ValueError(f"{where}: delay range {pr.delay!r} is empty")
            delays += [d_lo, d_hi]
            self.pint[p] = [rule, self.offsets[a], n_pre, self.offsets[b], n_post, r, wk, dk, p, pr.k,
                            int(net.connectivity == "stored"), b]
            inv_log1mp = 1.0 / math.log1p(-pr.p) if 0 < pr.p < 1 else -1.0
            self.pflt[p] = [pr.p, inv_log1mp, wa, wb, d_lo, d_hi, 1.0]
            self.bounds[(b, r)] = max(self.bounds.get((b, r), 0.0), _bound(wk, wa, wb))
        self.max_delay = max(delays, default=1)
        self.min_delay = min(delays, default=1)

    def _background(self, net: Network) -> None:
        self.pois: list[tuple[float, float, int]] = []  # (lambda per step, weight, receptor)
        for i, pop in enumerate(net.populations):
            bg = pop.background
            if not bg:
                self.pois.append((0.0, 0.0, 0))
                continue
            unknown = set(bg) - {"rate", "weight", "receptor"}
            if unknown or "rate" not in bg or "weight" not in bg:
                raise ValueError(f"population {pop.name!r}: background needs rate (Hz), weight and receptor; "
                                 f"got {dict(bg)}")
            r = self._receptor(i, bg.get("receptor", RECEPTORS[pop.model][0]), f"population {pop.name!r} background")
            lam = float(bg["rate"]) * self.dt * 1e-3
            if lam > 50:
                raise ValueError(f"population {pop.name!r}: background of {lam:.1f} events per step is too many "
                                 f"for the Poisson inversion (at most 50)")
            self.pois.append((lam, float(bg["weight"]), r))
            self.bounds[(i, r)] = max(self.bounds.get((i, r), 0.0), abs(float(bg["weight"])))

    def delay_steps(self, delay_ms: float) -> int:
        """Steps from a spike to its effect: Brian2's delay ``d`` acts at the start of step ``s + d/dt + 1``."""
        if delay_ms < 0:
            raise ValueError(f"delays must be non-negative, got {delay_ms} ms")
        return int(round(delay_ms / self.dt)) + 1

    @property
    def n_slots(self) -> int:
        """Ring-buffer slots per neuron."""
        return self.max_delay + 1

    @property
    def window(self) -> int | None:
        """Steps a chunk may advance between exchanges (``None``: one chunk, no exchange needed)."""
        return None if len(self.chunks) == 1 else self.min_delay

    def segments(self, c: int) -> list[tuple[int, int, int]]:
        """``(population, lo, hi)`` pieces of chunk ``c``."""
        lo, hi = self.chunks[c]
        out = []
        for k in range(len(self.net.populations)):
            a, b = max(lo, int(self.offsets[k])), min(hi, int(self.offsets[k + 1]))
            if a < b:
                out.append((k, a, b))
        return out

    def population_of(self, gid: np.ndarray) -> np.ndarray:
        """Population index of global neuron ids."""
        return np.searchsorted(self.offsets, gid, side="right") - 1


def coba_network(n: int = 4000, *, p: float = 0.02, seed: int = 0, chunk: int | None = None, dt: float = 0.1,
                 connectivity: str = "procedural", conn_block: int = 1024) -> Network:
    """The Vogels-Abbott COBA benchmark (Brette et al. 2007; Brian2's COBA example): 80% E, 20% I."""
    n_e = n * 4 // 5
    init = {"v": {"uniform": [-60.0, -50.0]}, "ge": {"normal": [40.0, 15.0]}, "gi": {"normal": [200.0, 120.0]}}
    pops = (Population("E", n_e, "lif_coba", {}, init), Population("I", n - n_e, "lif_coba", {}, init))
    projs = tuple(Projection(f"{a}{b}", a, b, "ge" if a == "E" else "gi", 6.0 if a == "E" else 67.0, p=p)
                  for a in ("E", "I") for b in ("E", "I"))
    return Network(pops, projs, dt=dt, seed=seed, chunk=chunk or n, conn_block=conn_block,
                   connectivity=connectivity)


def brunel_network(n: int = 12500, *, g: float = 5.0, eta: float = 2.0, j: float = 0.1, epsilon: float = 0.1,
                   delay: float = 1.5, seed: int = 0, chunk: int | None = None, dt: float = 0.1,
                   rule: str = "fixed_indegree", conn_block: int | None = None, connectivity: str | None = None,
                   v_init: Any = 0.0) -> Network:
    """Brunel (2000) model A: 80% E, 20% I delta-synapse LIF, in-degree ``epsilon * N_E``."""
    n_e = n * 4 // 5
    n_i = n - n_e
    c_e, c_i = int(round(epsilon * n_e)), int(round(epsilon * n_i))
    tau, theta = 20.0, 20.0
    nu_ext = eta * theta / (j * c_e * tau) * 1e3  # Hz per external source
    params = {"tau_m": tau, "E_L": 0.0, "V_th": theta, "V_reset": 10.0, "t_ref": 2.0}
    bg = {"rate": c_e * nu_ext, "weight": j, "receptor": "v"}
    init = {"v": v_init}
    pops = (Population("E", n_e, "lif_cuba_delta", params, init, bg),
            Population("I", n_i, "lif_cuba_delta", params, init, bg))
    projs = []
    for a, w, k, n_pre in (("E", j, c_e, n_e), ("I", -g * j, c_i, n_i)):
        for b in ("E", "I"):
            if rule == "fixed_indegree":
                projs.append(Projection(f"{a}{b}", a, b, "v", w, rule=rule, k=k, delay=delay))
            else:
                projs.append(Projection(f"{a}{b}", a, b, "v", w, rule="fixed_probability", p=k / n_pre, delay=delay))
    mode = connectivity or ("stored" if rule == "fixed_indegree" else "procedural")
    if conn_block is None:  # about 16 synapses per (spike, target block): block set-up costs as much as a synapse
        conn_block = max(1024, 1 << math.ceil(math.log2(16 * n_e / max(c_e, 1))))
    return Network(pops, tuple(projs), dt=dt, seed=seed, chunk=chunk or n,
                   conn_block=conn_block, connectivity=mode)

