"""State, Step and Runner over stored datasets: lazy steps, checkpoints, resume, chunk-aligned writes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from neurochunk.pipeline import Runner, State, Step, check_aligned, commit_arrays, read_array, write_array
from neurochunk.stores import Dataset


class Relax(Step):
    """x <- a x + b per step, fused over n steps per chunk; outputs the batch's sum."""

    batch_steps = 4

    def __init__(self, a: float = 0.5, b: float = 1.0) -> None:
        self.a, self.b = a, b

    def build(self, state: State, n: int) -> State:
        a, b = self.a, self.b

        def advance(x: np.ndarray) -> np.ndarray:
            for _ in range(n):
                x = a * x + b
            return x

        return state.update({"x": state["x"].map_blocks(advance, dtype=state["x"].dtype)})

    def outputs(self, state: State) -> dict:
        return {"total": state["x"].sum()}


def _reference(x0: np.ndarray, steps: int) -> np.ndarray:
    x = x0.copy()
    for _ in range(steps):
        x = 0.5 * x + 1.0
    return x


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


@pytest.mark.parametrize("use_client", [False, True], ids=["threads", "distributed"])
def test_runner_batches_checkpoints_and_matches_reference(tmp_path, client, use_client: bool) -> None:
    x0 = np.random.default_rng(0).normal(size=1000)
    state = State({"x": da.from_array(x0, chunks=250)}, {"x": ("neuron",)}, {"step": 0})
    ck = Dataset.create(tmp_path / "ck.zarr", "neuron_state")
    seen = []
    runner = Runner(Relax(), state, checkpoints=ck, checkpoint_every=6, client=client if use_client else None,
                    on_batch=lambda r, s: seen.append((r.first_step, r.n_steps, r.outputs["total"])), progress=False)
    final = runner.run(14)
    np.testing.assert_allclose(np.asarray(final["x"]), _reference(x0, 14))
    assert [(f, n) for f, n, _ in seen] == [(0, 4), (4, 2), (6, 4), (10, 2), (12, 2)]
    assert seen[0][2] == pytest.approx(_reference(x0, 4).sum())
    assert [c.name for c in ck.commits.list()] == ["step-6", "step-12", "step-14"]
    assert ck.commits.latest().meta["scalars"]["step"] == 14


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path) -> None:
    x0 = np.random.default_rng(1).normal(size=300)
    ck = Dataset.create(tmp_path / "ck.zarr", "neuron_state")
    first = Runner(Relax(), State({"x": da.from_array(x0, chunks=100)}, {"x": ("neuron",)}, {"step": 0}),
                   checkpoints=ck, checkpoint_every=5, progress=False)
    first.run(10)  # "killed" after the step-10 commit
    resumed = Runner(Relax(), State({"x": da.zeros(300, chunks=100)}, {"x": ("neuron",)}, {"step": 0}),
                     checkpoints=Dataset.open(tmp_path / "ck.zarr", mode="r+"), checkpoint_every=5, progress=False)
    assert resumed.resume() and resumed.steps_done == 10
    final = resumed.run(7)
    np.testing.assert_array_equal(np.asarray(final["x"]), _reference(x0, 17))


def test_write_array_rechunks_unaligned_and_reads_back(tmp_path) -> None:
    ds = Dataset.create(tmp_path / "d.zarr", "neuron_state")
    x = da.from_array(np.arange(100, dtype="f4"), chunks=((30, 30, 40),))
    write_array(x, ds, "v", dims=("neuron",), chunks=(25,))
    back = read_array(ds, "v")
    assert back.chunks == ((25, 25, 25, 25),)
    np.testing.assert_array_equal(back.compute(), np.arange(100))


def test_check_aligned_names_axis_and_chunk() -> None:
    check_aligned(((20, 20, 5),), (10,), "a")
    with pytest.raises(ValueError, match=r"dask chunk 0 on axis 1 ends at 15"):
        check_aligned(((10,), (15, 15)), (10, 10), "array 'w'")


def test_commit_arrays_is_atomic_on_failure(tmp_path) -> None:
    ds = Dataset.create(tmp_path / "d.zarr", "neuron_state")
    commit_arrays(ds, "ok", {"v": (da.ones(10, chunks=5), ("neuron",))})

    def explode(block: np.ndarray) -> np.ndarray:
        raise RuntimeError("kernel failed in chunk")

    bad = da.ones(10, chunks=5).map_blocks(explode, dtype=float)
    with pytest.raises(RuntimeError, match="kernel failed"):
        commit_arrays(ds, "bad", {"v": (bad, ("neuron",))})
    assert [c.name for c in ds.commits.list()] == ["ok"]
    np.testing.assert_array_equal(ds.commits.open()["v"][:], 1)


def test_state_restore_roundtrip(tmp_path) -> None:
    ds = Dataset.create(tmp_path / "d.zarr", "neuron_state")
    s = State({"v": da.arange(12, chunks=4), "ring": da.zeros((3, 12), chunks=(3, 4))},
              {"v": ("neuron",), "ring": ("delay", "neuron")}, {"step": 7, "t_ms": 0.7, "rng": [1, 2]})
    s.checkpoint(ds, "c")
    r = State.restore(ds)
    assert r.scalars == {"step": 7, "t_ms": 0.7, "rng": [1, 2]}
    assert r.dims["ring"] == ("delay", "neuron")
    np.testing.assert_array_equal(r["v"].compute(), np.arange(12))
    assert r.to_xarray()["ring"].dims == ("delay", "neuron")
