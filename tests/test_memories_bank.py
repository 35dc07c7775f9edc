"""MemoryBank: ingest/get/delete, one iteration and whole epochs against a plain numpy reference, kernels."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from neurochunk.kernels import memory as K
from neurochunk.pipeline.memorybank import CapacityError, KeyedSource, MemoryBank


def reference_iteration(ids, s, count, last, rate, rids, rdeltas, t, bins, k):
    """One iteration in plain numpy: decay+clip, reinforcement, quality, top-k (ids sorted)."""
    s = np.clip(s * np.float32(1.0 - rate), 0, 1).astype(np.float32)
    u, inv = np.unique(rids, return_inverse=True)
    acc = np.zeros(len(u))
    np.add.at(acc, inv, rdeltas.astype(np.float64))
    occ = np.bincount(inv, minlength=len(u))
    pos = np.minimum(np.searchsorted(ids, u), len(ids) - 1)
    ok = ids[pos] == u
    s[pos[ok]] = np.clip(s[pos[ok]].astype(np.float64) + acc[ok], 0, 1).astype(np.float32)
    count = count.copy()
    last = last.copy()
    count[pos[ok]] += occ[ok].astype(count.dtype)
    last[pos[ok]] = t
    hist = np.histogram(s, bins=bins, range=(0.0, 1.0))[0]
    top = np.lexsort((ids, -s.astype(np.float64)))[:k]
    return s, count, last, {"sum": s.sum(dtype=np.float64), "max": s.max(), "hist": hist,
                            "top_ids": ids[top], "top_s": s[top]}


def _bank(tmp_path, n=3000, partitions=5, capacity=1000, seed=0, payload_dim=0):
    bank = MemoryBank.create(str(tmp_path / "bank.zarr"), partitions=partitions, capacity=capacity,
                             payload_dim=payload_dim)
    ids = K.keyed_ids(seed, n)
    s = np.random.default_rng(seed).random(n).astype(np.float32)
    pay = np.random.default_rng(seed + 1).random((n, payload_dim)).astype(np.float32) if payload_dim else None
    bank.ingest(ids, s, pay)
    return bank, ids, s, pay


def test_ingest_get_delete_and_duplicate_policy(tmp_path):
    bank, ids, s, pay = _bank(tmp_path, payload_dim=3)
    assert bank.n_memories == 3000
    assert sum(bank.sizes) == 3000 and max(bank.sizes) < 1000 and min(bank.sizes) > 400  # hash spreads ids
    probe = np.concatenate([ids[[5, 17, 2999]], np.array([12345], np.uint64)])
    got = bank.get(probe)
    assert got["found"].tolist() == [True, True, True, False]
    np.testing.assert_array_equal(got["strength"][:3], s[[5, 17, 2999]])
    np.testing.assert_array_equal(got["payload"][:3], pay[[5, 17, 2999]])
    assert np.isnan(got["strength"][3])

    # duplicates: the last occurrence wins, within a batch and across batches; count restarts
    bank.apply_reinforcement(ids[:2], np.array([0.1, 0.1], np.float32))
    live = bank.get(ids[1::-1])  # uncommitted changes are visible to get, in the order asked
    assert live["count"].tolist() == [1, 1]
    np.testing.assert_array_equal(live["strength"], np.minimum(s[1::-1].astype(np.float64) + np.float32(0.1), 1)
                                  .astype(np.float32))
    bank.commit()
    assert bank.get(ids[:1])["count"][0] == 1
    dup_ids = np.array([ids[0], ids[0], ids[1]], np.uint64)
    dup_s = np.array([0.2, 0.7, 0.3], np.float32)
    bank.ingest_batches([(dup_ids[:2], dup_s[:2], pay[:2]), (dup_ids[2:], dup_s[2:], pay[2:3])], step=9)
    got = bank.get(ids[:2])
    np.testing.assert_array_equal(got["strength"], dup_s[1:])
    assert got["count"].tolist() == [0, 0] and got["last_step"].tolist() == [9, 9]
    np.testing.assert_array_equal(got["payload"], pay[[1, 2]])
    assert bank.n_memories == 3000

    assert bank.delete(np.concatenate([ids[10:20], np.array([777], np.uint64)])) == 10
    assert bank.n_memories == 2990
    got = bank.get(ids[8:22])
    assert got["found"].tolist() == [True, True] + [False] * 10 + [True, True]
    np.testing.assert_array_equal(got["payload"][-2:], pay[20:22])
    # reopening sees the same bank
    again = MemoryBank.open(str(tmp_path / "bank.zarr"))
    assert again.n_memories == 2990 and again.get(ids[20:21])["strength"][0] == s[20]


def test_ingest_dask_chunks_bad_input_and_capacity(tmp_path):
    bank = MemoryBank.create(str(tmp_path / "b.zarr"), partitions=3, capacity=500)
    ids = K.keyed_ids(7, 1200)
    s = np.linspace(0, 1, 1200, dtype=np.float32)
    assert bank.ingest(da.from_array(ids, chunks=250), da.from_array(s, chunks=250)) == 1200
    np.testing.assert_array_equal(bank.read_all()["strength"], s[np.argsort(ids)])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        bank.ingest(ids[:3], np.array([0.1, 1.5, 0.2], np.float32))
    with pytest.raises(ValueError, match="reserved"):
        bank.ingest(np.array([K.EMPTY_ID], np.uint64), np.array([0.5], np.float32))
    with pytest.raises(ValueError, match="payload"):
        bank.ingest(ids[:1], s[:1], np.zeros((1, 2), np.float32))
    with pytest.raises(CapacityError, match="partition \\d+ would hold"):
        bank.ingest(K.keyed_ids(8, 600), np.full(600, 0.5, np.float32))
    assert bank.n_memories == 1200  # the failed ingest left the previous commit as the bank


def test_one_iteration_matches_numpy(tmp_path):
    bank, ids, s, _ = _bank(tmp_path, n=4000, partitions=6, capacity=1000)
    order = np.argsort(ids)
    ids, s = ids[order], s[order]
    count, last = np.zeros(len(ids), np.uint32), np.zeros(len(ids), np.int64)
    rng = np.random.default_rng(5)
    rids = np.concatenate([rng.choice(ids, 300), np.array([1, 2], np.uint64)])  # repeats and unknown ids
    rdeltas = rng.uniform(-0.3, 0.5, len(rids)).astype(np.float32)
    ref_s, ref_c, ref_l, ref = reference_iteration(ids, s, count, last, 0.07, rids, rdeltas, 0, 10, 25)

    bank.iterate(0.07, rids, rdeltas)
    q = bank.compute_quality(bins=10)
    top_ids, top_s = bank.rank_by_quality(25)
    assert q.n == 4000
    np.testing.assert_allclose(q.sum, ref["sum"], rtol=1e-12)
    assert q.mean == pytest.approx(ref["sum"] / 4000, rel=1e-12)
    assert q.max == ref["max"]
    np.testing.assert_array_equal(q.histogram, ref["hist"])
    np.testing.assert_array_equal(top_ids, ref["top_ids"])
    np.testing.assert_array_equal(top_s, ref["top_s"])
    bank.commit()
    stored = bank.read_all()
    np.testing.assert_array_equal(stored["id"], ids)
    np.testing.assert_array_equal(stored["strength"], ref_s)
    np.testing.assert_array_equal(stored["count"], ref_c)
    np.testing.assert_array_equal(stored["last_step"], ref_l)


def test_epoch_matches_numpy_loop_and_graph_is_flat(tmp_path):
    bank, ids, s, _ = _bank(tmp_path, n=3000, partitions=4, capacity=1000, seed=3)
    src = KeyedSource(seed=11, id_seed=3, n_pool=3000, n_draws=60, max_delta=0.3, min_delta=-0.1)
    rep = bank.run_epoch(12, src, decay_rate=0.05, commit_every=5, k=20, bins=16)
    assert rep.commits == ["v2-iter5", "v3-iter10", "v4-iter12"]
    order = np.argsort(ids)
    ids, s = ids[order], s[order]
    count, last = np.zeros(len(ids), np.uint32), np.zeros(len(ids), np.int64)
    for t in range(12):
        s, count, last, ref = reference_iteration(ids, s, count, last, 0.05, *src(t), t, 16, 20)
        np.testing.assert_allclose(rep.sums[t], ref["sum"], rtol=1e-10)
        assert rep.maxima[t] == ref["max"]
        np.testing.assert_array_equal(rep.top_ids[t], ref["top_ids"])
        np.testing.assert_array_equal(rep.top_strengths[t].astype(np.float32), ref["top_s"])
    np.testing.assert_array_equal(rep.histogram, ref["hist"])
    stored = bank.read_all()
    np.testing.assert_array_equal(stored["strength"], s)
    np.testing.assert_array_equal(stored["count"], count)
    np.testing.assert_array_equal(stored["last_step"], last)
    assert bank.iteration == 12

    # the graph of an epoch grows with partitions, not with iterations
    short = bank.run_epoch(2, src, decay_rate=0.05, k=20, bins=16).graph_sizes
    long = bank.run_epoch(40, src, decay_rate=0.05, k=20, bins=16).graph_sizes
    assert len(short) == len(long) == 1 and short == long
    assert short[0] < 10 * bank.n_partitions


def test_kernels_against_numpy():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2**63, 20000, dtype=np.uint64)
    parts = K.partition_of(ids, 7)
    assert parts.min() == 0 and parts.max() == 6
    assert np.bincount(parts).min() > 20000 / 7 * 0.9
    order, starts = K.group_by_partition(ids, 7)
    assert all((parts[order[starts[p]:starts[p + 1]]] == p).all() for p in range(7))
    srt = np.sort(ids)
    q = np.sort(np.concatenate([srt[::37], np.array([3, 2**63 + 5], np.uint64)]))
    pos = K.lookup_sorted(srt, q)
    expect = np.searchsorted(srt, q)
    expect[np.isin(q, srt, invert=True)] = -1
    np.testing.assert_array_equal(pos, expect)
    s = rng.random(50000).astype(np.float32)
    s[:10] = [0.0, 1.0, 0.1, 0.2, 0.3, 0.7, 0.6, 1 / 3, 2 / 3, 0.9]
    for bins in (7, 10, 64):
        total, mx, hist = K.quality_stats(s, bins)
        np.testing.assert_array_equal(hist, np.histogram(s, bins, range=(0, 1))[0])
        assert mx == s.max() and total == pytest.approx(s.sum(dtype=np.float64), rel=1e-12)
    idx = K.top_k(s, np.arange(len(s), dtype=np.uint64), 50)
    np.testing.assert_array_equal(idx, np.lexsort((np.arange(len(s)), -s.astype(np.float64)))[:50])


def test_maintained_top_k_equals_recomputed():
    rng = np.random.default_rng(2)
    n, k = 5000, 30
    s = rng.random(n).astype(np.float32)
    ids = np.arange(n, dtype=np.uint64)
    ranker = K.MaintainedTopK(k, slack=16)
    for t in range(60):
        f = np.float32(0.97)
        s = np.clip(s * f, 0, 1).astype(np.float32)
        changed = np.unique(rng.integers(0, n, 50))
        s[changed] = np.clip(s[changed] + rng.uniform(-0.5, 0.4, len(changed)), 0, 1).astype(np.float32)
        if t % 7 == 0:  # ties at the boundary must still rank by id
            s[changed[:5]] = s[ranker.cand[k - 1]] if len(ranker.cand) else 0.5
        got = ranker.update(s, ids, f, changed)
        np.testing.assert_array_equal(got, K.top_k(s, ids, k))
    assert ranker.rebuilds < 60  # it was maintained, not recomputed each time


def test_bucket_index_lookup_equals_binary_search():
    rng = np.random.default_rng(4)
    for ids in (np.sort(rng.integers(0, 2**64 - 1, 30000, dtype=np.uint64)),  # hashed ids span 64 bits
                np.arange(5, 20000, 3, dtype=np.uint64),  # dense user ids
                np.array([7], np.uint64), np.empty(0, np.uint64)):
        q = np.sort(np.concatenate([ids[::7], rng.integers(0, 2**64 - 1, 500, dtype=np.uint64),
                                    np.array([0, 2**64 - 2], np.uint64)]))
        starts, meta = K.build_index(ids)
        np.testing.assert_array_equal(K.lookup_indexed(ids, starts, meta, q), K.lookup_sorted(ids, q))


def test_write_buffers_are_reused_and_refilled():
    # _write pads each array into a per-thread buffer reused across partitions: a shorter partition
    # after a longer one must not leave the longer one's values in the padding
    from neurochunk.pipeline.memory_store import _padded
    from neurochunk.pipeline.memory_types import FILL

    first = _padded("id", np.uint64, 8, np.arange(1, 7, dtype=np.uint64))
    again = _padded("id", np.uint64, 8, np.array([9, 10], np.uint64))
    assert again is first
    np.testing.assert_array_equal(again, [9, 10] + [FILL["id"]] * 6)
    other = _padded("id", np.uint64, 4, np.array([3], np.uint64))
    np.testing.assert_array_equal(other, [3] + [FILL["id"]] * 3)
