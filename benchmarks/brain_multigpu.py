"""Brunel A on several GPUs of one host through the Dask pipeline's GPU backend (dask-cuda, one worker per GPU).

Scenarios (one command each; each prints its rows as they finish and a table at the end):

``python benchmarks/brain_multigpu.py weak --per-gpu 50000000 --gpus 1,2,4``
    Weak scaling: ``per-gpu x G`` neurons on G GPUs, one chunk per GPU; efficiency = T(1) / T(G).
``python benchmarks/brain_multigpu.py strong --n 1000000000 --gpus 1,2,4``
    Strong scaling: one network on G GPUs, one chunk per GPU; efficiency = T(1) / (G x T(G)).

``--exchange direct`` (the GPU default) lets every chunk's window task read every other chunk's spikes
itself instead of one gathered array; the spikes stay on the GPUs and the cluster's protocol moves them
(``--protocol tcp``: through host memory; ``ucx``: dask-cuda over distributed-ucxx, GPU to GPU over
NVLink). ``--overlap 1,2`` times each value on the same cluster: ``k`` windows per smallest delay, a
window's spikes sent while the next ``k - 1`` windows compute (see ``pipeline.simulation.SpikingStep``).

The network is ``benchmarks/brain.py gpu``'s: 1,000 E + 250 I inputs per neuron (procedural fixed
probability), Poisson drive, delay 1.5 ms (exchange window 16 steps), v uniform in [10, 20] mV at the
start. Each configuration starts its own LocalCUDACluster on the first G GPUs (dask-cuda spilling off:
the state is advanced in place), creates the state on the workers, runs a 2-step warm-up batch (kernel
compilation), then times one batch of ``--sim-ms`` through ``Runner``, not written to Zarr. ``--record
spikes``: every spike of the batch fetched by the driver straight from the worker holding each chunk's
part and merged in (step, neuron) order there; ``--record rates``: only spikes per (step, population),
counted on the GPUs. ``--record spikes,rates`` times both on one cluster, the second continuing the
first's network (after its own 2-step warm-up). "GPU busy" is the largest per-worker sum of the window
and delivery tasks' compute time over the batch's wall time (the rest is the exchange: sending spikes
between chunks and to the driver, scheduling).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import defaultdict


_ROWS: list[dict] = []


def _cluster(n_gpus: int, protocol: str = "tcp", rmm_pool: str | None = None):
    """``protocol``: tcp, ucx (UCX picks its transports) or ucx-nvlink (UCX told tcp, cuda_copy and cuda_ipc)."""
    from dask_cuda import LocalCUDACluster
    from distributed import Client

    name, _, flavour = protocol.partition("-")
    transports = {"enable_nvlink": True, "enable_tcp_over_ucx": True} if flavour == "nvlink" else {}
    cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(n_gpus)), n_workers=n_gpus,
                               threads_per_worker=1, device_memory_limit=0, memory_limit=0, host="127.0.0.1",
                               dashboard_address=":0", protocol=name, rmm_pool_size=rmm_pool, **transports)
    client = Client(cluster)
    print(f"# {n_gpus} GPU workers: {sorted(client.scheduler_info()['workers'])}", flush=True)
    return cluster, client


def _pool_gib() -> float:
    import cupy

    return cupy.get_default_memory_pool().total_bytes() / 2**30


def _busy(task_stream: list[dict], wall: float, action: str = "compute") -> float:
    """The largest per-worker sum of the window and deliver tasks' ``action`` time (compute, transfer) / wall."""
    per_worker: dict[str, float] = defaultdict(float)
    for t in task_stream:
        name = str(t["key"][0] if isinstance(t["key"], tuple) else t["key"])
        if name.startswith(("window-", "deliver-")):
            per_worker[t["worker"]] += sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == action)
    return max(per_worker.values(), default=0.0) / wall


