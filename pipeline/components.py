"""Global connected components of a chunked volume (binary or multi-label; 6, 18 or 26 connectivity).

1. *Scan*: label every block on its own and keep its six boundary faces.
2. *Equivalences*: for every pair of blocks sharing a face, an edge or a
   corner, pair the labels that touch across it (``kernels.volume.boundary_pairs``).
3. *Merge*: union-find over the small equivalence graph (only labels that
   touch a block boundary take part) gives every provisional label its global,
   consecutive id. The result is a few arrays the size of the number of merged
   labels, committed to the output dataset.
4. *Relabel*: map every block through its slice of the merge and write it. The
   scan keeps blocks labelled as runs (:mod:`.runcache`, 5-10x smaller than the
   labels) up to ``cache_bytes``; those are painted straight from their runs,
   the others are read and labelled again.

Peak memory is a few blocks per worker, the boundary faces of the blocks in
flight and at most ``cache_bytes`` of runs. A run that dies in step 4 resumes
from the committed merge and rewrites only the blocks not yet stored.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numba
import numpy as np

from neurochunk.kernels.runs import Runs, encode_runs, label_runs
from neurochunk.kernels.volume import boundary_pairs, forward_deltas, label_chunk, relabel
from neurochunk.stores import Dataset
from neurochunk.stores.ome import create_volume, level_array, open_volume, written_chunks

from . import runcache
from .blockwise import Box, block_grid, run_tasks, source_array

__all__ = ["Merge", "connected_components", "merge_equivalences"]

Faces = dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Merge:
    """Provisional -> global ids: block offsets, and each merged-away provisional id with its root.

    Provisional id ``g`` of block ``b``'s local label ``l`` is ``offsets[b] + l``.
    ``dropped`` (sorted) are provisional ids merged into a smaller ``roots`` id;
    every other provisional id keeps its place, so global ids are consecutive.
    """

    offsets: np.ndarray
    dropped: np.ndarray
    roots: np.ndarray

    @property
    def n_labels(self) -> int:
        return int(self.offsets[-1]) - len(self.dropped)

    def lut(self, block: int, dtype: Any = np.uint32) -> np.ndarray:
        """The lookup table local label -> global id of one block (entry 0 is background)."""
        g = np.arange(self.offsets[block] + 1, self.offsets[block + 1] + 1, dtype=np.int64)
        pos = np.searchsorted(self.dropped, g)
        hit = pos < len(self.dropped)
        hit[hit] = self.dropped[pos[hit]] == g[hit]
        ids = g - pos
        if hit.any():
            r = self.roots[pos[hit]]
            ids[hit] = r - np.searchsorted(self.dropped, r)
        return np.concatenate([[0], ids]).astype(dtype)


@numba.njit(nogil=True, cache=True)
def _union_find(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    parent = np.arange(n)
    for i in range(a.shape[0]):
        x, y = a[i], b[i]
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        while parent[y] != y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        if x < y:
            parent[y] = x
        elif y < x:
            parent[x] = y
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        parent[i] = r
    return parent


def merge_equivalences(counts: Sequence[int], pairs: np.ndarray) -> Merge:
    """Union-find over provisional-id pairs ``(m, 2)``; see :class:`Merge`."""
    offsets = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
    if len(pairs) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Merge(offsets, empty, empty)
    nodes, inv = np.unique(pairs.reshape(-1), return_inverse=True)
    inv = inv.reshape(-1, 2)
    root = _union_find(inv[:, 0].copy(), inv[:, 1].copy(), len(nodes))
    moved = root != np.arange(len(nodes))
    return Merge(offsets, nodes[moved], nodes[root[moved]])


def _read(src: Any, box: Box) -> np.ndarray:
    return np.asarray(src[box])


def _label_keep(values: np.ndarray, connectivity: int, binary: bool, method: str, cache: str | None,
                block: int) -> tuple[Any, int]:
    """Label a block (labels, or :class:`Runs` from the numba labeller); offer its runs to an open run cache."""
    if method == "numba":
        flat = (values != 0).view(np.uint8) if (binary or values.dtype == np.bool_) else values
        labels: Any = label_runs(np.ascontiguousarray(flat), connectivity)
        n = labels.n
        runs = labels
    else:
        labels, n = label_chunk(values, connectivity, binary, method)
        runs = encode_runs(labels, n) if cache is not None else None
    if cache is not None and runs is not None:
        runcache.offer(cache, block, runs)
    return labels, n


def _scan(src: Any, box: Box, connectivity: int, binary: bool, method: str, cache: str | None = None,
          block: int = -1) -> tuple[int, Faces]:
    values = _read(src, box)
    labels, n = _label_keep(values, connectivity, binary, method, cache, block)
    faces: Faces = {}
    for axis in range(3):
        for side, sl in ((0, slice(0, 1)), (1, slice(-1, None))):
            cut = tuple(sl if a == axis else slice(None) for a in range(3))
            lab = labels.face(axis, side) if isinstance(labels, Runs) else labels[cut].copy()
            faces[(axis, side)] = (lab, values[cut].copy())
    return n, faces


def _facing(faces: Faces, delta: tuple[int, int, int], mine: bool) -> tuple[np.ndarray, np.ndarray]:
    """The voxels of a block facing its neighbour at ``delta`` (mine) or facing back (the neighbour's)."""
    fixed = [a for a in range(3) if delta[a]]
    side = {a: int((delta[a] > 0) == mine) for a in fixed}
    lab, val = faces[(fixed[0], side[fixed[0]])]
    cut = tuple(slice(-1, None) if a in side and side[a] else slice(0, 1) if a in side else slice(None)
                for a in range(3))
    return lab[cut], val[cut]


def _equivalences(me: int, scanned: tuple[int, Faces], neighbours: list[tuple[int, tuple[int, int, int], Any]],
                  connectivity: int, binary: bool) -> tuple[int, np.ndarray]:
    n, faces = scanned
    out = []
    for other, delta, (_, their) in neighbours:
        a_lab, a_val = _facing(faces, delta, True)
        b_lab, b_val = _facing(their, delta, False)
        p = boundary_pairs(a_lab, a_val, b_lab, b_val, delta, connectivity, binary)
        if len(p):
            out.append(np.stack([np.full(len(p), me), p[:, 0], np.full(len(p), other), p[:, 1]], axis=1))
    return n, (np.concatenate(out) if out else np.zeros((0, 4), dtype=np.int64))


def _relabel(src: Any, dst: Any, box: Box, lut: np.ndarray, connectivity: int, binary: bool, method: str,
             cache: str | None = None, block: int = -1) -> int:
    runs = runcache.take(cache, block)
    if runs is not None:  # kept from the scan: paint the global ids, no read and no second labelling
        n = runs.n
        ids = runs.paint(lut)
    else:
        labels, n = label_chunk(_read(src, box), connectivity, binary, method)
    if n + 1 != len(lut):
        raise RuntimeError(f"block {box} now has {n} components but the merge recorded {len(lut) - 1}: "
                           "the source changed since the merge was committed; rerun with resume=False")
    dst[box] = ids if runs is not None else relabel(labels, lut)
    return 1


def _stored_merge(ds: Dataset) -> Merge | None:
    from neurochunk.stores import CommitError

    try:
        group = ds.commits.open("components-merge")
    except CommitError:
        return None
    return Merge(np.asarray(group["offsets"][...]), np.asarray(group["dropped"][...]), np.asarray(group["roots"][...]))


def connected_components(src: Any, out: str | os.PathLike[str], *, connectivity: int = 26, binary: bool = False,
                         chunks: Sequence[int] | None = None, method: str = "auto", client: Any = None,
                         level: int | str = 0, resume: bool = True, progress: bool = True,
                         voxel_size: Sequence[float] | None = None, shards: Sequence[int] | None = None,
                         codec: str | None = "lz4", cache_bytes: int = 256 * 2**20) -> Dataset:
    """Label the connected components of a whole volume, chunk by chunk, into a new label volume.

    Parameters
    ----------
    src
        A volume dataset (its ``level``), a ``zarr.Array`` or a numpy array (z, y, x).
        Zero is background.
    out
        URL of the output label volume (OME-Zarr, ``uint32`` or ``uint64`` ids ``1..n``).
    connectivity
        6 (faces), 18 (faces and edges) or 26 (faces, edges and corners).
    binary
        Connect any nonzero neighbours; otherwise only neighbours of equal value.
    chunks
        Block (and output chunk) shape; default the source's chunks.
    method
        Chunk labeller, see :func:`neurochunk.kernels.volume.label_chunk`. ``"auto"``
        is the run-based numba labeller with the threaded scheduler (it releases the
        GIL and hands its runs to the run cache: 77 vs 70 MVx/s end to end at 512^3 on
        2 cores, ``benchmarks/results/connectomics.md``) and cc3d (faster per call,
        holds the GIL) with a ``client``'s process workers.
    resume
        If ``out`` holds an unfinished run over the same source, keep its merge
        and its written blocks and compute only the rest.
    codec
        Codec preset of the output. The default ``"lz4"`` (lossless) encodes
        several times faster than zstd, which sets the pace at chunk rate: 59 vs 40
        megavoxels per CPU-second end to end (``benchmarks/results/connectomics.md``);
        ``None`` is the project's zstd default, about 3x smaller.
    cache_bytes
        Memory for blocks kept labelled (as runs) between the scan and the relabel
        pass, which then skips reading and labelling them again
        (:mod:`~neurochunk.pipeline.runcache`); 0 turns it off. Used with the
        threaded scheduler (no ``client``); peak memory grows by at most this.

    Returns
    -------
    The label volume; its ``neurochunk`` block records ``n_labels``.
    """
    arr = source_array(src, level)
    if method == "auto" and client is None:
        method = "numba"
    if len(arr.shape) != 3:
        raise ValueError(f"connected_components needs a 3-D (z, y, x) volume, got shape {arr.shape}")
    if np.dtype(arr.dtype).kind not in "iub":
        raise ValueError(f"connected_components needs integer or boolean voxels, got {arr.dtype}")
    block = tuple(min(int(c), int(s)) for c, s in
                  zip(chunks or getattr(arr, "chunks", None) or (64, 64, 64), arr.shape, strict=True))
    if isinstance(src, Dataset) and voxel_size is None:
        voxel_size = src.attrs.get("voxel_size")
    grid = block_grid(arr.shape, block)
    order = {idx: i for i, idx in enumerate(grid)}
    job = {"op": "connected_components", "connectivity": connectivity, "binary": binary,
           "shape": list(arr.shape), "block": list(block), "source": _identity(arr)}

    ds, merge = _resume(out, job) if resume else (None, None)
    fresh = merge is None

    def create(dtype: Any) -> Dataset:
        return create_volume(out, arr.shape, dtype, labels=True, chunks=block, shards=shards, codec=codec,
                             voxel_size=voxel_size or (1.0, 1.0, 1.0), overwrite=True,
                             attrs={"components": job, "complete": False}, write_empty_chunks=True)

    cache = runcache.open_cache(cache_bytes) if fresh and client is None and cache_bytes > 0 else None
    try:
        return _run(arr, out, ds, merge, create, grid, order, block, connectivity, binary, method, client, progress,
                    cache)
    finally:
        if cache is not None:
            runcache.close_cache(cache)


def _run(arr: Any, out: Any, ds: Dataset | None, merge: Merge | None, create: Any, grid: dict[tuple[int, ...], Box],
         order: dict[tuple[int, ...], int], block: tuple[int, ...], connectivity: int, binary: bool, method: str,
         client: Any, progress: bool, cache: str | None) -> Dataset:
    fresh = merge is None
    if fresh:
        # fewer voxels than 2**32 means uint32 ids: create the output before the scan, off the merge's path
        ds = create(np.uint32) if int(np.prod(arr.shape)) < 2**32 else None
        merge = _scan_and_merge(arr, grid, order, connectivity, binary, method, client, progress, cache)
        dtype = np.uint32 if merge.n_labels < 2**32 else np.uint64
        if ds is None or dtype != np.uint32:
            ds = create(dtype)
    assert ds is not None and merge is not None
    dst = level_array(ds, 0)
    if tuple(dst.shards or dst.chunks) != block:
        raise ValueError(f"output {out} has chunks {dst.shards or dst.chunks}, not the block {block}")
    done = set() if fresh else written_chunks(dst)
    task = dask.delayed(_relabel, pure=False)
    tasks = [task(arr, dst, box, merge.lut(order[idx], dst.dtype), connectivity, binary, method, cache, order[idx])
             for idx, box in grid.items() if idx not in done]
    # the merge is committed while the blocks are relabelled: a crash before the commit lands
    # leaves no merge, and a resumed run then starts over, so no block can outlive its merge
    commit = threading.Thread(target=_commit_merge, args=(ds, merge))
    if fresh:
        commit.start()
    try:
        run_tasks(tasks, client, "relabel", progress)
    finally:
        if fresh:
            commit.join()
    ds.update_attrs(complete=True, n_labels=merge.n_labels)
    return ds


def _commit_merge(ds: Dataset, merge: Merge) -> None:
    with ds.commits.begin("components-merge") as pending:
        for name in ("offsets", "dropped", "roots"):
            values = getattr(merge, name)
            pending.write(name, values, dims=(name,), chunks=(max(len(values), 1),))


def _identity(arr: Any) -> str:
    """What the resume check compares: a stored array's location, or an in-memory array's content hash."""
    if hasattr(arr, "store_path"):
        return str(arr.store_path)
    return "array:" + dask.base.tokenize(np.asarray(arr))


def _resume(out: str | os.PathLike[str], job: dict[str, Any]) -> tuple[Dataset | None, Merge | None]:
    try:
        ds = open_volume(out, mode="r+")
    except (FileNotFoundError, ValueError):
        return None, None
    if ds.attrs.get("components") != job:
        return None, None
    return ds, _stored_merge(ds)


def _scan_and_merge(arr: Any, grid: dict[tuple[int, ...], Box], order: dict[tuple[int, ...], int],
                    connectivity: int, binary: bool, method: str, client: Any, progress: bool,
                    cache: str | None = None) -> Merge:
    scan = dask.delayed(_scan, pure=False, nout=None)
    scanned = {idx: scan(arr, box, connectivity, binary, method, cache, order[idx]) for idx, box in grid.items()}
    deltas = forward_deltas(connectivity)
    equiv = dask.delayed(_equivalences, pure=False)
    tasks = []
    for idx in grid:
        nbrs = []
        for d in deltas:
            other = tuple(i + di for i, di in zip(idx, d, strict=True))
            if other in grid:
                nbrs.append((order[other], d, scanned[other]))
        tasks.append(equiv(order[idx], scanned[idx], nbrs, connectivity, binary))
    results = run_tasks(tasks, client, "label + equivalences", progress)
    counts = [n for n, _ in results]
    quads = np.concatenate([q for _, q in results]) if results else np.zeros((0, 4), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pairs = np.stack([offsets[quads[:, 0]] + quads[:, 1], offsets[quads[:, 2]] + quads[:, 3]], axis=1)
    return merge_equivalences(counts, pairs)
