"""Connectomics benchmarks: global connected components, halo filters, ingest and pyramids.

Each contender runs in its own subprocess so its peak RSS (the whole process
tree, sampled every 20 ms) is its own. Throughput is end to end: read the
Zarr input, label, merge, relabel and write the Zarr output.

    python benchmarks/connectomics.py --scenario cc --size 512 --chunk 128
    python benchmarks/connectomics.py --scenario dask-image --size 256 --chunk 128 --timeout 300
    python benchmarks/connectomics.py --scenario large --size 1024 --chunk 128 --worker-memory 1GiB
    python benchmarks/connectomics.py --scenario halo --size 384 --chunk 64 --sigma 4
    python benchmarks/connectomics.py --scenario ingest
    python benchmarks/connectomics.py --scenario gpu --sizes 512,1024 --gpu-chunks 128,256   (on a CUDA machine)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()
DATA = HERE.parents[1].parent / "shared" / "data" / "neuroproof_training_sample2"


class Procedural:
    """A virtual (z, y, x) uint8 volume computed on read: the benchmark's input source."""

    def __init__(self, size: int, seed: int = 0, cell: int = 16) -> None:
        self.shape, self.dtype, self.seed, self.cell = (size, size, size), np.dtype(np.uint8), seed, cell

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        from neurochunk.kernels.volume import synthetic_segmentation

        return synthetic_segmentation(tuple(s.stop - s.start for s in box), tuple(s.start for s in box), self.seed,
                                      self.cell)


