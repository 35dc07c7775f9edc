"""The memory-bank job: ingest a synthetic bank in batches, run an epoch of fused iterations, report.

Memories get the deterministic ids ``keyed_ids(seed, n_memories)`` and uniform
strengths; each iteration decays every strength by ``decay_rate`` and
reinforces ``reinforce_fraction`` of the memories (ids and deltas keyed by
(seed, iteration), so a rerun or a recomputed partition sees the same
stream). The bank commits every ``commit_every`` iterations; ``resume: true``
finishes an epoch an earlier run left unfinished.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from neurochunk.kernels import memory as K
from neurochunk.pipeline.memorybank import KeyedSource, MemoryBank
from neurochunk.stores import Dataset

from .config import Field, Section
from .figures import save_figure
from .run import store_options

__all__ = ["PARAMS", "default_capacity", "plot", "run"]

PARAMS = Section({
    "n_memories": Field(int, 1_000_000, help="memories to ingest"),
    "partitions": Field(int, 8, help="hash partitions (chunks)"),
    "capacity": Field(int, 0, help="slots per partition; 0 = n_memories / partitions with headroom"),
    "payload_dim": Field(int, 0, help="floats of payload (embedding) per memory"),
    "ingest_batch": Field(int, 250_000, help="memories per ingest batch"),
    "iterations": Field(int, 50),
    "commit_every": Field(int, 10, help="iterations between commits (0: only at the end)"),
    "decay_rate": Field(float, 0.02),
    "reinforce_fraction": Field(float, 0.01, help="share of memories reinforced per iteration"),
    "max_delta": Field(float, 0.2),
    "k": Field(int, 100, help="top-k ranked each iteration"),
    "bins": Field(int, 64, help="histogram bins over [0, 1]"),
    "seed": Field(int, 0),
    "replica_url": Field(str, None, help="a second copy of every commit (path or s3://)"),
    "resume": Field(bool, False, help="finish the epoch of an existing bank instead of creating one"),
    "scaled": Field(bool, False, help="lazily scaled strengths between commits (O(1) decay; one float32 rounding "
                                      "of the decay product instead of one per iteration)"),
})


def default_capacity(n_memories: int, partitions: int) -> int:
    """Slots per partition: the mean load plus six standard deviations of a uniform hash."""
    mean = n_memories / partitions
    return math.ceil(mean + 6 * math.sqrt(mean) + 16)


def _source(p: dict[str, Any]) -> KeyedSource:
    draws = max(1, round(p["n_memories"] * p["reinforce_fraction"]))
    return KeyedSource(seed=p["seed"] + 1, id_seed=p["seed"], n_pool=p["n_memories"], n_draws=draws,
                       max_delta=p["max_delta"])


def run(cfg: dict[str, Any], client: Any) -> dict[str, Any]:
    """Create (or resume) a bank, ingest, run one epoch and summarise it."""
    p = cfg["params"]
    store = cfg.get("store") or {"url": str(Path(tempfile.mkdtemp(prefix="neurochunk-memories-")) / "bank.zarr")}
    opts = store_options(store)
    replicas = [p["replica_url"]] if p["replica_url"] else []
    source = _source(p)
    progress = bool(cfg.get("progress", True))
    if p["resume"]:
        bank = MemoryBank.open(store["url"], replicas=replicas, client=client, **opts)
        report = bank.resume_epoch(source, progress=progress)
    else:
        capacity = p["capacity"] or default_capacity(p["n_memories"], p["partitions"])
        bank = MemoryBank.create(store["url"], partitions=p["partitions"], capacity=capacity,
                                 payload_dim=p["payload_dim"], replicas=replicas,
                                 overwrite=store.get("overwrite", True), client=client, **opts)
        ids = K.keyed_ids(p["seed"], p["n_memories"])

        def _batches():
            rng = np.random.default_rng(p["seed"])
            for lo in range(0, p["n_memories"], p["ingest_batch"]):
                hi = min(lo + p["ingest_batch"], p["n_memories"])
                pay = rng.standard_normal((hi - lo, p["payload_dim"])).astype(np.float32) if p["payload_dim"] else None
                yield ids[lo:hi], rng.random(hi - lo, dtype=np.float32), pay

        bank.ingest_batches(_batches())
        report = bank.run_epoch(p["iterations"], source, decay_rate=p["decay_rate"], commit_every=p["commit_every"],
                                k=p["k"], bins=p["bins"], progress=progress, scaled=p["scaled"])
    summary: dict[str, Any] = {"url": str(bank.replicas.primary.url), "memories": bank.n_memories,
                               "iteration": bank.iteration, "commit": bank.commit_name}
    if report is not None:
        summary.update({
            "iterations_run": report.n_iterations, "epoch_s": round(report.seconds, 3),
            "ms_per_iteration": round(1e3 * report.seconds / max(report.n_iterations, 1), 3),
            "final_mean_strength": round(float(report.means[-1]), 6),
            "final_max_strength": round(float(report.maxima[-1]), 6),
            "top5_ids": [int(i) for i in report.top_ids[-1][:5]],
            "graph_tasks_per_commit": report.graph_sizes[0], "commits": report.commits,
            "partitions_read": report.partitions_read,
        })
    return summary


def plot(ds: Dataset, out_dir: str) -> list[str]:
    """The strength histogram (log counts) and reinforcement counts of the bank's latest commit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bank = MemoryBank.from_dataset(ds)
    hist = np.zeros(100, np.int64)
    counts = np.zeros(0, np.int64)
    for part in bank.iter_partitions():
        hist += K.quality_stats(part.strength, 100)[2]
        new = np.bincount(part.count)
        size = max(len(new), len(counts))
        counts = np.pad(counts, (0, size - len(counts))) + np.pad(new, (0, size - len(new)))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    edges = np.linspace(0, 1, 101)
    ax.bar(edges[:-1], hist, width=0.01, align="edge", color="#3b6ea8")
    ax.set(xlabel="strength", ylabel="memories", yscale="log",
           title=f"{bank.n_memories:,} memories, iteration {bank.iteration}")
    bx.bar(np.arange(len(counts)), counts, color="#a8603b")
    bx.set(xlabel="times reinforced", ylabel="memories", yscale="log", title="reinforcement counts")
    return [save_figure(fig, out_dir, "strength_hist.png")]
