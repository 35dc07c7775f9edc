"""The brain workflow: simulate a spiking network on the cluster, record spikes to Zarr, plot them.

A network is either a named benchmark (``coba``: Vogels-Abbott COBA,
``brunel``: Brunel 2000 model A) or ``custom`` populations and projections
written out in the config (see ``pipeline.network`` for their fields).
The run writes ``spikes.zarr`` (and ``checkpoint.zarr``, ``connectivity/``
when asked) under ``store.url`` and draws ``raster.png`` and ``rates.png``. ``backend: gpu`` (with
``cluster: {gpu: true}``: dask-cuda, one worker per GPU) keeps each chunk's state on a worker's GPU.

The same in a script of your own::

    from neurochunk.cluster import connect
    from neurochunk.pipeline.network import Network, Population, Projection
    from neurochunk.pipeline.recording import read_spikes, simulate, spike_stats

    init = {"v": {"uniform": [-60.0, -50.0]}, "ge": {"normal": [40.0, 15.0]}, "gi": {"normal": [200.0, 120.0]}}
    pops = (Population("E", 3200, "lif_coba", {}, init), Population("I", 800, "lif_coba", {}, init))
    projs = tuple(Projection(f"{a}{b}", a, b, "ge" if a == "E" else "gi", 6.0 if a == "E" else 67.0, p=0.02)
                  for a in "EI" for b in "EI")
    net = Network(pops, projs, dt=0.1, seed=1)
    with connect() as client:
        res = simulate(net, 1000.0, spikes_url="my-coba/spikes.zarr", client=client,
                       checkpoint_url="my-coba/checkpoint.zarr", checkpoint_every_ms=250, record_v=[0, 3200])
    t, neuron, attrs = read_spikes(res["spikes_url"])
    print(spike_stats(t, neuron, attrs["populations"], 1000.0))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neurochunk.pipeline.network import Network, Population, Projection, brunel_network, coba_network
from neurochunk.pipeline.recording import read_spikes, simulate, spike_stats
from neurochunk.pipeline.simulation import check_backend
from neurochunk.stores import Dataset

from .config import ConfigError, Field, Section
from .figures import save_figure

__all__ = ["PARAMS", "run", "plot", "check", "network_from_params"]

PARAMS = Section({
    "network": Field(str, "coba", choices=("coba", "brunel", "custom"), help="a benchmark network or custom"),
    "n": Field(int, 4000, help="neurons of a benchmark network"),
    "duration_ms": Field(float, 1000.0),
    "dt": Field(float, 0.1, help="time step (ms)"),
    "seed": Field(int, 0),
    "chunk": Field(int, 0, help="neurons per chunk (0: one chunk)"),
    "connectivity": Field(str, "procedural", choices=("procedural", "stored")),
    "rule": Field(str, "fixed_probability", choices=("fixed_probability", "fixed_indegree"),
                  help="brunel's connection rule (fixed_indegree needs connectivity: stored)"),
    "batch_ms": Field(float, 100.0, help="simulated time per Dask graph"),
    "backend": Field(str, "cpu", choices=("cpu", "gpu"),
                     help="gpu: each chunk on a worker's GPU (with cluster.gpu: true, one worker per GPU)"),
    "overlap": Field(int, 1, help="exchange windows per smallest delay: sending a window's spikes to the other "
                                  "chunks overlaps the next windows' compute (same spikes)"),
    "checkpoint_every_ms": Field(float, 0.0, help="0: no checkpoints"),
    "resume": Field(bool, False, help="continue from the last checkpoint in store.url"),
    "out_of_core": Field(bool, False, help="stream the state from store.url/state.zarr every exchange window "
                                            "(state larger than the workers' memory)"),
    "populations": Field(list, [], items=dict, help="custom: name, n, model, params, init, background"),
    "projections": Field(list, [], items=dict, help="custom: name, pre, post, receptor, weight, rule, p, k, delay"),
    "record_v": Field(list, [], items=int, help="neuron ids whose membrane potential is sampled"),
    "record_every_ms": Field(float, 1.0),
    "plot": Field(bool, True),
})


def check(cfg: dict[str, Any]) -> None:
    """Cross-field checks: the network must compile and the backend must run it."""
    p = cfg["params"]
    try:
        plan = network_from_params(p).plan()
    except (ValueError, TypeError) as exc:
        raise ConfigError(cfg.get("_source", "<config>"), "params", str(exc)) from None
    if p["backend"] != "cpu" and p["out_of_core"]:
        raise ConfigError(cfg.get("_source", "<config>"), "params.backend",
                          "out_of_core streams the state on backend cpu only")
    try:
        check_backend(plan, p["backend"])
    except ValueError as exc:
        raise ConfigError(cfg.get("_source", "<config>"), "params.backend", str(exc)) from None
    if not 1 <= p["overlap"] <= plan.min_delay:
        raise ConfigError(cfg.get("_source", "<config>"), "params.overlap",
                          f"must lie in [1, {plan.min_delay}] (the smallest delay, {plan.min_delay} steps)")


def network_from_params(p: dict[str, Any]) -> Network:
    """The :class:`Network` a config's ``params`` describe."""
    chunk = p["chunk"] or None
    if p["network"] == "coba":
        return coba_network(p["n"], seed=p["seed"], chunk=chunk, dt=p["dt"], connectivity=p["connectivity"])
    if p["network"] == "brunel":
        return brunel_network(p["n"], seed=p["seed"], chunk=chunk, dt=p["dt"], rule=p["rule"],
                              connectivity=p["connectivity"])
    if not p["populations"]:
        raise ValueError("a custom network needs params.populations")
    pops = tuple(Population(**d) for d in p["populations"])
    projs = tuple(Projection(**d) for d in p["projections"])
    n = sum(x.n for x in pops)
    return Network(pops, projs, dt=p["dt"], seed=p["seed"], chunk=chunk or n, connectivity=p["connectivity"])


