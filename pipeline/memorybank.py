"""MemoryBank: 10^7+ scored memories in hash partitions, advanced by fused iterations on Dask.

Layout. A ``memory_bank`` dataset of ``P`` partitions of ``capacity`` slots.
Memory ``id`` lives in partition ``splitmix64(id) mod P``; partition ``p`` is
chunk ``p`` of every array (``id`` uint64, ``strength`` float32, ``count``
uint32, ``last_step`` int64, optional ``payload`` float32 (memory, dim)), its
memories sorted by id and its unused tail padded with ``EMPTY_ID``.

State of record. The root arrays hold the empty layout; each change (ingest,
delete, an iteration batch) writes a new atomic commit holding every array,
replicated to every :class:`~neurochunk.stores.replicas.ReplicaSet` member.
The newest commit (``meta["version"]``) is the bank; a killed writer leaves
the one before it.

Iterations. ``apply_decay``, ``apply_reinforcement``, ``compute_quality`` and
``rank_by_quality`` act on partitions persisted on the workers. ``run_epoch``
fuses ``commit_every`` iterations into one task per partition, so each graph
has O(P) tasks whatever the number of iterations; each partition reports
per-iteration statistics and its top-k, which a tree reduction combines.
After a commit a partition is re-read through a per-worker cache on the
worker that wrote it, so lineage never reaches back past the last commit: a
lost worker costs re-reading its partitions from the store and recomputing at
most ``commit_every`` iterations.

Duplicate ids. Within and across ingest batches the last occurrence of an id
wins: its strength and payload replace the stored ones, and its count and
last_step restart (0 and the ingest step). Reinforcement deltas for one id in
one iteration are summed (float64, arrival order) before clipping.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dask
import numpy as np
from dask import delayed
from neurochunk.kernels import memory as K
from neurochunk.stores.replicas import Replica, ReplicaSet

from .memory_ingest import _delete_partition, _ingest_partition
from .memory_ops import (
    _block,
    _combine_block,
    _combine_quality,
    _combine_rank,
    _decay,
    _graph_size,
    _quality,
    _rank,
    _reinforce,
    _tree,
)
from .memory_store import (
    _load,
    _load_payload,
    _write,
    drop_resident,
    io_counters,
    reset_io_counters,
)
from .memory_types import (
    ARRAYS,
    FILL,
    CapacityError,
    EpochReport,
    KeyedSource,
    Partition,
    Quality,
    Source,
)

__all__ = ["CapacityError", "EpochReport", "KeyedSource", "MemoryBank", "Partition", "Quality", "drop_resident",
           "io_counters", "reset_io_counters"]


class MemoryBank:
    """Scored memories in hash partitions of a ``memory_bank`` dataset, replicated.

    Use :meth:`create` or :meth:`open`. Pass a ``distributed.Client`` to run on a
    cluster; without one, partitions run on Dask's threaded scheduler in-process.
    """

    def __init__(self, replicas: ReplicaSet, client: Any = None, keep_commits: int = 2,
                 staging_dir: str | None = None) -> None:
        self.replicas, self.client, self.keep_commits = replicas, client, keep_commits
        self.staging_dir = staging_dir
        attrs = replicas.primary.attrs
        self.n_partitions, self.capacity = int(attrs["partitions"]), int(attrs["capacity"])
        self.payload_dim = int(attrs.get("payload_dim", 0))
        self.token = str(attrs["token"])
        self._live: list[Any] | None = None
        self._dirty = False
        self._owners: dict[int, str] = {}
        self.last_graph_size = 0
        self._refresh()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def create(cls, url: str, *, partitions: int, capacity: int, payload_dim: int = 0,
               replicas: Sequence[str | Replica] = (), overwrite: bool = False, client: Any = None,
               codec: str | None = None, **kwargs: Any) -> MemoryBank:
        """Create an empty bank of ``partitions`` partitions of ``capacity`` memories each.

        Parameters
        ----------
        url
            The primary copy (local path, ``memory://`` or ``s3://``).
        replicas
            Further copies (URLs or :class:`Replica`); replication factor = 1 + len(replicas).
        payload_dim
            Floats of payload (an embedding) per memory; 0 for none.
        kwargs
            ``s3`` / ``tiers`` options of the primary.
        """
        if partitions <= 0 or capacity <= 0:
            raise ValueError(f"partitions ({partitions}) and capacity ({capacity}) must be positive")
        reps = [Replica(url, kwargs.get("s3"), kwargs.get("tiers"))]
        reps += [r if isinstance(r, Replica) else Replica(r) for r in replicas]
        import uuid

        attrs = {"partitions": partitions, "capacity": capacity, "payload_dim": payload_dim,
                 "token": uuid.uuid4().hex, "duplicate_ids": "last-wins"}
        rs = ReplicaSet.create(reps, "memory_bank", attrs=attrs, overwrite=overwrite)
        for ds in rs.datasets:
            for name, dtype in ARRAYS.items():
                ds.create_array(name, (partitions * capacity,), dtype, chunks=(capacity,), dims=("memory",),
                                fill_value=FILL[name], codec=codec)
            if payload_dim:
                ds.create_array("payload", (partitions * capacity, payload_dim), np.float32,
                                chunks=(capacity, payload_dim), dims=("memory", "dim"), codec=codec)
        return cls(rs, client)

    @classmethod
    def open(cls, url: str, *, replicas: Sequence[str | Replica] = (), client: Any = None, **kwargs: Any) -> MemoryBank:
        """Open a bank and its replicas (the primary's metadata must be readable)."""
        reps = [Replica(url, kwargs.pop("s3", None), kwargs.pop("tiers", None))]
        reps += [r if isinstance(r, Replica) else Replica(r) for r in replicas]
        return cls(ReplicaSet(reps, "memory_bank"), client, **kwargs)

    @classmethod
    def from_dataset(cls, ds: Any, client: Any = None) -> MemoryBank:
        """The bank of an opened ``memory_bank`` :class:`~neurochunk.stores.Dataset` (no replicas)."""
        rs = ReplicaSet([Replica(str(ds.url), getattr(ds, "_s3", None))], "memory_bank")
        rs._datasets = [ds]
        return cls(rs, client)

    def iter_partitions(self) -> Iterable[Partition]:
        """The partitions of the latest commit, one at a time (bounded memory)."""
        for p in range(self.n_partitions):
            yield _load(self.replicas, self.token, self._commit, p, self.sizes[p])

    def _refresh(self) -> None:
        info, _ = self.replicas.latest()
        self._commit = info.name if info else None
        meta = info.meta if info else {}
        self.version = int(meta.get("version", 0))
        self.iteration = int(meta.get("iteration", 0))
        self.sizes = list(meta.get("sizes", [0] * self.n_partitions))
        self.epoch = meta.get("epoch")

    @property
    def n_memories(self) -> int:
        return int(sum(self.sizes))

    @property
    def commit_name(self) -> str | None:
        return self._commit

    # -- running graphs -------------------------------------------------------------------------
    def _compute(self, *objs: Any) -> tuple[Any, ...]:
        if self.client is not None:
            return tuple(self.client.compute(list(objs), sync=True, optimize_graph=False))
        return dask.compute(*objs, scheduler="threads", optimize_graph=False)

    def _persist(self, objs: list[Any]) -> list[Any]:
        if self.client is not None:
            return list(self.client.persist(objs, optimize_graph=False))
        return list(dask.persist(*objs, scheduler="threads", optimize_graph=False))

    def _loads(self) -> list[Any]:
        out = []
        for p in range(self.n_partitions):
            owner = self._owners.get(p)
            ctx = dask.annotate(workers=[owner], allow_other_workers=True) if owner and owner != "local" \
                else dask.annotate()
            with ctx:
                out.append(delayed(_load, pure=False)(self.replicas, self.token, self._commit, p, self.sizes[p],
                                                      dask_key_name=f"mb-load-{self.token[:8]}-{self.version}-{p}"))
        return out

    def _ensure_live(self) -> list[Any]:
        if self._live is None:
            self._live = self._persist(self._loads())
        return self._live

    def _map_live(self, fn: Callable[..., Any], *args: Any) -> None:
        live = self._ensure_live()
        self._live = self._persist([delayed(fn, pure=False)(part, *args) for part in live])
        self._dirty = True

    # -- commits ----------------------------------------------------------------------------------
    def _begin(self, name: str, meta: dict[str, Any]) -> Any:
        # one writer at a time: what a killed writer left half-written goes before a new commit starts
        # (readers never collect, so opening a bank never disturbs a writer)
        for ds in self.replicas.datasets:
            ds.commits.gc()
        pending = self.replicas.begin(name, meta)
        for arr, dtype in ARRAYS.items():
            pending.create_array(arr, (self.n_partitions * self.capacity,), dtype, chunks=(self.capacity,),
                                 dims=("memory",), fill_value=FILL[arr])
        return pending

    def _finish(self, pending: Any, meta: dict[str, Any], results: Sequence[tuple[int, int, str]]) -> None:
        sizes = [int(r[0]) for r in results]
        meta = {**meta, "sizes": sizes, "n_memories": int(sum(sizes))}
        pending.finish(meta)
        self._owners = {p: r[2] for p, r in enumerate(results)}
        self.replicas.prune(self.keep_commits)
        self._refresh()

    def _copy_payload(self, pending: Any) -> None:
        if self.payload_dim and self._commit is not None:
            self.replicas.copy_array(self._commit, pending, "payload")
        elif self.payload_dim:
            pending.create_array("payload", (self.n_partitions * self.capacity, self.payload_dim), np.float32,
                                 chunks=(self.capacity, self.payload_dim), dims=("memory", "dim"))

    def commit(self, name: str | None = None, **extra_meta: Any) -> str | None:
        """Write the live partitions as a new commit (no-op when nothing changed); return its name."""
        if not self._dirty or self._live is None:
            return self._commit
        version = self.version + 1
        name = name or f"v{version}-iter{self.iteration}"
        meta = {"version": version, "iteration": self.iteration, "epoch": self.epoch, **extra_meta}
        pending = self._begin(name, meta)
        try:
            self._copy_payload(pending)
            writes = [delayed(_write, pure=False)(part, self.replicas, self.token, name, pending.paths, self.capacity)
                      for part in self._live]
            results = self._compute(*writes)
            self._finish(pending, meta, results)
        except BaseException:
            pending.abort()
            raise
        self._dirty = False
        self._live = None  # re-read through each worker's cache: lineage stops at this commit
        return self._commit

    # -- ingest, get, delete ------------------------------------------------------------------------
    def ingest(self, ids: Any, strengths: Any, payload: Any = None, *, step: int | None = None) -> int:
        """Add or replace memories (last occurrence wins); numpy or dask arrays (any size).

        Dask inputs are read one chunk at a time, so the input may be larger than
        memory. Returns the number of memories in the bank afterwards.
        """
        if hasattr(ids, "numblocks"):
            def _batches() -> Iterable[tuple[Any, Any, Any]]:
                for i in range(ids.numblocks[0]):
                    yield (ids.blocks[i].compute(), strengths.blocks[i].compute(),
                           payload.blocks[i].compute() if payload is not None else None)

            return self.ingest_batches(_batches(), step=step)
        return self.ingest_batches([(ids, strengths, payload)], step=step)

    def _check_batch(self, i: int, ids: Any, strengths: Any, payload: Any) -> tuple[np.ndarray, ...]:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ingest batch {i}: ids must be integers, not {ids.dtype}")
        if ids.dtype.kind == "i" and len(ids) and ids.min() < 0:
            raise ValueError(f"ingest batch {i}: ids must be non-negative")
        ids = ids.astype(np.uint64)
        s = np.asarray(strengths, dtype=np.float32)
        if ids.ndim != 1 or s.shape != ids.shape:
            raise ValueError(f"ingest batch {i}: ids {ids.shape} and strengths {s.shape} must be 1-D and equal")
        if len(ids) and (ids == K.EMPTY_ID).any():
            raise ValueError(f"ingest batch {i}: id {int(K.EMPTY_ID)} is reserved (it marks empty slots)")
        if len(s) and not (np.isfinite(s).all() and s.min() >= 0 and s.max() <= 1):
            raise ValueError(f"ingest batch {i}: strengths must be finite and in [0, 1]")
        if self.payload_dim:
            if payload is None:
                raise ValueError(f"ingest batch {i}: this bank stores a payload of {self.payload_dim} floats")
            payload = np.asarray(payload, dtype=np.float32)
            if payload.shape != (len(ids), self.payload_dim):
                raise ValueError(f"ingest batch {i}: payload has shape {payload.shape}, expected "
                                 f"({len(ids)}, {self.payload_dim})")
        elif payload is not None:
            raise ValueError(f"ingest batch {i}: this bank was created without a payload (payload_dim=0)")
        return ids, s, payload

    def ingest_batches(self, batches: Iterable[tuple[Any, Any, Any]], *, step: int | None = None) -> int:
        """Ingest ``(ids, strengths, payload)`` batches as one commit, with bounded memory.

        Each batch is split by partition into spill files; then each partition
        merges its spills into its memories in one task.
        """
        self.commit()
        step = self.iteration if step is None else step
        staging = tempfile.mkdtemp(prefix="neurochunk-ingest-", dir=self.staging_dir)
        try:
            frags: dict[int, list[str]] = {}
            n_in = 0
            for i, (ids, s, pay) in enumerate(batches):
                ids, s, pay = self._check_batch(i, ids, s, pay)
                order, starts = K.group_by_partition(ids, self.n_partitions)
                for p in range(self.n_partitions):
                    sel = order[starts[p] : starts[p + 1]]
                    if len(sel) == 0:
                        continue
                    path = os.path.join(staging, f"p{p:06d}-b{i:08d}.npz")
                    extra = {"payload": pay[sel]} if self.payload_dim else {}
                    np.savez(path, id=ids[sel], strength=s[sel], **extra)
                    frags.setdefault(p, []).append(path)
                n_in += len(ids)
            version = self.version + 1
            name = f"v{version}-ingest"
            meta = {"version": version, "iteration": self.iteration, "epoch": self.epoch, "ingested": n_in}
            pending = self._begin(name, meta)
            if self.payload_dim:
                pending.create_array("payload", (self.n_partitions * self.capacity, self.payload_dim), np.float32,
                                     chunks=(self.capacity, self.payload_dim), dims=("memory", "dim"))
            try:
                tasks = [delayed(_ingest_partition, pure=False)(
                    self.replicas, self.token, self._commit, self.sizes[p], p, frags.get(p, []), step,
                    self.payload_dim, name, pending.paths, self.capacity) for p in range(self.n_partitions)]
                results = self._compute(*tasks)
                self._finish(pending, meta, results)
            except BaseException:
                pending.abort()
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._live = None
        return self.n_memories

    def delete(self, ids: Any) -> int:
        """Delete memories by id (absent ids are ignored); return how many were deleted."""
        self.commit()
        ids = np.unique(np.asarray(ids).astype(np.uint64))
        order, starts = K.group_by_partition(ids, self.n_partitions)
        before = self.n_memories
        version = self.version + 1
        name = f"v{version}-delete"
        meta = {"version": version, "iteration": self.iteration, "epoch": self.epoch}
        pending = self._begin(name, meta)
        try:
            if self.payload_dim:
                pending.create_array("payload", (self.n_partitions * self.capacity, self.payload_dim), np.float32,
                                     chunks=(self.capacity, self.payload_dim), dims=("memory", "dim"))
            tasks = [delayed(_delete_partition, pure=False)(
                self.replicas, self.token, self._commit, self.sizes[p], p, ids[order[starts[p]:starts[p + 1]]],
                self.payload_dim, name, pending.paths, self.capacity) for p in range(self.n_partitions)]
            results = self._compute(*tasks)
            self._finish(pending, meta, results)
        except BaseException:
            pending.abort()
            raise
        self._live = None
        return before - self.n_memories

    def get(self, ids: Any) -> dict[str, np.ndarray]:
        """Look memories up by id.

        Returns ``found`` (bool) and ``strength`` (NaN where absent), ``count``,
        ``last_step`` and, if stored, ``payload``, in the order of ``ids``. Reads
        only the partitions the ids hash to (live state if uncommitted changes exist).
        """
        ids = np.asarray(ids).astype(np.uint64)
        n = len(ids)
        out = {"found": np.zeros(n, bool), "strength": np.full(n, np.nan, np.float32),
               "count": np.zeros(n, np.uint32), "last_step": np.zeros(n, np.int64)}
        if self.payload_dim:
            out["payload"] = np.full((n, self.payload_dim), np.nan, np.float32)
        order, starts = K.group_by_partition(ids, self.n_partitions)
        parts = [p for p in range(self.n_partitions) if starts[p + 1] > starts[p]]
        if self._dirty and self._live is not None:
            found = self._compute(*[self._live[p] for p in parts])
        else:
            found = [_load(self.replicas, self.token, self._commit, p, self.sizes[p]) for p in parts]
        for p, part in zip(parts, found, strict=True):
            sel = order[starts[p] : starts[p + 1]]
            q = ids[sel]
            srt = np.argsort(q, kind="stable")
            pos = np.full(len(q), -1, np.int64)
            pos[srt] = K.lookup_sorted(part.id, q[srt])
            hit = pos >= 0
            idx = sel[hit]
            out["found"][idx] = True
            for name in ("strength", "count", "last_step"):
                out[name][idx] = getattr(part, name)[pos[hit]]
            if self.payload_dim and hit.any():
                out["payload"][idx] = _load_payload(self.replicas, self._commit, p, self.sizes[p],
                                                    self.payload_dim)[pos[hit]]
        return out

    # -- one iteration, operation by operation ----------------------------------------------------
    def apply_decay(self, rate: float) -> None:
        """``s <- clip(s * float32(1 - rate), 0, 1)`` for every memory (lazy, persisted on the workers)."""
        self._map_live(_decay, float(rate))

    def apply_reinforcement(self, ids: Any, deltas: Any, step: int | None = None) -> None:
        """Add ``deltas`` to the memories ``ids`` (routed to their partitions), clip to [0, 1],
        count the reinforcements and stamp ``last_step`` (default: the current iteration)."""
        ids = np.asarray(ids).astype(np.uint64)
        deltas = np.asarray(deltas, dtype=np.float32)
        if ids.shape != deltas.shape:
            raise ValueError(f"reinforcement ids {ids.shape} and deltas {deltas.shape} differ in shape")
        step = self.iteration if step is None else step
        order, starts = K.group_by_partition(ids, self.n_partitions)
        live = self._ensure_live()
        new = []
        for p, part in enumerate(live):
            sel = order[starts[p] : starts[p + 1]]
            new.append(delayed(_reinforce, pure=False, nout=2)(part, ids[sel], deltas[sel], step)[0])
        self._live = self._persist(new)
        self._dirty = True

    def compute_quality(self, bins: int = 64) -> Quality:
        """Sum, mean, max and a ``bins``-bin histogram over [0, 1] of strength (tree-reduced)."""
        live = self._ensure_live()
        q = self._compute(_tree([delayed(_quality, pure=True)(p, bins) for p in live], _combine_quality))[0]
        n = q["n"]
        return Quality(n, float(q["sum"]), float(q["sum"] / n) if n else 0.0, float(q["max"]), q["hist"])

    def rank_by_quality(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The global top-``k`` ``(ids, strengths)``, strongest first, ties by ascending id.

        Each partition ranks its own memories; a tree of merges keeps ``k`` per node.
        """
        live = self._ensure_live()
        s, i = self._compute(_tree([delayed(_rank, pure=True)(p, k) for p in live], _combine_rank, k))[0]
        return i.astype(np.uint64), s.astype(np.float32)

    def iterate(self, rate: float, ids: Any, deltas: Any) -> None:
        """One iteration: decay, then reinforcement stamped with the current iteration; advances it."""
        self.apply_decay(rate)
        self.apply_reinforcement(ids, deltas, self.iteration)
        self.iteration += 1

    # -- epochs -------------------------------------------------------------------------------------
    def run_epoch(self, n_iterations: int, source: Source, *, decay_rate: float, commit_every: int = 0,
                  k: int = 100, bins: int = 64, resident: bool = True, progress: bool = False,
                  scaled: bool = False) -> EpochReport:
        """Run ``n_iterations`` fused iterations from the current one; commit every ``commit_every`` and at the end.

        ``scaled=True`` keeps strengths lazily scaled inside each block between commits
        (:mod:`neurochunk.kernels.memory_scaled`: decay O(1), a single float32 rounding of
        the decay product instead of one per iteration; results depend on where commits fall).

        ``source(t)`` returns the ``(ids, deltas)`` of iteration ``t``; it must be
        deterministic in ``t`` (a recomputed partition calls it again). ``resident=False``
        streams partitions through memory (load, iterate, write, release) for banks
        larger than the cluster's memory.
        """
        if not 0.0 <= decay_rate <= 1.0:
            raise ValueError(f"decay_rate must be in [0, 1], got {decay_rate}")
        self.commit()
        self.epoch = {"start": self.iteration, "target": self.iteration + n_iterations, "decay_rate": decay_rate,
                      "commit_every": commit_every, "k": k, "bins": bins, "resident": resident, "scaled": scaled}
        return self._epoch(source, progress)

    def resume_epoch(self, source: Source, progress: bool = False) -> EpochReport | None:
        """Finish the epoch the latest commit is part of (after a crash); ``None`` if it was finished."""
        self._refresh()
        if not self.epoch or self.iteration >= self.epoch["target"]:
            return None
        return self._epoch(source, progress)

    def _epoch(self, source: Source, progress: bool) -> EpochReport:
        ep = self.epoch
        assert ep is not None
        k, bins, rate = int(ep["k"]), int(ep["bins"]), float(ep["decay_rate"])
        first, target = self.iteration, int(ep["target"])
        every = int(ep["commit_every"]) or max(target - first, 1)
        t_start = time.perf_counter()
        blocks: list[dict[str, Any]] = []
        report = EpochReport(first, target - first, *(np.zeros(0),) * 4, np.zeros((0, k), np.uint64),
                             np.zeros((0, k)))
        from tqdm.auto import tqdm

        bar = tqdm(total=target - first, unit="it", disable=not progress, leave=False)
        while self.iteration < target:
            # blocks end on multiples of commit_every, so a resumed epoch commits where the first run would have
            n = min(every - (self.iteration - int(ep["start"])) % every, target - self.iteration)
            t0 = self.iteration
            loads = self._loads()
            outs = [delayed(_block, pure=False, nout=2)(ld, t0, n, rate, source, k, bins, self.n_partitions,
                                                        bool(ep.get("scaled", False)))
                    for ld in loads]
            stats = _tree([o[1] for o in outs], _combine_block, k)
            version = self.version + 1
            name = f"v{version}-iter{t0 + n}"
            meta = {"version": version, "iteration": t0 + n, "epoch": ep}
            pending = self._begin(name, meta)
            try:
                self._copy_payload(pending)
                writes = [delayed(_write, pure=False)(o[0], self.replicas, self.token, name, pending.paths,
                                                      self.capacity, None, bool(ep.get("resident", True)))
                          for o in outs]
                self.last_graph_size = _graph_size([stats, *writes])
                report.graph_sizes.append(self.last_graph_size)
                st, *results = self._compute(stats, *writes)
                self._finish(pending, meta, results)
            except BaseException:
                pending.abort()
                raise
            blocks.append(st)
            report.commits.append(name)
            bar.update(n)
        bar.close()
        self._live, self._dirty = None, False
        n_live = np.array([b["n"] for b in blocks for _ in range(len(b["sums"]))], dtype=np.float64)
        report.sums = np.concatenate([b["sums"] for b in blocks])
        report.means = np.divide(report.sums, n_live, out=np.zeros_like(report.sums), where=n_live > 0)
        report.maxima = np.concatenate([b["maxima"] for b in blocks])
        report.histogram = blocks[-1]["hist"]
        report.top_ids = np.concatenate([b["top_i"] for b in blocks])
        report.top_strengths = np.concatenate([b["top_s"] for b in blocks])
        report.seconds = time.perf_counter() - t_start
        report.partitions_read = int(sum(b["reads"] for b in blocks))
        report.bytes_read = int(sum(b["bytes_read"] for b in blocks))
        report.topk_rebuilds = int(sum(b["rebuilds"] for b in blocks))
        return report

    def io_stats(self) -> dict[str, int]:
        """Partition reads, cache hits and bytes read/written, summed over this process and the workers."""
        total = io_counters()
        if self.client is not None:
            for c in self.client.run(io_counters).values():
                for key, v in c.items():
                    total[key] += v
        return total

    def read_all(self) -> dict[str, np.ndarray]:
        """Every memory of the latest commit, sorted by id (small banks: tests and plots)."""
        parts = [_load(self.replicas, self.token, self._commit, p, self.sizes[p]) for p in range(self.n_partitions)]
        out = {name: np.concatenate([getattr(p, name) for p in parts]) for name in ARRAYS}
        order = np.argsort(out["id"])
        return {name: v[order] for name, v in out.items()}

    def repair(self) -> dict[str, int]:
        """Restore full replication after a copy was lost or damaged; see :meth:`ReplicaSet.repair`."""
        out = self.replicas.repair()
        self._refresh()
        return out

    def __repr__(self) -> str:
        return (f"<MemoryBank {self.n_memories} memories in {self.n_partitions} partitions x {self.capacity} at "
                f"{self.replicas.primary.url} (+{len(self.replicas.replicas) - 1} replicas), "
                f"iteration {self.iteration}, commit {self._commit!r}>")
