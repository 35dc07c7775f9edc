"""Training-stage benchmarks: activation codecs, temporal checkpointing, dictionary learning.

One scenario per command, each printing a table with its peer side by side::

    python benchmarks/training.py codecs                # codecs on model activations and on Gaussian noise
    python benchmarks/training.py temporal              # T=40, delays 5/3: checkpointed vs every step
    python benchmarks/training.py dictionary            # d=256, K=512, s=8 vs scikit-learn, same run
    python benchmarks/training.py dictionary-large      # data 4x the workers' memory, peak memory bounded
    python benchmarks/training.py catalog               # cosine top-k over a catalog 4x the workers' memory
    python benchmarks/training.py gpu                   # OMP and dictionary learning on the GPU (device machine)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def table(rows: list[dict[str, Any]], title: str) -> str:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    out = [f"\n## {title}\n", "| " + " | ".join(c.ljust(width[c]) for c in cols) + " |",
           "|" + "|".join("-" * (width[c] + 2) for c in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r[c]).ljust(width[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


class PeakRSS:
    """Polls the resident memory of some processes (the workers) and keeps the peak of their sum and of each."""

    def __init__(self, pids: list[int], every: float = 0.05) -> None:
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.every, self.peak_sum, self.peak_one = every, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = [p.memory_info().rss for p in self.procs]
            self.peak_sum, self.peak_one = max(self.peak_sum, sum(rss)), max(self.peak_one, max(rss))
            time.sleep(self.every)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._t.join()


def _cluster(workers: int, memory: str) -> Any:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory, processes=True,
                           dashboard_address=":0", env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                                        "MKL_NUM_THREADS": "1"})
    client = Client(cluster)
    pids = list(client.run(os.getpid).values())
    return cluster, client, pids


# ---------------------------------------------------------------------------------------------- codecs
def model_activations(samples: int, units: int, steps: int) -> np.ndarray:
    from neurochunk.kernels.recurrent import DelayedRNN, advance, empty_history, make_weights, stimulus

    model = DelayedRNN((64, units, units), delay_ff=5, delay_rec=3, seed=1)
    _, rec = advance(model, make_weights(model), stimulus(model, np.arange(samples)),
                     empty_history(model, samples), 0, steps, record=True)
    return rec[1]


def bench_codecs(args: argparse.Namespace) -> str:
    import zarr

    from neurochunk.pipeline.activations import ActivationWriter
    from neurochunk.stores import Dataset
    from neurochunk.stores.events import EventWriter

    steps, samples, units = 40, args.samples, 256
    acts = model_activations(samples, units, steps)
    noise = np.random.default_rng(0).standard_normal(acts.shape).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="nc-codecs-"))
    with ActivationWriter(Dataset.create(tmp / "warm.zarr", "activations"), "h", acts.shape[1:],
                          dims=("time", "sample", "unit"), chunks=(4, 1024, units)) as w:
        w.append(acts[:8])  # warm-up: codec and store initialisation stay out of the timings
    rows = []
    for label, data in (("model activations", acts), ("gaussian noise", noise)):
        for codec in ("lossless", "bitshuffle", "bitround:7", "bitround:10", "quantize:3", "float16"):
            ds = Dataset.create(tmp / f"{label[:5]}-{codec.replace(':', '')}.zarr", "activations")
            t0 = time.perf_counter()
            with ActivationWriter(ds, "h", data.shape[1:], dims=("time", "sample", "unit"),
                                  chunks=(4, 1024, units), codec=codec) as w:
                for t in range(steps):
                    w.append(data[t:t + 1])  # the producer hands over one step at a time
            dt = time.perf_counter() - t0
            back = ds["h"][:]
            err = np.abs(back.astype(np.float64) - data)
            nz = np.abs(data) > np.finfo(np.float16).tiny
            rows.append({"data": label, "codec": codec, "ratio": data.nbytes / ds["h"].nbytes_stored(),
                         "max rel err": float((err[nz] / np.abs(data[nz])).max()), "max abs err": float(err.max()),
                         "bound": str(ds["h"].attrs["neurochunk_codec"]["error_bound"] or "exact"),
                         "write MB/s": data.nbytes / dt / 1e6})
        # peer: zarr's own Array.append, one step at a time, lossless preset
        arr = zarr.create_array(tmp / f"{label[:5]}-append.zarr", shape=(0, *data.shape[1:]), dtype=np.float32,
                                chunks=(4, 1024, units), compressors=[zarr.codecs.BloscCodec(cname="zstd", clevel=5,
                                                                                             shuffle="shuffle")])
        t0 = time.perf_counter()
        for t in range(steps):
            arr.append(data[t:t + 1], axis=0)
        dt = time.perf_counter() - t0
        rows.append({"data": label, "codec": "peer: zarr Array.append per step",
                     "ratio": data.nbytes / arr.nbytes_stored(),
                     "max rel err": 0.0, "max abs err": 0.0, "bound": "exact", "write MB/s": data.nbytes / dt / 1e6})
    # spikes: 5 Hz, 1 ms steps; dense bool, packbits, events + delta
    rng = np.random.default_rng(1)
    raster = rng.random((20_000, 2_000)) < 5e-3
    spikes = []
    for codec in ("lossless", "packbits"):
        ds = Dataset.create(tmp / f"spk-{codec}.zarr", "activations")
        t0 = time.perf_counter()
        with ActivationWriter(ds, "s", (2_000,), dims=("time", "unit"), chunks=(1000, 2000), dtype=bool,
                              codec=codec) as w:
            for t in range(0, 20_000, 100):
                w.append(raster[t:t + 100])
        spikes.append({"format": f"bool raster, {codec}", "ratio": raster.nbytes / ds["s"].nbytes_stored(),
                       "write MB/s": raster.nbytes / (time.perf_counter() - t0) / 1e6})
    ds = Dataset.create(tmp / "spk-events.zarr", "activations")
    t0 = time.perf_counter()
    w = EventWriter(ds, "s", 2_000, chunk=1 << 18)
    for t in range(0, 20_000, 100):
        w.append(raster[t:t + 100])
    arr = w.close()
    spikes.append({"format": "event list, delta + zstd", "ratio": raster.nbytes / arr.nbytes_stored(),
                   "write MB/s": raster.nbytes / (time.perf_counter() - t0) / 1e6})
    shutil.rmtree(tmp, ignore_errors=True)
    return (table(rows, f"codecs: activations (T={steps}, {samples} samples x {units} units of layer 2, "
                        f"{acts.nbytes / 2**20:.0f} MiB) and Gaussian noise of the same shape")
            + table(spikes, "spike raster 20,000 steps x 2,000 units at 5 Hz (1 ms): ratio against 1 byte/step/unit"))


# -------------------------------------------------------------------------------------------- temporal
def bench_temporal(args: argparse.Namespace) -> str:
    from neurochunk.kernels.recurrent import DelayedRNN
    from neurochunk.pipeline.temporal import run_checkpointed, run_every_step, states
    from neurochunk.stores import Dataset

    model = DelayedRNN((256, 256, 256), delay_ff=5, delay_rec=3, seed=2)
    steps, k, n, chunk = 40, args.k, args.samples, 4096
    step_bytes = sum(n * 256 * 4 for _ in range(model.n_layers))
    cluster, client, pids = _cluster(2, args.worker_memory)
    mem_limit = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
    tmp = Path(tempfile.mkdtemp(prefix="nc-temporal-", dir=args.tmp))
    rows = []
    try:
        for layout in ("every_step", "checkpointed"):
            ds = Dataset.create(tmp / f"{layout}.zarr", "activations")
            fn = run_every_step if layout == "every_step" else run_checkpointed
            with PeakRSS(pids) as peak:
                t0 = time.perf_counter()
                client.compute(fn(ds, model, n_samples=n, chunk=chunk, steps=steps, k=k, compute=False), sync=True)
                run_s = time.perf_counter() - t0
            stored = sum(ds[a].nbytes_stored() for a in ds.names)
            held = sum(ds[a].nbytes for a in ds.names)
            ds = Dataset.open(tmp / f"{layout}.zarr")
            with PeakRSS(pids) as peak_read:
                t0 = time.perf_counter()
                means = {2: client.compute(states(ds, 2).mean(axis=(1, 2)), sync=True)}  # needs every layer
                read_s = time.perf_counter() - t0
            with PeakRSS(pids):
                t0 = time.perf_counter()
                one = client.compute(states(ds, 2)[23], sync=True)
                one_s = time.perf_counter() - t0
            rows.append({"layout": layout if layout == "every_step" else f"checkpoint every k={k}",
                         "states kept": f"{steps}" if layout == "every_step" else
                         f"{steps // k}x{model.depth} stored + {k} in a task",
                         "stored GiB (raw)": held / 2**30, "stored GiB": stored / 2**30,
                         "run s": run_s, "run peak MiB": peak.peak_sum / 2**20,
                         "read all 40 steps s": read_s, "read peak MiB": peak_read.peak_sum / 2**20,
                         "read step 23 s": one_s, "mean": float(means[2][23])})
            del one
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    note = (f"\nmodel: 2 dense layers x 256 units, {n} samples in chunks of {chunk}; one step of all layers = "
            f"{step_bytes / 2**20:.0f} MiB, all {steps} steps = {steps * step_bytes / 2**30:.2f} GiB; "
            f"2 worker processes with {mem_limit / 2**30:.2f} GiB together: keeping every step in the workers' "
            f"memory does not fit. Peak = summed worker RSS.")
    return table(rows, f"temporal checkpointing, T={steps}, delays ff=5 rec=3") + note


# ------------------------------------------------------------------------------------------ dictionary
def _activation_rows(n_rows: int, units: int = 256) -> np.ndarray:
    steps = 40
    samples = -(-n_rows // steps)
    acts = model_activations(samples, units, steps)  # (time, sample, unit)
    return np.ascontiguousarray(acts.reshape(-1, units)[:n_rows])


def bench_dictionary(args: argparse.Namespace) -> str:
    import dask
    import dask.array as da
    from sklearn.decomposition import MiniBatchDictionaryLearning
    from threadpoolctl import threadpool_limits

    from neurochunk.pipeline.dictionary import learn_dictionary, objective_terms
    from neurochunk.stores import Dataset

    d, k, s, n = 256, 512, 8, args.rows
    x = _activation_rows(n, d)
    x -= x.mean(axis=0)  # centred, as scikit-learn's users usually pass it
    xd = da.from_array(x, chunks=(4096, d))
    rows = []

    def row(label: str, epochs: int, seconds: float, terms: dict[str, float], ref: float | None) -> dict[str, Any]:
        rate = n * epochs / seconds
        return {"learner": label, "epochs": epochs, "seconds": seconds, "samples/s": rate,
                "error": terms["error"], "L1/row": terms["l1"], "L0/row": terms["l0"],
                "objective": terms["error"] + terms["l1"], "x sklearn samples/s": rate / (ref or rate)}

    t0 = time.perf_counter()
    sk = MiniBatchDictionaryLearning(n_components=k, alpha=1.0, batch_size=256, max_iter=args.sk_epochs,
                                     fit_algorithm="cd", transform_algorithm="omp", transform_n_nonzero_coefs=s,
                                     random_state=0, tol=0, max_no_improvement=None).fit(x)
    sk_s = time.perf_counter() - t0
    sk_rate = n * args.sk_epochs / sk_s
    with dask.config.set(scheduler="threads", num_workers=2), threadpool_limits(1):
        sk_t = objective_terms(xd, sk.components_.astype(np.float32), s)
        rows.append(row("scikit-learn MiniBatchDictionaryLearning (cd, batch 256)", args.sk_epochs, sk_s, sk_t, None))
        out = Dataset.create(Path(tempfile.mkdtemp()) / "dict.zarr", "activations")
        learn_dictionary(xd, out, n_atoms=k, sparsity=s, epochs=1, progress=False)  # compile numba kernels
        out = Dataset.create(Path(tempfile.mkdtemp()) / "dict.zarr", "activations")
        res = learn_dictionary(xd, out, n_atoms=k, sparsity=s, epochs=args.epochs, progress=False)
        final = objective_terms(xd, res.dictionary, s)
        errors = [*res.errors[1:], final["error"]]  # error of the dictionary after each epoch
        reach = next((i + 1 for i, e in enumerate(errors) if e <= sk_t["error"]), None)
        if reach is not None and reach < args.epochs:
            out = Dataset.create(Path(tempfile.mkdtemp()) / "dict.zarr", "activations")
            early = learn_dictionary(xd, out, n_atoms=k, sparsity=s, epochs=reach, progress=False)
            rows.append(row("neurochunk OMP batch, 2 threads: until sklearn's error", reach, early.seconds,
                            objective_terms(xd, early.dictionary, s), sk_rate))
        rows.append(row("neurochunk OMP batch, 2 threads", args.epochs, res.seconds, final, sk_rate))
        xs = da.from_array(x, chunks=(1024, d))
        out = Dataset.create(Path(tempfile.mkdtemp()) / "dict.zarr", "activations")
        online = learn_dictionary(xs, out, n_atoms=k, sparsity=s, epochs=5, chunks_per_iteration=2, progress=False)
        rows.append(row("neurochunk OMP online (2 chunks of 1024 per update), 2 threads", 5, online.seconds,
                        objective_terms(xd, online.dictionary, s), sk_rate))
    return (table(rows, f"dictionary learning on recurrent-model activations, N={n}, d={d}, K={k}, s={s}, 2 cores")
            + "\nerror = 0.5||x - cD||^2 per row with s-sparse OMP codes c (both dictionaries coded the same way); "
              "objective = error + L1/row (scikit-learn's objective with alpha=1 at those codes).")


def bench_dictionary_large(args: argparse.Namespace) -> str:
    import dask.array as da

    from neurochunk.pipeline.activations import contiguous
    from neurochunk.pipeline.dictionary import learn_dictionary
    from neurochunk.stores import Dataset

    d, k, s = 256, 512, 8
    cluster, client, pids = _cluster(2, args.worker_memory)
    mem_limit = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
    n = args.rows or int(4 * mem_limit // (d * 4))
    n -= n % 16384
    tmp = Path(tempfile.mkdtemp(prefix="nc-dict-", dir=args.tmp))
    try:
        ds = Dataset.create(tmp / "acts.zarr", "activations")
        chunk = 16384

        def block(block_info: Any = None) -> np.ndarray:
            from neurochunk.kernels.recurrent import counter_uniform

            lo, hi = block_info[None]["array-location"][0]
            u = counter_uniform(3, np.arange(lo, hi), d)  # counter-based: any chunking, same data
            atoms = counter_uniform(4, np.arange(64), d) - 0.5
            w = np.maximum(counter_uniform(5, np.arange(lo, hi), 64) - 0.8, 0)
            return (w @ atoms + 0.05 * (u - 0.5)).astype(np.float32)

        x = da.map_blocks(block, chunks=((chunk,) * (n // chunk), (d,)), dtype=np.float32)
        from neurochunk.pipeline.io import write_array

        with PeakRSS(pids) as pw:
            t0 = time.perf_counter()
            client.compute(write_array(x, ds, "h", dims=("sample", "unit"), chunks=(chunk, d), compute=False),
                           sync=True)
            write_s = time.perf_counter() - t0
        data = contiguous(Dataset.open(tmp / "acts.zarr"), "h")
        out = Dataset.create(tmp / "dict.zarr", "activations")
        with PeakRSS(pids) as peak:
            res = learn_dictionary(data, out, n_atoms=k, sparsity=s, epochs=args.epochs, client=client,
                                   progress=True)
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [{"stage": "write activations (lossless)", "rows": n, "GiB": n * d * 4 / 2**30, "seconds": write_s,
             "samples/s": n / write_s, "peak worker MiB (sum)": pw.peak_sum / 2**20,
             "worker limit MiB (sum)": mem_limit / 2**20},
            {"stage": f"dictionary learning, {args.epochs} epochs", "rows": n, "GiB": n * d * 4 / 2**30,
             "seconds": res.seconds, "samples/s": res.samples_per_s, "peak worker MiB (sum)": peak.peak_sum / 2**20,
             "worker limit MiB (sum)": mem_limit / 2**20}]
    return (table(rows, f"dictionary learning on data 4x the workers' memory (d={d}, K={k}, s={s}, "
                        "2 workers x 1 thread)")
            + f"\nreconstruction error 0.5||x - cD||^2 per row, by epoch: {[round(o, 4) for o in res.errors]}")


# --------------------------------------------------------------------------------------------- catalog
def bench_catalog(args: argparse.Namespace) -> str:
    from neurochunk.pipeline.catalog import FeatureCatalog

    d, per_dict, q, k = 256, 65_536, 32, 10
    cluster, client, pids = _cluster(2, args.worker_memory)
    mem_limit = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
    n_dicts = args.rows // per_dict if args.rows else int(4 * mem_limit // (per_dict * d * 4)) + 1
    tmp = Path(tempfile.mkdtemp(prefix="nc-catalog-", dir=args.tmp))
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((q, d)).astype(np.float32)
    try:
        cat = FeatureCatalog.create(tmp / "cat.zarr", dim=d, chunk=32_768)
        t0 = time.perf_counter()
        for i in range(n_dicts):  # one dictionary in memory at a time
            atoms = np.random.default_rng(i + 1).standard_normal((per_dict, d)).astype(np.float32)
            freq = np.random.default_rng(i + 1000).random(per_dict).astype(np.float32)
            cat.add(atoms, name=f"dict{i}", source=f"run-{i % 4}", layer=f"layer{i % 3}", tags=["bench"],
                    frequency=freq)
        add_s = time.perf_counter() - t0
        cat = FeatureCatalog.open(tmp / "cat.zarr")
        n = cat.n_atoms
        cat.topk(queries[:1], k, client=client, name="dict0")  # warm-up: imports on the workers
        with PeakRSS(pids) as peak:
            t0 = time.perf_counter()
            scores, ids = cat.topk(queries, k, client=client)
            topk_s = time.perf_counter() - t0
        with PeakRSS(pids) as peak_f:
            t0 = time.perf_counter()
            scores_f, ids_f = cat.topk(queries, k, client=client, source="run-1", min_frequency=0.5)
            filt_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sel = cat.select(layer="layer2", min_frequency=0.99)
        select_s = time.perf_counter() - t0
        # the exact answer, scanned chunk by chunk on the client
        t0 = time.perf_counter()
        qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        best_s, best_i = np.full((q, k), -np.inf, np.float32), np.zeros((q, k), np.int64)
        arr = cat.ds["atoms"]
        for lo in range(0, n, 262_144):
            sc = qn @ np.asarray(arr[lo:lo + 262_144]).T
            all_s = np.concatenate([best_s, sc], axis=1)
            all_i = np.concatenate([best_i, np.arange(lo, lo + sc.shape[1])[None].repeat(q, 0)], axis=1)
            order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
        scan_s = time.perf_counter() - t0
        exact = bool(np.array_equal(ids, best_i))
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    gib = n * d * 4 / 2**30
    rows = [{"query": f"cosine top-{k} of {q} queries, whole catalog", "seconds": topk_s, "atoms/s": n / topk_s,
             "peak worker MiB (sum)": peak.peak_sum / 2**20, "same as exact scan": exact},
            {"query": "top-k restricted to source=run-1, frequency >= 0.5", "seconds": filt_s, "atoms/s": n / filt_s,
             "peak worker MiB (sum)": peak_f.peak_sum / 2**20, "same as exact scan": "-"},
            {"query": f"select layer=layer2, frequency >= 0.99 ({len(sel)} atoms)", "seconds": select_s,
             "atoms/s": n / select_s, "peak worker MiB (sum)": float("nan"), "same as exact scan": "-"},
            {"query": "peer: exact chunked numpy scan on the client", "seconds": scan_s, "atoms/s": n / scan_s,
             "peak worker MiB (sum)": float("nan"), "same as exact scan": True}]
    return (table(rows, f"feature catalog: {n:,} atoms x {d} ({gib:.1f} GiB) from {n_dicts} dictionaries; "
                        f"2 workers with {mem_limit / 2**30:.2f} GiB together")
            + f"\nbuilding it (catalog.add, one 64 MiB dictionary at a time): {add_s:.1f} s")


# ------------------------------------------------------------------------------------------------- GPU
def bench_gpu(args: argparse.Namespace) -> str:
    import cupy as cp
    import dask
    import dask.array as da

    from neurochunk.kernels.omp import sparse_code
    from neurochunk.pipeline.dictionary import learn_dictionary, objective
    from neurochunk.stores import Dataset

    d, k, s, n = 256, 512, 8, args.rows
    rng = np.random.default_rng(0)
    dic = rng.standard_normal((k, d)).astype(np.float32)
    dic /= np.linalg.norm(dic, axis=1, keepdims=True)
    xg = cp.asarray(rng.standard_normal((262_144, d)).astype(np.float32))
    dg = cp.asarray(dic)
    sparse_code(xg[:4096], dg, s)
    times = []
    for _ in range(5):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        sparse_code(xg, dg, s)
        b.record()
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b) / 1e3)
    omp_rate = xg.shape[0] / float(np.median(times))
    xc = cp.asnumpy(xg[:16384])
    t0 = time.perf_counter()
    sparse_code(xc, dic, s)
    t0 = time.perf_counter()
    sparse_code(xc, dic, s)
    cpu_rate = xc.shape[0] / (time.perf_counter() - t0)
    x = _activation_rows(n, d)
    x -= x.mean(axis=0)
    xd = da.from_array(x, chunks=(131_072, d))
    with dask.config.set(scheduler="threads", num_workers=1):
        out = Dataset.create(Path(tempfile.mkdtemp()) / "dict.zarr", "activations")
        learn_dictionary(xd, out, n_atoms=k, sparsity=s, epochs=1, gpu=True, progress=False)
        out = Dataset.create(Path(tempfile.mkdtemp()) / "dict.zarr", "activations")
        res = learn_dictionary(xd, out, n_atoms=k, sparsity=s, epochs=args.epochs, gpu=True, progress=False)
        obj = objective(xd, res.dictionary, s, gpu=True)
    from neurochunk.kernels.recurrent import DelayedRNN, advance, empty_history, make_weights, stimulus

    model = DelayedRNN((256, 256, 256), delay_ff=5, delay_rec=3, seed=2)
    w = make_weights(model)
    ng = 65_536
    xs = stimulus(model, cp.arange(ng), cp)
    advance(model, w, xs, empty_history(model, ng, cp), 0, 2)
    a, b = cp.cuda.Event(), cp.cuda.Event()
    a.record()
    advance(model, w, xs, empty_history(model, ng, cp), 0, 40)
    b.record()
    b.synchronize()
    rnn_gpu = ng * 40 / (cp.cuda.get_elapsed_time(a, b) / 1e3)
    nc = 4096
    t0 = time.perf_counter()
    advance(model, w, stimulus(model, np.arange(nc)), empty_history(model, nc), 0, 40)
    rnn_cpu = nc * 40 / (time.perf_counter() - t0)
    rows = [{"what": "OMP codes (kernel, cupy events, median of 5)", "rows": xg.shape[0], "samples/s": omp_rate},
            {"what": "OMP codes, CPU twin on this machine's one core", "rows": xc.shape[0], "samples/s": cpu_rate},
            {"what": f"dictionary learning epoch (host data, {args.epochs} epochs)", "rows": n,
             "samples/s": res.samples_per_s},
            {"what": "delayed RNN forward, 2 x 256 units, T=40 (sample-steps/s)", "rows": ng, "samples/s": rnn_gpu},
            {"what": "delayed RNN forward, CPU twin, all host cores (sample-steps/s)", "rows": nc,
             "samples/s": rnn_cpu}]
    dev = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return (table(rows, f"GPU ({dev}): d={d}, K={k}, s={s}")
            + f"\nfinal objective {obj:.4f}; objectives by epoch {[round(o, 4) for o in res.objectives]}"
            + f"\nreconstruction error by epoch {[round(e, 4) for e in res.errors]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["codecs", "temporal", "dictionary", "dictionary-large", "catalog", "gpu"])
    p.add_argument("--samples", type=int, default=None, help="samples of the recurrent model")
    p.add_argument("--rows", type=int, default=None, help="rows of the dictionary-learning data")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--sk-epochs", type=int, default=None)
    p.add_argument("--k", type=int, default=10, help="checkpoint interval (temporal)")
    p.add_argument("--worker-memory", default=None, help="memory limit per worker (2 workers)")
    p.add_argument("--tmp", default=None, help="scratch folder for large data")
    p.add_argument("--out", default=None, help="append the tables to this file")
    args = p.parse_args()
    defaults = {"codecs": {"samples": 4096}, "temporal": {"samples": 65536, "worker_memory": "1.25GiB"},
                "dictionary": {"rows": 16_384, "epochs": 30, "sk_epochs": 2},
                "dictionary-large": {"epochs": 2, "worker_memory": "640MiB"},
                "catalog": {"worker_memory": "640MiB"},
                "gpu": {"rows": 1_048_576, "epochs": 5}}[args.scenario]
    for key, v in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, v)
    fn = {"codecs": bench_codecs, "temporal": bench_temporal, "dictionary": bench_dictionary,
          "dictionary-large": bench_dictionary_large, "catalog": bench_catalog, "gpu": bench_gpu}[args.scenario]
    text = fn(args)
    print(text, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
