"""Atomic commits: named, complete snapshots of a set of arrays.

A commit's arrays are written into a fresh group ``commits/<seq>``; only then
is its marker ``_commits/<seq>.json`` written, in one store ``set`` (an atomic
rename on local disk, one PUT on S3). Readers see only commits with a valid
marker, so a writer killed at any point leaves the previous commit readable;
the half-written group it leaves behind is invisible and :meth:`CommitLog.gc`
removes it.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .arrays import create_named_array

__all__ = ["CommitInfo", "CommitLog", "PendingCommit", "CommitError"]

MARKERS = "_commits"
DATA = "commits"


class CommitError(RuntimeError):
    """A commit is missing, incomplete or cannot be finished."""


@dataclass(frozen=True)
class CommitInfo:
    """One finished commit, as its marker describes it."""

    seq: int
    name: str
    path: str
    arrays: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"seq": self.seq, "name": self.name, "path": self.path, "arrays": sorted(self.arrays),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)), "meta": self.meta}


def _encode_marker(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return json.dumps({"body": body, "crc32": zlib.crc32(body.encode())}).encode()


def _decode_marker(raw: bytes) -> dict[str, Any] | None:
    try:
        outer = json.loads(raw)
        body = outer["body"]
        if zlib.crc32(body.encode()) != outer["crc32"]:
            return None
        return json.loads(body)
    except (ValueError, KeyError, TypeError):
        return None


def _tiered(store: Any) -> Any:
    from .tiers import TieredStore

    while store is not None:
        if isinstance(store, TieredStore):
            return store
        store = getattr(store, "_store", None)
    return None


class CommitLog:
    """The commits of one dataset."""

    def __init__(self, group: zarr.Group, where: str) -> None:
        self.group, self.where = group, where
        self._prefix = f"{group.path}/" if group.path else ""

    def _key(self, *parts: str) -> str:
        return self._prefix + "/".join(parts)

    def _markers(self) -> list[str]:
        async def _ls() -> list[str]:
            return [k async for k in self.group.store.list_prefix(self._key(MARKERS) + "/")]

        return sorted(k for k in sync(_ls()) if k.endswith(".json") and not k.endswith("zarr.json"))

    def list(self) -> list[CommitInfo]:
        """Every finished commit, oldest first."""
        out = []
        proto = default_buffer_prototype()
        for key in self._markers():
            buf = sync(self.group.store.get(key, proto))
            doc = _decode_marker(buf.to_bytes()) if buf is not None else None
            if doc is not None:
                out.append(CommitInfo(**doc))
        return sorted(out, key=lambda c: c.seq)

    def latest(self) -> CommitInfo | None:
        """The newest finished commit, or ``None``."""
        commits = self.list()
        return commits[-1] if commits else None

    def get(self, which: str | int) -> CommitInfo:
        """A commit by name (the newest of that name) or sequence number."""
        hits = [c for c in self.list() if c.seq == which or c.name == which]
        if not hits:
            raise CommitError(f"dataset {self.where} has no commit {which!r}")
        return hits[-1]

    def open(self, which: str | int | CommitInfo | None = None) -> zarr.Group:
        """The group of a commit (default: the latest)."""
        info = which if isinstance(which, CommitInfo) else (self.latest() if which is None else self.get(which))
        if info is None:
            raise CommitError(f"dataset {self.where} has no commit yet")
        return zarr.open_group(self.group.store, path=self._key(info.path).rstrip("/"), mode="r", zarr_format=3)

    def _next_seq(self) -> int:
        seqs = [c.seq for c in self.list()]
        if DATA in self.group:
            seqs += [int(n) for n in self.group[DATA].group_keys() if n.isdigit()]
        return max(seqs, default=0) + 1

    def begin(self, name: str, meta: Mapping[str, Any] | None = None) -> PendingCommit:
        """Start a commit; write its arrays, then call :meth:`PendingCommit.finish`."""
        seq = self._next_seq()
        self.group.require_group(MARKERS)  # a group, so zarr's member listing recognises the folder
        data = self.group.require_group(DATA)
        group = data.create_group(f"{seq:08d}", overwrite=True)
        return PendingCommit(self, seq, name, group, dict(meta or {}))

    def gc(self) -> list[str]:
        """Delete groups of commits that never finished; return their paths."""
        finished = {c.path for c in self.list()}
        removed = []
        if DATA in self.group:
            for n in list(self.group[DATA].group_keys()):
                path = f"{DATA}/{n}"
                if path not in finished:
                    sync(self.group.store.delete_dir(self._key(path)))
                    removed.append(path)
        return removed


class PendingCommit:
    """A commit being written: invisible until :meth:`finish`."""

    def __init__(self, log: CommitLog, seq: int, name: str, group: zarr.Group, meta: dict[str, Any]) -> None:
        self.log, self.seq, self.name, self.group, self.meta = log, seq, name, group, meta
        self.done = False

    def create_array(self, name: str, shape: Sequence[int], dtype: Any, **kwargs: Any) -> zarr.Array:
        """Create an array inside the commit; same arguments as :func:`create_named_array`."""
        return create_named_array(self.group, f"{self.log.where} commit {self.name!r}", name, shape, dtype, **kwargs)

    def write(self, name: str, values: Any, *, dims: Sequence[str], chunks: Sequence[int] | None = None,
              codec: str | None = None) -> zarr.Array:
        """Create an array from in-memory ``values`` and write it whole."""
        import numpy as np

        values = np.asarray(values)
        arr = self.create_array(name, values.shape, values.dtype, chunks=chunks or values.shape or (1,),
                                dims=dims, codec=codec)
        arr[...] = values
        return arr

    def finish(self) -> CommitInfo:
        """Check every array is there, flush write-back tiers, then write the marker."""
        tiered = _tiered(self.log.group.store)
        if tiered is not None:
            tiered.flush()
        arrays = {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in self.group.arrays()}
        path = f"{DATA}/{self.seq:08d}"
        doc = {"seq": self.seq, "name": self.name, "path": path, "arrays": arrays, "meta": self.meta,
               "time": time.time()}
        buf = default_buffer_prototype().buffer.from_bytes(_encode_marker(doc))
        sync(self.log.group.store.set(self.log._key(MARKERS, f"{self.seq:08d}.json"), buf))
        self.done = True
        return CommitInfo(**doc)

    def abort(self) -> None:
        """Remove what was written; the commit never becomes visible."""
        if not self.done:
            sync(self.log.group.store.delete_dir(self.log._key(f"{DATA}/{self.seq:08d}")))

    def __enter__(self) -> PendingCommit:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()
