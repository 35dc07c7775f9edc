"""Global connected components against cc3d on the whole volume, over awkward chunkings."""

from __future__ import annotations

import gzip
import io
import os
import threading
from pathlib import Path

import cc3d
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurochunk.kernels.volume import boundary_pairs, label_chunk, synthetic_segmentation
from neurochunk.pipeline.components import connected_components, merge_equivalences
from neurochunk.stores.ome import chunk_written, open_volume, written_chunks

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "neuroproof_training_sample2"


def assert_bijection(got: np.ndarray, ref: np.ndarray) -> None:
    """Same foreground, and the label pairs form a one-to-one map."""
    fg = ref != 0
    assert np.array_equal(got != 0, fg), "foreground differs"
    pairs = np.unique(got[fg].astype(np.uint64) << np.uint64(32) | ref[fg].astype(np.uint64))
    a, b = pairs >> np.uint64(32), pairs & np.uint64(2**32 - 1)
    assert len(np.unique(a)) == len(pairs) == len(np.unique(b)), "not a bijection"


def reference(x: np.ndarray, connectivity: int, binary: bool) -> tuple[np.ndarray, int]:
    return cc3d.connected_components(np.ascontiguousarray(x != 0 if binary else x), connectivity=connectivity,
                                     return_N=True)


def check(x: np.ndarray, tmp_path: Path, name: str, *, connectivity: int, binary: bool = False,
          chunks: tuple[int, int, int], method: str = "auto") -> np.ndarray:
    ds = connected_components(x, tmp_path / name, connectivity=connectivity, binary=binary, chunks=chunks,
                              method=method, progress=False, resume=False)
    got = ds["0"][...]
    ref, n = reference(x, connectivity, binary)
    assert ds.attrs["n_labels"] == n and ds.attrs["complete"] is True
    assert ds["0"].compressors[0].cname.value == "lz4"  # labels are written with the fast codec by default
    assert got.max() == n and len(np.unique(got[got != 0])) == n, "ids are not consecutive 1..n"
    assert_bijection(got, ref)
    return got


@pytest.mark.parametrize("method", ["numba", "cc3d"])
@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("binary", [False, True])
def test_chunk_labeller_equals_cc3d(method: str, connectivity: int, binary: bool) -> None:
    rng = np.random.default_rng(connectivity + binary)
    for _ in range(10):
        shape = tuple(rng.integers(1, 15, 3))
        x = ((rng.random(shape) < 0.45) * rng.integers(1, 4, size=shape)).astype(np.uint8)
        got, n = label_chunk(x[:, ::-1], connectivity, binary, method)  # a strided view too
        ref, n_ref = reference(x[:, ::-1], connectivity, binary)
        assert n == n_ref and np.array_equal(got, ref)


# (shape, chunks): uneven edge chunks, one-voxel-thick chunks, chunks of one voxel, one chunk
AWKWARD = [
    ((13, 11, 9), (4, 5, 2)),
    ((13, 11, 9), (1, 11, 9)),
    ((13, 11, 9), (13, 1, 9)),
    ((13, 11, 9), (13, 11, 1)),
    ((7, 6, 5), (1, 1, 1)),
    ((12, 12, 12), (5, 7, 3)),
    ((10, 9, 8), (10, 9, 8)),
    ((1, 17, 19), (1, 4, 6)),
]


@pytest.mark.parametrize("shape,chunks", AWKWARD)
@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_random_volumes_awkward_chunks(tmp_path: Path, shape, chunks, connectivity: int) -> None:
    rng = np.random.default_rng(sum(shape) + connectivity)
    x = ((rng.random(shape) < 0.4) * rng.integers(1, 3, size=shape)).astype(np.uint8)
    check(x, tmp_path, "multi", connectivity=connectivity, chunks=chunks)
    check(x, tmp_path, "binary", connectivity=connectivity, binary=True, chunks=chunks)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(*[st.integers(1, 10)] * 3), chunks=st.tuples(*[st.integers(1, 6)] * 3),
       density=st.floats(0.1, 0.7), connectivity=st.sampled_from([6, 18, 26]), binary=st.booleans(),
       seed=st.integers(0, 2**16))
def test_hypothesis_against_cc3d(tmp_path_factory, shape, chunks, density, connectivity, binary, seed) -> None:
    rng = np.random.default_rng(seed)
    x = ((rng.random(shape) < density) * rng.integers(1, 3, size=shape)).astype(np.uint8)
    check(x, tmp_path_factory.mktemp("h"), "cc", connectivity=connectivity, binary=binary, chunks=chunks)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_contacts_only_through_edges_and_corners(tmp_path: Path, connectivity: int) -> None:
    # 2x2x2 chunks of 2^3: (1,1,1) and (2,2,2) touch only through the corner shared by eight chunks
    x = np.zeros((4, 4, 4), dtype=np.uint8)
    for p in [(1, 1, 1), (2, 2, 2), (0, 0, 3), (3, 3, 0), (0, 3, 0), (3, 0, 3), (0, 3, 3), (3, 0, 0)]:
        x[p] = 1
    got = check(x, tmp_path, "corner", connectivity=connectivity, chunks=(2, 2, 2))
    assert got.max() == (7 if connectivity == 26 else 8)
    # (1,1,0)-(2,2,0) and (1,1,3)-(2,2,3) touch only through a chunk edge
    y = np.zeros((4, 4, 4), dtype=np.uint8)
    y[1, 1, 0] = y[2, 2, 0] = y[1, 1, 3] = y[2, 2, 3] = 1
    got = check(y, tmp_path, "edge", connectivity=connectivity, chunks=(2, 2, 2))
    assert got.max() == (4 if connectivity == 6 else 2)


