"""The foundation's end-to-end job: write a dataset with Dask, read it back through the tiers.

It builds a neuron-state dataset (membrane potentials of ``n_neurons``
neurons), writes it chunk by chunk from a lazy graph, reads it back twice
through a RAM and disk tier (the second read is served from RAM), and
returns a summary with ``neurochunk info``'s report.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from neurochunk.pipeline import compute_with_progress, read_array, tier_stats, write_array
from neurochunk.stores import Dataset, TierConfig

from .config import Field, Section
from .figures import save_figure
from .info import format_info
from .run import store_options

__all__ = ["PARAMS", "run", "plot"]

PARAMS = Section({
    "n_neurons": Field(int, 4_000_000, help="neurons in the state"),
    "chunk": Field(int, 500_000, help="neurons per chunk"),
    "seed": Field(int, 0),
})


def run(cfg: dict[str, Any], client: Any) -> dict[str, Any]:
    """Write, read back through the tiers, and describe a neuron-state dataset."""
    p = cfg["params"]
    store = cfg.get("store") or {"url": str(Path(tempfile.mkdtemp(prefix="neurochunk-demo-")) / "state.zarr")}
    opts = store_options(store)
    if "tiers" not in opts:
        opts["tiers"] = TierConfig(ram_bytes=512 * 2**20, disk_path=str(Path(tempfile.mkdtemp()) / "cache"))
    ds = Dataset.create(store["url"], "neuron_state", attrs={"model": "lif", "units": {"v": "mV"}},
                        overwrite=store.get("overwrite", True), **opts)
    rng = da.random.default_rng(p["seed"])
    v = (-60.0 + 10.0 * rng.random(p["n_neurons"], chunks=p["chunk"], dtype=np.float32)).astype(np.float32)
    show = bool(cfg.get("progress", True))
    compute_with_progress(client, write_array(v, ds, "v", dims=("neuron",), compute=False), "write", show)
    ds = Dataset.open(store["url"], kind="neuron_state", **opts)
    first = float(compute_with_progress(client, read_array(ds, "v").mean(), "read (cold)", show))
    cold = tier_stats(client, ds.tiers.token)
    second = float(compute_with_progress(client, read_array(ds, "v").mean(), "read (warm)", show))
    warm = tier_stats(client, ds.tiers.token)
    info = ds.info()
    info["tiers"] = warm
    return {"url": str(ds.url), "mean_v_mV": round(first, 4), "reread_equal": first == second,
            "origin_reads": {"first": cold["origin"]["requests"],
                             "second": warm["origin"]["requests"] - cold["origin"]["requests"]},
            "ram_hits_second_read": warm["ram"]["hits"] - cold["ram"]["hits"],
            "info": format_info(info)}


def plot(ds: Dataset, out_dir: str) -> list[str]:
    """A histogram of every 1-D state variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name in ds.names:
        arr = ds[name]
        if arr.ndim != 1:
            continue
        sample = arr[: min(arr.shape[0], 1_000_000)]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(np.asarray(sample), bins=100, color="#3b6ea8")
        ax.set(xlabel=name, ylabel="neurons", title=f"{name} of {ds.url}")
        paths.append(save_figure(fig, out_dir, f"{name}_hist.png"))
    return paths
