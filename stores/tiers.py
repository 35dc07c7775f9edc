"""Tiered storage: a byte-bounded RAM LRU and a local-disk cache in front of an origin store.

zarr's ``experimental.cache_store.CacheStore`` caches one level, but it cannot be
pickled (it holds an ``asyncio.Lock``), counts no bytes and only writes
through. Dask ships stores to workers by pickling, so this tier keeps its cache
state in a per-process registry keyed by a token: every copy of a
:class:`TieredStore` inside one worker process shares one RAM tier, and
every process on a node can share the disk tier through its directory.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from zarr.abc.store import ByteRequest, RangeByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

__all__ = ["TierConfig", "TierStats", "TieredStore", "flush_all", "tier_stats_all"]

WritePolicy = Literal["through", "back"]


@dataclass(frozen=True)
class TierConfig:
    """Which tiers sit in front of a dataset's origin store.

    Parameters
    ----------
    ram_bytes
        Budget of the RAM tier in bytes; 0 disables it.
    disk_path
        Directory of the local-disk tier; ``None`` disables it.
    disk_bytes
        Budget of the disk tier in bytes.
    write
        ``"through"``: a write reaches the origin before it returns and fills the
        tiers. ``"back"``: a write lands in the tiers only and reaches the origin
        on :meth:`TieredStore.flush` (commits flush first).
    decoded_bytes
        Budget of a RAM tier of *decoded* chunks (0 disables it). A hit there skips
        decompression and is served at memory speed; it is filled by reads and
        dropped by writes of the chunk.
    """

    ram_bytes: int = 256 * 2**20
    disk_path: str | None = None
    disk_bytes: int = 16 * 2**30
    write: WritePolicy = "through"
    decoded_bytes: int = 0

    def __post_init__(self) -> None:
        if self.write not in ("through", "back"):
            raise ValueError(f"tiers.write must be 'through' or 'back', not {self.write!r}")
        if self.ram_bytes < 0 or self.disk_bytes < 0 or self.decoded_bytes < 0:
            raise ValueError("tier budgets must be >= 0 bytes")


@dataclass
class TierStats:
    """Counters of one tier. ``requests`` = ``hits`` + ``misses`` for cache tiers."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    evictions: int = 0
    bytes_held: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


