"""How spikes cross chunks does not change them: gathered or direct exchange, one or several windows per delay."""

from __future__ import annotations

import numpy as np
import pytest

from neurochunk.pipeline.network import brunel_network, coba_network
from neurochunk.pipeline.runner import Runner
from neurochunk.pipeline.simulation import SpikingStep, initial_state


def _brunel():
    return brunel_network(5000, rule="fixed_probability", seed=11, chunk=1250, v_init={"uniform": [10.0, 20.0]})


def _spikes(plan, client=None, steps=230, **kw):
    """Spikes of ``steps`` steps in batches of 70 (not a multiple of any window: batches end mid-delay)."""
    runner = Runner(SpikingStep(plan, batch_steps=70, **kw), initial_state(plan), client=client, progress=False)
    runner.run(steps)
    return tuple(np.concatenate([r.outputs["spikes"][k] for r in runner.reports]) for k in (0, 1))


@pytest.fixture(scope="module")
def reference():
    plan = _brunel().plan()
    assert plan.min_delay == 16 and len(plan.chunks) == 4
    return plan, _spikes(plan)


@pytest.mark.parametrize(("exchange", "overlap"), [("gather", 1), ("gather", 2), ("direct", 3), ("gather", 16)])
def test_exchange_and_overlap_keep_the_spikes(reference, exchange, overlap) -> None:
    plan, (steps, gids) = reference
    assert len(steps) > 2000 and steps[-1] > 200
    got = _spikes(plan, exchange=exchange, overlap=overlap)
    np.testing.assert_array_equal(steps, got[0])
    np.testing.assert_array_equal(gids, got[1])


def test_overlapped_windows_on_a_cluster_keep_the_spikes(reference) -> None:
    from distributed import Client, LocalCluster

    plan, (steps, gids) = reference
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        got = _spikes(plan, client, exchange="direct", overlap=2)
    np.testing.assert_array_equal(steps, got[0])
    np.testing.assert_array_equal(gids, got[1])


def test_overlap_splits_each_delay_into_windows() -> None:
    plan = _brunel().plan()
    step = SpikingStep(plan, overlap=3)
    state = step.build(initial_state(plan), 30)
    keys = [str(k) for k in state["ring"].__dask_graph__()]
    windows = [k for k in keys if k.startswith("window-")]
    assert sum(k.startswith("deliver-") for k in keys) == 4  # the last 3 windows' spikes, one task per chunk
    assert len(windows) == 4 * 6  # 4 chunks x 30 steps in windows of 16 // 3 = 5 steps


def test_overlap_and_exchange_are_checked() -> None:
    plan = coba_network(400, chunk=200).plan()
    with pytest.raises(ValueError, match=r"overlap must lie in \[1, 1\] \(the smallest delay in steps\), got 2"):
        SpikingStep(plan, overlap=2)
    with pytest.raises(ValueError, match="exchange must be one of auto, gather, direct, got 'all'"):
        SpikingStep(plan, exchange="all")
    assert SpikingStep(plan).exchange == "direct"
    many = coba_network(400, chunk=40).plan()
    assert len(many.chunks) == 10 and SpikingStep(many).exchange == "gather"


def test_workflow_checks_overlap(tmp_path) -> None:
    import yaml

    from neurochunk.workflows.config import ConfigError
    from neurochunk.workflows.run import prepare

    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({"workflow": "brain", "params": {"network": "brunel", "n": 1000, "overlap": 40}}))
    with pytest.raises(ConfigError, match=r"params.overlap.*must lie in \[1, 16\]"):
        prepare(path)


def test_one_large_chunk_runs_in_windows_of_bounded_spikes() -> None:
    from neurochunk.pipeline import simulation

    plan = brunel_network(10**9, rule="fixed_probability", chunk=10**9, epsilon=1e-6).plan()
    step = SpikingStep(plan)
    assert len(plan.chunks) == 1 and step.max_task_steps == 16  # 2**28 / (1e9 x 1e-2 spikes per step at 100 Hz) = 26: one delay
    small = _brunel().plan()
    assert SpikingStep(small).max_task_steps > 10**6
    assert simulation.TASK_SPIKES == 1 << 28


def test_one_chunk_in_several_windows_keeps_the_spikes(monkeypatch) -> None:
    from neurochunk.pipeline import simulation

    plan = brunel_network(5000, rule="fixed_probability", seed=11, chunk=5000, v_init={"uniform": [10.0, 20.0]}).plan()
    whole = _spikes(plan)
    monkeypatch.setattr(simulation, "TASK_SPIKES", 1)  # windows of min_delay steps
    assert SpikingStep(plan).max_task_steps == plan.min_delay
    step = SpikingStep(plan)
    keys = [str(k) for k in step.build(initial_state(plan), 70)["v"].__dask_graph__()]
    assert sum(k.startswith("window-") for k in keys) == 5  # 70 steps in windows of 16
    got = _spikes(plan)
    assert len(whole[0]) > 1000
    np.testing.assert_array_equal(whole[0], got[0])
    np.testing.assert_array_equal(whole[1], got[1])
