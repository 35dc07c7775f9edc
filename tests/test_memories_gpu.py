"""cupy twins of the memory-bank kernels against the numba CPU kernels, on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from neurochunk.kernels import memory as K
from neurochunk.kernels import memory_gpu as G
from neurochunk.pipeline import memorybank as mb

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not G.available(), reason="no CUDA device")]


@pytest.fixture()
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print("seed", seed)
    return np.random.default_rng(seed)


@pytest.mark.parametrize("bins", [10, 64])
def test_decay_stats_twin(rng, bins):
    s = rng.random(1_000_003).astype(np.float32)
    s[:6] = [0.0, 1.0, 0.3, 0.7, 1 / 3, 0.9]
    g = cp.asarray(s)
    total, mx, hist = K.decay_stats(s, 0.013, bins)
    gt, gm, gh = G.decay_stats(g, 0.013, bins)
    np.testing.assert_array_equal(cp.asnumpy(g), s)
    np.testing.assert_array_equal(cp.asnumpy(gh), hist)
    assert gm == mx and gt == pytest.approx(total, rel=1e-12)
    np.testing.assert_array_equal(hist, np.histogram(s, bins, range=(0, 1))[0])


def test_keyed_reinforcement_twin(rng):
    seed, step = int(rng.integers(1 << 40)), int(rng.integers(1000))
    ids, d = K.keyed_reinforcement(seed, 3, step, 50_000, 20_000, 0.3, -0.1)
    gi, gd = G.keyed_reinforcement(seed, 3, step, 50_000, 20_000, 0.3, -0.1)
    np.testing.assert_array_equal(cp.asnumpy(gi), ids)
    np.testing.assert_array_equal(cp.asnumpy(gd), d)


@pytest.mark.parametrize("bins", [16, 10])
def test_fused_iterations_twin(rng, bins):
    n, k = 200_000, 20
    ids = np.sort(K.keyed_ids(2, n))
    s = rng.random(n).astype(np.float32)
    src = mb.KeyedSource(int(rng.integers(1 << 30)), 2, n, 3000, 0.4, -0.2)
    part = mb.Partition(0, ids, s.copy(), np.zeros(n, np.uint32), np.zeros(n, np.int64))
    cpu_part, cpu = mb._block(part, 0, 8, 0.02, src, k, bins, 1)
    gs, gc, gl = cp.asarray(s), cp.zeros(n, cp.uint32), cp.zeros(n, cp.int64)
    gpu = G.block(cp.asarray(ids), gs, gc, gl, 0, 8, 0.02,
                  lambda t: G.keyed_reinforcement(src.seed, 2, t, n, 3000, 0.4, -0.2), k, bins)
    np.testing.assert_array_equal(cp.asnumpy(gs), cpu_part.strength)
    np.testing.assert_array_equal(cp.asnumpy(gc), cpu_part.count)
    np.testing.assert_array_equal(cp.asnumpy(gl), cpu_part.last_step)
    np.testing.assert_array_equal(gpu["hist"], cpu["hist"])
    np.testing.assert_array_equal(gpu["maxima"], cpu["maxima"])
    np.testing.assert_allclose(gpu["sums"], cpu["sums"], rtol=1e-12)
    np.testing.assert_array_equal(gpu["top_i"], cpu["top_i"])
    np.testing.assert_array_equal(gpu["top_s"], cpu["top_s"])


def test_top_k_twin(rng):
    s = rng.random(300_000).astype(np.float32)
    s[rng.integers(0, len(s), 500)] = 0.9995  # ties inside the top-k rank by id
    ids = rng.permutation(len(s)).astype(np.uint64)
    np.testing.assert_array_equal(cp.asnumpy(G.top_k(cp.asarray(s), cp.asarray(ids), 300)), K.top_k(s, ids, 300))


@pytest.mark.parametrize(("bins", "window"), [(16, 16), (64, 128)])
def test_scaled_gpu_twin(rng, bins, window):
    from neurochunk.kernels.memory_scaled import ScaledPartition
    from neurochunk.kernels.memory_scaled_gpu import ScaledPartitionGPU

    n, k, iters = 200_000, 20, 40
    ids = np.sort(K.keyed_ids(2, n))
    s = rng.random(n).astype(np.float32)
    seed = int(rng.integers(1 << 30))
    src = mb.KeyedSource(seed, 2, n + 500, 3000, 0.4, -0.2)  # repeats, unknown ids, negative deltas
    count, last = np.zeros(n, np.uint32), np.zeros(n, np.int64)
    cpu = ScaledPartition(ids, s, count, last, k, bins, window=window)
    want = cpu.run(0, iters, 0.02, src)
    gpu = ScaledPartitionGPU(cp.asarray(ids), cp.asarray(s), k, bins, window=window)
    got = gpu.run(0, iters, 0.02, seed, 2, n + 500, 3000, 0.4, -0.2)
    assert got["invalid"] == 0
    np.testing.assert_array_equal(cp.asnumpy(gpu.base) * gpu.scale, cpu.base * cpu.scale)
    np.testing.assert_array_equal(cp.asnumpy(gpu.strength()), cpu.strength())
    np.testing.assert_array_equal(cp.asnumpy(gpu.count), count)
    np.testing.assert_array_equal(cp.asnumpy(gpu.last_step), last)
    np.testing.assert_array_equal(got["hist"], want["hist"])
    np.testing.assert_array_equal(got["top_i"], want["top_i"])
    np.testing.assert_array_equal(got["top_s"], want["top_s"].astype(np.float32))
    np.testing.assert_array_equal(got["maxima"], want["maxima"])
    assert np.abs(got["sums"] - want["sums"]).max() <= n * 2.0**-25
    assert gpu.graph is not None, gpu.graph_error


def test_scaled_gpu_graph_equals_plain_launches(rng):
    from neurochunk.kernels.memory_scaled_gpu import ScaledPartitionGPU

    n, k, bins = 100_000, 10, 16
    ids = cp.asarray(np.sort(K.keyed_ids(4, n)))
    s = cp.asarray(rng.random(n).astype(np.float32))
    seed = int(rng.integers(1 << 30))
    runs = []
    for use_graph in (True, False):
        part = ScaledPartitionGPU(ids, s, k, bins, window=8)
        out = part.run(0, 20, 0.05, seed, 4, n + 100, 2000, 0.5, -0.3, use_graph=use_graph)
        runs.append((part, out))
    (a, ra), (b, rb) = runs
    assert a.graph is not None and b.graph is None
    np.testing.assert_array_equal(cp.asnumpy(a.base), cp.asnumpy(b.base))
    np.testing.assert_array_equal(cp.asnumpy(a.count), cp.asnumpy(b.count))
    np.testing.assert_array_equal(cp.asnumpy(a.last_step), cp.asnumpy(b.last_step))
    for key in ("hist", "maxima", "top_i", "top_s", "invalid_it"):
        np.testing.assert_array_equal(ra[key], rb[key])


@pytest.mark.parametrize(("size", "cap"), [(512, 1536), (128, 128)])
def test_scaled_gpu_exact_under_ties_and_heavy_reinforcement(rng, size, cap):
    """Iterations that overflow the entrant buffer (thousands of memories clipped to 1.0 tie and all enter)
    or whose bound cannot prove the top-k: every iteration's top-k equals the CPU twin's."""
    from neurochunk.kernels.memory_scaled import ScaledPartition
    from neurochunk.kernels.memory_scaled_gpu import ScaledPartitionGPU

    n, k, bins, iters = 200_000, 20, 16, 30
    ids = np.sort(K.keyed_ids(5, n))
    s = rng.random(n).astype(np.float32)
    s[rng.permutation(n)[: n // 4]] = 1.0  # 50,000 ties at the start: the first top-k selects by id
    seed = int(rng.integers(1 << 30))
    draws, hi, lo = 20_000, 1.0, -0.3  # 10% reinforced, thousands clipped to 1.0 every iteration
    count, last = np.zeros(n, np.uint32), np.zeros(n, np.int64)
    cpu = ScaledPartition(ids, s, count, last, k, bins, window=16)
    want = cpu.run(0, iters, 0.02, mb.KeyedSource(seed, 5, n + 500, draws, hi, lo))
    runs = {}
    for exact in (True, False):
        gpu = ScaledPartitionGPU(cp.asarray(ids), cp.asarray(s), k, bins, window=16, size=size, cap=cap, exact=exact)
        runs[exact] = gpu.run(0, iters, 0.02, seed, 5, n + 500, draws, hi, lo)
        np.testing.assert_array_equal(cp.asnumpy(gpu.strength()), cpu.strength())
        np.testing.assert_array_equal(cp.asnumpy(gpu.count), count)
    got = runs[True]
    assert got["invalid"] == 0
    assert got["fixed_merge"] + got["fixed_full"] > 0
    assert runs[False]["invalid"] > 0  # the flag-only path meets the same iterations and cannot fix them
    for t in range(iters):
        np.testing.assert_array_equal(got["top_i"][t], want["top_i"][t], err_msg=f"iteration {t}")
        np.testing.assert_array_equal(got["top_s"][t], want["top_s"][t].astype(np.float32), err_msg=f"iteration {t}")
    np.testing.assert_array_equal(got["maxima"], want["maxima"])
    np.testing.assert_array_equal(got["hist"], want["hist"])


def test_scaled_gpu_setup_variants_agree(rng):
    """Re-bucketing with global or shared counts and the first top-k on the device or with cupy: same results."""
    from neurochunk.kernels.memory_scaled_gpu import ScaledPartitionGPU

    n, k, bins = 150_000, 10, 16
    ids = cp.asarray(np.sort(K.keyed_ids(6, n)))
    s = rng.random(n).astype(np.float32)
    s[:3000] = 1.0
    seed = int(rng.integers(1 << 30))
    outs = []
    for rebucket, top_init in (("global", "device"), ("shared", "cupy")):
        part = ScaledPartitionGPU(ids, cp.asarray(s), k, bins, window=8, rebucket=rebucket, top_init=top_init)
        outs.append((part, part.run(0, 20, 0.05, seed, 6, n + 100, 2000, 0.5, -0.3)))
    (a, ra), (b, rb) = outs
    np.testing.assert_array_equal(cp.asnumpy(a.cnt), cp.asnumpy(b.cnt))
    np.testing.assert_array_equal(cp.asnumpy(a.base), cp.asnumpy(b.base))
    for key in ("hist", "maxima", "top_i", "top_s"):
        np.testing.assert_array_equal(ra[key], rb[key])
    assert ra["invalid"] == rb["invalid"] == 0
