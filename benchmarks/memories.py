"""Memory-bank benchmarks, each scenario against its reference in the same run.

Scenarios (``--scenario``):

``iteration``  N memories (default 1M): time per iteration of decay, 1% of the memories
               reinforced, quality (sum, mean, max, 64-bin histogram) and top-100, for a plain
               in-memory numpy loop and for neurochunk's fused partition kernels (in-process and
               through ``MemoryBank.run_epoch``), the lazily scaled partitions on one core and on
               two threads; the final states are checked equal.
``recovery``   a 3-worker LocalCluster runs an epoch twice, once with a worker hard-exiting
               mid-epoch; seconds lost and bytes re-read.
``ondisk``     a bank larger than the workers' memory limit, streamed (``resident=False``):
               ingest rate, iteration throughput and the workers' peak memory.
``gpu``        cupy twins at 10M and 100M memories against the bandwidth floor (device only).
``gpu-scaled`` the lazily scaled iteration as a CUDA graph, beside the round-1 GPU rows, after a
               check against the CPU twin at the first size (device only).

Example: ``python benchmarks/memories.py --scenario iteration --n 1000000``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from neurochunk.cluster.local import malloc_environ
from neurochunk.kernels import memory as K
from neurochunk.pipeline import memorybank as mb
from neurochunk.pipeline.memorybank import KeyedSource, MemoryBank


class _Clock:
    """Wall and process-CPU time of a block; CPU time is what contention from other processes inflates least."""

    def __enter__(self) -> _Clock:  # noqa: PYI034
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def _row(name: str, clock: _Clock, per: int, note: str = "") -> float:
    ms = 1e3 * clock.wall / per
    print(f"| {name:<58} | {ms:>10.3f} | {1e3 * clock.cpu / per:>10.3f} | {note} |")
    return ms


def numpy_iteration(ids, s, count, last, rate, rids, rdeltas, t, bins, k):
    """The plain in-memory loop body: what a user would write with numpy alone."""
    np.clip(s * np.float32(1.0 - rate), 0, 1, out=s)
    u, inv = np.unique(rids, return_inverse=True)
    acc = np.zeros(len(u))
    np.add.at(acc, inv, rdeltas.astype(np.float64))
    pos = np.minimum(np.searchsorted(ids, u), len(ids) - 1)
    ok = ids[pos] == u
    p = pos[ok]
    s[p] = np.clip(s[p].astype(np.float64) + acc[ok], 0, 1).astype(np.float32)
    count[p] += np.bincount(inv, minlength=len(u))[ok].astype(count.dtype)
    last[p] = t
    total = s.sum(dtype=np.float64)
    quality = (total, total / len(s), s.max(), np.histogram(s, bins=bins, range=(0.0, 1.0))[0])
    top = np.argpartition(s, len(s) - k)[len(s) - k :]
    top = top[np.lexsort((ids[top], -s[top].astype(np.float64)))]
    return quality, top


def scenario_iteration(args: argparse.Namespace) -> None:
    n, iters, k, bins, rate = args.n, args.iterations, 100, 64, 0.01
    src = KeyedSource(seed=1, id_seed=0, n_pool=n, n_draws=n // 100, max_delta=0.2)
    ids0 = K.keyed_ids(0, n)
    s0 = np.random.default_rng(0).random(n).astype(np.float32)
    order = np.argsort(ids0)
    ids, s_sorted = ids0[order], s0[order]
    print(f"# iteration: {n:,} memories, {iters} iterations, 1% reinforced, 64-bin quality, top-{k}; "
          f"{os.cpu_count()} cores\n")
    print(f"| {'implementation':<58} | {'ms / iter':>10} | {'CPU ms':>10} | note |\n|---|---:|---:|---|")

    # numpy: decay alone and argpartition alone, as the issue quotes them, then the whole loop
    s = s_sorted.copy()
    with _Clock() as c:
        for _ in range(iters):
            np.clip(s * np.float32(1 - rate), 0, 1, out=s)
    _row("numpy decay + clip only", c, iters)
    with _Clock() as c:
        for _ in range(max(iters // 5, 3)):
            np.argpartition(s, n - k)
    _row("numpy argpartition top-k only", c, max(iters // 5, 3))
    s = s_sorted.copy()
    count, last = np.zeros(n, np.uint32), np.zeros(n, np.int64)
    streams = [src(t) for t in range(iters)]
    with _Clock() as c:
        for t in range(iters):
            q_np, top_np = numpy_iteration(ids, s, count, last, rate, *streams[t], t, bins, k)
    numpy_ms = _row("numpy loop (decay, reinforce, quality, top-100)", c, iters, "reference")

    # neurochunk's fused kernels on P in-memory partitions, one thread each
    for parts, threads in ((1, 1), (2, 2)):
        pidx, starts = K.group_by_partition(ids0, parts)
        partitions = []
        for p in range(parts):
            sel = pidx[starts[p] : starts[p + 1]]
            o = np.argsort(ids0[sel])
            sel = sel[o]
            partitions.append(mb.Partition(p, ids0[sel], s0[sel].copy(), np.zeros(len(sel), np.uint32),
                                           np.zeros(len(sel), np.int64)))
        mb._block(partitions[0], 0, 2, rate, src, k, bins, parts)  # compile
        with ThreadPoolExecutor(threads) as pool, _Clock() as c:
            outs = list(pool.map(lambda part, parts=parts: mb._block(part, 0, iters, rate, src, k, bins, parts),
                                 partitions))
            stats = outs[0][1]
            for o in outs[1:]:
                stats = mb._combine_block(stats, o[1], k)
        final = np.concatenate([o[0].strength for o in outs])
        fids = np.concatenate([o[0].id for o in outs])
        same = np.array_equal(final[np.argsort(fids)], s)
        top_same = np.array_equal(stats["top_i"][-1], ids[top_np])
        hist_same = np.array_equal(stats["hist"], q_np[3])
        ms = 1e3 * c.wall / iters
        _row(f"neurochunk fused kernels, {parts} partition(s) x {threads} thread(s)", c, iters,
             f"{numpy_ms / ms:.1f}x numpy; state equal: {same}, top-100 equal: {top_same}, histogram equal: "
             f"{hist_same}; top-k rebuilds {stats['rebuilds']}")

    # the lazily scaled representation (O(1) decay; see kernels/memory_scaled.py), one partition
    from neurochunk.kernels.memory_scaled import ScaledPartition, reference_block

    for label, source in (("streams precomputed, as numpy", lambda t: streams[t]), ("source in the loop", src),
                          ("draws generated in the compiled window loop", src.stream(0, 1))):
        ScaledPartition(ids, s_sorted, np.zeros(n, np.uint32), np.zeros(n, np.int64), k, bins).run(0, 2, rate, source)
        lazy = ScaledPartition(ids, s_sorted, np.zeros(n, np.uint32), np.zeros(n, np.int64), k, bins)
        with _Clock() as c:
            got = lazy.run(0, iters, rate, source)
        ms = _row(f"neurochunk lazily scaled, 1 partition ({label})", c, iters,
                  f"{numpy_ms / (1e3 * c.wall / iters):.1f}x numpy; top-k rebuilds {got['rebuilds']}")
    ref_count, ref_last = np.zeros(n, np.uint32), np.zeros(n, np.int64)
    b, g, ref = reference_block(ids, s_sorted, ref_count, ref_last, 0, iters, rate, lambda t: streams[t], k, bins)
    vis = lazy.strength()
    same = (np.array_equal(vis, (b * g).astype(np.float32)) and np.array_equal(lazy.count, ref_count)
            and np.array_equal(lazy.last_step, ref_last))
    ulps = np.abs(vis.view(np.int32) - s.view(np.int32))
    print(f"\nlazily scaled vs its numpy reference (materialising float32(b*G) every iteration): state equal: {same}, "
          f"top-{k} ids equal (all iterations): {np.array_equal(got['top_i'], np.array(ref['top_i']))}, "
          f"maxima equal: {np.array_equal(got['maxima'], ref['maxima'])}, last histogram equal: "
          f"{np.array_equal(got['hist'], ref['hist'])}, max |sum - float32 sum| {np.abs(got['sums'] - ref['sums']).max():.2e} "
          f"(bound n*2^-25 = {n * 2.0**-25:.2e})")
    print(f"lazily scaled vs the exact path's per-iteration float32 rounding (the numpy loop above): strengths differ by "
          f"at most {ulps.max()} ulp (median {np.median(ulps):.0f}, {np.mean(ulps > 0):.1%} differ) after {iters} iterations\n")

    # both cores: one partition per thread (numba releases the GIL), each drawing only its own reinforcements
    sels = [np.flatnonzero(K.partition_of(ids, 2) == p) for p in range(2)]

    def lazy_parts() -> list[ScaledPartition]:
        return [ScaledPartition(ids[sel], s_sorted[sel], np.zeros(len(sel), np.uint32), np.zeros(len(sel), np.int64),
                                k, bins) for sel in sels]

    def run_part(job: tuple[int, ScaledPartition], n_it: int) -> dict:
        p, part = job
        return part.run(0, n_it, rate, src.stream(p, 2))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda job: run_part(job, 2), enumerate(lazy_parts())))  # compile
        parts2 = lazy_parts()
        with _Clock() as c:
            outs = list(pool.map(lambda job: run_part(job, iters), enumerate(parts2)))
            both = mb._combine_block(outs[0], outs[1], k)
    vis2 = np.empty(n, np.float32)
    for sel, part in zip(sels, parts2):
        vis2[sel] = part.strength()
    same2 = (np.array_equal(vis2, (b * g).astype(np.float32)) and np.array_equal(both["top_i"], np.array(ref["top_i"]))
             and np.array_equal(both["maxima"], ref["maxima"]) and np.array_equal(both["hist"], ref["hist"])
             and np.abs(both["sums"] - ref["sums"]).max() <= n * 2.0**-25)
    print(f"| {'implementation':<58} | {'ms / iter':>10} | {'CPU ms':>10} | note |\n|---|---:|---:|---|")
    _row("neurochunk lazily scaled, 2 partitions x 2 threads (draws in the compiled loop)", c, iters,
         f"{numpy_ms / (1e3 * c.wall / iters):.1f}x numpy; CPU ms counts both threads; equal to the numpy reference "
         f"(state, top-{k} of every iteration, maxima, histogram, sums within n*2^-25): {same2}; top-k rebuilds "
         f"{both['rebuilds']}")
    print()

    # the same through MemoryBank.run_epoch (Dask threaded scheduler, one commit at the end)
    root = tempfile.mkdtemp(prefix="nc-mem-bench-")
    try:
        bank = MemoryBank.create(f"{root}/bank.zarr", partitions=2, capacity=n // 2 + 6 * int(np.sqrt(n)) + 16)
        bank.ingest(ids0, s0)
        with _Clock() as c:
            rep = bank.run_epoch(iters, src, decay_rate=rate, k=k, bins=bins)
        _row("neurochunk MemoryBank.run_epoch, 2 partitions, commit at end", c, iters,
             f"includes graph, load and one commit ({rep.graph_sizes[0]} tasks)")
        got = bank.read_all()
        print(f"\nrun_epoch final state equal to numpy loop: {np.array_equal(got['strength'], s)}; "
              f"counts equal: {np.array_equal(got['count'], count)}\n")
        bank = MemoryBank.create(f"{root}/scaled.zarr", partitions=2, capacity=n // 2 + 6 * int(np.sqrt(n)) + 16)
        bank.ingest(ids0, s0)
        with _Clock() as c:
            rep = bank.run_epoch(iters, src, decay_rate=rate, k=k, bins=bins, scaled=True)
        _row("neurochunk MemoryBank.run_epoch(scaled=True), 2 partitions", c, iters,
             f"includes graph, load and one commit; final state equal to the lazily scaled reference: "
             f"{np.array_equal(bank.read_all()['strength'], (b * g).astype(np.float32))}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class DyingSource:
    inner: KeyedSource
    at: int
    victim: str
    flag: str

    def __call__(self, t: int):
        if t == self.at and not os.path.exists(self.flag):
            from distributed import get_worker

            if self.victim in ("", get_worker().address):
                try:
                    os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))  # exactly one worker dies
                except FileExistsError:
                    return self.inner(t)
                os._exit(1)
        return self.inner(t)


def scenario_recovery(args: argparse.Namespace) -> None:
    import cloudpickle
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    n, parts = args.n, 6
    src = KeyedSource(seed=1, id_seed=0, n_pool=n, n_draws=n // 100)
    root = tempfile.mkdtemp(prefix="nc-mem-recovery-")
    print(f"# recovery: {n:,} memories, {parts} partitions, 3 worker processes; after 10 iterations that place the "
          f"partitions, an epoch of iterations 10-50 committing every 10, one worker hard-exiting at iteration 25\n")
    print("| run | epoch s | partitions re-read | bytes re-read | final state |\n|---|---:|---:|---:|---|")
    try:
        results = {}
        with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0", memory_limit="4GiB") as cluster, Client(cluster) as client:
            for label in ("no failure", "worker killed at 25"):
                bank = MemoryBank.create(f"{root}/{label[:2]}.zarr", partitions=parts,
                                         capacity=n // parts + 6 * int(np.sqrt(n / parts)) + 16, client=client)
                bank.ingest(K.keyed_ids(0, n), np.random.default_rng(0).random(n).astype(np.float32))
                bank.run_epoch(10, src, decay_rate=0.01, commit_every=10)  # place partitions on workers
                source = src if label == "no failure" else DyingSource(src, 25, min(bank._owners.values()),
                                                                       f"{root}/died")
                rep = bank.run_epoch(40, source, decay_rate=0.01, commit_every=10)
                results[label] = (rep, bank.read_all())
        base = results["no failure"][1]
        for label, (rep, state) in results.items():
            same = all(np.array_equal(state[a], base[a]) for a in state)
            print(f"| {label} | {rep.seconds:.2f} | {rep.partitions_read} | {rep.bytes_read:,} | "
                  f"{'identical' if same else 'DIFFERENT'} |")
        lost = results["worker killed at 25"][0].seconds - results["no failure"][0].seconds
        print(f"\nrecovery cost: {lost:.2f} s (includes the worker restart); re-read "
              f"{results['worker killed at 25'][0].bytes_read / 2**20:.1f} MiB of "
              f"{n * 24 / 2**20:.1f} MiB committed state")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _usage() -> tuple[float, float, int]:
    """This process's user seconds, kernel seconds and minor page faults so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime, ru.ru_minflt