def _dashboard_publisher(net: Network, p: dict[str, Any], client: Any) -> Any:
    """Publish steps done and each population's rate over the last batch on the neurochunk dashboard page."""
    from neurochunk.cluster.dashboard import simulation_publisher

    offsets = np.cumsum([0] + [pop.n for pop in net.populations])

    def rates(report: Any, state: Any) -> dict[str, float]:
        _, gids = report.outputs["spikes"]
        counts = np.histogram(np.asarray(gids), bins=offsets)[0]
        seconds = report.n_steps * p["dt"] / 1000.0
        return {pop.name: float(c) / (pop.n * seconds) for pop, c in zip(net.populations, counts, strict=True)}

    return simulation_publisher(client, int(round(p["duration_ms"] / p["dt"])), rates, dt_ms=p["dt"])


def run(cfg: dict[str, Any], client: Any) -> dict[str, Any]:
    """Simulate, then report rates and CV per population and the PNG paths."""
    p = cfg["params"]
    out = Path((cfg.get("store") or {}).get("url") or "brain-out")
    out.mkdir(parents=True, exist_ok=True)
    net = network_from_params(p)
    res = simulate(net, p["duration_ms"], spikes_url=str(out / "spikes.zarr"), client=client,
                   on_batch=None if client is None or p["out_of_core"] else _dashboard_publisher(net, p, client),
                   checkpoint_url=str(out / "checkpoint.zarr") if p["checkpoint_every_ms"] or p["resume"] else None,
                   checkpoint_every_ms=p["checkpoint_every_ms"], resume=p["resume"], batch_ms=p["batch_ms"],
                   connectivity_url=str(out / "connectivity"), progress=cfg.get("progress", True),
                   record_v=p["record_v"] or None, record_every_ms=p["record_every_ms"],
                   stream_state_url=str(out / "state.zarr") if p["out_of_core"] else None, backend=p["backend"],
                   overlap=p["overlap"])
    t, g, attrs = read_spikes(res["spikes_url"])
    stats = spike_stats(t, g, attrs["populations"], p["duration_ms"])
    reports = res["reports"]
    summary = {"spikes": res["spikes_url"], "neurons": res["plan"].n, "chunks": len(res["plan"].chunks),
               "simulated_ms": res["steps"] * p["dt"], "n_spikes": res["n_spikes"],
               "rates_hz": {k[5:] if k.startswith("rate_") else "all": round(v, 3)
                            for k, v in stats.items() if k.startswith("rate")},
               "isi_cv": None if stats["cv"] is None else round(stats["cv"], 3),
               "compute_s": round(sum(r.compute_s for r in reports) + sum(res.get("windows", [])), 3),
               "batches": len(reports) or len(res.get("windows", []))}
    if p["plot"]:
        summary["plots"] = plot(Dataset.open(res["spikes_url"], kind="spikes"), str(out))
        summary["raster_png"] = summary["plots"][0]
    return summary


def plot(ds: Dataset, out_dir: str) -> list[str]:
    """``raster.png`` (up to 1,000 neurons per population), ``rates.png`` (1 ms bins, per population) and
    ``v.png`` (sampled membrane potentials, when recorded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = int(ds.attrs["n_spikes"])
    t, g = np.asarray(ds["t"][:n]), np.asarray(ds["neuron"][:n])
    pops = ds.attrs["populations"]
    t_end = float(ds.attrs["steps"]) * float(ds.attrs["dt"]) or (float(t.max()) if n else 1.0)
    colors = ["#c0392b", "#2e6da4", "#27ae60", "#8e44ad", "#d35400"]
    fig, ax = plt.subplots(figsize=(9, 5))
    row = 0
    for k, (name, (lo, hi)) in enumerate(pops.items()):
        shown = min(hi - lo, 1000)
        sel = (g >= lo) & (g < lo + shown)
        ax.scatter(t[sel], g[sel] - lo + row, s=0.6, marker="|", color=colors[k % 5], label=name, linewidths=0.6)
        row += shown
    ax.set(xlabel="time (ms)", ylabel="neuron", title=f"spike raster ({n} spikes)", xlim=(0, t_end), ylim=(0, row))
    ax.legend(loc="upper right", markerscale=8)
    raster = save_figure(fig, out_dir, "raster.png")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    bins = np.arange(0.0, t_end + 1.0, 1.0)
    for k, (name, (lo, hi)) in enumerate(pops.items()):
        sel = (g >= lo) & (g < hi)
        counts, _ = np.histogram(t[sel], bins=bins)
        ax.plot(bins[:-1], counts / (hi - lo) * 1e3, lw=0.8, color=colors[k % 5], label=name)
    ax.set(xlabel="time (ms)", ylabel="rate (Hz)", title="population rates (1 ms bins)", xlim=(0, t_end))
    ax.legend(loc="upper right")
    rates = save_figure(fig, out_dir, "rates.png")
    paths = [raster, rates]
    if "v" in ds and int(ds.attrs.get("n_samples", 0)):
        k = int(ds.attrs["n_samples"])
        fig, ax = plt.subplots(figsize=(9, 3.5))
        vt, v, ids = np.asarray(ds["v_t"][:k]), np.asarray(ds["v"][:k]), np.asarray(ds["recorded"][:])
        for j in range(min(v.shape[1], 5)):
            ax.plot(vt, v[:, j], lw=0.8, label=f"neuron {ids[j]}")
        ax.set(xlabel="time (ms)", ylabel="v (mV)", title="sampled membrane potentials")
        ax.legend(loc="upper right")
        paths.append(save_figure(fig, out_dir, "v.png"))
    return paths
