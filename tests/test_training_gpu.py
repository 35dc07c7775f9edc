"""GPU twins against their CPU twins on fresh random inputs (skipped without cupy and a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_helpers import require_cupy

cp = require_cupy()

from neurochunk.kernels.omp import code_stats, dense_codes, sparse_code  # noqa: E402
from neurochunk.kernels.recurrent import DelayedRNN, advance, empty_history, make_weights, stimulus  # noqa: E402
from neurochunk.pipeline.dictionary import chunk_stats  # noqa: E402

pytestmark = pytest.mark.gpu


def _dictionary(k: int, d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((k, d)).astype(np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_omp_gpu_matches_cpu():
    rng = np.random.default_rng()
    dic = _dictionary(128, 48, rng)
    x = rng.standard_normal((3000, 48)).astype(np.float32)
    idx, val = sparse_code(x, dic, 6)
    gidx, gval = sparse_code(cp.asarray(x), cp.asarray(dic), 6)
    assert isinstance(gidx, cp.ndarray)
    c, gc = dense_codes(idx, val, 128), dense_codes(gidx, gval, 128).get()
    assert ((c != 0) == (gc != 0)).mean() > 0.999  # float rounding may flip a near-tie, rarely
    same = ((c != 0) == (gc != 0)).all(axis=1)
    np.testing.assert_allclose(gc[same], c[same], atol=1e-4)
    a, b = code_stats(x, idx, val, 128)
    ga, gb = code_stats(cp.asarray(x), gidx, gval, 128)
    assert np.linalg.norm(ga.get() - a) / np.linalg.norm(a) < 1e-3
    assert np.linalg.norm(gb.get() - b) / np.linalg.norm(b) < 1e-3


def test_chunk_stats_gpu_matches_cpu():
    rng = np.random.default_rng()
    dic = _dictionary(64, 32, rng)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    cpu, gpu = chunk_stats(x, dic, 4), chunk_stats(x, dic, 4, gpu=True)
    assert gpu["sq"] == pytest.approx(cpu["sq"], rel=1e-3) and gpu["l1"] == pytest.approx(cpu["l1"], rel=1e-3)
    assert np.linalg.norm(gpu["A"] - cpu["A"]) / np.linalg.norm(cpu["A"]) < 1e-3


@pytest.mark.parametrize("model", [DelayedRNN((16, 32, 24), delay_ff=5, delay_rec=3, seed=11),
                                   DelayedRNN((3, 4, 5), conv=True, height=9, width=7, delay_ff=5, delay_rec=3,
                                              seed=12)], ids=["dense", "conv"])
def test_recurrent_gpu_matches_cpu(model):
    ids = np.random.default_rng().integers(0, 10**6, 40)
    w = make_weights(model)
    _, cpu = advance(model, w, stimulus(model, ids), empty_history(model, 40), 0, 20, record=True)
    x = stimulus(model, cp.asarray(ids), cp)
    np.testing.assert_array_equal(x.get(), stimulus(model, ids))  # counter-based input: same numbers
    _, gpu = advance(model, w, x, empty_history(model, 40, cp), 0, 20, record=True)
    for c, g in zip(cpu, gpu, strict=True):
        assert isinstance(g, cp.ndarray)
        assert np.linalg.norm(g.get() - c) / np.linalg.norm(c) < 1e-4
