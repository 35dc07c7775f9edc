"""Activation store: whole-chunk streaming writes, contiguous and shuffled readers, codec bounds, event lists."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from neurochunk.kernels.recurrent import DelayedRNN, advance, empty_history, make_weights, stimulus
from neurochunk.pipeline.activations import ActivationWriter, _windows, contiguous, minibatches, shuffled
from neurochunk.stores import Dataset
from neurochunk.stores.events import EventWriter, read_raster
from neurochunk.workflows.info import format_info


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def _rows(n: int, units: int = 6) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((n, units)).astype(np.float32)
    x[:, 0] = np.arange(n)  # row id, to follow rows through the shuffle
    return x


def test_writer_flushes_whole_chunks_only(tmp_path):
    ds = Dataset.create(tmp_path / "a.zarr", "activations")
    data = _rows(103)
    w = ActivationWriter(ds, "layer1", (6,), dims=("sample", "unit"), chunks=(10, 6))
    seen = []
    for lo, hi in [(0, 3), (3, 7), (7, 31), (31, 32), (32, 95), (95, 103)]:
        w.append(data[lo:hi])
        seen.append(w.array.shape[0])
        assert w.array.shape[0] % 10 == 0  # nothing partial on disk while the run goes on
        assert w._buf.nbytes == 10 * 6 * 4  # the writer never holds more than one chunk row
    assert seen == [0, 0, 30, 30, 90, 100]
    w.close()
    ds = Dataset.open(tmp_path / "a.zarr", kind="activations")
    np.testing.assert_array_equal(ds["layer1"][:], data)
    np.testing.assert_array_equal(contiguous(ds, "layer1", 17, 58).compute(), data[17:58])
    assert contiguous(ds, "layer1").numblocks[0] == 11
    with pytest.raises(IndexError, match="has 103 rows"):
        contiguous(ds, "layer1", 50, 200)
    with pytest.raises(ValueError, match="row shape"):
        ActivationWriter(ds.__class__.open(tmp_path / "a.zarr", mode="r+"), "bad", (6,), dims=("sample", "unit"),
                         chunks=(10, 6)).append(np.zeros((2, 5), np.float32))


def test_rows_of_a_writer_killed_mid_flush_stay_invisible(tmp_path):
    ds = Dataset.create(tmp_path / "a.zarr", "activations")
    data = _rows(43)
    w = ActivationWriter(ds, "h", (6,), dims=("sample", "unit"), chunks=(10, 6))
    w.append(data[:25])
    w.array.resize((30, 6))  # what a writer killed between its resize and its chunk write leaves behind
    ds = Dataset.open(tmp_path / "a.zarr")
    assert ds["h"].shape[0] == 30 and ds["h"].attrs["rows"] == 20
    np.testing.assert_array_equal(contiguous(ds, "h").compute(), data[:20])
    assert sorted(shuffled(ds, "h", batch=7).compute()[:, 0].astype(int)) == list(range(20))
    # a restarted producer resumes after the finished rows and re-sends what was lost
    ds = Dataset.open(tmp_path / "a.zarr", mode="r+")
    w = ActivationWriter(ds, "h", (6,), dims=("sample", "unit"), chunks=(10, 6), resume=True)
    assert w.rows == 20 and w.array.shape[0] == 20
    w.append(data[20:])
    w.close()
    np.testing.assert_array_equal(Dataset.open(tmp_path / "a.zarr")["h"][:], data)
    with pytest.raises(ValueError, match="cannot be resumed in whole chunks"):
        ActivationWriter(Dataset.open(tmp_path / "a.zarr", mode="r+"), "h", (6,), dims=("sample", "unit"),
                         chunks=(10, 6), resume=True)


def test_writer_5d_time_layer_channel_y_x_with_shards(tmp_path):
    ds = Dataset.create(tmp_path / "a.zarr", "activations")
    rng = np.random.default_rng(2)
    data = rng.random((13, 2, 3, 8, 8), dtype=np.float32)
    with ActivationWriter(ds, "conv", (2, 3, 8, 8), dims=("time", "layer", "channel", "y", "x"),
                          chunks=(2, 1, 3, 8, 8), shards=(4, 2, 3, 8, 8), codec="bitshuffle") as w:
        for t in range(13):
            w.append(data[t:t + 1])
            assert w.array.shape[0] % 4 == 0
    np.testing.assert_array_equal(ds["conv"][:], data)
    assert ds["conv"].metadata.dimension_names == ("time", "layer", "channel", "y", "x")


def test_shuffled_minibatches_cover_each_row_once_and_are_reproducible(tmp_path):
    ds = Dataset.create(tmp_path / "a.zarr", "activations")
    data = _rows(250)
    with ActivationWriter(ds, "h", (6,), dims=("sample", "unit"), chunks=(20, 6)) as w:
        w.append(data)
    batches = list(minibatches(ds, "h", batch=32, seed=3, epoch=0, window_chunks=3))
    ids = np.concatenate([b[:, 0] for b in batches]).astype(int)
    assert sorted(ids) == list(range(250))
    assert [len(b) for b in batches] == [32] * 7 + [26]
    assert not np.array_equal(ids, np.arange(250))
    for b in batches:  # every row keeps its values
        np.testing.assert_array_equal(b, data[b[:, 0].astype(int)])
    lazy = shuffled(ds, "h", batch=32, seed=3, epoch=0, window_chunks=3)
    assert lazy.chunks[0][:7] == (32,) * 7
    np.testing.assert_array_equal(lazy.compute()[:, 0].astype(int), ids)
    again = np.concatenate([b[:, 0] for b in minibatches(ds, "h", batch=32, seed=3, epoch=0, window_chunks=3)])
    np.testing.assert_array_equal(again.astype(int), ids)
    other = np.concatenate([b[:, 0] for b in minibatches(ds, "h", batch=32, seed=3, epoch=1, window_chunks=3)])
    assert not np.array_equal(other.astype(int), ids)
    # each window of the shuffle holds rows of at most 3 stored chunks
    edges = np.cumsum((0,) + _windows(ds, "h", 3, 0, 3).chunks[0])
    assert len(edges) == 6
    for lo, hi in zip(edges[:-1], edges[1:]):
        assert len(set(ids[lo:hi] // 20)) <= 3
    assert len(list(minibatches(ds, "h", batch=32, seed=3, drop_last=True))) == 7


def _model_activations(steps: int = 30, samples: int = 64) -> np.ndarray:
    model = DelayedRNN((24, 48, 32), delay_ff=5, delay_rec=3, seed=4)
    _, rec = advance(model, make_weights(model), stimulus(model, np.arange(samples)),
                     empty_history(model, samples), 0, steps, record=True)
    return rec[0]  # (time, sample, unit)


@pytest.mark.parametrize("codec", ["lossless", "bitshuffle", "bitround:7", "bitround:12", "quantize:3", "float16"])
def test_codec_bound_holds_on_recurrent_activations(tmp_path, codec):
    acts = _model_activations()
    assert acts.std() > 0.05 and (acts > 0).mean() > 0.5  # real, varied activity
    ds = Dataset.create(tmp_path / "a.zarr", "activations")
    with ActivationWriter(ds, "h1", acts.shape[1:], dims=("time", "sample", "unit"), chunks=(5, 64, 48),
                          codec=codec) as w:
        for t in range(0, acts.shape[0], 3):
            w.append(acts[t:t + 3])
    back = Dataset.open(tmp_path / "a.zarr")["h1"][:]
    bound = Dataset.open(tmp_path / "a.zarr")["h1"].attrs["neurochunk_codec"]["error_bound"]
    err = np.abs(back.astype(np.float64) - acts)
    if codec in ("lossless", "bitshuffle"):
        assert bound == {} and np.array_equal(back, acts)
    elif "relative" in bound:
        normal = np.abs(acts) >= (np.finfo(np.float16).tiny if codec == "float16" else 0)
        rel = err[normal] / np.maximum(np.abs(acts[normal]), 1e-30)
        assert rel.max() <= bound["relative"]
        assert rel.max() > bound["relative"] / 64  # really lossy, not silently lossless
        if codec == "float16":  # below float16's normal range the error is absolute: half a subnormal step
            assert err[~normal].max(initial=0) <= bound["absolute"] == 2.0**-25
    else:
        assert err.max() <= bound["absolute"]
        assert err.max() > bound["absolute"] / 64
    info = Dataset.open(tmp_path / "a.zarr").info()["arrays"]["h1"]
    assert info["codec"] == codec and info["ratio"] > 1.0
    text = format_info(Dataset.open(tmp_path / "a.zarr").info())
    assert codec in text and f"x{info['ratio']:.2f}" in text


def test_lossy_codec_on_integer_array_is_refused(tmp_path):
    ds = Dataset.create(tmp_path / "a.zarr", "activations")
    with pytest.raises(ValueError, match="needs a float array"):
        ActivationWriter(ds, "ids", (4,), dims=("sample", "unit"), chunks=(8, 4), dtype=np.int32, codec="bitround:7")


def test_spike_events_delta_coded_round_trip_and_ratio(tmp_path):
    rng = np.random.default_rng(5)
    steps, units = 20_000, 500
    raster = rng.random((steps, units)) < 5.0 * 1e-3  # 5 Hz at 1 ms steps
    ds = Dataset.create(tmp_path / "s.zarr", "activations")
    w = EventWriter(ds, "spikes", units, chunk=1 << 14)
    for t in range(0, steps, 777):
        w.append(raster[t:t + 777])
    arr = w.close()
    assert arr.shape[0] == raster.sum()
    assert arr.attrs["neurochunk_codec"]["spec"] == "delta"
    np.testing.assert_array_equal(read_raster(arr), raster)
    np.testing.assert_array_equal(read_raster(arr, 12_345, 15_001), raster[12_345:15_001])
    from neurochunk.pipeline.activations import spike_raster

    lazy = spike_raster(Dataset.open(tmp_path / "s.zarr"), "spikes", steps_per_chunk=3000)
    assert lazy.chunks[0] == (3000,) * 6 + (2000,)
    np.testing.assert_array_equal(lazy[4000:9000].compute(), raster[4000:9000])
    assert int(lazy.sum().compute()) == int(raster.sum())
    ratio = raster.size / arr.nbytes_stored()  # against a one-byte-per-step bool raster
    assert ratio > 60, ratio
    with pytest.raises(IndexError, match="holds steps 0:20000"):
        read_raster(arr, 0, 20_001)
