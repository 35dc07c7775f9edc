"""Delayed recurrent model and temporal checkpointing: recomputed states equal stored-every-step states."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from scipy.signal import correlate

from neurochunk.kernels.recurrent import DelayedRNN, _conv3x3_acc, advance, empty_history, make_weights, stimulus
from neurochunk.pipeline.temporal import run_checkpointed, run_every_step, states
from neurochunk.stores import Dataset


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def test_delays_shape_the_onset_of_each_layer():
    model = DelayedRNN((8, 16, 16, 16), delay_ff=5, delay_rec=3, seed=1)
    w = make_weights(model)
    for layer in w:
        layer["b"][:] = 0.0  # without bias, a layer is silent until the stimulus reaches it
    _, rec = advance(model, w, stimulus(model, np.arange(4)), empty_history(model, 4), 0, 20, record=True)
    for l in range(3):
        onset = 5 * (l + 1)  # d_ff steps per layer on the way up
        assert np.all(rec[l][:onset] == 0)
        assert np.any(rec[l][onset] > 0)


def test_conv_kernel_matches_scipy():
    rng = np.random.default_rng(0)
    inp = rng.random((2, 3, 7, 9), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    out = np.zeros((2, 4, 7, 9), np.float32)
    _conv3x3_acc(inp, w, out)
    ref = np.array([[sum(correlate(inp[n, ci], w[co, ci], mode="same") for ci in range(3)) for co in range(4)]
                    for n in range(2)])
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("model,k,chunk", [
    (DelayedRNN((12, 20, 16), delay_ff=5, delay_rec=3, seed=3), 8, 7),
    (DelayedRNN((12, 20, 16), delay_ff=2, delay_rec=6, seed=4), 10, 30),
    (DelayedRNN((2, 3, 4), conv=True, height=6, width=5, delay_ff=5, delay_rec=3, seed=5), 10, 4),
], ids=["dense-5-3", "dense-2-6", "conv-5-3"])
def test_recompute_equals_every_step(tmp_path, model, k, chunk):
    n, steps = 23, 40
    ck = Dataset.create(tmp_path / "ck.zarr", "activations")
    every = Dataset.create(tmp_path / "every.zarr", "activations")
    run_checkpointed(ck, model, n_samples=n, chunk=chunk, steps=steps, k=k)
    run_every_step(every, model, n_samples=n, chunk=chunk, steps=steps, k=k)
    _, direct = advance(model, make_weights(model), stimulus(model, np.arange(n)), empty_history(model, n), 0,
                        steps, record=True)
    ck = Dataset.open(tmp_path / "ck.zarr")
    for layer in (1, 2):
        lazy = states(ck, layer)
        assert lazy.chunks[0] == (k,) * (steps // k)  # each task recomputes k steps, no more
        got = lazy.compute()
        np.testing.assert_array_equal(got, states(Dataset.open(tmp_path / "every.zarr"), layer).compute())
        np.testing.assert_allclose(got, direct[layer - 1], rtol=1e-5, atol=1e-6)  # BLAS rounds by batch size
        assert got.std() > 0.01
    # stored: T/k checkpoints of D states instead of T states
    unit = int(np.prod(model.unit_shape(1)))
    assert ck["ckpt1"].shape == (steps // k, model.depth, n, *model.unit_shape(1))
    assert ck["ckpt1"].size == steps // k * model.depth * n * unit < every["h1"].size == steps * n * unit


def test_states_read_a_slice_without_the_rest(tmp_path):
    model = DelayedRNN((6, 10, 8), seed=7)
    ds = Dataset.create(tmp_path / "ck.zarr", "activations")
    run_checkpointed(ds, model, n_samples=12, chunk=4, steps=40, k=8)
    lazy = states(Dataset.open(tmp_path / "ck.zarr"), 2)[17:19, 4:8]
    (opt,) = dask.optimize(lazy)
    recomputes = [key for key in dict(opt.__dask_graph__()) if str(key).startswith("('recompute-")]
    assert len(recomputes) == 1  # only batch 2 of sample chunk 1 is recomputed
    _, direct = advance(model, make_weights(model), stimulus(model, np.arange(12)), empty_history(model, 12), 0,
                        19, record=True)
    np.testing.assert_allclose(lazy.compute(), direct[1][17:19, 4:8], rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="delays must be >= 1"):
        DelayedRNN((4, 4), delay_ff=0)
    ds = Dataset.create(tmp_path / "ck.zarr", "activations")
    with pytest.raises(ValueError, match="multiple of the checkpoint interval"):
        run_every_step(ds, DelayedRNN((4, 4)), n_samples=4, chunk=2, steps=10, k=3)


def test_checkpointed_run_on_a_distributed_cluster(tmp_path):
    from distributed import Client, LocalCluster

    model = DelayedRNN((6, 10, 8), seed=8)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        ds = Dataset.create(tmp_path / "ck.zarr", "activations")
        run_checkpointed(ds, model, n_samples=10, chunk=5, steps=20, k=5)
        got = client.compute(states(Dataset.open(tmp_path / "ck.zarr"), 2), sync=True)
    _, direct = advance(model, make_weights(model), stimulus(model, np.arange(10)), empty_history(model, 10), 0,
                        20, record=True)
    np.testing.assert_allclose(got, direct[1], rtol=1e-5, atol=1e-6)
