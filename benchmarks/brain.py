"""Spiking-network benchmarks: neurochunk against Brian2 2.9 in the same run.

Scenarios (one command each):

``python benchmarks/brain.py coba``
    COBA-4000 (Vogels-Abbott), 1 s of biological time: neurochunk's kernel loop alone and the whole
    run through the Dask Runner on a LocalCluster (spikes recorded to Zarr), against Brian2's numpy
    and cython runtimes and cpp_standalone (loop alone and whole process).
``python benchmarks/brain.py stream --n 20000000 --sim-ms 3.2``
    Out-of-core Brunel A (procedural): the state streams through a double-buffered Zarr dataset every
    exchange window on 2 worker processes capped at 1 GiB each; wall time, events/s, workers' peak RSS.
``python benchmarks/brain.py brunel --sizes 12500,125000,1250000,12500000 --events-budget 5e8``
    Brunel (2000) A with 1,000 E + 250 I inputs per neuron, procedural fixed probability, Poisson
    background: synaptic events per second of the single-thread kernel loop and of ``simulate()`` on a
    LocalCluster (1 worker x 2 threads, 8 GiB, 2 chunks exchanging every 1.6 ms, spikes to Zarr), wall
    seconds per simulated ms, peak RSS; Brian2 (cpp_standalone's simulation loop, address space capped
    at 8 GiB) on the sizes up to ``--brian-max``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BRIAN2 = ROOT / ".venv-brian2" / "bin" / "python"


def brian2(cfg: dict, mem_gib: float | None = None) -> dict | None:
    """Run ``brian2_ref.py`` on ``cfg`` in Brian2's venv; ``mem_gib`` caps its address space (and its children's)."""
    if not BRIAN2.exists():
        return None
    t0 = time.perf_counter()

    def cap() -> None:
        if mem_gib:
            lim = int(mem_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    proc = subprocess.run([str(BRIAN2), str(ROOT / "benchmarks" / "brian2_ref.py"), json.dumps(cfg)],
                          capture_output=True, text=True, preexec_fn=cap, check=False)
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
        return {"error": tail[:120]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def _kernel_loop(net, steps: int) -> tuple[float, np.ndarray, np.ndarray]:
    from neurochunk.pipeline.simulation import EMPTY_CONN, _chunk_args, _init_chunk, _window_task

    plan = net.plan()
    args = _chunk_args(plan, 0)
    _window_task(args, EMPTY_CONN, *_init_chunk(plan, 0), None, 0, 10)  # compile (cached on disk)
    state = _init_chunk(plan, 0)
    t0 = time.perf_counter()
    out = _window_task(args, EMPTY_CONN, *state, None, 0, steps)
    return time.perf_counter() - t0, out[5][0], out[5][1]


def _stored_loop(repeat: int) -> float:
    from neurochunk.pipeline.network import coba_network
    from neurochunk.pipeline.simulation import _chunk_args, _init_chunk, _window_task
    from neurochunk.pipeline.synapses import _load_chunk, build_connectivity

    plan = coba_network(seed=1, connectivity="stored").plan()
    conn = _load_chunk(plan, build_connectivity(plan, tempfile.mkdtemp() + "/c"), 0)
    _window_task(_chunk_args(plan, 0), conn, *_init_chunk(plan, 0), None, 0, 10)
    times = []
    for _ in range(repeat):
        state = _init_chunk(plan, 0)
        t0 = time.perf_counter()
        _window_task(_chunk_args(plan, 0), conn, *state, None, 0, 10_000)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def coba(args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    from neurochunk.pipeline.network import coba_network
    from neurochunk.pipeline.recording import simulate

    rows = []
    loops = [_kernel_loop(coba_network(seed=1), 10_000)[0] for _ in range(args.repeat)]
    rows.append(("neurochunk kernel loop (1 chunk, 1 thread), procedural", float(np.median(loops)), None))
    rows.append(("neurochunk kernel loop (1 chunk, 1 thread), stored CSR", _stored_loop(args.repeat), None))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl, \
            Client(cl) as client:
        walls = []
        for r in range(args.repeat):
            d = tempfile.mkdtemp()
            t0 = time.perf_counter()
            simulate(coba_network(seed=1), 1000, spikes_url=f"{d}/s.zarr", client=client, progress=False,
                     batch_ms=1000)
            walls.append(time.perf_counter() - t0)
        rows.append(("neurochunk simulate() on LocalCluster, spikes to Zarr", float(np.median(walls)), None))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from neurochunk.pipeline.network import coba_network;"
                    "from neurochunk.pipeline.recording import simulate;import tempfile;"
                    "simulate(coba_network(seed=1),1000,spikes_url=tempfile.mkdtemp()+'/s.zarr',progress=False,"
                    "batch_ms=1000)"], check=True, capture_output=True)
    rows.append(("neurochunk whole process (python -c simulate, local threads)", time.perf_counter() - t0, None))
    for target in args.brian_targets.split(","):
        ref = brian2({"net": "coba", "duration_ms": 1000, "target": target, "seed": 1})
        if ref is None or "error" in ref:
            rows.append((f"Brian2 {target}", None, ref and ref.get("error")))
            continue
        rows.append((f"Brian2 {target}: run()", ref["run_s"], f"rate {ref['rate']:.1f} Hz"))
        if ref.get("loop_s"):
            rows.append((f"Brian2 {target}: simulation loop alone", ref["loop_s"], None))
        rows.append((f"Brian2 {target}: whole process", ref["process_s"], None))
    print(f"COBA-4000, 1 s biological time, dt 0.1 ms ({os.cpu_count()} cores; median of {args.repeat})")
    print(f"{'what':<62} {'wall s':>9}  note")
    for what, s, note in rows:
        print(f"{what:<62} {'-' if s is None else f'{s:9.3f}'}  {note or ''}")


def _brunel_net(n: int, chunk: int | None = None):
    from neurochunk.pipeline.network import brunel_network

    return brunel_network(n, rule="fixed_probability", seed=1, v_init={"uniform": [10.0, 20.0]}, chunk=chunk or n,
                          epsilon=1000 / (n * 4 // 5))


def _brunel_events(n: int, gid: np.ndarray) -> float:
    """Synaptic events of spikes ``gid``: each spike times its population's mean out-degree."""
    n_e = n * 4 // 5
    return float(np.where(gid < n_e, 1000 / n_e * n, 250 / (n - n_e) * n).sum())


