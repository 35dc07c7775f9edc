"""Cluster-layer benchmarks: time to first task, and per-task scheduling overhead.

Scenarios (one per flag):

``--startup``
    Wall time from launching ``neurochunk run CONFIG`` (a fresh process, imports
    included) to the first task starting on a worker, for the embedded default
    (LocalCluster), the local Slurm through dask-jobqueue (when ``sbatch`` and a
    node are up), and with ``--gpu`` dask-cuda's LocalCUDACluster. A scheduler
    preload records the first task's start (the worker's ``startstops``), so
    nothing in neurochunk is changed to measure it.
``--overhead``
    Per-task cost of neurochunk's graphs (``read_array`` over a tiered store of
    many tiny chunks, and ``write_array`` of them) against plain dask on the same
    cluster: ``da.ones(...).sum()`` (pure scheduling) and ``da.from_zarr`` on
    the same Zarr array, at worker-saturation 1.1 (default) and ``inf``.

Usage: ``python benchmarks/cluster.py --startup`` / ``--overhead`` [``--repeats N``].
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PRELOAD = '''
import json, os
from distributed.diagnostics.plugin import SchedulerPlugin

class FirstTask(SchedulerPlugin):
    name = "neurochunk-bench-first-task"
    done = False
    def transition(self, key, start, finish, *args, **kwargs):
        if self.done or finish != "memory":
            return
        starts = [s["start"] for s in kwargs.get("startstops", ()) if s.get("action") == "compute"]
        if starts:
            self.done = True
            with open(os.environ["NC_BENCH_FIRST_TASK"], "w") as fh:
                json.dump({"start": min(starts)}, fh)

def dask_setup(scheduler):
    scheduler.add_plugin(FirstTask())
'''


def _slurm_ready() -> bool:
    if shutil.which("sbatch") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and "idle" in out.stdout.split()


def _startup_once(cluster: dict, work: Path) -> tuple[float, float]:
    """(seconds to first task, seconds for the whole run) of one ``neurochunk run``."""
    cfg = {"workflow": "demo", "store": {"url": str(work / "state.zarr"), "overwrite": True},
           "cluster": {"dashboard_address": "127.0.0.1:0", **cluster}, "progress": False,
           "params": {"n_neurons": 100_000, "chunk": 25_000}}
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    preload = work / "first_task_preload.py"
    preload.write_text(PRELOAD)
    marker = work / "first_task.json"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "NC_BENCH_FIRST_TASK": str(marker),
           "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": json.dumps([str(preload)])}
    t0 = time.time()
    run = subprocess.run([sys.executable, "-m", "neurochunk.workflows.cli", "run", str(path)],
                         capture_output=True, text=True, env=env, cwd=work, timeout=300, check=False)
    total = time.time() - t0
    if run.returncode != 0:
        raise RuntimeError(f"neurochunk run failed:\n{run.stderr[-3000:]}")
    return json.loads(marker.read_text())["start"] - t0, total


def startup(repeats: int, gpu: bool) -> None:
    scenarios: list[tuple[str, dict]] = [("local default (LocalCluster)", {})]
    if _slurm_ready():
        scenarios.append(("local Slurm (SLURMCluster, 1 job)", {"jobqueue": {
            "kind": "slurm", "cores": 1, "memory": "2GiB", "walltime": "00:10:00", "interface": "lo",
            "min_jobs": 1, "max_jobs": 1}}))
    else:
        print("# no Slurm node up: the Slurm row is left out (bash .ci/setup-slurm.sh)", file=sys.stderr)
    if gpu:
        scenarios.append(("LocalCUDACluster", {"gpu": True}))
    print("| cluster | runs | first task after launch, median (s) | min (s) | whole demo run, median (s) |")
    print("|---|---|---|---|---|")
    for label, cluster in scenarios:
        firsts, totals = [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="nc-bench-") as work:
                first, total = _startup_once(cluster, Path(work))
            firsts.append(first)
            totals.append(total)
        print(f"| {label} | {repeats} | {statistics.median(firsts):.2f} | {min(firsts):.2f} | "
              f"{statistics.median(totals):.2f} |", flush=True)


def overhead(repeats: int, n_chunks: int) -> None:
    import dask
    import dask.array as da
    import numpy as np
    import zarr
    from neurochunk.cluster import connect
    from neurochunk.pipeline import read_array, write_array
    from neurochunk.stores import Dataset, TierConfig

    chunk = 256
    n = n_chunks * chunk
    work = Path(tempfile.mkdtemp(prefix="nc-bench-overhead-"))
    print(f"# {n_chunks} chunks of {chunk} float32; wall / tasks; median of {repeats}; "
          f"1 worker x 2 threads (processes)")
    print("| graph | worker-saturation | tasks | wall median (s) | per task (ms) |")
    print("|---|---|---|---|---|")
    try:
        for saturation in ("1.1", "inf"):
            with dask.config.set({"distributed.scheduler.worker-saturation": float(saturation)}):
                client = connect({"n_workers": 1, "threads_per_worker": 2, "dashboard_address": "127.0.0.1:0"},
                                 quiet=True)
                try:
                    tiers = TierConfig(ram_bytes=256 * 2**20, disk_path=str(work / "cache"))
                    url = str(work / "state.zarr")
                    x = da.random.default_rng(0).random(n, chunks=chunk, dtype=np.float32)

                    def nc_write(url: str = url, tiers: TierConfig = tiers, x: da.Array = x) -> object:
                        ds = Dataset.create(url, "neuron_state", attrs={"model": "lif", "units": {"v": "mV"}},
                                            overwrite=True, tiers=tiers)
                        return write_array(x, ds, "v", dims=("neuron",), compute=False)

                    ds = Dataset.create(url, "neuron_state", attrs={"model": "lif", "units": {"v": "mV"}},
                                        overwrite=True, tiers=tiers)
                    write_array(x, ds, "v", dims=("neuron",))
                    ds = Dataset.open(url, tiers=tiers)
                    plain_arr = zarr.open_array(f"{url}/v", mode="r")
                    graphs = {
                        "plain dask: ones().sum() (scheduling only)": lambda: da.ones(n, chunks=chunk).sum(),
                        "plain dask: from_zarr(...).sum()": lambda a=plain_arr: da.from_zarr(a).sum(),
                        "neurochunk: read_array(tiered).sum()": lambda ds=ds: read_array(ds, "v").sum(),
                        "plain dask: random -> to_zarr": lambda x=x: da.to_zarr(
                            x, str(work / "plain.zarr"), overwrite=True, compute=False),
                        "neurochunk: random -> write_array": nc_write,
                    }
                    for label, make in graphs.items():
                        walls = []
                        tasks = 0
                        for _ in range(repeats + 1):  # the first run warms caches and task durations
                            graph = make()
                            tasks = len(graph.__dask_graph__())
                            t0 = time.perf_counter()
                            client.compute(graph, sync=True)
                            walls.append(time.perf_counter() - t0)
                        wall = statistics.median(walls[1:])
                        print(f"| {label} | {saturation} | {tasks} | {wall:.3f} | {1000 * wall / tasks:.3f} |",
                              flush=True)
                finally:
                    client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--startup", action="store_true", help="time from `neurochunk run` to the first task")
    parser.add_argument("--overhead", action="store_true", help="per-task overhead vs plain dask")
    parser.add_argument("--gpu", action="store_true", help="also LocalCUDACluster (GPU machine)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=1000, help="chunks in the overhead graphs")
    args = parser.parse_args()
    if not (args.startup or args.overhead):
        parser.error("give --startup and/or --overhead")
    if args.startup:
        startup(args.repeats, args.gpu)
    if args.overhead:
        overhead(args.repeats, args.chunks)


if __name__ == "__main__":
    main()
