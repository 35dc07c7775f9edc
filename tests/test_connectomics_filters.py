"""Blockwise filters with halos against scipy / scikit-image on the whole volume, over awkward chunkings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from neurochunk.pipeline import filters
from neurochunk.pipeline.blockwise import blockwise, read_box


@pytest.mark.parametrize("chunks", [(7, 9, 11), (1, 20, 20), (16, 3, 16)])
def test_gaussian_equals_scipy(tmp_path: Path, chunks) -> None:
    x = np.random.default_rng(0).random((16, 20, 23)).astype(np.float32)
    ds = filters.gaussian(x, tmp_path / "g.zarr", sigma=(1.0, 2.0, 1.5), chunks=chunks, progress=False)
    ref = ndimage.gaussian_filter(x, (1.0, 2.0, 1.5), mode="reflect")
    np.testing.assert_allclose(ds["0"][...], ref, atol=1e-6)  # the halo (8 voxels) exceeds the chunks
    one = filters.gaussian(x, tmp_path / "g1.zarr", sigma=(1.0, 2.0, 1.5), chunks=chunks, task_bytes=1,
                           progress=False)  # one chunk per task instead of groups under one halo
    np.testing.assert_allclose(one["0"][...], ref, atol=1e-6)


def test_group_factor() -> None:
    from neurochunk.pipeline.blockwise import group_factor

    assert group_factor((64, 64, 64), (0, 0, 0), 4, 2**30) == 1
    assert group_factor((64, 64, 64), (16, 16, 16), 4, 2**30) == 4
    assert group_factor((64, 64, 64), (16, 16, 16), 4, 100 * 2**20) == 2  # 160^3 x 16 B = 62.5 MiB fits, 224^3 not
    assert group_factor((64, 64, 64), (16, 16, 16), 4, 2**20) == 1


def test_threshold_and_distance_transform(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = ndimage.gaussian_filter(rng.random((24, 30, 28)), 2)
    mask = filters.threshold(x, tmp_path / "m.zarr", float(np.median(x)), chunks=(8, 7, 9), progress=False)
    fg = x > np.median(x)
    assert np.array_equal(mask["0"][...], fg.astype(np.uint8))
    d = filters.distance_transform(mask, tmp_path / "d.zarr", 4.0, sampling=(1.0, 1.0, 1.0), progress=False)
    ref = np.minimum(ndimage.distance_transform_edt(fg), 4.0)
    np.testing.assert_allclose(d["0"][...], ref, atol=1e-5)


def test_seeded_watershed(tmp_path: Path) -> None:
    from skimage.segmentation import watershed

    rng = np.random.default_rng(2)
    shape = (32, 32, 32)
    seeds = rng.integers(0, 32, size=(40, 3))
    markers = np.zeros(shape, np.uint32)
    markers[tuple(seeds.T)] = np.arange(1, 41)
    dist = ndimage.distance_transform_edt(markers == 0)
    boundary = (dist + 0.01 * rng.random(shape)).astype(np.float32)
    ref = watershed(boundary, markers)
    one = filters.watershed(boundary, markers, tmp_path / "w1.zarr", halo=0, chunks=shape, progress=False)
    assert np.array_equal(one["0"][...], ref)
    ds = filters.watershed(boundary, markers, tmp_path / "w.zarr", halo=12, chunks=(16, 16, 16), progress=False)
    agree = (ds["0"][...] == ref).mean()
    assert agree > 0.97, agree


def test_blockwise_halo_padding_and_resume(tmp_path: Path) -> None:
    x = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    b = read_box(x, (slice(0, 2), slice(4, 6), slice(3, 7)), (2, 1, 0), mode="constant", cval=-1)
    assert b.shape == (6, 4, 4) and (b[:2] == -1).all() and (b[2:, -1] == -1).all()
    assert np.array_equal(b[2:4, 1:3], x[0:2, 4:6, 3:7])

    def plus_neighbours(block):
        return block[:-2, 1:-1, 1:-1] + block[2:, 1:-1, 1:-1] + block[1:-1, :-2, 1:-1]

    def padded(block):
        return np.pad(plus_neighbours(block), 1)

    ds = blockwise(x, padded, tmp_path / "b.zarr", halo=1, chunks=(2, 4, 3), mode="nearest", progress=False)
    xp_ = np.pad(x, 1, mode="edge")
    assert np.array_equal(ds["0"][...], plus_neighbours(xp_))
    files = sorted((tmp_path / "b.zarr" / "0" / "c").rglob("*"))
    mtimes = {f: f.stat().st_mtime_ns for f in files if f.is_file()}
    victim = next(iter(mtimes))
    victim.unlink()
    ds = blockwise(x, padded, tmp_path / "b.zarr", halo=1, chunks=(2, 4, 3), resume=True, progress=False)
    assert np.array_equal(ds["0"][...], plus_neighbours(xp_))
    assert all(f.stat().st_mtime_ns == t for f, t in mtimes.items() if f != victim)