def _timed(runner, client, steps: int) -> tuple[float, float, float, int]:
    """Wall seconds, GPU busy and transfer-wait fractions and spikes of one batch of ``steps``."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        t1 = time.perf_counter()
        runner.run(steps)
        wall = time.perf_counter() - t1
    out = runner.reports[-1].outputs
    spikes = int(out["counts"].sum()) if "counts" in out else len(out["spikes"][1])
    return wall, _busy(ts.data, wall), _busy(ts.data, wall, "transfer"), spikes


def run_config(mode: str, n: int, n_gpus: int, sim_ms: float, warm_steps: int, exchange: str = "direct",
               records: tuple[str, ...] = ("spikes",), protocol: str = "tcp",
               overlaps: tuple[int, ...] = (1,), rmm_pool: str | None = None, block: int | None = None) -> list[dict]:
    from distributed import wait

    from neurochunk.pipeline.network import brunel_network
    from neurochunk.pipeline.runner import Runner
    from neurochunk.pipeline.simulation import SpikingStep, initial_state

    net = brunel_network(n, rule="fixed_probability", seed=1, v_init={"uniform": [10.0, 20.0]},
                         chunk=math.ceil(n / n_gpus), epsilon=1000 / (n * 4 // 5), conn_block=block)
    plan = net.plan()
    steps = int(round(sim_ms / plan.dt))
    t_start = time.perf_counter()
    pool = rmm_pool if protocol.startswith("ucx") else None
    cluster, client = _cluster(n_gpus, protocol, pool)
    rows = []
    variants = [(o, r) for o in (overlaps if n_gpus > 1 else overlaps[:1]) for r in records]
    try:
        t0 = time.perf_counter()
        state = initial_state(plan, "gpu", client)
        wait(list(state.arrays.values()))
        init_s = time.perf_counter() - t0
        setup_s = time.perf_counter() - t_start
        for overlap, record in variants:  # each continues the last one's state, after its own warm-up
            step = SpikingStep(plan, batch_steps=steps, backend="gpu", exchange=exchange, record=record,
                               overlap=overlap)
            runner = Runner(step, state, client=client, progress=False)
            runner.run(warm_steps)
            wall, busy, transfer, spikes = _timed(runner, client, steps)
            state = runner.state
            gib = max(client.run(_pool_gib).values())
            rows.append({"mode": mode, "exchange": exchange, "record": record, "protocol": protocol,
                         "rmm_pool": pool, "overlap": overlap, "gpus": n_gpus, "neurons": n,
                         "per_gpu": n // n_gpus, "chunks": len(plan.chunks),
                         "window_steps": plan.min_delay // overlap if plan.window else min(steps, step.max_task_steps),
                         "sim_ms": steps * plan.dt, "wall_s": wall, "compute_s": runner.reports[-1].compute_s,
                         "s_per_sim_s": wall / (steps * plan.dt / 1e3), "spikes": spikes,
                         "events_per_s": spikes * 1250.0 / wall, "rate_hz": spikes / n / (steps * plan.dt / 1e3),
                         "gpu_busy": busy, "transfer": transfer, "init_s": init_s, "gib_per_gpu": gib, "setup_s": setup_s,
                         "conn_block": plan.net.conn_block})
            _ROWS.append(rows[-1])
            print("ROW " + json.dumps(rows[-1]), flush=True)
    finally:
        client.close()
        cluster.close()
    return rows


def _table(rows: list[dict], mode: str) -> None:
    for record in dict.fromkeys(r["record"] for r in rows):
        of = [r for r in rows if r["record"] == record]
        base = next((r for r in of if r["gpus"] == 1), None)
        for kind in dict.fromkeys((r["protocol"], r["overlap"]) for r in of if r["gpus"] > 1):
            same = sorted((r for r in of if r["gpus"] > 1 and (r["protocol"], r["overlap"]) == kind),
                          key=lambda r: r["gpus"])
            _table_of([base] * (base is not None) + same, mode, kind)


def _table_of(rows: list[dict], mode: str, kind: tuple[str, int]) -> None:
    base = next((r for r in rows if r["gpus"] == 1), None)
    print(f"\n{mode} scaling (Brunel A, procedural, 1,250 synapses per neuron; exchange: {rows[-1]['exchange']}; "
          f"protocol: {kind[0]}{' with an RMM pool of ' + rows[-1]['rmm_pool'] if rows[-1].get('rmm_pool') else ''}; "
          f"overlap: {kind[1]}; record: {rows[0]['record']})")
    print(f"{'GPUs':>4} {'neurons':>14} {'per GPU':>13} {'sim ms':>6} {'wall s':>8} {'s/sim s':>9} {'events/s':>9} "
          f"{'rate Hz':>7} {'GPU busy':>8} {'xfer':>5} {'eff.':>6} {'GiB/GPU':>7} {'init s':>6}")
    for r in rows:
        if base is None:
            eff = float("nan")
        elif mode == "weak":
            eff = base["s_per_sim_s"] / r["s_per_sim_s"]
        else:
            eff = base["s_per_sim_s"] / (r["gpus"] * r["s_per_sim_s"])
        print(f"{r['gpus']:>4} {r['neurons']:>14,} {r['per_gpu']:>13,} {r['sim_ms']:>6.1f} {r['wall_s']:>8.3f} "
              f"{r['s_per_sim_s']:>9.1f} {r['events_per_s']:>9.3g} {r['rate_hz']:>7.1f} {100 * r['gpu_busy']:>7.0f}% {100 * r.get('transfer', 0):>4.0f}% "
              f"{eff:>6.2f} {r['gib_per_gpu']:>7.1f} {r['init_s']:>6.1f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("weak")
    w.add_argument("--per-gpu", type=float, default=5e7, help="neurons per GPU")
    s = sub.add_parser("strong")
    s.add_argument("--n", type=float, default=1e9, help="neurons of the network")
    for q in (w, s):
        q.add_argument("--gpus", default="1,2,4", help="GPU counts to run (each at most the GPUs present)")
        q.add_argument("--sim-ms", type=float, default=3.2, help="simulated ms of the timed batch")
        q.add_argument("--warm-steps", type=int, default=2)
        q.add_argument("--exchange", default="direct", choices=("gather", "direct"),
                       help="spikes gathered by one task per window, or read by every chunk from every chunk")
        q.add_argument("--protocol", default="tcp",
                       help="comma-separated worker protocols, each its own cluster: tcp, ucx (UCX picks its "
                            "transports), ucx-nvlink (tcp, cuda_copy and cuda_ipc named)")
        q.add_argument("--overlap", default="1", help="comma-separated windows per smallest delay, one cluster")
        q.add_argument("--block", type=int, default=None,
                       help="generator target block (default: the network's; brain_gpu.py uses 2097152 at 1e9)")
        q.add_argument("--rmm-pool", default="1GiB",
                       help="ucx clusters: each worker's RMM pool, where received GPU buffers come from ('none': off)")
        q.add_argument("--record", default="spikes",
                       help="comma-separated record modes timed in turn on one cluster: spikes (every spike to the "
                            "driver) and/or rates (spikes per step and population, counted on the workers)")
        q.add_argument("--out", default=None, help="append the rows as JSON lines to this file")
    args = p.parse_args()
    import cupy

    present = cupy.cuda.runtime.getDeviceCount()
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"{present} x {props['name'].decode()} ({props['totalGlobalMem'] / 2**30:.0f} GiB); "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}; load {os.getloadavg()}", flush=True)
    for g in [int(x) for x in args.gpus.split(",")]:
        if g > present:
            print(f"skip {g} GPUs: only {present} present", flush=True)
            continue
        n = int(args.per_gpu * g) if args.mode == "weak" else int(args.n)
        for protocol in args.protocol.split(",") if g > 1 else args.protocol.split(",")[:1]:
            try:
                rows = run_config(args.mode, n, g, args.sim_ms, args.warm_steps, args.exchange,
                                  tuple(args.record.split(",")), protocol,
                                  tuple(int(x) for x in args.overlap.split(",")),
                                  None if args.rmm_pool == "none" else args.rmm_pool, args.block)
            except Exception as exc:  # noqa: BLE001 - report the failed configuration, keep the others
                print(f"FAILED {args.mode} {g} GPUs {n:,} neurons {protocol}: {type(exc).__name__}: {exc}",
                      flush=True)
                continue
            if args.out:
                with open(args.out, "a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
    _table(_ROWS, args.mode)


if __name__ == "__main__":
    main()
