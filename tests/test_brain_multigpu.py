"""The GPU backend of the Dask pipeline: the CPU path's spikes, checkpoints in the CPU layout, resume.

The backend checks run everywhere; the runs need cupy and a CUDA device (with dask-cuda they run on a
LocalCUDACluster, one worker per GPU, the chunks spread over the GPUs).
"""

from __future__ import annotations

import numpy as np
import pytest

from neurochunk.pipeline.network import Network, Population, Projection, brunel_network, coba_network
from neurochunk.pipeline.recording import read_spikes, simulate
from neurochunk.pipeline.simulation import SpikingStep, check_backend, chunk_functions, host_state, initial_state


def test_backend_is_named_and_checked() -> None:
    assert chunk_functions("cpu").name == "cpu"
    with pytest.raises(ValueError, match="backend must be one of cpu, gpu, got 'tpu'"):
        chunk_functions("tpu")
    stored = coba_network(400, connectivity="stored").plan()
    with pytest.raises(ValueError, match="needs connectivity: procedural"):
        check_backend(stored, "gpu")
    pops = (Population("A", 100, "lif_cuba_delta"),)
    out = Network(pops, (Projection("AA", "A", "A", "v", 0.1, rule="fixed_outdegree", k=5),)).plan()
    with pytest.raises(ValueError, match="projection 'AA': backend 'gpu'.*'fixed_outdegree' runs on backend 'cpu'"):
        SpikingStep(out, backend="gpu")
    with pytest.raises(ValueError, match="exchange must be one of auto, gather, direct, got 'ring'"):
        SpikingStep(coba_network(400).plan(), exchange="ring")
    with pytest.raises(ValueError, match="out-of-core.*backend 'cpu' only"):
        simulate(coba_network(400), 1.0, spikes_url="memory://x", stream_state_url="memory://s", backend="gpu")


def test_host_state_leaves_a_cpu_state_as_it_is() -> None:
    state = initial_state(coba_network(400, chunk=200).plan())
    assert host_state(state) is state


def test_workflow_refuses_gpu_out_of_core(tmp_path) -> None:
    import yaml

    from neurochunk.workflows.config import ConfigError
    from neurochunk.workflows.run import prepare

    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({"workflow": "brain", "params": {"backend": "gpu", "out_of_core": True}}))
    with pytest.raises(ConfigError, match="params.backend.*out_of_core"):
        prepare(path)


def test_gpu_config_validates() -> None:
    from pathlib import Path

    from neurochunk.workflows.run import prepare

    cfg, _ = prepare(Path(__file__).resolve().parents[1] / "workflows" / "configs" / "brain-brunel-gpu.yaml")
    assert cfg["params"]["backend"] == "gpu" and cfg["cluster"]["gpu"] is True


def _gpus() -> int:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device
        return 0


needs_gpu = pytest.mark.skipif(_gpus() == 0, reason="needs cupy and a CUDA device")


@pytest.fixture(scope="module")
def gpu_client():
    if _gpus() == 0:
        pytest.skip("needs cupy and a CUDA device")
    pytest.importorskip("dask_cuda")
    from dask_cuda import LocalCUDACluster
    from distributed import Client

    with LocalCUDACluster(host="127.0.0.1", dashboard_address=":0", device_memory_limit=0) as cluster, \
            Client(cluster) as client:
        yield client


def _run(net, ms, tmp_path, tag, client=None, **kw):
    res = simulate(net, ms, spikes_url=str(tmp_path / f"{tag}.zarr"), client=client, batch_ms=4.0, progress=False,
                   **kw)
    return res, read_spikes(res["spikes_url"])


def _latest_commit(url):
    from neurochunk.stores import Dataset

    ds = Dataset.open(url, kind="neuron_state")
    return {k: np.asarray(a[...]) for k, a in ds.commits.open(ds.commits.latest()).arrays()}


NETWORKS = {
    "coba": (lambda: coba_network(4000, seed=3, chunk=1000), 20.0),
    "brunel": (lambda: brunel_network(5000, rule="fixed_probability", seed=4, chunk=1250,
                                      v_init={"uniform": [10.0, 20.0]}), 24.0),
}


def _recorded(net, ms, where, client=None, **kw):
    """Spikes, sampled potentials and the last checkpoint's arrays of a run with checkpoints every 8 ms."""
    from neurochunk.stores import Dataset

    ck = str(where / "ck.zarr")
    res, (t, g, _) = _run(net, ms, where, "spikes", client, checkpoint_url=ck, checkpoint_every_ms=8.0,
                          record_v=[0, 1300, 3999], **kw)
    assert res["steps"] == int(round(ms / 0.1))
    v = Dataset.open(res["spikes_url"], kind="spikes")["v"][:]
    return t, g, v, _latest_commit(ck)


