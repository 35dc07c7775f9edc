"""Spiking-network benchmarks on one GPU: ``kernels.network_gpu.run_window_gpu``, procedural synapses.

Scenarios (one command each; the network lives in one chunk on one GPU):

``python benchmarks/brain_gpu.py balanced``
    1e6 neurons, p = 0.1 (1e11 synapses): Brunel A with epsilon 0.1 and J scaled by sqrt(1000 / K_E),
    the GeNN procedural-connectivity reference network's size (Knight & Nowotny 2021: 8.5 s per
    simulated second on a Titan RTX). Goal: under 3 s per simulated second. Each ``--variants``
    entry is ``engine[:accumulate[:threads[:spikes_per_item[:flag...]]]]``, flags ``exact`` (no float32 skip
    filter), ``persistent`` / ``single`` (a persistent delivery grid / one delivery block per work item, for
    every kind of projection; default: persistent for global atomics only), ``batchN`` (deliveries of at most
    N steps per launch; ``batch1``: step by step; default: the smallest delay), ``prev`` (the kernels of
    commit d668feb: step by step, ``__log2f`` in the skip filter).
``python benchmarks/brain_gpu.py series --sizes 1.25e4,1.25e5,1.25e6,1.25e7,1.25e8,1e9``
    Brunel A with 1,000 E + 250 I inputs per neuron. Goal at 1e9 neurons (1.25e12 synapses): under 15
    minutes per simulated second (NEST: 40 minutes for 1.73e9 neurons on the K computer).
``python benchmarks/brain_gpu.py compare --kernels old.py --sizes 1e9 --block 2097152 [--fills 0.25,1]``
    The current kernels against other versions of ``kernels/network_gpu.py`` (``git show REV:kernels/network_gpu.py
    > old.py``), windows alternating between them on one running network.
``python benchmarks/brain_gpu.py check``
    The two engines (and both accumulators) give the same spikes and state on the balanced network and
    on a 1.25e7-neuron Brunel network.

Timing: a warm-up of ``--warm-ms`` (compilation, then the initial transient: all neurons start with v
uniform in [10, 20] mV), then ``--sim-ms`` timed with CUDA events in windows of ``--window`` steps
(each window one ``run_window_gpu`` call, spikes returned to the host). Synaptic events = spikes x
expected out-degree. "% BW" = events/s x 4 B over the copy bandwidth measured in the same run (bytes
read + written), the rate at which one int32 per event could stream through DRAM.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

_INIT = r"""
extern "C" __global__ void init_v(float* v, long long n, u64 seed, u64 a) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = (float)(10.0 + 10.0 * uniform(stream_key(seed, a, 0ULL, (u64)i), 0ULL));
}
"""


def bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (read + written; median of 5 copies of 2 GiB)."""
    import cupy as cp

    x = cp.ones(2**29, cp.float32)
    y = cp.empty_like(x)
    cp.copyto(y, x)
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(5):
        e0.record()
        cp.copyto(y, x)
        e1.record()
        e1.synchronize()
        times.append(cp.cuda.get_elapsed_time(e0, e1) / 1e3)
    del x, y
    cp.get_default_memory_pool().free_all_blocks()
    return 2 * 2**29 * 4 / float(np.median(times))