@dataclass
class _TierState:
    ram: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    ram_held: int = 0
    decoded: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    decoded_held: int = 0
    disk_index: OrderedDict[str, int] | None = None  # built lazily from the directory
    disk_held: int = 0
    dirty: set[str] = field(default_factory=set)
    order: dict[str, int] = field(default_factory=dict)
    order_keys: list[str] = field(default_factory=list)
    lookahead: int = 0
    pending: set[asyncio.Task[Any]] = field(default_factory=set)
    stats: dict[str, TierStats] = field(
        default_factory=lambda: {"decoded": TierStats(), "ram": TierStats(), "disk": TierStats(),
                                 "origin": TierStats()}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATES: dict[str, _TierState] = {}
_STATES_LOCK = threading.Lock()


def _state_for(token: str) -> _TierState:
    with _STATES_LOCK:
        return _STATES.setdefault(token, _TierState())


_METADATA_NAMES = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")  # v3 and v2 (probed by zarr)


def _is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in _METADATA_NAMES or "/_commits/" in f"/{key}"


class TieredStore(WrapperStore[Store]):
    """A Zarr store with RAM and disk tiers in front of an origin store.

    Chunk reads try RAM, then disk, then the origin, filling the faster tiers
    on the way back. Metadata (``zarr.json``) and commit markers always go to
    the origin, so other writers' changes are seen at once.

    Parameters
    ----------
    origin
        The store that holds the data of record.
    config
        Tier budgets and write policy.
    token
        Names the shared per-process cache state; copies made by pickling keep it.
    """

    def __init__(self, origin: Store, config: TierConfig | None = None, token: str | None = None) -> None:
        super().__init__(origin)
        self.config = config or TierConfig()
        self.token = token or uuid.uuid4().hex
        self._state = _state_for(self.token)
        self._disk = Path(self.config.disk_path) if self.config.disk_path else None
        if self._disk is not None:
            with self._state.lock:  # scan before any put is in flight: a later scan could race one
                self._disk_index()
        _register(self)

    # -- pickling and copies -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"origin": self._store, "config": self.config, "token": self.token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["origin"], state["config"], state["token"])  # type: ignore[misc]

    def _with_store(self, store: Store) -> TieredStore:
        return type(self)(store, self.config, self.token)

    def with_read_only(self, read_only: bool = False) -> TieredStore:
        return type(self)(self._store.with_read_only(read_only), self.config, self.token)

    def __repr__(self) -> str:
        return f"TieredStore({self._store!r}, ram_bytes={self.config.ram_bytes}, disk={self.config.disk_path!r}, write={self.config.write!r})"

    # -- counters ------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-tier counters of this process: requests, hits, misses, bytes."""
        st = self._state
        with st.lock:
            st.stats["ram"].bytes_held = st.ram_held
            st.stats["disk"].bytes_held = st.disk_held
            st.stats["decoded"].bytes_held = st.decoded_held
            out = {}
            for name, s in st.stats.items():
                if name == "decoded" and not self.config.decoded_bytes:
                    continue
                out[name] = asdict(s) | {"hit_rate": s.hit_rate}
            return out

    def reset_stats(self) -> None:
        with self._state.lock:
            for s in self._state.stats.values():
                held = s.bytes_held
                s.__init__()  # type: ignore[misc]
                s.bytes_held = held

    def clear_ram(self) -> None:
        """Drop the RAM tier (dirty keys stay safe on disk or are flushed first)."""
        self.flush()
        with self._state.lock:
            self._state.ram.clear()
            self._state.ram_held = 0
            self._state.decoded.clear()
            self._state.decoded_held = 0

    # -- the RAM tier --------------------------------------------------------
    def _ram_get(self, key: str) -> bytes | None:
        st = self._state
        with st.lock:
            value = st.ram.get(key)
            if value is not None:
                st.ram.move_to_end(key)
            return value

    def _ram_put(self, key: str, value: bytes) -> list[tuple[str, bytes]]:
        """Insert; return the evicted dirty ``(key, value)`` pairs that no disk tier holds and must be flushed."""
        budget = self.config.ram_bytes
        if budget == 0 or len(value) > budget:
            return []
        st = self._state
        evicted_dirty: list[tuple[str, bytes]] = []
        with st.lock:
            old = st.ram.pop(key, None)
            if old is not None:
                st.ram_held -= len(old)
            while st.ram and st.ram_held + len(value) > budget:
                k, v = st.ram.popitem(last=False)
                st.ram_held -= len(v)
                st.stats["ram"].evictions += 1
                if k in st.dirty and self._disk is None:
                    evicted_dirty.append((k, v))
            st.ram[key] = value
            st.ram_held += len(value)
        return evicted_dirty

    def _ram_drop(self, key: str) -> None:
        st = self._state
        with st.lock:
            old = st.ram.pop(key, None)
            if old is not None:
                st.ram_held -= len(old)

    # -- the decoded tier (used by neurochunk's codec pipeline) ---------------
    def decoded_get(self, key: str) -> Any:
        """The decoded chunk ``key`` (an ``NDBuffer``), or ``None``; counts a request."""
        st = self._state
        stats = st.stats["decoded"]
        with st.lock:
            stats.requests += 1
            chunk = st.decoded.get(key)
            if chunk is None:
                stats.misses += 1
                return None
            st.decoded.move_to_end(key)
            stats.hits += 1
            stats.bytes_read += chunk.as_numpy_array().nbytes
            return chunk

    def decoded_put(self, key: str, chunk: Any) -> None:
        """Keep a decoded chunk, evicting the least recently used beyond the budget."""
        size = int(chunk.as_numpy_array().nbytes)
        budget = self.config.decoded_bytes
        if size > budget:
            return
        st = self._state
        with st.lock:
            old = st.decoded.pop(key, None)
            if old is not None:
                st.decoded_held -= old.as_numpy_array().nbytes
            while st.decoded and st.decoded_held + size > budget:
                _, victim = st.decoded.popitem(last=False)
                st.decoded_held -= victim.as_numpy_array().nbytes
                st.stats["decoded"].evictions += 1
            st.decoded[key] = chunk
            st.decoded_held += size
            st.stats["decoded"].bytes_written += size

    def _decoded_drop(self, key: str) -> None:
        st = self._state
        with st.lock:
            old = st.decoded.pop(key, None)
            if old is not None:
                st.decoded_held -= old.as_numpy_array().nbytes

    # -- the disk tier -------------------------------------------------------
    def _disk_file(self, key: str) -> Path:
        assert self._disk is not None
        return self._disk / key

    def _disk_index(self) -> OrderedDict[str, int]:
        st = self._state
        if st.disk_index is None:
            index: OrderedDict[str, int] = OrderedDict()
            if self._disk is not None and self._disk.exists():
                files = []
                for root, _, names in os.walk(self._disk):
                    for n in names:
                        if ".partial-" in n:
                            continue
                        p = Path(root) / n
                        s = p.stat()
                        files.append((s.st_atime, p.relative_to(self._disk).as_posix(), s.st_size))
                for _, k, size in sorted(files):
                    index[k] = size
            st.disk_index = index
            st.disk_held = sum(index.values())
        return st.disk_index

    def _disk_get(self, key: str) -> bytes | None:
        try:
            data = self._disk_file(key).read_bytes()
        except FileNotFoundError:
            return None
        with self._state.lock:
            index = self._disk_index()
            if key in index:
                index.move_to_end(key)
        return data

    def _disk_put(self, key: str, value: bytes) -> None:
        if len(value) > self.config.disk_bytes:
            return
        path = self._disk_file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.partial-{uuid.uuid4().hex}")
        tmp.write_bytes(value)
        os.replace(tmp, path)
        st = self._state
        evicted_dirty = []
        with st.lock:
            index = self._disk_index()
            st.disk_held += len(value) - index.pop(key, 0)
            index[key] = len(value)
            while st.disk_held > self.config.disk_bytes and len(index) > 1:
                k, size = index.popitem(last=False)
                st.disk_held -= size
                st.stats["disk"].evictions += 1
                victim = self._disk_file(k)
                if k in st.dirty:  # write-back data leaves the last tier: it must reach the origin
                    evicted_dirty.append((k, victim.read_bytes()))
                # unlinked under the lock, so a concurrent put of the same key cannot lose its file
                victim.unlink(missing_ok=True)
        for k, data in evicted_dirty:
            self._flush_sync_one(k, data)

    def _disk_drop(self, key: str) -> None:
        self._disk_file(key).unlink(missing_ok=True)
        st = self._state
        with st.lock:
            size = self._disk_index().pop(key, None)
            if size is not None:
                st.disk_held -= size

    # -- Store API -----------------------------------------------------------
    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if _is_metadata(key):
            return await self._store.get(key, prototype, byte_range)
        await self._await_prefetch(key)
        data = await self._get_bytes(key, prototype)
        self._schedule_prefetch(key, prototype)
        if data is None:
            return None
        if byte_range is not None:
            data = _slice(data, byte_range)
        return prototype.buffer.from_bytes(data)

    async def _get_bytes(self, key: str, prototype: BufferPrototype) -> bytes | None:
        st = self._state
        ram, disk, origin = st.stats["ram"], st.stats["disk"], st.stats["origin"]
        if self.config.ram_bytes:
            ram.requests += 1
            value = self._ram_get(key)
            if value is not None:
                ram.hits += 1
                ram.bytes_read += len(value)
                return value
            ram.misses += 1
        if self._disk is not None:
            disk.requests += 1
            value = await asyncio.to_thread(self._disk_get, key)
            if value is not None:
                disk.hits += 1
                disk.bytes_read += len(value)
                await self._fill_ram(key, value)
                return value
            disk.misses += 1
        origin.requests += 1
        buf = await self._store.get(key, prototype)
        if buf is None:
            return None
        value = buf.to_bytes()
        origin.bytes_read += len(value)
        if self._disk is not None:
            await asyncio.to_thread(self._disk_put, key, value)
            disk.bytes_written += len(value)
        await self._fill_ram(key, value)
        return value

    async def _fill_ram(self, key: str, value: bytes) -> None:
        if self.config.ram_bytes:
            evicted = self._ram_put(key, value)
            self._state.stats["ram"].bytes_written += len(value)
            for k, v in evicted:
                await self._push_origin(k, v)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        if self._ram_get(key) is not None:
            return True
        if key in self._state.dirty:
            return True
        return await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        self._decoded_drop(key)
        if _is_metadata(key):
            await self._store.set(key, value)
            return
        data = value.to_bytes()
        if self.config.write == "back" and (self._disk is not None or self.config.ram_bytes):
            with self._state.lock:
                self._state.dirty.add(key)
            if self._disk is not None:
                await asyncio.to_thread(self._disk_put, key, data)
                self._state.stats["disk"].bytes_written += len(data)
            await self._fill_ram(key, data)
            return
        await self._push_origin(key, data, value)
        if self._disk is not None:
            await asyncio.to_thread(self._disk_put, key, data)
            self._state.stats["disk"].bytes_written += len(data)
        await self._fill_ram(key, data)

    async def _push_origin(self, key: str, data: bytes, buf: Buffer | None = None) -> None:
        from zarr.core.buffer import default_buffer_prototype

        buf = buf if buf is not None else default_buffer_prototype().buffer.from_bytes(data)
        await self._store.set(key, buf)
        origin = self._state.stats["origin"]
        origin.requests += 1
        origin.bytes_written += len(data)
        with self._state.lock:
            self._state.dirty.discard(key)

    def _flush_sync_one(self, key: str, data: bytes) -> None:
        from zarr.core.sync import sync

        sync(self._push_origin(key, data))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not await self.exists(key):
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        self._check_writable()
        self._ram_drop(key)
        self._decoded_drop(key)
        if self._disk is not None:
            await asyncio.to_thread(self._disk_drop, key)
        with self._state.lock:
            self._state.dirty.discard(key)
        await self._store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        for key in [k for k in list(self._state.ram) if k.startswith(prefix)]:
            self._ram_drop(key)
        for key in [k for k in list(self._state.decoded) if k.startswith(prefix)]:
            self._decoded_drop(key)
        if self._disk is not None:
            for key in [k for k in list(self._disk_index()) if k.startswith(prefix)]:
                await asyncio.to_thread(self._disk_drop, key)
        with self._state.lock:
            self._state.dirty = {k for k in self._state.dirty if not k.startswith(prefix)}
        await self._store.delete_dir(prefix)

    async def list(self) -> AsyncIterator[str]:  # type: ignore[override]
        await self._flush()
        async for key in self._store.list():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        await self._flush()
        async for key in self._store.list_prefix(prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        await self._flush()
        async for key in self._store.list_dir(prefix):
            yield key

    # -- write-back ------------------------------------------------------------
    @property
    def dirty_keys(self) -> set[str]:
        with self._state.lock:
            return set(self._state.dirty)

    def flush(self) -> int:
        """Write every dirty key to the origin; return how many were written."""
        from zarr.core.sync import sync

        return sync(self._flush())

    async def _flush(self) -> int:
        keys = sorted(self.dirty_keys)
        for key in keys:
            data = self._ram_get(key)
            if data is None and self._disk is not None:
                data = await asyncio.to_thread(self._disk_get, key)
            if data is None:
                raise RuntimeError(f"write-back key {key!r} was lost from every tier before flush")
            await self._push_origin(key, data)
        return len(keys)

    # -- prefetch ----------------------------------------------------------------
    def declare_access_order(self, keys: Sequence[str], lookahead: int = 4) -> None:
        """Declare the order chunks will be read in.

        Each read of a declared key starts background fetches of the next
        ``lookahead`` keys into the RAM tier.
        """
        st = self._state
        with st.lock:
            st.order_keys = list(keys)
            st.order = {k: i for i, k in enumerate(st.order_keys)}
            st.lookahead = lookahead

    def prefetch(self, keys: Iterable[str]) -> None:
        """Fetch ``keys`` into the RAM (and disk) tier now, concurrently."""
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        proto = default_buffer_prototype()

        async def _all() -> None:
            await asyncio.gather(*(self._get_bytes(k, proto) for k in keys if self._ram_get(k) is None))

        sync(_all())

    async def _await_prefetch(self, key: str) -> None:
        """Wait for a prefetch of ``key`` already in flight (on this loop), so a read never fetches it twice."""
        loop = asyncio.get_running_loop()
        for task in list(self._state.pending):
            if task.get_name() == key and not task.done() and task.get_loop() is loop:
                await asyncio.wait({task})  # never raises: a failed prefetch is fetched again by the read
                return

    def _schedule_prefetch(self, key: str, prototype: BufferPrototype) -> None:
        st = self._state
        pos = st.order.get(key)
        if pos is None or not st.lookahead:
            return
        for nxt in st.order_keys[pos + 1 : pos + 1 + st.lookahead]:
            if self._ram_get(nxt) is None and not any(t.get_name() == nxt for t in st.pending):
                task = asyncio.ensure_future(self._get_bytes(nxt, prototype))
                task.set_name(nxt)
                st.pending.add(task)
                task.add_done_callback(st.pending.discard)


def _slice(data: bytes, byte_range: ByteRequest) -> bytes:
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if hasattr(byte_range, "offset"):
        return data[byte_range.offset :]
    return data[-byte_range.suffix :]  # type: ignore[union-attr]


_LIVE: dict[str, TieredStore] = {}


def _register(store: TieredStore) -> None:
    with _STATES_LOCK:
        _LIVE[store.token] = store


def flush_all() -> int:
    """Flush every write-back tier of this process (use with ``client.run``)."""
    return sum(s.flush() for s in list(_LIVE.values()))


def tier_stats_all() -> dict[str, dict[str, dict[str, Any]]]:
    """Counters of every tiered store of this process, by token (use with ``client.run``)."""
    return {token: s.stats() for token, s in list(_LIVE.items())}
