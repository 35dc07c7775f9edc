"""Global connected components with the labels resident in device memory: label once, merge, relabel, write.

The GPU path of :func:`~neurochunk.pipeline.components.connected_components`
for a node whose device holds the volume's ``uint32`` labels (4 bytes a voxel:
a 2048^3 volume is 34 GB, an H200 has 139 GB).

1. *Read*: CPU threads decode the source's chunks in parallel (the Zarr
   codecs run on the CPU) and copy each into a z-slab on the device; the next
   slab is read while the current one is labelled.
2. *Label*: every z-slab is labelled once on the device and its labels stay
   there; the labels that touch across each slab boundary are paired on the
   device (:func:`~neurochunk.kernels.volume.plane_pairs`).
3. *Merge*: union-find over those pairs (:func:`~neurochunk.pipeline.components.merge_equivalences`).
4. *Relabel and write*: every slab is mapped through its lookup table on the
   device; CPU threads copy its output chunks home, encode and write them,
   while the device relabels the next slab.

Slabs span whole (y, x) planes and slab labels follow raster order, so the
global ids follow the raster order of each object's first voxel: the result
equals ``cc3d.connected_components`` on the whole volume voxel for voxel.
With ``device="numpy"`` the same steps run on the host (tests, small volumes).
Unlike the chunked pipeline this one does not resume: it recomputes everything.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr

from neurochunk.kernels.volume import label_chunk, plane_pairs
from neurochunk.stores import Dataset
from neurochunk.stores.ome import create_volume, level_array

from .blockwise import Box, block_grid, source_array
from .components import merge_equivalences

__all__ = ["connected_components_resident"]


class _Device:
    """The array module and one non-blocking stream per worker thread (cupy), or the host (numpy)."""

    def __init__(self, name: str) -> None:
        if name == "cupy":
            import cupy

            self.xp: Any = cupy
        elif name == "numpy":
            self.xp = np
        else:
            raise ValueError(f"device must be 'cupy' or 'numpy', not {name!r}")
        self._local = threading.local()
        self._lock = threading.Lock()
        self.clock: dict[str, float] = {}
        self.io = "chunks"

    def add(self, key: str, seconds: float) -> None:
        with self._lock:
            self.clock[key] = self.clock.get(key, 0.0) + seconds

    @property
    def gpu(self) -> bool:
        return self.xp is not np

    def upload(self, host: np.ndarray, dest: Any, where: Box) -> None:
        if not self.gpu:
            dest[where] = host
            return
        with self._stream():
            dest[where] = self.xp.asarray(host)
            self._stream().synchronize()

    def download(self, dev: Any) -> np.ndarray:
        """A host copy of ``dev``; on the GPU a page-locked buffer of this thread, reused by its next call."""
        if not self.gpu:
            return np.ascontiguousarray(dev)
        with self._stream():
            dense = self.xp.ascontiguousarray(dev)
            host = self._pinned(dense.shape, dense.dtype)
            dense.get(out=host)  # straight into page-locked memory: no staging copy on the CPU
            self._stream().synchronize()
        return host

    def _pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buf = getattr(self._local, "pinned", None)
        if buf is None or buf.nbytes < nbytes:
            import cupyx

            buf = self._local.pinned = cupyx.empty_pinned(nbytes, np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)

    def sync(self) -> None:
        if self.gpu:
            self.xp.cuda.get_current_stream().synchronize()

    def _stream(self) -> Any:
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self.xp.cuda.Stream(non_blocking=True)
        return stream


def connected_components_resident(src: Any, out: str | os.PathLike[str], *, connectivity: int = 26,
                                  binary: bool = False, chunks: Sequence[int] | None = None,
                                  device: str = "cupy", slab_voxels: int = 2**28, threads: int | None = None,
                                  codec: str | None = "lz4", level: int | str = 0,
                                  voxel_size: Sequence[float] | None = None, shards: Sequence[int] | None = None,
                                  timings: dict[str, float] | None = None, io: str = "chunks") -> Dataset:
    """Label the connected components of a whole volume with its labels resident on the device.

    Parameters
    ----------
    src, out, connectivity, binary, chunks, codec, level, voxel_size, shards
        As for :func:`~neurochunk.pipeline.components.connected_components`.
    device
        ``"cupy"`` (the GPU) or ``"numpy"`` (the host).
    slab_voxels
        Voxels labelled at once: a slab is as many chunk layers along z as fit
        (at least one). The GPU labeller needs about 30 bytes a voxel of the slab
        on top of the 4 bytes a voxel of the whole volume kept resident; several
        slabs let the threads read the next slab while the device labels one.
    threads
        CPU threads decoding and encoding chunks (default: two per core; on an
        H200 node 32 threads beat 16 at 1024^3, ``benchmarks/results/connectomics.md``).
    io
        ``"chunks"``: each thread reads or writes one chunk through Zarr at a time;
        ``"slabs"``: one Zarr call per slab, Zarr's own concurrency over its chunks.
    timings
        If given, filled with wall seconds per phase (``read + label``, ``merge``,
        ``relabel + write``) and the seconds the threads spent (summed over
        threads) decoding, uploading, downloading and encoding chunks.

    Returns
    -------
    The label volume; its ``neurochunk`` block records ``n_labels``.
    """
    arr = source_array(src, level)
    if len(arr.shape) != 3:
        raise ValueError(f"connected_components_resident needs a 3-D (z, y, x) volume, got shape {arr.shape}")
    if np.dtype(arr.dtype).kind not in "iub":
        raise ValueError(f"connected_components_resident needs integer or boolean voxels, got {arr.dtype}")
    if slab_voxels < 1:
        raise ValueError(f"slab_voxels must be positive, got {slab_voxels}")
    dev = _Device(device)
    if io not in ("chunks", "slabs"):
        raise ValueError(f"io must be 'chunks' or 'slabs', not {io!r}")
    dev.io = io
    shape = tuple(int(s) for s in arr.shape)
    block = tuple(min(int(c), s) for c, s in
                  zip(chunks or getattr(arr, "chunks", None) or (128, 128, 128), shape, strict=True))
    if isinstance(src, Dataset) and voxel_size is None:
        voxel_size = src.attrs.get("voxel_size")
    depth = block[0] * max(1, slab_voxels // (block[0] * shape[1] * shape[2]))
    slabs = [(z0, min(z0 + depth, shape[0])) for z0 in range(0, shape[0], depth)]
    boxes = list(block_grid(shape, block).values())
    method = "cupy" if dev.gpu else "auto"
    clock = timings if timings is not None else {}
    clock.update({"read chunks": 0.0, "upload chunks": 0.0, "download chunks": 0.0, "write chunks": 0.0})
    dev.clock = clock
    t0 = time.perf_counter()

    nthreads = threads or 2 * (os.cpu_count() or 1)  # twice the cores: a thread often waits on a copy or a file
    with (ThreadPoolExecutor(nthreads) as pool, ThreadPoolExecutor(1) as ahead,
          zarr.config.set({"async.concurrency": max(nthreads, 10)})):
        labels, counts, pairs = _label_slabs(arr, dev, slabs, boxes, pool, ahead, connectivity, binary, method)
        dev.sync()
        t1 = time.perf_counter()
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        quads = [offsets[i] + p for i, p in pairs]
        merge = merge_equivalences(counts, np.concatenate(quads) if quads else np.zeros((0, 2), np.int64))
        dtype = np.uint32 if merge.n_labels < 2**32 else np.uint64
        job = {"op": "connected_components", "connectivity": connectivity, "binary": binary,
               "shape": list(shape), "block": list(block), "resident": device}
        ds = create_volume(out, shape, dtype, labels=True, chunks=block, shards=shards, codec=codec,
                           voxel_size=voxel_size or (1.0, 1.0, 1.0), overwrite=True,
                           attrs={"components": job, "complete": False}, write_empty_chunks=True)
        dst = level_array(ds, 0)
        t2 = time.perf_counter()
        writes: list[Future[None]] = []
        for i, (z0, z1) in enumerate(slabs):
            lut = dev.xp.asarray(merge.lut(i, dtype))
            ids = lut[labels[i]]
            labels[i] = None  # the slab's provisional labels are no longer needed
            dev.sync()
            if io == "slabs":
                writes.append(pool.submit(_write_slab, dev, dst, ids, z0, z1))
                continue
            writes += [pool.submit(_write_chunk, dev, dst, ids, box, z0) for box in boxes if box[0].start >= z0
                       and box[0].stop <= z1]
        for w in writes:
            w.result()
    ds.update_attrs(complete=True, n_labels=merge.n_labels)
    t3 = time.perf_counter()
    clock.update({"read + label": t1 - t0, "merge": t2 - t1, "relabel + write": t3 - t2, "slabs": len(slabs)})
    return ds


def _label_slabs(arr: Any, dev: _Device, slabs: list[tuple[int, int]], boxes: list[Box], pool: ThreadPoolExecutor,
                 ahead: ThreadPoolExecutor, connectivity: int, binary: bool, method: str
                 ) -> tuple[list[Any], list[int], list[tuple[int, np.ndarray]]]:
    labels: list[Any] = []
    counts: list[int] = []
    pairs: list[tuple[int, np.ndarray]] = []
    last: tuple[Any, Any] | None = None
    pending = ahead.submit(_read_slab, arr, dev, slabs[0], boxes, pool)
    for i in range(len(slabs)):
        values = pending.result()
        if i + 1 < len(slabs):
            pending = ahead.submit(_read_slab, arr, dev, slabs[i + 1], boxes, pool)
        lab, n = label_chunk(values, connectivity, binary, method)
        if last is not None:
            # pairs (label in the slab before, label here): ids are offset by the slabs' counts later
            p = plane_pairs(last[0], last[1], lab[0], values[0], connectivity, binary)
            pairs.append((i - 1, np.stack([p[:, 0], p[:, 1] + counts[-1]], axis=1)))
        last = (lab[-1].copy(), values[-1].copy())
        labels.append(lab)
        counts.append(n)
        del values
    return labels, counts, pairs


def _read_slab(arr: Any, dev: _Device, slab: tuple[int, int], boxes: list[Box], pool: ThreadPoolExecutor) -> Any:
    z0, z1 = slab
    if dev.io == "slabs":
        t = time.perf_counter()
        host = np.asarray(arr[z0:z1])
        t1 = time.perf_counter()
        values = dev.xp.asarray(host)
        dev.sync()
        dev.add("read chunks", t1 - t)
        dev.add("upload chunks", time.perf_counter() - t1)
        return values
    values = dev.xp.empty((z1 - z0, *arr.shape[1:]), dtype=arr.dtype)
    reads = [pool.submit(_read_chunk, arr, dev, values, box, z0) for box in boxes
             if box[0].start >= z0 and box[0].stop <= z1]
    for r in reads:
        r.result()
    return values


def _read_chunk(arr: Any, dev: _Device, values: Any, box: Box, z0: int) -> None:
    t = time.perf_counter()
    host = np.asarray(arr[box])
    t1 = time.perf_counter()
    dev.upload(host, values, (slice(box[0].start - z0, box[0].stop - z0), box[1], box[2]))
    dev.add("read chunks", t1 - t)
    dev.add("upload chunks", time.perf_counter() - t1)


def _write_slab(dev: _Device, dst: Any, ids: Any, z0: int, z1: int) -> None:
    t = time.perf_counter()
    host = ids.get() if dev.gpu else ids
    t1 = time.perf_counter()
    dst[z0:z1] = host
    dev.add("download chunks", t1 - t)
    dev.add("write chunks", time.perf_counter() - t1)


def _write_chunk(dev: _Device, dst: Any, ids: Any, box: Box, z0: int) -> None:
    t = time.perf_counter()
    host = dev.download(ids[slice(box[0].start - z0, box[0].stop - z0), box[1], box[2]])
    t1 = time.perf_counter()
    dst[box] = host
    dev.add("download chunks", t1 - t)
    dev.add("write chunks", time.perf_counter() - t1)
