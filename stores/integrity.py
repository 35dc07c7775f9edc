"""Chunk integrity: name the corrupted chunk instead of failing anonymously.

Every array neurochunk writes ends its codec chain with ``crc32c``, which zarr
checks while decoding, but zarr's error cannot say which chunk failed. The
codec pipeline here is zarr's own, with one change on the error path only: when
a chunk fails to decode because of a checksum, it re-checks the chunks of that
batch and raises :class:`ChunkCorruptionError` naming the store, the array and
the chunk key. Reads that succeed cost exactly what they cost in zarr.

Importing :mod:`neurochunk.stores` selects this pipeline in zarr's config, so
every read in the process (xarray's and dask's too) names corrupted chunks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import google_crc32c
import zarr
from zarr.core.buffer import NDBuffer, default_buffer_prototype
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline

__all__ = ["ChunkCorruptionError", "NamingCodecPipeline", "array_of_chunk_key", "crc32c_ok"]


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


def crc32c_ok(data: bytes | memoryview) -> tuple[bool, int, int]:
    """Check a ``crc32c``-suffixed chunk; return ``(ok, stored, computed)``."""
    if len(data) < 4:
        return False, 0, 0
    view = memoryview(data)
    stored = int.from_bytes(view[-4:], "little")
    computed = google_crc32c.value(bytes(view[:-4]))
    return stored == computed, stored, computed


def _is_checksum_error(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "checksum" in str(exc).lower()


class NamingCodecPipeline(BatchedCodecPipeline):
    """zarr's batched codec pipeline, naming the chunk when a checksum fails.

    Reads through a :class:`~neurochunk.stores.tiers.TieredStore` with a decoded
    tier (``TierConfig.decoded_bytes``) are served from, and fill, that tier.
    """

    async def read_batch(self, batch_info: Iterable[tuple[Any, ...]], out: NDBuffer,
                         drop_axes: tuple[int, ...] = ()) -> None:
        batch_info = list(batch_info)
        if not self.supports_partial_decode:
            batch_info = await self._read_decoded_tier(batch_info, out, drop_axes)
            if not batch_info:
                return
        try:
            await super().read_batch(batch_info, out, drop_axes)
        except ValueError as exc:
            if not _is_checksum_error(exc):
                raise
            await _locate(batch_info, exc)
            raise

    async def _read_decoded_tier(self, batch_info: list[tuple[Any, ...]], out: NDBuffer,
                                 drop_axes: tuple[int, ...]) -> list[tuple[Any, ...]]:
        """Serve what the decoded tier holds, decode and keep its misses; return the rest."""
        from .tiers import TieredStore

        rest = []
        for item in batch_info:
            byte_getter, chunk_spec, chunk_selection, out_selection, _ = item
            store = getattr(byte_getter, "store", None)  # a shard's inner chunks have no store of their own
            if not (isinstance(store, TieredStore) and store.config.decoded_bytes):
                rest.append(item)
                continue
            chunk = store.decoded_get(byte_getter.path)
            if chunk is None:
                raw = await byte_getter.get(chunk_spec.prototype)
                if raw is None:
                    rest.append(item)
                    continue
                try:
                    (chunk,) = await self.decode_batch([(raw, chunk_spec)])
                except ValueError as exc:
                    if _is_checksum_error(exc):
                        await _locate([item], exc)
                    raise
                store.decoded_put(byte_getter.path, chunk)
            tmp = chunk[chunk_selection]
            if drop_axes:
                tmp = tmp.squeeze(axis=drop_axes)
            out[out_selection] = tmp
        return rest


async def _locate(batch_info: list[tuple[Any, ...]], exc: BaseException) -> None:
    proto = default_buffer_prototype()
    for byte_getter, *_ in batch_info:
        buf = await byte_getter.get(proto)
        if buf is None:
            continue
        ok, stored, computed = crc32c_ok(buf.to_bytes())
        if not ok:
            key = str(getattr(byte_getter, "path", "") or "a chunk inside a shard")
            where = str(getattr(byte_getter, "store", "") or "a sharded array")
            raise ChunkCorruptionError(where, array_of_chunk_key(key) or "/", key, stored, computed) from exc


register_pipeline(NamingCodecPipeline)
zarr.config.set({"codec_pipeline.path": f"{NamingCodecPipeline.__module__}.{NamingCodecPipeline.__qualname__}"})
