"""The resident (label once) components pipeline on the host, against cc3d voxel for voxel."""

from __future__ import annotations

from pathlib import Path

import cc3d
import numpy as np
import pytest

from neurochunk.kernels.volume import plane_pairs, synthetic_segmentation
from neurochunk.pipeline.resident import connected_components_resident


@pytest.mark.parametrize(("connectivity", "binary", "chunks", "slab_voxels"), [
    (26, False, (32, 40, 17), 40 * 90 * 65),  # slabs of one chunk layer, uneven edge chunks
    (26, False, (7, 13, 9), 3000),
    (6, True, (1, 90, 65), 1),  # slabs one voxel thick
    (18, False, (70, 90, 65), 2**30),  # one slab
    (26, True, (16, 16, 16), 32 * 90 * 65),
])
@pytest.mark.parametrize("io", ["chunks", "slabs"])
def test_resident_equals_cc3d(tmp_path: Path, connectivity: int, binary: bool, chunks: tuple[int, int, int],
                              slab_voxels: int, io: str) -> None:
    x = synthetic_segmentation((70, 90, 65), seed=3)
    clock: dict[str, float] = {}
    ds = connected_components_resident(x, tmp_path / "cc.zarr", connectivity=connectivity, binary=binary,
                                       chunks=chunks, device="numpy", slab_voxels=slab_voxels, threads=2,
                                       timings=clock, io=io)
    ref, n = cc3d.connected_components(x != 0 if binary else x, connectivity=connectivity, return_N=True)
    assert ds.attrs["n_labels"] == n and ds.attrs["complete"] is True
    assert np.array_equal(ds["0"][...], ref)  # slabs span whole planes: raster order of first voxels, as cc3d
    assert tuple(ds["0"].chunks) == chunks and clock["slabs"] >= 1


def test_plane_pairs_against_brute_force() -> None:
    rng = np.random.default_rng()
    for connectivity in (6, 18, 26):
        a_val, b_val = (rng.integers(0, 3, (9, 11)) for _ in range(2))
        a_lab, b_lab = a_val * 10 + rng.integers(0, 2, (9, 11)), b_val * 10 + rng.integers(0, 2, (9, 11))
        a_lab[a_val == 0], b_lab[b_val == 0] = 0, 0
        want = set()
        for y, x in np.ndindex(9, 11):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 1 + abs(dy) + abs(dx) > {6: 1, 18: 2, 26: 3}[connectivity] or not (0 <= yy < 9 and 0 <= xx < 11):
                        continue
                    if a_lab[y, x] and b_lab[yy, xx] and a_val[y, x] == b_val[yy, xx]:
                        want.add((int(a_lab[y, x]), int(b_lab[yy, xx])))
        got = plane_pairs(a_lab, a_val, b_lab, b_val, connectivity)
        assert {tuple(p) for p in got.tolist()} == want and len(got) == len(want)


def test_resident_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3-D"):
        connected_components_resident(np.zeros((4, 4), np.uint8), tmp_path / "a.zarr", device="numpy")
    with pytest.raises(ValueError, match="device"):
        connected_components_resident(np.zeros((4, 4, 4), np.uint8), tmp_path / "a.zarr", device="tpu")
