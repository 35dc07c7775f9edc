"""GPU twins of the volume kernels against their CPU twins, on fresh random inputs (skips without a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpu_helpers import require_cupy

cp = require_cupy()

from neurochunk.kernels import volume as kv  # noqa: E402
from neurochunk.kernels.volume_gpu import label_chunk_gpu  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint64, np.bool_])
@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("binary", [False, True])
def test_label_chunk_gpu_equals_cpu(dtype, connectivity: int, binary: bool) -> None:
    rng = np.random.default_rng()  # fresh inputs each run
    for _ in range(5):
        shape = tuple(int(s) for s in rng.integers(1, 40, 3))
        x = ((rng.random(shape) < rng.uniform(0.2, 0.7)) * rng.integers(1, 4, size=shape)).astype(dtype)
        ref, n = kv.label_chunk(x, connectivity, binary, "numba")
        got, n_gpu = label_chunk_gpu(cp.asarray(x), connectivity, binary)
        assert n_gpu == n and np.array_equal(got.get(), ref)


def test_label_chunk_gpu_large_objects() -> None:
    x = kv.synthetic_segmentation((96, 128, 160), (17, 5, 3), seed=int(np.random.default_rng().integers(1000)))
    ref, n = kv.label_chunk(x, 26, False, "cc3d")
    got, n_gpu = kv.label_chunk(cp.asarray(x), 26, False)
    assert isinstance(got, cp.ndarray) and n_gpu == n and np.array_equal(got.get(), ref)


def test_filter_twins() -> None:
    rng = np.random.default_rng()
    x = rng.random((40, 37, 33)).astype(np.float32)
    np.testing.assert_allclose(kv.gaussian(cp.asarray(x), (1.0, 2.0, 1.5)).get(), kv.gaussian(x, (1.0, 2.0, 1.5)),
                               atol=1e-5)
    m = (rng.random((40, 37, 33)) < 0.9).astype(np.uint8)
    np.testing.assert_allclose(kv.distance_transform(cp.asarray(m), 3.0).get(), kv.distance_transform(m, 3.0),
                               atol=1e-5)
    np.testing.assert_allclose(kv.downsample_mean(cp.asarray(x)).get(), kv.downsample_mean(x), rtol=1e-6)
    lab = rng.integers(0, 50, (20, 21, 22)).astype(np.uint32)
    lut = rng.integers(0, 1000, 50).astype(np.uint32)
    np.testing.assert_array_equal(kv.relabel(cp.asarray(lab), cp.asarray(lut)).get(), kv.relabel(lab, lut))


def test_components_pipeline_on_gpu(tmp_path: Path) -> None:
    import cc3d

    from neurochunk.pipeline.components import connected_components
    from neurochunk.pipeline.filters import gaussian

    x = kv.synthetic_segmentation((70, 90, 65), seed=3)
    ds = connected_components(x, tmp_path / "cc.zarr", chunks=(32, 40, 17), method="cupy", progress=False)
    ref, n = cc3d.connected_components(x, connectivity=26, return_N=True)
    got = ds["0"][...]
    assert ds.attrs["n_labels"] == n
    fg = ref != 0
    pairs = np.unique(np.stack([got[fg], ref[fg]], 1), axis=0)
    assert len(pairs) == n == len(np.unique(pairs[:, 0]))
    f = np.random.default_rng().random((30, 30, 30)).astype(np.float32)
    g_gpu = gaussian(f, tmp_path / "g.zarr", 1.5, chunks=(16, 16, 16), gpu=True, progress=False)["0"][...]
    g_cpu = gaussian(f, tmp_path / "h.zarr", 1.5, chunks=(16, 16, 16), progress=False)["0"][...]
    np.testing.assert_allclose(g_gpu, g_cpu, atol=1e-5)


def test_resident_pipeline_on_gpu(tmp_path: Path) -> None:
    import cc3d

    from neurochunk.pipeline.resident import connected_components_resident

    x = kv.synthetic_segmentation((70, 90, 65), seed=int(np.random.default_rng().integers(1000)))
    for chunks, slab in (((32, 40, 17), 40 * 90 * 65), ((70, 90, 65), 2**30)):
        ds = connected_components_resident(x, tmp_path / "cc.zarr", chunks=chunks, slab_voxels=slab)
        ref, n = cc3d.connected_components(x, connectivity=26, return_N=True)
        assert ds.attrs["n_labels"] == n and np.array_equal(ds["0"][...], ref)