def scenario_ondisk(args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    n, parts = args.n, max(1, args.n // args.partition_size)
    cap = n // parts + 6 * int(np.sqrt(n / parts)) + 16
    root = args.dir or tempfile.mkdtemp(prefix="nc-mem-ondisk-")
    limit = args.worker_memory
    print(f"# ondisk: {n:,} memories ({n * 24 / 2**30:.1f} GiB of state), {parts} partitions of ~{n // parts:,}; "
          f"2 workers x 1 thread, memory_limit {limit} each; resident=False (streamed); codec {args.codec or 'lossless'}\n")
    import dask

    reuse = bool(args.dir) and os.path.exists(f"{root}/bank.zarr/zarr.json") and args.reuse_bank
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": malloc_environ(args.malloc_keep)}), \
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=":0", memory_limit=limit) as cluster, Client(cluster) as client:
            print(f"# worker malloc: keep {args.malloc_keep} MiB of freed heap" if args.malloc_keep
                  else "# worker malloc: Dask's default (MALLOC_TRIM_THRESHOLD_=65536)")
            if reuse:
                bank = MemoryBank.open(f"{root}/bank.zarr", client=client)
                if bank.n_memories != n:
                    raise ValueError(f"--reuse-bank: {root}/bank.zarr holds {bank.n_memories:,} memories, not {n:,}")
                print(f"# reusing the ingested bank in {root} (at iteration {bank.iteration})")
            else:
                bank = MemoryBank.create(f"{root}/bank.zarr", partitions=parts, capacity=cap, client=client,
                                         codec=args.codec)
            batch = args.batch

            def batches():
                rng = np.random.default_rng(0)
                for lo in range(0, n, batch):
                    hi = min(lo + batch, n)
                    yield (K.splitmix64(np.arange(lo, hi, dtype=np.uint64)), rng.random(hi - lo, dtype=np.float32),
                           None)

            t0 = time.perf_counter()
            if not reuse:
                bank.staging_dir = root
                bank.ingest_batches(batches())
            ingest_s = time.perf_counter() - t0
            print(f"ingested in {ingest_s:.1f} s; peak RSS per worker so far "
                  f"{[round(v / 2**30, 2) for v in client.run(_peak_rss).values()]} GiB", flush=True)
            src = KeyedSource(seed=1, id_seed=0, n_pool=n, n_draws=n // 100)
            u0 = client.run(_usage)
            rep = bank.run_epoch(args.iterations, src, decay_rate=0.01, commit_every=args.iterations,
                                 resident=False, progress=True)
            u1 = client.run(_usage)
            used = [sum(u1[w][i] - u0[w][i] for w in u1) for i in range(3)]
            peaks = client.run(_peak_rss)
            stored = sum(f.stat().st_size for f in __import__("pathlib").Path(f"{root}/bank.zarr").rglob("*")
                         if f.is_file())
        print("| measure | value |\n|---|---:|")
        print(f"| ingest | {ingest_s:.1f} s ({n / ingest_s / 1e6:.2f} M memories/s) |" if not reuse
              else "| ingest | reused an ingested bank |")
        print(f"| epoch of {args.iterations} iterations (load, iterate, commit, streamed) | {rep.seconds:.1f} s |")
        print(f"| iteration throughput | {n * args.iterations / rep.seconds / 1e6:.1f} M memory-iterations/s |")
        print(f"| time per iteration, amortized | {1e3 * rep.seconds / args.iterations:.1f} ms |")
        print(f"| workers' CPU in the epoch (both) | user {used[0]:.1f} s, kernel {used[1]:.1f} s, "
              f"{used[2] / 1e6:.2f} M minor page faults |")
        print(f"| bytes read from disk in the epoch | {rep.bytes_read / 2**30:.2f} GiB (decoded) |")
        print(f"| stored on disk (all kept commits) | {stored / 2**30:.2f} GiB |")
        print(f"| peak RSS per worker | {', '.join(f'{v / 2**30:.2f} GiB' for v in peaks.values())} |")
        print(f"| peak RSS of the driver | {_peak_rss() / 2**30:.2f} GiB |")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


def gpu_check(n: int, iters: int) -> None:
    """The GPU lazily scaled iterations against the CPU ones (numba; equal to the numpy reference by the tests),
    every iteration's top-k included."""
    import cupy as cp
    from neurochunk.kernels.memory_scaled import ScaledPartition
    from neurochunk.kernels.memory_scaled_gpu import ScaledPartitionGPU

    k, bins = 100, 64
    ids = np.sort(K.keyed_ids(0, n))
    s0 = np.random.default_rng(0).random(n, dtype=np.float32)
    count, last = np.zeros(n, np.uint32), np.zeros(n, np.int64)
    t0 = time.perf_counter()
    cpu = ScaledPartition(ids, s0, count, last, k, bins)
    want = cpu.run(0, iters, 0.01, KeyedSource(seed=1, id_seed=0, n_pool=n, n_draws=n // 100, max_delta=0.2))
    cpu_s = time.perf_counter() - t0
    for exact in (True, False):
        gpu = ScaledPartitionGPU(cp.asarray(ids), cp.asarray(s0), k, bins, exact=exact)
        got = gpu.run(0, iters, 0.01, 1, 0, n, n // 100, 0.2)
        checks = {
            "visible strengths": np.array_equal(cp.asnumpy(gpu.strength()), cpu.strength()),
            "counts": np.array_equal(cp.asnumpy(gpu.count), count),
            "last steps": np.array_equal(cp.asnumpy(gpu.last_step), last),
            "histogram": np.array_equal(got["hist"], want["hist"]),
            "maxima": np.array_equal(got["maxima"], want["maxima"]),
        }
        same = [np.array_equal(got["top_i"][i], want["top_i"][i])
                and np.array_equal(got["top_s"][i], want["top_s"][i].astype(np.float32)) for i in range(iters)]
        checks[f"top-100 ids and strengths on all {iters} iterations"] = all(same)
        print(f"# GPU ({'exact' if exact else 'flag-only, round 3'}) vs CPU (numba ScaledPartition, {cpu_s:.1f} s, "
              f"{want['rebuilds']} CPU rebuilds), {n:,} memories, {iters} iterations: "
              + ", ".join(f"{a} {'equal' if v else 'DIFFERENT'}" for a, v in checks.items())
              + f"; top-100 equal on {sum(same)} of {iters}; max |sum difference| "
              f"{np.abs(got['sums'] - want['sums']).max():.2e} (bound {n * 2.0**-25:.2e}); not guaranteed: "
              f"{got['invalid']}, fixed by the merge: {got['fixed_merge']}, by a full pass: {got['fixed_full']}\n",
              flush=True)
        del gpu
        cp.get_default_memory_pool().free_all_blocks()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("iteration", "recovery", "ondisk", "gpu", "gpu-scaled"), default="iteration")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--partition-size", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=5_000_000)
    ap.add_argument("--worker-memory", default="2GiB")
    ap.add_argument("--dir", default=None, help="where the on-disk bank goes (kept)")
    ap.add_argument("--reuse-bank", action="store_true", help="ondisk: open the bank already in --dir, skip ingest")
    ap.add_argument("--codec", default=None, help="ondisk: the bank's codec preset (default lossless: blosc zstd 3)")
    ap.add_argument("--malloc-keep", type=int, default=16,
                    help="ondisk: MiB of freed heap each worker's glibc keeps for reuse (0: Dask's default)")
    ap.add_argument("--sizes", default="10000000,100000000", help="GPU sizes")
    args = ap.parse_args()
    if args.scenario == "gpu-scaled":
        from neurochunk.kernels.memory_scaled_gpu import benchmark as scaled_benchmark

        gpu_check(int(args.sizes.split(",")[0]), 64)
        scaled_benchmark([int(x) for x in args.sizes.split(",")], iterations=args.iterations)
        return
    if args.scenario == "gpu":
        from neurochunk.kernels.memory_gpu import benchmark

        benchmark([int(x) for x in args.sizes.split(",")], iterations=args.iterations)
        return
    {"iteration": scenario_iteration, "recovery": scenario_recovery, "ondisk": scenario_ondisk}[args.scenario](args)


if __name__ == "__main__":
    main()
