"""I/O throughput: neurochunk's stores against plain zarr, the raw disk, the tiers and S3 (moto).

One command per scenario, each printing a table with its peer measured in the same run::

    python benchmarks/io.py write-read --gib 4     # neurochunk vs plain zarr vs raw disk
    python benchmarks/io.py tiers --mib 512        # RAM-tier and disk-tier hits vs origin reads
    python benchmarks/io.py s3 --mib 256           # the same against moto's S3 server on 127.0.0.1
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from neurochunk.pipeline import read_array, write_array
from neurochunk.stores import Dataset, S3Options, TierConfig, parse_codec

CHUNK = 4 * 2**20 // 4  # 4 MiB float32 chunks
ZARR_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"


def _source(n: int, seed: int = 0) -> da.Array:
    """Neuron-state-like float32 values: noise around -60 mV plus a per-chunk offset.

    One chunk of noise is drawn once and shifted per chunk, so generating the data
    costs little next to compressing and storing it.
    """
    noise = (-60 + np.random.default_rng(seed).normal(0, 1, CHUNK)).astype(np.float32)

    def block(_: np.ndarray, block_info: Any = None) -> np.ndarray:
        lo, hi = block_info[None]["array-location"][0]
        return noise[: hi - lo] + np.float32(5 * np.sin(lo / 5e6))

    return da.map_blocks(block, da.empty(n, chunks=CHUNK, dtype=np.float32), dtype=np.float32)


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _raw_disk(path: Path, nbytes: int) -> tuple[float, float]:
    target = path / "raw.bin"
    out = subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=16M", f"count={max(1, nbytes // 2**24)}",
                          "conv=fdatasync", "status=none"], capture_output=True)
    t_w = _timed(lambda: subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=16M",
                                         f"count={max(1, nbytes // 2**24)}", "conv=fdatasync", "status=none"],
                                        check=True))
    try:
        fd = os.open(target, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    except OSError:
        pass
    t_r = _timed(lambda: subprocess.run(["dd", f"if={target}", "of=/dev/null", "bs=16M", "status=none"], check=True))
    target.unlink()
    del out
    return nbytes / t_w / 1e9, nbytes / t_r / 1e9


def write_read(gib: float, workdir: Path, trials: int = 3) -> None:
    n = int(gib * 2**30 // 4)
    nbytes = n * 4
    x = _source(n)
    codec = parse_codec("lossless").zarr_kwargs(np.dtype("f4"))
    rows = []
    with dask.config.set(scheduler="threads"):
        for trial in range(trials):
            # plain zarr: same codecs, chunks and dask parallelism, zarr's own codec pipeline, no neurochunk code
            plain_path = workdir / f"plain{trial}.zarr"
            nc_path = workdir / f"nc{trial}.zarr"

            def plain() -> None:
                with zarr.config.set({"codec_pipeline.path": ZARR_PIPELINE}):
                    arr = zarr.create_array(zarr.storage.LocalStore(str(plain_path)), shape=(n,), chunks=(CHUNK,),
                                            dtype="f4", dimension_names=["neuron"], **codec)
                    tw = _timed(lambda: da.store(x, arr, lock=False))
                    back = zarr.open_array(str(plain_path), mode="r")
                tr = _timed(lambda: da.from_zarr(back).sum().compute())
                rows.append(("plain zarr", trial, nbytes / tw / 1e9, nbytes / tr / 1e9, arr.nbytes_stored()))

            def ours() -> None:
                ds = Dataset.create(nc_path, "neuron_state")
                tw = _timed(lambda: write_array(x, ds, "v", dims=("neuron",)))
                ds = Dataset.open(nc_path)
                tr = _timed(lambda: read_array(ds, "v").sum().compute())
                rows.append(("neurochunk", trial, nbytes / tw / 1e9, nbytes / tr / 1e9, ds["v"].nbytes_stored()))

            for run in ((plain, ours) if trial % 2 == 0 else (ours, plain)):  # alternate who goes first
                run()
            shutil.rmtree(plain_path)
            shutil.rmtree(nc_path)
    raw_w, raw_r = _raw_disk(workdir, min(nbytes, 2**31))
    print(f"\nwrite/read of a {gib:g} GiB float32 array, 4 MiB chunks, blosc zstd+shuffle+crc32c, "
          f"dask threads on {os.cpu_count()} cores")
    print(f"{'store':<12} {'trial':>5} {'write GB/s':>11} {'read GB/s':>10} {'ratio':>6}")
    for name, trial, w, r, stored in rows:
        print(f"{name:<12} {trial:>5} {w:>11.3f} {r:>10.3f} {nbytes / stored:>6.2f}")
    best = {name: (max(w for nm, _, w, _, _ in rows if nm == name), max(r for nm, _, _, r, _ in rows if nm == name))
            for name in ("plain zarr", "neurochunk")}
    ow = 100 * (best["plain zarr"][0] / best["neurochunk"][0] - 1)
    orr = 100 * (best["plain zarr"][1] / best["neurochunk"][1] - 1)
    print(f"{'raw disk':<12} {'':>5} {raw_w:>11.3f} {raw_r:>10.3f}   (dd, 16 MiB blocks; read may hit page cache)")
    print(f"neurochunk overhead over plain zarr (best of {trials}): write {ow:+.1f}%  read {orr:+.1f}%")
    med = {name: (float(np.median([w for nm, _, w, _, _ in rows if nm == name])),
                  float(np.median([r for nm, _, _, r, _ in rows if nm == name]))) for name in best}
    print(f"neurochunk overhead over plain zarr (median of {trials}): "
          f"write {100 * (med['plain zarr'][0] / med['neurochunk'][0] - 1):+.1f}%  "
          f"read {100 * (med['plain zarr'][1] / med['neurochunk'][1] - 1):+.1f}%")
    print(f"load average during the run: {' '.join(open('/proc/loadavg').read().split()[:3])}")


def _tier_table(origin_label: str, make: Any, n: int) -> None:
    """Read one array cold (origin), then from each tier in turn, at the store and at the array level."""
    ds = make()
    keys = [f"v/c/{i}" for i in range(-(-n // CHUNK))]
    store = ds.tiers
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    proto = default_buffer_prototype()

    def get_all() -> None:
        async def _go() -> None:
            import asyncio

            await asyncio.gather(*(store.get(k, proto) for k in keys))

        sync(_go())

    def read() -> None:
        read_array(ds, "v").sum().compute(scheduler="threads")

    def forget(decoded: bool = True, ram: bool = True, disk: bool = True) -> None:
        st = store._state
        with st.lock:
            if decoded:
                st.decoded.clear()
                st.decoded_held = 0
            if ram:
                st.ram.clear()
                st.ram_held = 0
        if disk:
            shutil.rmtree(store.config.disk_path, ignore_errors=True)
            st.disk_index = None

    def origin_requests() -> int:
        return int(store.stats()["origin"]["requests"])

    rows = []
    nbytes = n * 4
    # cold: every tier empty before each measurement
    forget()
    t_get = _timed(get_all)
    forget()
    before = origin_requests()
    t_arr = _timed(read)
    rows.append(("origin (cold)", nbytes / t_get, nbytes / t_arr, origin_requests() - before))
    # decoded tier: filled by the cold read above
    before = origin_requests()
    t_arr = _timed(read)
    rows.append(("decoded tier", float("nan"), nbytes / t_arr, origin_requests() - before))
    # RAM tier of stored bytes: drop the decoded chunks only
    forget(decoded=True, ram=False, disk=False)
    t_get = _timed(get_all)
    forget(decoded=True, ram=False, disk=False)
    before = origin_requests()
    t_arr = _timed(read)
    rows.append(("RAM tier", nbytes / t_get, nbytes / t_arr, origin_requests() - before))
    # disk tier: drop both RAM tiers
    forget(decoded=True, ram=True, disk=False)
    t_get = _timed(get_all)
    forget(decoded=True, ram=True, disk=False)
    before = origin_requests()
    t_arr = _timed(read)
    rows.append(("disk tier", nbytes / t_get, nbytes / t_arr, origin_requests() - before))
    print(f"\ntiers over {origin_label}: {n * 4 / 2**20:.0f} MiB float32 in 4 MiB chunks")
    print(f"{'served by':<15} {'chunk fetch GB/s':>17} {'array read GB/s':>16} {'origin requests':>16}")
    for label, g, a, req in rows:
        print(f"{label:<15} {g / 1e9:>17.3f} {a / 1e9:>16.3f} {req:>16}")
    print(f"vs origin: decoded-tier hit {rows[1][2] / rows[0][2]:.1f}x (array read); RAM-tier hit "
          f"{rows[2][1] / rows[0][1]:.0f}x (chunk fetch), {rows[2][2] / rows[0][2]:.1f}x (array read)")
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")


def tiers(mib: int, workdir: Path) -> None:
    n = mib * 2**20 // 4
    ds = Dataset.create(workdir / "origin.zarr", "neuron_state")
    write_array(_source(n), ds, "v", dims=("neuron",), chunks=(CHUNK,))
    cfg = TierConfig(ram_bytes=2 * mib * 2**20, disk_path=str(workdir / "cache"), disk_bytes=4 * mib * 2**20,
                     decoded_bytes=2 * mib * 2**20)
    _tier_table("local disk", lambda: Dataset.open(workdir / "origin.zarr", tiers=cfg), n)


def s3(mib: int, workdir: Path) -> None:
    import s3fs
    from moto.server import ThreadedMotoServer

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        opts = S3Options(endpoint_url=f"http://{host}:{port}", key="bench", secret="bench-secret")
        s3fs.S3FileSystem(**opts.storage_options()).mkdir("bench")
        n = mib * 2**20 // 4
        url = "s3://bench/origin.zarr"
        ds = Dataset.create(url, "neuron_state", s3=opts)
        t = _timed(lambda: write_array(_source(n), ds, "v", dims=("neuron",), chunks=(CHUNK,)))
        print(f"\nS3 (moto on 127.0.0.1) write: {n * 4 / t / 1e9:.3f} GB/s")
        cfg = TierConfig(ram_bytes=2 * mib * 2**20, disk_path=str(workdir / "cache"), disk_bytes=4 * mib * 2**20,
                         decoded_bytes=2 * mib * 2**20)
        _tier_table("S3 (moto server on 127.0.0.1)", lambda: Dataset.open(url, tiers=cfg, s3=opts), n)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["write-read", "tiers", "s3"])
    parser.add_argument("--gib", type=float, default=4.0, help="array size for write-read")
    parser.add_argument("--trials", type=int, default=4, help="alternating trials of write-read (best is reported)")
    parser.add_argument("--mib", type=int, default=512, help="array size for tiers / s3")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="nc-io-", dir=args.dir))
    try:
        {"write-read": lambda: write_read(args.gib, workdir, args.trials), "tiers": lambda: tiers(args.mib, workdir),
         "s3": lambda: s3(args.mib, workdir)}[args.scenario]()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