def test_objects_spanning_many_chunks(tmp_path: Path) -> None:
    # a diagonal staircase and a helix crossing every chunk, plus a comb joined only at one end
    n = 24
    x = np.zeros((n, n, n), dtype=np.uint16)
    i = np.arange(n)
    x[i, i, i] = 1  # 26-connected only through corners
    t = np.linspace(0, 4 * np.pi, 400)
    x[(np.linspace(0, n - 1, 400)).astype(int), (11 + 9 * np.sin(t)).astype(int), (11 + 9 * np.cos(t)).astype(int)] = 2
    x[:, 0, 20:] = 3
    x[0, :, 20:22] = 3
    for chunks, connectivity in [((3, 5, 2), 26), ((1, 24, 24), 6), ((7, 7, 7), 18)]:
        got = check(x, tmp_path, f"s{connectivity}", connectivity=connectivity, chunks=chunks)
        assert len(np.unique(got[x == 1])) == (1 if connectivity == 26 else n)


def test_boundary_pairs_face_edge_corner() -> None:
    a = np.array([[[5]]], dtype=np.uint32)
    b = np.array([[[7]]], dtype=np.uint32)
    v = np.ones((1, 1, 1), dtype=np.uint8)
    assert boundary_pairs(a, v, b, v, (1, 1, 1), 26).tolist() == [[5, 7]]
    assert boundary_pairs(a, v, b, v, (1, 1, 1), 18).tolist() == []
    face_a = np.array([[[1, 0, 0]]], dtype=np.uint32)
    face_b = np.array([[[0, 2, 0]]], dtype=np.uint32)
    ones = np.ones((1, 1, 3), dtype=np.uint8)
    assert boundary_pairs(face_a, ones, face_b, ones, (1, 0, 0), 18).tolist() == [[1, 2]]
    assert boundary_pairs(face_a, ones, face_b, ones, (1, 0, 0), 6).tolist() == []


def test_merge_is_consecutive_and_deterministic() -> None:
    merge = merge_equivalences([3, 2, 4], np.array([[2, 4], [5, 9], [9, 3], [6, 7]]))
    luts = np.concatenate([merge.lut(b)[1:] for b in range(3)])
    # provisional 1..9: {2,4}, {3,5,9}, {6,7}; the rest alone -> 5 labels, numbered by smallest member
    assert luts.tolist() == [1, 2, 3, 2, 3, 4, 4, 5, 3]
    assert merge.n_labels == 5


def _groundtruth(bodies: bool) -> np.ndarray:
    """The sample's ground truth: per-plane superpixels (``stack``) or 3-D bodies (through ``transforms``)."""
    import h5py

    raw = gzip.open(DATA / "groundtruth.h5.gz").read()
    with h5py.File(io.BytesIO(raw), "r") as f:
        stack, pairs = f["stack"][...], f["transforms"][...]
    if not bodies:
        return stack
    lut = np.zeros(stack.max() + 1, dtype=np.uint32)
    lut[pairs[:, 0]] = pairs[:, 1]
    return lut[stack]


@pytest.mark.skipif(not (DATA / "groundtruth.h5.gz").exists(), reason="neuroproof sample not present")
@pytest.mark.parametrize("bodies,connectivity,chunks,least", [
    (True, 26, (64, 37, 100), 500),   # 3-D bodies span many chunks
    (True, 6, (250, 250, 1), 500),    # one-voxel-thick chunks across every body
    (False, 18, (50, 50, 50), 10_000),  # per-plane superpixels: thousands of thin objects
])
def test_groundtruth_components_match_cc3d(tmp_path: Path, bodies: bool, connectivity: int, chunks, least: int) -> None:
    got = check(_groundtruth(bodies), tmp_path, "gt", connectivity=connectivity, chunks=chunks)
    assert got.max() > least