def make_input(work: Path, size: int, chunk: int, dtype: str = "uint8") -> Path:
    from neurochunk.pipeline.ingest import ingest

    path = work / f"input-{size}-{chunk}-{dtype}.zarr"
    if not path.exists():
        t = time.perf_counter()
        ingest(Procedural(size), path, chunks=(chunk,) * 3, dtype=dtype, progress=False)
        print(f"# generated {size}^3 {dtype} input in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


# ---- contenders (each runs inside a fresh subprocess) -------------------------------------------
def tree_cpu() -> float:
    """CPU seconds (user + system) used so far by this process and its live descendants."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_contender(name: str, a: dict[str, Any]) -> dict[str, Any]:
    """Run one contender: its wall seconds, and the CPU seconds its timed part used (``cpu_seconds``)."""
    return _contender(name, a)


def _contender(name: str, a: dict[str, Any]) -> dict[str, Any]:
    import zarr

    src, out = a["input"], a["output"]
    shutil.rmtree(out, ignore_errors=True)
    binary = a.get("binary", False)
    if name.startswith("neurochunk"):
        from neurochunk.pipeline.components import connected_components
        from neurochunk.stores.ome import open_volume

        method = "numba" if "numba" in name else "cupy" if "cupy" in name else "cc3d"
        client = cluster = None
        if "procs" in name:
            from distributed import Client, LocalCluster

            cluster = LocalCluster(n_workers=a["workers"], threads_per_worker=1, processes=True,
                                   memory_limit=a.get("worker_memory") or "auto", dashboard_address=None)
            client = Client(cluster)
        else:
            import dask

            dask.config.set(num_workers=a["workers"])
        # warm-up: load the compiled kernels (numba cache) and the imports on every worker outside the clock
        if client is not None:
            client.run(lambda: __import__("neurochunk.pipeline.components"))
        connected_components(np.ones((8, 8, 8), np.uint8), out + "-warm", method=method, client=client,
                             chunks=(2, 2, 2), progress=False, resume=False)  # resumed, it would load no kernel
        def timed() -> tuple[float, float, Any]:
            t, cpu = time.perf_counter(), tree_cpu()
            ds = connected_components(open_volume(src), out, connectivity=26, binary=binary, method=method,
                                      client=client, progress=False, codec=None if name.endswith("zstd") else "lz4",
                                      cache_bytes=0 if "nocache" in name else 256 * 2**20, resume=False)
            return time.perf_counter() - t, tree_cpu() - cpu, ds

        dt, cpu, ds = timed()
        # the same job again in the same process: steady state, with the allocator and thread pools warm
        again = timed()[0] if a.get("again") else None
        if client is not None:
            client.close()
            cluster.close()
        return {"seconds": dt, "cpu_seconds": cpu, "n_labels": ds.attrs["n_labels"], "again_seconds": again}
    if name == "cc3d-whole":
        import cc3d

        t, cpu = time.perf_counter(), tree_cpu()
        x = zarr.open_array(f"{src}/0", mode="r")[...]
        t_read = time.perf_counter()
        labels, n = cc3d.connected_components(x != 0 if binary else x, connectivity=26, return_N=True,
                                              out_dtype=np.uint32)
        t_label = time.perf_counter()
        del x
        from neurochunk.stores.ome import create_volume

        ds = create_volume(out, labels.shape, np.uint32, labels=True, chunks=(a["chunk"],) * 3)
        ds["0"][...] = labels
        t_end = time.perf_counter()
        return {"seconds": t_end - t, "cpu_seconds": tree_cpu() - cpu, "label_seconds": t_label - t_read,
                "n_labels": int(n)}
    if name == "dask-image":
        import dask
        import dask.array as da
        from dask_image import ndmeasure

        dask.config.set(num_workers=a["workers"])
        t, cpu = time.perf_counter(), tree_cpu()
        x = da.from_zarr(zarr.open_array(f"{src}/0", mode="r"))
        labels, n = ndmeasure.label(x != 0, structure=np.ones((3, 3, 3), bool))
        store = zarr.open_array(out, mode="w", shape=x.shape, chunks=x.chunksize, dtype=labels.dtype)
        _, n = dask.compute(da.store(labels, store, lock=False, compute=False), n)
        return {"seconds": time.perf_counter() - t, "cpu_seconds": tree_cpu() - cpu, "n_labels": int(n)}
    if name in ("halo-neurochunk", "halo-neurochunk-lowmem", "halo-map_overlap"):
        from neurochunk.kernels.volume import gaussian_radius
        from neurochunk.pipeline import filters

        import dask

        dask.config.set(num_workers=a["workers"])
        sigma = a["sigma"]
        t, cpu = time.perf_counter(), tree_cpu()
        if name.startswith("halo-neurochunk"):
            # lowmem: one chunk per task (task_bytes=1) instead of up to 4^3 chunks under one halo
            filters.gaussian(zarr.open_array(f"{src}/0", mode="r"), out, sigma, progress=False,
                             **({"task_bytes": 1} if name.endswith("lowmem") else {}))
        else:
            import dask.array as da
            from scipy import ndimage

            x = da.from_zarr(zarr.open_array(f"{src}/0", mode="r"))
            y = x.map_overlap(lambda b: ndimage.gaussian_filter(b.astype(np.float32), sigma, mode="reflect"),
                              depth=gaussian_radius(sigma), boundary="reflect", dtype=np.float32)
            store = zarr.open_array(out, mode="w", shape=x.shape, chunks=x.chunksize, dtype=np.float32)
            da.store(y, store, lock=False)
        return {"seconds": time.perf_counter() - t, "cpu_seconds": tree_cpu() - cpu}
    raise SystemExit(f"unknown contender {name}")


def measure(name: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one contender in a subprocess; add its wall time limit and peak RSS of its process tree."""
    import psutil

    proc = subprocess.Popen([sys.executable, str(HERE), "--contender", name, "--args", json.dumps(args)],
                            stdout=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = 0
                for q in [p, *p.children(recursive=True)]:
                    try:
                        rss += q.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], rss)
                time.sleep(0.02)
        except psutil.Error:
            pass

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
        result = json.loads(out.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        for q in psutil.Process(proc.pid).children(recursive=True):
            q.kill()
        proc.kill()
        proc.communicate()
        result = {"seconds": float("inf"), "timed_out": timeout}
    th.join()
    result["peak_rss_gib"] = peak[0] / 2**30
    return result


def table(rows: list[tuple[str, dict[str, Any]]], voxels: int) -> str:
    lines = ["| contender | seconds | MVx/s end to end | CPU s | MVx per CPU-s | peak RSS (GiB) | labels |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        sec = r["seconds"]
        mvx = f"{voxels / sec / 1e6:.1f}" if np.isfinite(sec) else f"< {voxels / r['timed_out'] / 1e6:.2f} (timed out)"
        extra = f" (label only {voxels / r['label_seconds'] / 1e6:.0f} MVx/s)" if "label_seconds" in r else ""
        if r.get("again_seconds"):
            extra += f" (same job again in the process: {voxels / r['again_seconds'] / 1e6:.1f} MVx/s)"
        cpu = r.get("cpu_seconds")
        cpu_s, per_cpu = (f"{cpu:.1f}", f"{voxels / cpu / 1e6:.1f}") if cpu else ("", "")
        lines.append(f"| {name}{extra} | {sec:.1f} | {mvx} | {cpu_s} | {per_cpu} | {r['peak_rss_gib']:.2f} "
                     f"| {r.get('n_labels', '')} |")
    return "\n".join(lines)


def scenario_cc(a: argparse.Namespace, work: Path, names: list[str], binary: bool = False) -> str:
    names = a.contenders.split(",") if a.contenders else names
    src = make_input(work, a.size, a.chunk)
    base = {"input": str(src), "output": str(work / "out.zarr"), "workers": a.workers, "chunk": a.chunk,
            "binary": binary, "worker_memory": a.worker_memory, "again": a.again}
    rows = [(n, measure(n, base, a.timeout)) for n in names]
    head = (f"26-connectivity {'binary' if binary else 'multi-label'} CC, {a.size}^3 uint8 synthetic "
            f"(procedural neurites + axons), {a.chunk}^3 chunks, {a.workers} workers")
    return head + "\n\n" + table(rows, a.size**3)


def scenario_halo(a: argparse.Namespace, work: Path) -> str:
    src = make_input(work, a.size, a.chunk, "float32")
    base = {"input": str(src), "output": str(work / "halo.zarr"), "workers": a.workers, "sigma": a.sigma}
    names = ("halo-neurochunk", "halo-neurochunk-lowmem", "halo-map_overlap")
    rows = [(n, measure(n, base, a.timeout)) for n in (a.contenders.split(",") if a.contenders else names)]
    from neurochunk.kernels.volume import gaussian_radius

    head = (f"Gaussian sigma={a.sigma} (halo {gaussian_radius(a.sigma)[0]}), {a.size}^3 float32 "
            f"({a.size**3 * 4 / 2**30:.2f} GiB), {a.chunk}^3 chunks, {a.workers} threads")
    return head + "\n\n" + table(rows, a.size**3)


def scenario_ingest(a: argparse.Namespace, work: Path) -> str:
    from neurochunk.pipeline.ingest import ingest
    from neurochunk.pipeline.pyramid import build_pyramid

    rows = ["| step | voxels | seconds | MVx/s |", "|---|---|---|---|"]

    def timed(label: str, voxels: int, fn: Any) -> Any:
        t = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t
        rows.append(f"| {label} | {voxels / 1e6:.1f} M | {dt:.2f} | {voxels / dt / 1e6:.1f} |")
        return res

    n = 250**3
    img = timed("ingest PNG stack 250^3 uint8 (neuroproof)", n, lambda: ingest(
        DATA / "grayscale_maps", work / "img.zarr", voxel_size=(10, 10, 10), progress=False))
    timed("pyramid (mean) of it, 3 levels", n, lambda: build_pyramid(img, progress=False))
    gt = timed("ingest HDF5 .h5.gz 250^3 int32 (incl. gunzip)", n, lambda: ingest(
        str(DATA / "groundtruth.h5.gz") + ":stack", work / "gt.zarr", labels=True, progress=False))
    timed("pyramid (mode) of it, 3 levels", n, lambda: build_pyramid(gt, progress=False))
    src = make_input(work, a.size, a.chunk)
    m = a.size**3
    big = timed(f"ingest Zarr v3 {a.size}^3 uint8 -> OME-Zarr", m, lambda: ingest(
        str(src / "0"), work / "re.zarr", chunks=(a.chunk,) * 3, progress=False))
    timed(f"pyramid (mean) of {a.size}^3", m, lambda: build_pyramid(big, progress=False))
    return "Ingest and pyramid throughput (threaded scheduler, 2 cores)\n\n" + "\n".join(rows)


def _events_median(fn: Any, reps: int = 5) -> float:
    """Median seconds of ``fn()`` timed with CUDA events after one warm-up call."""
    import cupy as cp

    fn()
    times = []
    for _ in range(reps):
        s, e = cp.cuda.Event(), cp.cuda.Event()
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(cp.cuda.get_elapsed_time(s, e) / 1e3)
    return float(np.median(times))


def _copy_seconds(nbytes: int) -> tuple[float, float]:
    """Median seconds of a pageable host->device and device->host copy of ``nbytes``."""
    import cupy as cp

    host = np.zeros(nbytes, np.uint8)
    dev = cp.asarray(host)
    return _events_median(lambda: dev.set(host), 3), _events_median(lambda: dev.get(out=host), 3)


def codec_probe(work: Path, edge: int = 256, threads: int = 0) -> list[str]:
    """Where the output's encode time goes: one ``edge``^3 uint32 label chunk encoded and written, 1 and N threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numcodecs

    from neurochunk.kernels.volume import label_chunk, synthetic_segmentation
    from neurochunk.stores.ome import create_volume, level_array

    threads = threads or os.cpu_count() or 1
    labels = label_chunk(synthetic_segmentation((edge,) * 3, (edge,) * 3), 26, False, "cc3d")[0] + np.uint32(40000)
    rows = []

    def rate(fn: Any, n: int) -> tuple[float, float]:
        fn(0)
        with ThreadPoolExecutor(n) as pool:
            t = time.perf_counter()
            list(pool.map(fn, range(n * 2)))
            dt = time.perf_counter() - t
        return n * 2 * labels.nbytes / dt / 1e9, dt

    for name, shuffle in (("blosc lz4 shuffle (the lz4 preset)", 1), ("blosc lz4 no shuffle", 0)):
        codec = numcodecs.Blosc("lz4", 5, shuffle)
        ratio = labels.nbytes / len(codec.encode(labels))
        one, _ = rate(lambda i, c=codec: c.encode(labels), 1)
        many, _ = rate(lambda i, c=codec: c.encode(labels), threads)
        rows.append(f"| probe: numcodecs {name} encode of a {edge}^3 uint32 chunk (ratio {ratio:.1f}), GB/s of "
                    f"labels, 1 / {threads} threads | {one:.2f} / {many:.2f} | | |")
    for codec in ("lz4", "raw"):
        ds = create_volume(work / f"probe-{codec}.zarr", (edge * threads * 2, edge, edge), np.uint32, labels=True,
                           chunks=(edge,) * 3, codec=codec, overwrite=True, write_empty_chunks=True)
        dst = level_array(ds, 0)

        def put(i: int, dst: Any = dst) -> None:
            dst[i * edge:(i + 1) * edge] = labels

        one, _ = rate(put, 1)
        many, _ = rate(put, threads)
        rows.append(f"| probe: zarr write of a {edge}^3 uint32 chunk, output {codec}, GB/s of labels, 1 / {threads} "
                    f"threads | {one:.2f} / {many:.2f} | | |")
        shutil.rmtree(work / f"probe-{codec}.zarr", ignore_errors=True)
    host = np.empty_like(labels)
    one, _ = rate(lambda i: np.copyto(host, labels), 1)
    rows.append(f"| probe: memcpy of the chunk, GB/s, 1 thread | {one:.2f} | | |")
    return rows


def scenario_gpu(a: argparse.Namespace, work: Path) -> str:
    """Labeller alone on the device, then end to end from Zarr with the labels resident on the GPU."""
    import cc3d
    import cupy as cp

    from neurochunk.kernels.volume_gpu import label_chunk_gpu
    from neurochunk.pipeline.resident import connected_components_resident
    from neurochunk.stores.ome import open_volume

    sizes = [int(s) for s in (a.sizes or str(a.size)).split(",")]
    chunks = [int(c) for c in (a.gpu_chunks or str(a.chunk)).split(",")]
    rows = ["| what | MVx/s | seconds | where the time goes |", "|---|---|---|---|"]

    def add(row: str) -> None:  # also on stderr at once, so a run cut off still shows its rows
        rows.append(row)
        print(row, file=sys.stderr, flush=True)

    h2d, d2h = _copy_seconds(2**30)
    add(f"| pageable copy 1 GiB host->device / device->host (GB/s) | {2**30 / h2d / 1e9:.1f} / "
                f"{2**30 / d2h / 1e9:.1f} | | |")
    for row in codec_probe(work):
        add(row)
    warm = np.asarray(open_volume(make_input(work, 64, 32))["0"][...])
    connected_components_resident(warm, work / "warm.zarr", chunks=(32, 32, 32), slab_voxels=32 * 64 * 64)
    ref = None
    for size in sizes:
        for chunk in chunks:
            src = make_input(work, size, chunk)
            if chunk == chunks[0] and size <= 1024:
                x = open_volume(src)["0"][...]
                d = cp.asarray(x)
                med = _events_median(lambda d=d: label_chunk_gpu(d, 26, False))
                add(f"| label_chunk_gpu {size}^3 26-conn multi-label (device-resident, median of 5) "
                            f"| {x.size / med / 1e6:.0f} | {med:.4f} | |")
                del d
                ref = cc3d.connected_components(x, connectivity=26, out_dtype=np.uint32) if size <= 512 else None
                del x
                cp.get_default_memory_pool().free_all_blocks()
            big = size > 1024  # one run of the largest chunks, to bound the device time
            if big and chunk != max(chunks):
                continue
            cores = os.cpu_count() or 1
            variants = [("lz4", "chunks", a.gpu_threads or cores)]
            if chunk == max(chunks) and not big:
                variants += [("lz4", "slabs", cores), ("lz4", "chunks", 2 * cores), ("raw", "chunks", cores)]
            for codec, io, threads in variants:
                for rep in range(a.big_repeats if big else a.repeats):
                    t, clock = time.perf_counter(), {}
                    ds = connected_components_resident(open_volume(src), work / "e2e.zarr", codec=codec,
                                                       timings=clock, io=io, threads=threads)
                    dt = time.perf_counter() - t
                    where = ", ".join(f"{k} {v:.2f} s" for k, v in clock.items() if k != "slabs")
                    add(f"| resident end to end {size}^3, {chunk}^3 chunks in and out, output {codec}, io {io}, "
                        f"{threads} threads, {clock['slabs']} slab(s), {ds.attrs['n_labels']} labels, run {rep + 1} "
                        f"| {size**3 / dt / 1e6:.0f} | {dt:.2f} | {where} |")
                if ref is not None and codec == "lz4":
                    same = bool(np.array_equal(open_volume(work / "e2e.zarr")["0"][...], ref))
                    add(f"| output == cc3d on the whole {size}^3, voxel for voxel (io {io}) | {same} | | |")
                cp.get_default_memory_pool().free_all_blocks()
            shutil.rmtree(src, ignore_errors=True)
    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return (f"GPU: {name}, {os.cpu_count()} CPU threads, {time.strftime('%Y-%m-%d')}; end to end = read the "
            "Zarr input (page cache), decode, upload, label, merge, relabel, download, encode, write the "
            "OME-Zarr output\n\n" + "\n".join(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=["cc", "dask-image", "large", "halo", "ingest", "gpu"], default="cc")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--worker-memory", default=None, help="memory limit per process worker (large scenario)")
    p.add_argument("--sigma", type=float, default=4.0)
    p.add_argument("--sizes", default=None, help="gpu scenario: comma-separated edge lengths")
    p.add_argument("--gpu-chunks", default=None, help="gpu scenario: comma-separated chunk edges")
    p.add_argument("--gpu-threads", type=int, default=0,
                   help="gpu scenario: threads of the first (or only, above 1024^3) variant (0: one per core)")
    p.add_argument("--big-repeats", type=int, default=1, help="gpu scenario: timed runs above 1024^3")
    p.add_argument("--again", action="store_true", help="cc: run each neurochunk job a second time in its process")
    p.add_argument("--repeats", type=int, default=2, help="gpu scenario: timed runs per configuration")
    p.add_argument("--contenders", default=None, help="comma-separated contenders instead of the scenario's own")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per contender before it is cut off")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--contender", help=argparse.SUPPRESS)
    p.add_argument("--args", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.contender:
        print(json.dumps(run_contender(a.contender, json.loads(a.args))))
        return
    work = Path(a.work or tempfile.mkdtemp(prefix="nc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if a.scenario == "cc":
            text = scenario_cc(a, work, ["neurochunk-threads-cc3d", "neurochunk-threads-cc3d-zstd",
                                         "neurochunk-threads-numba", "neurochunk-procs-cc3d", "cc3d-whole"])
        elif a.scenario == "dask-image":
            text = scenario_cc(a, work, ["neurochunk-threads-cc3d", "cc3d-whole", "dask-image"], binary=True)
        elif a.scenario == "large":
            text = scenario_cc(a, work, ["neurochunk-procs-cc3d", "neurochunk-threads-cc3d"])
            text += f"\n\nprocess workers capped at {a.worker_memory} each (threads: no cap, one process)"
        elif a.scenario == "halo":
            text = scenario_halo(a, work)
        elif a.scenario == "gpu":
            text = scenario_gpu(a, work)
        else:
            text = scenario_ingest(a, work)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    load = ", load average %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    print(f"\n## {a.scenario} ({os.cpu_count()} cores{load}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(text)


if __name__ == "__main__":
    main()
