"""Replicated commits: the same commit written to several datasets, read from whichever copy is whole.

A :class:`ReplicaSet` is an ordered list of dataset locations (for example a
local path and an ``s3://`` prefix). A commit is begun in every replica, its
chunks are written to every replica, and its markers are written last, one per
replica. A chunk read tries the replicas in order and falls back to the next
one when a copy is missing (its key is gone, or its commit marker is) or
corrupt (:class:`~neurochunk.stores.integrity.ChunkCorruptionError`). Commits
are matched across replicas by name; ``meta["version"]`` orders them.

The set pickles as its locations, so Dask tasks reopen it on each worker.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .commits import MARKERS, CommitError, CommitInfo, PendingCommit
from .dataset import Dataset
from .integrity import ChunkCorruptionError, array_of_chunk_key, crc32c_ok
from .tiers import TierConfig
from .urls import S3Options

__all__ = ["Replica", "ReplicaCommit", "ReplicaLostError", "ReplicaSet"]


class ReplicaLostError(IOError):
    """Every copy of a chunk is missing or corrupt."""


@dataclass(frozen=True)
class Replica:
    """Where one copy lives."""

    url: str
    s3: S3Options | None = None
    tiers: TierConfig | None = None

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in (("s3", self.s3), ("tiers", self.tiers)) if v is not None}


class ReplicaSet:
    """Datasets holding the same commits; reads fall back from one copy to the next."""

    def __init__(self, replicas: Sequence[Replica], kind: str) -> None:
        if not replicas:
            raise ValueError("a ReplicaSet needs at least one replica")
        self.replicas, self.kind = tuple(replicas), kind
        self._datasets: list[Dataset] | None = None
        self._named_cache: dict[str, list[CommitInfo | None]] = {}
        self.unavailable: dict[str, str] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "kind": self.kind}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["replicas"], state["kind"])  # type: ignore[misc]

    @classmethod
    def create(cls, replicas: Sequence[Replica], kind: str, *, attrs: Mapping[str, Any],
               overwrite: bool = False) -> ReplicaSet:
        """Create the dataset in every replica."""
        created = [Dataset.create(r.url, kind, attrs=attrs, overwrite=overwrite, **r.kwargs()) for r in replicas]
        out = cls(replicas, kind)
        out._datasets = created  # the caller adds the kind's arrays before anyone reopens them
        return out

    @property
    def datasets(self) -> list[Dataset]:
        """The replicas that could be opened, in order (a lost replica is left out)."""
        with self._lock:
            if self._datasets is None:
                opened, self.unavailable = [], {}
                for r in self.replicas:
                    try:
                        opened.append(Dataset.open(r.url, kind=self.kind, mode="r+", **r.kwargs()))
                    except (OSError, ValueError, KeyError) as exc:  # gone, unreachable or not a dataset any more
                        self.unavailable[r.url] = f"{type(exc).__name__}: {exc}"
                if not opened:
                    raise ReplicaLostError(f"no replica of this {self.kind} could be opened: {self.unavailable}")
                self._datasets = opened
            return self._datasets

    def reopen(self) -> None:
        """Forget open handles (after a replica was changed behind this process's back)."""
        with self._lock:
            self._datasets = None
            self._named_cache = {}

    @property
    def primary(self) -> Dataset:
        return self.datasets[0]

    # -- commits ---------------------------------------------------------------------------
    def _commits(self, ds: Dataset) -> list[CommitInfo]:
        try:
            return ds.commits.list()
        except (OSError, ChunkCorruptionError):
            return []

    def latest(self) -> tuple[CommitInfo | None, list[CommitInfo | None]]:
        """The newest commit (by ``meta["version"]``) any replica holds, and its copy in each replica."""
        per = [self._commits(ds) for ds in self.datasets]
        best: CommitInfo | None = None
        for commits in per:
            for c in commits:
                if best is None or c.meta.get("version", -1) > best.meta.get("version", -1):
                    best = c
        if best is None:
            return None, [None] * len(per)
        return best, [next((c for c in reversed(commits) if c.name == best.name), None) for commits in per]

    def begin(self, name: str, meta: Mapping[str, Any]) -> ReplicaCommit:
        """Start the commit ``name`` in every replica."""
        return ReplicaCommit(self, [ds.commits.begin(name, dict(meta)) for ds in self.datasets])

    def prune(self, keep: int) -> int:
        """Delete all but the newest ``keep`` commits of each replica (marker first, then data)."""
        removed = 0
        for ds in self.datasets:
            commits = self._commits(ds)
            for c in commits[: max(len(commits) - keep, 0)]:
                prefix = ds.commits._prefix
                sync(ds.group.store.delete(f"{prefix}{MARKERS}/{c.seq:08d}.json"))
                sync(ds.group.store.delete_dir(f"{prefix}{c.path}"))
                removed += 1
            ds.commits.gc()
        return removed

    def repair(self) -> dict[str, int]:
        """Bring every replica back to a full copy: copy each key that is missing or corrupt in a
        replica (or all keys of a replica that is gone) from one that holds it intact.

        Returns the number of keys copied into each replica.
        """
        from .urls import open_store

        stores = [open_store(r.url, s3=r.s3) for r in self.replicas]

        async def _keys(store: Any) -> set[str]:
            try:
                return {k async for k in store.list()}
            except (OSError, FileNotFoundError):
                return set()

        listed = [sync(_keys(s)) for s in stores]

        copied = {r.url: 0 for r in self.replicas}
        for key in sorted(set().union(*listed)):
            have = [_intact(s, key) if key in keys else None for s, keys in zip(stores, listed, strict=True)]
            good = next((b for b in have if b is not None), None)
            if good is None:
                continue
            for r, s, b in zip(self.replicas, stores, have, strict=True):
                if b is None:
                    sync(s.set(key, good))
                    copied[r.url] += 1
        self.reopen()
        return copied

    # -- reads -----------------------------------------------------------------------------
    def read_chunk(self, commit_name: str, array: str, index: int) -> np.ndarray:
        """Chunk ``index`` (along the first axis) of ``array`` in commit ``commit_name``.

        Tries each replica in order; a missing or corrupt copy falls back to the next.
        """
        problems = []
        for ds, commit in zip(self.datasets, self._named(commit_name), strict=True):
            if commit is None:
                problems.append(f"{ds.url}: no commit {commit_name!r}")
                continue
            try:
                arr = zarr.open_array(ds.group.store, path=f"{ds.commits._prefix}{commit.path}/{array}", mode="r")
                chunk_idx = (index,) + (0,) * (arr.ndim - 1)
                key = f"{arr.path}/{arr.metadata.encode_chunk_key(chunk_idx)}"
                if not sync(ds.group.store.exists(key)):
                    problems.append(f"{ds.url}: chunk {key!r} is missing")
                    continue
                n = arr.chunks[0]
                return np.asarray(arr[index * n : (index + 1) * n])
            except ChunkCorruptionError as exc:
                problems.append(f"{ds.url}: {exc}")
            except (FileNotFoundError, KeyError, OSError) as exc:
                problems.append(f"{ds.url}: {type(exc).__name__}: {exc}")
        raise ReplicaLostError(f"chunk {index} of array {array!r} in commit {commit_name!r} is lost in every "
                               f"replica: " + "; ".join(problems))

    def _named(self, name: str) -> list[CommitInfo | None]:
        # finished commits never change, so one listing per name and process is enough
        hit = self._named_cache.get(name)
        if hit is None or any(c is None for c in hit):
            hit = [next((c for c in reversed(self._commits(ds)) if c.name == name), None) for ds in self.datasets]
            self._named_cache[name] = hit
        return hit

    def copy_array(self, from_commit: str, pending: ReplicaCommit, array: str) -> int:
        """Copy ``array``'s stored bytes from an earlier commit into ``pending`` (no decode); return bytes.

        Each key comes from the first replica that has an intact copy.
        """
        sources = [(ds, c) for ds, c in zip(self.datasets, self._named(from_commit), strict=True) if c is not None]
        if not sources:
            raise CommitError(f"no replica holds commit {from_commit!r}")
        keys: set[str] = set()
        for ds, c in sources:
            base = f"{ds.commits._prefix}{c.path}/{array}/"

            async def _ls(store: Any = ds.group.store, base: str = base) -> list[str]:
                return [k[len(base):] async for k in store.list_prefix(base)]

            keys.update(sync(_ls()))
        moved = 0
        for rel in sorted(keys):
            data = None
            for ds, c in sources:
                data = _intact(ds.group.store, f"{ds.commits._prefix}{c.path}/{array}/{rel}")
                if data is not None:
                    break
            if data is None:
                raise ReplicaLostError(f"key {rel!r} of array {array!r} in commit {from_commit!r} is lost in every replica")
            for p in pending.pendings:
                sync(p.log.group.store.set(f"{p.group.path}/{array}/{rel}", data))
            moved += len(data.to_bytes())
        return moved


def _intact(store: Any, key: str) -> Any:
    """The stored bytes of ``key``, or ``None`` when missing or (for a chunk) failing its crc32c."""
    buf = sync(store.get(key, default_buffer_prototype()))
    if buf is None:
        return None
    if array_of_chunk_key(key) is not None and not crc32c_ok(buf.to_bytes())[0]:
        return None
    return buf


@dataclass
class ReplicaCommit:
    """A commit being written to every replica; visible only after :meth:`finish`."""

    replicas: ReplicaSet
    pendings: list[PendingCommit]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        """The group path of this commit in each replica's store."""
        return [p.group.path for p in self.pendings]

    def create_array(self, name: str, shape: Sequence[int], dtype: Any, **kwargs: Any) -> None:
        for p in self.pendings:
            p.create_array(name, shape, dtype, **kwargs)

    def finish(self, meta: Mapping[str, Any] | None = None) -> list[CommitInfo]:
        """Write every replica's marker (the primary's first)."""
        out = []
        for p in self.pendings:
            p.meta.update(meta or {})
            out.append(p.finish())
        return out

    def abort(self) -> None:
        for p in self.pendings:
            p.abort()


def write_chunk(replica_set: ReplicaSet, paths: Sequence[str], array: str, index: int, values: np.ndarray) -> int:
    """Write chunk ``index`` of ``array`` into the pending commit group ``paths[i]`` of each replica."""
    written = 0
    for ds, path in zip(replica_set.datasets, paths, strict=True):
        arr = zarr.open_array(ds.group.store, path=f"{path}/{array}", mode="r+")
        arr = arr.with_config({"write_empty_chunks": True})  # an empty partition is data, not a missing chunk
        n = arr.chunks[0]
        arr[index * n : index * n + len(values)] = values
        written += values.nbytes
    return written