def _simulate_cores(client, n: int, sim_ms: float, chunks: int) -> tuple[float, float, float]:
    """``(wall s, events, rate Hz)`` of ``simulate()`` on ``client``, the network split in ``chunks``."""
    from neurochunk.pipeline.recording import read_spikes, simulate

    chunk = -(-n // chunks)
    net = _brunel_net(n, chunk)
    d = tempfile.mkdtemp()
    simulate(_brunel_net(min(n, 12500), min(n, 12500) // chunks), 1.6, spikes_url=f"{d}/warm.zarr", client=client,
             progress=False)  # numba's cached kernels loaded in the workers
    t0 = time.perf_counter()
    simulate(net, sim_ms, spikes_url=f"{d}/s.zarr", client=client, progress=False, batch_ms=max(sim_ms, 100.0))
    wall = time.perf_counter() - t0
    _, gid, _ = read_spikes(f"{d}/s.zarr")
    return wall, _brunel_events(n, gid), len(gid) / n / (sim_ms / 1e3)


def brunel(args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    from neurochunk.pipeline.recording import spike_stats

    print(f"Brunel A, procedural fixed probability (1,000 E + 250 I inputs), {os.cpu_count()} cores; "
          f"simulate(): LocalCluster 1 worker x {args.threads} threads, memory_limit {args.memory_limit}, "
          f"1.6 ms exchange windows between chunks")
    print(f"{'neurons':>11} {'sim ms':>7} | {'kernel s':>8} {'events/s':>9} {'rate Hz':>7} | {'chunks':>6} "
          f"{'simulate s':>10} {'s/sim ms':>8} {'events/s':>9} {'rate Hz':>7} {'peak RSS GiB':>12} | "
          f"{'Brian2 s/sim ms':>15} {'events/s':>9} {'rate Hz':>7}")
    with LocalCluster(n_workers=1, threads_per_worker=args.threads, processes=False, dashboard_address=None,
                      memory_limit=args.memory_limit) as cl, Client(cl) as client:
        for n in [int(float(x)) for x in args.sizes.split(",")]:
            sim_ms = max(args.min_ms, args.events_budget / (n * 1250 * 40e-3))
            steps = round(sim_ms / 0.1)
            wall_k, _, gid = _kernel_loop(_brunel_net(n), steps) if n <= args.kernel_max else (None, None, None)
            kern = (f"{wall_k:8.2f} {_brunel_events(n, gid) / wall_k:9.3g} "
                    f"{spike_stats(np.zeros(len(gid)), gid, {'all': [0, n]}, sim_ms, 0)['rate']:7.1f}"
                    if wall_k is not None else f"{'-':>8} {'-':>9} {'-':>7}")
            ref_txt = f"{'not run':>15} {'':>9} {'':>7}"
            if n <= args.brian_max:
                ref = brian2({"net": "brunel", "n": n, "duration_ms": sim_ms, "target": args.brian_target,
                              "rule": "fixed_probability", "seed": 1, "v_uniform": [10, 20],
                              "epsilon": 1000 / (n * 4 // 5)}, mem_gib=args.brian_mem_gib)
                if ref and "error" not in ref:
                    loop = ref.get("loop_s") or ref["run_s"]  # cpp_standalone: its simulation loop alone
                    ev = ref["n_spikes"] * ref["n_synapses"] / n  # spikes x mean out-degree
                    ref_txt = f"{loop / sim_ms:15.4f} {ev / loop:9.3g} {ref['rate']:7.1f}"
                else:
                    ref_txt = f"{'failed':>15} {'':>9} {'':>7}  {ref and ref.get('error')}"
            for chunks in [int(c) for c in args.chunks.split(",")]:
                wall_s, events, rate = _simulate_cores(client, n, sim_ms, chunks)
                print(f"{n:>11,} {sim_ms:7.1f} | {kern} | {chunks:>6} {wall_s:10.2f} {wall_s / sim_ms:8.4f} "
                      f"{events / wall_s:9.3g} {rate:7.1f} {_peak_rss():12.2f} | {ref_txt}", flush=True)


def bandwidth_of_device() -> float:
    """The GPU's measured copy bandwidth (``benchmarks/brain_gpu.py`` measures it the same way for its tables)."""
    from brain_gpu import bandwidth

    return bandwidth()


def _peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def stream(args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    from neurochunk.pipeline.network import brunel_network
    from neurochunk.pipeline.recording import read_spikes, spike_stats
    from neurochunk.pipeline.streaming import simulate_streaming

    n = args.n
    n_e = n * 4 // 5
    net = brunel_network(n, rule="fixed_probability", seed=1, v_init={"uniform": [10.0, 20.0]}, chunk=args.chunk,
                         epsilon=1000 / n_e)
    plan = net.plan()
    state_gib = n * (4 * 5 + 4 * 2 * plan.n_slots) / 2**30
    d = args.dir or tempfile.mkdtemp()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit,
                      dashboard_address=None) as cl, Client(cl) as client:
        t0 = time.perf_counter()
        out = simulate_streaming(net, args.sim_ms, state_url=f"{d}/state.zarr", spikes_url=f"{d}/spikes.zarr",
                                 client=client, progress=True, codec=args.codec,
                                 broadcast_bytes=args.broadcast_bytes)
        wall = time.perf_counter() - t0
        rss = client.run(_peak_rss)
    t, gid, _ = read_spikes(f"{d}/spikes.zarr")
    # window w delivers the spikes of window w - 1 to the other chunks: events of windows 0..W-2 over
    # the time of windows 1..W-1 (one window alone delivers only inside each chunk: no rate then)
    last = np.rint(t / 0.1).astype(np.int64) // plan.min_delay >= len(out["windows"]) - 1
    events = float(np.where(gid[~last] < n_e, 1000 / n_e * n, 250 / (n - n_e) * n).sum())
    sim_ms = out["steps"] * 0.1
    stats = spike_stats(t, gid, {"E": [0, n_e], "I": [n_e, n]}, sim_ms, skip_ms=0)
    windows = out["windows"]
    disk = sum(f.stat().st_size for f in Path(f"{d}/state.zarr").rglob("*") if f.is_file()) / 2**30
    print(f"Brunel A out-of-core, {n:,} neurons in {len(plan.chunks)} chunks of {args.chunk:,}; "
          f"{args.workers} workers x {args.memory_limit}, 1 thread each ({os.cpu_count()} cores)")
    print(f"state in memory would be {state_gib:.2f} GiB (x2 buffers on disk: {disk:.2f} GiB, {args.codec}); "
          f"spikes broadcast up to {args.broadcast_bytes / 2**20:.0f} MiB a window, read back in pieces above")
    print(f"window seconds: {' '.join(f'{w:.1f}' for w in windows)}")
    print(f"{'sim ms':>7} {'windows':>7} {'wall s':>8} {'s/sim ms':>9} {'s/window':>9} {'events/s':>10} "
          f"{'rate Hz':>8} {'worker peak RSS GiB':>20} {'driver peak RSS GiB':>20}")
    ev_s = f"{events / sum(windows[1:]):10.3g}" if len(windows) > 1 else f"{'n/a':>10}"
    print(f"{sim_ms:7.1f} {len(windows):7d} {wall:8.1f} {sum(windows) / sim_ms:9.2f} {np.median(windows):9.2f} "
          f"{ev_s} {stats['rate']:8.1f} "
          f"{' / '.join(f'{v:.2f}' for v in rss.values()):>20} {_peak_rss():20.2f}")
    print(f"Brian2: not run ({n * 1250:.2g} synapses; its stored synapses alone need about "
          f"{n * 1250 * 30 / 2**30:.0f} GiB)")


def _gpu_brunel(net, block: int, compact: bool, budget_s: float, max_steps: int, block_major: bool = False,
                warm: int = 5) -> dict:
    """Run ``net`` (one chunk) on the GPU in pieces of 10 steps until ``budget_s`` or ``max_steps``."""
    import cupy as cp

    from neurochunk.kernels.network_gpu import run_window_gpu
    from neurochunk.kernels.rng import STREAM_INIT, uniform_array

    plan = net.plan()
    n = plan.n
    v = cp.empty(n, cp.float32)
    piece = 1 << 26
    for a in range(0, n, piece):  # v uniform in [10, 20] mV, keyed like the CPU's initial state
        b = min(n, a + piece)
        v[a:b] = cp.asarray((10.0 + 10.0 * uniform_array(plan.seed, (STREAM_INIT << 32), 0, a, b - a, 0))
                            .astype(np.float32))
    ref = cp.zeros(n, cp.int32)
    if compact:  # slot-major ring with the one receptor delta synapses use; no u, g
        u, g = cp.zeros(1, cp.float32), cp.zeros((1, 2), cp.float32)
        ring = cp.zeros((plan.n_slots, 1, n), cp.int32).transpose(2, 0, 1)
    else:
        u, g = cp.zeros(n, cp.float32), cp.zeros((n, 2), cp.float32)
        ring = cp.zeros((n, plan.n_slots, 2), cp.int32)
    used = cp.get_default_memory_pool().used_bytes()
    args = (plan.seed, plan.pint, plan.pflt, block or n, block_major)
    run_window_gpu(plan.pop_tables, v, u, g, ref, ring, 0, warm, 0, *args)
    cp.cuda.Device().synchronize()
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    gids, steps, wall = [], 0, 0.0
    while steps < max_steps and wall < budget_s:
        k = min(10, max_steps - steps)
        e0.record()
        _, gid = run_window_gpu(plan.pop_tables, v, u, g, ref, ring, warm + steps, k, 0, *args)
        e1.record()
        e1.synchronize()
        wall += cp.cuda.get_elapsed_time(e0, e1) / 1e3
        gids.append(gid.get())
        steps += k
    peak = cp.get_default_memory_pool().total_bytes()
    del v, u, g, ref, ring
    cp.get_default_memory_pool().free_all_blocks()
    gid = np.concatenate(gids)
    c_e, c_i = (int(round(pr.p * net.populations[0 if pr.pre == "E" else 1].n))
                for pr in (net.projections[0], net.projections[2]))
    n_e = net.populations[0].n
    events = float(np.where(gid < n_e, c_e / n_e * n, c_i / (n - n_e) * n).sum())
    sim_ms = steps * plan.dt
    return {"wall": wall, "sim_ms": sim_ms, "events": events, "rate": len(gid) / n / (sim_ms / 1e3),
            "state_b": used / n, "peak_gib": peak / 2**30}


def _gpu_header(bandwidth: float) -> None:
    import cupy as cp

    props = cp.cuda.runtime.getDeviceProperties(0)
    print(f"GPU {props['name'].decode()}: measured copy bandwidth {bandwidth / 1e9:.0f} GB/s "
          f"({time.strftime('%Y-%m-%d')})")
    print(f"{'neurons':>13} {'synapses':>9} {'layout':>8} {'block':>9} {'sim ms':>7} {'wall s':>8} {'s/sim s':>9} "
          f"{'events/s':>10} {'rate Hz':>8} {'B/neuron':>8} {'GiB':>6} {'% BW @4B/ev':>11}", flush=True)


def _gpu_row(n: int, syn: float, compact: bool, block: int, r: dict, bandwidth: float) -> None:
    print(f"{n:>13,} {syn:9.3g} {'compact' if compact else 'neuron':>8} {block or n:>9,} {r['sim_ms']:7.1f} "
          f"{r['wall']:8.3f} {r['wall'] / r['sim_ms'] * 1e3:9.2f} {r['events'] / r['wall']:10.3g} {r['rate']:8.1f} "
          f"{r['state_b']:8.1f} {r['peak_gib']:6.1f} {100 * 4 * r['events'] / r['wall'] / bandwidth:11.2f}",
          flush=True)


def gpu(args: argparse.Namespace) -> None:
    from neurochunk.pipeline.network import brunel_network

    bandwidth = bandwidth_of_device()
    _gpu_header(bandwidth)
    for n in [int(float(v)) for v in args.sizes.split(",")]:
        net = brunel_network(n, rule="fixed_probability", seed=1, v_init={"uniform": [10.0, 20.0]}, chunk=n,
                             epsilon=1000 / (n * 4 // 5))
        r = _gpu_brunel(net, args.block, args.compact, args.budget_s, args.max_steps, args.block_major)
        _gpu_row(n, n * 1250.0, args.compact, args.block, r, bandwidth)


def balanced(args: argparse.Namespace) -> None:
    """1e6 neurons, p = 0.1 (1e11 procedural synapses): Brunel A with J scaled by sqrt(1000 / K_E)."""
    from neurochunk.pipeline.network import brunel_network

    bandwidth = bandwidth_of_device()
    _gpu_header(bandwidth)
    n = args.n
    k_e = 0.1 * (n * 4 // 5)
    for block in [int(b) for b in args.blocks.split(",")]:
        net = brunel_network(n, rule="fixed_probability", seed=1, v_init={"uniform": [10.0, 20.0]}, chunk=n,
                             epsilon=0.1, j=0.1 * (1000 / k_e) ** 0.5)
        r = _gpu_brunel(net, block, args.compact, args.budget_s, args.max_steps, args.block_major)
        _gpu_row(n, 0.1 * n * n, args.compact, block, r, bandwidth)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="scenario", required=True)
    c = sub.add_parser("coba")
    c.add_argument("--repeat", type=int, default=3)
    c.add_argument("--brian-targets", default="numpy,cython,cpp_standalone")
    b = sub.add_parser("brunel")
    b.add_argument("--sizes", default="12500,125000,1250000,12500000")
    b.add_argument("--min-ms", type=float, default=5.0)
    b.add_argument("--events-budget", type=float, default=2e9, help="synaptic events to simulate per size")
    b.add_argument("--brian-max", type=int, default=1250000, help="largest size Brian2 is run on")
    b.add_argument("--brian-target", default="cpp_standalone", help="Brian2 code generation target")
    b.add_argument("--brian-mem-gib", type=float, default=8.0, help="Brian2's address-space cap (GiB)")
    b.add_argument("--kernel-max", type=int, default=12500000, help="largest size the 1-thread kernel runs")
    b.add_argument("--threads", type=int, default=2, help="worker threads of the LocalCluster")
    b.add_argument("--chunks", default="1,2", help="neuron chunks simulate() splits the network in (a list)")
    b.add_argument("--memory-limit", default="8GiB", help="the worker's memory limit")
    so = sub.add_parser("stream", help="Brunel A out-of-core on capped worker processes")
    so.add_argument("--n", type=int, default=20_000_000)
    so.add_argument("--chunk", type=int, default=1 << 19)
    so.add_argument("--sim-ms", type=float, default=3.2)
    so.add_argument("--workers", type=int, default=2)
    so.add_argument("--memory-limit", default="1GiB")
    so.add_argument("--codec", default="lz4", help="codec preset of the streamed state (stores.codecs)")
    so.add_argument("--broadcast-bytes", type=int, default=1 << 26,
                    help="a window's spikes up to this many bytes go to each worker once; larger ones are read back")
    so.add_argument("--dir", default=None, help="where the state and spikes datasets go (default: a temp dir)")
    gp = sub.add_parser("gpu", help="Brunel A on one GPU (cupy twins), procedural")
    gp.add_argument("--sizes", default="12500,125000,1250000,12500000,125000000")
    gp.add_argument("--block", type=int, default=0, help="target block of the procedural generator (0: population)")
    gb = sub.add_parser("balanced", help="1e6 neurons, p = 0.1 (1e11 procedural synapses) on one GPU")
    gb.add_argument("--n", type=int, default=1_000_000)
    gb.add_argument("--blocks", default="0,16384,4096", help="target blocks to compare (0: population)")
    for q in (gp, gb):
        q.add_argument("--budget-s", type=float, default=20.0, help="GPU seconds to simulate per row (after warm-up)")
        q.add_argument("--max-steps", type=int, default=1000)
        q.add_argument("--compact", action="store_true",
                       help="slot-major one-receptor ring, no u/g arrays (77 B/neuron instead of 157)")
        q.add_argument("--block-major", action="store_true", help="order delivery threads by target block")
    args = p.parse_args()
    {"coba": coba, "brunel": brunel, "stream": stream, "gpu": gpu, "balanced": balanced}[args.scenario](args)


if __name__ == "__main__":
    main()