def test_resume_recomputes_only_missing_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x = ((rng.random((20, 20, 20)) < 0.5) * rng.integers(1, 3, size=(20, 20, 20))).astype(np.uint8)
    out = tmp_path / "cc.zarr"
    first = check(x, tmp_path, "cc.zarr", connectivity=26, chunks=(8, 8, 8))
    chunk_dir = out / "0" / "c"
    files = sorted(p for p in chunk_dir.rglob("*") if p.is_file())
    assert len(files) == 27
    lost = files[::5]
    for p in lost:
        p.unlink()
    kept = {p: os.stat(p).st_mtime_ns for p in files if p not in lost}
    ds = open_volume(out, mode="r+")
    ds.update_attrs(complete=False)  # as a crash mid-relabel leaves it
    ds = connected_components(x, out, connectivity=26, chunks=(8, 8, 8), progress=False, resume=True)
    assert np.array_equal(ds["0"][...], first)
    assert all(os.stat(p).st_mtime_ns == t for p, t in kept.items()), "finished chunks were rewritten"
    assert all(p.exists() for p in lost) and ds.attrs["complete"] is True
    assert written_chunks(ds["0"]) == set(np.ndindex(3, 3, 3)) and chunk_written(ds["0"], (2, 2, 2))
    assert len(ds.commits.list()) == 1  # the merge was reused, not recomputed
    other = x[::-1].copy()  # same shape, other content: nothing of the old run may be reused
    ds = connected_components(other, out, connectivity=26, chunks=(8, 8, 8), progress=False, resume=True)
    ref, n = reference(other, 26, False)
    assert ds.attrs["n_labels"] == n
    assert_bijection(ds["0"][...], ref)


def test_distributed_client(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(3)
    x = ((rng.random((30, 20, 25)) < 0.5) * rng.integers(1, 3, size=(30, 20, 25))).astype(np.uint8)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        ds = connected_components(x, tmp_path / "d.zarr", connectivity=18, chunks=(7, 9, 11), client=client,
                                  progress=False, codec=None)
    assert ds["0"].compressors[0].cname.value == "zstd"
    ref, n = reference(x, 18, False)
    assert ds.attrs["n_labels"] == n
    assert_bijection(ds["0"][...], ref)


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="integer or boolean"):
        connected_components(np.zeros((4, 4, 4), np.float32), tmp_path / "f.zarr", progress=False)
    with pytest.raises(ValueError, match="6, 18 or 26"):
        connected_components(np.zeros((4, 4, 4), np.uint8), tmp_path / "g.zarr", connectivity=8, progress=False)


class _FailingOnce:
    """A volume whose chosen block fails on its second read (the relabel pass), as a dying disk would."""

    def __init__(self, x: np.ndarray, bad: tuple[slice, ...]) -> None:
        self.x, self.bad, self.reads = x, bad, 0
        self.shape, self.dtype = x.shape, x.dtype

    def __array__(self, dtype=None, copy=None):
        return self.x

    def __getitem__(self, box):
        if box == self.bad:
            self.reads += 1
            if self.reads == 2:
                raise OSError("read error in the relabel pass")
        return self.x[box]


def test_crash_mid_relabel_then_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    x = ((rng.random((24, 24, 24)) < 0.5) * rng.integers(1, 3, size=(24, 24, 24))).astype(np.uint8)
    bad = (slice(8, 16), slice(8, 16), slice(8, 16))
    out = tmp_path / "cc.zarr"
    with pytest.raises(OSError, match="relabel pass"):  # no run cache: the relabel pass reads every block again
        connected_components(_FailingOnce(x, bad), out, chunks=(8, 8, 8), progress=False, cache_bytes=0)
    ds = open_volume(out)
    assert ds.attrs["complete"] is False and len(ds.commits.list()) == 1  # the merge survived the crash
    before = {p: p.stat().st_mtime_ns for p in (out / "0" / "c").rglob("*") if p.is_file()}
    assert len(before) < 27  # the failed block (and maybe others) is missing
    ds = connected_components(_FailingOnce(x, (slice(0, 0),) * 3), out, chunks=(8, 8, 8), progress=False)
    ref, n = reference(x, 26, False)
    assert ds.attrs["complete"] is True and ds.attrs["n_labels"] == n
    assert_bijection(ds["0"][...], ref)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "chunks written before the crash were redone"
    assert len(ds.commits.list()) == 1


@pytest.mark.parametrize("method", ["numba", "cc3d"])
def test_run_cache_skips_second_read(tmp_path: Path, method: str) -> None:
    x = synthetic_segmentation((40, 50, 45), seed=5)
    src = _CountingReads(x)
    ds = connected_components(src, tmp_path / "a.zarr", chunks=(16, 16, 16), method=method, progress=False)
    assert src.reads == 3 * 4 * 3  # each block read once: the relabel pass painted every block from its runs
    ref, n = reference(x, 26, False)
    assert ds.attrs["n_labels"] == n
    assert_bijection(ds["0"][...], ref)
    small = _CountingReads(x)  # a budget for a few blocks only: the rest are read and labelled again
    ds = connected_components(small, tmp_path / "b.zarr", chunks=(16, 16, 16), method=method, progress=False,
                              cache_bytes=60_000)
    assert 36 < small.reads < 72 and ds.attrs["n_labels"] == n
    assert_bijection(ds["0"][...], ref)


class _CountingReads:
    def __init__(self, x: np.ndarray) -> None:
        self.x, self.reads, self.shape, self.dtype = x, 0, x.shape, x.dtype
        self._lock = threading.Lock()

    def __array__(self, dtype=None, copy=None):
        return self.x

    def __getitem__(self, box):
        with self._lock:
            self.reads += 1
        return self.x[box]