_CPU: dict[str, tuple] = {}


def _cpu_reference(name, factory):
    if name not in _CPU:
        make, ms = NETWORKS[name]
        _CPU[name] = _recorded(make(), ms, factory.mktemp(f"cpu-{name}"))
    return _CPU[name]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("on", ["cluster", "local"])
def test_gpu_dask_path_gives_the_cpu_dask_path_spikes(name, on, tmp_path, tmp_path_factory, request) -> None:
    client = request.getfixturevalue("gpu_client") if on == "cluster" else None
    make, ms = NETWORKS[name]
    net = make()
    tc, gc, vc, cpu = _cpu_reference(name, tmp_path_factory)
    tg, gg, vg, gpu_state = _recorded(net, ms, tmp_path, client, backend="gpu")
    assert len(tc) > 200
    np.testing.assert_array_equal(tc, tg)
    np.testing.assert_array_equal(gc, gg)
    np.testing.assert_array_equal(vc, vg)
    # the committed state is the CPU's, in the CPU's layout
    assert set(cpu) == set(gpu_state)
    for k in cpu:
        np.testing.assert_array_equal(cpu[k], gpu_state[k], err_msg=k)


@pytest.mark.gpu
def test_gpu_run_resumed_from_its_checkpoint_gives_the_uninterrupted_spikes(tmp_path, gpu_client) -> None:
    net = brunel_network(5000, rule="fixed_probability", seed=6, chunk=1250, v_init={"uniform": [10.0, 20.0]})
    _, (t0, g0, _) = _run(net, 24.0, tmp_path, "whole", gpu_client, backend="gpu")
    ck = str(tmp_path / "ck.zarr")
    _run(net, 16.0, tmp_path, "part", gpu_client, backend="gpu", checkpoint_url=ck, checkpoint_every_ms=8.0)
    res, (t1, g1, _) = _run(net, 24.0, tmp_path, "part", gpu_client, backend="gpu", checkpoint_url=ck,
                            checkpoint_every_ms=8.0, resume=True)
    assert res["steps"] == 240
    np.testing.assert_array_equal(t0, t1)
    np.testing.assert_array_equal(g0, g1)


@pytest.mark.gpu
def test_gpu_chunks_are_spread_over_the_workers(gpu_client) -> None:
    from distributed import wait

    n_workers = len(gpu_client.scheduler_info()["workers"])
    plan = brunel_network(4000, rule="fixed_probability", chunk=1000).plan()
    state = initial_state(plan, "gpu", gpu_client)
    wait(list(state.arrays.values()))
    owners = [w for _, (w,) in sorted(gpu_client.who_has(state["v"]).items(), key=lambda kv: kv[0][1])]
    assert len(set(owners)) == min(n_workers, 4)
    assert owners == sorted(owners, key=owners.index)  # neighbouring chunks share a worker


def _exchange_spikes(plan, client, variants):
    from neurochunk.pipeline.runner import Runner

    spikes = {}
    for backend, exchange, overlap in variants:
        step = SpikingStep(plan, batch_steps=80, backend=backend, exchange=exchange, overlap=overlap)
        runner = Runner(step, initial_state(plan, backend, client), client=client, progress=False)
        runner.run(160)
        spikes[backend, exchange, overlap] = [np.concatenate([r.outputs["spikes"][k] for r in runner.reports])
                                              for k in (0, 1)]
    return spikes


_VARIANTS = (("cpu", "gather", 1), ("gpu", "gather", 1), ("gpu", "direct", 1), ("gpu", "direct", 2),
             ("gpu", "gather", 4))


@pytest.mark.gpu
def test_direct_exchange_gives_the_gathered_exchange_spikes(gpu_client) -> None:
    plan = brunel_network(5000, rule="fixed_probability", seed=7, chunk=1250, v_init={"uniform": [10.0, 20.0]}).plan()
    spikes = _exchange_spikes(plan, gpu_client, _VARIANTS)
    ref = spikes["cpu", "gather", 1]
    assert len(ref[0]) > 1000
    for key in _VARIANTS[1:]:
        for k in (0, 1):
            np.testing.assert_array_equal(ref[k], spikes[key][k], err_msg=str(key))


