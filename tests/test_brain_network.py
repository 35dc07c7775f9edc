"""Networks through the Dask Runner: Brian2 agreement, chunkings, stored mode, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from brain_helpers import finish_brian2, start_brian2
from distributed import Client, LocalCluster

from neurochunk.kernels.procedural import materialize
from neurochunk.pipeline.network import brunel_network, coba_network
from neurochunk.pipeline.recording import SpikeRecorder, read_spikes, simulate, spike_stats
from neurochunk.stores import Dataset


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def _run(net, ms, tmp_path, name, client, **kw):
    res = simulate(net, ms, spikes_url=str(tmp_path / f"{name}.zarr"), client=client, progress=False, **kw)
    t, g, attrs = read_spikes(res["spikes_url"])
    return t, g, attrs


def _close(ours: dict, ref: dict, keys=("rate", "rate_E", "rate_I", "cv"), rel=0.10) -> None:
    for k in keys:
        assert ours[k] == pytest.approx(ref[k], rel=rel), f"{k}: neurochunk {ours[k]:.3f} vs Brian2 {ref[k]:.3f}"


@pytest.mark.slow
def test_coba_4000_matches_brian2(client, tmp_path) -> None:
    seeds = [1, 2, 3, 4, 5, 6]
    proc = start_brian2({"net": "coba", "duration_ms": 1000, "target": "numpy", "seeds": seeds})
    stats = []
    for s in seeds:
        t, g, attrs = _run(coba_network(seed=s), 1000, tmp_path, f"coba{s}", client)
        assert attrs["dt"] == 0.1 and np.all(np.diff(t) >= 0)
        stats.append(spike_stats(t, g, attrs["populations"], 1000))
    ours = {k: float(np.mean([x[k] for x in stats])) for k in stats[0]}
    ref = finish_brian2(proc)
    assert 10 < ours["rate"] < 30  # the asynchronous irregular state of the benchmark
    _close(ours, ref)


@pytest.mark.slow
def test_brunel_matches_brian2(client, tmp_path) -> None:
    """Brunel (2000) A at full size (12,500 neurons), 300 ms: fixed in-degree (1,000 E + 250 I, stored
    connectivity) and fixed probability (procedural), one seed each, against Brian2 on the same rules."""
    procs = {rule: start_brian2({"net": "brunel", "duration_ms": 300, "target": "numpy", "rule": rule,
                                 "seed": 1, "cv_skip_ms": 100})
             for rule in ("fixed_indegree", "fixed_probability")}
    ours = {}
    for rule in procs:
        net = brunel_network(seed=1, rule=rule, chunk=6250)
        t, g, attrs = _run(net, 300, tmp_path, f"brunel-{rule}", client, connectivity_url=str(tmp_path / rule))
        ours[rule] = spike_stats(t, g, attrs["populations"], 300)
    for rule, proc in procs.items():
        _close(ours[rule], finish_brian2(proc))


def test_spikes_do_not_depend_on_chunking(client, tmp_path) -> None:
    # 3 chunks spanning the E/I border exchange spikes every step (delay 0 = one step)
    t1, g1, _ = _run(coba_network(), 25, tmp_path, "one", client)
    t3, g3, _ = _run(coba_network(chunk=1500), 25, tmp_path, "three", client)
    assert len(t1) > 500
    np.testing.assert_array_equal(t1, t3)
    np.testing.assert_array_equal(g1, g3)


def test_stored_mode_gives_procedural_synapses_and_spikes(client, tmp_path) -> None:
    net_p = brunel_network(n=2500, rule="fixed_probability", chunk=1000, seed=3)
    net_s = brunel_network(n=2500, rule="fixed_probability", chunk=1000, seed=3, connectivity="stored")
    tp, gp, _ = _run(net_p, 60, tmp_path, "proc", client)
    ts, gs, _ = _run(net_s, 60, tmp_path, "stored", client, connectivity_url=str(tmp_path / "conn"))
    assert len(tp) > 1000
    np.testing.assert_array_equal(tp, ts)
    np.testing.assert_array_equal(gp, gs)
    # the stored CSR holds exactly the generator's synapses
    plan = net_s.plan()
    ds = Dataset.open(str(tmp_path / "conn" / "EI"), kind="connectivity")
    total = ds["indices"].shape[0]
    expect = sum(len(materialize(plan.pint, plan.pflt, 1, plan.seed, plan.net.conn_block, lo, hi)[1])
                 for lo, hi in plan.chunks)
    assert total == expect and abs(total - 2000 * 500 * 0.1) < 5 * np.sqrt(2000 * 500 * 0.1)
    assert ds.attrs["n_pre"] == 2000 and ds.attrs["n_post"] == 500


def test_stored_fixed_indegree_has_exact_indegree(client, tmp_path) -> None:
    net = brunel_network(n=2500, rule="fixed_indegree", chunk=1200, seed=5)
    t, g, attrs = _run(net, 50, tmp_path, "indeg", client, connectivity_url=str(tmp_path / "conn"))
    assert len(t) > 0
    ds = Dataset.open(str(tmp_path / "conn" / "IE"), kind="connectivity")
    counts = np.bincount(np.asarray(ds["indices"][:]), minlength=2000)
    assert np.all(counts == 50)  # epsilon * N_I inputs onto every E neuron


def test_checkpoint_resume_and_rerun_give_identical_spikes(client, tmp_path) -> None:
    net = brunel_network(n=2500, rule="fixed_probability", chunk=1000, seed=9)
    full = _run(net, 80, tmp_path, "full", client)
    again = _run(net, 80, tmp_path, "again", client)
    np.testing.assert_array_equal(full[1], again[1])
    kw = {"checkpoint_url": str(tmp_path / "ckpt.zarr"), "checkpoint_every_ms": 20, "batch_ms": 10}
    first = simulate(net, 50, spikes_url=str(tmp_path / "resumed.zarr"), client=client, progress=False, **kw)
    assert first["steps"] == 500
    # a run killed after recording spikes but before its next checkpoint leaves extra spikes behind
    rec = SpikeRecorder(Dataset.open(str(tmp_path / "resumed.zarr"), kind="spikes", mode="r+"))
    rec.append(np.array([999, 999]), np.array([1, 2]), 1000)
    simulate(net, 80, spikes_url=str(tmp_path / "resumed.zarr"), client=client, progress=False, resume=True, **kw)
    t, g, _ = read_spikes(str(tmp_path / "resumed.zarr"))
    np.testing.assert_array_equal(t, full[0])
    np.testing.assert_array_equal(g, full[1])
    ckpt = Dataset.open(str(tmp_path / "ckpt.zarr"), kind="neuron_state")
    assert ckpt.commits.latest().meta["scalars"]["step"] == 800


def test_sampled_membrane_potentials_follow_the_dynamics(client, tmp_path) -> None:
    """Sampled v of chosen neurons across chunks: in range, reset after each spike, identical on resume."""
    net = brunel_network(n=2500, rule="fixed_probability", chunk=1000, seed=2, v_init={"uniform": [10.0, 20.0]})
    ids = [3, 999, 1000, 2400]
    res = simulate(net, 40, spikes_url=str(tmp_path / "s.zarr"), client=client, progress=False, batch_ms=10,
                   record_v=ids, record_every_ms=0.1)
    ds = Dataset.open(res["spikes_url"], kind="spikes")
    v, vt = ds["v"][:], ds["v_t"][:]
    assert v.shape == (400, 4) and list(ds["recorded"][:]) == ids
    np.testing.assert_allclose(vt, np.arange(1, 401) * 0.1)
    assert v.max() <= 20.0 + 1e-6 and v.min() > -20.0
    t, g, _ = read_spikes(res["spikes_url"])
    assert np.isin(g, ids).sum() >= 4
    for k, nid in enumerate(ids):
        for ts in t[g == nid]:
            step = int(round(ts / 0.1))  # row `step` is the state after step `step`: reset to V_r
            assert v[step, k] == pytest.approx(10.0)
    kw = {"checkpoint_url": str(tmp_path / "ck.zarr"), "checkpoint_every_ms": 20, "batch_ms": 10,
          "record_v": ids, "record_every_ms": 0.1}
    simulate(net, 20, spikes_url=str(tmp_path / "r.zarr"), client=client, progress=False, **kw)
    simulate(net, 40, spikes_url=str(tmp_path / "r.zarr"), client=client, progress=False, resume=True, **kw)
    np.testing.assert_array_equal(Dataset.open(str(tmp_path / "r.zarr"), kind="spikes")["v"][:], v)


def test_fixed_outdegree_procedural_equals_stored(client, tmp_path) -> None:
    from neurochunk.pipeline.network import Network, Population, Projection

    def net(mode):
        pops = (Population("A", 1500, "lif_cuba_exp", {"RI_ext": 12.0}, {"v": {"uniform": [-60.0, -50.0]}}),)
        projs = (Projection("AA", "A", "A", "Ie", {"normal": [1.0, 0.2]}, rule="fixed_outdegree", k=40,
                            delay={"uniform": [0.5, 2.0]}),)
        return Network(pops, projs, seed=7, chunk=600, connectivity=mode)

    tp, gp, _ = _run(net("procedural"), 50, tmp_path, "op", client)
    ts, gs, _ = _run(net("stored"), 50, tmp_path, "os", client, connectivity_url=str(tmp_path / "oc"))
    assert len(tp) > 100
    np.testing.assert_array_equal(tp, ts)
    np.testing.assert_array_equal(gp, gs)
    ds = Dataset.open(str(tmp_path / "oc" / "AA"), kind="connectivity")
    ptr = ds["indptr"][:]
    per_pre = sum(np.diff(ptr[c]) for c in range(ptr.shape[0]))
    assert np.all(per_pre == 40)  # every presynaptic neuron has exactly k synapses over all chunks


def test_user_edge_list_loads_into_stored_layout(client, tmp_path) -> None:
    """The synapses of a procedural network, handed over as a user's edge list (a dask array read in
    pieces), give that network's spikes."""
    import dask.array as da

    from neurochunk.pipeline.network import Network, Population, Projection
    from neurochunk.pipeline.synapses import load_edge_list

    pops = (Population("A", 1200, "lif_cuba_exp", {"RI_ext": 12.0}, {"v": {"uniform": [-60.0, -50.0]}}),)

    def net(rule, mode):
        proj = Projection("AA", "A", "A", "Ie", {"normal": [1.0, 0.2]} if rule != "edge_list" else 2.6,
                          rule=rule, p=0.03, delay={"uniform": [0.5, 2.0]})
        return Network(pops, (proj,), seed=11, chunk=500, connectivity=mode)

    reference = net("fixed_probability", "procedural")
    plan = reference.plan()
    pre, post, w, d = [], [], [], []
    for lo, hi in plan.chunks:
        ptr, cols, wq, dl = materialize(plan.pint, plan.pflt, 0, plan.seed, reference.conn_block, lo, hi)
        pre.append(np.repeat(np.arange(1200), np.diff(ptr)))
        post.append(cols + lo)
        w.append(wq * plan.pflt[0, 6])
        d.append((dl - 1) * 0.1)
    edges = [np.concatenate(x) for x in (pre, post, w, d)]
    assert np.abs(edges[2]).max() < 2.6  # the edge_list's declared bound keeps the same quantum
    mine = net("edge_list", "stored")
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(edges[0]))
    arrays = [da.from_array(x[shuffled], chunks=5000) for x in edges]
    load_edge_list(mine.plan(), "AA", str(tmp_path / "edges"), *arrays, piece=7000)
    t1, g1, _ = _run(reference, 60, tmp_path, "ref", client)
    t2, g2, _ = _run(mine, 60, tmp_path, "mine", client, connectivity_url=str(tmp_path / "edges"))
    assert len(t1) > 100
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(g1, g2)
    with pytest.raises(ValueError, match="ids outside"):
        load_edge_list(mine.plan(), "AA", str(tmp_path / "bad"), np.array([0, 5000]), np.array([0, 1]),
                       np.array([1.0, 1.0]), np.array([1.0, 1.0]))