def init_state(plan: Any) -> tuple[Any, ...]:
    """v uniform in [10, 20] mV (keyed draws, made on the GPU), compact layout: slot-major one-receptor ring."""
    import cupy as cp
    from neurochunk.kernels.rng import CUDA_SOURCE, STREAM_INIT

    n = plan.n
    v = cp.empty(n, cp.float32)
    cp.RawKernel(CUDA_SOURCE + _INIT, "init_v")(((n + 255) // 256,), (256,),
                                               (v, np.int64(n), np.uint64(plan.seed), np.uint64(STREAM_INIT << 32)))
    u, g = cp.zeros(1, cp.float32), cp.zeros((1, 2), cp.float32)
    ring = cp.zeros((plan.n_slots, 1, n), cp.int32).transpose(2, 0, 1)
    return v, u, g, cp.zeros(n, cp.int32), ring


def out_degree(plan: Any) -> np.ndarray:
    """Expected synapses per spike of each population (fixed probability: p x post size)."""
    deg = np.zeros(len(plan.offsets) - 1)
    pre = np.searchsorted(plan.offsets, plan.pint[:, 1], side="right") - 1
    for p in range(len(plan.pint)):
        deg[pre[p]] += plan.pflt[p, 0] * plan.pint[p, 4]
    return deg


def simulate(plan: Any, block: int, warm_ms: float, sim_ms: float, window: int, opts: dict,
             state: tuple[Any, ...] | None = None) -> dict:
    """Run ``plan`` (one chunk) for ``warm_ms`` untimed and ``sim_ms`` timed; rates and events per window."""
    from neurochunk.kernels import network_gpu

    opts = dict(opts)
    saved = network_gpu._MODULE
    network_gpu._MODULE = _kernels(opts.pop("_prev", False))
    try:
        return _simulate(plan, block, warm_ms, sim_ms, window, opts, state)
    finally:
        network_gpu._MODULE = saved


def _simulate(plan: Any, block: int, warm_ms: float, sim_ms: float, window: int, opts: dict,
              state: tuple[Any, ...] | None) -> dict:
    import cupy as cp
    from neurochunk.kernels.network_gpu import run_window_gpu

    v, u, g, ref, ring = state or init_state(plan)
    deg = out_degree(plan)
    args = (0, plan.seed, plan.pint, plan.pflt, block)
    warm, timed = round(warm_ms / plan.dt), round(sim_ms / plan.dt)
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    s, wall, events, spikes, rows = 0, 0.0, 0.0, 0, []
    t_start = time.perf_counter()
    while s < warm + timed:
        k = min(window, (warm if s < warm else warm + timed) - s)
        e0.record()
        _, gid = run_window_gpu(plan.pop_tables, v, u, g, ref, ring, s, k, *args, **opts)
        e1.record()
        e1.synchronize()
        dt = cp.cuda.get_elapsed_time(e0, e1) / 1e3
        counts = np.bincount(np.searchsorted(plan.offsets, gid.get(), side="right") - 1, minlength=len(deg))
        ev = float(counts @ deg)
        rows.append((s, k, dt, int(counts.sum()) / plan.n / (k * plan.dt * 1e-3), ev / dt if dt else 0.0))
        if s >= warm:
            wall += dt
            events += ev
            spikes += int(counts.sum())
        s += k
    sim_s = timed * plan.dt * 1e-3
    return {"wall": wall, "sim_s": sim_s, "events": events, "rate": spikes / plan.n / sim_s if sim_s else 0.0,
            "windows": rows, "host_s": time.perf_counter() - t_start,
            "gib": cp.get_default_memory_pool().total_bytes() / 2**30}


def parse_variant(text: str) -> dict:
    parts = text.split(":")
    opts: dict[str, Any] = {"engine": parts[0]}
    if len(parts) > 1 and parts[1]:
        opts["accumulate"] = parts[1]
    if len(parts) > 2 and parts[2]:
        opts["threads"] = int(parts[2])
    if len(parts) > 3 and parts[3]:
        opts["spikes_per_item"] = int(parts[3])
    for flag in parts[4:]:
        if flag == "exact":
            opts["fast_skip"] = False
        elif flag in ("persistent", "single"):
            opts["persistent"] = flag == "persistent"
        elif flag.startswith("batch") and flag[5:].isdigit():
            opts["batch_steps"] = int(flag[5:])
        elif flag == "prev":
            opts["batch_steps"] = 1
            opts["_prev"] = True
        else:
            raise SystemExit(f"unknown variant flag {flag!r} (exact, persistent, single, batchN, prev)")
    return opts


_LOG2_NEW = 'asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(l) : "f"((float)hi));'
_LOG2_PREV = "l = __log2f((float)hi);"


def _kernels(prev: bool) -> Any:
    """The compiled kernels of ``kernels.network_gpu``; ``prev``: with d668feb's ``__log2f`` skip filter."""
    import cupy as cp
    from neurochunk.kernels import network_gpu

    if not prev:
        return network_gpu._module()
    if _LOG2_NEW not in network_gpu._SOURCE:
        raise SystemExit("the skip filter's log2 line changed: update _LOG2_NEW")
    source = network_gpu._SOURCE.replace(_LOG2_NEW, _LOG2_PREV)
    return cp.RawModule(code=source, options=("--fmad=false", "-std=c++14"))


def _free() -> None:
    import cupy as cp

    cp.get_default_memory_pool().free_all_blocks()


HEADER = (f"{'network':>22} {'synapses':>9} {'variant':>26} {'block':>10} {'warm ms':>7} {'sim ms':>7} "
          f"{'GPU s':>8} {'s/sim s':>9} {'events/s':>9} {'rate Hz':>7} {'GiB':>6} {'% BW':>6}")


def row(name: str, syn: float, variant: str, block: int, warm_ms: float, r: dict, bw: float) -> str:
    ev_s = r["events"] / r["wall"] if r["wall"] else 0.0
    return (f"{name:>22} {syn:9.3g} {variant:>26} {block:>10,} {warm_ms:7.1f} {r['sim_s'] * 1e3:7.1f} "
            f"{r['wall']:8.3f} {r['wall'] / r['sim_s']:9.2f} {ev_s:9.3g} {r['rate']:7.1f} {r['gib']:6.1f} "
            f"{100 * 4 * ev_s / bw:6.2f}")


def _device_line(bw: float) -> str:
    import cupy as cp

    props = cp.cuda.runtime.getDeviceProperties(0)
    return (f"GPU {props['name'].decode()}, {props['multiProcessorCount']} SMs, L2 {props['l2CacheSize'] / 2**20:.0f} MiB; "
            f"measured copy bandwidth {bw / 1e9:.0f} GB/s ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")


def balanced_network(n: int, block: int | None):
    from neurochunk.pipeline.network import brunel_network

    k_e = 0.1 * (n * 4 // 5)
    return brunel_network(n, rule="fixed_probability", seed=1, v_init={"uniform": [10.0, 20.0]}, chunk=n,
                          epsilon=0.1, j=0.1 * (1000 / k_e) ** 0.5, conn_block=block)


def series_network(n: int, block: int | None):
    from neurochunk.pipeline.network import brunel_network

    return brunel_network(n, rule="fixed_probability", seed=1, v_init={"uniform": [10.0, 20.0]}, chunk=n,
                          epsilon=1000 / (n * 4 // 5), conn_block=block)


def balanced(args: argparse.Namespace) -> None:
    bw = bandwidth()
    print(_device_line(bw))
    print(HEADER, flush=True)
    for block in [int(b) for b in args.blocks.split(",")]:
        plan = balanced_network(args.n, block or None).plan()
        for variant in args.variants.split(","):
            r = simulate(plan, plan.net.conn_block, args.warm_ms, args.sim_ms, args.window, parse_variant(variant))
            print(row(f"balanced {args.n:,}", 0.1 * args.n * args.n, variant, plan.net.conn_block, args.warm_ms, r, bw),
                  flush=True)
            if args.verbose:
                _windows(r)
            _free()
    print("references: GeNN procedural 8.5 s per simulated second on a Titan RTX (Knight & Nowotny 2021); goal < 3 s")


def _windows(r: dict) -> None:
    print("    windows (first step, steps, GPU s, rate Hz, events/s): " +
          "; ".join(f"{s} {k} {dt:.3f} {rate:.1f} {ev:.3g}" for s, k, dt, rate, ev in r["windows"]), flush=True)


def series(args: argparse.Namespace) -> None:
    bw = bandwidth()
    print(_device_line(bw))
    print(HEADER, flush=True)
    for size in args.sizes.split(","):
        n = int(float(size))
        plan = series_network(n, args.block or None).plan()
        for variant in args.variants.split(","):
            r = simulate(plan, plan.net.conn_block, args.warm_ms, args.sim_ms, args.window, parse_variant(variant))
            print(row(f"Brunel A {n:,}", n * 1250.0, variant, plan.net.conn_block, args.warm_ms, r, bw), flush=True)
            if args.verbose:
                _windows(r)
            _free()
    print("references: NEST 40 min per simulated second for 1.73e9 neurons on the K computer; goal at 1e9: < 15 min "
          "(900 s) per simulated second")


def agreement(draws: int) -> None:
    """The float32 skip filter against the double formula on ``draws`` draws for each of a few p."""
    import cupy as cp
    from neurochunk.kernels.network_gpu import _module

    kern = _module().get_function("skip_agreement")
    for name, skip_filter, ps in (("float32", 1, (0.5, 0.1, 0.02, 1e-3)), ("table", 2, (0.1, 1e-3, 1e-4, 1.25e-6))):
        for p in ps:
            out = cp.zeros(2, cp.uint64)
            e0, e1 = cp.cuda.Event(), cp.cuda.Event()
            e0.record()
            kern((132 * 16,), (256,), (np.uint64(12345 + int(p * 1e6)), np.int64(draws), np.float64(1 / np.log1p(-p)),
                                       np.int32(skip_filter), out))
            e1.record()
            e1.synchronize()
            taken, bad = (int(x) for x in out.get())
            print(f"{name} skip filter p={p:g}: {draws:.3g} draws, answered {taken / draws:.4%}, disagreed {bad} "
                  f"({cp.cuda.get_elapsed_time(e0, e1):.0f} ms)", flush=True)
            if bad:
                raise SystemExit(f"the {name} skip filter disagreed with the double formula at p={p}")


def check(args: argparse.Namespace) -> None:
    """Same spikes, v and ring buffer from both engines and both accumulators, from one initial state."""
    import cupy as cp
    from neurochunk.kernels.network_gpu import run_window_gpu

    cases = [("balanced", balanced_network(args.n, None).plan(), args.steps),
             ("brunel 1.25e7", series_network(12_500_000, None).plan(), args.steps // 2)]
    agreement(args.draws)
    variants = [{"engine": "threads"}, {"engine": "blocks", "accumulate": "shared"},
                {"engine": "blocks", "accumulate": "global"}, {"engine": "blocks", "threads": 128},
                {"engine": "blocks", "fast_skip": False}, {"engine": "blocks", "persistent": True},
                {"engine": "blocks", "accumulate": "global", "persistent": True},
                {"engine": "blocks", "batch_steps": 1}, {"engine": "blocks", "threads": 128, "spikes_per_item": 512},
                {"engine": "blocks", "accumulate": "global", "persistent": True, "batch_steps": 1}]
    for name, plan, steps in cases:
        first = init_state(plan)
        ref = None
        for opts in variants:
            state = tuple(a.copy() for a in first)
            outs = []
            for s in range(0, steps, 16):  # windows of 16 steps, as the exchange of a 1.5 ms delay
                k = min(16, steps - s)
                st, gid = run_window_gpu(plan.pop_tables, *state, s, k, 0, plan.seed, plan.pint, plan.pflt,
                                         plan.net.conn_block, **opts)
                outs.append((st.get(), gid.get()))
            st = np.concatenate([o[0] for o in outs])
            gid = np.concatenate([o[1] for o in outs])
            got = (st, gid, state[0].get(), state[4].get())
            if ref is None:
                ref = got
                print(f"check {name}: {steps} steps, {len(st)} spikes ({opts})", flush=True)
                continue
            same = all(np.array_equal(a, b) for a, b in zip(ref, got))
            print(f"check {name}: {opts} {'IDENTICAL' if same else 'DIFFERENT'} to the threads engine "
                  f"({len(st)} spikes)", flush=True)
            if not same:
                raise SystemExit(f"engines disagree on {name}: {opts}")
        del first
        cp.get_default_memory_pool().free_all_blocks()


def _load_kernels(path: str) -> Any:
    """Another version of ``kernels/network_gpu.py`` (e.g. ``git show REV:kernels/network_gpu.py > old.py``) as a
    module of its own, its relative imports pointed at the installed package."""
    import types

    text = open(path).read().replace("from .rng import", "from neurochunk.kernels.rng import")
    module = types.ModuleType(f"network_gpu from {path}")
    exec(compile(text, path, "exec"), module.__dict__)
    return module


def compare(args: argparse.Namespace) -> None:
    """Kernel versions side by side on one running network: windows alternate between the versions (same
    spikes, so the network's course is the same whichever runs), each round in reversed order."""
    import cupy as cp
    from neurochunk.kernels import network_gpu

    versions = {"current": (network_gpu, None)}
    for path in filter(None, args.kernels.split(",")):
        versions[path] = (_load_kernels(path), None)
    for fill in filter(None, args.fills.split(",")):
        versions[f"current, fill {fill}"] = (network_gpu, float(fill))
    print(_device_line(bandwidth()))
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    default_fill = network_gpu._FILL
    for size in args.sizes.split(","):
        n = int(float(size))
        plan = (balanced_network(n, args.block or None) if args.network == "balanced"
                else series_network(n, args.block or None)).plan()
        state = init_state(plan)
        run_args = (0, plan.seed, plan.pint, plan.pflt, plan.net.conn_block)

        def run(name: str, s: int) -> float:
            module, fill = versions[name]
            network_gpu._FILL = default_fill if fill is None else fill
            e0.record()
            module.run_window_gpu(plan.pop_tables, *state, s, args.window, *run_args, ordered=False)
            e1.record()
            e1.synchronize()
            network_gpu._FILL = default_fill
            return cp.cuda.get_elapsed_time(e0, e1) / 1e3

        names, s = list(versions), 0
        for name in names:  # compilation inside the warm-up
            run(name, s)
            s += args.window
        while s < args.warm_steps:
            run("current", s)
            s += args.window
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                times[name].append(run(name, s))
                s += args.window
        sim_s = args.rounds * args.window * plan.dt * 1e-3
        ref = names[1] if args.kernels else names[0]
        base = sum(times[ref])
        print(f"{args.network} {n:,} (block {plan.net.conn_block:,}): {args.rounds} x {args.window} steps per version "
              f"after {args.warm_steps} steps", flush=True)
        for name in names:
            t = sum(times[name])
            print(f"  {name:>40}: {t:8.3f} GPU s  {t / sim_s:9.2f} s per sim s  ({t / base:.3f} of {ref})  "
                  "windows " + " ".join(f"{x:.3f}" for x in times[name]), flush=True)
        state = None
        _free()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="scenario", required=True)
    b = sub.add_parser("balanced", help="1e6 neurons, p = 0.1 (1e11 procedural synapses)")
    b.add_argument("--n", type=int, default=1_000_000)
    b.add_argument("--blocks", default="0", help="generator target blocks to compare (0: the network's default)")
    b.add_argument("--variants", default="blocks",
                   help="engine[:accumulate[:threads[:spikes_per_item[:flags]]]], ... flags: exact (no float32 "
                        "skip filter), persistent / single (delivery grid), batchN (deliveries of N steps per "
                        "launch), prev (the kernels of d668feb, step by step)")
    b.add_argument("--warm-ms", type=float, default=50.0)
    b.add_argument("--sim-ms", type=float, default=200.0)
    s = sub.add_parser("series", help="Brunel A, 1,000 E + 250 I inputs per neuron, up to 1e9 neurons")
    s.add_argument("--sizes", default="1.25e4,1.25e5,1.25e6,1.25e7,1.25e8")
    s.add_argument("--block", type=int, default=0, help="generator target block (0: the network's default)")
    s.add_argument("--variants", default="blocks")
    s.add_argument("--warm-ms", type=float, default=20.0)
    s.add_argument("--sim-ms", type=float, default=50.0)
    for q in (b, s):
        q.add_argument("--window", type=int, default=50, help="steps per run_window_gpu call")
        q.add_argument("--verbose", action="store_true", help="print every window's time and rate")
    k = sub.add_parser("compare", help="kernel versions side by side on one running network")
    k.add_argument("--kernels", default="", help="comma-separated paths of other versions of kernels/network_gpu.py")
    k.add_argument("--fills", default="", help="comma-separated values of _FILL to run the current kernels with")
    k.add_argument("--network", default="series", choices=("series", "balanced"))
    k.add_argument("--sizes", default="1e9")
    k.add_argument("--block", type=int, default=0, help="generator target block (0: the network's default)")
    k.add_argument("--warm-steps", type=int, default=200)
    k.add_argument("--window", type=int, default=20)
    k.add_argument("--rounds", type=int, default=3)
    c = sub.add_parser("check", help="both engines give the same spikes")
    c.add_argument("--n", type=int, default=1_000_000)
    c.add_argument("--steps", type=int, default=200)
    c.add_argument("--draws", type=int, default=1 << 32, help="draws per p for the skip-filter agreement")
    args = p.parse_args()
    {"balanced": balanced, "series": series, "check": check, "compare": compare}[args.scenario](args)


if __name__ == "__main__":
    main()