@pytest.fixture(scope="module")
def ucx_client():
    """``cluster.connect``'s LocalCUDACluster with workers that talk UCX (device spikes GPU to GPU, RMM pool)."""
    if _gpus() < 2:
        pytest.skip("needs cupy and two CUDA devices")
    pytest.importorskip("dask_cuda")
    pytest.importorskip("distributed_ucxx")
    from neurochunk.cluster import connect

    client = connect({"gpu": True, "protocol": "ucx", "device_memory_limit": 0, "dashboard_address": "127.0.0.1:0"},
                     quiet=True)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.gpu
def test_ucx_cluster_gives_the_cpu_spikes(ucx_client) -> None:
    assert all(a.startswith("ucx://") for a in ucx_client.scheduler_info()["workers"])
    plan = brunel_network(5000, rule="fixed_probability", seed=9, chunk=1250, v_init={"uniform": [10.0, 20.0]}).plan()
    variants = (("gpu", "direct", 1), ("gpu", "direct", 2))
    spikes = _exchange_spikes(plan, ucx_client, variants)
    ref = _exchange_spikes(plan, None, (("cpu", "gather", 1),))["cpu", "gather", 1]
    assert len(ref[0]) > 1000
    for key in variants:
        for k in (0, 1):
            np.testing.assert_array_equal(ref[k], spikes[key][k], err_msg=str(key))


def test_merge_spikes_orders_a_batch_as_one_sort() -> None:
    from neurochunk.pipeline.simulation import _gather, merge_spikes

    rng = np.random.default_rng(0)
    parts = []
    for w in range(3):  # 3 windows of 16 steps, 4 chunks of 100 neurons, some parts empty
        for c in range(4):
            n = 0 if (w, c) == (1, 2) else int(rng.integers(1, 200))
            key = np.unique(rng.integers(0, 16 * 100, n))
            parts.append((key // 100 + 16 * w, key % 100 + 100 * c, None))
    steps, gids = merge_spikes(4, *parts)
    ref = _gather(*parts)
    np.testing.assert_array_equal(steps, ref[0])
    np.testing.assert_array_equal(gids, ref[1])
    assert merge_spikes(2)[0].shape == (0,)


def test_rates_record_gives_the_spikes_rates(tmp_path) -> None:
    """record='rates': counts per (step, population) from the window tasks, rates as the spikes give them."""
    from neurochunk.pipeline.simulation import window_counts
    from neurochunk.stores import Dataset

    net = coba_network(400, seed=2, chunk=150)
    res_s, (t, g, _) = _run(net, 12.0, tmp_path, "spk")
    res_r = simulate(net, 12.0, spikes_url=str(tmp_path / "rates.zarr"), batch_ms=4.0, progress=False, record="rates")
    ds_s = Dataset.open(res_s["spikes_url"], kind="spikes")
    ds_r = Dataset.open(res_r["spikes_url"], kind="spikes")
    assert res_r["n_spikes"] == res_s["n_spikes"] == len(t) > 20
    assert ds_r["t"].shape == (0,)
    steps = np.rint(t / 0.1).astype(np.int64)
    np.testing.assert_array_equal(ds_r["counts"][:], window_counts(steps, g, res_s["plan"].offsets, 0, 120))
    np.testing.assert_array_equal(ds_r["rates"][:], ds_s["rates"][:])
    with pytest.raises(ValueError, match="record must be"):
        SpikingStep(net.plan(), record="all")


@pytest.mark.gpu
def test_gpu_rates_record_counts_the_cpu_spikes(gpu_client) -> None:
    from neurochunk.pipeline.runner import Runner
    from neurochunk.pipeline.simulation import window_counts

    plan = brunel_network(5000, rule="fixed_probability", seed=8, chunk=1250, v_init={"uniform": [10.0, 20.0]}).plan()
    cpu = Runner(SpikingStep(plan, batch_steps=80), initial_state(plan), progress=False)
    cpu.run(160)
    steps = np.concatenate([r.outputs["spikes"][0] for r in cpu.reports])
    gids = np.concatenate([r.outputs["spikes"][1] for r in cpu.reports])
    assert len(steps) > 1000
    for exchange in ("gather", "direct"):
        step = SpikingStep(plan, batch_steps=80, backend="gpu", exchange=exchange, record="rates")
        gpu = Runner(step, initial_state(plan, "gpu", gpu_client), client=gpu_client, progress=False)
        gpu.run(160)
        counts = np.concatenate([r.outputs["counts"] for r in gpu.reports])
        np.testing.assert_array_equal(counts, window_counts(steps, gids, plan.offsets, 0, 160), err_msg=exchange)
