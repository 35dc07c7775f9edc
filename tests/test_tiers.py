"""Tiers: count the requests that reach the origin, not only the values that come back."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest
import zarr
from neurochunk.stores import Dataset, TierConfig, TieredStore
from zarr.storage import LocalStore

CHUNK = 1000  # float64 -> 8000 raw bytes per chunk before compression


def _dataset(tmp_path, tiers: TierConfig, n_chunks: int = 8) -> tuple[Dataset, np.ndarray]:
    values = np.random.default_rng(0).random(n_chunks * CHUNK)  # incompressible-ish
    plain = Dataset.create(tmp_path / "origin.zarr", "neuron_state")
    plain.create_array("v", values.shape, values.dtype, chunks=(CHUNK,), dims=("neuron",), codec="raw")[:] = values
    return Dataset.open(tmp_path / "origin.zarr", tiers=tiers), values


def test_second_read_never_reaches_origin(tmp_path) -> None:
    ds, values = _dataset(tmp_path, TierConfig(ram_bytes=1 << 20))
    np.testing.assert_array_equal(ds["v"][:], values)
    first = ds.tiers.stats()
    assert first["origin"]["requests"] == 8
    np.testing.assert_array_equal(ds["v"][:], values)
    second = ds.tiers.stats()
    assert second["origin"]["requests"] == 8  # zero new origin requests
    assert second["ram"]["hits"] - first["ram"]["hits"] == 8


def test_disk_tier_serves_after_ram_eviction(tmp_path) -> None:
    chunk_bytes = CHUNK * 8 + 4
    ds, values = _dataset(tmp_path, TierConfig(ram_bytes=3 * chunk_bytes, disk_path=str(tmp_path / "cache")))
    ds["v"][:]
    s1 = ds.tiers.stats()
    assert s1["ram"]["evictions"] >= 5 and s1["origin"]["requests"] == 8
    np.testing.assert_array_equal(ds["v"][:], values)
    s2 = ds.tiers.stats()
    assert s2["origin"]["requests"] == 8, "evicted chunks must come from disk, not the origin"
    assert s2["disk"]["hits"] - s1["disk"]["hits"] >= 5


@pytest.mark.parametrize("budget_chunks", [1, 2, 5])
def test_ram_budget_never_exceeded(tmp_path, budget_chunks: int) -> None:
    chunk_bytes = CHUNK * 8 + 4
    budget = budget_chunks * chunk_bytes + 100
    ds, values = _dataset(tmp_path, TierConfig(ram_bytes=budget))
    rng = np.random.default_rng(3)
    for _ in range(20):
        i = int(rng.integers(0, 8))
        np.testing.assert_array_equal(ds["v"][i * CHUNK:(i + 1) * CHUNK], values[i * CHUNK:(i + 1) * CHUNK])
        assert ds.tiers.stats()["ram"]["bytes_held"] <= budget


def test_disk_budget_never_exceeded(tmp_path) -> None:
    chunk_bytes = CHUNK * 8 + 4
    ds, _ = _dataset(tmp_path, TierConfig(ram_bytes=0, disk_path=str(tmp_path / "c"), disk_bytes=3 * chunk_bytes))
    ds["v"][:]
    held = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert held <= 3 * chunk_bytes
    assert ds.tiers.stats()["disk"]["bytes_held"] == held


def test_write_through_reaches_origin_at_once(tmp_path) -> None:
    ds = Dataset.create(tmp_path / "o.zarr", "neuron_state", tiers=TierConfig(write="through"))
    ds.create_array("v", (10,), "f4", chunks=(5,), dims=("neuron",))[:] = np.arange(10, dtype="f4")
    np.testing.assert_array_equal(Dataset.open(tmp_path / "o.zarr")["v"][:], np.arange(10))
    assert ds.tiers.dirty_keys == set()


def test_write_back_reaches_origin_on_flush(tmp_path) -> None:
    tiers = TierConfig(ram_bytes=1 << 20, disk_path=str(tmp_path / "cache"), write="back")
    ds = Dataset.create(tmp_path / "o.zarr", "neuron_state", tiers=tiers)
    ds.create_array("v", (10,), "f4", chunks=(5,), dims=("neuron",), fill_value=-1)[:] = np.arange(10, dtype="f4")
    assert ds.tiers.dirty_keys == {"v/c/0", "v/c/1"}
    np.testing.assert_array_equal(ds["v"][:], np.arange(10))  # the writer sees its own writes
    np.testing.assert_array_equal(Dataset.open(tmp_path / "o.zarr")["v"][:], -1)  # the origin does not yet
    assert ds.tiers.flush() == 2
    np.testing.assert_array_equal(Dataset.open(tmp_path / "o.zarr")["v"][:], np.arange(10))


def test_write_back_commit_flushes_first(tmp_path) -> None:
    tiers = TierConfig(ram_bytes=1 << 20, write="back")
    ds = Dataset.create(tmp_path / "o.zarr", "neuron_state", tiers=tiers)
    with ds.commits.begin("c") as c:
        c.write("v", np.arange(6, dtype="f4"), dims=("neuron",), chunks=(3,))
    np.testing.assert_array_equal(Dataset.open(tmp_path / "o.zarr").commits.open()["v"][:], np.arange(6))


def test_prefetch_follows_declared_order(tmp_path) -> None:
    ds, values = _dataset(tmp_path, TierConfig(ram_bytes=1 << 20))
    order = [f"v/c/{i}" for i in range(8)]
    ds.tiers.declare_access_order(order, lookahead=8)
    ds["v"][:CHUNK]  # reading chunk 0 starts fetching the rest
    import time

    deadline = time.time() + 5
    while ds.tiers.stats()["origin"]["requests"] < 8 and time.time() < deadline:
        time.sleep(0.01)
    before = ds.tiers.stats()
    np.testing.assert_array_equal(ds["v"][:], values)
    after = ds.tiers.stats()
    assert after["origin"]["requests"] == before["origin"]["requests"] == 8
    assert after["ram"]["hits"] - before["ram"]["hits"] == 8


class _SlowStore(LocalStore):
    """An origin that takes 50 ms per chunk, like an object store."""

    async def get(self, key, prototype, byte_range=None):  # type: ignore[no-untyped-def]
        if "/c/" in key:
            await asyncio.sleep(0.05)
        return await super().get(key, prototype, byte_range)


def test_read_waits_for_a_prefetch_in_flight(tmp_path) -> None:
    _, values = _dataset(tmp_path, TierConfig(ram_bytes=1 << 20))
    store = TieredStore(_SlowStore(str(tmp_path / "origin.zarr"), read_only=True), TierConfig(ram_bytes=1 << 20))
    store.declare_access_order([f"v/c/{i}" for i in range(8)], lookahead=8)
    v = zarr.open_array(store=store, path="v", mode="r")  # zarr's probes for v2 metadata are not chunk reads
    v[:CHUNK]
    np.testing.assert_array_equal(v[:], values)  # at once, while chunks 1-7 are still being prefetched
    assert store.stats()["origin"]["requests"] == 8  # each chunk fetched once


def test_explicit_prefetch(tmp_path) -> None:
    ds, values = _dataset(tmp_path, TierConfig(ram_bytes=1 << 20))
    ds.tiers.prefetch([f"v/c/{i}" for i in range(4)])
    assert ds.tiers.stats()["origin"]["requests"] == 4
    ds["v"][: 4 * CHUNK]
    assert ds.tiers.stats()["origin"]["requests"] == 4


def test_pickled_copies_share_one_ram_tier(tmp_path) -> None:
    store = TieredStore(LocalStore(str(tmp_path)), TierConfig(ram_bytes=1 << 20))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.token == store.token and copy._state is store._state
    assert "secret" not in repr(copy)


def test_decoded_tier_serves_without_store_reads(tmp_path) -> None:
    ds, values = _dataset(tmp_path, TierConfig(ram_bytes=1 << 20, decoded_bytes=1 << 20))
    np.testing.assert_array_equal(ds["v"][:], values)
    first = ds.tiers.stats()
    assert first["decoded"]["misses"] == 8 and first["origin"]["requests"] == 8
    np.testing.assert_array_equal(ds["v"][CHUNK // 2: 5 * CHUNK + 3], values[CHUNK // 2: 5 * CHUNK + 3])
    second = ds.tiers.stats()
    assert second["decoded"]["hits"] - first["decoded"]["hits"] == 6
    assert second["ram"]["requests"] == first["ram"]["requests"], "a decoded hit must not touch the byte tiers"
    assert second["origin"]["requests"] == 8


def test_decoded_tier_drops_written_chunks(tmp_path) -> None:
    ds, values = _dataset(tmp_path, TierConfig(ram_bytes=1 << 20, decoded_bytes=1 << 20))
    ds = Dataset.open(tmp_path / "origin.zarr", mode="r+", tiers=ds.tiers.config)
    ds["v"][:]
    ds["v"][10:20] = -1.0  # a partial write of chunk 0
    expect = values.copy()
    expect[10:20] = -1.0
    np.testing.assert_array_equal(ds["v"][:], expect)
    np.testing.assert_array_equal(Dataset.open(tmp_path / "origin.zarr")["v"][:], expect)


@pytest.mark.parametrize("budget_chunks", [1, 3])
def test_decoded_budget_never_exceeded(tmp_path, budget_chunks: int) -> None:
    budget = budget_chunks * CHUNK * 8
    ds, values = _dataset(tmp_path, TierConfig(ram_bytes=0, decoded_bytes=budget))
    for i in (0, 3, 1, 3, 7, 0, 2):
        np.testing.assert_array_equal(ds["v"][i * CHUNK:(i + 1) * CHUNK], values[i * CHUNK:(i + 1) * CHUNK])
        assert ds.tiers.stats()["decoded"]["bytes_held"] <= budget


def test_decoded_tier_still_names_corrupted_chunks(tmp_path) -> None:
    from neurochunk.stores import ChunkCorruptionError

    ds, _ = _dataset(tmp_path, TierConfig(ram_bytes=0, decoded_bytes=1 << 20))
    path = tmp_path / "origin.zarr" / "v" / "c" / "3"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChunkCorruptionError, match="'v/c/3'"):
        ds["v"][:]


@pytest.mark.parametrize("decoded", [0, 1 << 20])
def test_sharded_arrays_read_through_tiers(tmp_path, decoded: int) -> None:
    ds = Dataset.create(tmp_path / "s.zarr", "neuron_state", tiers=TierConfig(ram_bytes=1 << 20, decoded_bytes=decoded))
    values = np.arange(4000, dtype="f4")
    ds.create_array("v", values.shape, values.dtype, chunks=(100,), shards=(1000,), dims=("neuron",))[:] = values
    again = Dataset.open(tmp_path / "s.zarr", tiers=TierConfig(ram_bytes=1 << 20, decoded_bytes=decoded))
    np.testing.assert_array_equal(again["v"][:], values)
    np.testing.assert_array_equal(again["v"][150:2150], values[150:2150])
