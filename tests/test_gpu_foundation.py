"""GPU node: LocalCUDACluster through ``connect(gpu=True)`` and datasets read straight into GPU memory."""

from __future__ import annotations

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
try:
    _ngpu = cupy.cuda.runtime.getDeviceCount()
except Exception:  # noqa: BLE001 - no driver, no device
    _ngpu = 0
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_ngpu == 0, reason="no CUDA device")]


def test_connect_gpu_runs_cupy_graph() -> None:
    pytest.importorskip("dask_cuda")
    import dask.array as da

    from neurochunk.cluster import connect

    client = connect({"gpu": True, "dashboard_address": "127.0.0.1:0"})
    try:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == _ngpu
        x = da.from_array(np.arange(1_000_000, dtype="f8"), chunks=100_000).map_blocks(cupy.asarray)
        total = client.compute(x.sum(), sync=True)
        assert float(total) == float(np.arange(1_000_000, dtype="f8").sum())
    finally:
        client.close()


def test_dataset_reads_into_gpu_memory(tmp_path) -> None:
    import zarr

    from neurochunk.stores import Dataset

    values = np.random.default_rng(0).random(10_000).astype("f4")
    ds = Dataset.create(tmp_path / "d.zarr", "neuron_state")
    ds.create_array("v", values.shape, values.dtype, chunks=(1000,), dims=("neuron",))[:] = values
    with zarr.config.enable_gpu():
        got = Dataset.open(tmp_path / "d.zarr")["v"][:]
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(got), values)
