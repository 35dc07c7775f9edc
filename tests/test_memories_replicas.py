"""Replication factor 2 (local disk + S3 on moto): losing or damaging one copy loses nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from neurochunk.kernels import memory as K
from neurochunk.pipeline import memorybank as mb
from neurochunk.pipeline.memorybank import KeyedSource, MemoryBank
from neurochunk.stores.replicas import Replica, ReplicaLostError

SOURCE = KeyedSource(seed=5, id_seed=9, n_pool=2000, n_draws=50)


def _chunk_file(root: Path, commit_path: str, array: str, p: int) -> Path:
    return root / commit_path / array / "c" / str(p)


def test_losing_one_copy_loses_nothing(tmp_path, s3_bucket, s3_options):
    local = str(tmp_path / "bank.zarr")
    remote = Replica(f"s3://{s3_bucket}/bank.zarr", s3=s3_options)
    bank = MemoryBank.create(local, partitions=4, capacity=800, payload_dim=2, replicas=[remote])
    ids = K.keyed_ids(9, 2000)
    payload = np.random.default_rng(0).random((2000, 2)).astype(np.float32)
    bank.ingest(ids, np.random.default_rng(1).random(2000).astype(np.float32), payload)
    bank.run_epoch(6, SOURCE, decay_rate=0.05, commit_every=3, k=5)
    expected = bank.read_all()
    latest = bank.replicas.primary.commits.latest()
    assert latest is not None and latest.name == bank.commit_name
    assert all(ds.commits.latest().name == bank.commit_name for ds in bank.replicas.datasets)  # both copies

    # damage the local copy: one chunk gone, one chunk corrupted
    root = Path(local)
    _chunk_file(root, latest.path, "strength", 2).unlink()
    corrupt = _chunk_file(root, latest.path, "id", 0)
    raw = bytearray(corrupt.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    mb.drop_resident()
    damaged = MemoryBank.open(local, replicas=[remote])
    got = damaged.read_all()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    found = damaged.get(ids[:50])
    assert found["found"].all()
    np.testing.assert_array_equal(found["payload"], payload[:50])

    # lose the whole local copy: the S3 replica alone serves the bank, and repair restores the copy
    shutil.rmtree(root)
    mb.drop_resident()
    survivor = MemoryBank.open(local, replicas=[remote])
    assert local in survivor.replicas.unavailable and survivor.n_memories == 2000
    got = survivor.read_all()
    np.testing.assert_array_equal(got["strength"], expected["strength"])
    copied = survivor.repair()
    assert copied[local] > 10 and copied[remote.url] == 0
    mb.drop_resident()
    local_only = MemoryBank.open(local)
    np.testing.assert_array_equal(local_only.read_all()["strength"], expected["strength"])
    np.testing.assert_array_equal(local_only.get(ids[-3:])["payload"], payload[-3:])


def test_chunk_lost_everywhere_is_named(tmp_path):
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    bank = MemoryBank.create(a, partitions=2, capacity=100, replicas=[b])
    bank.ingest(K.keyed_ids(1, 50), np.full(50, 0.5, np.float32))
    path = bank.replicas.primary.commits.latest().path
    for root in (a, b):
        _chunk_file(Path(root), path, "count", 1).unlink()
    mb.drop_resident()
    with pytest.raises(ReplicaLostError, match="chunk 1 of array 'count'.*every replica"):
        MemoryBank.open(a, replicas=[b]).read_all()
