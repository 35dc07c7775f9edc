"""Out-of-core simulation: state streamed through a double-buffered Zarr dataset every exchange."""

from __future__ import annotations

import numpy as np
import pytest
from neurochunk.pipeline.network import brunel_network
from neurochunk.pipeline.recording import read_spikes, simulate
from neurochunk.pipeline.streaming import simulate_streaming
from neurochunk.stores import Dataset


def _net():
    return brunel_network(3000, rule="fixed_probability", seed=3, v_init={"uniform": [10.0, 20.0]}, chunk=1024,
                          epsilon=0.1)


def test_streamed_spikes_identical_to_in_memory_and_survive_a_failure(tmp_path) -> None:
    net = _net()
    simulate(net, 30, spikes_url=str(tmp_path / "mem.zarr"), progress=False)
    t_mem, i_mem, _ = read_spikes(str(tmp_path / "mem.zarr"))
    assert len(t_mem) > 3000  # three chunks exchanging spikes every 1.6 ms

    out = simulate_streaming(net, 30, state_url=str(tmp_path / "st.zarr"), spikes_url=str(tmp_path / "s.zarr"),
                             progress=False, spike_piece=97, broadcast_bytes=0)  # spikes read back, in pieces
    assert out["steps"] == 300 and len(out["windows"]) == 19
    t, i, _ = read_spikes(str(tmp_path / "s.zarr"))
    np.testing.assert_array_equal(t, t_mem)
    np.testing.assert_array_equal(i, i_mem)

    # killed after window 7; the buffer being written is garbage (a half-written window); resume
    def boom(step: int, n_spikes: int) -> None:
        if step >= 7 * 16:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        simulate_streaming(net, 30, state_url=str(tmp_path / "k.zarr"), spikes_url=str(tmp_path / "ks.zarr"),
                           progress=False, on_window=boom)
    ds = Dataset.open(str(tmp_path / "k.zarr"), kind="neuron_state", mode="r+")
    assert ds.attrs["step"] == 7 * 16
    spare = "b" if ds.attrs["current"] == "a" else "a"
    ds[f"v_{spare}"][:1500] = np.float32(1e6)
    ds[f"ring_{spare}"][:1500] = 12345
    simulate_streaming(net, 30, state_url=str(tmp_path / "k.zarr"), spikes_url=str(tmp_path / "ks.zarr"),
                       progress=False, resume=True)
    t2, i2, _ = read_spikes(str(tmp_path / "ks.zarr"))
    np.testing.assert_array_equal(t2, t_mem)
    np.testing.assert_array_equal(i2, i_mem)


def test_streaming_on_a_cluster_and_mismatched_state_refused(tmp_path) -> None:
    from distributed import Client, LocalCluster

    net = _net()
    simulate(net, 10, spikes_url=str(tmp_path / "mem.zarr"), progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            Client(cl) as client:
        simulate_streaming(net, 10, state_url=str(tmp_path / "st.zarr"), spikes_url=str(tmp_path / "s.zarr"),
                           client=client, progress=False)
    np.testing.assert_array_equal(read_spikes(str(tmp_path / "s.zarr"))[1], read_spikes(str(tmp_path / "mem.zarr"))[1])
    other = brunel_network(2000, rule="fixed_probability", seed=3, chunk=1024, epsilon=0.1)
    with pytest.raises(ValueError, match="holds 3000 neurons"):
        simulate_streaming(other, 10, state_url=str(tmp_path / "st.zarr"), spikes_url=str(tmp_path / "s.zarr"),
                           progress=False, resume=True)


def test_workflow_out_of_core_matches_in_memory(tmp_path) -> None:
    from pathlib import Path

    import yaml
    from neurochunk.workflows.run import run_config

    configs = Path(__file__).resolve().parents[1] / "workflows" / "configs"
    spikes = {}
    for ooc in (False, True):
        cfg = yaml.safe_load((configs / "brain-brunel.yaml").read_text())
        cfg["store"]["url"] = str(tmp_path / f"out-{ooc}")
        cfg["cluster"] = {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": ":0"}
        cfg["params"].update(n=3000, chunk=1024, duration_ms=40, checkpoint_every_ms=0, out_of_core=ooc, plot=False)
        cfg["progress"] = False
        path = tmp_path / f"brain-{ooc}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        summary = run_config(path)
        assert summary["simulated_ms"] == pytest.approx(40) and summary["chunks"] == 3
        spikes[ooc] = read_spikes(summary["spikes"])[1]
    assert (tmp_path / "out-True" / "state.zarr").exists() and len(spikes[True]) > 300
    np.testing.assert_array_equal(spikes[True], spikes[False])


def test_stored_connectivity_streams_too(tmp_path) -> None:
    net = brunel_network(3000, rule="fixed_indegree", seed=2, v_init={"uniform": [10.0, 20.0]}, chunk=1024,
                         epsilon=0.1)
    assert net.connectivity == "stored"
    simulate(net, 12, spikes_url=str(tmp_path / "mem.zarr"), connectivity_url=str(tmp_path / "c"), progress=False)
    res = simulate(net, 12, spikes_url=str(tmp_path / "s.zarr"), connectivity_url=str(tmp_path / "c2"),
                   stream_state_url=str(tmp_path / "st.zarr"), progress=False)
    assert res["reports"] == [] and len(res["windows"]) == 8
    _, i_mem, _ = read_spikes(str(tmp_path / "mem.zarr"))
    _, i, _ = read_spikes(str(tmp_path / "s.zarr"))
    assert len(i) > 1000
    np.testing.assert_array_equal(i, i_mem)
    with pytest.raises(ValueError, match="record_v"):
        simulate(net, 1, spikes_url=str(tmp_path / "x.zarr"), connectivity_url=str(tmp_path / "c2"),
                 stream_state_url=str(tmp_path / "st2.zarr"), record_v=[0], progress=False)
