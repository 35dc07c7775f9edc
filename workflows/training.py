"""Training stages end to end: a delayed recurrent model's activations on compressed Zarr, a dictionary, a catalog.

1. The model's T-step forward run is a lazy graph over (sample chunk x time
   batch); only every ``k``-th history is stored (``run/model.zarr``).
2. A producer loop reads the states back batch by batch (recomputed from the
   checkpoints) and streams them, in whole chunks, into an ``activations``
   dataset with the chosen codec (``run/activations.zarr``); a spike raster
   drawn from the rates is stored as a delta-coded event list beside them.
3. A dictionary is learned from one layer's activations (``run/dictionary.zarr``,
   one commit per iteration) and added to a feature catalog (``run/catalog.zarr``),
   which is then queried for the atoms closest to a few activation rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from neurochunk.kernels.recurrent import DelayedRNN, counter_uniform
from neurochunk.pipeline.activations import ActivationWriter, contiguous
from neurochunk.pipeline.catalog import FeatureCatalog
from neurochunk.pipeline.dictionary import learn_dictionary
from neurochunk.pipeline.temporal import run_checkpointed, states
from neurochunk.stores import Dataset
from neurochunk.stores.events import EventWriter, read_raster

from .config import ConfigError, Field, Section
from .figures import save_figure
from .info import format_info
from .run import store_options

__all__ = ["PARAMS", "run", "plot", "check"]

PARAMS = Section({
    "layers": Field(list, [64, 128, 128], items=int, help="input size, then units (or channels) per layer"),
    "conv": Field(bool, False, help="convolutional layers on a height x width grid"),
    "height": Field(int, 0),
    "width": Field(int, 0),
    "delay_ff": Field(int, 5, help="forward delay in steps"),
    "delay_rec": Field(int, 3, help="recurrent delay in steps"),
    "alpha": Field(float, 0.3, help="leak rate per step"),
    "samples": Field(int, 2048),
    "sample_chunk": Field(int, 512),
    "steps": Field(int, 40, help="T"),
    "checkpoint_every": Field(int, 10, help="k: store the history every k steps"),
    "codec": Field(str, "bitround:10", help="codec preset of the activation arrays"),
    "spike_rate_hz": Field(float, 20.0, help="peak rate of the Poisson spikes drawn from layer 1 (1 ms steps)"),
    "dictionary": Section({
        "layer": Field(int, 1, help="which layer's activations to learn from"),
        "n_atoms": Field(int, 64),
        "sparsity": Field(int, 4),
        "epochs": Field(int, 5),
        "chunks_per_iteration": Field(int, None, help="online updates over this many row chunks (default: batch)"),
        "gpu": Field(bool, False, help="sparse-code on the GPU (cupy)"),
        "center": Field(bool, True, help="subtract the per-unit mean before learning (stored as 'mean')"),
    }),
    "seed": Field(int, 0),
})


def check(cfg: dict[str, Any]) -> None:
    """Cross-field checks, named by field."""
    p, src = cfg["params"], cfg.get("_source", "<config>")
    if len(p["layers"]) < 2:
        raise ConfigError(src, "params.layers", "needs the input size and at least one layer")
    if p["steps"] % p["checkpoint_every"]:
        raise ConfigError(src, "params.checkpoint_every", f"must divide params.steps={p['steps']}")
    if p["conv"] and (p["height"] < 1 or p["width"] < 1):
        raise ConfigError(src, "params.height", "conv layers need height and width >= 1")
    d = p["dictionary"] or {}
    if not 1 <= d.get("layer", 1) < len(p["layers"]):
        raise ConfigError(src, "params.dictionary.layer", f"must be in 1..{len(p['layers']) - 1}")
    from neurochunk.stores import parse_codec

    try:
        parse_codec(p["codec"])
    except ValueError as exc:
        raise ConfigError(src, "params.codec", str(exc)) from None


def _model(p: dict[str, Any]) -> DelayedRNN:
    return DelayedRNN(tuple(p["layers"]), conv=p["conv"], height=p["height"], width=p["width"],
                      delay_ff=p["delay_ff"], delay_rec=p["delay_rec"], alpha=p["alpha"], seed=p["seed"])


def run(cfg: dict[str, Any], client: Any) -> dict[str, Any]:
    """Run the model, stream its activations, learn a dictionary and catalog it."""
    p = cfg["params"]
    dcfg = {"layer": 1, "n_atoms": 64, "sparsity": 4, "epochs": 5, **(p.get("dictionary") or {})}
    store = cfg.get("store") or {"url": str(Path(tempfile.mkdtemp(prefix="neurochunk-training-")))}
    base, opts = store["url"].rstrip("/"), store_options(store)
    overwrite = store.get("overwrite", True)
    model, k, steps, n = _model(p), p["checkpoint_every"], p["steps"], p["samples"]

    ckpt = Dataset.create(f"{base}/model.zarr", "activations", overwrite=overwrite, **opts)
    client.compute(run_checkpointed(ckpt, model, n_samples=n, chunk=p["sample_chunk"], steps=steps, k=k,
                                    compute=False), sync=True)
    ckpt = Dataset.open(f"{base}/model.zarr", **opts)

    acts = Dataset.create(f"{base}/activations.zarr", "activations", overwrite=overwrite, **opts,
                          attrs={"source": f"{base}/model.zarr", "dt_ms": 1.0})
    dims_unit = ("channel", "y", "x") if model.conv else ("unit",)
    lazy = {l: states(ckpt, l) for l in range(1, model.n_layers + 1)}
    writers = {l: ActivationWriter(acts, f"h{l}", (n, *model.unit_shape(l)), dims=("time", "sample", *dims_unit),
                                   chunks=(k, p["sample_chunk"], *model.unit_shape(l)), codec=p["codec"])
               for l in lazy}
    n1 = int(np.prod(model.unit_shape(1)))
    spikes = EventWriter(acts, "spikes1", n * n1, chunk=1 << 16)
    from tqdm.auto import tqdm

    for b in tqdm(range(steps // k), desc="activations", disable=not cfg.get("progress", True)):
        blocks = client.compute([lazy[l][b * k:(b + 1) * k] for l in lazy], sync=True)  # the producer's step
        for l, block in zip(lazy, blocks, strict=True):
            writers[l].append(block)
        rate = blocks[0].reshape(k, -1) / max(float(blocks[0].max()), 1e-9) * p["spike_rate_hz"] * 1e-3
        u = counter_uniform(p["seed"] + 1, np.arange(b * k, (b + 1) * k), rate.shape[1])
        spikes.append(u < rate)
    for w in writers.values():
        w.close()
    spikes.close()
    acts = Dataset.open(f"{base}/activations.zarr", **opts)

    layer = dcfg["layer"]
    nl = int(np.prod(model.unit_shape(layer)))
    x = contiguous(acts, f"h{layer}")
    x = x.reshape((-1, nl), merge_chunks=True)
    out = Dataset.create(f"{base}/dictionary.zarr", "activations", overwrite=overwrite, **opts)
    mean = np.zeros(nl, np.float32)
    if dcfg.get("center", True):  # atoms of uncentred rectified rates all share the mean direction
        mean = np.asarray(client.compute(x.mean(axis=0), sync=True), np.float32)
        x = x - mean
    out.create_array("mean", (nl,), np.float32, chunks=(nl,), dims=("unit",))[...] = mean
    res = learn_dictionary(x, out, n_atoms=dcfg["n_atoms"], sparsity=dcfg["sparsity"], epochs=dcfg["epochs"],
                           seed=p["seed"], client=client, progress=cfg.get("progress", True),
                           chunks_per_iteration=dcfg.get("chunks_per_iteration"), gpu=dcfg.get("gpu", False))
    usage = res.usage if res.usage is not None else np.zeros(dcfg["n_atoms"])
    cat = FeatureCatalog.create(f"{base}/catalog.zarr", dim=nl, overwrite=overwrite, **opts)
    cat.add(res.dictionary, name=f"layer{layer}-K{dcfg['n_atoms']}", source=f"{base}/activations.zarr",
            layer=f"h{layer}", tags=["delayed-rnn", p["codec"]], frequency=usage / max(x.shape[0], 1),
            meta={"objective": res.objectives[-1] if res.objectives else None,
                  "centered_by": f"{base}/dictionary.zarr/mean"})
    probe = np.asarray(acts[f"h{layer}"][steps - 1, :4]).reshape(4, -1) - mean
    scores, ids = cat.topk(probe, k=3, client=client)
    raster = read_raster(acts["spikes1"])
    return {
        "datasets": {"model": f"{base}/model.zarr", "activations": f"{base}/activations.zarr",
                     "dictionary": f"{base}/dictionary.zarr", "catalog": f"{base}/catalog.zarr"},
        "stored_states": {"checkpointed": steps // k * model.depth, "every_step": steps},
        "spikes": int(raster.sum()),
        "dictionary": {"objective_by_epoch": [round(o, 5) for o in res.objectives],
                       "error_by_epoch": [round(e, 5) for e in res.errors], "samples_per_s": round(res.samples_per_s)},
        "catalog_top3_of_last_step": [[(int(i), round(float(s), 3)) for i, s in zip(r_ids, r_sc, strict=True)]
                                      for r_ids, r_sc in zip(ids, scores, strict=True)],
        "info": format_info(acts.info()),
    }


def plot(ds: Dataset, out_dir: str) -> list[str]:
    """Mean activity per layer over time, one sample's units over time, spike rasters, and a learned dictionary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    dense = [n for n in ds.names if ds[n].ndim >= 3 and (ds[n].metadata.dimension_names or ("",))[0] == "time"]
    if dense:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name in dense:
            arr = ds[name]
            sub = np.asarray(arr[:, : min(arr.shape[1], 256)])
            axes[0].plot(sub.reshape(sub.shape[0], -1).mean(axis=1), label=name)
        axes[0].set(xlabel="time step", ylabel="mean activation", title="mean activity per layer")
        axes[0].legend()
        first = np.asarray(ds[dense[0]][:, 0]).reshape(ds[dense[0]].shape[0], -1)
        im = axes[1].imshow(first.T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
        axes[1].set(xlabel="time step", ylabel="unit", title=f"{dense[0]}, sample 0")
        fig.colorbar(im, ax=axes[1])
        paths.append(save_figure(fig, out_dir, "activations.png", dpi=110))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        vals = np.asarray(ds[dense[0]][-1]).ravel()
        ax.hist(vals, bins=100, color="#3b6ea8")
        ax.set(xlabel="activation", ylabel="count", title=f"{dense[0]} at the last step")
        paths.append(save_figure(fig, out_dir, "activations_hist.png", dpi=110))
    last = ds.commits.latest()
    if last is not None and "dictionary" in last.arrays:
        atoms = np.asarray(ds.commits.open(last)["dictionary"][:])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        errors = last.meta.get("errors", [])
        axes[0].plot(range(1, len(errors) + 1), errors, marker="o")
        axes[0].set(xlabel="iteration", ylabel="0.5 ||x - cD||^2 per row", title="dictionary learning")
        shown = atoms[:64]
        lim = float(np.abs(shown).max()) or 1.0
        im = axes[1].imshow(shown, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        axes[1].set(xlabel="unit", ylabel="atom", title=f"first {len(shown)} of {len(atoms)} atoms")
        fig.colorbar(im, ax=axes[1])
        paths.append(save_figure(fig, out_dir, "dictionary.png", dpi=110))
    for name in ds.names:
        arr = ds[name]
        if arr.attrs.get("layout") != "events":
            continue
        raster = read_raster(arr)
        t, u = np.nonzero(raster[:, : min(raster.shape[1], 2000)])
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.scatter(t, u, s=2, c="k", marker="|")
        ax.set(xlabel="time step (1 ms)", ylabel="unit", title=f"{name}: {int(raster.sum())} spikes")
        paths.append(save_figure(fig, out_dir, f"{name}_raster.png", dpi=110))
    return paths
