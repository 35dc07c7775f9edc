"""Chunk integrity: name the corrupted chunk instead of failing anonymously.

Every array neurochunk writes ends its codec chain with ``crc32c``. zarr checks
the checksum while decoding but cannot say which chunk failed; this wrapper
checks it where the key is known and raises :class:`ChunkCorruptionError`
naming the array and the chunk key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

import google_crc32c
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

__all__ = ["ChunkCorruptionError", "IntegrityStore", "array_of_chunk_key"]


class ChunkCorruptionError(IOError):
    """A stored chunk does not match its checksum."""

    def __init__(self, where: str, array: str, key: str, stored: int, computed: int) -> None:
        self.array, self.key = array, key
        super().__init__(
            f"corrupted chunk {key!r} of array {array!r} in {where}: stored crc32c "
            f"{stored:#010x}, computed {computed:#010x}; restore it from a replica or a commit"
        )


def array_of_chunk_key(key: str) -> str | None:
    """The array path of a default-encoded v3 chunk key (``a/b/c/0/1`` -> ``a/b``)."""
    parts = key.split("/")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "c" and all(p.isdigit() for p in parts[i + 1 :]):
            return "/".join(parts[:i])
    return None


class IntegrityStore(WrapperStore[Store]):
    """Verify the trailing crc32c of every chunk read through this store."""

    def __init__(self, store: Store, where: str = "") -> None:
        super().__init__(store)
        self.where = where or repr(store)
        self._verify: dict[str, bool] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self._store, "where": self.where}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["where"])  # type: ignore[misc]

    def _with_store(self, store: Store) -> IntegrityStore:
        return type(self)(store, self.where)

    def with_read_only(self, read_only: bool = False) -> IntegrityStore:
        return type(self)(self._store.with_read_only(read_only), self.where)

    @property
    def inner(self) -> Store:
        return self._store

    async def _needs_check(self, array: str) -> bool:
        with self._lock:
            known = self._verify.get(array)
        if known is not None:
            return known
        meta = await self._store.get(f"{array}/zarr.json" if array else "zarr.json", default_buffer_prototype())
        check = False
        if meta is not None:
            doc = json.loads(meta.to_bytes())
            codecs = doc.get("codecs") or []
            check = bool(codecs) and codecs[-1].get("name") == "crc32c"
        with self._lock:
            self._verify[array] = check
        return check

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        buf = await self._store.get(key, prototype, byte_range)
        if buf is None or byte_range is not None:
            return buf
        array = array_of_chunk_key(key)
        if array is not None and await self._needs_check(array):
            data = buf.as_numpy_array()
            stored = int.from_bytes(bytes(data[-4:]), "little") if len(data) >= 4 else -1
            computed = google_crc32c.value(data[:-4]) if len(data) >= 4 else 0
            if stored != computed:
                raise ChunkCorruptionError(self.where, array or "/", key, max(stored, 0), computed)
        return buf

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    def __repr__(self) -> str:
        return f"IntegrityStore({self._store!r})"
